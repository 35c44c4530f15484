"""``python -m runyard``: the ``runyard`` command."""

from runyard._main import main

main()

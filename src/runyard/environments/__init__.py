"""Environments: what a run's script runs with (an interpreter, packages, variables).

:mod:`~runyard.environments.spec` defines one, :mod:`~runyard.environments.build`
builds it once per content with uv into the workspace's cache, and
:mod:`~runyard.environments.registry` keeps named, versioned definitions in the
run history. The SDK's face is :class:`runyard.Environment`.
"""

"""Every CLI command and option is documented in docs/cli.md, and the README
keeps its two Quick start commands in step with CI."""

from __future__ import annotations

import re
from pathlib import Path

import click

from runyard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: str = "runyard") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, full))
        else:
            out.append((full, cmd))
    return out


def test_every_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    missing = []
    for full, cmd in _commands(main):
        if f"`{full}" not in doc:
            missing.append(full)
        for param in cmd.params:
            if isinstance(param, click.Option) and not any(o in doc for o in param.opts):
                missing.append(f"{full} {param.opts[0]}")
    assert missing == [], f"undocumented in docs/cli.md: {missing}"


def test_readme_quick_start_has_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2, commands
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == commands[1]

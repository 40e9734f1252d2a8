"""The docs stay true to the code: every command and every option is in docs/CLI.md."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from photosift.cli import app

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = (ROOT / "docs" / "CLI.md").read_text()


def _sections() -> dict[str, str]:
    parts = re.split(r"^## photosift (\S+)\s*$", CLI_MD, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _commands() -> dict[str, object]:
    root = get_command(app)
    out = {}
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        out[name] = cmd
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            out[f"{name} {sub_name}"] = sub
    return out


def test_every_command_and_option_is_documented() -> None:
    sections = _sections()
    for full_name, cmd in _commands().items():
        top = full_name.split()[0]
        assert top in sections, f"photosift {top} is not documented in docs/CLI.md"
        body = sections[top]
        if " " in full_name:
            assert full_name in body, f"photosift {full_name} missing from its section"
        for param in cmd.params:  # type: ignore[attr-defined]
            for flag in param.opts:
                if flag.startswith("--") and flag != "--help":
                    assert flag in body, f"{flag} of photosift {full_name} is not documented"


def test_documented_commands_exist() -> None:
    commands = {name.split()[0] for name in _commands()}
    assert set(_sections()) <= commands, set(_sections()) - commands


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1].strip().splitlines()
    assert first_block == ["make demo", "make test"]

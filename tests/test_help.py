"""Every command's --help shows its examples whole: each example line fits an 80-column terminal and is printed on
one line, never wrapped mid-command."""

import pytest
import typer.main
from typer.testing import CliRunner

from icrcli.cli.main import app


def _commands():
    root = typer.main.get_command(app)
    for name, cmd in sorted(root.commands.items()):
        yield [name], cmd
        if hasattr(cmd, "commands"):
            for sub, c in sorted(cmd.commands.items()):
                yield [name, sub], c


def _examples(cmd) -> list[str]:
    text = cmd.help or ""
    return [ln.strip() for ln in text.split("Examples:", 1)[1].splitlines() if ln.strip().startswith("icr ")] \
        if "Examples:" in text else []


@pytest.mark.slow
@pytest.mark.parametrize("path, cmd", list(_commands()), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_examples_are_shown_whole_at_80_columns(path, cmd):
    examples = _examples(cmd)
    if not cmd.hidden and not hasattr(cmd, "commands"):
        assert examples, f"icr {' '.join(path)} --help has no examples"
    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"}, terminal_width=80).output
    shown = {ln.strip() for ln in out.splitlines()}
    for ex in examples:
        assert len(ex) <= 76, f"example longer than an 80-column terminal allows: {ex}"
        assert ex in shown, f"example wrapped or missing in --help: {ex}"

"""Where human-readable output goes: rich on stderr, silent with --quiet, plain without a terminal or with
NO_COLOR (rich honours both). Results never go here; they go to stdout or -o FILE as JSON."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def err() -> Console:
    return Console(stderr=True, quiet=_state["quiet"], highlight=False, soft_wrap=True)


def say(msg: str) -> None:
    err().print(msg)


class _Rate(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


@contextmanager
def progress(description: str, total: int, unit: str = "images"):
    """Yield advance(n). A live bar only on a terminal; otherwise nothing until the caller's summary."""
    console = err()
    if _state["quiet"] or not console.is_terminal:
        yield lambda n: None
        return
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(unit),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _finite(obj):
    """JSON has no Infinity/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(obj, out: str) -> None:
    """Write a result to stdout ('-') or atomically to a file (temp + rename: a reader never sees half)."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=str) + "\n"
    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

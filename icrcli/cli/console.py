"""Where human-readable output goes: rich on stderr, silent with --quiet, plain without a terminal or with
NO_COLOR (no colours, bold or italics). Results never go here; they go to stdout or -o FILE as JSON."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from icrcli import progress as report

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def err() -> Console:
    # NO_COLOR: no styles at all (rich itself drops only the colours, not bold, dim or italics)
    plain = bool(os.environ.get("NO_COLOR", ""))
    return Console(stderr=True, quiet=_state["quiet"], highlight=False, soft_wrap=True,
                   **({"color_system": None} if plain else {}))


def say(msg: str) -> None:
    err().print(msg)


class _Rate(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


# Without a terminal (CI logs, `2> log`), progress is a plain line at most this often: a sign of life for the
# no-output timeouts of CI runners, not a line per batch.
PLAIN_EVERY_ENV = "ICR_PROGRESS_EVERY"
PLAIN_EVERY_S = 30.0


def _plain_every() -> float:
    import os
    try:
        return max(0.0, float(os.environ.get(PLAIN_EVERY_ENV, PLAIN_EVERY_S)))
    except ValueError:
        return PLAIN_EVERY_S


def _clock() -> float:
    return time.monotonic()


class _PlainProgress:
    """Progress as plain lines, at most one every ICR_PROGRESS_EVERY seconds: counts, rate (of this run's work)
    and ETA; a last line at the end when any was printed."""

    def __init__(self, what: str, total: int, done: int, unit: str):
        self.what, self.total, self.done, self.unit = what, total, done, unit
        self.done0, self.t0 = done, _clock()
        self.last, self.every, self.printed = self.t0, _plain_every(), False

    def advance(self, n: int) -> None:
        self.done += n
        now = _clock()
        if now - self.last >= self.every:
            self.last = now
            self.printed = True
            say_plain(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.t0
        rate = (self.done - self.done0) / elapsed if elapsed > 0 and self.done > self.done0 else None
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        speed = f", {rate:,.1f} {self.unit}/s" if rate else ""
        eta = f", eta {_hms(max(0, self.total - self.done) / rate)}" if rate and self.total else ""
        return f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{pct}{speed}{eta}"

    def finish(self) -> None:
        if self.printed:
            say_plain(f"{self.what}: {self.done:,}/{self.total:,} {self.unit} in {_hms(_clock() - self.t0)}")


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def say_plain(msg: str) -> None:
    """One line on stderr as it is, no markup (silent with --quiet)."""
    err().print(msg, markup=False, highlight=False)


@contextmanager
def progress(description: str, total: int, unit: str = "images"):
    """Yield advance(n). A live bar on a terminal; otherwise a plain line at most every ICR_PROGRESS_EVERY s."""
    console = err()
    if _state["quiet"]:
        yield lambda n: None
        return
    if not console.is_terminal:
        plain = _PlainProgress(description, total, 0, unit)
        yield plain.advance
        plain.finish()
        return
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(unit),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class _SinceStart(ProgressColumn):
    """Rate and ETA from the work done in this run (not counting a resumed run's earlier work), from the
    first update on: rich's own speed needs two samples and a resumed start would inflate it."""

    def __init__(self, unit: str, eta: bool):
        super().__init__()
        self.unit, self.eta = unit, eta

    def render(self, task) -> Text:
        t0, done0 = task.fields.get("t0"), task.fields.get("done0", 0)
        elapsed = time.monotonic() - t0 if t0 is not None else 0.0
        rate = (task.completed - done0) / elapsed if elapsed > 0 and task.completed > done0 else None
        if not self.eta:
            return Text(f"{rate:,.1f} {self.unit}/s" if rate else f"- {self.unit}/s")
        if not rate:
            return Text("eta -")
        left = max(0.0, (task.total or 0) - task.completed) / rate
        return Text(f"eta {int(left) // 3600}:{int(left) % 3600 // 60:02d}:{int(left) % 60:02d}")


class Reporter(report.Reporter):
    """icrcli.progress.Reporter on stderr: loading steps as lines, progress as a live bar (on a
    terminal only), resumption, waiting, warnings and interruption as lines. Silent with --quiet."""

    def __init__(self, unit: str = "images"):
        self.unit = unit
        self._bar: Progress | None = None
        self._task = None
        self._plain: _PlainProgress | None = None

    def step(self, what: str) -> None:
        err().print(f"{what} ...", markup=False, style="dim")

    def start(self, what: str, total: int, done: int = 0, unit: str | None = None) -> None:
        console = err()
        self.finish()
        if _state["quiet"]:
            return
        if not console.is_terminal:
            self._plain = _PlainProgress(what, total, done, unit or self.unit)
            return
        unit = unit or self.unit
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _SinceStart(unit, False),
                TimeElapsedColumn(), _SinceStart(unit, True)]
        self._bar = Progress(*cols, console=console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(what, total=total, completed=done, t0=time.monotonic(), done0=done)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif self._plain is not None:
            self._plain.advance(n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._plain is not None:
            self._plain.finish()
            self._plain = None

    def resumed(self, done: int, total: int) -> None:
        self._line(f"resuming: {done} images already done")

    def waiting(self, why: str) -> None:
        self._line(why)

    def note(self, msg: str) -> None:
        self._line(msg)

    def warn(self, msg: str) -> None:
        self._line(f"warning: {msg}")

    def interrupted(self, msg: str) -> None:
        self._line(f"interrupted: {msg}")

    def _line(self, msg: str) -> None:
        (self._bar.console if self._bar is not None else err()).print(msg, markup=False)


def _finite(obj):
    """JSON has no Infinity/NaN: write them as null. A typed result (scans.result) is written as its dict."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
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
    from icrcli.cache import atomic_write
    with atomic_write(out) as tmp:  # the user's umask, fsync, rename: one writer of files for every command
        tmp.write_text(text)

"""Following the folder a training run writes to: which checkpoints are complete and new, and which to skip.

Trainers save in place (a file grows for seconds or minutes), over network file systems, and leave other files
beside their checkpoints. So a file is read only once it is complete: its size and mtime unchanged between two
looks a poll apart. A load that fails all the same (a writer that paused mid-file) is tried again at later
looks and given up, with a warning, only after `retry_for` seconds; a file that changes after that is tried
afresh. A second file of a step already followed, or a file with no step, is said once and skipped: a watch
never ends on what a trainer leaves in its folder.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from icrcli.errors import UserError
from icrcli.scans.steps import Found, candidates, step_of, stored_step

class Unreadable(UserError):
    """A checkpoint that could not be read (gone, half written, or not one): an error of its own, so a watch
    tries it again later where a plain run stops (exit 2)."""

    @staticmethod
    @contextmanager
    def when_reading(path: Path):
        try:
            yield
        except Unreadable:
            raise
        except (UserError, OSError) as e:
            raise Unreadable(str(e) if isinstance(e, UserError) else f"{path}: {e.strerror or e}") from e


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|d)?")
_UNIT_S = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, flag: str) -> float:
    """'90' or '90s', '10m', '2h', '1d' -> seconds (a bare number is seconds)."""
    m = _DURATION.fullmatch(str(text).strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"{flag} {text!r}: expected a positive duration, e.g. 90s, 10m or 2h (a bare number is "
                        "seconds).")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def signature(path: Path) -> tuple | None:
    """(size, mtime) of a file, or of a diffusers folder's files together; None when it is gone."""
    try:
        if not path.is_dir():
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        stats = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), len(stats)
    except OSError:
        return None


@dataclass
class Watcher:
    """What the folder holds, look after look. `look()` returns the checkpoints to read now (complete, new, of a
    step not followed yet); the caller says `done(found)` or `failed(found, error)` for each."""
    folder: Path
    pattern: str | None = None
    retry_for: float = 600.0
    warn: object = print
    clock: object = time.monotonic
    seen: dict = field(default_factory=dict)        # path -> its signature at the last look
    skipped: dict = field(default_factory=dict)     # path -> the signature it was skipped at
    failing: dict = field(default_factory=dict)     # path -> (signature, time of its first failed load)
    steps: dict = field(default_factory=dict)       # step -> the path followed for it
    notes: list = field(default_factory=list)       # what was skipped and why, for the result
    last_news: float = 0.0                          # when a file last appeared or changed, or a point was added

    def __post_init__(self):
        self.folder = Path(self.folder)
        self.last_news = self.clock()

    def look(self) -> list[Found]:
        """The checkpoints complete since the last look, in step order."""
        ready = []
        for path in candidates(self.folder, self.pattern):
            sig = signature(path)
            before = self.seen.get(path)
            if sig is None:
                continue
            self.seen[path] = sig
            if before != sig:
                self.last_news = self.clock()    # new, or still being written: look again next poll
                continue
            if path in self.steps.values() or self.skipped.get(path) == sig:
                continue
            ready.append(path)
        return self._ordered(ready)

    def _ordered(self, paths: list[Path]) -> list[Found]:
        found = []
        for path in paths:
            step = step_of(path.name)
            if step is None:
                step = stored_step(path)
            if step is None:
                self._skip(path, f"skipped {path.name}: no training step in its name or stored in it (rename as "
                                 "ckpt-001000.pt to include)")
                continue
            found.append(Found(path, step))
        by_step: dict[int, list[Found]] = {}
        for f in found:
            by_step.setdefault(f.step, []).append(f)
        out = []
        for step, fs in sorted(by_step.items()):
            if step in self.steps:
                for f in fs:
                    self._skip(f.path, f"skipped {f.path.name}: step {step} is already followed with "
                                       f"{self.steps[step].name} (choose one series with --pattern)")
            elif len(fs) > 1:
                names = ", ".join(f.path.name for f in fs)
                for f in fs:
                    self._skip(f.path, f"skipped {names}: several files of step {step} appeared together, and "
                                       "which one the series follows is never a guess (choose with --pattern)")
            else:
                out.append(fs[0])
        return out

    def _skip(self, path: Path, why: str) -> None:
        if self.skipped.get(path) != self.seen.get(path):
            if why not in self.notes:
                self.warn(why)
                self.notes.append(why)
            self.skipped[path] = self.seen.get(path)

    def done(self, f: Found) -> None:
        self.steps[f.step] = f.path
        self.failing.pop(f.path, None)
        self.last_news = self.clock()

    def failed(self, f: Found, error: Exception) -> None:
        """A load of a complete-looking file failed: try again at later looks, give up after `retry_for`."""
        sig, now = self.seen.get(f.path), self.clock()
        first = self.failing.get(f.path)
        if first is None:
            self.failing[f.path] = (sig, now)
            self.warn(f"could not read {f.path.name} yet ({error}); trying again at each poll for up to "
                      f"{self.retry_for:g} s")
        elif now - first[1] >= self.retry_for:
            del self.failing[f.path]
            self._skip(f.path, f"gave up on {f.path.name} after {now - first[1]:.0f} s of failed reads; it is "
                               f"left out (it is read again if it changes): {error}")

    def idle_for(self) -> float:
        return self.clock() - self.last_news

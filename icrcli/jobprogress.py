"""One progress bar for work split into shares: the ranks of a torchrun job (or the shards that one process computes
with --shards N). Rank 0 shows the whole job's count against the whole job's total; the other ranks show none.

Each rank adds what it finishes to a shared count (icrcli.dist.Counter: the process group's key-value store, no
collective, so ranks that do unequal work never wait on each other), and rank 0 shows that count: at each of its own
advances and, from a thread, twice a second, so its bar keeps moving while it waits for the others. The total comes
from the split (every rank knows it); work a rank finds already done (resumed chunks, cached levels or points) counts
too: when a rank's share ends it tops its count up to its share. Then the ranks meet once (dist.barrier: a rank that
died makes it fail with the message icrcli.dist gives), so rank 0's bar ends at the total. The progress is a help,
never a risk: a store that stops answering turns the shared count off and the work goes on.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager

from icrcli import dist
from icrcli.progress import Reporter

_POLL_S = 0.5
_names = itertools.count()     # every rank makes its bars in the same order, so the same bar has the same name


class JobProgress(Reporter):
    """The Reporter a share of the work runs with. Messages (steps, warnings, notes) go to `inner` as they are;
    the share's own bars do not: with `count_inner` their advances (and a start's `done`, work found finished) are
    this rank's count, in the job bar's unit; without it the caller counts with add()."""

    def __init__(self, inner: Reporter, what: str, total: int, share: int, unit: str = "images",
                 count_inner: bool = True):
        self.inner, self.what, self.total, self.share, self.unit = inner, what, total, share, unit
        self.count_inner = count_inner
        self.lead = dist.rank() == 0
        self.counter = dist.Counter(f"progress/{next(_names)}")
        self.mine = self.shown = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- the job bar
    def begin(self) -> None:
        if self.lead:
            self.inner.start(self.what, self.total, 0, unit=self.unit)
            if self.counter.shared:
                self._poller = threading.Thread(target=self._poll, name="icr-job-progress", daemon=True)
                self._poller.start()

    def add(self, n: int) -> None:
        """n more of this rank's share finished (never counted past the share)."""
        n = max(0, min(int(n), self.share - self.mine))
        if n:
            self.mine += n
            self._show(self._count(n))

    def settle(self) -> None:
        """This rank's share is finished: what it found done without computing counts too."""
        self.add(self.share - self.mine)

    def refresh(self) -> None:
        self._show(self._count(0))

    def end(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        if self.lead:
            self.inner.finish()

    def _count(self, n: int) -> int:
        try:
            return self.counter.add(n)
        except Exception:       # the store is gone (its host died): count alone; the next collective says why
            self.counter = dist.Counter("alone", shared=False)
            return self.counter.add(self.mine)

    def _show(self, count: int) -> None:
        if not self.lead:
            return
        with self._lock:
            count = min(count, self.total)
            if count > self.shown:
                self.inner.advance(count - self.shown)
                self.shown = count

    def _poll(self) -> None:
        while not self._stop.wait(_POLL_S):
            self.refresh()

    # ---- the Reporter the share runs with
    def start(self, what: str, total: int, done: int = 0, unit: str | None = None) -> None:
        if self.count_inner:
            self.add(done)

    def advance(self, n: int) -> None:
        if self.count_inner:
            self.add(n)

    def finish(self) -> None:
        pass

    def step(self, what: str) -> None:
        self.inner.step(what)

    def resumed(self, done: int, total: int) -> None:
        self.inner.resumed(done, total)

    def waiting(self, why: str) -> None:
        self.inner.waiting(why)

    def note(self, msg: str) -> None:
        self.inner.note(msg)

    def warn(self, msg: str) -> None:
        self.inner.warn(msg)

    def interrupted(self, msg: str) -> None:
        self.inner.interrupted(msg)


@contextmanager
def job_progress(reporter: Reporter, what: str, total: int, share: int, ranks: int = 1, unit: str = "images",
                 count_inner: bool = True):
    """Run this rank's share under one bar of the whole job (see the module's docstring); `ranks` > 1: the ranks
    of a torchrun job, which meet at the end so that rank 0's bar ends at the total."""
    jp = JobProgress(reporter, what, total, share, unit, count_inner)
    jp.begin()
    try:
        yield jp
        jp.settle()
        if ranks > 1:       # rank 0's bar goes on moving (the thread) while it waits here
            dist.barrier(f"waiting for the other ranks to finish {what}")
        jp.refresh()
    finally:
        jp.end()

"""One bar for a split job (icrcli.jobprogress): rank 0 shows the whole job's count against its total, a share's
own bars are not shown, work found done counts, and a broken shared count never stops the work. (Under torchrun
with 2 ranks: tests/test_scale.py.)"""

import pytest

from icrcli import dist, jobprogress
from icrcli.progress import Reporter


class Seen(Reporter):
    def __init__(self):
        self.starts, self.done, self.finished, self.steps = [], 0, 0, []

    def start(self, what, total, done=0, unit=None):
        self.starts.append((what, total, done, unit))
        self.done = done

    def advance(self, n):
        self.done += n

    def finish(self):
        self.finished += 1

    def step(self, what):
        self.steps.append(what)


def test_the_job_bar_counts_the_shares_work_and_ends_at_the_total():
    seen = Seen()
    with jobprogress.job_progress(seen, "extracting", 50, 30) as rep:
        rep.start("extracting", 30, 6)          # a resumed share: 6 found done
        rep.advance(4)
        rep.finish()                            # the share's own bar ends: the job's goes on
        rep.step("loading")
        assert seen.starts == [("extracting", 50, 0, "images")] and seen.done == 10 and seen.finished == 0
        rep.advance(100)                        # never past the share
        assert seen.done == 30
    # one process here: the other 20 are no one's, so the total is not reached; the share is
    assert seen.done == 30 and seen.finished == 1 and seen.steps == ["loading"]


def test_work_found_done_counts_when_the_share_ends():
    seen = Seen()
    with jobprogress.job_progress(seen, "checkpoints", 4, 4, unit="checkpoints", count_inner=False) as rep:
        rep.start("extracting", 16)             # one checkpoint's own bar: not the job's unit, not counted
        rep.advance(16)
        rep.add(1)
        assert seen.done == 1
    assert seen.done == 4 and seen.starts == [("checkpoints", 4, 0, "checkpoints")]


def test_other_ranks_show_nothing(monkeypatch):
    monkeypatch.setattr(dist, "rank", lambda: 1)
    seen = Seen()
    with jobprogress.job_progress(seen, "extracting", 50, 20) as rep:
        rep.advance(5)
        rep.step("loading")                     # messages still go through (the CLI quiets ranks > 0)
    assert seen.starts == [] and seen.done == 0 and seen.finished == 0 and seen.steps == ["loading"]


def test_a_shared_count_that_fails_does_not_stop_the_work(monkeypatch):
    seen = Seen()
    with jobprogress.job_progress(seen, "extracting", 10, 10) as rep:
        rep.advance(3)

        def gone(n):
            raise RuntimeError("connection reset by peer")
        monkeypatch.setattr(rep.counter, "add", gone)
        rep.advance(2)                          # said nowhere, counted alone from here on
        assert seen.done == 5 and rep.counter.add is not gone
        rep.advance(1)
    assert seen.done == 10 and seen.finished == 1


def test_an_error_in_the_share_ends_the_bar_and_propagates():
    seen = Seen()
    with pytest.raises(KeyboardInterrupt):
        with jobprogress.job_progress(seen, "extracting", 10, 10) as rep:
            rep.advance(2)
            raise KeyboardInterrupt
    assert seen.done == 2 and seen.finished == 1    # not topped up: the share did not end

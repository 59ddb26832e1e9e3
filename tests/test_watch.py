"""What `icr timeline --watch` reads and when (icrcli.scans.watch), and the gates on intervals (scans.trend):
on hand-made folders and a fake clock, no network."""

import os

import pytest

from icrcli.errors import UserError
from icrcli.scans.trend import gate, held, trend
from icrcli.scans.watch import Unreadable, Watcher, parse_duration


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _watcher(folder, retry_for=60.0):
    warned, clock = [], Clock()
    return Watcher(folder, None, retry_for, warned.append, clock), warned, clock


def _grow(path, n):
    with open(path, "ab") as f:
        f.write(b"x" * n)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse file systems: mtime moves too


def test_a_file_is_ready_only_once_unchanged_across_a_look(tmp_path):
    w, warned, _ = _watcher(tmp_path)
    assert w.look() == []                         # an empty folder is waited on, not an error
    ck = tmp_path / "ckpt-100.pt"
    _grow(ck, 10)
    assert w.look() == []                         # first seen
    _grow(ck, 10)
    assert w.look() == []                         # still growing
    (f,) = w.look()                               # unchanged since the last look
    assert f.path == ck and f.step == 100 and not warned
    w.done(f)
    assert w.look() == []                         # read once


def test_same_step_duplicate_and_stepless_file_are_skipped_with_one_warning(tmp_path):
    w, warned, _ = _watcher(tmp_path)
    (tmp_path / "ckpt-200.safetensors").write_bytes(b"a")
    w.look()
    (f,) = w.look()
    w.done(f)
    (tmp_path / "ckpt-200.pt").write_bytes(b"b")   # the same step in another format
    (tmp_path / "latest.pt").write_bytes(b"not a checkpoint")   # no step in its name, none stored
    w.look()
    assert w.look() == [] and w.look() == []
    assert len(warned) == 2
    assert any("ckpt-200.pt" in m and "already followed with ckpt-200.safetensors" in m for m in warned)
    assert any("latest.pt" in m and "no training step" in m for m in warned)
    assert w.notes == warned


def test_two_files_of_one_step_together_are_both_skipped(tmp_path):
    w, warned, _ = _watcher(tmp_path)
    (tmp_path / "ema-300.pt").write_bytes(b"a")
    (tmp_path / "ckpt-300.pt").write_bytes(b"b")
    (tmp_path / "ckpt-400.pt").write_bytes(b"c")
    w.look()
    assert [f.step for f in w.look()] == [400]
    assert len(warned) == 1 and "ema-300.pt" in warned[0] and "ckpt-300.pt" in warned[0]


def test_a_failing_load_is_retried_then_given_up_and_tried_again_if_it_changes(tmp_path):
    w, warned, clock = _watcher(tmp_path, retry_for=60)
    ck = tmp_path / "ckpt-500.pt"
    ck.write_bytes(b"half")
    w.look()
    (f,) = w.look()
    w.failed(f, Unreadable("truncated"))
    assert len(warned) == 1 and "trying again" in warned[0]
    clock.t += 30
    (f,) = w.look()                               # tried again, not yet given up, not said again
    w.failed(f, Unreadable("truncated"))
    assert len(warned) == 1
    clock.t += 31
    (f,) = w.look()
    w.failed(f, Unreadable("truncated"))
    assert len(warned) == 2 and "gave up on ckpt-500.pt" in warned[1]
    assert w.look() == []                         # given up: not read again while unchanged
    _grow(ck, 4)
    w.look()
    assert [g.path for g in w.look()] == [ck]     # changed: tried afresh


def test_idle_counts_from_the_last_news(tmp_path):
    w, _, clock = _watcher(tmp_path)
    clock.t += 50
    assert w.idle_for() == 50
    (tmp_path / "ckpt-1.pt").write_bytes(b"a")
    w.look()
    assert w.idle_for() == 0
    clock.t += 5
    (f,) = w.look()
    assert w.idle_for() == 5
    w.done(f)
    assert w.idle_for() == 0


def test_unreadable_wraps_errors_of_reading_a_checkpoint():
    with pytest.raises(Unreadable, match="gone"):
        with Unreadable.when_reading("x.pt"):
            raise UserError("x.pt: gone")
    with pytest.raises(Unreadable):
        with Unreadable.when_reading("x.pt"):
            raise FileNotFoundError(2, "No such file")
    assert issubclass(Unreadable, UserError)       # outside a watch: exit 2 as before


def test_parse_duration():
    assert parse_duration("90", "--idle") == 90
    assert parse_duration("1.5m", "--idle") == 90
    assert parse_duration("2h", "--idle") == 7200
    for bad in ("", "-1", "0", "5 weeks", "m"):
        with pytest.raises(UserError, match="--idle"):
            parse_duration(bad, "--idle")


# ---------------------------------------------------------------------------------------- gates on intervals
def test_a_rise_within_the_intervals_does_not_fail_the_gate():
    ci = [[0.45, 0.55], [0.18, 0.26], [0.21, 0.31]]    # last 30% above the minimum; the intervals overlap
    t = trend([1, 2, 3], [0.5, 0.2, 0.26], ci)
    assert t.rise_pct == pytest.approx(30.0) and t.rise_beyond_ci is False
    assert gate(t, 5, None) == []
    assert gate(t, 5, None, points=True)                 # --point-estimates counts it
    assert held(t, 5, None) and "within the intervals" in held(t, 5, None)[0]
    assert "within noise" in t.describe() and "early warning" not in t.describe()
    beyond = trend([1, 2, 3], [0.5, 0.2, 0.3], [[0.45, 0.55], [0.18, 0.22], [0.27, 0.33]])
    assert gate(beyond, 5, None) and held(beyond, 5, None) == []
    assert "early warning" in beyond.describe() and "beyond both intervals" in beyond.describe()
    plain = trend([1, 2, 3], [0.5, 0.2, 0.3])
    assert gate(plain, 5, None) and "early warning" not in plain.describe() and "--ci" in plain.describe()


def test_fail_above_with_intervals_counts_only_the_whole_interval():
    t = trend([1, 2], [0.5, 0.4], [[0.45, 0.55], [0.35, 0.45]])
    assert gate(t, None, 0.38) == [] and gate(t, None, 0.38, points=True)
    assert gate(t, None, 0.34) and gate(t, None, 0.46) == []


def test_an_interrupted_scan_interrupts_its_caller():
    from icrcli.errors import Terminated
    from icrcli.scans.sweep import raise_if_stopped
    with pytest.raises(Terminated):
        raise_if_stopped({"stopped": "terminated"})
    with pytest.raises(KeyboardInterrupt):
        raise_if_stopped({"stopped": "interrupted"})
    for fine in (None, "until", "idle", "fail-fast"):
        assert raise_if_stopped({"stopped": fine}) == {"stopped": fine}

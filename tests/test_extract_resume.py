"""A killed or interrupted extraction resumes where it stopped, several processes can fill one extraction, and
the finished file is byte-identical to one uninterrupted single-process run's (made in each test)."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy
import pytest
import torch

N_CHUNKS = 12  # 48 images in chunks of 4

# Runs `icr ARGS...` with the extraction's compute step watched: each computed chunk's first row is appended
# to LOG, and from call BLOCK_AFTER + 1 on the step waits (holding its chunk's claim) until the file GO exists.
DRIVER = r"""
import sys, time
from pathlib import Path
import icrcli.features.extract as ex
log, block_after, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
real, calls = ex.compute_levels, []
def watched(plans, prepared, *a, **k):
    calls.append(1)
    while len(calls) > block_after and not go.exists():
        time.sleep(0.02)
    out = real(plans, prepared, *a, **k)
    with open(log, "a") as f:
        f.write(f"{int(prepared.rows[0]) // 4}\n")
    return out
ex.compute_levels = watched
from icrcli.cli.main import main
sys.argv = ["icr", *sys.argv[4:]]
main()
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, tmp_path):
    """Subprocesses and this process compute on one thread each, so their features agree bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(n)


def _args(d, out, *extra):
    return ["extract", str(d / "net.safetensors"), "--data", str(d / "imgs.npy"), "--sigma", "0.4", "--images",
            "48", "--chunk-images", "4", "--batch-size", "2", "--views", "3", "-o", str(out), "-q", *extra]


def _reference(icr, d, tmp_path) -> bytes:
    ref = tmp_path / "ref.h5"
    r = icr(*_args(d, ref))
    assert r.code == 0, r.err
    return ref.read_bytes()


def _start(d, tmp_path, name, out, block_after):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(log), str(block_after), str(tmp_path / "go"),
                             *_args(d, out)], env=env, stderr=subprocess.PIPE, text=True)
    return proc, log


def _wait_for(cond, what, proc=None, timeout=180):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _chunks(parts: Path) -> list[str]:
    return sorted(p.name for p in parts.glob("chunk-*.npz"))


def _logged(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.mark.slow
def test_kill9_mid_run_then_resume_is_byte_identical(tiny_edm, tmp_path, icr):
    ref = _reference(icr, tiny_edm, tmp_path)
    out = tmp_path / "killed.h5"
    parts = out.with_name(out.name + ".parts")
    proc, _ = _start(tiny_edm, tmp_path, "p", out, block_after=2)  # computes chunks 0, 1, then holds on
    _wait_for(lambda: len(_chunks(parts)) == 2, "two finished chunks", proc)
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    # The kill landed mid-run: two of twelve chunks done, no output, and the dead process's claims are left.
    assert _chunks(parts) == ["chunk-000000.npz", "chunk-000001.npz"] and not out.exists()
    assert (parts / "chunk-000002.lock").exists()
    r = icr(*_args(tiny_edm, out)[:-1])
    assert r.code == 0, r.err
    assert "resuming: 8 images already done" in r.err
    assert out.read_bytes() == ref
    assert not parts.exists() and not list(tmp_path.glob("*.lock"))


@pytest.mark.slow
def test_two_processes_fill_one_extraction(tiny_edm, tmp_path, icr):
    ref = _reference(icr, tiny_edm, tmp_path)
    out = tmp_path / "shared.h5"
    parts = out.with_name(out.name + ".parts")
    p1, log1 = _start(tiny_edm, tmp_path, "p1", out, block_after=2)  # holds its third chunk until "go"
    _wait_for(lambda: len(_chunks(parts)) == 2, "the first process's two chunks", p1)
    p2, log2 = _start(tiny_edm, tmp_path, "p2", out, block_after=10**6)
    _wait_for(lambda: _logged(log2), "a chunk computed by the second process", p2)
    (tmp_path / "go").touch()
    for p in (p1, p2):
        assert p.wait(timeout=300) == 0, p.stderr.read()
    one, two = _logged(log1), _logged(log2)
    assert one and two, (one, two)                           # both computed chunks
    assert sorted(set(one) | set(two)) == list(range(N_CHUNKS))
    assert 2 not in two                                      # claimed by the first process, not taken from it
    assert out.read_bytes() == ref
    assert not parts.exists() and not list(tmp_path.glob("*.lock"))


def _fails_on_call(fn, n: int, exc: BaseException):
    """fn, except that its n-th call raises exc."""
    calls = {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return fn(*a, **k)
    return wrapped


@pytest.mark.slow
def test_interrupt_writes_partial_file_then_resumes(tiny_edm, tmp_path, monkeypatch, icr):
    ref = _reference(icr, tiny_edm, tmp_path)
    import icrcli.features.extract as ex
    real = ex.compute_levels
    monkeypatch.setattr(ex, "compute_levels", _fails_on_call(real, 4, KeyboardInterrupt()))
    out = tmp_path / "f.h5"
    parts = out.with_name(out.name + ".parts")
    args = _args(tiny_edm, out)
    r = icr(*args[:-1])  # not quiet: the interruption says how to resume
    assert r.code == 130
    assert "Run the same command again to resume" in r.err and str(parts) in r.err and str(out) in r.err
    assert _chunks(parts) == ["chunk-000000.npz", "chunk-000001.npz", "chunk-000002.npz"]
    with h5py.File(out) as f:
        assert f.attrs["complete"] == False and f.attrs["rows_done"] == 12  # noqa: E712
    assert icr("score", out, "-q").code == 2  # incomplete: refused without --allow-partial
    r = icr("score", out, "-q", "--allow-partial")
    assert r.code == 0 and r.json["n_images"] == 12
    monkeypatch.setattr(ex, "compute_levels", real)
    r = icr(*args)
    assert r.code == 0 and r.json["cached"] is False
    assert out.read_bytes() == ref
    assert not parts.exists() and not list(tmp_path.glob("*.lock"))


@pytest.mark.slow
def test_disk_full_keeps_chunks_and_resumes(tiny_edm, tmp_path, monkeypatch, icr):
    ref = _reference(icr, tiny_edm, tmp_path)
    real = numpy.savez  # what icrcli.features.chunks.write_part saves a chunk with
    monkeypatch.setattr(numpy, "savez", _fails_on_call(real, 3, OSError(errno.ENOSPC, "No space left on device")))
    out = tmp_path / "f.h5"
    args = _args(tiny_edm, out)
    r = icr(*args)
    assert r.code == 2 and "disk full" in r.err and "Traceback" not in r.err
    parts = out.with_name(out.name + ".parts")
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.npz", "chunk-000001.npz"]
    assert not list(parts.glob("*.tmp"))
    monkeypatch.setattr(numpy, "savez", real)
    assert icr(*args).code == 0
    assert out.read_bytes() == ref

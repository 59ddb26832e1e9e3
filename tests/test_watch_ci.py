"""The CI story end to end, in real processes: a trainer that saves checkpoints in place, slowly, into a folder
that starts empty (and leaves a same-step file in another format and a stray step-like file beside them); a
watcher with --watch --json-lines --ci --fail-on-rise; SIGTERM at the end. Every streamed record, the exit
status and the final JSON are checked, and each point against a plain run over the finished files."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_songunet

# The trainer: for each (source, target, gate, half gate) it waits for the gate file (when given), then copies
# the source into the target in place, in four pieces; with a half gate it stops after two pieces until that file
# exists: a half-written file that looks complete, which the watcher must retry, not give up on or fail on.
WRITER = r"""
import os, sys, time, json
def wait(gate):
    while gate and not os.path.exists(gate):
        time.sleep(0.05)
for src, dst, gate, half in json.loads(sys.argv[1]):
    wait(gate)
    data = open(src, "rb").read()
    q = len(data) // 4 + 1
    with open(dst, "wb") as f:
        for i in range(4):
            f.write(data[i * q:(i + 1) * q]); f.flush(); os.fsync(f.fileno())
            if i == 1:
                wait(half)
            time.sleep(0.1)
"""

POLL, RETRY = 0.4, 5


class Lines:
    """A pipe read line by line in a thread, so the test can wait for what the watcher has said so far."""
    def __init__(self, pipe):
        self.lines, self._t = [], threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._t.start()

    def _read(self, pipe):
        for line in iter(pipe.readline, ""):
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, ok, what, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok(self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; so far: {self.lines[-20:]}")

    def join(self):
        self._t.join(timeout=30)


def _records(lines):
    return [json.loads(x) for x in lines if x.startswith("{")]


@pytest.mark.slow
def test_a_watcher_follows_a_training_run_through_sigterm(tmp_path, tiny_edm, icr, monkeypatch):
    run, src = tmp_path / "run", tmp_path / "src"
    run.mkdir()
    src.mkdir()
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  src / f"ckpt-{step}.safetensors")
    torch.save(tiny_songunet(9).state_dict(), src / "ckpt-200.pt")       # the same step, another format
    (src / "samples-step-250.pt").write_bytes(os.urandom(4096))           # stray, step-like, not a checkpoint
    go, half = tmp_path / "go", tmp_path / "half"
    plan = [(str(src / "ckpt-100.safetensors"), str(run / "ckpt-100.safetensors"), None, str(half)),
            (str(src / "ckpt-200.safetensors"), str(run / "ckpt-200.safetensors"), None, None),
            (str(src / "ckpt-200.pt"), str(run / "ckpt-200.pt"), str(go), None),   # after step 200 is followed
            (str(src / "ckpt-300.safetensors"), str(run / "ckpt-300.safetensors"), None, None),
            (str(src / "samples-step-250.pt"), str(run / "samples-step-250.pt"), None, None)]
    env = {**os.environ, "ICR_CACHE_DIR": str(tmp_path / "cache"), "ICR_PROGRESS_EVERY": "0"}
    args = ["--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma", "0.5", "--ci",
            "--ci-groups", "4"]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "icrcli", "timeline", run, *args, "--watch", "--poll", str(POLL), "--retry-for",
         str(RETRY), "--json-lines", "--fail-on-rise", "0", "--summary", tmp_path / "summary.md"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = Lines(watcher.stdout), Lines(watcher.stderr)
    try:
        err.wait_for(lambda ls: any("waiting for the first checkpoint" in x for x in ls), "the empty folder")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(plan)])
        err.wait_for(lambda ls: any("could not read ckpt-100.safetensors yet" in x for x in ls), "a half file")
        half.touch()
        out.wait_for(lambda ls: any(r.get("step") == 200 for r in _records(ls)), "step 200")
        go.touch()
        out.wait_for(lambda ls: any(r.get("step") == 300 for r in _records(ls)), "step 300")
        assert writer.wait(timeout=120) == 0
        err.wait_for(lambda ls: any("gave up on samples-step-250.pt" in x for x in ls), "the stray file")
        err.wait_for(lambda ls: any("ckpt-200.pt" in x and "already followed" in x for x in ls), "the duplicate")
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    out.join()
    err.join()

    assert code == 143, "\n".join(err.lines)
    *points, final = _records(out.lines)
    assert [p["step"] for p in points] == [100, 200, 300]          # each complete checkpoint once, in order
    assert final["kind"] == "timeline" and final["stopped"] == "terminated"
    assert [p["step"] for p in final["points"]] == [100, 200, 300]
    assert any("samples-step-250.pt" in n for n in final["notes"]) and any("ckpt-200.pt" in n for n in final["notes"])
    # every record carries the running trend and gates, as a fresh reckoning of the points so far says
    for i, rec in enumerate(points):
        so_far = points[: i + 1]
        icr_ = [p["icr"] for p in so_far]
        j = min(range(len(icr_)), key=lambda k: (icr_[k], so_far[k]["step"]))
        assert rec["trend"]["step_min"] == so_far[j]["step"]
        assert rec["trend"]["rise_pct"] == pytest.approx(100 * (icr_[-1] - icr_[j]) / icr_[j])
        beyond = j != i and rec["icr_ci"][0] > so_far[j]["icr_ci"][1]
        assert bool(rec["gates"]["failed"]) == (icr_[-1] > icr_[j] and beyond)   # --fail-on-rise 0, on intervals
        assert rec["gates"]["on"] == "intervals"
    assert final["gates"]["failed"] == points[-1]["gates"]["failed"]
    # one line per new point on stderr, with its ICR; "watching" is said once per batch, not at every poll
    for p in points:
        assert any(f"step {p['step']} " in x and f"ICR {p['icr']:.4f}" in x for x in err.lines)
    assert sum("watching" in x for x in err.lines) <= len(points) + 1
    if final["gates"]["failed"]:
        assert any(x.startswith("icr: gate failed") for x in err.lines)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("<!-- icr summary") and "| 300 |" in summary and "terminated" in summary

    # each point was read whole: it equals a plain run over the finished files (in a cache of its own)
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache2"))
    (run / "ckpt-200.pt").unlink()
    plain = icr("timeline", run, *args, "--pattern", "ckpt-*", "-q")
    assert plain.code == 0, plain.err
    assert [p["icr"] for p in plain.json["points"]] == pytest.approx([p["icr"] for p in final["points"]], rel=1e-6)

"""Scale out: an extraction in shards (`--shard I/N`) or across torchrun ranks gives the features of one process, and
the scores merged from shard files (`icr score A B C`), from statistics files (`icr score --stats-out`, `icr merge`)
or across ranks (sweep, timeline) equal one process's ICR to 1e-9 relative, checked against a dense float64 reference
too. A bad set of shards is named; a rank that dies is said, and the rerun resumes."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import reference

REL = 1e-9


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, tmp_path):
    """This process and its subprocesses compute on one thread, so their features agree bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(n)


def _view_args(d, *extra):
    return [d / "net.safetensors", "--data", d / "imgs.npy", "--images", "40", "--chunk-images", "4", "--batch-size",
            "2", "--views", "3", "--device", "cpu", "-q", *extra]


def _extract(icr, d, out, *extra):
    r = icr("extract", *_view_args(d, "--sigma", "0.4", "-o", out, *extra))
    assert r.code == 0, r.err
    return r.json


def _three_checkpoints(tmp_path):
    """A run folder of 3 tiny SongUNets (steps 100, 200, 300; other weights each)."""
    from safetensors.torch import save_file
    from conftest import tiny_songunet
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  run / f"ckpt-{step}.safetensors")
    return run


def _features(path):
    with h5py.File(path) as f:
        (name,) = f["features"]
        return f["features"][name][:], f["index"][:]


# ------------------------------------------------------------------------------------------------ shards
def test_shard_rows_partition_the_rows_in_whole_chunks():
    from icrcli.features.shards import Shard, parse_shard, shard_rows
    for n, step, count in ((40, 4, 3), (41, 4, 3), (7, 3, 2), (10, 10, 1), (9, 2, 5)):
        parts = [shard_rows(n, step, Shard(i, count)) for i in range(count)]
        together = np.sort(np.concatenate(parts))
        assert (together == np.arange(n)).all(), (n, step, count)   # each row once
        for i, rows in enumerate(parts):
            assert (np.diff(rows) > 0).all()
            assert set(rows // step) == {c for c in range(-(-n // step)) if c % count == i}  # whole chunks
    assert parse_shard("2/5") == Shard(2, 5) and parse_shard(None) == Shard(0, 1)


@pytest.mark.parametrize("bad", ["3/3", "1", "-1/3", "a/b", "0/0"])
def test_bad_shard_is_exit_2(icr, tiny_edm, tmp_path, bad):
    r = icr("extract", *_view_args(tiny_edm, "--sigma", "0.4", "--shard", bad, "-o", tmp_path / "x.h5"))
    assert r.code == 2 and "--shard" in r.err and "0 <= I < N" in r.err


@pytest.mark.slow
def test_three_shards_are_the_whole_files_rows_and_score_the_same(icr, tiny_edm, tmp_path):
    whole = _extract(icr, tiny_edm, tmp_path / "whole.h5")
    shards = [_extract(icr, tiny_edm, tmp_path / f"s{i}.h5", "--shard", f"{i}/3") for i in range(3)]
    assert [s["shard"] for s in shards] == ["0/3", "1/3", "2/3"] and sum(s["n_images"] for s in shards) == 40
    h, index = _features(tmp_path / "whole.h5")
    for i in range(3):   # the shard's rows are the whole file's rows, bit for bit
        part, part_index = _features(tmp_path / f"s{i}.h5")
        rows = np.concatenate([np.arange(c * 4, c * 4 + 4) for c in range(i, 10, 3)])
        assert (part == h[rows]).all() and (part_index == index[rows]).all()

    one = icr("score", tmp_path / "whole.h5", "--ci", "--ci-groups", "4", "--no-cache")
    merged = icr("score", tmp_path / "s2.h5", tmp_path / "s0.h5", tmp_path / "s1.h5", "--ci", "--ci-groups", "4")
    assert one.code == 0 and merged.code == 0, one.err + merged.err
    a, b = one.json, merged.json
    ref_icr, ref_lam, _ = reference.icr(h)       # dense float64, written apart from icrcli
    assert b["icr"] == pytest.approx(a["icr"], rel=REL) and b["icr"] == pytest.approx(ref_icr, rel=1e-7)
    assert np.allclose(b["eigenvalues"], a["eigenvalues"], rtol=REL, atol=1e-12)
    assert b["icr_ci"] == pytest.approx(a["icr_ci"], rel=REL) and b["icr_se"] == pytest.approx(a["icr_se"], rel=1e-7)
    assert b["n_images"] == 40 and b["input"]["shards"] == 3 and b["input"]["shape"] == [40, 3, a["dim"]]
    # The merged provenance is the whole extraction's: its key is the one the unsplit run has.
    assert b["provenance"]["config_key"] == whole["config_key"] == a["provenance"]["config_key"]
    assert "shard" not in b["provenance"]["config"]


@pytest.mark.slow
def test_shards_in_a_folder_or_glob_and_every_bad_set_named(icr, tiny_edm, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    for i in range(3):
        _extract(icr, tiny_edm, d / f"s{i}.h5", "--shard", f"{i}/3")
    by_folder = icr("score", d)
    by_glob = icr("score", str(d / "s*.h5"))
    assert by_folder.code == 0 and by_glob.code == 0, by_folder.err + by_glob.err
    assert by_folder.json["icr"] == by_glob.json["icr"] and by_folder.json["input"]["shards"] == 3

    missing = icr("score", d / "s0.h5", d / "s2.h5")
    assert missing.code == 2 and "shard(s) 1/3" in missing.err and "missing" in missing.err
    alone = icr("score", d / "s1.h5")
    assert alone.code == 2 and "0/3, 2/3" in alone.err

    shutil.copy(d / "s1.h5", tmp_path / "again.h5")
    twice = icr("score", d / "s0.h5", d / "s1.h5", d / "s2.h5", tmp_path / "again.h5")
    assert twice.code == 2 and "shard 1/3 is given twice" in twice.err and "again.h5" in twice.err

    other = tmp_path / "other.h5"    # shard 2/3 of another configuration (another sigma)
    r = icr("extract", *_view_args(tiny_edm, "--sigma", "0.9", "--shard", "2/3", "-o", other))
    assert r.code == 0, r.err
    foreign = icr("score", d / "s0.h5", d / "s1.h5", other)
    assert foreign.code == 2 and "other.h5" in foreign.err and "another extraction" in foreign.err
    assert "sigma" in foreign.err

    short = tmp_path / "short.h5"    # an interrupted shard: marked incomplete, fewer rows written
    shutil.copy(d / "s0.h5", short)
    with h5py.File(short, "r+") as f:
        f.attrs["rows_done"] = 8
        f.attrs["complete"] = False
    incomplete = icr("score", short, d / "s1.h5", d / "s2.h5")
    assert incomplete.code == 2 and "short.h5 (shard 0/3) is incomplete" in incomplete.err

    whole = tmp_path / "whole.h5"
    _extract(icr, tiny_edm, whole)
    mixed = icr("score", whole, d / "s0.h5")
    assert mixed.code == 2 and "is not a shard" in mixed.err


@pytest.mark.slow
def test_a_shard_resumes_after_an_interruption_and_is_then_cached(icr, tiny_edm, tmp_path, monkeypatch):
    ref = tmp_path / "ref.h5"
    _extract(icr, tiny_edm, ref, "--shard", "1/3")
    import icrcli.features.extract as ex
    real, calls = ex.compute_levels, []

    def stops_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(ex, "compute_levels", stops_on_third)
    out = tmp_path / "s1.h5"
    loud = [a for a in _view_args(tiny_edm, "--sigma", "0.4", "--shard", "1/3", "-o", out) if a != "-q"]
    r = icr("extract", *loud)   # not quiet: the interruption says how to resume
    assert r.code == 130 and "Run the same command again to resume" in r.err
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("chunk-*.npz"))) == 2          # shard 1/3 has 3 chunks: stopped in the third
    monkeypatch.setattr(ex, "compute_levels", real)
    again = icr("extract", *loud)
    assert again.code == 0 and "resuming: 8 images already done" in again.err
    assert out.read_bytes() == ref.read_bytes()
    cached = icr("extract", *_view_args(tiny_edm, "--sigma", "0.4", "--shard", "1/3", "-o", out))
    assert cached.code == 0 and cached.json["cached"] is True and cached.json["shard"] == "1/3"
    other = icr("extract", *_view_args(tiny_edm, "--sigma", "0.4", "--shard", "2/3", "-o", out))
    assert other.code == 2 and "different configuration" in other.err   # another shard is another request


# ------------------------------------------------------------------------------------------- statistics
def test_stats_out_and_merge_equal_one_score_of_a_npy(icr, tmp_path):
    """Statistics of disjoint halves of a plain (N, K, D) array merge into the score of the whole."""
    rng = np.random.default_rng(3)
    h = reference.views(rng, n=300, k=3, d=10, offset=5.0)
    np.save(tmp_path / "all.npy", h)
    np.save(tmp_path / "a.npy", h[:130])
    np.save(tmp_path / "b.npy", h[130:])
    whole = icr("score", tmp_path / "all.npy", "--ci", "--ci-groups", "5", "--stats-out", tmp_path / "all.npz")
    assert whole.code == 0, whole.err
    assert whole.json["stats"] == str(tmp_path / "all.npz")
    for name in ("a", "b"):
        r = icr("score", tmp_path / f"{name}.npy", "--stats-out", tmp_path / f"{name}.npz")
        assert r.code == 0, r.err
    m = icr("merge", tmp_path / "a.npz", tmp_path / "b.npz", "--tau-rel", "1e-3")
    assert m.code == 0, m.err
    ref_icr, _, _ = reference.icr(h)
    assert m.json["icr"] == pytest.approx(whole.json["icr"], rel=REL)
    assert m.json["icr"] == pytest.approx(ref_icr, rel=1e-9)
    assert m.json["n_images"] == 300 and m.json["input"]["paths"] == [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    again = icr("merge", tmp_path / "all.npz", "--ci", "--ci-groups", "5")   # one file with its groups
    assert again.code == 0 and again.json["icr_ci"] == pytest.approx(whole.json["icr_ci"], rel=REL)
    assert icr("merge", tmp_path / "a.npz", tmp_path / "a.npz").code == 0   # the same path once: one part
    shutil.copy(tmp_path / "a.npz", tmp_path / "a2.npz")
    dup = icr("merge", tmp_path / "a.npz", tmp_path / "a2.npz")
    assert dup.code == 2 and "counted twice" in dup.err and "a2.npz" in dup.err
    no_groups = icr("merge", tmp_path / "a.npz", tmp_path / "b.npz", "--ci")
    assert no_groups.code == 2 and "without --ci" not in no_groups.err and "no --ci" in no_groups.err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    junk = icr("merge", tmp_path / "junk.npz")
    assert junk.code == 2 and "junk.npz is not a statistics file" in junk.err


@pytest.mark.slow
def test_shard_statistics_merged_elsewhere(icr, tiny_edm, tmp_path):
    for i in range(3):
        _extract(icr, tiny_edm, tmp_path / f"s{i}.h5", "--shard", f"{i}/3")
    _extract(icr, tiny_edm, tmp_path / "whole.h5")
    one = icr("score", tmp_path / "whole.h5", "--no-cache").json
    part = icr("score", tmp_path / "s1.h5", "--stats-out", tmp_path / "st1.npz")
    assert part.code == 0, part.err
    assert part.json["shards"] == [1] and part.json["shard_count"] == 3 and part.json["all_shards"] is False
    rest = icr("score", tmp_path / "s0.h5", tmp_path / "s2.h5", "--stats-out", tmp_path / "st02.npz")
    assert rest.code == 0 and rest.json["shards"] == [0, 2], rest.err
    lacking = icr("merge", tmp_path / "st1.npz")
    assert lacking.code == 2 and "0/3, 2/3" in lacking.err
    m = icr("merge", tmp_path / "st02.npz", tmp_path / "st1.npz")
    assert m.code == 0, m.err
    assert m.json["icr"] == pytest.approx(one["icr"], rel=REL)
    assert m.json["provenance"]["config_key"] == one["provenance"]["config_key"]


# ------------------------------------------------------------------------------------------ sweep, timeline
@pytest.mark.slow
def test_sweep_shards_then_merge_from_the_cache(icr, tiny_edm, monkeypatch):
    args = ["sweep", *_view_args(tiny_edm, "--sigmas", "0.2,0.8")]
    one = icr(*args, "--no-cache")
    assert one.code == 0, one.err
    for i in range(3):
        r = icr(*args, "--shard", f"{i}/3")
        assert r.code == 0 and r.json["kind"] == "sweep-shard" and r.json["shard"] == f"{i}/3", r.err
    import icrcli.features.compute as compute
    calls = []
    real = compute.compute_levels
    monkeypatch.setattr("icrcli.features.extract.compute_levels", lambda *a, **k: calls.append(1) or real(*a, **k))
    merged = icr(*args, "--shards", "3")
    assert merged.code == 0, merged.err
    assert calls == []       # every shard came from the cache: nothing computed again
    a, b = one.json, merged.json
    assert b["shards"] == 3 and [lv["sigma"] for lv in b["levels"]] == [0.2, 0.8]
    for x, y in zip(a["levels"], b["levels"]):
        assert y["icr"] == pytest.approx(x["icr"], rel=REL) and y["n_images"] == 40
        assert y["provenance"]["config_key"] == x["provenance"]["config_key"]
        # the jackknife's groups merge with the shards: the same replicates, so the same rise and ties
        assert y["icr_replicates"] == pytest.approx(x["icr_replicates"], rel=REL)
        assert y["rise_from_min"]["ci"] == pytest.approx(x["rise_from_min"]["ci"], rel=REL, abs=1e-9)
        assert y["tied_with_min"] == x["tied_with_min"]
    assert b["ties"][0]["tied_sigmas"] is not None and b["ties"] == a["ties"]
    both = icr(*args, "--shard", "0/3", "--shards", "3")
    assert both.code == 2 and "one way of splitting" in both.err


@pytest.mark.slow
def test_timeline_shards_then_the_plain_run_answers_from_the_cache(icr, tiny_edm, tmp_path, monkeypatch):
    run = _three_checkpoints(tmp_path)
    args = ["timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma",
            "0.5", "--device", "cpu", "-q"]
    steps = []
    for i in range(2):
        r = icr(*args, "--shard", f"{i}/2")
        assert r.code == 0 and r.json["kind"] == "timeline-shard", r.err
        steps.append([p["step"] for p in r.json["points"]])
    assert steps == [[100, 300], [200]]
    import icrcli.features.plan as plan
    loaded = []
    real = plan.load_model
    monkeypatch.setattr(plan, "load_model", lambda p, *a, **k: loaded.append(p) or real(p, *a, **k))
    whole = icr(*args)
    assert whole.code == 0 and loaded == [], whole.err
    assert [p["step"] for p in whole.json["points"]] == [100, 200, 300]


# ---------------------------------------------------------------------------------------------- torchrun
def _free_port() -> int:
    """A port nothing listens on now: helpers running this suite side by side never share a rendezvous."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, *args, script=None, timeout=600, env=None, tee=False):
    """2 ranks of `icr ARGS` (or of `script`) under torchrun; tee: each line of stderr prefixed with its rank
    ([default0]:, [default1]:)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    target = [str(script)] if script else ["-m", "icrcli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           *(["--tee", "2"] if tee else []), *target, *map(str, args)]
    # a session of its own: on a timeout (a hang) the ranks are killed with torchrun, not left behind
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            import signal
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.slow
def test_torchrun_two_ranks_extract_and_sweep_equal_one_process(icr, tiny_edm, tmp_path):
    ref = tmp_path / "ref.h5"
    _extract(icr, tiny_edm, ref)
    out = tmp_path / "tr.h5"
    r = _torchrun(tmp_path, "extract", *_view_args(tiny_edm, "--sigma", "0.4", "-o", out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref.read_bytes()           # the one process's file, byte for byte
    assert r.stdout.count('"features"') == 1               # rank 0 alone writes the summary
    assert not out.with_name(out.name + ".parts").exists()

    args = ["sweep", *_view_args(tiny_edm, "--sigmas", "0.2,0.8")]
    one = icr(*args, "--no-cache")
    assert one.code == 0, one.err
    r = _torchrun(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)                            # one JSON object: rank 0's
    assert res["ranks"] == 2
    for x, y in zip(one.json["levels"], res["levels"]):
        assert y["icr"] == pytest.approx(x["icr"], rel=REL) and y["n_images"] == 40
        assert len(y["input"]["paths"]) == 2              # each rank's shard, scored once
        assert y["icr_replicates"] == pytest.approx(x["icr_replicates"], rel=REL)
    assert res["ties"][0]["tied_sigmas"] is not None and res["ties"] == one.json["ties"]


COUNTS = textwrap.dedent(r"""
    import atexit, json, os, sys
    import torch.distributed
    import icrcli.stats.eigensolve as es
    calls = {"solve": 0, "recv": 0, "gather": 0}
    def counted(name, real):
        def f(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return f
    es.solve = counted("solve", es.solve)
    torch.distributed.recv_object_list = counted("recv", torch.distributed.recv_object_list)
    torch.distributed.all_gather_object = counted("gather", torch.distributed.all_gather_object)
    atexit.register(lambda: open(os.environ["COUNTS_DIR"] + f"/rank{os.environ.get('RANK', 'one')}.json", "w").write(
        json.dumps(calls)))
    from icrcli.cli.main import main
    sys.argv = ["icr", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_torchrun_sweep_scores_each_level_once_on_rank_0(tiny_edm, tmp_path):
    """Every eigen-solve of a 2-rank sweep (the ICR and its jackknife's, 2 levels) runs on rank 0; rank 1 solves
    none and receives no moments (before: both ranks gathered every level's moments and solved them all)."""
    script = tmp_path / "counts.py"
    script.write_text(COUNTS)
    args = ["sweep", *_view_args(tiny_edm, "--sigmas", "0.2,0.8")]
    r = _torchrun(tmp_path, *args, script=script, timeout=300,
                  env={"COUNTS_DIR": str(tmp_path), "ICR_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    c0, c1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    one = subprocess.run([sys.executable, str(script), *map(str, args), "--no-cache"], capture_output=True, text=True,
                         env={**os.environ, "COUNTS_DIR": str(tmp_path)})
    assert one.returncode == 0, one.stderr
    alone = json.loads((tmp_path / "rankone.json").read_text())
    # rank 0 solves what one process solves (each level's ICR, its jackknife's replicates), each level once
    assert alone["solve"] >= len(res["levels"]) * (1 + len(res["levels"][0]["icr_replicates"]))
    assert c0["solve"] == alone["solve"] and c0["recv"] == len(res["levels"])
    assert c1["solve"] == 0 and c1["recv"] == 0
    assert c0["gather"] == c1["gather"] == 0          # nothing gathered onto every rank


@pytest.mark.slow
def test_torchrun_two_ranks_split_a_timeline_by_checkpoint(icr, tiny_edm, tmp_path):
    run = _three_checkpoints(tmp_path)
    args = ["timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma",
            "0.5", "--device", "cpu", "-q"]
    one = icr(*args, "--no-cache")
    assert one.code == 0, one.err
    r = _torchrun(tmp_path, *args, "--json-lines")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 4                                 # rank 0 streams every point once, then the result
    res = lines[-1]
    assert [p["step"] for p in res["points"]] == [100, 200, 300]
    for x, y in zip(one.json["points"], res["points"]):
        assert y["icr"] == pytest.approx(x["icr"], rel=REL)
    assert res["series"][0]["trend"] == one.json["series"][0]["trend"]


FAIL_FAST = textwrap.dedent(r"""
    import os, sys, time
    from pathlib import Path
    import icrcli.dist as dist
    import icrcli.scans.timeline as tl
    out, rank = Path(os.environ["MARKS_DIR"]), os.environ["RANK"]
    real_points, real_raise = tl._points_of, dist.StopFlag.raise_
    def points_of(f, *a, **k):
        (out / f"computed-{rank}-{f.step}").touch()
        if rank == "0" and f.step == 100:           # rank 0 holds its first checkpoint until rank 1 has failed
            for _ in range(1200):
                if (out / "raised").exists():
                    break
                time.sleep(0.1)
        return real_points(f, *a, **k)
    def raise_(self, value):
        real_raise(self, value)
        (out / "raised").write_text(str(value))
    tl._points_of, dist.StopFlag.raise_ = points_of, raise_
    from icrcli.cli.main import main
    sys.argv = ["icr", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_torchrun_fail_fast_stops_the_whole_job_where_one_process_would(icr, tiny_edm, tmp_path):
    """4 checkpoints on 2 ranks (rank 0: steps 100, 300; rank 1: 200, 400); --fail-above fails first at step 200,
    rank 1's. Rank 0 (held at step 100 until then) reads no checkpoint past 200, and the job's answer is one
    process's: points 100 and 200, stopped fail-fast at step 200, exit 3 (before: rank 0 went on to 300 and its
    own `stopped`, null, was the job's)."""
    from safetensors.torch import save_file
    from conftest import tiny_songunet
    probe_run = tmp_path / "probe"
    probe_run.mkdir()
    for seed in (1, 2, 3, 4):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  probe_run / f"ckpt-{seed}.safetensors")
    tail = ["--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma", "0.5",
            "--device", "cpu", "-q"]
    icrs = {p["step"]: p["icr"] for p in icr("timeline", probe_run, *tail).json["points"]}
    low, high = min(icrs, key=icrs.get), max(icrs, key=icrs.get)
    # step 100 passes, step 200 fails: the lowest ICR first, the highest second, the threshold between them
    order = [low, high, *[s for s in icrs if s not in (low, high)]]
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in zip((100, 200, 300, 400), order):
        shutil.copy(probe_run / f"ckpt-{seed}.safetensors", run / f"ckpt-{step}.safetensors")
    args = ["timeline", run, *tail, "--fail-above", f"{(icrs[low] + icrs[high]) / 2!r}", "--fail-fast"]
    one = icr(*args)
    assert one.code == 3 and [p["step"] for p in one.json["points"]] == [100, 200]
    script = tmp_path / "ff.py"
    script.write_text(FAIL_FAST)
    marks = tmp_path / "marks"
    marks.mkdir()
    r = _torchrun(tmp_path, *args, script=script, timeout=300,
                  env={"MARKS_DIR": str(marks), "ICR_CACHE_DIR": str(tmp_path / "c")})
    # rank 0 exits 3 (a gate failed); torchrun itself ends with 1 for any rank's non-zero exit, and names it
    import re
    assert r.returncode != 0 and re.search(r"exitcode\s*:\s*3\b", r.stderr), r.stderr
    assert sorted(m.name for m in marks.glob("computed-*")) == ["computed-0-100", "computed-1-200"]
    res = json.loads(r.stdout)
    assert [p["step"] for p in res["points"]] == [100, 200]
    assert res["stopped"] == one.json["stopped"] == "fail-fast"
    assert res["stopped_at"] == one.json["stopped_at"] and res["stopped_at"]["step"] == 200
    assert res["gates"]["failed"] == one.json["gates"]["failed"]
    for x, y in zip(one.json["points"], res["points"]):
        assert y["icr"] == pytest.approx(x["icr"], rel=REL)


DIES = textwrap.dedent(r"""
    import os, sys, time
    import icrcli.features.extract as ex
    real, calls = ex.compute_levels, []
    def watched(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            if os.environ["RANK"] == "1":
                os._exit(7)                      # rank 1 dies after its first chunk
            while True:                          # rank 0 holds on: it is mid-run when torchrun stops it
                time.sleep(0.05)
        return real(*a, **k)
    ex.compute_levels = watched
    from icrcli.cli.main import main
    sys.argv = ["icr", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_a_rank_that_dies_is_said_and_the_rerun_resumes(icr, tiny_edm, tmp_path):
    ref = tmp_path / "ref.h5"
    _extract(icr, tiny_edm, ref)
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    out = tmp_path / "tr.h5"
    parts = out.with_name(out.name + ".parts")
    args = ["extract", *_view_args(tiny_edm, "--sigma", "0.4", "-o", out)]
    r = _torchrun(tmp_path, *args, script=script)
    assert r.returncode != 0
    assert "torchrun stopped this process (rank 0 of 2), most likely because another rank failed" in r.stderr
    chunks = sorted(parts.glob("chunk-*.npz"))
    assert 0 < len(chunks) < 10                               # stopped mid-run: some chunks kept, not all
    again = _torchrun(tmp_path, *[a for a in args if a != "-q"])
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert out.read_bytes() == ref.read_bytes()


# ------------------------------------------------------------------------------------- the whole job's progress
PROGRESS = r"^\[default(\d)\]:(extracting|checkpoints): ([\d,]+)/([\d,]+) (images|checkpoints)"


def _progress(stderr):
    """(rank, what, done, total) of every plain progress line (ICR_PROGRESS_EVERY=0: one per advance)."""
    import re
    return [(int(m[1]), m[2], int(m[3].replace(",", "")), int(m[4].replace(",", "")))
            for m in (re.match(PROGRESS, line) for line in stderr.splitlines()) if m]


@pytest.mark.slow
def test_torchrun_rank_0_shows_the_whole_sweeps_progress(tiny_edm, tmp_path):
    """20 images in chunks of 4: rank 0 extracts 3 chunks, rank 1 two (unequal shares). Rank 0's bar counts both
    ranks' images at both levels (40), and ends there; rank 1 shows none (before: rank 0 showed its 24)."""
    args = ["sweep", *[a for a in _view_args(tiny_edm, "--sigmas", "0.2,0.8") if a != "-q"]]
    args[args.index("--images") + 1] = "20"
    r = _torchrun(tmp_path, *args, env={"ICR_PROGRESS_EVERY": "0", "ICR_CACHE_DIR": str(tmp_path / "c")}, tee=True)
    assert r.returncode == 0, r.stderr
    lines = _progress(r.stderr)
    assert lines and {rank for rank, *_ in lines} == {0}, r.stderr
    assert {(what, total) for _, what, _, total in lines} == {("extracting", 40)}
    done = [d for _, _, d, _ in lines]
    assert done == sorted(done) and done[-1] == 40 and max(done) > 24    # more than rank 0's own share
    import re                       # then rank 0 alone merges the ranks' moments and scores the 2 levels, with a bar
    merging = [m.groups() for m in re.finditer(r"^\[default(\d)\]:merging and scoring: (\d+)/(\d+) levels",
                                               r.stderr, re.M)]
    assert merging and {rank for rank, _, _ in merging} == {"0"} and merging[-1][1:] == ("2", "2"), r.stderr


@pytest.mark.slow
def test_torchrun_rank_0_shows_the_whole_timelines_progress(tiny_edm, tmp_path):
    """3 checkpoints on 2 ranks (2 and 1): rank 0's bar counts checkpoints of the whole job, 3, and reaches 3."""
    run = _three_checkpoints(tmp_path)
    args = ["timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma",
            "0.5", "--device", "cpu"]
    env = {"ICR_PROGRESS_EVERY": "0", "ICR_CACHE_DIR": str(tmp_path / "c")}
    r = _torchrun(tmp_path, *args, env=env, tee=True)
    assert r.returncode == 0, r.stderr
    lines = _progress(r.stderr)
    assert lines and {rank for rank, *_ in lines} == {0}, r.stderr
    assert {(what, total) for _, what, _, total in lines} == {("checkpoints", 3)}   # no bar of one checkpoint
    assert [d for _, _, d, _ in lines][-1] == 3
    again = _torchrun(tmp_path, *args, env=env, tee=True)     # every point cached: each rank's share counts at once
    assert again.returncode == 0 and "answered from the cache" in again.stderr, again.stderr
    assert [(w, d, t) for _, w, d, t in _progress(again.stderr)][-1] == ("checkpoints", 3, 3)


DIES_WAITED_FOR = textwrap.dedent(r"""
    import os, sys
    import icrcli.features.extract as ex
    real, calls = ex.compute_levels, []
    def watched(*a, **k):
        calls.append(1)
        if len(calls) > 1 and os.environ["RANK"] == "1":
            os._exit(7)                          # rank 1 dies in its share, while rank 0 may be waiting for it
        return real(*a, **k)
    ex.compute_levels = watched
    from icrcli.cli.main import main
    sys.argv = ["icr", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_a_rank_that_dies_while_rank_0_shows_the_job_is_said(tiny_edm, tmp_path):
    """Rank 0 finishes its share and waits for rank 1 with its bar's thread polling; rank 1 dies. Rank 0 does not
    hang (the run ends within the subprocess timeout) and says what happened."""
    script = tmp_path / "dies.py"
    script.write_text(DIES_WAITED_FOR)
    args = ["sweep", *[a for a in _view_args(tiny_edm, "--sigmas", "0.2,0.8") if a != "-q"]]
    r = _torchrun(tmp_path, *args, script=script, timeout=300, tee=True,
                  env={"ICR_PROGRESS_EVERY": "0", "ICR_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode != 0
    assert ("torchrun stopped this process (rank 0 of 2)" in r.stderr
            or "another process of this torchrun job stopped" in r.stderr), r.stderr
    done = [d for _, _, d, _ in _progress(r.stderr)]
    assert done and max(done) < 80          # mid-run: rank 1's share was never finished
    again = _torchrun(tmp_path, *args, timeout=300, tee=True,
                      env={"ICR_PROGRESS_EVERY": "0", "ICR_CACHE_DIR": str(tmp_path / "c")})
    assert again.returncode == 0, again.stderr
    lines = _progress(again.stderr)         # the same command again finishes the job
    assert lines[-1][2:] == (80, 80) and json.loads(again.stdout)["ranks"] == 2


@pytest.mark.slow
def test_torchrun_timeline_sigma_auto_with_a_rank_without_checkpoints(tiny_edm, tmp_path):
    """One checkpoint, two ranks: rank 1 computes no point, yet joins --sigma auto's coarse sweep (split across
    the ranks), so the ranks' collectives match (before, rank 1 went straight to gathering the points while rank 0
    was in the sweep)."""
    from safetensors.torch import save_file
    from conftest import tiny_songunet
    run = tmp_path / "run"
    run.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_songunet(1).state_dict().items()}, run / "ckpt-100.safetensors")
    r = _torchrun(tmp_path, "timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "4",
                  "--sigma", "auto", "--device", "cpu", "-q", timeout=300,
                  env={"ICR_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sigma_auto"]["sigma"] in res["sigma_auto"]["grid"] and len(res["points"]) == 1
    assert res["points"][0]["sigma"] == res["sigma_auto"]["sigma"]

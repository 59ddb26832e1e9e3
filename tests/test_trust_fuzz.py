"""Hostile files never end in an unexpected error (issue 15, point 6): result JSON handed to `icr plot`, feature
files whose HDF5 attributes are not what icr wrote, sidecars whose values are not what a user writes. Each case
either works (exit 0) or is a UserError (exit 2 with a message), never exit 1.

Fixed seeds; each fuzzer draws a bounded set of cases: one value replaced (or removed) at one place, from a list of
values that break naive code (NaN, 1e308, huge integers, wrong types, empty and very long strings)."""

import json
import random

import h5py
import numpy as np
import pytest

RNG_SEED = 20261206
HOSTILE = [None, True, False, "", "x", "L" * 100_000, -1, 0, 2 ** 70, -(2 ** 70), 1e308, -1e308, float("nan"),
           float("inf"), float("-inf"), 0.5, [], {}, [1], [1, 2, 3], [float("nan"), 1], ["a", "b"], {"a": 1},
           [[1, 2]], "NaN"]


def _never_exit_1(r, what):
    assert r.code in (0, 2), (what, r.code, r.err[-2000:])
    assert "unexpected error" not in r.err and "Traceback" not in r.err, (what, r.err[-2000:])


# ------------------------------------------------------------------------------------------------ result JSON
def _sweep():
    return {"schema": 1, "kind": "sweep", "version": "0", "checkpoint": "ck.pt", "sigmas": [0, 0.1, 1],
            "levels": [{"layer": L, "sigma": s, "icr": 0.4 + s / 7 + i / 10, "icr_ci": [0.3, 0.9], "trace_s": 1.0,
                        "trace_xi": 2.0, "probe_test_accuracy": 0.5 + s / 10}
                       for i, L in enumerate(("a", "b")) for s in (0.0, 0.1, 1.0)]}


def _timeline():
    return {"schema": 1, "kind": "timeline", "version": "0", "folder": "run",
            "points": [{"step": st, "sigma": 0.5, "layer": "a", "icr": 0.3 + st / 1e4, "icr_ci": [0.2, 0.8],
                        "trace_s": 1.0 + st, "trace_xi": 2.0, "memorization_ratio": st / 1e3}
                       for st in (100, 200, 300)]}


def _mutations(n: int):
    rng = random.Random(RNG_SEED)
    for i in range(n):
        base = _sweep() if i % 2 == 0 else _timeline()
        recs = base["levels" if base["kind"] == "sweep" else "points"]
        where = rng.choice(["top", "record", "record", "record", "whole"])
        value = rng.choice(HOSTILE)
        if where == "whole":
            yield f"whole={value!r:.40}", value
            continue
        target = base if where == "top" else rng.choice(recs)
        key = rng.choice(sorted(target))
        if rng.random() < 0.2:
            del target[key]
            yield f"{where}: -{key}", base
        else:
            target[key] = value
            yield f"{where}: {key}={value!r:.40}", base


@pytest.mark.slow
def test_plot_never_exits_1_on_hostile_result_json(tmp_path, icr):
    pytest.importorskip("matplotlib")
    for i, (what, obj) in enumerate(_mutations(48)):
        src = tmp_path / f"r{i}.json"
        src.write_text(json.dumps(obj))
        r = icr("plot", src, "-o", tmp_path / f"p{i}.png")
        _never_exit_1(r, what)


def test_plot_refuses_results_of_another_shape(tmp_path, icr):
    """A sample of the fuzzer's cases that are plainly not a result, each a UserError naming what is wrong."""
    pytest.importorskip("matplotlib")
    cases = {"list": [1, 2], "no levels": {"kind": "sweep"}, "empty levels": {**_sweep(), "levels": []},
             "level not an object": {**_sweep(), "levels": [1]},
             "nan icr": {**_sweep(), "levels": [{"sigma": 0.1, "icr": float("nan")}]},
             "string sigma": {**_sweep(), "levels": [{"sigma": "0.1", "icr": 0.5}]},
             "bad ci": {**_sweep(), "levels": [{"sigma": 0.1, "icr": 0.5, "icr_ci": [1]}]},
             "no trace": {**_timeline(), "points": [{"step": 1, "sigma": 0.5, "icr": 0.5}]},
             "huge": {**_sweep(), "levels": [{"sigma": 0.1, "icr": 1e308}]},
             "layer object": {**_sweep(), "levels": [{"sigma": 0.1, "icr": 0.5, "layer": {"a": 1}}]}}
    for what, obj in cases.items():
        (tmp_path / "r.json").write_text(json.dumps(obj))
        r = icr("plot", tmp_path / "r.json", "-o", tmp_path / "p.png")
        assert r.code == 2 and "unexpected error" not in r.err, (what, r.err)
        assert not (tmp_path / "p.png").exists(), what


# ------------------------------------------------------------------------------------------------ HDF5 attributes
ATTRS = ["config", "rows_done", "complete", "n_images", "n_views", "sigma", "format", "layers", "augment",
         "checkpoint_sha256"]
H5_HOSTILE = [np.nan, np.inf, -1, 2 ** 62, np.uint64(2 ** 64 - 1), 1e308, "", "{", "[1]", "null", b"\xff\xfe",
              np.arange(3), np.zeros((2, 2)), np.array([b"a", b"b"]), np.array([], dtype=np.float64), True, 0.5,
              "x" * 70_000]


def _feature_file(path, rng):
    h = rng.normal(size=(32, 2, 4)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features/blk", data=h, chunks=(8, 2, 4))
        f["labels"] = np.repeat(np.arange(2), 16)
        f.attrs["format"] = "icr-features"
        f.attrs["complete"] = True
        f.attrs["rows_done"] = 32
        f.attrs["config"] = json.dumps({"sigma": 0.5})


@pytest.mark.slow
def test_score_probe_and_info_never_exit_1_on_hostile_attributes(tmp_path, icr):
    rng = random.Random(RNG_SEED)
    nrng = np.random.default_rng(RNG_SEED)
    for i in range(36):
        name, value = rng.choice(ATTRS), rng.choice(H5_HOSTILE)
        path = tmp_path / f"f{i}.h5"
        _feature_file(path, nrng)
        with h5py.File(path, "a") as f:
            f.attrs[name] = value
        what = f"{name}={value!r:.40}"
        for cmd in (("score", path, "-q", "--no-cache"), ("probe", path, "-q"), ("info", path, "--json")):
            _never_exit_1(icr(*cmd), (cmd[0], what))


# ------------------------------------------------------------------------------------------------ sidecar values
SIDECAR_HOSTILE = [float("nan"), 1e308, -1e308, 10 ** 30, -1, "", "x", [], {}, True, "nan:nan",
                   "linear:1e-4:0.02:1000000000000", "1e308:-1e308", "-1e308:1e308", {"width": float("nan")},
                   {"width": 10 ** 30}, "ve-sde:1e-308:1e308"]


@pytest.mark.slow
def test_extract_never_exits_1_on_hostile_sidecar_values(tmp_path, icr, tiny_edm):
    from icrcli.models.resolve import SIDECAR_KEYS
    rng = random.Random(RNG_SEED)
    ckpt = tmp_path / "net.safetensors"
    ckpt.write_bytes((tiny_edm / "net.safetensors").read_bytes())
    cases = [("schedule", "linear:1e-4:0.02:1000000000000"), ("data_range", "-1e308:1e308"),
             ("class_label", 10 ** 30), ("arch_args", {"model_channels": float("nan")})]
    cases += [(rng.choice(SIDECAR_KEYS), rng.choice(SIDECAR_HOSTILE)) for _ in range(20)]
    for i, (key, value) in enumerate(cases):
        side = {key: value}
        if key == "schedule":
            side["param"] = "ddpm"
        (tmp_path / "net.safetensors.icr.json").write_text(json.dumps(side))
        r = icr("extract", ckpt, "--data", tiny_edm / "imgs.npy", "--sigma", "0.5", "--images", "4", "-q",
                "-o", tmp_path / f"f{i}.h5")
        _never_exit_1(r, f"{key}={value!r:.60}")

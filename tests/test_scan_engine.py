"""The scan engine (issue 16 point 2): one pass over the data for every point a scan shares, one result shape,
and a new axis in a few lines that gets the table, the JSON, the cache and the plot."""

import json

import numpy as np
import pytest

import icrcli.features.compute as compute
import icrcli.features.extract as ex
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan
from icrcli.models.resolve import ModelOptions

LAYERS = ("model.enc.8x8_block0", "model.dec.8x8_in0")     # two taps, one forward pass reaches both



@pytest.mark.slow
def test_augmentations_share_the_decode_and_layers_share_the_forward_pass(tiny_edm, tmp_path, count_calls):
    """Plans over 2 augmentations x 2 sigmas x 2 layers (each plan one layer, its own file): each chunk decoded
    once, each batch augmented once per augmentation and run once per (augmentation, sigma, view), and every
    file byte-identical to its plan extracted alone."""
    model = load_model(tiny_edm / "net.safetensors", ModelOptions(), "cpu")
    data = load_data(tiny_edm / "imgs.npy", model)
    plans = [make_plan(model, data, Request(sigma=s, layers=(layer,), images=10, chunk_images=6, views=2,
                                            augment=aug))
             for aug in ("none", "crop") for s in (0.2, 1.0) for layer in LAYERS]
    run = RunOptions(batch_size=4)
    alone = []
    for i, p in enumerate(plans):
        ex.extract(p, tmp_path / f"alone{i}.h5", run)
        alone.append((tmp_path / f"alone{i}.h5").read_bytes())
    assert len(set(alone)) == len(plans)

    decoded = count_calls(data.images, "get_float")
    prepared = count_calls(ex, "prepare_rows")
    augmented = count_calls(compute, "clean_views")
    forwards = count_calls(compute.Taps, "run")
    outs = [tmp_path / f"one{i}.h5" for i in range(len(plans))]
    ex.extract_levels(plans, outs, run)
    chunks, batches, views = 2, 2 + 1, 2           # 10 images in chunks of 6: batches of 4, 2 and 4
    assert len(prepared) == len(decoded) == chunks   # one decode per chunk, not one per plan (8)
    assert len(augmented) == batches * 2            # per batch, once per augmentation (not per plan)
    assert len(forwards) == batches * 2 * 2 * views  # per (augmentation, sigma, view): the layers share it
    for i, out in enumerate(outs):
        assert out.read_bytes() == alone[i], i


@pytest.mark.slow
def test_a_toy_axis_gets_table_json_cache_and_plot(tiny_edm, tmp_path, capsys):
    """A seed axis: which extraction seed gives the lowest ICR. Its own kind and axis, and one compute function,
    are all it takes."""
    from icrcli.cli import scan_output
    from icrcli.features.options import RunOptions, ViewOptions
    from icrcli.progress import SILENT
    from icrcli.report.plot import plot_result
    from icrcli.report.summary import summary
    from icrcli.scans.engine import Axis, run_scan
    from icrcli.scans.result import ScanResult, register
    from icrcli.scans.sweep import extract_and_score
    from icrcli.stats.options import ScoreOptions

    @register
    class SeedScan(ScanResult):
        kind = "seed-scan"
        axis = Axis("seed", "extraction seed", series=("layer",))

    model = load_model(tiny_edm / "net.safetensors", ModelOptions(), "cpu")
    data = load_data(tiny_edm / "imgs.npy", model)
    vopts, computed = ViewOptions(images=12, run=RunOptions(device="cpu")), []

    def points(seeds):
        computed.extend(seeds)
        return {s: extract_and_score([make_plan(model, data, Request(sigma=0.5, images=12, seed=s))], vopts,
                                     ScoreOptions(), SILENT, None, {"seed": s}) for s in seeds}

    def scan():
        return run_scan("seed-scan", SeedScan.axis, [0, 1, 2], lambda s: {"data": data.sha256, "seed": s}, points)

    r = scan()
    assert isinstance(r, SeedScan) and computed == [0, 1, 2]
    assert [rec["seed"] for rec in r.records] == [0, 1, 2]
    icr = [rec["icr"] for rec in r.records]
    assert len(set(icr)) == 3                                  # the seeds really drew other views
    assert r.argmin["seed"] == int(np.argmin(icr)) and r.argmin["icr"] == min(icr)
    (ties,) = r["ties"]
    assert ties["argmin_seed"] == r.argmin["seed"] and r.argmin["seed"] in ties["tied_seeds"]

    # JSON: a plain object, read back into the same typed result
    text = json.dumps(r.to_dict())
    back = ScanResult.from_dict(json.loads(text))
    assert isinstance(back, SeedScan) and json.dumps(back.to_dict()) == text
    assert not r.cached and not any(rec.get("cached") for rec in r.records)

    # cache: the same scan again computes nothing, and says where each point came from
    again = scan()
    assert computed == [0, 1, 2] and again.cached
    assert [rec["icr"] for rec in again.records] == icr
    assert all(rec["cached"] and "seed-scan-points" in rec["cache_entry"] for rec in again.records)

    # table: one per series, keyed by the axis, the minimum marked
    from icrcli.cli import console
    console.set_quiet(False)            # an earlier command's -q in this process must not hide it
    capsys.readouterr()
    scan_output.tables(r)
    err = capsys.readouterr().err
    assert f"ICR by seed, layer {r.records[0]['layer']}" in err and "◀ min" in err
    assert f"min ICR {min(icr):.4f} at seed {r.argmin['seed']}" in err
    assert "| 0 |" in summary(r) and "**(min)**" in summary(r)

    pytest.importorskip("matplotlib")
    out = plot_result(json.loads(text), tmp_path / "seeds.png")
    assert out.read_bytes().startswith(b"\x89PNG")
    from icrcli.report.plot import scan_figure
    fig = scan_figure(r)
    (star,) = [a for a in fig.axes[0].get_children() if str(a.get_label()).startswith("lowest ICR")]
    assert star.get_xdata()[0] == r.argmin["seed"] and f"seed={r.argmin['seed']}" in star.get_label()
    assert fig.axes[0].get_xlabel() == "extraction seed"


@pytest.mark.slow
def test_a_sweep_grid_decodes_each_chunk_once_and_returns_its_typed_result(tiny_edm, count_calls):
    """Two augmentations x two sigmas: one pass over the data (before: one per augmentation), and run_sweep's
    typed result is the JSON the command prints."""
    from icrcli.features.options import RunOptions, ViewOptions
    from icrcli.scans.result import ScanResult, SweepResult
    from icrcli.scans.sweep import run_sweep
    prepared = count_calls(ex, "prepare_rows")
    vopts = ViewOptions(images=12, chunk_images=8, augment=["none", "crop"], run=RunOptions(device="cpu"))
    r = run_sweep(tiny_edm / "net.safetensors", tiny_edm / "imgs.npy", [0.2, 1.0], ModelOptions(), vopts)
    assert isinstance(r, SweepResult) and r.augments == ["none", "crop"] and len(r.levels) == 4
    assert len(prepared) == 2                          # 12 images in chunks of 8: two chunks, each decoded once
    assert [set(a[2]) for a in prepared] == [{"none", "crop"}] * 2
    assert [(lv["augment"], lv["sigma"]) for lv in r.levels] == [("none", 0.2), ("none", 1.0), ("crop", 0.2),
                                                                  ("crop", 1.0)]
    assert list(r.groups()) == [("none", r.layers[0]), ("crop", r.layers[0])]
    assert r["levels"] == r.levels and ScanResult.from_dict(r.to_dict()).to_dict() == r.to_dict()
    assert list(r.to_dict())[:8] == ["schema", "kind", "version", "checkpoint", "data", "sigmas", "layers",
                                     "augments"]


def test_typed_results_follow_their_kind_and_refuse_another():
    from icrcli.scans.result import ScanResult, SweepResult, TimelineResult
    tl = {"schema": 1, "kind": "timeline", "points": [{"step": 2, "sigma": 0.5, "icr": 0.4},
                                                      {"step": 1, "sigma": 0.5, "icr": 0.3}],
          "series": [{"sigma": 0.5, "trend": {"description": "d"}}], "gates": {"failed": []}}
    r = ScanResult.from_dict(tl)
    assert isinstance(r, TimelineResult) and r.axis.name == "step"
    assert [p["step"] for p in r.groups()[(0.5, None)]] == [1, 2] and r.lowest()["step"] == 1
    assert list(r.to_dict()) == list(tl) and r.to_dict() is not tl
    with pytest.raises(ValueError, match="not a sweep result"):
        SweepResult.from_dict(tl)
    with pytest.raises(ValueError, match="kind 'score'"):
        ScanResult.from_dict({"kind": "score"})
    with pytest.raises(TypeError):
        r["points"] = []                               # read-only: a result is what was computed

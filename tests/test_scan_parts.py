"""The pure parts of the scans: sigma grids, checkpoint step order, trends and CI gates, charts, CSV and plots."""

import csv
import io
import math

import numpy as np
import pytest

from icrcli.errors import UserError
from icrcli.report.chart import curve_chart
from icrcli.report.table import csv_text
from icrcli.scans.sigmas import edm_levels, parse_sigmas
from icrcli.scans.steps import find_checkpoints, step_of
from icrcli.scans.trend import gate, trend


# ------------------------------------------------------------------------------------------- sigma grids
def test_geometric_spec_includes_both_ends():
    assert parse_sigmas("0.1:10:5") == pytest.approx([0.1, 0.316228, 1, 3.16228, 10], rel=1e-6)


def test_linear_and_list_specs():
    assert parse_sigmas("lin:0:1:5") == [0, 0.25, 0.5, 0.75, 1]
    assert parse_sigmas("0,0.1,0.5,2") == [0, 0.1, 0.5, 2]
    assert parse_sigmas("2, 0.5,0,0.5") == [0, 0.5, 2]  # sorted, duplicates once


def test_edm_levels_match_karras_formula():
    lv = edm_levels(18)
    assert lv[0] == pytest.approx(80) and lv[-1] == pytest.approx(0.002)
    rho = 7
    i = 5
    expect = (80 ** (1 / rho) + i / 17 * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    assert lv[i] == pytest.approx(expect, rel=1e-12)
    assert np.all(np.diff(lv) < 0)


def test_edm_cut_and_default_grid():
    cut = parse_sigmas("edm18:..3.3")
    assert len(cut) == 10 and max(cut) == pytest.approx(3.25682, rel=1e-5) and min(cut) == 0.002
    assert parse_sigmas(None) == [0.0] + cut  # the paper's grid: 0 plus EDM-18 up to ~3.3
    assert parse_sigmas("edm18:0.1..1.2") == pytest.approx([0.139516, 0.296442, 0.585348, 1.08817], rel=1e-5)
    assert len(parse_sigmas("edm40")) == 40


def test_levels_round_trip_as_typed_numbers():
    # a level copied from a table (6 significant digits) is the level itself
    for s in parse_sigmas("0.1:10:7") + parse_sigmas("edm18"):
        assert float(f"{s:.6g}") == s


@pytest.mark.parametrize("spec, words", [
    ("0.1:10", "exactly start:stop:num"), ("0:10:5", "geometric spacing needs start > 0"),
    ("0.1:10:0", "whole number from 1"), ("0.1:10:2.5", "whole number"), ("a,b", "'a' is not a number"),
    ("-1,2", "finite number >= 0"), ("nan", "finite number"), ("inf:1:3", "finite number"),
    ("edm", "is not edmN"), ("edm1", "N >= 2"), ("edm18:5..1", "LO > HI"), ("edm18:81..90", "no EDM-18 level"),
    ("0,,1", "empty item"), ("1:2:3:4", "exactly start:stop:num"), ("0.1:10:100000", "from 1 to 1000"),
])
def test_bad_specs_say_what_is_wrong(spec, words):
    with pytest.raises(UserError) as e:
        parse_sigmas(spec)
    assert words in str(e.value) and "Expected" in str(e.value)


# ------------------------------------------------------------------------------------------- steps
@pytest.mark.parametrize("name, step", [
    ("ckpt-000100.pt", 100), ("network-snapshot-002000.pkl", 2000), ("step_1000.safetensors", 1000),
    ("epoch=3-step=900.ckpt", 900), ("model-40000.pth", 40000), ("ema_0.9999_050000.pt", 50000),
    ("global_step120.ckpt", 120), ("final.pt", None),
])
def test_step_from_name(name, step):
    assert step_of(name) == step


def test_checkpoints_ordered_numerically_and_nameless_reported(tmp_path):
    for n in ("ckpt-900.pt", "ckpt-1000.pt", "ckpt-50.pt", "final.pt", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "ckpt-1000.pt.icr.json").write_text("{}")
    found, notes = find_checkpoints(tmp_path)
    assert [f.step for f in found] == [50, 900, 1000]  # numbers, not strings ("1000" < "50" as text)
    assert len(notes) == 1 and "final.pt" in notes[0]
    found, _ = find_checkpoints(tmp_path, pattern="ckpt-9*")
    assert [f.path.name for f in found] == ["ckpt-900.pt"]


def test_tied_steps_are_an_error_naming_them(tmp_path):
    for n in ("ema-100.pt", "model-100.pt", "model-200.pt"):
        (tmp_path / n).write_bytes(b"x")
    with pytest.raises(UserError, match=r"step 100: ema-100.pt, model-100.pt.*--pattern"):
        find_checkpoints(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no checkpoint files"):
        find_checkpoints(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        find_checkpoints(tmp_path / "nope")


# ------------------------------------------------------------------------------------------- trend and gates
def test_trend_shapes():
    assert trend([1, 2, 3], [0.5, 0.4, 0.3]).shape == "falling"
    assert trend([1, 2, 3], [0.5, 0.2, 0.3]).shape == "rising after a minimum"
    assert trend([1, 2, 3], [0.5, 0.6, 0.3]).shape == "at its minimum"
    assert trend([7], [0.5]).shape == "single point"


def test_rise_and_gates():
    t = trend([100, 200, 300, 400], [0.5, 0.2, 0.25, 0.3])
    assert t.step_min == 200 and t.rise_pct == pytest.approx(50.0)
    assert gate(t, fail_on_rise=49, fail_above=None) and not gate(t, fail_on_rise=51, fail_above=None)
    assert gate(t, None, 0.29) and not gate(t, None, 0.31)
    assert "up 50.0%" in t.describe() and "step 200" in t.describe()


def test_rise_beyond_intervals():
    ci = [[0.4, 0.6], [0.18, 0.22], [0.28, 0.32]]
    assert trend([1, 2, 3], [0.5, 0.2, 0.3], ci).rise_beyond_ci is True
    ci[-1] = [0.21, 0.39]
    assert trend([1, 2, 3], [0.5, 0.2, 0.3], ci).rise_beyond_ci is False


# ------------------------------------------------------------------------------------------- chart, CSV, plots
def test_chart_marks_the_minimum():
    text = curve_chart([0, 0.1, 1, 10], [0.5, 0.3, 0.2, 0.6], log_x=True)
    lines = text.splitlines()
    assert sum(line.count("o") for line in lines[:8]) == 1
    assert "min ICR 0.2000 at sigma 1" in text
    assert lines[0].strip().startswith("0.6000") and lines[7].strip().startswith("0.2000")


def test_csv_has_one_row_per_record_and_splits_the_interval():
    recs = [{"sigma": 0.1, "icr": 0.5, "icr_ci": [0.4, 0.6]}, {"sigma": 1.0, "icr": 0.3}]
    rows = list(csv.DictReader(io.StringIO(csv_text(recs))))
    assert [float(r["sigma"]) for r in rows] == [0.1, 1.0]
    assert rows[0]["icr_low"] == "0.4" and rows[1]["icr_low"] == ""


def _sweep_result(layers=("a",)):
    levels = [{"layer": L, "sigma": s, "icr": 0.3 + (math.log10(s + 0.01) + 1) ** 2 / 10 + i * 0.01,
               "icr_ci": [0.2, 0.9], "trace_s": 1.0, "trace_xi": 2.0}
              for i, L in enumerate(layers) for s in (0, 0.01, 0.1, 1, 10)]
    return {"kind": "sweep", "checkpoint": "ck.pt", "levels": levels}


@pytest.mark.slow
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_plots_are_valid_files(tmp_path, suffix, magic):
    pytest.importorskip("matplotlib")
    from icrcli.report.plot import plot_result
    out = plot_result(_sweep_result(("a", "b")), tmp_path / f"s{suffix}")
    assert out.read_bytes().startswith(magic)
    tl = {"kind": "timeline", "folder": "runs", "points": [
        {"step": st, "sigma": 0.3, "icr": v, "trace_s": 1 + st, "trace_xi": 2.0, "memorization_ratio": st / 1000}
        for st, v in ((100, 0.5), (200, 0.3), (300, 0.35))]}
    out = plot_result(tl, tmp_path / f"t{suffix}")
    assert out.read_bytes().startswith(magic)
    if suffix == ".svg":
        import xml.etree.ElementTree as ET
        ET.parse(out)  # well-formed


def test_plot_refuses_other_results_and_formats(tmp_path):
    pytest.importorskip("matplotlib")
    from icrcli.report.plot import plot_result
    with pytest.raises(UserError, match="not a sweep or timeline"):
        plot_result({"icr": 0.5}, tmp_path / "x.png")
    with pytest.raises(UserError, match="must end in"):
        plot_result(_sweep_result(), tmp_path / "x.jpg")


def test_step_stored_in_the_checkpoint_orders_nameless_files(tmp_path):
    import torch
    from safetensors.torch import save_file
    w = {"w": torch.zeros(2)}
    torch.save({"model": w, "global_step": 700}, tmp_path / "last.pt")
    save_file(w, tmp_path / "best.safetensors", metadata={"step": "300"})
    torch.save({"model": w}, tmp_path / "final.pt")
    (tmp_path / "ckpt-500.pt").write_bytes(b"x")
    found, notes = find_checkpoints(tmp_path)
    assert [(f.path.name, f.step) for f in found] == [("best.safetensors", 300), ("ckpt-500.pt", 500),
                                                        ("last.pt", 700)]
    assert len(notes) == 1 and "final.pt" in notes[0]

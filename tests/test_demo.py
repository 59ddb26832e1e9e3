"""`icr demo`: the shipped models and images are complete and installed with the package, and `icr demo --quick`
runs both scans end to end into its folder."""

import ast
import fnmatch
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _step(path: Path) -> int:
    return int(path.stem.split("-")[-1])


def test_demo_files_are_package_data():
    """Every file under icrcli/demo_data matches a package-data pattern, so `pip install` ships it."""
    from icrcli.scans.demo import demo_data
    files = demo_data()
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    patterns = ast.literal_eval(re.search(r"^icrcli = (\[.*\])$", section, re.MULTILINE).group(1))   # no tomllib on 3.10
    shipped = [p for p in (ROOT / "icrcli" / "demo_data").rglob("*") if p.is_file()]
    rel = [p.relative_to(ROOT / "icrcli").as_posix() for p in shipped]
    assert [r for r in rel if not any(fnmatch.fnmatch(r, pat) for pat in patterns)] == []
    ckpts = sorted(files.limited_checkpoints.glob("*.safetensors"))
    assert 6 <= len(ckpts) <= 10
    assert sum(p.stat().st_size for p in shipped) < 10 * 2**20        # "a few MB"
    with np.load(files.limited_images) as z:
        assert z["images"].shape[1:] == (1, 28, 28) and len(z["images"]) <= 300 and z["images"].dtype == np.uint8
    with np.load(files.rich_images) as z:
        assert len(z["images"]) >= 1000 and len(z["labels"]) == len(z["images"])


def test_demo_refuses_a_foreign_file(icr, tmp_path):
    """A file in the folder that is not icr's own output is never written over; nothing runs."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text('{"mine": true}\n')
    r = icr("demo", "--quick", "-o", out)
    assert r.code == 2 and "sweep.json" in r.err
    assert (out / "sweep.json").read_text() == '{"mine": true}\n'
    assert not (out / "timeline.json").exists()


@pytest.mark.slow
def test_demo_quick_end_to_end(icr, tmp_path, monkeypatch):
    from icrcli.scans.demo import QUICK, demo_data
    out = tmp_path / "out"
    monkeypatch.setenv("ICR_PROGRESS_EVERY", "0")   # stderr is not a terminal here: plain progress lines
    r = icr("demo", "--quick", "-o", out)
    assert r.code == 0, r.err
    for step in ("extracting", "scoring and probing", "scoring", "sampling"):   # every long step shows progress
        assert any(line.startswith(f"{step}: ") and "/s" in line for line in r.err.splitlines()), step
    for name in ("sweep.png", "timeline.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["kind"] == "sweep" and sweep["sigmas"] == list(QUICK.sweep_sigmas)
    assert len(sweep["levels"]) == len(QUICK.sweep_sigmas)
    assert all(0 < lv["icr"] <= 1 and 0 <= lv["probe_test_accuracy"] <= 1 for lv in sweep["levels"])
    agree = sweep["probe"][0]  # one verdict per (augmentation, layer)
    assert agree["argmin_icr_sigma"] == sweep["argmin"]["sigma"]

    timeline = json.loads((out / "timeline.json").read_text())
    steps = sorted(_step(p) for p in demo_data().limited_checkpoints.glob("*.safetensors"))
    assert timeline["kind"] == "timeline" and [p["step"] for p in timeline["points"]] == steps
    assert all(0 <= p["memorization_ratio"] <= 1 and 0 < p["icr"] <= 1 for p in timeline["points"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "demo" and summary["settings"]["quick"] is True
    assert [m["step"] for m in summary["memorization"]] == steps
    assert summary["sweep_argmin"] == sweep["argmin"]
    assert "ICR by sigma" in r.err and "ICR by step" in r.err      # the tables went to stderr
    assert r.out == ""                                              # results only in the folder

    again = icr("demo", "--quick", "-o", out)                       # over its own outputs: allowed
    assert again.code == 0, again.err

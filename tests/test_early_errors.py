"""Early, cheap errors (icrcli.cli.inputs): the common slips on the command line are exit 2 before torch is imported,
and what is odd but allowed is said. Plus the small mends of --help, NO_COLOR, the docs and `icr score` on a
checkpoint."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icrcli.scans.sigmas import edge_warnings, parse_sigmas, spec_warnings

ROOT = Path(__file__).resolve().parents[1]

# Runs each command line in one process (cheaper than one each): exit status, whether torch got imported by then,
# and the last line of stderr.
_DRIVER = """
import contextlib, io, json, sys
from icrcli.cli.main import main
out = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["icr", *argv]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code
    out.append([code, "torch" in sys.modules, err.getvalue()])
print(json.dumps(out))
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ck.safetensors").write_bytes(b"not read: the checks come first")
    np.save(tmp_path / "imgs.npy", np.zeros((4, 8, 8, 3), np.uint8))
    (tmp_path / "run").mkdir()
    return tmp_path


def _run_all(cases: list[list[str]]) -> list:
    p = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(cases)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_slips_are_exit_2_before_torch_is_imported(files):
    ck, imgs, run = str(files / "ck.safetensors"), str(files / "imgs.npy"), str(files / "run")
    typo = str(files / "imgs.np")
    cases = {
        "data typo, extract": (["extract", ck, "--data", typo, "--sigma", "0.5"], f"did you mean {imgs}"),
        "data typo, sweep": (["sweep", ck, "--data", typo], "--data"),
        "data typo, timeline": (["timeline", run, "--data", typo, "--sigma", "0.5"], "no such file or folder"),
        "data typo, memorization": (["memorization", ck, "--data", typo], "no such file or folder"),
        "checkpoint typo": (["extract", ck + "x", "--data", imgs, "--sigma", "0.5"], "CHECKPOINT"),
        "features typo, probe": (["probe", str(files / "f.h5")], "FEATURES"),
        "negative sigma": (["extract", ck, "--data", imgs, "--sigma", "-1"], "--sigma -1"),
        "nan sigma": (["extract", ck, "--data", imgs, "--sigma", "nan"], "finite number >= 0"),
        "inf sigma": (["extract", ck, "--data", imgs, "--sigma", "inf"], "finite number >= 0"),
        "negative timeline sigma": (["timeline", run, "--data", imgs, "--sigma", "-0.5"], "finite number >= 0"),
        "augment typo, extract": (["extract", ck, "--data", imgs, "--sigma", "0.5", "--augment", "papr"],
                                  "did you mean paper"),
        "augment strength typo": (["extract", ck, "--data", imgs, "--sigma", "0.5", "--augment", "crop:pda=2"],
                                  "is not a strength of 'crop'"),
        "augment typo, sweep": (["sweep", ck, "--data", imgs, "--augment", "crp"], "unknown augmentation policy"),
        "bad --sigmas": (["sweep", ck, "--data", imgs, "--sigmas", "0:1:x"], "--sigmas"),
        "bad --sigmas edm": (["sweep", ck, "--data", imgs, "--sigmas", "edm1"], "edmN needs N >= 2"),
    }
    got = _run_all([argv for argv, _ in cases.values()])
    for (name, (argv, said)), (code, torch_loaded, err) in zip(cases.items(), got):
        assert code == 2, (name, code, err)
        assert not torch_loaded, f"{name}: torch was imported before the error"
        assert said in err and "Traceback" not in err, (name, err)


def test_edm81_is_said_before_the_work_starts(icr, files):
    ck, imgs = files / "ck.safetensors", files / "imgs.npy"
    # -o on the checkpoint stops the command right after the grid is said, before anything is loaded
    r = icr("sweep", ck, "--data", imgs, "--sigmas", "edm81", "-o", ck)
    assert r.code == 2 and "never writes over its inputs" in r.err
    assert "edm81: 81 levels" in r.err and "Did you mean edm18" in r.err
    assert spec_warnings("edm18", parse_sigmas("edm18")) == []
    assert spec_warnings(None, parse_sigmas(None)) == []                # the default grid
    many = spec_warnings("0.01:10:40", parse_sigmas("0.01:10:40"))
    assert len(many) == 1 and "40 levels" in many[0] and "edm18" not in many[0]


def _recs(icrs, sigmas=(0.0, 0.1, 0.5, 2.0), layer="a", augment=None):
    return [{"sigma": s, "icr": v, "layer": layer, **({"augment": augment} if augment else {})}
            for s, v in zip(sigmas, icrs)]


def test_a_minimum_at_either_edge_of_the_grid_is_said():
    assert edge_warnings(_recs([0.5, 0.3, 0.4, 0.6])) == []                     # inside the grid: nothing to say
    low = edge_warnings(_recs([0.5, 0.3, 0.4, 0.6], sigmas=(0.05, 0.1, 0.5, 2.0))[::-1] + _recs([0.2, 0.3, 0.4, 0.5],
                        sigmas=(0.05, 0.1, 0.5, 2.0), layer="b"))
    assert len(low) == 1 and "lowest at sigma 0.05, the lowest level" in low[0] and "layer b" in low[0]
    zero = edge_warnings(_recs([0.1, 0.3, 0.4, 0.6]))
    assert len(zero) == 1 and "sigma 0 (augmentation only)" in zero[0] and "between 0 and 0.1" in zero[0]
    high = edge_warnings(_recs([0.9, 0.8, 0.7, 0.6]))
    assert len(high) == 1 and "highest level" in high[0] and "above it" in high[0]
    assert edge_warnings(_recs([0.9, float("nan"), 0.7, 0.6])) == []         # no minimum to place
    assert edge_warnings(_recs([0.5], sigmas=(0.3,))) == []                  # one level has no edge
    grid = edge_warnings(_recs([0.1, 0.3], (0.1, 1.0), augment="crop") + _recs([0.3, 0.1], (0.1, 1.0), augment="paper"))
    assert len(grid) == 2 and "augment crop" in grid[0] and "augment paper" in grid[1]


@pytest.mark.slow
def test_a_sweep_says_an_edge_minimum_in_its_json_and_on_stderr(icr, tiny_edm, tmp_path):
    r = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigmas", "0.2,1",
            "--images", "16", "-o", tmp_path / "s.json")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "s.json").read_text())
    best = res["argmin"]["sigma"]
    assert best in (0.2, 1.0)                           # with two levels the minimum is always at an edge
    assert len(res["warnings"]) == 1 and f"lowest at sigma {best:g}" in res["warnings"][0]
    assert "warning: " + res["warnings"][0] in r.err


def test_score_on_a_checkpoint_says_to_extract_first(icr, files):
    r = icr("score", files / "ck.safetensors")
    assert r.code == 2 and "looks like a checkpoint" in r.err and "icr extract" in r.err
    model = files / "diffusers-unet"
    model.mkdir()
    (model / "config.json").write_text("{}")
    r = icr("score", model)
    assert r.code == 2 and "icr extract" in r.err


def test_help_shows_no_type_on_flags(icr):
    r = icr("sweep", "--help")
    assert r.code == 0
    assert "<bool>" not in r.out
    assert "--probe" in r.out and "--no-cache" in r.out
    assert re.search(r"--probe-split\s+<float range>", r.out)     # options that take a value still show it


def _styled(text: str) -> bool:
    return "\x1b[" in text


@pytest.mark.slow
def test_no_color_removes_bold_and_italics_too():
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update({"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "100"})
    code = "from icrcli.cli import console; console.Reporter().step('loading'); console.say('[bold]done[/bold]')"

    def run(cmd, extra):
        return subprocess.run(cmd, capture_output=True, text=True, env={**env, **extra}, timeout=120)

    styled = run([sys.executable, "-c", code], {})
    assert _styled(styled.stderr), "the test needs rich to style this output when forced"
    assert not _styled(run([sys.executable, "-c", code], {"NO_COLOR": "1"}).stderr)
    help_styled = run([sys.executable, "-m", "icrcli", "--help"], {})
    assert _styled(help_styled.stdout)
    plain = run([sys.executable, "-m", "icrcli", "--help"], {"NO_COLOR": "1"})
    assert plain.returncode == 0 and "Usage" in plain.stdout and not _styled(plain.stdout)


def test_man_page_and_readme_agree_with_the_code_on_the_archive_member_cap():
    from icrcli.data.images import MAX_MEMBER_BYTES, MEMBER_ENV
    cap = f"{MAX_MEMBER_BYTES >> 20} MiB"
    man = (ROOT / "man" / "icr.1").read_text()
    entry = man.split(f"\\fB{MEMBER_ENV}\\fR", 1)[1].split(".TP", 1)[0]
    assert f"default {cap}" in entry
    readme = (ROOT / "README.md").read_text()
    sentence = next(s for s in readme.split("\n- ") if MEMBER_ENV in s)
    assert f"past {cap}" in sentence


def test_readme_one_line_demo_is_the_quick_one():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    demo = [ln for ln in first_block.splitlines() if "icr demo" in ln]
    assert demo and all("--quick" in ln for ln in demo)


def test_an_output_that_is_a_device_or_pipe_is_refused_not_replaced(tmp_path):
    """-o /dev/null once replaced the device with a plain file (the result is written to a temp file and renamed);
    checked on a FIFO, which the test may make and the rename would replace the same way."""
    from icrcli.errors import UserError
    from icrcli.cli.outputs import check_output
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        check_output(fifo, "-o", [], "result")
    with pytest.raises(UserError, match="not a regular file"):
        check_output(os.devnull, "-o", [], "result")
    assert not fifo.is_file() and Path(os.devnull).is_char_device()

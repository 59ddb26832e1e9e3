"""What sweep and timeline say in a CI log and on a terminal: the gate's reason even with -q, plain progress
lines without a terminal, the JSON of what is done on Ctrl-C and SIGTERM (130, 143), the Markdown summary,
--fail-fast, and no screen of JSON on a terminal."""

import json

import pytest
from safetensors.torch import save_file

from conftest import answer, tiny_songunet
from icrcli.errors import Terminated


def _save(path, seed):
    save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()}, path)


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        _save(d / f"ckpt-{step}.safetensors", seed)
    return d


def _tl(run, data, *extra):
    return ["timeline", run, "--data", data / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma", "0.5",
            *extra]


class Spy:
    """Counts the checkpoints loaded (computed, not answered from the cache); raises `interrupt` at the n-th."""
    def __init__(self, monkeypatch, interrupt=None, at=None):
        import icrcli.features.plan as plan
        self.loaded = []
        real = plan.load_model

        def load(path, *a, **k):
            self.loaded.append(path.name)
            if interrupt is not None and len(self.loaded) == at:
                raise interrupt
            return real(path, *a, **k)
        monkeypatch.setattr(plan, "load_model", load)


@pytest.mark.slow
def test_gate_reason_with_quiet_summary_and_fail_fast(run, tiny_edm, tmp_path, icr):
    r = icr(*_tl(run, tiny_edm, "-q", "--fail-above", "0", "--summary", tmp_path / "s.md"))
    assert r.code == 3
    assert "gate failed" in r.err and "--fail-above 0" in r.err        # said even with -q
    assert r.json["gates"]["failed"] and r.json["stopped"] is None
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("<!-- icr summary: timeline")
    for p in r.json["points"]:
        assert f"| {p['step']} | {p['icr']:.4f}" in md
    assert "**FAILED**" in md and r.json["series"][0]["trend"]["description"] in md
    # --fail-fast: the first point fails --fail-above 0, so no other checkpoint is read
    ff = icr(*_tl(run, tiny_edm, "-q", "--fail-above", "0", "--fail-fast", "--no-cache"))
    assert ff.code == 3 and ff.json["stopped"] == "fail-fast" and [p["step"] for p in ff.json["points"]] == [100]
    # a summary is replaced only when it is icr's own
    (tmp_path / "notes.md").write_text("# my notes\n")
    refused = icr(*_tl(run, tiny_edm, "-q", "--summary", tmp_path / "notes.md"))
    assert refused.code == 2 and (tmp_path / "notes.md").read_text() == "# my notes\n"


@pytest.mark.slow
@pytest.mark.parametrize("signal, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_timeline_interrupted_writes_what_is_done_and_resumes(run, tiny_edm, icr, monkeypatch, signal, code):
    Spy(monkeypatch, signal(), at=2)        # lands while the second checkpoint is being loaded
    r = icr(*_tl(run, tiny_edm, "-q"))
    assert r.code == code, r.err
    assert r.json["stopped"] == ("terminated" if code == 143 else "interrupted")
    assert [p["step"] for p in r.json["points"]] == [100]
    assert "points done" in r.err                                       # said even with -q
    spy = Spy(monkeypatch)
    again = icr(*_tl(run, tiny_edm, "-q"))
    assert again.code == 0 and spy.loaded == ["ckpt-200.safetensors", "ckpt-300.safetensors"]
    assert answer(again.json["points"][0]) == answer(r.json["points"][0])
    assert again.json["points"][0]["cached"] and "timeline-points" in again.json["points"][0]["cache_entry"]


@pytest.mark.slow
def test_sweep_terminated_writes_the_levels_scored(tiny_edm, icr, monkeypatch):
    import icrcli.stats.score as score
    real, calls = score.score_file, []

    def scored(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise Terminated()
        return real(*a, **k)
    monkeypatch.setattr(score, "score_file", scored)
    r = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
            "--sigmas", "0.1,0.5,2", "-q")
    assert r.code == 143, r.err
    assert r.json["stopped"] == "terminated" and [lv["sigma"] for lv in r.json["levels"]] == [0.1]
    assert r.json["argmin"]["sigma"] == 0.1
    monkeypatch.setattr(score, "score_file", real)
    again = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
                "--sigmas", "0.1,0.5,2", "-q")
    assert again.code == 0 and again.json["stopped"] is None and len(again.json["levels"]) == 3
    assert again.json["levels"][0]["icr"] == r.json["levels"][0]["icr"]


@pytest.mark.slow
def test_plain_progress_lines_and_one_line_per_point(run, tiny_edm, icr, monkeypatch):
    monkeypatch.setenv("ICR_PROGRESS_EVERY", "0")       # stderr is not a terminal here: a line at every advance
    r = icr(*_tl(run, tiny_edm))
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert any(x.startswith("extracting: 8/16 images (50%)") and "images/s" in x and "eta " in x for x in lines)
    assert any(x.startswith("scoring: 1/1 levels (100%)") for x in lines)
    for p in r.json["points"]:
        assert any(x.startswith(f"step {p['step']} (ckpt-{p['step']}.safetensors), sigma 0.5: ICR {p['icr']:.4f}")
                   for x in lines)
    monkeypatch.setenv("ICR_PROGRESS_EVERY", "3600")    # at most one an hour: none in a short run
    quiet = icr(*_tl(run, tiny_edm, "--no-cache"))
    assert not any(x.startswith("extracting: ") for x in quiet.err.splitlines())


@pytest.mark.slow
def test_a_terminal_gets_table_and_summary_not_json(run, tiny_edm, icr, monkeypatch):
    from icrcli.cli import scan_output
    monkeypatch.setattr(scan_output, "stdout_is_terminal", lambda: True)
    r = icr(*_tl(run, tiny_edm))
    assert r.code == 0 and r.out == "" and "ICR by step" in r.err and "goes to a pipe or to -o" in r.err
    s = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16", "--sigmas",
            "0.1,1")
    assert s.code == 0 and s.out == "" and "lowest ICR" in s.err
    lines = icr(*_tl(run, tiny_edm, "--json-lines"))    # asked for explicitly: streamed even on a terminal
    assert json.loads(lines.out.splitlines()[-1])["kind"] == "timeline"


@pytest.mark.slow
def test_idle_ends_the_watch_with_its_own_status(run, tiny_edm, icr):
    r = icr(*_tl(run, tiny_edm, "-q", "--watch", "--poll", "0.2", "--idle", "1s"))
    assert r.code == 4, r.err
    assert r.json["stopped"] == "idle" and [p["step"] for p in r.json["points"]] == [100, 200, 300]
    assert "--idle" in r.err                                            # said even with -q
    gated = icr(*_tl(run, tiny_edm, "-q", "--watch", "--poll", "0.2", "--idle", "1", "--fail-above", "0"))
    assert gated.code == 3                                              # a failed gate says more than idleness
    bad = icr(*_tl(run, tiny_edm, "--idle", "10m"))
    assert bad.code == 2 and "--watch" in bad.err

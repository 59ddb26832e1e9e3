"""`--options FILE` (issue 17 point 4): a saved result's "options" block re-runs the same request, and the flags
given on the command line override it; a bad file is exit 2 with a sentence, and nothing in it is ever run."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import answer, tiny_songunet


def _levels(result):
    return [(lv["sigma"], lv["layer"], lv["icr"]) for lv in result["levels"]]


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """Point the cache somewhere new: what follows is computed, not answered from an entry of the first run."""
    n = [0]

    def move():
        n[0] += 1
        monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / f"cache-{n[0]}"))
    move()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield move
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_sweep_reruns_from_its_result_and_a_flag_overrides(tiny_edm, tmp_path, icr, fresh_cache):
    first = tmp_path / "first.json"
    r = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigmas", "0.3,1.5",
            "--images", "16", "--views", "3", "--chunk-images", "8", "--batch-size", "8", "--augment", "crop",
            "--ci", "--ci-groups", "4", "--estimator", "plugin", "-q", "-o", first)
    assert r.code == 0, r.err
    saved = json.loads(first.read_text())

    fresh_cache()   # the same request again, from the file alone (no --data, no --sigmas): computed afresh
    again = icr("sweep", tiny_edm / "net.safetensors", "--options", first, "-q")
    assert again.code == 0, again.err
    assert again.json["cached"] is False
    assert again.json["options"] == saved["options"] and again.json["data"] == saved["data"]
    assert _levels(again.json) == _levels(saved)
    assert answer(again.json["levels"])[0]["icr_ci"] == answer(saved["levels"])[0]["icr_ci"]

    other = icr("sweep", tiny_edm / "net.safetensors", "--options", first, "--seed", "1", "--batch-size", "4",
                "-q")
    assert other.code == 0, other.err
    views = other.json["options"]["views"]
    assert views == {**saved["options"]["views"], "seed": 1}      # the flag wins; the rest is the saved request
    assert other.json["options"]["score"] == saved["options"]["score"]
    assert [lv["sigma"] for lv in other.json["levels"]] == [0.3, 1.5]
    assert [x[2] for x in _levels(other.json)] != [x[2] for x in _levels(saved)]   # another seed: other views


@pytest.mark.slow
def test_sweep_options_keep_the_probe(tiny_edm, tmp_path, icr, fresh_cache):
    d = tmp_path / "labelled"
    d.mkdir()
    rng = np.random.default_rng(1)
    np.savez(d / "imgs.npz", images=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(16) % 2)
    first = tmp_path / "first.json"
    r = icr("sweep", tiny_edm / "net.safetensors", "--data", d / "imgs.npz", "--sigmas", "0.5", "--images", "16",
            "--chunk-images", "8", "--probe", "--probe-folds", "2", "-q", "-o", first)
    assert r.code == 0, r.err
    saved = json.loads(first.read_text())
    fresh_cache()
    again = icr("sweep", tiny_edm / "net.safetensors", "--options", first, "-q")
    assert again.code == 0, again.err
    assert again.json["options"]["probe"] == saved["options"]["probe"]
    assert again.json["levels"][0]["probe_test_accuracy"] == saved["levels"][0]["probe_test_accuracy"]


def _features(tmp_path):
    f = tmp_path / "f.npy"
    np.save(f, np.random.default_rng(0).standard_normal((40, 3, 6)))
    return f


def test_score_reruns_from_its_result_and_a_flag_overrides(tmp_path, icr, fresh_cache):
    f = _features(tmp_path)
    first = tmp_path / "first.json"
    r = icr("score", f, "--estimator", "plugin", "--tau", "0.5", "--ci", "--ci-groups", "5", "-q", "-o", first)
    assert r.code == 0, r.err
    saved = json.loads(first.read_text())
    fresh_cache()
    again = icr("score", f, "--options", first, "-q", "-o", "-")
    assert again.code == 0, again.err
    assert again.json["cached"] is False
    assert answer(again.json) == answer(saved)
    ridge = icr("score", f, "--options", first, "--tau-rel", "0.01", "-q", "-o", "-")
    assert ridge.code == 0, ridge.err
    opts = ridge.json["options"]
    # --tau-rel given replaces the saved absolute ridge; everything else is as saved
    assert opts["tau_rel"] == 0.01 and opts["tau"] is None
    assert opts["estimator"] == "plugin" and opts["ci"] is True and opts["ci_groups"] == 5
    assert ridge.json["icr"] != saved["icr"]


@pytest.mark.parametrize("content, words", [
    ("not json {", "not JSON"),
    ('{"icr": 0.3}', 'no "options" block'),
    ('[1, 2]', 'no "options" block'),
    ('{"options": {"views": {"views": 1}, "score": {}, "model": {}, "probe": null}}', "views = 1"),
    ('{"options": {"views": {"veiws": 3}, "score": {}, "model": {}, "probe": null}}', "unknown option 'veiws'"),
    ('{"options": {"views": {}, "score": {"confidence": 2}, "model": {}, "probe": null}}', "confidence = 2"),
    ('{"options": {"score": {}}}', 'no "model" options'),
    ('__import__("os").system("touch PWNED")', "not JSON"),
    # a saved result may not make icr run code: your own architecture and --trust-pickle are given again
    ('{"options": {"views": {}, "score": {}, "model": {"arch": "evil.py:Net"}, "probe": null}}',
     "Pass --arch evil.py:Net again"),
    ('{"options": {"views": {}, "score": {}, "model": {"arch": "evil:build"}, "probe": null}}', "code to import"),
    ('{"options": {"views": {}, "score": {}, "model": {"trust_pickle": true}, "probe": null}}',
     "pass --trust-pickle again"),
])
def test_bad_options_files_are_exit_2(tmp_path, icr, content, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_songunet(0).state_dict().items()}, ck)
    bad = tmp_path / "old.json"
    bad.write_text(content)
    (tmp_path / "evil.py").write_text("open('PWNED', 'w').close()\nNet = None\n")
    r = icr("sweep", ck, "--data", ck, "--options", bad, "-q")
    assert r.code == 2, r.err
    assert words in " ".join(r.err.split()) and "--options" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "PWNED").exists()


def test_missing_options_file_and_missing_data(tmp_path, icr):
    f = _features(tmp_path)
    r = icr("score", f, "--options", tmp_path / "none.json", "-q")
    assert r.code == 2 and "no such file" in r.err
    r = icr("sweep", f)                    # neither --data nor --options FILE
    assert r.code == 2 and "--data" in r.err


@pytest.mark.slow
def test_timeline_reruns_from_its_result(tiny_edm, tmp_path, icr, fresh_cache):
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((100, 1), (200, 2)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  run / f"ckpt-{step}.safetensors")
    first = tmp_path / "first.json"
    r = icr("timeline", run, "--data", tiny_edm / "imgs.npy", "--sigma", "0.4", "--images", "16",
            "--chunk-images", "8", "--views", "3", "-q", "-o", first)
    assert r.code == 0, r.err
    saved = json.loads(first.read_text())
    fresh_cache()
    again = icr("timeline", run, "--options", first, "-q", "-o", "-")
    assert again.code == 0, again.err
    assert again.json["options"] == saved["options"] and again.json["sigmas"] == [0.4]
    assert [(p["step"], p["icr"]) for p in again.json["points"]] == [(p["step"], p["icr"]) for p in saved["points"]]
    other = icr("timeline", run, "--options", first, "--seed", "1", "-q", "-o", "-")
    assert other.code == 0, other.err
    assert other.json["options"]["views"] == {**saved["options"]["views"], "seed": 1}


def test_own_architecture_and_reference_split_rerun(icr, tmp_path, fresh_cache):
    """A sweep of your own architecture, probed on a reference split: --options FILE repeats it once --arch is
    given again (the file alone may not import code), with the same split and the same numbers."""
    from pathlib import Path

    import own_nets
    nets = str(Path(own_nets.__file__).resolve())
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "digits.npz", images=rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8),
             labels=np.arange(20) % 2)
    torch.save(own_nets.LayerNormNet().state_dict(), tmp_path / "ln.pt")
    (tmp_path / "ref.txt").write_text("\n".join(map(str, rng.permutation(20)[:12])))
    arch = f"{nets}:LayerNormNet"
    first = tmp_path / "first.json"
    r = icr("sweep", tmp_path / "ln.pt", "--data", tmp_path / "digits.npz", "--sigmas", "0.2,0.5", "--arch", arch,
            "--param", "edm", "--layer", "norm", "--augment", "none", "--indices", tmp_path / "ref.txt",
            "--probe-first", "6", "-q", "-o", first)
    assert r.code == 0, r.err
    saved = json.loads(first.read_text())
    fresh_cache()
    refused = icr("sweep", tmp_path / "ln.pt", "--options", first, "-q")
    assert refused.code == 2 and f"Pass --arch {arch} again" in " ".join(refused.err.split())
    again = icr("sweep", tmp_path / "ln.pt", "--options", first, "--arch", arch, "-q", "-o", "-")
    assert again.code == 0, again.err
    assert again.json["options"] == saved["options"] and again.json["cached"] is False
    assert [(lv["icr"], lv["probe_test_accuracy"]) for lv in again.json["levels"]] == \
        [(lv["icr"], lv["probe_test_accuracy"]) for lv in saved["levels"]]

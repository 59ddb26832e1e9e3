"""docs/JSON.md against the real thing: every command run on tiny inputs, its top-level keys equal to the
documented ones (optional keys may be absent), and "schema": 1 in every object. Its `icr score` and `icr merge`
tables are generated from the statistics' declarations by dev/docgen.py (tests/test_completions.py checks that
they are current); here, that the generation keeps the hand-written rest and puts back a table edited by hand."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "JSON.md"


def documented() -> dict[str, tuple[list[str], set[str]]]:
    """{"score": (keys in order, optional keys)} from the tables of docs/JSON.md."""
    out, section = {}, None
    for line in DOC.read_text().splitlines():
        m = re.match(r"## `icr ([a-z -]+?)(?: --json)?`", line)
        if m:
            section = m.group(1)
            out[section] = ([], set())
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if section and len(cells) == 3 and re.fullmatch(r"`[\w-]+`", cells[0]):
            key = cells[0].strip("`")
            out[section][0].append(key)
            if "*(optional" in cells[2]:
                out[section][1].add(key)
    return out


def _check(doc, name: str, obj: dict | list, given: set[str] = frozenset()) -> None:
    keys, optional = doc[name]
    row = obj[0] if isinstance(obj, list) else obj
    if not isinstance(obj, list):
        assert obj["schema"] == 1, name
    real = list(row)
    assert set(real) <= set(keys), (name, "undocumented", set(real) - set(keys))
    missing = set(keys) - set(real) - optional
    assert not missing, (name, "documented but absent", missing)
    assert given <= set(real), (name, "optional keys expected with their option", given - set(real))
    # Required keys in the documented order.
    assert [k for k in real if k not in optional] == [k for k in keys if k in real and k not in optional], name


def test_every_command_has_a_section():
    assert set(documented()) == {"extract", "score", "info", "layers", "sweep", "timeline", "probe",
                                 "memorization", "cache info", "cache clear", "merge", "score --stats-out",
                                 "sweep --shard", "timeline --shard"}


@pytest.mark.slow
def test_documented_keys_match_real_output(icr, tiny_edm, tmp_path):
    from safetensors.torch import save_file

    from conftest import tiny_songunet
    from icrcli.features.featurefile import write_feature_file
    doc = documented()

    def ok(*args):
        r = icr(*args)
        assert r.code == 0, (args, r.err)
        return r.json

    net, imgs = tiny_edm / "net.safetensors", tiny_edm / "imgs.npy"
    small = ("--images", "8", "--chunk-images", "4", "--device", "cpu")
    ex = ok("extract", net, "--data", imgs, "--sigma", "0.5", *small, "-o", tmp_path / "f.h5", "-q")
    _check(doc, "extract", ex)
    sc = ok("score", tmp_path / "f.h5", "-q")
    _check(doc, "score", sc)
    sc_ci = ok("score", tmp_path / "f.h5", "-q", "--ci", "--ci-groups", "2", "--directions", tmp_path / "d.npy")
    _check(doc, "score", sc_ci, {"icr_ci", "icr_se", "ci_groups", "ci_confidence", "directions", "trace_s_ci",
                                 "trace_s_se", "trace_xi_ci", "trace_xi_se", "effective_rank_ci", "effective_rank_se"})
    _check(doc, "info", ok("info", tmp_path / "f.h5", "--json"), {"layers", "rows_done"})
    _check(doc, "layers", ok("layers", net, "--json"))
    sw = ok("sweep", net, "--data", imgs, "--sigmas", "0.2,1", *small, "-q")
    _check(doc, "sweep", sw)
    assert {"sigma", "layer", "features", *sc} <= set(sw["levels"][0])
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(net, run / "ckpt-000100.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_songunet(1).state_dict().items()}, run / "ckpt-000200.safetensors")
    tl = ok("timeline", run, "--data", imgs, "--sigma", "0.5", *small, "-q")
    _check(doc, "timeline", tl)
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    h = (rng.normal(size=(60, 1, 5)) + y[:, None, None] + 0.1 * rng.normal(size=(60, 2, 5))).astype(np.float32)
    write_feature_file(tmp_path / "lab.h5", {"blk": 5}, 60, 2, "float32", {"sigma": 0.5},
                       iter([{"start": 0, "features": {"blk": h}, "index": np.arange(60), "labels": y}]))
    _check(doc, "probe", ok("probe", tmp_path / "lab.h5", "-q"))
    _check(doc, "probe", ok("probe", tmp_path / "lab.h5", "-q", "--knn", "3"), {"knn"})
    mem = ("memorization", net, "--data", imgs, "--samples", "2", "--steps", "2", "--device", "cpu", "-q")
    _check(doc, "memorization", ok(*mem), {"nearest_distance", "distance_ratio", "second_distance"})
    _check(doc, "memorization", ok(*mem, "--criterion", "cosine", "--grid", tmp_path / "g.png"),
           {"nearest_cosine", "grid"})
    for i in range(2):
        _check(doc, "extract", ok("extract", net, "--data", imgs, "--sigma", "0.5", *small, "--shard", f"{i}/2",
                                  "-o", tmp_path / f"s{i}.h5", "-q"), {"shard"})
    _check(doc, "score --stats-out", ok("score", tmp_path / "s0.h5", "--stats-out", tmp_path / "s0.npz", "-q"))
    _check(doc, "score", ok("score", tmp_path / "s1.h5", tmp_path / "s0.h5", "--stats-out", tmp_path / "all.npz",
                            "-q"), {"stats"})
    ok("score", tmp_path / "s1.h5", "--stats-out", tmp_path / "s1.npz", "-q")
    _check(doc, "score", ok("score", tmp_path / "s0.h5", tmp_path / "s1.h5", "-q"))
    _check(doc, "merge", ok("merge", tmp_path / "s0.npz", tmp_path / "s1.npz", "-q"))
    _check(doc, "sweep --shard", ok("sweep", net, "--data", imgs, "--sigmas", "0.2,1", *small, "--shard", "0/2", "-q"))
    _check(doc, "sweep", ok("sweep", net, "--data", imgs, "--sigmas", "0.2,1", *small, "--shards", "2", "-q"),
           {"shards"})
    _check(doc, "timeline --shard", ok("timeline", run, "--data", imgs, "--sigma", "0.5", *small, "--shard", "1/2",
                                       "-q"))
    _check(doc, "cache info", ok("cache", "info", "--json"))
    _check(doc, "cache clear", ok("cache", "clear", "--json", "-q"))


@pytest.mark.parametrize("name", ["score", "sweep", "cache info"])
def test_doc_tables_parse(name):
    keys, _ = documented()[name]
    assert keys[0] == "schema" and len(keys) == len(set(keys))


def test_generated_tables_are_made_anew_and_the_rest_is_kept():
    from test_completions import docgen
    text = DOC.read_text()
    assert docgen.json_doc(text) == text                          # current (as the staleness test also says)
    edited = text.replace("| `trace_s` | float | trace of Sigma_s |", "| `trace_s` | float | hand-edited |", 1)
    edited = edited.replace("## `icr info --json`", "## `icr info --json`\n\nA hand-written note.", 1)
    assert edited.count("hand-edited") == 1
    again = docgen.json_doc(edited)
    assert "hand-edited" not in again and "A hand-written note." in again
    assert again.count("| `trace_s` | float | trace of Sigma_s |") == 2           # the score and merge tables
    with pytest.raises(ValueError, match="no generated table marks"):
        docgen.json_doc("# JSON\n\n| key | type | meaning |\n")


def test_generated_score_table_lists_each_statistic_and_its_interval():
    from icrcli.stats.statistics import TABLE
    keys, optional = documented()["score"]
    names = [s.name for s in TABLE]
    assert [k for k in keys if k in names] == names
    for s in TABLE:
        if s.jackknife:
            i = keys.index(s.name)
            assert keys[i + 1:i + 3] == [f"{s.name}_ci", f"{s.name}_se"] and {f"{s.name}_ci", f"{s.name}_se"} <= optional
    assert documented()["merge"][0] == [k for k in keys if k not in ("directions", "stats")]

"""The statistics' one declaration (stats/statistics.py, issue 17 point 3): the jackknife intervals of the
companion statistics against a dense float64 leave-one-group-out recomputation, a closed form and invariances;
the result, ScoreResult, the CSV and the table all following the declarations; and results saved before the
companions had intervals still read, but never answered from the cache."""

import csv
import io

import numpy as np
import pytest
import scipy.stats

import icrcli
import reference as ref
from icrcli.stats.statistics import JACKKNIFED, TABLE

COMPANIONS = ("trace_s", "trace_xi", "effective_rank")


def _views(rng, n=120, k=3, d=6):
    """Views whose feature variances differ over two decades, so the effective rank is well away from D."""
    return ref.views(rng, n=n, k=k, d=d) * np.logspace(0, 1, d)


def _dense(h, estimator="paper"):
    """trace_s, trace_xi and RankMe of views h (n, k, d), from the reference's own covariances."""
    ss, sx = ref.covs(h, estimator)
    return {"trace_s": np.trace(ss), "trace_xi": np.trace(sx), "effective_rank": ref.rankme(h)}


def _jackknife(estimate, reps, confidence):
    g = len(reps)
    se = np.sqrt((g - 1) / g * np.sum((reps - reps.mean()) ** 2))
    half = scipy.stats.t.ppf(0.5 + confidence / 2, g - 1) * se
    return se, [estimate - half, estimate + half]


def test_jackknifed_statistics_are_the_ones_asked_for():
    assert [s.name for s in JACKKNIFED] == ["icr", *COMPANIONS]


@pytest.mark.parametrize("estimator", ["paper", "plugin"])
def test_companion_intervals_against_dense_leave_one_group_out(estimator):
    rng = np.random.default_rng(21)
    h = _views(rng, n=125, k=3).astype(np.float32)      # 125 images in 6 groups: unequal groups
    g = 6
    r = icrcli.score(h, ci=True, ci_groups=g, confidence=0.9, estimator=estimator, block_images=17)
    h64 = h.astype(np.float64)
    whole = _dense(h64, estimator)
    groups = np.arange(len(h)) % g
    reps = [_dense(h64[groups != j], estimator) for j in range(g)]
    for name in COMPANIONS:
        rel = 1e-6 if name == "effective_rank" else 1e-9    # RankMe's eigensolve against an SVD
        assert r[name] == pytest.approx(whole[name], rel=rel), name
        se, ci = _jackknife(whole[name], np.array([x[name] for x in reps]), 0.9)
        assert r[f"{name}_se"] == pytest.approx(se, rel=1e-6), name
        np.testing.assert_allclose(r[f"{name}_ci"], ci, rtol=1e-6, err_msg=name)
        assert r[f"{name}_ci"][0] < r[name] < r[f"{name}_ci"][1]
    assert r.ci_groups == g and r.ci_confidence == 0.9


def test_trace_xi_interval_closed_form():
    """trace(Sigma_xi) is a mean over images of q_i = sum_k ||h_ik - s_i||^2 / (K-1), and the delete-a-group
    jackknife of a mean over equal groups is exactly the standard error of the G group means:
    se^2 = var(group means, ddof=1) / G."""
    rng = np.random.default_rng(22)
    n, k, g = 160, 4, 8
    h = _views(rng, n=n, k=k)
    q = np.sum((h - h.mean(axis=1, keepdims=True)) ** 2, axis=(1, 2)) / (k - 1)
    means = np.array([q[np.arange(n) % g == j].mean() for j in range(g)])
    r = icrcli.score(h, ci=True, ci_groups=g)
    assert r.trace_xi == pytest.approx(q.mean(), rel=1e-12)
    assert r.trace_xi_se == pytest.approx(np.std(means, ddof=1) / np.sqrt(g), rel=1e-9)


def test_companion_intervals_invariances():
    """Rotating the features or shifting them changes no interval; scaling them by c scales the traces' by c^2
    and leaves the effective rank's; permuting the views of each image changes nothing."""
    rng = np.random.default_rng(23)
    h = _views(rng, n=100, k=3)
    base = icrcli.score(h, ci=True, ci_groups=5)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    c = 7.0
    cases = {"rotate": (h @ q, 1.0), "shift": (h + 300.0, 1.0), "scale": (h * c, c * c),
             "permute views": (np.stack([x[rng.permutation(3)] for x in h]), 1.0)}
    for what, (v, factor) in cases.items():
        r = icrcli.score(v, ci=True, ci_groups=5)
        for name in COMPANIONS:
            f = 1.0 if name == "effective_rank" else factor
            assert r[f"{name}_se"] == pytest.approx(f * base[f"{name}_se"], rel=1e-6), (what, name)
            np.testing.assert_allclose(r[f"{name}_ci"], np.multiply(f, base[f"{name}_ci"]), rtol=1e-6,
                                       err_msg=f"{what} {name}")
        assert r.icr_se == pytest.approx(base.icr_se, rel=1e-6), what


def test_accumulator_gives_the_same_intervals():
    h = _views(np.random.default_rng(24), n=90)
    acc = icrcli.Accumulator(6, ci=True, ci_groups=4)
    for a in range(0, len(h), 13):
        acc.update(h[a:a + 13])
    got, want = acc.result(), icrcli.score(h, ci=True, ci_groups=4)
    for name in COMPANIONS:
        np.testing.assert_allclose(got[f"{name}_ci"], want[f"{name}_ci"], rtol=1e-9, err_msg=name)


def test_result_and_score_result_follow_the_table():
    h = _views(np.random.default_rng(25), n=60)
    plain, ci = icrcli.score(h), icrcli.score(h, ci=True, ci_groups=3)
    for s in TABLE:
        assert s.name in plain.to_dict() and s.doc
        value = getattr(ci, s.name)
        assert (np.asarray(value) == np.asarray(ci[s.name])).all() if s.name == "eigenvalues" else value == ci[s.name]
        if s.jackknife:
            assert getattr(plain, f"{s.name}_ci") is None and f"{s.name}_ci" not in plain.to_dict()
            assert getattr(ci, f"{s.name}_ci") == ci[f"{s.name}_ci"] and getattr(ci, f"{s.name}_se") > 0
    assert len(ci.icr_replicates) == 3 and not hasattr(ci, "trace_s_replicates")
    # the condition block's keys, as its doc line (and so docs/JSON.md) lists them
    from icrcli.stats.statistics import CONDITION_KEYS
    assert tuple(ci.condition) == CONDITION_KEYS


def _record(**extra):
    """A scan record as saved before the companions had intervals: icr's interval only."""
    return {"layer": "L", "sigma": 0.5, "icr": 0.3, "icr_ci": [0.25, 0.35], "icr_se": 0.02, "trace_s": 2.0,
            "trace_xi": 3.0, "mean_lambda": 1.5, "effective_rank": 4.0, "eigenvalues": [2.0, 1.0], **extra}


def test_a_result_saved_before_the_companion_intervals_still_reads():
    old = icrcli.ScoreResult.from_dict(_record())
    assert old.trace_s == 2.0 and old.trace_s_ci is None and old.effective_rank_se is None
    assert old.icr_ci == [0.25, 0.35]
    from icrcli.report.table import CSV_COLUMNS, csv_text, records_table
    new = _record(sigma=1.0, trace_s_ci=[1.5, 2.5], trace_s_se=0.2)
    rows = list(csv.DictReader(io.StringIO(csv_text([_record(), new]))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["trace_s_low"] == rows[0]["trace_s_se"] == "" and rows[0]["icr_low"] == "0.25"
    assert rows[1]["trace_s_low"] == "1.5" and rows[1]["trace_s_high"] == "2.5" and rows[1]["trace_s_se"] == "0.2"
    t = records_table([_record(), new], "sigma", "t")
    assert [c.header for c in t.columns[:3]] == ["sigma", "ICR", "interval"]


def test_csv_and_table_columns_come_from_the_table():
    from icrcli.report.table import COLUMNS, CSV_COLUMNS
    assert CSV_COLUMNS[:8] == ("layer", "sigma", "step", "checkpoint", "icr", "icr_low", "icr_high", "icr_se")
    assert [c for c in CSV_COLUMNS if c in {s.name for s in TABLE}] == [s.name for s in TABLE if s.csv]
    for name in COMPANIONS:
        i = CSV_COLUMNS.index(name)
        assert CSV_COLUMNS[i + 1:i + 4] == (f"{name}_low", f"{name}_high", f"{name}_se")
    assert COLUMNS == tuple(s.name for s in TABLE if s.table)


def test_a_cached_result_without_the_intervals_is_not_answered(tmp_path, monkeypatch):
    """Why the score cache's key changed (result.CONTENTS 2): an entry stored before the companions had intervals
    would answer a --ci request without them, which a fresh run does not. Stored under the current key, such an
    entry would be served as it is; under the key of the contents it was made with, it is not."""
    from icrcli import cache
    from icrcli.stats import scorecache
    from icrcli.stats.options import ScoreOptions
    from icrcli.stats.result import CONTENTS
    from icrcli.stats.score import score_file
    assert CONTENTS == 2
    h = _views(np.random.default_rng(26), n=40).astype(np.float32)
    np.save(tmp_path / "h.npy", h)
    opts = ScoreOptions(ci=True, ci_groups=4)
    fresh, _ = score_file(tmp_path / "h.npy", opts=opts, use_cache=False)
    before = {k: v for k, v in fresh.items() if not k.startswith(COMPANIONS) or k in COMPANIONS}
    assert "trace_s_ci" not in before and "icr_ci" in before
    with monkeypatch.context() as m:
        m.setattr(scorecache, "CONTENTS", 1)
        assert cache.write_entry(scorecache.KIND, scorecache.score_key(tmp_path / "h.npy", None, None, opts), before)
    r, _ = score_file(tmp_path / "h.npy", opts=opts)
    assert r["cached"] is False and r["trace_s_ci"] == fresh["trace_s_ci"]
    # the same entry under the current key is served: the key is what keeps it out
    cache.write_entry(scorecache.KIND, scorecache.score_key(tmp_path / "h.npy", None, None, opts), before)
    r, _ = score_file(tmp_path / "h.npy", opts=opts)
    assert r["cached"] is True and "trace_s_ci" not in r


def test_a_merged_score_is_keyed_on_the_contents_too(tmp_path, monkeypatch):
    """A score merged from shard or statistics files is cached as well (scorecache.parts_key): the same reason."""
    from icrcli.stats import scorecache
    from icrcli.stats.options import ScoreOptions
    (tmp_path / "a.npz").write_bytes(b"a")
    (tmp_path / "b.npz").write_bytes(b"b")
    key = lambda: scorecache.parts_key([tmp_path / "a.npz", tmp_path / "b.npz"], "stats", None, None, ScoreOptions())
    now = key()
    monkeypatch.setattr(scorecache, "CONTENTS", 1)
    assert key() != now

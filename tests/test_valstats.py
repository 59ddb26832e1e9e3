"""examples/valstats.py: the statistics docs/VALIDATION.md adds (bootstraps, null rates, the ordering rules),
checked against independent computations on small arrays."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import valstats  # noqa: E402

from icrcli.stats.moments import from_block  # noqa: E402
from icrcli.stats.options import ScoreOptions  # noqa: E402
from icrcli.stats.score import score_moments  # noqa: E402


def test_resampled_moments_equal_the_moments_of_the_repeated_images():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(30, 3, 5)) + rng.normal(size=(30, 1, 5))
    counts = rng.multinomial(30, np.full(30, 1 / 30))
    s, w = valstats.per_image_moments(h)
    got = valstats.resampled_moments(s, w, counts, 3)
    ref = from_block(np.repeat(h, counts, axis=0))
    assert got.n == ref.n == 30
    np.testing.assert_allclose(got.mean_s, ref.mean_s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.m2_s, ref.m2_s, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.w_xi, ref.w_xi, rtol=1e-10, atol=1e-10)


def test_bootstrap_icr_with_all_ones_is_icr_of_the_data():
    rng = np.random.default_rng(1)
    levels = [rng.normal(size=(40, 2, 4)) * (1 + j) + rng.normal(size=(40, 1, 4)) for j in range(3)]
    got = valstats.bootstrap_icr(levels, np.ones((1, 40), dtype=int))
    want = [score_moments([from_block(h)], ScoreOptions()).icr for h in levels]
    np.testing.assert_allclose(got[0], want, rtol=1e-9)


def test_bootstrap_counts_resample_n_items_and_depend_on_the_seed():
    a = valstats.bootstrap_counts(50, 7, seed=3)
    assert a.shape == (7, 50) and (a.sum(axis=1) == 50).all()
    assert np.array_equal(a, valstats.bootstrap_counts(50, 7, seed=3))
    assert not np.array_equal(a, valstats.bootstrap_counts(50, 7, seed=4))


def test_bootstrap_accuracy_is_the_weighted_mean_of_correctness():
    correct = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=bool)
    counts = np.array([[1, 1, 1, 1], [0, 2, 2, 0]])
    got = valstats.bootstrap_accuracy(correct, counts)
    np.testing.assert_allclose(got, [[0.75, 0.25], [0.5, 0.5]])
    # ties go to the lowest sigma, as icr's argmax and argmin do
    assert list(valstats.argmax_lowest(got)) == [0, 0]
    assert list(valstats.argmin_lowest(np.array([[2.0, 1.0, 1.0]]))) == [1]


def test_agreement_rules_and_their_null_rates():
    sigmas = [0.0, 0.1, 0.3, 1.0]
    icr = [0.2, 0.1, 0.15, 0.5]              # argmin at 0.1
    acc = [0.80, 0.82, 0.90, 0.50]           # argmax at 0.3
    se = [0.01] * 4
    p = [0.001, 0.01, 1.0, 1e-9]
    tied = [False, True, True, False]
    rules = {r["rule"]: r for r in valstats.agreement_rules(sigmas, icr, acc, se, p, tied)}
    assert rules["same level"] == {"rule": "same level", "passes": False, "null_rate": 0.25}
    assert rules["within 2 SE of the best"]["passes"] is False
    assert rules["within 2 SE of the best"]["null_rate"] == 0.25          # only the best itself
    assert rules["McNemar p >= 0.05 against the best"]["null_rate"] == 0.25
    assert rules["best among ICR's ties"] == {"rule": "best among ICR's ties", "passes": True, "null_rate": 0.5}
    # a flat accuracy curve: every level is within 2 SE, so a random pick always passes
    flat = {r["rule"]: r for r in valstats.agreement_rules(sigmas, icr, [0.8] * 4, [0.05] * 4, [1.0] * 4, None)}
    assert flat["within 2 SE of the best"] == {"rule": "within 2 SE of the best", "passes": True, "null_rate": 1.0}
    assert "best among ICR's ties" not in flat


def test_expected_passes_is_the_sum_of_bernoullis():
    mean, sd = valstats.expected_passes([0.5, 0.5, 1.0])
    assert mean == pytest.approx(2.0) and sd == pytest.approx(np.sqrt(0.5))


def test_first_clear_rise_and_first_rise_beyond():
    pts = [{"step": 50, "memorization_ratio": 0.0, "memorization_ratio_se": 0.0},
           {"step": 100, "memorization_ratio": 0.12, "memorization_ratio_se": 0.07},   # not 2 SE above 0
           {"step": 150, "memorization_ratio": 0.12, "memorization_ratio_se": 0.03},
           {"step": 200, "memorization_ratio": 0.5, "memorization_ratio_se": 0.04}]
    assert valstats.first_clear_rise(pts) == 150
    assert valstats.first_clear_rise(pts[:2]) is None
    rises = [{"step": 50, "beyond_interval": True}, {"step": 100, "beyond_interval": False},
             {"step": 150, "beyond_interval": False}, {"step": 200, "beyond_interval": True}]
    assert valstats.first_rise_beyond(rises, after_step=100) == 200
    assert valstats.first_rise_beyond(None, after_step=0) is None

"""Counter-based per-seed randomness: determinism per seed, distribution, independence."""

import numpy as np
import scipy.stats

from icrcli.data.rng import normal, splitmix64, uniform


def test_splitmix64_reference_values():
    # SplitMix64 with state 0: the first outputs of the reference generator (Vigna's splitmix64.c).
    state = np.array([0], dtype=np.uint64)
    assert int(splitmix64(state)[0]) == 0xE220A8397B1DCDAF
    assert int(uniform(np.array([0]), 2)[0, 1] * 2**53) == 0x6E789E6AA1B965F4 >> 11


def test_each_seed_is_its_own_stream():
    seeds = np.array([3, 17, 2**62, 5], dtype=np.int64)
    z = normal(seeds, (2, 5, 7))
    assert z.shape == (4, 2, 5, 7) and z.dtype == np.float32
    for i, s in enumerate(seeds):  # alone, or in another batch and order: the same numbers
        np.testing.assert_array_equal(normal(np.array([s]), (2, 5, 7))[0], z[i])
    np.testing.assert_array_equal(normal(seeds[::-1].copy(), (2, 5, 7))[::-1], z)
    assert not np.allclose(z[0], z[1])


def test_distribution_and_independence():
    z = normal(np.arange(400, dtype=np.int64), (25, 25))  # odd count: the last Box-Muller pair is cut
    flat = z.reshape(400, -1).astype(np.float64)
    assert abs(flat.mean()) < 0.01 and abs(flat.std() - 1) < 0.01
    assert scipy.stats.kstest(flat.ravel(), "norm").pvalue > 1e-3
    corr = np.corrcoef(flat[:, :200])  # across seeds
    assert np.abs(corr[np.triu_indices(400, 1)]).max() < 0.35  # ~ 5 sd of sample correlations at n = 200
    assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < 0.01  # along a stream
    u = uniform(np.arange(10), 1000)
    assert u.min() > 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01

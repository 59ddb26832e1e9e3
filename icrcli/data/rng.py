"""Counter-based randomness: a pure function of (seed, position), computed for many seeds at once.

Every (image, view) owns a 63-bit seed; its noise must not depend on batch, order, chunk or device. Drawing it
from a generator seeded per sample costs a Python-level call per sample, which holds the GIL and stalls the
thread that feeds a fast GPU. Here the whole batch is a few vectorised numpy operations (which release the GIL).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective, well-mixed hash of uint64."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seeds: np.ndarray, count: int) -> np.ndarray:
    """(len(seeds), count) float64 uniforms in (0, 1): the SplitMix64 stream of each seed, element j being
    mix(seed + (j + 1) * golden), i.e. the generator's j-th output (it passes BigCrush)."""
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)[:, None]
    with np.errstate(over="ignore"):
        z = splitmix64(s + np.arange(count, dtype=np.uint64) * _GOLDEN)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53  # 53 random bits, never 0 or 1


def normal(seeds: np.ndarray, shape: tuple) -> np.ndarray:
    """(len(seeds), *shape) float32 standard normals, one independent stream per seed (Box-Muller on pairs of
    uniforms: exact, no rejection loop, so it vectorises)."""
    m = int(np.prod(shape))
    half = (m + 1) // 2
    u = uniform(seeds, 2 * half).astype(np.float32)  # float32 is plenty for noise, and twice as fast
    r = np.sqrt(np.float32(-2.0) * np.log(u[:, :half]))
    theta = np.float32(2.0 * np.pi) * u[:, half:]
    z = np.concatenate([r * np.cos(theta), r * np.sin(theta)], axis=1)[:, :m]
    return np.ascontiguousarray(z).reshape(len(z), *shape)

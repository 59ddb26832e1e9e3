"""An (N, K, D) array already in memory (numpy, or a torch tensor on any device) as a FeatureSource, so the
Python API scores it through the same streaming code as a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from icrcli.errors import UserError
from icrcli.features.featurefile import FeatureSource, _check_shape, _float_dtype

ARRAY_PATH = "<array>"


def as_numpy(x) -> np.ndarray:
    """A numpy view of x; a torch tensor is detached and copied to host memory (bfloat16 as float32, which holds
    it exactly)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        import torch
        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().numpy()
    raise UserError(f"cannot score a {type(x).__name__}: pass an (N, K, D) numpy array, a torch tensor, or the path "
                    "of a feature file.")


@dataclass
class ArraySource(FeatureSource):
    array: np.ndarray = field(default=None, repr=False)

    def iter_blocks(self, block_images: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        step = self.block_images(block_images)
        for a in range(0, self.shape[0], step):
            yield a, self.array[a:a + step]


def array_source(x) -> ArraySource:
    arr = as_numpy(x)
    shape = _check_shape(arr.shape, "the array")
    return ArraySource(Path(ARRAY_PATH), None, shape, _float_dtype(arr.dtype, "the array"), array=arr)

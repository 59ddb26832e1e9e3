"""Data that is already VAE latents, for latent models (DiT/SiT) run without their VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrcli.errors import UserError


class LatentSet:
    """VAE latents (N, C, H, W) from a float .npy/.npz (key latents/x/data/images, labels/y/targets), read as
    they are: images.ImageSet would map floats onto [0, 1] pixels, which latents are not."""
    KEYS = ("latents", "x", "data", "images")

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            if self.path.suffix.lower() == ".npy":
                self._array, labels = np.load(self.path, mmap_mode="r", allow_pickle=False), None
                self.kind = "npy"
            else:
                with np.load(self.path, allow_pickle=False) as z:
                    key = next((k for k in self.KEYS if k in z.files), None)
                    if key is None:
                        raise UserError(f"{path}: no array named {', '.join(self.KEYS)} (it has "
                                        f"{', '.join(z.files)}). Save the latents under 'latents'.")
                    self._array = z[key]
                    lkey = next((k for k in ("labels", "y", "targets") if k in z.files), None)
                    labels = z[lkey].astype(np.int64) if lkey else None
                self.kind = "npz"
        except (ValueError, OSError) as e:
            raise UserError(f"{path} is not a readable numpy file ({e}).") from None
        if self._array.ndim != 4 or self._array.dtype.kind != "f":
            raise UserError(f"{path} holds a {self._array.dtype} array of shape {self._array.shape}, but this is a "
                            "latent model: give it float latents laid out (N, C, H, W), e.g. (N, 4, 32, 32), or "
                            "images together with its VAE (--vae PATH, a diffusers AutoencoderKL folder).")
        if labels is not None and labels.shape != (len(self._array),):
            raise UserError(f"{path}: {len(self._array)} latents but labels of shape {labels.shape}.")
        _, self.channels, self.height, self.width = self._array.shape
        self.labels = labels

    def __len__(self) -> int:
        return len(self._array)

    def get(self, indices) -> np.ndarray:
        """(len(indices), C, H, W) float32."""
        return np.ascontiguousarray(self._array[np.asarray(indices)], dtype=np.float32)

    def source_files(self) -> list[Path]:
        return [self.path]


def open_latents(path) -> LatentSet:
    if not Path(path).is_file():
        raise UserError(f"'{path}' does not exist. Give a .npy/.npz of latents (N, C, H, W).")
    return LatentSet(Path(path))

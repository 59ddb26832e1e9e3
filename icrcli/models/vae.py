"""The VAE of a latent model (--vae): a diffusers AutoencoderKL folder, as an encoder from pixels to the latents
the model sees, and a decoder back (memorization compares pixels)."""

from __future__ import annotations

from pathlib import Path

from icrcli.errors import UserError
from icrcli.models.archs.diffusers_models import diffusers_library, from_pretrained

# Latent scale of the Stable Diffusion / DiT VAE (Rombach et al. 2022), used when the VAE config gives none.
SD_LATENT_SCALE = 0.18215


def load_vae(path: str, device):
    """An encoder x in [-1, 1] -> latents (posterior mean, scaled), as DiT/SiT feed their models."""
    diffusers = diffusers_library()
    folder = Path(path)
    if (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    if not (folder / "config.json").is_file():
        raise UserError(f"--vae {path}: not a diffusers AutoencoderKL folder (no config.json).")
    vae = from_pretrained(diffusers, "AutoencoderKL", folder).eval().requires_grad_(False)
    vae.to(device)
    return VaeEncoder(vae)


class VaeEncoder:
    """x in [-1, 1] (B, 3, H, W) -> latents (B, C, H/f, W/f): posterior mean times the latent scale."""

    def __init__(self, vae):
        self.vae = vae
        cfg = vae.config
        self.scale = float(getattr(cfg, "scaling_factor", None) or SD_LATENT_SCALE)
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)  # one 2x downsampling per extra block
        self.in_channels = int(cfg.in_channels)
        self.latent_channels = int(cfg.latent_channels)

    def __call__(self, x):
        return self.vae.encode(x).latent_dist.mean * self.scale

    def decode(self, z):
        """latents (as the model sees them, scaled) -> pixels in [-1, 1]: what memorization compares."""
        return self.vae.decode(z / self.scale).sample

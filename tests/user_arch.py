"""A user's own denoiser, as `icr extract --arch` loads it: by file path (`tests/user_arch.py:TinyDenoiser`)
or by module name (`user_arch:build`, with tests/ on sys.path). Used by tests/test_extract_e2e.py."""

from torch import nn


class TinyDenoiser(nn.Module):
    """(B, C, H, W) images and (B,) times -> (B, C, H, W). `body.{i}` are the layers worth tapping."""

    def __init__(self, in_channels=3, width=8, depth=2, img_resolution=16):
        super().__init__()
        self.img_resolution = img_resolution
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
                                    for _ in range(depth)])
        self.head = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x, t):
        h = self.stem(x) + self.time(t.float().reshape(-1, 1))[:, :, None, None]
        return self.head(self.body(h))


class KeywordDenoiser(TinyDenoiser):
    """The same network called diffusers-style: forward(sample=..., timestep=...)."""

    def forward(self, sample=None, timestep=None):
        return super().forward(sample, timestep)


def build(**kwargs):
    """A factory function, as `--arch user_arch:build --arch-arg width=8`."""
    return TinyDenoiser(**kwargs)

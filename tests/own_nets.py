"""Small networks as users write them for MNIST (1x28x28), loaded by `icr extract --arch tests/own_nets.py:Class`
in tests/test_own_checkpoint.py. None of their constructors takes the input shape."""

import torch
from torch import nn


class LayerNormNet(nn.Module):
    """x (B, 1, 28, 28), t (B,) -> (B, 1, 28, 28). The LayerNorm fixes the input to 28x28."""

    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.norm = nn.LayerNorm([width, 28, 28])
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t):
        h = self.conv(x) + self.time(t.float().reshape(-1, 1))[:, :, None, None]
        return self.head(torch.relu(self.norm(h)))


def ddpm_schedules(beta1=1e-4, beta2=0.02, T=1000):
    """minDiffusion's ddpm_schedules: T + 1 entries, steps 0..T (an independent copy of that public code)."""
    beta_t = (beta2 - beta1) * torch.arange(0, T + 1, dtype=torch.float32) / T + beta1
    alpha_t = 1 - beta_t
    alphabar_t = torch.cumsum(torch.log(alpha_t), dim=0).exp()
    return {"beta_t": beta_t, "alpha_t": alpha_t, "alphabar_t": alphabar_t}


class DDPMNet(LayerNormNet):
    """A DDPM CNN that keeps its schedule as buffers `alpha_t`, `beta_t` (1001 entries, T = 1000), fed t / T."""

    def __init__(self, width=4):
        super().__init__(width)
        s = ddpm_schedules()
        self.register_buffer("beta_t", s["beta_t"])
        self.register_buffer("alpha_t", s["alpha_t"])


class ScoreNet(LayerNormNet):
    """A Song-style score network taking continuous t in (0, 1], any square size (no LayerNorm over space)."""

    def __init__(self, width=4):
        super().__init__(width)
        self.norm = nn.GroupNorm(1, width)


class DiTLike(nn.Module):
    """A tiny class-conditional model called net(x, t, y), with a DiT-style label table of 10 classes + null."""

    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.y_embedder = nn.Embedding(num_classes + 1, width)
        self.block = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t, y):
        e = self.time(t.float().reshape(-1, 1)) + self.y_embedder(y)
        return self.head(torch.relu(self.block(self.conv(x) + e[:, :, None, None])))

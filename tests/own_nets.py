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


class GTWrapper(nn.Module):
    """A training module saved whole: the network as `gt.*`, the schedule beside it as `alpha_t`, `beta_t` (the
    layout of the real case: `--key gt` takes the network, and the schedule lies outside it)."""

    def __init__(self, width=4):
        super().__init__()
        self.gt = LayerNormNet(width)
        s = ddpm_schedules()
        self.register_buffer("beta_t", s["beta_t"])
        self.register_buffer("alpha_t", s["alpha_t"])


class HiddenNet(nn.Module):
    """A U-Net-like stack whose widths are a tuple constructor argument, n_hidden=(8, 16, 8), the way real MNIST
    code writes it; a tuple and a list build the same layers here, but it checks that it got a tuple."""

    def __init__(self, n_hidden=(4, 4), act="relu"):
        super().__init__()
        if not isinstance(n_hidden, tuple):
            raise TypeError(f"n_hidden must be a tuple, got {type(n_hidden).__name__}")
        widths = (1, *n_hidden)
        self.blocks = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.time = nn.Linear(1, n_hidden[0])
        self.head = nn.Conv2d(n_hidden[-1], 1, 3, padding=1)
        self.act = {"relu": torch.relu, "silu": nn.functional.silu}[act]  # a function, not a module

    def forward(self, x, t):
        h = self.blocks[0](x) + self.time(t.float().reshape(-1, 1))[:, :, None, None]
        for block in self.blocks[1:]:
            h = block(self.act(h))
        return self.head(self.act(h))


class DigitTable(nn.Module):
    """A class-conditional model called net(x, t, y) with a label table of exactly its 10 digits: no null row
    (its guidance drops the label by zeroing the embedding, not with an extra class)."""

    def __init__(self, width=4, n_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.label_emb = nn.Embedding(n_classes, width)
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t, y):
        e = self.time(t.float().reshape(-1, 1)) + self.label_emb(y)
        return self.head(torch.relu(self.conv(x) + e[:, :, None, None]))


class LambdaNet(nn.Module):
    """Activations as users write them: F.silu inside forward, a lambda held as an attribute, and one nn.SiLU."""

    def __init__(self, width=4, act=lambda h: h * torch.sigmoid(h)):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.act = act
        self.out_act = nn.SiLU()
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t):
        h = nn.functional.silu(self.conv(x) + self.time(t.float().reshape(-1, 1))[:, :, None, None])
        h = self.act(self.mid(h))
        return self.head(self.out_act(h))


def build_lambda_net(width=4):
    """The `file.py:function` builder form: a constructor that takes a function, called with one."""
    return LambdaNet(width, act=nn.functional.gelu)


def digit_table():
    """The same label table built by a function that says nothing about the number of classes."""
    return DigitTable()

"""Train a small EDM-preconditioned SongUNet (icr's built-in architecture) on real images, on a CPU, bit for bit
reproducibly from a seed. Not part of the installed CLI: it makes the models `icr demo` ships.

    python examples/train.py --data ../shared/data/mnist5k/mnist_5k.csv.gz --images 5000 --steps 2500 --every 500 \
        --batch 64 --ema 0.999 --seed 0 --out runs/rich
    python examples/train.py --data ../shared/data/mnist5k/mnist_5k.csv.gz --images 64 --steps 4000 --every 250 \
        --batch 32 --ema 0.995 --seed 0 --out runs/limited

(the two runs shipped in icrcli/demo_data). Writes into --out: train-images.npz (the uint8 images and labels trained
on, our own subset file), config.json, ckpt-NNNNNN.safetensors every --every steps (EMA weights of the EDMPrecond
network; the step in the name orders them for `icr timeline`), and loss.csv (step, mean loss of the last 50 steps,
seconds since the start).

Loss: Karras et al. 2022 (EDM), Sec. 5 and Table 1: ln sigma ~ N(P_mean = -1.2, P_std = 1.2), weight
lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 with sigma_data = 0.5, on images in [-1, 1].
Determinism: --seed seeds the subset (numpy), the initial weights (torch) and the batches and noise (a torch
Generator); with torch's deterministic algorithms and a fixed thread count (float sums depend on it), the same
command on the same machine and torch version gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import save_file

from icrcli.data.images import open_images
from icrcli.models.archs.edm import build_edm

P_MEAN, P_STD, SIGMA_DATA = -1.2, 1.2, 0.5   # EDM's training noise distribution and data scale


@dataclass
class Config:
    data: str
    out: str
    images: int = 5000            # first N images of a class-balanced shuffle of --data
    steps: int = 6000
    every: int = 1000             # checkpoint interval (steps)
    batch: int = 64
    lr: float = 2e-3              # Adam; small nets tolerate more than EDM's 1e-3 at batch 512
    warmup: int = 200             # linear lr ramp (steps), as EDM's lr_rampup
    ema: float = 0.999            # EMA decay of the saved weights
    seed: int = 0
    threads: int = 1              # float sums depend on the thread count: part of the reproducibility contract
    model_channels: int = 16      # reduced DDPM++: ~0.3M parameters, ~0.6 MB per fp16 checkpoint
    channel_mult: list = field(default_factory=lambda: [1, 2, 2])
    num_blocks: int = 1
    attn_resolutions: list = field(default_factory=list)
    dropout: float = 0.0
    fp16: bool = True             # save checkpoints in float16 (halves the shipped size)


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int64 indices: a seeded shuffle taken round-robin over classes, so any prefix is class-balanced."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = [ix[i] for i in range(max(map(len, per_class))) for ix in per_class if i < len(ix)]
    return np.sort(np.asarray(order[:n], dtype=np.int64))


def edm_loss(net, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scalar EDM loss on a batch y (B, C, H, W) in [-1, 1] (Karras et al. 2022, Eq. 8 with Table 1's choices)."""
    sigma = (torch.randn(y.shape[0], 1, 1, 1, generator=gen) * P_STD + P_MEAN).exp()
    weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
    noise = torch.randn(y.shape, generator=gen) * sigma
    denoised = net(y + noise, sigma.flatten())
    return (weight * (denoised - y) ** 2).mean()


def save(net_ema, path: Path, fp16: bool) -> None:
    """The EMA network's state dict as safetensors (float16 if asked), written then renamed."""
    sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in net_ema.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp))
    tmp.replace(path)


def train(cfg: Config) -> None:
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    src = open_images(cfg.data)
    if src.labels is None:
        raise SystemExit(f"{cfg.data}: labelled images needed (the subset is class-balanced)")
    rng = np.random.default_rng(cfg.seed)
    idx = balanced_subset(src.labels, min(cfg.images, len(src)), rng)
    images = src.get(idx)
    if images.dtype != np.uint8:
        images = np.round(images * 255).astype(np.uint8)
    np.savez_compressed(out / "train-images.npz", images=images, labels=src.labels[idx])
    (out / "config.json").write_text(json.dumps(asdict(cfg) | {"source_indices": idx.tolist(),
                                                               "torch": torch.__version__}, indent=1))
    x_all = torch.from_numpy(images).float() / 127.5 - 1.0          # (N, C, H, W) in [-1, 1]
    n, c, h, _ = x_all.shape
    net = build_edm("edm", "SongUNet", img_resolution=h, img_channels=c, model_channels=cfg.model_channels,
                    channel_mult=cfg.channel_mult, num_blocks=cfg.num_blocks, attn_resolutions=cfg.attn_resolutions,
                    dropout=cfg.dropout)
    ema = build_edm("edm", "SongUNet", img_resolution=h, img_channels=c, model_channels=cfg.model_channels,
                    channel_mult=cfg.channel_mult, num_blocks=cfg.num_blocks, attn_resolutions=cfg.attn_resolutions,
                    dropout=cfg.dropout)
    ema.load_state_dict(net.state_dict())
    ema.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    order, pos = torch.randperm(n, generator=gen), 0
    log = open(out / "loss.csv", "w", newline="")  # noqa: SIM115  flushed every log line, closed at the end
    writer = csv.writer(log)
    writer.writerow(["step", "loss", "seconds"])
    t0, acc, cnt = time.time(), 0.0, 0
    cols = [TextColumn(f"train {n} images, {n_params / 1e6:.2f}M params"), BarColumn(),
            TextColumn("{task.completed}/{task.total} steps  loss {task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols) as bar:
        task = bar.add_task("train", total=cfg.steps, loss="-")
        for step in range(1, cfg.steps + 1):
            if pos + cfg.batch > n:                    # a fresh epoch: reshuffle
                order, pos = torch.randperm(n, generator=gen), 0
            batch = x_all[order[pos:pos + cfg.batch]] if n >= cfg.batch else x_all[torch.randint(n, (cfg.batch,),
                                                                                                 generator=gen)]
            pos += cfg.batch
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(step / max(cfg.warmup, 1), 1.0)
            loss = edm_loss(net, batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1 - cfg.ema)
            acc, cnt = acc + loss.item(), cnt + 1
            if step % 50 == 0 or step == cfg.steps:
                writer.writerow([step, f"{acc / cnt:.6f}", f"{time.time() - t0:.1f}"])
                log.flush()
                bar.update(task, loss=f"{acc / cnt:.4f}")
                acc, cnt = 0.0, 0
            if step % cfg.every == 0 or step == cfg.steps:
                save(ema, out / f"ckpt-{step:06d}.safetensors", cfg.fp16)
            bar.advance(task)
    log.close()
    print(f"done: {cfg.steps} steps in {time.time() - t0:.0f} s -> {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Config(data="", out="")
    for name, val in asdict(defaults).items():
        if name in ("data", "out"):
            p.add_argument(f"--{name}", required=True)
        elif isinstance(val, bool):
            p.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=val)
        elif isinstance(val, list):
            p.add_argument(f"--{name.replace('_', '-')}", type=int, nargs="*", default=val)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val)
    train(Config(**vars(p.parse_args())))


if __name__ == "__main__":
    main()

"""Speed of `icr sweep` against the network's own work (issue: a 10-level sweep <= 1.1x ten truncated forward
passes of one level): images are decoded and augmented once for all levels, so a sweep should cost little more
than the forward passes themselves.

Prints, measured in one run on this machine, with the same network, inputs and batch size:
  sweep (10 levels, extraction + scoring, cold cache) / (10 x truncated forward of one level)
for two networks: the tiny example model (examples/tiny_checkpoint.py) and EDM's CIFAR-10 DDPM++ (55.7M
parameters), random weights (speed does not depend on the values), each tapped at its default layer.

Usage: python bench/sweep.py [--images 64] [--views 2] [--batch-size 32] [--levels 10] [--only tiny|ddpmpp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from icrcli.features.options import RunOptions, ViewOptions
from icrcli.features.plan import load_model
from icrcli.models.archs.edm import EDM_PRESETS, build_edm
from icrcli.models.options import ModelOptions
from icrcli.models.taps import Taps
from icrcli.scans.sweep import run_sweep
from icrcli.stats.options import ScoreOptions

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test" / "cifar10_test_jpg.tar"
NETS = {
    "tiny": dict(model_type="SongUNet", img_resolution=32, img_channels=3, model_channels=32, channel_mult=[1, 2, 2],
                 num_blocks=2, attn_resolutions=[16]),
    "ddpmpp": dict(img_resolution=32, img_channels=3, augment_dim=9, **EDM_PRESETS["ddpmpp"]),
}


def truncated_forward(net, layer: str, n_views: int, batch: int, sigma: float) -> float:
    """Seconds for the bare forward passes of one level (n_views inputs), stopped after the tapped layer."""
    inputs = [torch.randn(min(batch, n_views - i), 3, 32, 32) for i in range(0, n_views, batch)]
    s = torch.full((batch,), sigma)
    with torch.inference_mode(), Taps(net, [layer], "mean") as taps:
        taps.run(lambda: net(inputs[0], s[: len(inputs[0])]))  # warm-up
        t = time.perf_counter()
        for x in inputs:
            taps.run(lambda: net(x, s[: len(x)]))
        return time.perf_counter() - t


def bench(name: str, a, tmp: Path) -> None:
    torch.manual_seed(0)
    net = build_edm("edm", **NETS[name]).eval()
    ckpt = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
    data = CIFAR if CIFAR.exists() else tmp / "imgs.npy"
    if not CIFAR.exists():
        np.save(data, np.random.default_rng(0).integers(0, 256, (a.images, 32, 32, 3), dtype=np.uint8))
    sigmas = [float(f"{s:.6g}") for s in np.geomspace(0.05, 5, a.levels)]
    vopts = ViewOptions(views=a.views, images=a.images, chunk_images=a.batch_size,
                        run=RunOptions(batch_size=a.batch_size, device="cpu"))
    os.environ["ICR_CACHE_DIR"] = str(tmp / f"cache-{name}")
    t = time.perf_counter()
    res = run_sweep(ckpt, data, sigmas, ModelOptions(), vopts, ScoreOptions(), use_cache=False)
    t_sweep = time.perf_counter() - t
    model = load_model(ckpt, ModelOptions(), "cpu")
    layer = res["layers"][0]
    t_fwd = min(truncated_forward(model.denoiser.net, layer, a.images * a.views, a.batch_size, 0.3)
                for _ in range(a.repeat))
    n_params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"{name} ({n_params:.1f}M params, tap {layer}), {a.images} images x {a.views} views, batch {a.batch_size}, "
          f"{a.levels} levels, {torch.get_num_threads()} CPU threads, data {data.name}")
    print(f"  sweep (cold cache, extraction + scoring): {t_sweep:.2f} s")
    print(f"  truncated forward of one level:           {t_fwd:.2f} s")
    print(f"  sweep / ({a.levels} x truncated forward) = {t_sweep / (a.levels * t_fwd):.3f}   (goal <= 1.1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many forward timings")
    ap.add_argument("--only", choices=sorted(NETS), default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ([a.only] if a.only else list(NETS)):
            bench(name, a, Path(tmp))


if __name__ == "__main__":
    main()

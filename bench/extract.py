"""Speed of `icr extract` against the network's own forward pass (issue: <= 1.15x the bare forward up to the
tapped layer; well below 1x the full forward for a mid-network layer).

Prints, measured in one run on this machine, with the same network, inputs and batch size:
  extract / truncated forward   (bare forward passes stopped after the tapped layer, inputs pre-made)
  extract / full forward        (bare forward passes of the whole network)
  peak RSS of the process.
The network is EDM's CIFAR-10 DDPM++ (EDMPrecond + SongUNet, 55.7M parameters) with random weights (speed does
not depend on the values), tapped at model.dec.16x16_block1 (the paper's layer).

Usage: python bench/extract.py [--images 128] [--views 2] [--batch-size 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from icrcli.models.archs.edm import EDM_PRESETS, build_edm
from icrcli.features.extract import extract
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan
from icrcli.models.resolve import ModelOptions
from icrcli.models.taps import Taps

LAYER = "model.dec.16x16_block1"
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test" / "cifar10_test_jpg.tar"


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare(net, inputs, sigma, truncated: bool) -> float:
    _sync(sigma.device)
    t = time.perf_counter()
    with torch.inference_mode():
        if truncated:
            with Taps(net, [LAYER], "mean") as taps:
                for x in inputs:
                    taps.run(lambda: net(x, sigma[: len(x)]))
        else:
            for x in inputs:
                net(x, sigma[: len(x)])
    _sync(sigma.device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 (extract and bare passes)")
    a = ap.parse_args()
    torch.manual_seed(0)
    net = build_edm("edm", img_resolution=32, img_channels=3, augment_dim=9, **EDM_PRESETS["ddpmpp"]).eval()
    n_params = sum(p.numel() for p in net.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["ICR_CACHE_DIR"] = str(tmp / "cache")
        ckpt = tmp / "ddpmpp.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
        data = CIFAR if CIFAR.exists() else tmp / "imgs.npy"
        if not CIFAR.exists():
            np.save(data, np.random.default_rng(0).integers(0, 256, (a.images, 32, 32, 3), dtype=np.uint8))
        request = Request(sigma=0.29, images=a.images, views=a.views, chunk_images=a.batch_size, dtype=a.dtype)
        run_opts = RunOptions(batch_size=a.batch_size, device=a.device, overwrite=True)
        t = time.perf_counter()
        model = load_model(ckpt, ModelOptions(), a.device)
        p = make_plan(model, load_data(data, model), request)
        t_plan = time.perf_counter() - t
        # Same number of forward passes and batch shapes as the extraction: images x views.
        dev = p.device
        inputs = [torch.randn(min(a.batch_size, a.images - i), 3, 32, 32, device=dev)
                  for i in range(0, a.images, a.batch_size) for _ in range(a.views)]
        sigma = torch.full((a.batch_size,), 0.29, device=dev)
        net = p.denoiser.net
        amp = torch.autocast(dev.type, dtype=getattr(torch, a.dtype), enabled=a.dtype != "float32")
        if dev.type == "cuda" and a.dtype == "float32":  # what extract does: IEEE float32, no TF32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        bare_amp = lambda *args: _with(amp, bare, *args)
        bare_amp(net, inputs[:2], sigma, True)  # warm-up
        bare_amp(net, inputs[:2], sigma, False)
        te, tt, tf = [], [], []
        for r in range(a.repeat):
            tt.append(bare_amp(net, inputs, sigma, True))
            t = time.perf_counter()
            extract(p, tmp / f"f{r}.h5", run_opts)
            te.append(time.perf_counter() - t)
            tf.append(bare_amp(net, inputs, sigma, False))
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if dev.type == "cuda" else ""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_fwd = a.images * a.views
    print(f"EDM CIFAR-10 DDPM++ ({n_params / 1e6:.1f}M params), tap {LAYER}, {a.images} images x {a.views} views, "
          f"batch {a.batch_size}, {a.dtype}, device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"data {data.name}")
    print(f"plan (load, hash, check):   {t_plan:.2f} s")
    print(f"icr extract (run):          {min(te):.2f} s  ({n_fwd / min(te):.1f} views/s)")
    print(f"truncated forward:          {min(tt):.2f} s")
    print(f"full forward:               {min(tf):.2f} s  ({min(tf) / len(inputs):.2f} s per batch)")
    print(f"extract / truncated forward = {min(te) / min(tt):.3f}   (goal <= 1.15)")
    print(f"extract / full forward      = {min(te) / min(tf):.3f}   (goal well below 1)")
    print(f"peak RSS: {rss:.0f} MiB{gpu}")


def _with(ctx, fn, *args):
    with ctx:
        return fn(*args)


if __name__ == "__main__":
    main()

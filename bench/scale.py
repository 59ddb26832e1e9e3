"""Speed of `icr extract` split across processes, and its cost per 1,000 views against the bare network.

Prints, measured in one run on this machine (with its load average, since the machine may be shared):
  1. the speed-up of 2 processes (torchrun, gloo, one thread each) over 1 process (all threads, and one thread)
     for the same extraction: the extraction's own seconds (from the JSON summary: after loading and hashing, up to
     the assembled file) and the wall time of the whole command;
  2. EDM CIFAR-10 DDPM++ (EDMPrecond + SongUNet, 55.7M parameters, random weights: speed does not depend on them),
     tapped at model.dec.16x16_block1: extraction seconds per 1,000 views against the truncated forward pass
     (bench/extract.py's measurement, reused), and their ratio.

Usage: python bench/scale.py [--images 64] [--views 2] [--batch-size 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import CIFAR, LAYER, _with, bare  # noqa: E402  (bench/extract.py: the forward-pass measurement)

from icrcli.features.extract import extract  # noqa: E402
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan  # noqa: E402
from icrcli.models.archs.edm import EDM_PRESETS, build_edm  # noqa: E402
from icrcli.models.resolve import ModelOptions  # noqa: E402


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds of the command, the extraction's own seconds from its JSON summary)."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout)["seconds"]


def scaling(ckpt: Path, data: Path, tmp: Path, a) -> None:
    args = ["extract", str(ckpt), "--data", str(data), "--sigma", "0.29", "--images", str(a.images), "--views",
            str(a.views), "--batch-size", str(a.batch_size), "--chunk-images", str(a.batch_size), "--device",
            a.device, "-q", "--overwrite"]
    base = {**os.environ, "ICR_CACHE_DIR": str(tmp / "cache")}
    threads = os.cpu_count() or 1
    runs = {
        f"1 process, {threads} threads": ([sys.executable, "-m", "icrcli"], {**base, "OMP_NUM_THREADS": str(threads)}),
        "1 process, 1 thread": ([sys.executable, "-m", "icrcli"], {**base, "OMP_NUM_THREADS": "1"}),
        "2 processes (torchrun), 1 thread each": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc-per-node", "2", "-m", "icrcli"],
                                                  {**base, "OMP_NUM_THREADS": "1"}),
    }
    _run(runs["1 process, 1 thread"][0] + args + ["-o", str(tmp / "warm.h5")], runs["1 process, 1 thread"][1])
    got = {}
    for name, (prefix, env) in runs.items():
        got[name] = _run(prefix + args + ["-o", str(tmp / f"{len(got)}.h5")], env)
    same = len({(tmp / f"{i}.h5").read_bytes() for i in range(len(runs))}) == 1
    print(f"1. extraction split across processes ({a.images} images x {a.views} views, batch {a.batch_size}, "
          f"{threads} CPUs; files byte-identical: {same})")
    for name, (wall, sec) in got.items():
        print(f"   {name:40s} extraction {sec:7.2f} s   whole command {wall:7.2f} s")
    two = got["2 processes (torchrun), 1 thread each"]
    for name in list(runs)[:2]:
        one = got[name]
        print(f"   speed-up of 2 processes over {name}: extraction {one[1] / two[1]:.2f}x, "
              f"whole command {one[0] / two[0]:.2f}x")


def per_thousand(ckpt: Path, data: Path, tmp: Path, a) -> None:
    os.environ["ICR_CACHE_DIR"] = str(tmp / "cache")
    request = Request(sigma=0.29, images=a.images, views=a.views, chunk_images=a.batch_size, dtype=a.dtype)
    model = load_model(ckpt, ModelOptions(), a.device)
    p = make_plan(model, load_data(data, model), request)
    dev, net = p.device, p.denoiser.net
    inputs = [torch.randn(min(a.batch_size, a.images - i), 3, 32, 32, device=dev)
              for i in range(0, a.images, a.batch_size) for _ in range(a.views)]
    sigma = torch.full((a.batch_size,), 0.29, device=dev)
    amp = torch.autocast(dev.type, dtype=getattr(torch, a.dtype), enabled=a.dtype != "float32")
    _with(amp, bare, net, inputs[:2], sigma, True)  # warm-up
    tt = _with(amp, bare, net, inputs, sigma, True)
    t = time.perf_counter()
    extract(p, tmp / "per1000.h5", RunOptions(batch_size=a.batch_size, device=a.device, overwrite=True))
    te = time.perf_counter() - t
    views = a.images * a.views
    print(f"2. EDM CIFAR-10 DDPM++ (random weights), tap {LAYER}, {views} views, batch {a.batch_size}, {a.dtype}, "
          f"{dev} ({torch.get_num_threads()} threads)")
    print(f"   icr extract:        {te / views * 1000:8.1f} s per 1,000 views")
    print(f"   truncated forward:  {tt / views * 1000:8.1f} s per 1,000 views")
    print(f"   extract / truncated forward = {te / tt:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (2. only; 1. runs on the CPU with gloo)")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16 (2. only)")
    ap.add_argument("--skip-scaling", action="store_true", help="only 2.")
    a = ap.parse_args()
    print(f"start: {_load()}")
    torch.manual_seed(0)
    net = build_edm("edm", img_resolution=32, img_channels=3, augment_dim=9, **EDM_PRESETS["ddpmpp"]).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "ddpmpp.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
        data = CIFAR if CIFAR.exists() else tmp / "imgs.npy"
        if not CIFAR.exists():
            np.save(data, np.random.default_rng(0).integers(0, 256, (a.images, 32, 32, 3), dtype=np.uint8))
        if not a.skip_scaling:
            scaling(ckpt, data, tmp, argparse.Namespace(**{**vars(a), "device": "cpu"}))
        per_thousand(ckpt, data, tmp, a)
    print(f"end: {_load()}")


if __name__ == "__main__":
    main()

"""One pass for a whole scan (issue 16 point 2): an augmentation x sigma grid, and layers extracted as plans of their
own, in one call of extract_levels against what main did before (one pass per augmentation; one per layer plan).

Prints, measured in one run on this machine, with the same network, inputs and batch size:
  grid:   (one pass per augmentation) / (one pass for the grid)       seconds, and the chunks decoded
  layers: (one pass per layer plan)   / (one pass for every layer)    seconds, and the forward passes
A ratio above 1 is the time the shared pass saves. Decoding matters most for JPEG data (the CIFAR-10 test tar).

Usage: python bench/grid_pass.py [--images 256] [--batch-size 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import icrcli.features.compute as compute
import icrcli.features.extract as ex
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan
from icrcli.models.archs.edm import build_edm
from icrcli.models.options import ModelOptions

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test" / "cifar10_test_jpg.tar"
AUGMENTS = ("none", "crop", "paper")
SIGMAS = (0.1, 0.5, 2.0)
LAYERS = ("model.enc.16x16_block0", "model.dec.16x16_block1")


class _Count:
    """Counts calls of module.name while inside."""
    def __init__(self, module, name):
        self.module, self.name, self.n = module, name, 0

    def __enter__(self):
        self.real = getattr(self.module, self.name)

        def counted(*a, **k):
            self.n += 1
            return self.real(*a, **k)
        setattr(self.module, self.name, counted)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.real)


def _timed(groups: list[list], out: Path, run: RunOptions) -> tuple[float, float, int, int]:
    """Wall and CPU seconds (this process's, all threads: steadier than the wall on a shared machine), chunks
    prepared and forward passes for extracting each group of plans with one extract_levels."""
    out.mkdir()
    t, c = time.perf_counter(), time.process_time()
    with _Count(ex, "prepare_rows") as dec, _Count(compute.Taps, "run") as fwd:
        for g, plans in enumerate(groups):
            ex.extract_levels(plans, [out / f"{g}-{i}.h5" for i in range(len(plans))], run)
    return time.perf_counter() - t, time.process_time() - c, dec.n, fwd.n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        net = build_edm("edm", "SongUNet", img_resolution=32, img_channels=3, model_channels=32,
                        channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[16]).eval()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp / "net.safetensors")
        data_path = CIFAR if CIFAR.exists() else tmp / "imgs.npy"
        if not CIFAR.exists():
            np.save(data_path, np.random.default_rng(0).integers(0, 256, (a.images, 32, 32, 3), dtype=np.uint8))
        model = load_model(tmp / "net.safetensors", ModelOptions(), "cpu")
        data = load_data(data_path, model)
        run = RunOptions(batch_size=a.batch_size)

        def plan(aug="paper", sigma=0.5, layers=()):
            return make_plan(model, data, Request(sigma=sigma, layers=layers, images=a.images, augment=aug,
                                                  chunk_images=a.batch_size))

        grid = {aug: [plan(aug, s) for s in SIGMAS] for aug in AUGMENTS}
        per_layer = [plan(layers=(layer,)) for layer in LAYERS]
        rows = {"grid": ([[p for g in grid.values() for p in g]], list(grid.values())),
                "layers": ([per_layer], [[p] for p in per_layer])}
        print(f"{a.images} images of {data_path.name}, batch {a.batch_size}, {torch.get_num_threads()} CPU threads; "
              f"grid {len(AUGMENTS)} augmentations x {len(SIGMAS)} sigmas, layers {', '.join(LAYERS)}")
        for name, (one, before) in rows.items():
            best = {"one": [float("inf")] * 2, "before": [float("inf")] * 2}
            for r in range(a.repeat):     # alternating which goes first: the machine's load drifts
                order = ("one", "before") if r % 2 else ("before", "one")
                for which in order:
                    wall, cpu, dec, fwd = _timed(one if which == "one" else before, tmp / f"{name}-{which}-{r}", run)
                    best[which] = [min(best[which][0], wall), min(best[which][1], cpu)]
                    print(f"  {name}, {which}: {wall:.2f} s wall, {cpu:.2f} s CPU, {dec} chunks decoded, {fwd} "
                          "forward passes")
            (w1, c1), (w0, c0) = best["one"], best["before"]
            print(f"  {name}: before / one pass = {w0 / w1:.2f} (wall), {c0 / c1:.2f} (CPU), best of {a.repeat}")


if __name__ == "__main__":
    main()

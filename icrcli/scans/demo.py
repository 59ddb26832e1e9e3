"""`icr demo`: the tool's two scans on the small models shipped with the package (icrcli/demo_data).

A sweep over sigma, with a linear probe, of a model trained on 5,000 MNIST digits (the semantic window: ICR's
argmin beside the probe's argmax), and a timeline, with the memorization ratio, over the checkpoints of a model
trained on 64 of them until it copies them (ICR against training step). Both are the same programs as
`icr sweep --probe` and `icr timeline --memorization`; this module only fixes their inputs and settings.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from icrcli.errors import UserError
from icrcli.progress import SILENT, Reporter
from icrcli.models.options import ModelOptions
from icrcli.scans.sigmas import parse_sigmas
from icrcli.scans.sweep import ProbeOptions, raise_if_stopped, run_sweep
from icrcli.scans.timeline import Checks, run_timeline
from icrcli.stats.options import ScoreOptions


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """How much work each scan does. `full` is the default demo, `quick` the one the test runs."""
    sweep_images: int            # images of the data-rich set that the sweep (and its probe) reads
    sweep_sigmas: tuple | None   # noise levels of the sweep; None: `icr sweep`'s default, the paper's grid
    timeline_sigma: float        # the one level the timeline follows
    memorization_samples: int    # samples drawn per checkpoint
    memorization_steps: int      # Heun steps per sample


# The sweep grid is the paper's (0 plus EDM-18 levels up to 3.3, as `icr sweep`'s default); sigma 0.5 for the
# timeline is sigma_data, fixed before any result was seen (docs/VALIDATION.md keeps to the same protocol).
FULL = DemoSettings(sweep_images=2000, sweep_sigmas=None, timeline_sigma=0.5, memorization_samples=256,
                    memorization_steps=18)
QUICK = DemoSettings(sweep_images=256, sweep_sigmas=(0.05, 0.3, 1.5), timeline_sigma=0.5,
                     memorization_samples=16, memorization_steps=6)


@dataclasses.dataclass(frozen=True)
class DemoData:
    """Where the shipped files are: the data-rich checkpoint and images, the data-limited run's checkpoint folder
    and its training images."""
    rich_checkpoint: Path
    rich_images: Path
    limited_checkpoints: Path
    limited_images: Path


def demo_data() -> DemoData:
    """The package's demo files; a UserError naming what is missing when the install lacks them."""
    root = Path(str(resources.files("icrcli") / "demo_data"))
    rich = sorted((root / "rich").glob("*.safetensors"))
    found = DemoData(rich_checkpoint=rich[-1] if rich else root / "rich" / "ckpt-*.safetensors", rich_images=root / "rich-images.npz",
                     limited_checkpoints=root / "limited", limited_images=root / "limited-images.npz")
    missing = [str(p) for p in dataclasses.astuple(found) if not p.exists()]
    if missing:
        raise UserError(f"the demo files are missing from this install ({', '.join(missing)}). Reinstall icr "
                        "(pip install icr, or pip install -e . from a checkout that has icrcli/demo_data).")
    return found


def view_options(images: int, device: str, seed: int = 0):
    """The view options of both scans: `icr extract`'s defaults, with the image count and device given."""
    from icrcli.features.options import RunOptions, ViewOptions
    return ViewOptions(images=images, seed=seed, run=RunOptions(device=device))


def run_demo(quick: bool = False, device: str = "cpu", reporter: Reporter = SILENT,
             on_record=None) -> dict:
    """{"sweep": sweep result, "timeline": timeline result, "settings": what was run} on the shipped models."""
    files = demo_data()
    s = QUICK if quick else FULL
    sigmas = list(s.sweep_sigmas) if s.sweep_sigmas else parse_sigmas(None)
    mopts, sopts = ModelOptions(), ScoreOptions()
    reporter.step(f"demo 1/2: sweep over {len(sigmas)} noise levels of the model trained on 5,000 MNIST "
                  f"digits ({s.sweep_images} images, with a linear probe)")
    sweep = raise_if_stopped(run_sweep(files.rich_checkpoint, files.rich_images, sigmas, mopts,
                                       view_options(s.sweep_images, device), sopts, reporter=reporter,
                                       on_level=on_record, probe=ProbeOptions()))
    reporter.step(f"demo 2/2: timeline of the model trained on 64 digits, at sigma {s.timeline_sigma:g}, with the "
                  f"memorization ratio of {s.memorization_samples} samples per checkpoint")
    timeline = raise_if_stopped(run_timeline(files.limited_checkpoints, files.limited_images, [s.timeline_sigma],
                                             mopts, view_options(64, device), sopts, reporter=reporter,
                                             on_point=on_record,
                                             checks=Checks(memorization=s.memorization_samples,
                                                           memorization_steps=s.memorization_steps)))
    return {"sweep": sweep, "timeline": timeline,
            "settings": {"quick": quick, "device": device, **dataclasses.asdict(s), "sweep_sigmas": sigmas}}

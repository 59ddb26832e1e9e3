"""The checkpoints of a training run, in training order: found in a folder and ordered by the step in their names.

Names seen in the field: `ckpt-000100.pt`, `network-snapshot-002000.pkl` (EDM, kimg), `step_1000.safetensors`,
`epoch=3-step=900.ckpt` (Lightning), `model-40000.pth`, `checkpoint_5/` (a diffusers folder). The step is the number
after a `step` word when there is one, else the last number in the name; numbers compare as numbers. A name
without a number is read for a step stored in the checkpoint (`step`, `global_step`, `train_steps`: training
checkpoints; `step` in a safetensors header). Ties, and checkpoints with no step at all, are reported, never
guessed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from icrcli.errors import UserError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".pkl", ".bin")
_STEP_WORD = re.compile(r"(?:^|[^a-z])(?:global_?)?steps?[=_\-]?(\d+)", re.I)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Found:
    path: Path
    step: int | None


def step_of(name: str) -> int | None:
    """The training step in a checkpoint's file name, or None when the name has no number."""
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    m = _STEP_WORD.search(stem)
    if m:
        return int(m.group(1))
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


_STORED_STEP_KEYS = ("step", "global_step", "train_steps", "steps")


def stored_step(path: Path) -> int | None:
    """The training step a checkpoint stores beside its weights, or None. Read with icr's own safe loader (no
    code runs); a file it cannot read has no step here (extraction will say why, if it is ever given)."""
    from icrcli.models.checkpoints import load_checkpoint
    if path.is_dir():
        return None
    try:
        meta = load_checkpoint(path).meta
    except (UserError, OSError):
        return None
    values = {**meta, **(meta.get("metadata") or {})}
    for k in _STORED_STEP_KEYS:
        v = values.get(k)
        if isinstance(v, str) and v.isdigit():
            return int(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
            return int(v)
    return None


def _is_checkpoint(p: Path) -> bool:
    if p.name.startswith(".") or p.name.endswith((".icr.json", ".tmp")):
        return False
    if p.is_dir():
        return (p / "config.json").is_file()  # a diffusers model folder
    return p.suffix.lower() in CHECKPOINT_SUFFIXES


def candidates(folder: str | Path, pattern: str | None = None) -> list[Path]:
    """The files (and diffusers folders) in `folder` that could be checkpoints, by name; possibly none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder. `icr timeline` takes the folder a training run writes its "
                        "checkpoints to (use --pattern to choose among its files).")
    return sorted(p for p in folder.iterdir() if _is_checkpoint(p)
                  and (pattern is None or fnmatch.fnmatch(p.name, pattern)))


def find_checkpoints(folder: str | Path, pattern: str | None = None) -> tuple[list[Found], list[str]]:
    """(checkpoints ordered by step, notes for stderr). Names without a step are left out and named in the notes;
    two checkpoints with one step are a UserError that names them: the order of a timeline is never a guess."""
    folder = Path(folder)
    entries = candidates(folder, pattern)
    if not entries:
        what = f"matching --pattern {pattern!r}" if pattern else f"({', '.join(CHECKPOINT_SUFFIXES)})"
        raise UserError(f"{folder}: no checkpoint files {what}. Point at the run's checkpoint folder, or set "
                        "--pattern (e.g. --pattern 'ema_*.pt').")
    found = [Found(p, step_of(p.name)) for p in entries]
    found = [f if f.step is not None else Found(f.path, stored_step(f.path)) for f in found]
    nameless = [f.path.name for f in found if f.step is None]
    notes = [f"left out {_few(nameless)}: no training step in the name or stored in the file (rename as "
             "ckpt-001000.pt to include)"] if nameless else []
    found = [f for f in found if f.step is not None]
    if not found:
        raise UserError(f"{folder}: no training step in the name of any checkpoint ({_few(nameless)}). Name "
                        "them with their step (e.g. ckpt-001000.pt), so the timeline has an order.")
    by_step: dict[int, list[str]] = {}
    for f in found:
        by_step.setdefault(f.step, []).append(f.path.name)
    ties = {s: names for s, names in by_step.items() if len(names) > 1}
    if ties:
        desc = "; ".join(f"step {s}: {', '.join(n)}" for s, n in sorted(ties.items())[:5])
        raise UserError(f"{folder}: several checkpoints share a training step ({desc}). Choose one series with "
                        "--pattern (e.g. --pattern 'ema_*').")
    return sorted(found, key=lambda f: f.step), notes


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")

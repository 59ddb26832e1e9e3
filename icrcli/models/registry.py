"""The model families icr knows: the built-in adapters (a light table, importable without torch, so --help stays
instant) and those installed in the environment through the `icr.architectures` entry-point group.

An installed family is a package the user put into their Python environment: its entry point names an Adapter
(icrcli.models.adapter), e.g. in its pyproject.toml

    [project.entry-points."icr.architectures"]
    mynet = "mynet.icr:ADAPTER"

The entry point's name is its --arch name. Loading it runs that installed code; nothing read from a checkpoint or
a sidecar names the code to run (a sidecar may name a family, which is the environment's to map to code).
Built-in families are asked first, in BUILTIN order, then the installed ones, in the order of their names.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path

from icrcli.errors import UserError

GROUP = "icr.architectures"

# --arch name -> (the module exporting its ADAPTER, the family in a few words for --help and messages).
BUILTIN = {
    "edm": ("icrcli.models.archs.edm", "EDM U-Nets (DDPM++, NCSN++, ADM)"),
    "dit": ("icrcli.models.archs.dit", "DiT"),
    "sit": ("icrcli.models.archs.dit", "SiT"),
    "repa": ("icrcli.models.archs.dit", "REPA's SiT"),
}
# Families read from a folder rather than a state dict (never named with --arch).
FOLDERS = {"diffusers": ("icrcli.models.archs.diffusers_models", "Hugging Face diffusers models")}
# The checkpoint formats in words: any state-dict file, then what a family adds.
STATE_DICT_FILES = "a .safetensors/.pt/.pth/.ckpt file"
FORMATS = {"edm": ("an EDM .pkl", "EDM .pkl"), "diffusers": ("a diffusers model folder", "diffusers folder")}

BUILTIN_ARCHS = tuple(BUILTIN)


def checkpoint_formats() -> str:
    """"a .safetensors/.pt/.pth/.ckpt file, an EDM .pkl, or a diffusers model folder"."""
    words = [STATE_DICT_FILES, *(long for long, _ in FORMATS.values())]
    return ", ".join(words[:-1]) + ", or " + words[-1]


def checkpoint_help() -> str:
    """The CHECKPOINT argument's help: "Checkpoint: .safetensors, .pt/.pth/.ckpt, EDM .pkl, or a diffusers folder."."""
    short = [s for _, s in FORMATS.values()]
    return f"Checkpoint: .safetensors, .pt/.pth/.ckpt, {', '.join(short[:-1])}, or a {short[-1]}."


def arch_help() -> str:
    """--arch's help (the built-in names; installed ones are not looked up, to keep --help instant)."""
    return (f"{'|'.join(BUILTIN_ARCHS)}, a family installed as an {GROUP} entry point, or your own: "
            "my.module:build_fn or path/to/model.py:ClassName.")


def families_in_words(folders: bool = False) -> str:
    """The families asked when recognising a state dict, in words: "EDM U-Nets (...), DiT/SiT/REPA's SiT, ..."
    (with folders=True, those read from folders too)."""
    by_module: dict[str, list[str]] = {}
    for module, words in (*BUILTIN.values(), *(FOLDERS.values() if folders else ())):
        by_module.setdefault(module, []).append(words)
    return ", ".join(["/".join(w) for w in by_module.values()] + list(installed()))


# --------------------------------------------------------------------------------------------------------------
# Installed families (entry points): names without importing anything; the adapter on first use.

@lru_cache(maxsize=1)
def installed() -> dict:
    """--arch name -> its entry point, for every `icr.architectures` entry point installed (built-in names win)."""
    from importlib.metadata import entry_points
    eps = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    return {ep.name: ep for ep in eps if ep.name not in BUILTIN and ep.name not in FOLDERS}


def arch_names() -> tuple[str, ...]:
    """Every name --arch (or a sidecar's "arch") may give: the built-in families, then the installed ones."""
    return BUILTIN_ARCHS + tuple(installed())


@lru_cache(maxsize=None)
def adapter(name: str):
    """The Adapter of the family called `name` (built-in or installed); None if there is none of that name."""
    from icrcli.models.adapter import Adapter
    if name in BUILTIN or name in FOLDERS:
        return importlib.import_module((BUILTIN.get(name) or FOLDERS[name])[0]).ADAPTER
    ep = installed().get(name)
    if ep is None:
        return None
    where = f"the installed family {name!r} ({ep.value}, entry point group {GROUP}" + \
        (f", package {ep.dist.name})" if getattr(ep, "dist", None) else ")")
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001  installed third-party code: say whose it is
        raise UserError(f"{where} failed to load: {type(e).__name__}: {e}. Fix or uninstall that package.") from None
    if isinstance(obj, type) and issubclass(obj, Adapter):
        obj = obj()
    if not isinstance(obj, Adapter):
        raise UserError(f"{where} is a {type(obj).__name__}, not an icrcli.models.adapter.Adapter. Fix or uninstall "
                        "that package.")
    if not obj.names:
        obj.names = (name,)
    return obj


def _asked_in_order():
    """The adapters that recognise state dicts: built-ins (each module once), then installed families, each
    loaded only when the ones before it have said no."""
    seen = []
    for name in arch_names():
        a = adapter(name)
        if a not in seen and not a.reads_folders:
            seen.append(a)
            yield a


def recognise(sd: dict, meta: dict):
    """The adapter whose family `sd` is; UserError when none recognises it."""
    for a in _asked_in_order():
        try:
            if a.recognises(sd, meta):
                return a
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  an installed family's code failed on these weights: say whose
            if a.__module__.startswith("icrcli."):
                raise
            raise UserError(f"The installed family {a.names[0]!r} ({type(a).__module__}) failed while looking at "
                            f"the checkpoint: {type(e).__name__}: {e}. Fix or uninstall that package, or name the "
                            "architecture with --arch.") from None
    raise UserError(
        f"Could not recognise the architecture from the checkpoint's keys (tried: {families_in_words()}). Name "
        f"it: --arch {'|'.join(arch_names())}, or build your own network with --arch my.module:build_fn / --arch "
        "path/to/model.py:ClassName (+ --arch-arg k=v), naming the data (parametrization, schedule, ...) in a "
        "sidecar CKPT.icr.json if you like (see README).")


def for_folder(folder: Path):
    """The adapter that opens model folder `folder`: diffusers when it is a diffusers folder, else an installed
    family that claims it, else diffusers again (which says what a model folder holds)."""
    if adapter("diffusers").opens(folder):
        return adapter("diffusers")
    for name in installed():
        a = adapter(name)
        if a.reads_folders and a.opens(folder):
            return a
    return adapter("diffusers")


def unknown_arch(arch: str) -> UserError:
    extra = f"; installed: {', '.join(installed())}" if installed() else ""
    return UserError(f"Unknown --arch {arch!r}. Built-in: {', '.join(BUILTIN_ARCHS)}{extra}; or your own network "
                     "as `my.module:build_fn` or `path/to/file.py:ClassName` with --arch-arg k=v.")


# --------------------------------------------------------------------------------------------------------------
# What sampler and scans ask of a Denoiser, answered by its family.

def adapter_of(den):
    """The adapter of a Denoiser: the one that built it, else its family's, else the defaults of a network icr
    knows nothing about (a user's own architecture)."""
    from icrcli.models.adapter import Adapter
    own = getattr(den, "adapter", None)
    if own is not None:
        return own
    family = getattr(den, "family", None)
    if family in BUILTIN or family in FOLDERS or family in installed():
        return adapter(family)
    return Adapter()


def layer_candidates(den) -> list[str]:
    """The `--layer auto` candidates of a Denoiser's network, in forward order: its family's; for a network of
    no known family, the first built-in family whose candidates its module names hold (a user's DiT-like
    `blocks.N` gets DiT's). UserError when none does."""
    names = [n for n, _ in den.net.named_modules()]
    found = adapter_of(den).layer_candidates(names)
    for name in (*BUILTIN, *FOLDERS):
        if found:
            break
        found = adapter(name).layer_candidates(names)
    if not found:
        raise UserError(f"--layer auto knows the layers of the built-in architectures ({families_in_words(True)}) "
                        "only: name the layers to compare with --layer (repeatable; see `icr layers CKPT`).")
    return found

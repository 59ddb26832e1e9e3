"""The source of a user's own architecture (--arch), by content, for cache keys: editing `forward` must make the
next run recompute. Found without importing anything (no torch, no user code runs to key a cached result).

What is hashed (README "Your own architecture"):
- `path/to/file.py:Class`: every .py file in the folder of file.py (not its sub-folders);
- `pkg.module:build`: the module's file and every .py file of its top-level package, sub-packages included (a
  module outside a package: every .py file in its folder), as found on sys.path the way `import` would find it.
Names are relative to that folder, so moving the folder keeps the key; __pycache__ and hidden folders are left out.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path

from icrcli import cache
from icrcli.errors import UserError

_MAX_FILES = 5000


def is_user_arch(arch: str | None) -> bool:
    return bool(arch) and ":" in arch


def arch_source_sha256(spec: str) -> str:
    """The tree hash (cache.tree_sha256) of the source files `spec` (file.py:attr or module:attr) stands on."""
    root, files = source_files(spec)
    return cache.tree_sha256(files, root)


def source_files(spec: str) -> tuple[Path, list[Path]]:
    """(the folder, the .py files in it that are hashed) for an --arch spec."""
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        file = Path(target)
        if not file.is_file():
            raise UserError(f"--arch {spec!r}: no such file {file}.")
        folder = file.resolve().parent
        return folder, _py_files(folder, recursive=False)
    origin, package_root = _find_module(target, spec)
    if package_root is None:
        folder = origin.parent
        return folder, _py_files(folder, recursive=False)
    return package_root, _py_files(package_root, recursive=True)


def _find_module(name: str, spec: str) -> tuple[Path, Path | None]:
    """(the module's file, its top-level package's folder or None), located as `import` would (sys.path,
    package search paths) without executing any module."""
    parts = name.split(".")
    search = None
    top = None
    found = None
    for i, part in enumerate(parts):
        found = importlib.machinery.PathFinder.find_spec(part, search)
        if found is None:
            if parts[0] in sys.builtin_module_names or (i == 0 and _loaded_elsewhere(parts[0])):
                raise UserError(f"--arch {spec!r}: {name} is not a module of Python source files on sys.path, so "
                                "icr cannot key the cache on its code. Pass the file instead: --arch path/to/file.py:"
                                f"{spec.rpartition(':')[2]}.")
            raise UserError(f"--arch {spec!r}: no module {'.'.join(parts[:i + 1])} on sys.path. Check the name, "
                            "or pass the file: --arch path/to/file.py:NAME.")
        search = found.submodule_search_locations
        if i == 0 and search is not None:
            top = Path(list(search)[0]).resolve()
    if found.origin is None or not os.path.isfile(found.origin):
        raise UserError(f"--arch {spec!r}: {name} has no source file (a namespace package?); name the module that "
                        "defines it.")
    return Path(found.origin).resolve(), top


def _loaded_elsewhere(top: str) -> bool:
    return top in sys.modules and getattr(sys.modules[top], "__file__", None) is None


def _py_files(folder: Path, recursive: bool) -> list[Path]:
    if recursive:
        out = []
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            out += [Path(dirpath) / f for f in files if f.endswith(".py")]
            if len(out) > _MAX_FILES:
                break
    else:
        out = [p for p in folder.iterdir() if p.name.endswith(".py") and p.is_file()]
    if len(out) > _MAX_FILES:
        raise UserError(f"--arch: {folder} holds more than {_MAX_FILES} .py files, all of which would be hashed "
                        "into the cache key. Put your architecture in a folder of its own.")
    return sorted(out)

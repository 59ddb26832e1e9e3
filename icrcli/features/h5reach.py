"""What an HDF5 file reaches outside itself: external links, virtual datasets and external raw storage, each of which
makes h5py read another file (any file: /etc/passwd reads as numbers). icr refuses such inputs unless asked
(--follow-external), and then keys the cache on every file reached, by content."""

from __future__ import annotations

import os
from pathlib import Path

from icrcli.errors import UserError

FLAG = "--follow-external"
_MAX_FILES = 10000      # a file naming more targets than this is not a feature file


def outside(f) -> list[tuple[str, str, str]]:
    """(object name, how, target file name as written) for each thing in the open h5py.File `f` that reads another
    file, found without following any of them."""
    import h5py
    found: list[tuple[str, str, str]] = []

    def link(name, info):
        if len(found) > _MAX_FILES:
            return True
        try:
            _look(f, name, info, found)
        except Exception as e:  # noqa: BLE001 - an exception inside h5py's visit breaks its lock: stop, say it
            found.append((name, "an object that cannot be read", f"({type(e).__name__}: {e})"))
            return True
        return None

    f.visititems_links(link)
    return found


def _look(f, name: str, info, found: list) -> None:
    import h5py
    if isinstance(info, h5py.ExternalLink):
        found.append((name, "an external link", f"{info.filename}:{info.path}"))
    elif isinstance(info, h5py.HardLink):
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                for src in obj.virtual_sources():
                    if src.file_name != ".":
                        found.append((name, "a virtual dataset", f"{src.file_name}:{src.dset_name}"))
            for ext in obj.external or []:
                found.append((name, "external storage", _str(ext[0])))


def _str(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def refuse_outside(f, path: Path) -> None:
    """A UserError naming the first object of `f` that reads another file."""
    found = outside(f)
    if found:
        name, how, target = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"{path}: /{name} is {how} to {target}{more}: its data live in another file, which icr does "
                        f"not read unless asked. Copy the data into the file (h5repack, or h5py), or, with `icr score`, "
                        f"pass {FLAG} to read what it points to (every file reached is then part of the cache key).")


def reached_files(path: str | os.PathLike) -> list[Path]:
    """Every existing file `path` reaches, through any number of HDF5 files, sorted; a target that does not exist
    is a UserError. Relative names are tried next to the file that names them and in the working directory (where
    HDF5 looks), and both are counted when both exist."""
    import h5py
    todo, seen = [Path(path).resolve()], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if len(seen) > _MAX_FILES:
            raise UserError(f"{path} reaches more than {_MAX_FILES} files; that is not a feature file.")
        if not h5py.is_hdf5(p):
            continue
        try:
            with h5py.File(p, "r") as f:
                found = outside(f)
        except OSError as e:
            raise UserError(f"{p} (reached from {path}) cannot be opened as HDF5 ({e}).") from None
        for name, how, target in found:
            file = target.rsplit(":", 1)[0] if how != "external storage" else target
            hits = _locate(file, p.parent)
            if not hits:
                raise UserError(f"{p}: /{name} is {how} to {target}, which does not exist. Fix the link or copy "
                                "the data into the file.")
            todo += hits
    return sorted(seen - {Path(path).resolve()})


def _locate(name: str, base: Path) -> list[Path]:
    given = Path(name)
    cands = [given] if given.is_absolute() else [base / given, Path.cwd() / given]
    return list(dict.fromkeys(c.resolve() for c in cands if c.is_file()))

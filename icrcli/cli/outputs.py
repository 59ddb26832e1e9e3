"""Where a command may write: an output path is checked against the command's inputs and its own kind of
output before any work starts.

Rules (README "Safety"):
- never an input: the same resolved path (symlinks followed), the same file under another name (a hard link:
  same st_dev and st_ino), or a path inside an input folder (a diffusers model, an image folder);
- never a folder, nor a device, pipe or socket (/dev/null: writing a temp file and renaming it over the output
  would put a plain file in its place), and only where files can be created (the nearest existing folder is tried with a probe file);
- an existing file is replaced only if it is icr's own output of the same kind: a feature file (HDF5 with
  icr's format mark; `extract --overwrite` replaces one of another configuration, never anything else), a
  result (a JSON object with "version" and one of RESULT_MARKS) or Fisher directions (a 2-D little-endian
  float64 C-order .npy with no more rows than columns, the shape `score --directions` writes). An empty file holds nothing
  to lose and may be replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from icrcli.errors import UserError
from icrcli.report.mark import is_plot as _is_plot

KINDS = ("features", "result", "directions", "csv", "plot", "summary", "stats")
SUMMARY_MARK = b"<!-- icr summary"   # the first line of every Markdown summary icr writes (report.summary)
# Every JSON result icr writes has "version", and one of these: score "icr" and "eigenvalues", sweep, timeline
# and probe "schema", extract's summary "config_key".
RESULT_MARKS = frozenset({"icr", "eigenvalues", "schema", "config_key"})
_RESULT_MAX_BYTES = 1 << 30      # a result holds D eigenvalues; anything bigger is not one of ours
_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FEATURE_FORMAT = "icr-features"  # featurefile.FORMAT_NAME (not imported: features/ sits above this level)
STATS_FORMAT = "icr-stats"       # statsfile.FORMAT (not imported: stats/ sits above this level)
_PARTS_PREFIXES = ("config.json", "chunk-")   # what extraction keeps in OUT.parts/ (and its temp names)

Input = tuple[str, str | os.PathLike | None]   # (what it is, e.g. "the checkpoint"; its path)


def check_output(out: str | os.PathLike, flag: str, inputs: Iterable[Input], kind: str) -> Path:
    """Refuse (UserError) to write `out`, given on the command line as `flag` (e.g. "-o", "--directions"),
    if it is or lies in one of `inputs`, is a folder, cannot be created, or already holds something that is
    not icr's own output of `kind` (one of KINDS). Returns `out` as a Path. Writes nothing but a probe file."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out).expanduser()
    named = f"{flag} {out}"
    targets = [out] + ([out.with_name(out.name + ".parts"), out.with_name(out.name + ".lock")]
                       if kind == "features" else [])
    for label, path in inputs:
        if path is None or str(path) in ("", "-"):
            continue
        for target in targets:
            clash = _clash(target, Path(path).expanduser(), removed_folder=target.name.endswith(".parts"))
            if clash:
                by = "" if target == out else f" (its by-product {target.name})"
                raise UserError(f"{named}{by} {clash} {label} ({path}); icr never writes over its inputs. Choose "
                                "another path.")
    if out.is_dir():
        raise UserError(f"{named} is a folder; give the path of a file to write (e.g. {out / _example(kind)}).")
    if out.exists() and not out.is_file():
        # a device (/dev/null), pipe or socket: icr writes a temp file and renames it over the output, which would
        # put a plain file in its place (as root, /dev/null itself)
        raise UserError(f"{named} is not a regular file (a device, pipe or socket), and icr writes its outputs as "
                        "files. Use -o - for stdout (e.g. `-o - > /dev/null`), or give the path of a file.")
    _check_writable(out, named)
    if out.is_file() and out.stat().st_size > 0 and not _is_own(out, kind):
        raise UserError(f"{named} exists and is not {_WHAT[kind]}; icr replaces only its own outputs{_HOW[kind]}. "
                        "Remove it yourself if it may go, or choose another path.")
    if kind == "features":
        _check_parts(out.with_name(out.name + ".parts"), named)
    return out


_WHAT = {"features": "an icr feature file", "result": "an icr result (a JSON object with icr's result keys)",
         "directions": "Fisher directions written by icr (a 2-D float64 .npy)",
         "csv": "a CSV written by icr sweep/timeline",
         "plot": "a plot drawn by icr (its metadata say Software or Creator: icr)",
         "summary": "a Markdown summary written by icr sweep/timeline",
         "stats": "statistics written by `icr score --stats-out` (an .npz)"}
_HOW = {"features": " (--overwrite replaces only an icr feature file of another configuration)",
        "result": "", "directions": "", "csv": "", "plot": "", "summary": "", "stats": ""}


def _example(kind: str) -> str:
    return {"features": "feats.h5", "result": "result.json", "directions": "directions.npy", "csv": "scan.csv",
            "plot": "scan.png", "summary": "summary.md", "stats": "stats.npz"}[kind]


def _clash(target: Path, given: Path, removed_folder: bool = False) -> str | None:
    """How writing `target` would touch the input `given`: 'is', 'is another name of', 'lies inside', or for a
    folder icr may remove, 'holds'; None if it would not."""
    t, g = target.resolve(), given.resolve()
    if t == g:
        return "is"
    if removed_folder and t in g.parents:
        return "holds"
    g_id = _file_id(g)
    if g_id is not None and _file_id(t) == g_id:
        return "is another name of"         # a hard link, or the same file reached through a mount
    if g_id is not None and g.is_dir():
        if g in t.parents:
            return "lies inside"
        for parent in t.parents:            # the folder reached by another route (a bind mount)
            pid = _file_id(parent)
            if pid is not None and pid == g_id:
                return "lies inside"
    return None


def _file_id(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_writable(out: Path, named: str) -> None:
    """The nearest existing folder above `out` must be a folder in which a file can be created."""
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{named} cannot be written: {folder} is a file, not a folder. Choose another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".icr-probe-")
    except OSError as e:
        raise UserError(f"{named} cannot be written: cannot create files in {folder} ({e.strerror or e}). "
                        "Choose a folder you can write to.") from None
    os.close(fd)
    os.unlink(probe)


def _is_own(path: Path, kind: str) -> bool:
    try:
        return {"features": _is_feature_file, "result": _is_result, "directions": _is_directions,
                "csv": _is_scan_csv, "plot": _is_plot, "summary": _is_summary, "stats": _is_stats}[kind](path)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_feature_file(path: Path) -> bool:
    if _head(path, 8) != _HDF5_MAGIC:
        return False
    import h5py
    try:
        with h5py.File(path, "r") as f:
            mark = f.attrs.get("format")
    except Exception:   # noqa: BLE001 - a damaged HDF5 file is not ours to replace, whatever h5py raises
        return False
    return (mark.decode() if isinstance(mark, bytes) else mark) == FEATURE_FORMAT


def _is_result(path: Path) -> bool:
    if path.stat().st_size > _RESULT_MAX_BYTES or not _head(path, 64).lstrip().startswith(b"{"):
        return False
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    return isinstance(obj, dict) and "version" in obj and bool(RESULT_MARKS & obj.keys())


def _is_scan_csv(path: Path) -> bool:
    """A CSV a scan wrote: its header is report.table.CSV_COLUMNS (spelled here so that checking an output imports nothing)."""
    return _head(path, 64).startswith(b"layer,sigma,step,checkpoint,icr,")


def _is_summary(path: Path) -> bool:
    """A Markdown summary a scan wrote (--summary): it starts with icr's mark."""
    return _head(path, len(SUMMARY_MARK)) == SUMMARY_MARK


def _is_stats(path: Path) -> bool:
    """An .npz whose `meta` says icr-stats (statsfile.FORMAT, spelled here so that checking an output imports nothing)."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        return isinstance(meta, dict) and meta.get("format") == STATS_FORMAT
    except Exception:   # noqa: BLE001 - not an npz, or not ours: not ours to replace
        return False


def _is_directions(path: Path) -> bool:
    import numpy as np
    with open(path, "rb") as f:
        if f.read(6) != _NPY_MAGIC:
            return False
        f.seek(0)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            return False
        shape, fortran, dtype = read_header(f)
        header_end = f.tell()
    return (len(shape) == 2 and not fortran and dtype == np.dtype("<f8") and shape[0] <= shape[1]
            and path.stat().st_size == header_end + 8 * shape[0] * shape[1])


def _check_parts(parts: Path, named: str) -> None:
    """Extraction keeps finished chunks in OUT.parts/ and removes that folder when done (or on --overwrite):
    refuse if something else is there."""
    if not parts.exists() and not parts.is_symlink():
        return
    ok = parts.is_dir() and not parts.is_symlink() and all(
        p.is_file() and p.name.startswith(_PARTS_PREFIXES) for p in parts.iterdir())
    if not ok:
        raise UserError(f"{named}: {parts} exists and is not an unfinished icr extraction, and icr would remove "
                        "it. Move it away, or choose another -o.")

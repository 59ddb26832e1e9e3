"""icr's mark on the plots it draws, and how a plot is known as icr's: -o/--plot/--grid replace only a file
that carries it (icrcli.cli.outputs)."""

from __future__ import annotations

from pathlib import Path


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


PLOT_CREATOR = "icr"     # what icr's plots carry as their Software (PNG) or Creator (SVG, PDF), then the version
_TAIL_BYTES = 1 << 20   # a PDF's information dictionary is written near its end


def plot_metadata(suffix: str, version: str) -> dict:
    """The metadata matplotlib's savefig writes into a plot of this suffix so that is_plot knows it as icr's."""
    mark = f"{PLOT_CREATOR} {version}"
    return {"Software": mark} if suffix.lower() == ".png" else {"Creator": mark}


def is_plot(path: Path) -> bool:
    """A plot icr drew: its PNG text chunk Software, or its SVG/PDF Creator, starts with "icr " (plot_metadata;
    the memorization grid's PNG says Software: icr). A figure anyone else made with matplotlib is not ours."""
    head = _head(path, 4096)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"tEXtSoftware\x00" + PLOT_CREATOR.encode() in head
    if head.lstrip().startswith(b"<?xml") and b"<svg" in head:
        return b"<dc:creator>\n     <cc:Agent>\n      <dc:title>" + PLOT_CREATOR.encode() + b" " in head
    if head.startswith(b"%PDF"):
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            return b"/Creator (" + PLOT_CREATOR.encode() + b" " in f.read()
    return False

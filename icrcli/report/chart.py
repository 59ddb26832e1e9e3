"""A small terminal chart of one curve (ICR against sigma or step), drawn with characters for stderr."""

from __future__ import annotations

import math


def _positions(xs: list[float], width: int, log_x: bool) -> list[int]:
    if log_x:
        pos = [x for x in xs if x > 0]
        floor = min(pos) / 2 if pos else 1.0  # sigma = 0 sits half a decade left of the smallest level
        xs = [math.log10(x if x > 0 else floor) for x in xs]
    lo, hi = min(xs), max(xs)
    span = hi - lo or 1.0
    return [round((x - lo) / span * (width - 1)) for x in xs]


def curve_chart(xs: list[float], ys: list[float], *, width: int = 56, height: int = 8, log_x: bool = False,
                x_label: str = "sigma", y_label: str = "ICR") -> str:
    """Rows of text: a dot per point, the minimum drawn as 'o' and marked below the axis."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    cols = _positions(xs, width, log_x)
    lo, hi = min(ys), max(ys)
    span = hi - lo or 1.0
    rows = [[" "] * width for _ in range(height)]
    j = ys.index(lo)
    for i, (c, y) in enumerate(zip(cols, ys)):
        r = height - 1 - round((y - lo) / span * (height - 1))
        rows[r][c] = "o" if i == j else "•"
    lines = []
    for r, row in enumerate(rows):
        label = f"{hi:.4f}" if r == 0 else f"{lo:.4f}" if r == height - 1 else ""
        lines.append(f"{label:>8} │{''.join(row)}")
    lines.append(" " * 9 + "└" + "─" * width)
    marker = [" "] * width
    marker[cols[j]] = "^"
    lines.append(" " * 10 + "".join(marker).rstrip() + f" min {y_label} {lo:.4f} at {x_label} {xs[j]:g}")
    axis = f"{x_label} {xs[0]:g}" + ("(log)" if log_x else "")
    right = f"{xs[-1]:g}"
    lines.append(" " * 10 + axis + " " * max(1, width - len(axis) - len(right)) + right)
    return "\n".join(lines)

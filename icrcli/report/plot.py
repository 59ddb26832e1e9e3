"""Plots of saved scan results (matplotlib, the optional extra `icr[plot]`). Each function takes a result dict as
`icr sweep` / `icr timeline` write it and never recomputes, so `icr plot RESULT.json` redraws any result."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrcli.errors import UserError

FORMATS = (".png", ".svg", ".pdf")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("Plots need matplotlib: pip install 'icr[plot]' (or pip install matplotlib).") from None
    matplotlib.use("Agg")  # files only: never open a window, work on headless CI machines
    import matplotlib.pyplot as plt
    return plt


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"--plot {path}: the file name must end in {', '.join(FORMATS)} (the format follows it).")


def _x_positions(sigmas: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Sigma on a log axis; sigma = 0 (augmentation only) drawn half a decade left of the smallest level."""
    pos = sigmas[sigmas > 0]
    zero_at = float(pos.min()) / 10 ** 0.5 if pos.size else 1.0
    return np.where(sigmas > 0, sigmas, zero_at), (zero_at if (sigmas == 0).any() else None)


def _by_layer(levels: list[dict], name=lambda r: r.get("layer") or "") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in levels:
        out.setdefault(name(r), []).append(r)
    return {k: sorted(v, key=lambda r: r["sigma"]) for k, v in out.items()}


def _series_of(result: dict) -> tuple[dict[str, list[dict]], str]:
    """The sweep's curves by layer, or by augmentation (and layer) when it scanned several: (curves, what the
    heatmap's rows are)."""
    if len(result.get("augments") or []) < 2:
        return _by_layer(result["levels"]), "layer"
    many = len(result.get("layers") or []) > 1
    return (_by_layer(result["levels"], lambda r: f"{r.get('augment')} · {r.get('layer')}" if many
                      else str(r.get("augment"))), "augmentation")


def _icr_curve(ax, x: np.ndarray, y: np.ndarray, ci: list, label: str, at: list[str]):
    """ICR against x: the line, its interval band when every point has one, a star at the minimum (`at` names
    each point's place, for the legend)."""
    line, = ax.plot(x, y, "o-", ms=4, label=label)
    if all(ci):
        lo, hi = np.array(ci, float).T
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0, label=f"{label}: interval")
    j = int(np.nanargmin(y))
    ax.plot([x[j]], [y[j]], "*", ms=14, color=line.get_color(), mec="black", ls="none",
            label=f"lowest {label}, {at[j]}")
    return line


def _legend_below(fig, axes: list) -> None:
    """One legend for every axis, outside them, under the plot: it never covers a point or a band."""
    handles, labels = [], []
    for a in axes:
        if a is not None:
            h, lab = a.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=7,
                   frameon=False)


def sweep_figure(result: dict):
    """The sweep's figure: ICR against sigma (log axis), one line per layer, interval bands, the minimum starred;
    probe accuracy on a second axis with its argmax marked, when the sweep has it; plus a layer x sigma heatmap
    panel when there are several layers."""
    plt = _pyplot()
    layers, rows = _series_of(result)
    grid = len(layers) > 1
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(11 if grid else 6.4, 5.2), squeeze=False,
                             layout="constrained")
    ax = axes[0][0]
    acc_ax = None
    for name, recs in layers.items():
        s = np.array([r["sigma"] for r in recs], float)
        x, zero_at = _x_positions(s)
        y = np.array([r["icr"] for r in recs], float)
        line = _icr_curve(ax, x, y, [r.get("icr_ci") for r in recs], f"ICR {name}" if grid else "ICR",
                          [f"σ={v:g}" for v in s])
        acc = np.array([np.nan if r.get("probe_test_accuracy") is None else r["probe_test_accuracy"]
                        for r in recs], float)
        if not np.isnan(acc).all():
            acc_ax = acc_ax or ax.twinx()
            acc_ax.plot(x, acc, "s--", ms=3, color=line.get_color(), alpha=0.7,
                        label=f"probe {name}" if grid else "probe accuracy")
            k = int(np.nanargmax(acc))   # the paper's claim: the probe's best level is ICR's lowest
            acc_ax.plot([x[k]], [acc[k]], "^", ms=11, color=line.get_color(), mec="black", ls="none",
                        label=f"best probe accuracy, σ={s[k]:g}" + (f" ({name})" if grid else ""))
            ax.axvline(x[k], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    if zero_at is not None:
        ticks = [t for t in ax.get_xticks() if t > zero_at * 2]
        ax.set_xticks([zero_at, *ticks], ["0", *[f"{t:g}" for t in ticks]])
        ax.set_xlim(zero_at / 2, x.max() * 2)
    ax.set_xlabel("σ (EDM units, data in [-1, 1])")
    ax.set_ylabel("ICR (lower is cleaner)")
    if acc_ax is not None:
        acc_ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(_title(result), fontsize=9)
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax, acc_ax])
    if grid:
        _heatmap(axes[0][1], result, layers, rows)
    return fig


def plot_sweep(result: dict, path: str | Path) -> Path:
    """Draw a sweep result into `path` (sweep_figure)."""
    return _draw(sweep_figure, result, path)


def _heatmap(ax, result: dict, layers: dict[str, list[dict]], rows: str = "layer") -> None:
    sigmas = sorted({r["sigma"] for r in result["levels"]})
    names = list(layers)
    z = np.full((len(names), len(sigmas)), np.nan)
    for i, name in enumerate(names):
        for r in layers[name]:
            z[i, sigmas.index(r["sigma"])] = r["icr"]
    im = ax.imshow(z, aspect="auto", cmap="viridis_r", origin="lower")
    ax.set_xticks(range(len(sigmas)), [f"{s:.3g}" for s in sigmas], rotation=60, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    i, j = np.unravel_index(np.nanargmin(z), z.shape)
    ax.plot([j], [i], "*", ms=14, color="white", mec="black")
    ax.set_xlabel("σ")
    ax.set_title(f"ICR by {rows} and σ (★ best)", fontsize=9)
    ax.figure.colorbar(im, ax=ax, label="ICR")


def timeline_figure(result: dict):
    """The timeline's figure: ICR against training step (one series per sigma) with interval bands and the gate
    thresholds, trace_s and trace_xi below; the memorization ratio on a second axis when the timeline has it."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.4, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]},
                                 layout="constrained")
    series: dict[tuple, list[dict]] = {}
    for p in result["points"]:
        series.setdefault((p["sigma"], p.get("layer") or ""), []).append(p)
    gates = result.get("gates") or {}
    mem_ax = None
    for (sigma, layer), pts in series.items():
        pts = sorted(pts, key=lambda p: p["step"])
        st = np.array([p["step"] for p in pts], float)
        y = np.array([p["icr"] for p in pts], float)
        line = _icr_curve(ax, st, y, [p.get("icr_ci") for p in pts], f"ICR σ={sigma:g}",
                          [f"step {p['step']}" for p in pts])
        _rise_gate(ax, st, y, gates.get("fail_on_rise"), line.get_color(), sigma, gates.get("on") == "intervals")
        bx.plot(st, [p["trace_s"] for p in pts], "o-", ms=3, color=line.get_color(), label=f"trace Σ_s σ={sigma:g}")
        bx.plot(st, [p["trace_xi"] for p in pts], "s--", ms=3, color=line.get_color(), alpha=0.7,
                label=f"trace Σ_ξ σ={sigma:g}")
        mem = [p.get("memorization_ratio") for p in pts]
        if any(m is not None for m in mem):
            mem_ax = mem_ax or ax.twinx()
            mem_ax.plot(st, [np.nan if m is None else m for m in mem], "^:", color="crimson",
                        label="memorization ratio")
            mem_ax.set_ylabel("memorization ratio", color="crimson")
    if gates.get("fail_above") is not None:
        ax.axhline(gates["fail_above"], color="black", ls="--", lw=1, label=f"--fail-above {gates['fail_above']:g}")
    ax.set_ylabel("ICR (lower is cleaner)")
    ax.set_title(_title(result), fontsize=9)
    ax.grid(alpha=0.3)
    bx.set_xlabel("training step")
    bx.set_ylabel("trace")
    bx.set_yscale("log")
    bx.grid(alpha=0.3)
    _legend_below(fig, [ax, mem_ax, bx])
    return fig


def _rise_gate(ax, steps: np.ndarray, icr: np.ndarray, pct: float | None, color, sigma: float,
               on_intervals: bool) -> None:
    """--fail-on-rise PCT: the level the ICR may not rise above, drawn from the minimum on (on intervals, the
    gate fails only when the rise is also beyond them: said in the label)."""
    if pct is None or not len(icr):
        return
    j = int(np.nanargmin(icr))
    level = icr[j] * (1 + pct / 100)
    ax.hlines(level, steps[j], steps.max() if steps.max() > steps[j] else steps[j] + 1, colors=[color],
              linestyles="--", lw=1, label=f"--fail-on-rise {pct:g}%: ICR {level:.4f} (σ={sigma:g})"
              + (", and beyond the intervals" if on_intervals else ""))


def plot_timeline(result: dict, path: str | Path) -> Path:
    """Draw a timeline result into `path` (timeline_figure)."""
    return _draw(timeline_figure, result, path)


def _draw(figure, result: dict, path: str | Path) -> Path:
    """figure(result) saved into `path` (checked first: only over icr's own plots), then closed."""
    path = Path(path)
    check_plot_path(path)
    plt = _pyplot()
    fig = figure(result)
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    """Save with icr's mark in the metadata (a later -o/--plot may replace only a file that has it), atomically."""
    from icrcli import __version__
    from icrcli.cache import atomic_write
    from icrcli.report.mark import plot_metadata
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), metadata=plot_metadata(path.suffix, __version__))


def _title(result: dict) -> str:
    """What the plot is of: the checkpoint or run, the layer, N, K, the augmentation and sigma."""
    what = result.get("checkpoint") or result.get("folder") or ""
    head = f"{result.get('kind', '')}: {Path(str(what)).name}" if what else result.get("kind", "")
    recs = result.get("levels") or result.get("points") or []
    views = (result.get("options") or {}).get("views") or {}
    layers = list(dict.fromkeys(r.get("layer") for r in recs if r.get("layer")))
    parts = [f"layer {layers[0]}" if len(layers) == 1 else f"{len(layers)} layers" if layers else None]
    n = recs[0].get("n_images", views.get("images")) if recs else views.get("images")
    k = recs[0].get("n_views", views.get("views")) if recs else views.get("views")
    parts += [f"N={n}" if n is not None else None, f"K={k}" if k is not None else None,
              _augment_part(result, views.get("augment"))]
    if result.get("kind") == "sweep" and result.get("argmin"):
        am = result["argmin"]
        parts.append(f"lowest at σ={am['sigma']:g}" + (f" ({am['augment']})" if am.get("augment")
                                                       and len(result.get("augments") or []) > 1 else ""))
    elif result.get("kind") == "timeline":
        sig = sorted({r["sigma"] for r in recs})
        parts.append("σ=" + ", ".join(f"{x:g}" for x in sig) if sig else None)
    return head + "\n" + ", ".join(p for p in parts if p) if any(parts) else head


def _augment_part(result: dict, asked) -> str | None:
    """The augmentation of the title; every one of a sweep's augmentation x sigma grid."""
    augs = result.get("augments") or ([asked] if isinstance(asked, str) else asked or [])
    if not augs:
        return None
    return ("augment " if len(augs) == 1 else "augments ") + ", ".join(map(str, augs))


def plot_result(result: dict, path: str | Path, where: str = "the result") -> Path:
    """Redraw a saved sweep or timeline result, checked first (checkresult: a UserError if it is not one)."""
    from icrcli.report.checkresult import check_result
    result = check_result(result, where)
    return (plot_sweep if result["kind"] == "sweep" else plot_timeline)(result, path)

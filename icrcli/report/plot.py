"""Plots of saved scan results (matplotlib, the optional extra `icr[plot]`): one figure for every scan, keyed by its
axis. Each function takes a typed result (icrcli.scans.result) or its dict as `icr sweep` / `icr timeline` write it
and never recomputes, so `icr plot RESULT.json` redraws any result."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrcli.errors import UserError
from icrcli.scans.result import ScanResult, SweepResult, TimelineResult

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


def _series_of(result) -> tuple[dict[str, list[dict]], str]:
    """The scan's curves by name (the parts of the series key that differ: a sweep's layer, or augmentation and
    layer when it scanned several), each in axis order, and what a heatmap's rows are."""
    result = as_result(result)
    names = result.series_names()
    rows = "augmentation" if isinstance(result, SweepResult) and result.grid else \
        " and ".join(k for k in result.axis.series if k != "augment") or "series"
    return {names[k]: recs for k, recs in result.groups().items()}, rows


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


def scan_figure(result):
    """A scan's figure, keyed by its axis (scans.engine.Axis): ICR against the axis (log for sigma, sigma = 0
    drawn apart), one line per series, interval bands, each minimum starred; then what the result holds: probe
    accuracy on a second axis with its argmax marked, the memorization ratio, the gate thresholds; a series x
    axis heatmap beside a sweep of several series, the traces under a timeline."""
    plt = _pyplot()
    result = as_result(result)
    axis, names = result.axis, result.series_names()
    groups = result.groups()
    traces = isinstance(result, TimelineResult)
    heat = not traces and len(groups) > 1
    if traces:
        fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.4, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]},
                                     layout="constrained")
    else:
        fig, axes = plt.subplots(1, 2 if heat else 1, figsize=(11 if heat else 6.4, 5.2), squeeze=False,
                                 layout="constrained")
        ax, bx = axes[0][0], None
    gates = result.gates if isinstance(result, TimelineResult) else {}
    twin = {}       # the second y axes, made when first needed
    zero_at, x = None, np.zeros(0)
    for key, recs in groups.items():
        v = np.array([r[axis.name] for r in recs], float)
        x, zero_at = _x_positions(v) if axis.log else (v, None)
        y = np.array([r["icr"] for r in recs], float)
        label = result.series_label(key, names[key])
        at = [axis.at(r[axis.name]) for r in recs]      # each point's place as the records say it (step 300)
        line = _icr_curve(ax, x, y, [r.get("icr_ci") for r in recs], label, at)
        _probe_curve(ax, twin, x, at, recs, line.get_color(), names[key] if len(groups) > 1 else None)
        if traces:
            _rise_gate(ax, x, y, gates.get("fail_on_rise"), line.get_color(), key[0], gates.get("on") == "intervals")
            _trace_curves(bx, x, recs, line.get_color(), key[0])
        _memorization(ax, twin, x, recs)
    if gates.get("fail_above") is not None:
        ax.axhline(gates["fail_above"], color="black", ls="--", lw=1, label=f"--fail-above {gates['fail_above']:g}")
    if axis.log:
        ax.set_xscale("log")
        if zero_at is not None:
            ticks = [t for t in ax.get_xticks() if t > zero_at * 2]
            ax.set_xticks([zero_at, *ticks], ["0", *[f"{t:g}" for t in ticks]])
            ax.set_xlim(zero_at / 2, x.max() * 2)
    (bx or ax).set_xlabel(axis.label)
    ax.set_ylabel("ICR (lower is cleaner)")
    ax.set_title(_title(result), fontsize=9)
    ax.grid(alpha=0.3)
    if bx is not None:
        bx.set_ylabel("trace")
        bx.set_yscale("log")
        bx.grid(alpha=0.3)
    _legend_below(fig, [ax, twin.get("probe"), twin.get("memorization"), bx])
    if heat:
        _heatmap(axes[0][1], result, {names[k]: recs for k, recs in groups.items()}, _series_of(result)[1])
    return fig



def _probe_curve(ax, twin: dict, x: np.ndarray, at: list[str], recs: list[dict], color, name: str | None) -> None:
    """Probe accuracy on a second axis, its argmax marked and a line down to the ICR axis (the paper's claim:
    the probe's best level is ICR's lowest)."""
    acc = np.array([np.nan if r.get("probe_test_accuracy") is None else r["probe_test_accuracy"] for r in recs],
                   float)
    if np.isnan(acc).all():
        return
    if "probe" not in twin:
        twin["probe"] = ax.twinx()
        twin["probe"].set_ylabel("linear-probe test accuracy")
    acc_ax = twin["probe"]
    acc_ax.plot(x, acc, "s--", ms=3, color=color, alpha=0.7, label=f"probe {name}" if name else "probe accuracy")
    k = int(np.nanargmax(acc))
    acc_ax.plot([x[k]], [acc[k]], "^", ms=11, color=color, mec="black", ls="none",
                label=f"best probe accuracy, {at[k]}" + (f" ({name})" if name else ""))
    ax.axvline(x[k], color=color, ls=":", lw=1)


def _memorization(ax, twin: dict, x: np.ndarray, recs: list[dict]) -> None:
    mem = [r.get("memorization_ratio") for r in recs]
    if all(m is None for m in mem):
        return
    if "memorization" not in twin:
        twin["memorization"] = ax.twinx()
        twin["memorization"].set_ylabel("memorization ratio", color="crimson")
        if "probe" in twin:     # a timeline with --probe and --memorization: the second right axis beside the first
            twin["memorization"].spines.right.set_position(("axes", 1.2))
    twin["memorization"].plot(x, [np.nan if m is None else m for m in mem], "^:", color="crimson",
                              label="memorization ratio")


def _trace_curves(bx, x: np.ndarray, recs: list[dict], color, sigma: float) -> None:
    bx.plot(x, [r["trace_s"] for r in recs], "o-", ms=3, color=color, label=f"trace Σ_s σ={sigma:g}")
    bx.plot(x, [r["trace_xi"] for r in recs], "s--", ms=3, color=color, alpha=0.7, label=f"trace Σ_ξ σ={sigma:g}")


def plot_scan(result, path: str | Path) -> Path:
    """Draw a scan result into `path` (scan_figure)."""
    return _draw(scan_figure, result, path)



def _heatmap(ax, result, layers: dict[str, list[dict]], rows: str = "layer") -> None:
    xname = result.axis.name
    xs = sorted({r[xname] for r in result.records})
    names = list(layers)
    z = np.full((len(names), len(xs)), np.nan)
    for i, name in enumerate(names):
        for r in layers[name]:
            z[i, xs.index(r[xname])] = r["icr"]
    im = ax.imshow(z, aspect="auto", cmap="viridis_r", origin="lower")
    ax.set_xticks(range(len(xs)), [f"{s:.3g}" for s in xs], rotation=60, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    i, j = np.unravel_index(np.nanargmin(z), z.shape)
    ax.plot([j], [i], "*", ms=14, color="white", mec="black")
    ax.set_xlabel(result.axis.symbol)
    ax.set_title(f"ICR by {rows} and {result.axis.symbol} (★ best)", fontsize=9)
    ax.figure.colorbar(im, ax=ax, label="ICR")


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


def _draw(figure, result, path: str | Path) -> Path:
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


def as_result(result) -> ScanResult:
    """A typed scan result (scans.result) of a result or its dict."""
    return result if isinstance(result, ScanResult) else ScanResult.from_dict(result)


def _title(result: ScanResult) -> str:
    """What the plot is of: the checkpoint or run, the layer, N, K, the augmentation, and where the minimum is
    (a sweep) or which sigmas are followed (a timeline)."""
    what = result.source
    head = f"{result.kind}: {Path(what).name}" if what else result.kind
    recs, views = result.records, result.views
    layers = list(dict.fromkeys(r.get("layer") for r in recs if r.get("layer")))
    parts = [f"layer {layers[0]}" if len(layers) == 1 else f"{len(layers)} layers" if layers else None]
    n = recs[0].get("n_images", views.get("images")) if recs else views.get("images")
    k = recs[0].get("n_views", views.get("views")) if recs else views.get("views")
    parts += [f"N={n}" if n is not None else None, f"K={k}" if k is not None else None,
              _augment_part(result, views.get("augment"))]
    if isinstance(result, SweepResult) and result.argmin:
        am = result.argmin
        parts.append(f"lowest at σ={am['sigma']:g}" + (f" ({am['augment']})" if am.get("augment")
                                                       and result.grid else ""))
    elif isinstance(result, TimelineResult):
        sig = sorted({r["sigma"] for r in recs})
        parts.append("σ=" + ", ".join(f"{x:g}" for x in sig) if sig else None)
    return head + "\n" + ", ".join(p for p in parts if p) if any(parts) else head


def _augment_part(result: ScanResult, asked) -> str | None:
    """The augmentation of the title; every one of a sweep's augmentation x sigma grid."""
    augs = (result.augments if isinstance(result, SweepResult) else []) or \
        ([asked] if isinstance(asked, str) else asked or [])
    if not augs:
        return None
    return ("augment " if len(augs) == 1 else "augments ") + ", ".join(map(str, augs))


def plot_result(result, path: str | Path, where: str = "the result") -> Path:
    """Redraw a saved scan result (a dict or a typed result), checked first (checkresult: a UserError if it is
    not one)."""
    from icrcli.report.checkresult import check_result
    return plot_scan(check_result(result, where), path)

"""A saved sweep or timeline result as a short Markdown summary (`--summary FILE`): the table, the verdict, the
gate result and the plot's path, fit for a CI job's summary page ($GITHUB_STEP_SUMMARY and the like).
From the result only, never recomputed."""

from __future__ import annotations

from functools import singledispatch
from pathlib import Path

from icrcli.scans.result import ScanResult, SweepResult, TimelineResult

MARK = "<!-- icr summary"   # outputs.SUMMARY_MARK: the first line, so a rerun may replace its own file


def _ci(r: dict) -> str:
    ci = r.get("icr_ci")
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _views(result: ScanResult) -> str:
    v = result.views
    recs = result.records
    n = recs[0].get("n_images", v.get("images")) if recs else v.get("images")
    k = recs[0].get("n_views", v.get("views")) if recs else v.get("views")
    aug = v.get("augment", "?")
    return f"N={n}, K={k}, augment {', '.join(aug) if isinstance(aug, list) else aug}"


def timeline_summary(result: TimelineResult, plot: str | Path | None = None) -> str:
    lines = [f"{MARK}: timeline -->", f"## icr timeline: {Path(result.folder).name}", "",
             f"{len(result.points)} points ({_views(result)})" + _stopped(result.stopped), ""]
    for s in result.series:
        lines += [f"### sigma {s['sigma']:g}, layer {s.get('layer')}", "",
                  _row(["step", "ICR", "interval", "trace_s", "trace_xi", "checkpoint"]),
                  _row(["---:", "---:", "---", "---:", "---:", "---"])]
        for p in (p for p in result.points if p["sigma"] == s["sigma"]):
            best = " **(min)**" if p["step"] == s["trend"]["step_min"] else ""
            lines.append(_row([p["step"], f"{p['icr']:.4f}{best}", _ci(p), f"{p['trace_s']:.4g}",
                               f"{p['trace_xi']:.4g}", f"`{Path(p['checkpoint']).name}`"]))
        lines += ["", f"**Verdict:** {s['trend']['description']}.", ""]
    lines += _gates(result.gates)
    if plot is not None:
        lines += [f"**Plot:** `{plot}`", ""]
    return "\n".join(lines)


def _stopped(why: str | None) -> str:
    return {None: "", "until": "; the watch reached --until", "idle": "; the watch ended after --idle",
            "fail-fast": "; stopped at the first failed gate (--fail-fast)",
            "interrupted": "; interrupted (Ctrl-C): the points done so far",
            "terminated": "; terminated (SIGTERM): the points done so far"}.get(why, f"; stopped: {why}")


def _gates(g: dict) -> list[str]:
    asked = [f"--fail-on-rise {g['fail_on_rise']:g}" if g.get("fail_on_rise") is not None else None,
             f"--fail-above {g['fail_above']:g}" if g.get("fail_above") is not None else None]
    asked = [a for a in asked if a]
    if not asked:
        return ["**Gates:** none set.", ""]
    head = f"**Gates** ({', '.join(asked)}, on {g.get('on', 'point estimates')}): "
    if g.get("failed"):
        return [head + "**FAILED**", "", *[f"- {m}" for m in g["failed"]], ""]
    held = [f"- {m}" for m in g.get("held_by_intervals") or []]
    return [head + "passed", "", *held, *([""] if held else [])]


def sweep_summary(result: SweepResult, plot: str | Path | None = None) -> str:
    best = result.argmin
    many = result.grid     # an augmentation x sigma grid: a column for it
    probe = bool(result.probe)
    lines = [f"{MARK}: sweep -->", f"## icr sweep: {Path(result.checkpoint).name}", "",
             f"{len(result.levels)} levels ({_views(result)})" + _stopped(result.stopped), "",
             _row((["augment"] if many else []) + ["layer", "sigma", "ICR", "interval", "trace_s", "trace_xi"] +
                  (["probe accuracy"] if probe else [])),
             _row((["---"] if many else []) + ["---", "---:", "---:", "---", "---:", "---:"] +
                  (["---:"] if probe else []))]
    for r in result.levels:
        mark = " **(min)**" if result.is_argmin(r) else " ≈ tied" if r.get("tied_with_min") else ""
        acc = [f"{r['probe_test_accuracy']:.3f}"] if probe else []
        lines.append(_row(([r.get("augment")] if many else []) + [r["layer"], f"{r['sigma']:g}",
                           f"{r['icr']:.4f}{mark}", _ci(r), f"{r['trace_s']:.4g}", f"{r['trace_xi']:.4g}", *acc]))
    lines.append("")
    if best:
        lines += [f"**Verdict:** lowest ICR {best['icr']:.4f} at sigma {best['sigma']:g}, layer {best['layer']}"
                  + (f", --augment {best['augment']}" if many else "") + ".", ""]
    for t in result.ties:
        others = [f"{x:g}" for x in t.get("tied_sigmas") or [] if x != t["argmin_sigma"]]
        if others:
            lines += [f"**Tied with the minimum** ({t['layer']}" + (f", {t['augment']}" if many else "")
                      + f"; paired jackknife interval of the rise reaches 0): sigma {', '.join(others)}.", ""]
    for a in result.probe:
        where = ", ".join(str(x) for x in ((a.get("augment"),) if many else ()) + (a.get("layer"),))
        lines += [f"**Probe** ({where}): best accuracy {a['best_accuracy']:.3f} at sigma "
                  f"{a['argmax_accuracy_sigma']:g}; ICR lowest at sigma {a['argmin_icr_sigma']:g} "
                  f"(McNemar p = {a['mcnemar_p']:.2g}).", ""]
    if plot is not None:
        lines += [f"**Plot:** `{plot}`", ""]
    return "\n".join(lines)


def summary(result, plot: str | Path | None = None) -> str:
    """The Markdown summary of a scan result (typed, or its dict)."""
    from icrcli.report.plot import as_result
    return _summary(as_result(result), plot)


@singledispatch
def _summary(result: ScanResult, plot: str | Path | None = None) -> str:
    """Any scan: its table per series and the minimum."""
    axis, best = result.axis, result.lowest()
    lines = [f"{MARK}: {result.kind} -->", f"## icr {result.kind}: {Path(result.source).name}", "",
             f"{len(result.records)} records ({_views(result)})" + _stopped(result.stopped), ""]
    for key, recs in result.groups().items():
        lines += [f"### {result.table_title(key, '')}", "", _row([axis.name, "ICR", "interval"]),
                  _row(["---:", "---:", "---"])]
        lines += [_row([r[axis.name], f"{r['icr']:.4f}" + (" **(min)**" if r is best else ""), _ci(r)]) for r in recs]
        lines.append("")
    if plot is not None:
        lines += [f"**Plot:** `{plot}`", ""]
    return "\n".join(lines)


_summary.register(SweepResult, sweep_summary)
_summary.register(TimelineResult, timeline_summary)

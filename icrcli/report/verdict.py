"""What a scan's result says in words, beside its tables: per series (a timeline's trend and last rise) and for the
whole scan (a sweep's minimum, its ties, the augmentation grid and the probe; a timeline's gates held by the
intervals). From the typed result only (scans.result); a scan that adds nothing here gets its tables alone."""

from __future__ import annotations

from functools import singledispatch

from icrcli.scans.result import ScanResult, SweepResult, TimelineResult


@singledispatch
def series_lines(result: ScanResult, key: tuple) -> list[str]:
    """Lines said after the table of the series `key`."""
    return []


@singledispatch
def scan_lines(result: ScanResult) -> list[str]:
    """Lines said after every table."""
    return []


@series_lines.register
def _(result: TimelineResult, key: tuple) -> list[str]:
    series = result.trend_of(key)
    if series is None:
        return []
    out = [series["trend"]["description"]]
    last = (series.get("rises") or [None])[-1]
    if last is not None and last["difference"] > 0:
        out.append(f"the last point's rise from the minimum: {last['difference']:+.4f}, paired jackknife "
                   f"interval [{last['ci'][0]:+.4f}, {last['ci'][1]:+.4f}]"
                   + (" (beyond it)" if last["beyond_interval"] else " (reaches 0: not a sure rise)"))
    return out


@scan_lines.register
def _(result: TimelineResult) -> list[str]:
    return [f"gate held: {msg}" for msg in result.gates.get("held_by_intervals") or []]


@scan_lines.register
def _(result: SweepResult) -> list[str]:
    """The minimum and the levels tied with it per cell; with several augmentations, the grid; the probe."""
    many_layers, many_augs = len(result.layers) > 1, result.grid
    out = []
    for t in result.ties:
        where = "".join([f" (--augment {t['augment']})" if many_augs else "",
                         f" (layer {t['layer']})" if many_layers else ""])
        tied = t["tied_sigmas"]
        if tied is None:
            out.append(f"lowest ICR{where} at sigma {t['argmin_sigma']:g} (too few images for an interval)")
        else:
            others = [f"{s:g}" for s in tied if s != t["argmin_sigma"]]
            out.append(f"lowest ICR{where} at sigma {t['argmin_sigma']:g}; "
                       + (f"statistically tied with it ({100 * t['confidence']:g}% paired jackknife interval of "
                          f"the rise reaches 0): sigma {', '.join(others)}" if others
                          else "every other level is higher beyond its paired interval"))
    if many_augs:
        for g in result.augment_grid:
            ratio = "-" if g["residual_ratio"] is None else f"{g['residual_ratio']:.3g}"
            out.append(f"  --augment {g['augment']}{', layer ' + g['layer'] if many_layers else ''}: lowest ICR "
                       f"{g['icr_min']:.4f} at sigma {g['argmin_sigma']:g}; tr Sigma_xi / tr Sigma_s at sigma "
                       f"{g['lowest_sigma']:g}: {ratio}")
    best = result.argmin
    if best:
        out.append(f"lowest ICR {best['icr']:.4f} at sigma {best['sigma']:g}"
                   + (f", layer {best['layer']}" if many_layers else "")
                   + (f", --augment {best['augment']}" if many_augs else ""))
    for agree in result.probe:
        verdict = ("they agree" if agree["agree"] else "within two standard errors" if agree["within_se"]
                   else "they DISAGREE")
        where = " ".join(x for x in (agree["augment"] if many_augs else "",
                                     agree["layer"] if many_layers else "") if x)
        name = agree["protocol"]["name"] if agree.get("protocol") else ""
        out.append(f"probe{' ' + where if where else ''} ({name}): "
                   f"best accuracy {agree['best_accuracy']:.3f} at sigma {agree['argmax_accuracy_sigma']:g}, ICR "
                   f"lowest at sigma {agree['argmin_icr_sigma']:g} (accuracy {agree['accuracy_at_argmin_icr']:.3f}, "
                   f"McNemar p = {agree['mcnemar_p']:.2g}): {verdict}")
    return out

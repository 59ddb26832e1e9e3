"""What a series of ICR values says: where its minimum is, how far the last value has risen since, and whether
that rise is beyond the noise of the estimate.

In a data-limited run, ICR turning upward after a minimum comes before memorization (paper Sec. 5): the step
of the minimum and the rise since are the early-warning numbers `icr timeline` reports and CI jobs gate on.
With intervals (`--ci`: each point's jackknife interval at --confidence), a rise counts only when the last
point's interval lies wholly above the minimum's: two overlapping intervals cannot tell the rise from noise
(at 64 images one checkpoint alone moves ICR by 20% or more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WARNING = "the paper's early warning of memorization in data-limited runs"


@dataclass(frozen=True)
class Trend:
    shape: str              # "single point" | "falling" | "at its minimum" | "rising after a minimum"
    step_min: int           # step (or x) of the lowest ICR
    icr_min: float
    icr_last: float
    rise_pct: float         # 100 (last - min) / min; 0 when the last point is the minimum
    monotone: bool          # never rose from one point to the next
    rise_beyond_ci: bool | None  # last's interval lies wholly above the minimum's (None without intervals)
    ci_min: list | None = None   # [low, high] of the minimum's interval (None without intervals)
    ci_last: list | None = None  # [low, high] of the last point's interval

    def describe(self) -> str:
        if self.shape == "single point":
            return f"one point so far (ICR {self.icr_last:.4f})"
        if self.shape == "falling":
            return f"steadily falling, lowest ICR {self.icr_min:.4f} at the last step {self.step_min}"
        if self.shape == "at its minimum":
            return f"at its lowest ICR {self.icr_min:.4f} (step {self.step_min}), after ups and downs"
        rise = (f"minimum ICR {self.icr_min:.4f} at step {self.step_min}, then up {self.rise_pct:.1f}% to "
                f"{self.icr_last:.4f}")
        if self.rise_beyond_ci is None:
            return f"{rise}: without intervals a rise cannot be told from noise (add --ci)"
        if not self.rise_beyond_ci:
            return f"{rise}, within the intervals: within noise"
        return f"{rise}, beyond both intervals: {WARNING}"

    def as_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def trend(steps: list[int], icr: list[float], ci: list[list[float]] | None = None) -> Trend:
    """The trend of ICR over ordered steps (ascending). `ci`, when given, holds [low, high] per point."""
    if not steps or len(steps) != len(icr):
        raise ValueError("trend needs one ICR per step, and at least one step")
    j = min(range(len(icr)), key=lambda i: (icr[i], steps[i]))
    last = icr[-1]
    rise = 100.0 * (last - icr[j]) / icr[j] if icr[j] > 0 else 0.0
    monotone = all(b <= a for a, b in zip(icr, icr[1:]))
    beyond = None
    if ci is not None and j != len(icr) - 1 and ci[j] and ci[-1]:
        beyond = ci[-1][0] > ci[j][1]
    if len(icr) == 1:
        shape = "single point"
    elif j == len(icr) - 1:
        shape = "falling" if monotone else "at its minimum"
    else:
        shape = "rising after a minimum"
    ci_min, ci_last = (list(ci[j]), list(ci[-1])) if ci is not None and ci[j] and ci[-1] else (None, None)
    return Trend(shape, steps[j], icr[j], last, rise, monotone, beyond, ci_min, ci_last)


def gate(t: Trend, fail_on_rise: float | None, fail_above: float | None, points: bool = False) -> list[str]:
    """The CI conditions that failed (empty: pass). Exit 3 when any did.

    With intervals (and not `points`), a condition fails only beyond them: a rise above PCT percent whose last
    interval lies wholly above the minimum's, a last ICR whose whole interval lies above X. Without intervals,
    or with `points` (--point-estimates), the point values alone decide."""
    on_ci = t.ci_last is not None and not points
    failed = []
    if fail_on_rise is not None and t.rise_pct > fail_on_rise:
        if not on_ci or t.rise_beyond_ci:
            sure = ", beyond both intervals" if on_ci else ""
            failed.append(f"ICR rose {t.rise_pct:.1f}% above its minimum at step {t.step_min}{sure} "
                          f"(--fail-on-rise {fail_on_rise:g})")
    if fail_above is not None and t.icr_last > fail_above:
        if not on_ci or t.ci_last[0] > fail_above:
            whole = f" (its interval [{t.ci_last[0]:.4f}, {t.ci_last[1]:.4f}] too)" if on_ci else ""
            failed.append(f"the last ICR {t.icr_last:.4f}{whole} is above --fail-above {fail_above:g}")
    return failed


def held(t: Trend, fail_on_rise: float | None, fail_above: float | None, points: bool = False) -> list[str]:
    """The conditions a point estimate crosses but the intervals do not: said beside a passing gate."""
    if t.ci_last is None or points:
        return []
    out = []
    if fail_on_rise is not None and t.rise_pct > fail_on_rise and not t.rise_beyond_ci:
        out.append(f"ICR is {t.rise_pct:.1f}% above its minimum at step {t.step_min}, more than --fail-on-rise "
                   f"{fail_on_rise:g}, but within the intervals: not counted (--point-estimates counts it)")
    if fail_above is not None and t.icr_last > fail_above >= t.ci_last[0]:
        out.append(f"the last ICR {t.icr_last:.4f} is above --fail-above {fail_above:g}, but its interval reaches "
                   f"{t.ci_last[0]:.4f}: not counted (--point-estimates counts it)")
    return out

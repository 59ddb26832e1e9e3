"""What a series of ICR values says: where its minimum is, and how far the last value has risen since.

In a data-limited run, ICR turning upward after a minimum comes before memorization (paper Sec. 5): the step
of the minimum and the rise since are the early-warning numbers `icr timeline` reports and CI jobs gate on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Trend:
    shape: str              # "single point" | "falling" | "at its minimum" | "rising after a minimum"
    step_min: int           # step (or x) of the lowest ICR
    icr_min: float
    icr_last: float
    rise_pct: float         # 100 (last - min) / min; 0 when the last point is the minimum
    monotone: bool          # never rose from one point to the next
    rise_beyond_ci: bool | None  # last's interval lies wholly above the minimum's (None without intervals)

    def describe(self) -> str:
        if self.shape == "single point":
            return f"one point so far (ICR {self.icr_last:.4f})"
        if self.shape == "falling":
            return f"steadily falling, lowest ICR {self.icr_min:.4f} at the last step {self.step_min}"
        if self.shape == "at its minimum":
            return f"at its lowest ICR {self.icr_min:.4f} (step {self.step_min}), after ups and downs"
        sure = {True: ", beyond both intervals", False: ", within the intervals", None: ""}[self.rise_beyond_ci]
        return (f"minimum ICR {self.icr_min:.4f} at step {self.step_min}, then up {self.rise_pct:.1f}% to "
                f"{self.icr_last:.4f}{sure}: the paper's early warning of memorization in data-limited runs")

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
    return Trend(shape, steps[j], icr[j], last, rise, monotone, beyond)


def gate(t: Trend, fail_on_rise: float | None, fail_above: float | None) -> list[str]:
    """The CI conditions that failed (empty: pass). Exit 3 when any did."""
    failed = []
    if fail_on_rise is not None and t.rise_pct > fail_on_rise:
        failed.append(f"ICR rose {t.rise_pct:.1f}% above its minimum at step {t.step_min} "
                      f"(--fail-on-rise {fail_on_rise:g})")
    if fail_above is not None and t.icr_last > fail_above:
        failed.append(f"the last ICR {t.icr_last:.4f} is above --fail-above {fail_above:g}")
    return failed

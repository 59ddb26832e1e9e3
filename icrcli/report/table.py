"""Tables of scan records for people (rich, on stderr) and for spreadsheets (CSV)."""

from __future__ import annotations

import csv
import io

from rich.table import Table

# The columns a person reads first; the JSON has every key of the score result.
COLUMNS = ("icr", "icr_ci", "trace_s", "trace_xi", "mean_lambda")
CSV_COLUMNS = ("layer", "sigma", "step", "checkpoint", "icr", "icr_low", "icr_high", "icr_se", "trace_s",
               "trace_xi", "trace_h", "mean_lambda", "effective_rank", "lidar", "n_images", "n_views", "dim",
               "probe_test_accuracy", "memorization_ratio", "features")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"
    return str(v)


def records_table(records: list[dict], x_key: str, title: str, best: dict | None = None) -> Table:
    """One row per record: the x (sigma or step), ICR with its interval, traces, mean lambda; `best` marked."""
    extra = [c for c in ("probe_test_accuracy", "memorization_ratio") if any(c in r for r in records)]
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    t.add_column(x_key, justify="right")
    for c in ("ICR", "interval", "trace_s", "trace_xi", "mean λ", *[c.split("_")[0] for c in extra], ""):
        t.add_column(c, justify="right")
    for r in records:
        ci = r.get("icr_ci")
        # tied: its paired interval of the rise from the minimum reaches 0 (scans.ties)
        mark = "◀ min" if best is not None and r is best else "≈ tied" if r.get("tied_with_min") else ""
        t.add_row(_fmt(r.get(x_key)), _fmt(r.get("icr")), f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-",
                  _fmt(r.get("trace_s")), _fmt(r.get("trace_xi")), _fmt(r.get("mean_lambda")),
                  *[_fmt(r.get(c)) for c in extra], mark)
    return t


def csv_text(records: list[dict]) -> str:
    """CSV of the records' scalar columns (interval split into icr_low/icr_high)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        ci = r.get("icr_ci") or [None, None]
        row = {**r, "icr_low": ci[0], "icr_high": ci[1]}
        w.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    return buf.getvalue()

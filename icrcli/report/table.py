"""Tables of scan records for people (rich, on stderr) and for spreadsheets (CSV)."""

from __future__ import annotations

import csv
import io

from rich.table import Table

from icrcli.stats.statistics import TABLE


def _interval_columns(s) -> tuple[str, str, str]:
    return f"{s.name}_low", f"{s.name}_high", f"{s.name}_se"


# The columns a person reads first, and the scan CSV's, from the statistics' declarations
# (stats.statistics.TABLE); the JSON has every key of the score result.
COLUMNS = tuple(s.name for s in TABLE if s.table)
CSV_COLUMNS = ("layer", "sigma", "step", "checkpoint",
               *(k for s in TABLE if s.csv for k in (s.name, *(_interval_columns(s) if s.jackknife else ()))),
               "probe_test_accuracy", "memorization_ratio", "features")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"
    return str(v)


def records_table(records: list[dict], x_key: str, title: str, best: dict | None = None) -> Table:
    """One row per record: the x (sigma or step), the statistics TABLE shows (ICR with its interval, mean lambda,
    the traces), the checks' figures; `best` marked."""
    extra = [c for c in ("probe_test_accuracy", "memorization_ratio") if any(c in r for r in records)]
    shown = [s for s in TABLE if s.table]
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    t.add_column(x_key, justify="right")
    for c in (*(h for s in shown for h in ((s.table, "interval") if s.table_ci else (s.table,))),
              *[c.split("_")[0] for c in extra], ""):
        t.add_column(c, justify="right")
    for r in records:
        # tied: its paired interval of the rise from the minimum reaches 0 (scans.ties)
        mark = "◀ min" if best is not None and r is best else "≈ tied" if r.get("tied_with_min") else ""
        cells = []
        for s in shown:
            cells.append(_fmt(r.get(s.name)))
            if s.table_ci:
                ci = r.get(f"{s.name}_ci")
                cells.append(f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-")
        t.add_row(_fmt(r.get(x_key)), *cells, *[_fmt(r.get(c)) for c in extra], mark)
    return t


def csv_text(records: list[dict]) -> str:
    """CSV of the records' scalar columns (each interval split into <name>_low/<name>_high; empty where a record
    has none, e.g. saved before the companions had intervals)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        row = dict(r)
        for s in TABLE:
            if s.csv and s.jackknife:
                row[f"{s.name}_low"], row[f"{s.name}_high"] = r.get(f"{s.name}_ci") or (None, None)
        w.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    return buf.getvalue()

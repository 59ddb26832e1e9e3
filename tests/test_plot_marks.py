"""Plots say what the numbers say: interval bands, the gate thresholds, the probe's argmax beside ICR's argmin,
a legend outside the data, and a title with layer, N, K, augmentation and sigma (report.plot, from results)."""

import pytest

pytest.importorskip("matplotlib")

from icrcli.report.plot import scan_figure  # noqa: E402


def _sweep(ci=True):
    icr = {0.0: 0.4, 0.1: 0.3, 1.0: 0.35, 10.0: 0.7}
    acc = {0.0: 0.5, 0.1: 0.6, 1.0: 0.9, 10.0: 0.55}
    levels = [{"layer": "dec.8x8_block1", "sigma": s, "icr": v, "icr_ci": [v - 0.05, v + 0.05] if ci else None,
               "trace_s": 1.0, "trace_xi": 2.0, "probe_test_accuracy": acc[s], "n_images": 64, "n_views": 4}
              for s, v in icr.items()]
    return {"kind": "sweep", "checkpoint": "run/ck.pt", "levels": levels,
            "argmin": {"layer": "dec.8x8_block1", "sigma": 0.1, "icr": 0.3},
            "options": {"views": {"images": 64, "views": 4, "augment": "crop:pad=2"}}}


def _timeline(gates):
    pts = [{"step": st, "sigma": 0.5, "layer": "dec.8x8_block1", "icr": v, "icr_ci": [v - 0.01, v + 0.01],
            "trace_s": 1.0, "trace_xi": 2.0, "n_images": 64, "n_views": 2, "checkpoint": f"ckpt-{st}.pt"}
           for st, v in ((100, 0.5), (200, 0.3), (300, 0.36))]
    return {"kind": "timeline", "folder": "runs/a", "points": pts, "gates": gates,
            "options": {"views": {"images": 64, "views": 2, "augment": "paper"}}}


def _labelled(fig, start):
    return [a for ax in fig.axes for a in ax.get_children() if str(a.get_label()).startswith(start)]


def _legend_clear_of_every_axis(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(r)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(r)), ax


def test_sweep_plot_marks_the_probe_argmax_beside_the_icr_argmin():
    fig = scan_figure(_sweep())
    (star,) = _labelled(fig, "lowest ICR")
    (tri,) = _labelled(fig, "best probe accuracy")
    assert star.get_xdata()[0] == pytest.approx(0.1) and "σ=0.1" in star.get_label()
    assert tri.get_xdata()[0] == pytest.approx(1.0) and tri.get_ydata()[0] == pytest.approx(0.9)
    assert _labelled(fig, "ICR: interval")                       # the band, since every level has an interval
    title = fig.axes[0].get_title()
    for part in ("layer dec.8x8_block1", "N=64", "K=4", "augment crop:pad=2", "σ=0.1"):
        assert part in title
    _legend_clear_of_every_axis(fig)
    assert not _labelled(scan_figure(_sweep(ci=False)), "ICR: interval")


def test_timeline_plot_draws_the_gate_thresholds():
    fig = scan_figure(_timeline({"fail_on_rise": 10.0, "fail_above": 0.45, "on": "intervals"}))
    (rise,) = _labelled(fig, "--fail-on-rise 10%")
    (seg,) = rise.get_segments()
    assert seg[0][1] == pytest.approx(0.3 * 1.1) and seg[0][0] == 200     # from the minimum on, 10% above it
    assert "beyond the intervals" in rise.get_label()
    (above,) = _labelled(fig, "--fail-above 0.45")
    assert above.get_ydata()[0] == pytest.approx(0.45)
    assert _labelled(fig, "ICR σ=0.5: interval")
    for part in ("timeline: a", "layer dec.8x8_block1", "N=64", "K=2", "augment paper", "σ=0.5"):
        assert part in fig.axes[0].get_title()
    _legend_clear_of_every_axis(fig)
    assert not _labelled(scan_figure(_timeline({})), "--fail")


def test_markdown_summary_of_a_sweep_lists_every_level_the_verdict_and_the_plot():
    from icrcli.report.summary import summary
    r = {**_sweep(), "probe": [{"augment": "crop:pad=2", "layer": "dec.8x8_block1", "best_accuracy": 0.9,
                                "argmax_accuracy_sigma": 1.0, "argmin_icr_sigma": 0.1, "accuracy_at_argmin_icr": 0.6,
                                "mcnemar_p": 0.01}],
         "ties": [{"augment": "crop:pad=2", "layer": "dec.8x8_block1", "argmin_sigma": 0.1,
                   "tied_sigmas": [0.1, 1.0], "confidence": 0.95}]}
    for lv in r["levels"]:
        lv["tied_with_min"] = lv["sigma"] in (0.1, 1.0)
    md = summary(r, "s.png")
    assert md.startswith("<!-- icr summary: sweep")
    rows = [x for x in md.splitlines() if x.startswith("| dec.8x8_block1 |")]
    assert [x.split(" | ")[1] for x in rows] == ["0", "0.1", "1", "10"]
    assert "0.3000 **(min)**" in rows[1] and rows[2].endswith("| 0.900 |")
    assert "0.3500 ≈ tied" in rows[2] and "tied" not in rows[0] + rows[3]
    assert "lowest ICR 0.3000 at sigma 0.1" in md and "best accuracy 0.900 at sigma 1" in md and "`s.png`" in md
    assert "Tied with the minimum" in md and "sigma 1." in md and "McNemar p = 0.01" in md

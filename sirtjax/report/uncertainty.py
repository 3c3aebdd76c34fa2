"""The dose-uncertainty ensemble in the report: a table of intervals beside the nominal values, and a tornado chart.

Both take the JSON-ready summary of :func:`sirtjax.dosimetry.uncertainty.summarise` (as report.json holds it).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from sirtjax.dosimetry.uncertainty import METRICS
from sirtjax.report.figures import png_bytes
from sirtjax.report.html import Table
from sirtjax.report.tables import column_title, fmt

_ALL, _ONE = "#0b3d5c", "#7fa7c4"


def uncertainty_table(summary: Sequence[dict], caption: str = "") -> Table:
    """Per VOI: each metric's nominal value with its 5-95 % interval, the source that widens the mean most, and how many
    plans left the VOI no voxel (the intervals are over the others)."""
    rows = []
    for v in summary:
        cells = [None if v[m]["nominal"] is None else
                 f"{fmt(v[m]['nominal'], 1)} [{fmt(v[m]['p5'], 1) or '–'}, {fmt(v[m]['p95'], 1) or '–'}]" for m in METRICS]
        dominant = v["mean_gy"]["dominant"]
        lost = f"{v['members_without_voxels']} of {v['members']}" if v["members_without_voxels"] else None
        rows.append((v["name"].replace("_", " "), *cells, None if dominant is None else dominant.replace("_", " "), lost))
    return Table(("VOI", *(column_title(m) for m in METRICS), "Widest source (mean)", "Plans without the VOI"),
                 tuple(rows), caption)


def tornado_png(summary: Sequence[dict], metric: str = "mean_gy", most: int = 4) -> bytes:
    """PNG tornado: per VOI (at most ``most``), the 5-95 % interval of ``metric`` with each source alone and with all
    together, around the nominal value (red line)."""
    vois = [v for v in summary if v[metric]["nominal"] is not None and v[metric]["p5"] is not None][:most]
    fig = Figure(figsize=(7, 1.0 + 1.6 * max(len(vois), 1)))
    axes = fig.subplots(max(len(vois), 1), 1, squeeze=False)[:, 0]
    for ax, voi in zip(axes, vois):
        m = voi[metric]
        rows = sorted(((s, r) for s, r in m["by_source"].items() if r["p5"] is not None), key=lambda sr: sr[1]["p95"] - sr[1]["p5"])
        rows.append(("all sources", {"p5": m["p5"], "p95": m["p95"]}))
        for i, (source, r) in enumerate(rows):
            ax.barh(i, r["p95"] - r["p5"], left=r["p5"], color=_ALL if source == "all sources" else _ONE)
        ax.axvline(m["nominal"], color="#c0392b", lw=1)
        ax.set_yticks(range(len(rows)), [s.replace("_", " ") for s, _ in rows], fontsize=8)
        ax.set_title(f"{voi['name'].replace('_', ' ')}: {column_title(metric)}, 5-95 % interval", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)

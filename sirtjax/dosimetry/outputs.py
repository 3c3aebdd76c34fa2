"""Files of a dose result: dose.nii.gz (Gy), dvh.csv, dvh.png (cumulative DVH per VOI), report.json."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sirtjax.dosimetry.statistics import VoiStatistics
from sirtjax.dosimetry.voxel import DoseResult
from sirtjax.io import write_volume
from sirtjax.outputs import write_json


def write_dvh_csv(stats: VoiStatistics, names: list[str], path: Path, quantity: str = "dose_gy") -> None:
    """Cumulative DVH table: column ``quantity`` (bin lower edges; e.g. bed_gy for a BED map's statistics),
    then per VOI the % of its volume at >= that value.

    Empty VOIs have empty cells.
    """
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([quantity] + [f"{n}_volume_pct" for n in names])
        for b, edge in enumerate(stats.dvh_edges_gy[:-1]):
            cells = ["" if not np.isfinite(v) else f"{100.0 * v:.4f}" for v in stats.cdvh_fraction[:, b]]
            writer.writerow([f"{edge:.6g}"] + cells)


def plot_dvh(stats: VoiStatistics, names: list[str], path: Path, title: str = "Cumulative DVH") -> None:
    """PNG with one cumulative DVH per non-empty VOI (volume % against dose Gy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    edges = stats.dvh_edges_gy[:-1]
    for i, name in enumerate(names):
        if stats.voxel_count[i] > 0:
            ax.step(edges, 100.0 * stats.cdvh_fraction[i], where="post", label=name)
    top = float(np.nanmax(stats.max_gy)) if np.any(stats.voxel_count > 0) else 1.0
    ax.set_xlim(0.0, max(top * 1.05, 1e-3))
    ax.set_ylim(0.0, 101.0)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume receiving at least the dose (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_dose_outputs(result: DoseResult, folder: Path, report: dict | None = None) -> list[Path]:
    """Write dose.nii.gz, dvh.csv, dvh.png and report.json (``report``, else ``result.report``) into folder; return
    their paths."""
    folder = Path(folder)
    names = list(result.voi_names)
    paths = [folder / "dose.nii.gz", folder / "dvh.csv", folder / "dvh.png", folder / "report.json"]
    write_volume(result.dose, paths[0], dtype=np.float32)
    write_dvh_csv(result.statistics, names, paths[1])
    title = f"Cumulative DVH ({result.model.upper()}, constants {result.constants.name})"
    plot_dvh(result.statistics, names, paths[2], title=title)
    write_json(result.report if report is None else report, paths[3])
    return paths


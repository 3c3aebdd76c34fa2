"""One evaluation of a prediction file against a reference file: the checks, the metrics and their JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sirtjax.errors import InputError
from sirtjax.metrics._inputs import as_labels
from sirtjax.metrics._labels import LabelMetrics, iter_label_metrics
from sirtjax.metrics._lesions import LesionDetection, lesion_detection
from sirtjax.metrics._rmsd import RMSDResult, rmsd
from sirtjax.volume import Volume, describe_grid, same_grid


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Per-label metrics of a prediction against a reference, and the lesion detection or the RMSD when asked for."""

    pred: Path
    ref: Path
    grid: str  # the reference grid, described
    labels: tuple[LabelMetrics, ...]
    lesions: LesionDetection | None = None
    rmsd: RMSDResult | None = None

    def to_json(self) -> dict:
        """A dict of plain JSON values (non-finite distances become None)."""
        out: dict = {"pred": str(self.pred), "ref": str(self.ref), "grid": self.grid,
                     "labels": [row.to_json() for row in self.labels]}
        if self.lesions is not None:
            out["lesions"] = self.lesions.to_json()
        if self.rmsd is not None:
            out["rmsd"] = self.rmsd.to_json()
        return out


def evaluate_files(pred: Path, ref: Path, *, lesions: bool = False, registration: bool = False,
                   on_start: Callable[[int], object] = lambda n: None, on_label: Callable[[], object] = lambda: None) -> Evaluation:
    """Read and check the two maps (same grid, integer labels) and evaluate PRED against REF; InputError naming the file.

    ``lesions``: one row for all lesions together and the lesion-wise detection; ``registration``: the RMSD of label
    maps (liver 1, landmarks >= 2). ``on_start(n)`` hears the number of labels, ``on_label()`` each one done.
    """
    from sirtjax.io import read_volume

    if registration and lesions:
        raise InputError(pred, "--rmsd and --lesions evaluate different maps; choose one")
    p_vol, r_vol = read_volume(pred), read_volume(ref)
    if not same_grid(p_vol, r_vol):
        raise InputError(pred, f"grid differs from the reference {ref}: {grid_mismatch(p_vol, r_vol)}")
    for path, vol in ((pred, p_vol), (ref, r_vol)):
        try:
            as_labels(vol.array, "image")
        except ValueError as exc:
            raise InputError(path, str(exc).removeprefix("image is ")) from None
    if lesions:
        n, rows = iter_label_metrics(*(v.with_array(np.asarray(v.array) != 0) for v in (p_vol, r_vol)), labels=[1])
    else:
        n, rows = iter_label_metrics(p_vol, r_vol)
    on_start(n)
    labels = []
    for row in rows:
        labels.append(row)
        on_label()
    return Evaluation(pred, ref, describe_grid(r_vol), tuple(labels),
                      lesion_detection(p_vol, r_vol) if lesions else None, rmsd(p_vol, r_vol) if registration else None)


def grid_mismatch(a: Volume, b: Volume) -> str:
    """Which of shape, spacing, origin and direction differ between two Volumes, with values."""
    parts = []
    if a.shape != b.shape or not np.allclose(a.spacing_mm, b.spacing_mm, atol=1e-6):
        parts.append(f"{describe_grid(a)} vs {describe_grid(b)}")
    if not np.allclose(a.origin_mm, b.origin_mm, atol=1e-3):
        parts.append(f"origin {_vec(a.origin_mm)} vs {_vec(b.origin_mm)} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        parts.append("direction matrices differ")
    return "; ".join(parts) or "corner voxels differ by more than 1e-3 mm"


def _vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"

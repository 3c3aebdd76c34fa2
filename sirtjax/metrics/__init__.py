"""Segmentation and registration metrics with one definition each (DESIGN.md "Metrics").

Masks and label maps are (z, y, x) arrays (nonzero = object, 0 = background) given as Volumes or
as arrays plus ``spacing_mm`` in ITK (x, y, z) order. Distances are in mm, volumes in ml; empty
masks give documented values (``inf`` distances when exactly one side is empty), never NaN.
"""

from sirtjax.metrics._centres import mass_centre_mm, mcd
from sirtjax.metrics._jacobian import JacobianStats, determinant_stats, jacobian_determinant, jacobian_stats
from sirtjax.metrics._labels import (
    LabelMetrics,
    dice,
    iter_label_metrics,
    label_metrics,
    mask_metrics,
    relative_volume,
    volume_ml,
)
from sirtjax.metrics._lesions import LesionDetection, lesion_detection, lesion_instances
from sirtjax.metrics._rmsd import RMSDResult, liver_mask, rmsd, rrmsd
from sirtjax.metrics._surface import SurfaceMetrics, assd, hausdorff, hausdorff95, surface_mask, surface_metrics

__all__ = [
    "JacobianStats",
    "LabelMetrics",
    "LesionDetection",
    "RMSDResult",
    "SurfaceMetrics",
    "assd",
    "determinant_stats",
    "dice",
    "hausdorff",
    "hausdorff95",
    "iter_label_metrics",
    "jacobian_determinant",
    "jacobian_stats",
    "label_metrics",
    "lesion_detection",
    "lesion_instances",
    "liver_mask",
    "mask_metrics",
    "mass_centre_mm",
    "mcd",
    "relative_volume",
    "rmsd",
    "rrmsd",
    "surface_mask",
    "surface_metrics",
    "volume_ml",
]

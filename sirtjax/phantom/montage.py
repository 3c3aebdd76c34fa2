"""A montage PNG of a study: orthogonal slices of every image with label contours.

Rows: MAA CT, MAA SPECT fused on the MAA CT, diagnostic CT, diagnostic MR, 90Y CT, 90Y PET fused
on the 90Y CT; columns: axial, coronal, sagittal slices through the liver centre. Slices are shown
in radiological orientation (patient right on the image left, anterior or superior at the top)
whatever the direction matrix of the grid (oblique grids are shown along their nearest axes).
A legend under the panels names the contour colours (liver, lungs, lesions) and the overlay colour map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from sirtjax.volume import Volume, index_to_world

ROWS = (
    ("maa_ct", None, "MAA CT (non-contrast)"),
    ("maa_ct", "maa_spect", "MAA SPECT on CT"),
    ("diag_ct", None, "diagnostic CT (contrast)"),
    ("diag_mr", None, "diagnostic T1 MR"),
    ("y90_ct", None, "90Y CT"),
    ("y90_ct", "y90_pet", "90Y PET on CT"),
)
CONTOURS = (("liver", "lime"), ("lungs", "deepskyblue"), ("lesions", "red"))


def to_lps_array(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The array reordered so its axes run along +S, +P, +L (nearest axes) and the spacing (z, y, x)."""
    d = np.asarray(vol.direction)
    arr = np.asarray(vol.array)
    world_axis = np.argmax(np.abs(d), axis=0)  # for index axis i (x, y, z): the world axis it follows
    order = [2 - int(np.flatnonzero(world_axis == w)[0]) for w in (2, 1, 0)]  # array axes for S, P, L
    arr = np.transpose(arr, order)
    spacing = np.asarray(vol.spacing_mm)[::-1][order]
    for ax, w in enumerate((2, 1, 0)):
        i = int(np.flatnonzero(world_axis == w)[0])
        if d[w, i] < 0:
            arr = np.flip(arr, axis=ax)
    return arr, spacing


def resample_like(vol: Volume, reference: Volume, order: int = 1) -> np.ndarray:
    """vol sampled at the voxel centres of reference (host scipy; 0 outside vol), shape reference.shape."""
    m = np.linalg.inv(index_to_world(vol)) @ index_to_world(reference)
    nz, ny, nx = reference.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k, np.ones_like(i)], axis=0).reshape(4, -1).astype(np.float32)
    src = (m.astype(np.float32) @ idx)[:3][::-1].reshape(3, nz, ny, nx)
    data = np.asarray(vol.array, np.float32)
    return ndimage.map_coordinates(data, src, order=order, mode="constant", cval=0.0)


def _window(name: str, arr: np.ndarray) -> tuple[float, float]:
    if name.endswith("_mr"):
        return 0.0, float(np.percentile(arr, 99.5))
    return -160.0, 240.0  # abdomen window W400 L40


def write_montage(images: dict[str, Volume], path: str | Path) -> Path:
    """Render the montage of a study's images (keyed by file stem) to a PNG at path."""
    fig = montage_figure(images)
    path = Path(path)
    fig.savefig(path, dpi=80, facecolor="black")
    return path


def montage_figure(images: dict[str, Volume]):
    """The montage of a study's images (keyed by file stem) as a matplotlib Figure (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = Figure(figsize=(12, 3.3 * len(ROWS) + 0.4), facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(ROWS), 3)
    for row, (base, overlay, title) in enumerate(ROWS):
        arr, sp = to_lps_array(images[base])
        liver, _ = to_lps_array(images[f"{base}_liver"])
        center = np.rint(ndimage.center_of_mass(liver > 0)).astype(int) if liver.any() else np.array(arr.shape) // 2
        labels = {k: to_lps_array(images[f"{base}_{k}"])[0] for k, _ in CONTOURS}
        hot = None
        if overlay is not None:
            hot = to_lps_array(images[base].with_array(resample_like(images[overlay], images[base])))[0]
        lo, hi = _window(base, arr)
        for col, axis in enumerate(("axial", "coronal", "sagittal")):
            ax = axes[row, col]
            ax.set_facecolor("black")
            cut = [slice(None)] * 3
            cut[col] = center[col]
            sl = lambda a: _orient(a[tuple(cut)], col)  # noqa: E731
            aspect = _aspect(sp, col)
            ax.imshow(sl(arr), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            if hot is not None:
                h = sl(hot)
                top = max(float(hot.max()), 1e-6)
                ax.imshow(np.ma.masked_less(h, 0.05 * top), cmap="hot", vmin=0, vmax=top, alpha=0.65, aspect=aspect, interpolation="bilinear")
            for name, color in CONTOURS:
                lab = sl(labels[name])
                if lab.any() and lab.min() != lab.max():
                    ax.contour(lab > 0, levels=[0.5], colors=color, linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title} - {axis}", color="white", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.035, top=0.97, wspace=0.03, hspace=0.12)
    handles = [Line2D([], [], color=color, lw=2.0, label=name) for name, color in CONTOURS]
    handles.append(Patch(facecolor="orange", edgecolor="none", label="SPECT / PET uptake (hot colour map)"))
    fig.legend(handles=handles, loc="lower center", ncols=len(handles), frameon=False, fontsize=9,
               labelcolor="white", bbox_to_anchor=(0.5, 0.0))
    return fig


def _orient(slice2d: np.ndarray, col: int) -> np.ndarray:
    """2D slice in display orientation: axial (P down, L right), coronal/sagittal (S up)."""
    return slice2d if col == 0 else slice2d[::-1]


def _aspect(spacing_zyx: np.ndarray, col: int) -> float:
    rows, cols = [(1, 2), (0, 2), (0, 1)][col]
    return float(spacing_zyx[rows] / spacing_zyx[cols])

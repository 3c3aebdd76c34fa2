"""Report figures as PNG bytes: fused anatomy/emission slices with VOI contours, registration checks, DVHs.

Every ``*_png`` function takes Volumes or plain arrays and returns the bytes of a PNG (matplotlib's
object-oriented API with the Agg canvas: no pyplot, no global figure state); ``fused_slices_figure``
and ``dvh_figure`` return the Figure itself (for callers that inspect or compose it). Slices are the
axial, coronal and sagittal planes through a centre point (default: the centroid of the first
contour's VOI, else the grid centre), drawn in mm with the true physical aspect ratio (see
:mod:`sirtjax.report.slices` for orientation conventions). Overlays and masks on another grid are
resampled onto the anatomy grid first (linear for images, nearest neighbour for masks). Each VOI has
one colour in every figure (:mod:`sirtjax.report.colours`); contours have a dark edge so that they
read on the CT and on the emission/dose colour map alike.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from sirtjax.preprocess import resample_to
from sirtjax.report.colours import voi_colours
from sirtjax.report.slices import VIEWS, Oriented, Slice2D, mask_center_mm, orient, plane
from sirtjax.volume import Volume, same_grid

CT_SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
_EDGE = [patheffects.withStroke(linewidth=3.0, foreground="black", alpha=0.7)]  # contours read on any background
_PANEL_HEIGHT_IN = 3.6
_DPI = 110


def png_bytes(fig: Figure) -> bytes:
    """Render a matplotlib Figure (built with the OO API) to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    return buf.getvalue()


def percentile_window(array, low_pct: float = 1.0, high_pct: float = 99.5) -> tuple[float, float]:
    """Display window (low, high) from percentiles of the finite voxels; (0, 1) for an empty/constant image."""
    a = np.asarray(array, np.float32)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(a, [low_pct, high_pct])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def _on_grid(vol: Volume, grid: Volume, order: int) -> Volume:
    return vol if same_grid(vol, grid) else resample_to(vol, grid, order=order)


def _centre(grid: Volume, masks: Sequence[Volume], center_mm) -> tuple[float, float, float]:
    if center_mm is not None:
        return tuple(float(c) for c in center_mm)
    for m in masks:
        c = mask_center_mm(m)
        if c is not None:
            return c
    return orient(grid).center_mm()


def _panels(fig: Figure, o: Oriented, index_xyz) -> list[tuple[object, str, Slice2D]]:
    """Three axes at one common scale (mm per pixel), widths proportional to each plane's physical width.

    Returns (ax, view, Slice2D) triples.
    """
    slices = [plane(o, v, index_xyz) for v in VIEWS]
    widths = [abs(s.extent[1] - s.extent[0]) for s in slices]
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for ax, s, view in zip(axes, slices, VIEWS):
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(view, fontsize=10, color="#333333")
        for (x, y, ha, va), letter in zip(((0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
                                           (0.5, 0.01, "center", "bottom"), (0.5, 0.99, "center", "top")), s.letters):
            ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="white", fontsize=8, alpha=0.8)
    return list(zip(axes, VIEWS, slices))


def _figure_for(o: Oriented, extra_width_in: float = 0.0) -> Figure:
    """A figure sized for three panels side by side at one common scale (the tallest panel sets the height)."""
    nz, ny, nx = o.array.shape[:3]
    sx, sy, sz = o.spacing_mm
    width_mm = 2 * nx * sx + ny * sy
    height_mm = max(ny * sy, nz * sz)
    width = float(np.clip(_PANEL_HEIGHT_IN * width_mm / height_mm + extra_width_in, 6.0, 16.0))
    height = float(np.clip((width - extra_width_in) * height_mm / width_mm, 2.0, 6.0))
    return Figure(figsize=(width, height + 0.7), layout="constrained")


def _draw_contours(ax, masks: list[tuple[str, Oriented, str]], index_xyz, view: str, linestyle: str = "solid"):
    for _, m, colour in masks:
        s = plane(m, view, index_xyz)
        if np.any(s.image > 0) and not np.all(s.image > 0):
            cs = ax.contour((s.image > 0).astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.4,
                            linestyles=linestyle, extent=s.extent, origin=s.origin)
            cs.set_path_effects(_EDGE)


def _legend(fig: Figure, entries: list[tuple[str, str, str]]) -> None:
    from matplotlib.lines import Line2D

    if entries:
        handles = [Line2D([], [], color=c, linestyle=ls, lw=2, label=n) for n, c, ls in entries]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False, fontsize=9)


def fused_slices_png(anatomy: Volume, **kwargs) -> bytes:
    """:func:`fused_slices_figure` as PNG bytes (same arguments)."""
    return png_bytes(fused_slices_figure(anatomy, **kwargs))


def fused_slices_figure(
    anatomy: Volume,
    *,
    overlay: Volume | None = None,
    contours: Mapping[str, Volume] | None = None,
    center_mm=None,
    anatomy_window: tuple[float, float] | None = CT_SOFT_TISSUE_WINDOW_HU,
    overlay_label: str = "",
    overlay_floor: float = 0.05,
) -> Figure:
    """Axial/coronal/sagittal slices of an anatomical image with an emission overlay and VOI contours (a Figure).

    Args:
      anatomy: CT (HU) or MR Volume, array (z, y, x); gives the display grid.
      overlay: SPECT/PET/dose Volume on any grid (resampled linearly onto the anatomy grid); drawn
        with a colour map above ``overlay_floor`` times its maximum, with a colour bar labelled
        ``overlay_label`` (give the units; the ticks are plain numbers, never a "1e6" multiplier or
        an offset, so scale the overlay to a readable unit first, e.g. MBq/ml). None: anatomy only.
      contours: VOI name -> label Volume (any grid; voxels > 0 are the VOI), drawn as outlines.
      center_mm: LPS point (mm) the three planes pass through; default the first VOI's centroid.
      anatomy_window: grey-level window (HU for CT); None: the 1st-99.5th percentile (MR).
    """
    contours = dict(contours or {})
    masks = {n: _on_grid(m, anatomy, 0) for n, m in contours.items()}
    o = orient(anatomy)
    idx = o.index_of(_centre(anatomy, list(masks.values()), center_mm))
    fig = _figure_for(o, 1.0 if overlay is not None else 0.0)
    lo, hi = anatomy_window if anatomy_window is not None else percentile_window(o.array)
    colour = voi_colours(masks)
    oriented_masks = [(n, orient(m), colour[n]) for n, m in masks.items()]
    ov = orient(_on_grid(overlay, anatomy, 1)) if overlay is not None else None
    vmax = float(np.max(ov.array)) if ov is not None else 0.0
    image = None
    for ax, view, s in _panels(fig, o, idx):
        ax.imshow(s.image, cmap="gray", vmin=lo, vmax=hi, extent=s.extent, origin=s.origin, interpolation="bilinear")
        if ov is not None and vmax > 0:
            e = plane(ov, view, idx).image
            shown = np.ma.masked_less_equal(e, overlay_floor * vmax)
            image = ax.imshow(shown, cmap="inferno", vmin=0, vmax=vmax, alpha=0.65, extent=s.extent, origin=s.origin,
                              interpolation="bilinear")
        _draw_contours(ax, oriented_masks, idx, view)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, shrink=0.8, pad=0.01, label=overlay_label)
        plain = ScalarFormatter(useOffset=False)
        plain.set_scientific(False)  # the label gives the unit: no "1e6" or "+1e3" above the bar
        bar.formatter = plain
        bar.update_ticks()
    _legend(fig, [(n, c, "solid") for n, _, c in oriented_masks])
    return fig


def checkerboard_png(
    fixed: Volume,
    warped: Volume,
    *,
    squares: int = 8,
    center_mm=None,
    fixed_window: tuple[float, float] | None = None,
    warped_window: tuple[float, float] | None = None,
    contour: Volume | None = None,
) -> bytes:
    """Checkerboard of a fixed image and a warped moving image on the same grid (registration check), as PNG.

    Alternate squares (``squares`` per plane side) show each image, each scaled to [0, 1] by its
    own window (default: percentiles, so CT against MR works): edges that continue across the
    squares mean good alignment. ``contour``, a label Volume, sets the default centre.
    """
    if not same_grid(fixed, warped):
        raise ValueError("checkerboard: the warped image must be on the fixed image's grid")
    if squares < 1:
        raise ValueError(f"squares must be >= 1, got {squares}")
    of, ow = orient(fixed), orient(warped)
    idx = of.index_of(_centre(fixed, [contour] if contour is not None else [], center_mm))
    wf = fixed_window or percentile_window(of.array)
    ww = warped_window or percentile_window(ow.array)
    fig = _figure_for(of)
    for ax, view, s in _panels(fig, of, idx):
        a = np.clip((s.image - wf[0]) / (wf[1] - wf[0]), 0, 1)
        b = np.clip((plane(ow, view, idx).image - ww[0]) / (ww[1] - ww[0]), 0, 1)
        rows = (np.arange(a.shape[0]) * squares // a.shape[0])[:, None]
        cols = (np.arange(a.shape[1]) * squares // a.shape[1])[None, :]
        board = np.where((rows + cols) % 2 == 0, a, b)
        ax.imshow(board, cmap="gray", vmin=0, vmax=1, extent=s.extent, origin=s.origin, interpolation="bilinear")
    return png_bytes(fig)


def contour_overlay_png(
    fixed: Volume,
    fixed_masks: Mapping[str, Volume],
    warped_masks: Mapping[str, Volume],
    *,
    center_mm=None,
    window: tuple[float, float] | None = None,
) -> bytes:
    """Fixed image with its VOI outlines (solid) and the warped moving VOIs (dashed), same colour per name, as PNG.

    The legend lists each VOI name once (its colour), then the two line styles.
    Masks may be on any grid (nearest-neighbour resampled onto the fixed grid). Where solid and
    dashed outlines coincide, the registration mapped that VOI well. ``window`` None: percentiles.
    """
    fm = {n: _on_grid(m, fixed, 0) for n, m in fixed_masks.items()}
    wm = {n: _on_grid(m, fixed, 0) for n, m in warped_masks.items()}
    names = list(dict.fromkeys([*fm, *wm]))
    colour = voi_colours(names)
    o = orient(fixed)
    idx = o.index_of(_centre(fixed, [*fm.values(), *wm.values()], center_mm))
    lo, hi = window or percentile_window(o.array)
    solid = [(n, orient(m), colour[n]) for n, m in fm.items()]
    dashed = [(n, orient(m), colour[n]) for n, m in wm.items()]
    fig = _figure_for(o)
    for ax, view, s in _panels(fig, o, idx):
        ax.imshow(s.image, cmap="gray", vmin=lo, vmax=hi, extent=s.extent, origin=s.origin, interpolation="bilinear")
        _draw_contours(ax, solid, idx, view, "solid")
        _draw_contours(ax, dashed, idx, view, "dashed")
    styles = ([("fixed image's VOIs", "#444444", "solid")] if fm else []) + (
        [("warped VOIs", "#444444", "dashed")] if wm else [])
    _legend(fig, [(n, colour[n], "solid") for n in names] + styles)
    return png_bytes(fig)


# The whole liver contains the normal liver (and the lesions): with small lesions their DVHs all but
# coincide, so the liver is drawn as a wide band underneath and the other VOIs as thin
# lines on top; where the curves coincide the band shows round the thin line.
_DVH_BAND = {"liver"}
_DVH_BAND_STYLE = {"lw": 5.5, "alpha": 1.0, "zorder": 1.5}
_DVH_LINE_STYLE = {"lw": 1.8, "alpha": 1.0, "zorder": 2.5}


def _dvh_style(name: str) -> dict:
    return _DVH_BAND_STYLE if name in _DVH_BAND else _DVH_LINE_STYLE


def dvh_png(dvhs: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], *, title: str = "") -> bytes:
    """:func:`dvh_figure` as PNG bytes (same arguments)."""
    return png_bytes(dvh_figure(dvhs, title=title))


def dvh_figure(dvhs: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], *, title: str = "") -> Figure:
    """Cumulative DVHs: for each set (e.g. 'plan', 'verification'), (edges_gy (B+1,), cdvh (L, B), VOI names).

    ``cdvh[l, b]`` is the fraction of VOI l receiving at least ``edges_gy[b]`` Gy (as
    :func:`sirtjax.dosimetry.voi_statistics` returns). Colour follows the VOI name (the same as its
    contours), line style the set; the legend lists the VOIs, then the sets. The whole liver is a
    wide band under the thin lines of the other VOIs, so that it stays visible where its
    curve coincides with the normal liver's. The dose axis ends just past the highest dose any VOI
    reaches. Empty VOIs (all-zero or NaN curves) are drawn as nothing but keep their legend entry.
    """
    from matplotlib.lines import Line2D

    styles = ("solid", "dashed", "dotted", "dashdot")
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    ax = fig.subplots()
    names = list(dict.fromkeys(n for _, _, ns in dvhs.values() for n in ns))
    colour = voi_colours(names)
    top_gy = 0.0
    for k, (label, (edges, cdvh, voi_names)) in enumerate(dvhs.items()):
        edges = np.asarray(edges, np.float64)
        cdvh = np.asarray(cdvh, np.float64).reshape(len(voi_names), -1)
        if edges.shape != (cdvh.shape[1] + 1,):
            raise ValueError(f"DVH '{label}': {edges.size} edges for {cdvh.shape[1]} bins")
        reached = np.flatnonzero(np.nan_to_num(cdvh).max(axis=0, initial=0.0) > 0)
        if reached.size:
            top_gy = max(top_gy, float(edges[reached[-1] + 1]))
        for name, curve in zip(voi_names, cdvh):
            y = 100.0 * np.append(curve, 0.0)  # nothing reaches the top edge's dose
            st = _dvh_style(name)
            edge = [] if name in _DVH_BAND else [patheffects.withStroke(linewidth=3.0, foreground="black", alpha=0.3)]
            ax.plot(edges, y, drawstyle="steps-post", color=colour[name], linestyle=styles[k % len(styles)],
                    label=f"{name} ({label})", path_effects=edge, **st)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume receiving at least this dose (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(0, 1.05 * top_gy if top_gy > 0 else None)
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    handles = [Line2D([], [], color=colour[n], lw=_dvh_style(n)["lw"], alpha=_dvh_style(n)["alpha"], label=n)
               for n in names]
    if len(dvhs) > 1:
        handles += [Line2D([], [], color="#444444", lw=1.8, linestyle=styles[k % len(styles)], label=label)
                    for k, label in enumerate(dvhs)]
    if handles:
        ax.legend(handles=handles, frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig

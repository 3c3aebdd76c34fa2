"""Network input preparation (thesis 4.3.2): resample to a canonical grid, window by modality.

The canonical grid has identity direction (LPS-aligned axes), the model's spacing (3 mm for the
liver U-Net) and covers the physical bounding box of the input's field of view, so a network sees
every image in the same anatomical orientation whatever the scanner's direction matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from sirtjax.errors import InputError
from sirtjax.preprocess import CT_WINDOW_HU, lift_padding, lowest_unpadded, resample_to, window_ct, window_mr
from sirtjax.programs import ProgramCache
from sirtjax.segmentation.noise import NoiseMatch, denoise, measure_noise, measure_noise_window
from sirtjax.volume import Grid, Volume, index_to_world, make_grid

MODALITIES = ("ct", "mr")
AIR_FLOOR_HU = -1100.0  # a CT's air reads -1000 HU and its noise; the lowest scanners write is -1024
LIVER_MARGIN_MM = 6.0  # the lesion network sees the image this far beyond the liver (thesis 7.3.2.2)


def guess_modality(image: np.ndarray) -> str:
    """'ct' for an image with air (Hounsfield units, a minimum from -500 to AIR_FLOOR_HU), or a lower minimum above
    negative voxels (HU padding); 'mr' for the rest, including non-negative voxels above padding far below them
    (:func:`~sirtjax.preprocess.lowest_unpadded`; an MR converted with -32768, say). Approximate: a guess."""
    low = float(np.min(image))
    return "ct" if low < -500 and (low >= AIR_FLOOR_HU or lowest_unpadded(image) < 0) else "mr"


BODY_FLOOR_HU = -500.0  # a CT voxel above this is tissue, not air


def body_problem(image: np.ndarray, modality: str) -> str | None:
    """Why an image holds no body to segment, or None: a CT with no voxel above BODY_FLOOR_HU (all air), an MR
    with a single value."""
    high, low = float(np.max(image)), float(np.min(image))
    if modality == "ct" and high <= BODY_FLOOR_HU:
        return f"holds no body to segment: every voxel is at or below {BODY_FLOOR_HU:.0f} HU (air)"
    if modality == "mr" and high == low:
        return f"holds no body to segment: every voxel is {high:g}"
    return None


def canonical_grid(vol: Volume, spacing_mm: Sequence[float]) -> Grid:
    """A grid of identity direction and spacing (x, y, z mm) covering vol's field of view."""
    spacing = np.asarray(spacing_mm, np.float64).reshape(3)
    nx, ny, nz = vol.size_xyz
    # the field of view reaches half a voxel beyond the corner voxel centres
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    world = (corners @ index_to_world(vol).T)[:, :3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    size_xyz = np.maximum(1, np.ceil((hi - lo) / spacing - 1e-6)).astype(int)
    origin = (lo + hi) / 2 - spacing * (size_xyz - 1) / 2  # centre the new grid on the old box
    return make_grid(size_xyz[::-1], spacing, origin, np.eye(3))


def normalize_intensity(image: np.ndarray, modality: str) -> np.ndarray:
    """Thesis windowing to [-0.5, 0.5]: CT clip [-200, 200] HU; MR clip [min, 80 % of max] (padding lifted, an outlying
    max capped: :func:`~sirtjax.preprocess.window_mr`)."""
    if modality == "ct":
        return np.asarray(window_ct(image))
    if modality == "mr":
        return np.asarray(window_mr(image))
    raise InputError("--modality", f"unknown modality {modality!r}; expected one of {MODALITIES}")


def antialias_sigma_zyx(vol: Volume | Grid, spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Anti-aliasing sigmas (input voxels, z, y, x) for resampling vol to spacing_mm (x, y, z): (ratio - 1) / 2 along
    each axis the new spacing is coarser by ``ratio`` (scikit-image's rule for anti-aliased down-sampling), else 0."""
    ratio = np.asarray(spacing_mm, np.float64).reshape(3) / np.asarray(vol.spacing_mm, np.float64)
    return tuple(float(s) for s in np.maximum(0.0, (ratio[::-1] - 1.0) / 2.0))


def antialias(vol: Volume, spacing_mm: Sequence[float]) -> Volume:
    """vol smoothed for resampling to spacing_mm (x, y, z) by a Gaussian of :func:`antialias_sigma_zyx`.

    Without it, trilinear down-sampling of a fine scan (0.8 mm in-plane, say) reads a few input voxels
    per output voxel and keeps most of their noise; with it, a 3 mm voxel averages its neighbourhood
    as the 3 mm renderings the models were trained on do. Approximate for an oblique grid: the
    smoothing follows the input's axes.
    """
    sigma_zyx = antialias_sigma_zyx(vol, spacing_mm)
    if not any(sigma_zyx):
        return vol
    return vol.with_array(ndimage.gaussian_filter(np.asarray(vol.array, np.float32), sigma_zyx, mode="nearest"))


def prepare_image(
    vol: Volume, modality: str, spacing_mm: Sequence[float], *, ct_noise_index_hu: float | None = None,
    mr_noise_index: float | None = None, on_noise: Callable[[NoiseMatch], None] | None = None,
    programs: ProgramCache | None = None,
) -> Volume:
    """The windowed network input (z, y, x) float32 on the canonical grid of `vol` (:func:`prepare_on`)."""
    return prepare_on(vol, modality, canonical_grid(vol, spacing_mm), ct_noise_index_hu=ct_noise_index_hu,
                      mr_noise_index=mr_noise_index, on_noise=on_noise, programs=programs)


def prepare_on(
    vol: Volume, modality: str, grid: Grid | Volume, *, ct_noise_index_hu: float | None = None,
    mr_noise_index: float | None = None, on_noise: Callable[[NoiseMatch], None] | None = None, interpolate_hu: bool = False,
    programs: ProgramCache | None = None,
) -> Volume:
    """The windowed network input (z, y, x) float32 on `grid` (``programs``: where the resampling is kept compiled).

    A CT is first clipped to the CT window (CT_WINDOW_HU): the network sees window units, so it is in them that the
    CT is averaged and interpolated. In Hounsfield units a point a quarter of the way from liver (60 HU) to lung
    (-800 HU) reads about -150 HU, nearly lung; clipped, it reads a quarter of the window's way, as the point-sampled
    training renderings show such a boundary. Interpolated in HU, livers shrink on thick slices and on oblique and
    fine grids. A CT that is to be denoised is resampled again without the clip and denoised in HU: clipping noisy
    tissue near the window's ends (fat at -100 HU with 75 HU of noise loses its lowest 9 %) raises its mean.
    `interpolate_hu` skips the clip, for a network trained on CTs interpolated in HU (the registration-segmentation
    network's). An MR is resampled unclipped: clipped first, it lost on validation MR (the liver model card).

    The image is smoothed by :func:`antialias_sigma_zyx` for the grid's spacing and resampled trilinearly, both
    by :func:`~sirtjax.preprocess.resample_to` (one set of one-axis passes when the grid's axes lie along the image's);
    outside the input's field of view it is filled with its minimum (air). A CT noisier than
    `ct_noise_index_hu` (the model's, if it declares one) is then denoised to match
    (:func:`~sirtjax.segmentation.noise.measure_noise`, :func:`~sirtjax.segmentation.noise.denoise`; `on_noise`
    receives what it found). Last, it is windowed; an MR noisier than `mr_noise_index` (window units) is denoised
    after windowing (:func:`~sirtjax.segmentation.noise.measure_noise_window`).
    """
    array = np.asarray(vol.array)
    if array.ndim != 3:
        raise InputError("image", f"expected a scalar 3D image, got array shape {array.shape}")
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise InputError("image", "image is empty or contains NaN/inf values")
    def resampled_on_grid(source: Volume) -> Volume:
        fill = float(np.min(np.asarray(source.array)))
        return resample_to(source, grid, order=1, default_value=fill, smooth_vox_zyx=antialias_sigma_zyx(source, grid.spacing_mm),
                           programs=programs)

    if modality == "mr":  # before resampling, which would blend padding far below the body into its edge
        vol = vol.with_array(lift_padding(array))
    clip = modality == "ct" and not interpolate_hu
    resampled = resampled_on_grid(vol.with_array(np.clip(array.astype(np.float32, copy=False), *CT_WINDOW_HU)) if clip else vol)
    image = np.asarray(resampled.array)
    spacing_zyx_mm = np.asarray(resampled.spacing_mm)[::-1]
    match = None
    if modality == "ct" and ct_noise_index_hu is not None:
        match = measure_noise(image, ct_noise_index_hu, clipped_at_hu=CT_WINDOW_HU[1] if clip else None)
        if clip and match.tv_weight is not None:  # denoised in HU: resampled again unclipped, and measured there
            image = np.asarray(resampled_on_grid(vol).array)
            match = measure_noise(image, ct_noise_index_hu)
        image = denoise(image, spacing_zyx_mm, match)
    windowed = np.asarray(normalize_intensity(image, modality), np.float32)
    if modality == "mr" and mr_noise_index is not None:
        match = measure_noise_window(windowed, mr_noise_index)
        windowed = denoise(windowed, spacing_zyx_mm, match)
    if match is not None and on_noise is not None:
        on_noise(match)
    return resampled.with_array(windowed)


def prepare_label(label: Volume, reference: Volume) -> Volume:
    """A label map resampled by nearest neighbour onto the reference grid (uint8 / int kept)."""
    return resample_to(label, reference, order=0)


def mask_to_liver(prepared: Volume, liver: Volume, *, dilation_mm: float = LIVER_MARGIN_MM, outside: float = -0.5) -> Volume:
    """Lesion-network input (thesis 7.3.2.2): keep voxels within `dilation_mm` of the liver, set the rest to `outside`.

    `liver` (0/1) is resampled by nearest neighbour onto the prepared grid; the dilation uses the
    exact Euclidean distance in mm (scipy EDT with the grid spacing). An empty liver mask leaves
    nothing (every voxel becomes `outside`).
    """
    from scipy import ndimage

    mask = np.asarray(prepare_label(liver, prepared).array) > 0
    if not mask.any():
        return prepared.with_array(np.full(prepared.shape, outside, np.float32))
    dist_mm = ndimage.distance_transform_edt(~mask, sampling=np.asarray(prepared.spacing_mm)[::-1])
    return prepared.with_array(np.where(dist_mm <= dilation_mm, np.asarray(prepared.array), outside).astype(np.float32))


def lesion_input(vol: Volume, modality: str, spacing_mm: Sequence[float], liver: Volume) -> Volume:
    """The lesion network's input: :func:`prepare_image`, kept within LIVER_MARGIN_MM of the non-empty
    `liver` mask (:func:`mask_to_liver`) and cropped to that region's box (the rest is padding anyway)."""
    from sirtjax.preprocess import crop_to_mask

    prepared = mask_to_liver(prepare_image(vol, modality, spacing_mm), liver)
    inside = np.asarray(prepare_label(liver, prepared).array) > 0
    if not inside.any():
        raise InputError("liver", "the liver mask is empty or outside the image: no region to search for lesions")
    return crop_to_mask(prepared, inside, margin_mm=LIVER_MARGIN_MM + max(spacing_mm))

"""Image grids of a session and sampling of the canonical patient onto them.

Every voxel centre of an image is carried from the session's world frame into the canonical
frame (inverse posture, :mod:`sirtjax.phantom.deform`) and the canonical volumes are sampled
there: intensities and signed distances trilinearly, tissue codes and landmark ids by nearest
neighbour. A label is the sign of its interpolated signed distance at the voxel centre, so the
same continuous anatomy defines the labels of every image, whatever its grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sirtjax.phantom.config import ImageGrid
from sirtjax.phantom.deform import to_canonical
from sirtjax.phantom.raster import Canonical
from sirtjax.phantom.shapes import rotation_matrix
from sirtjax.volume import Volume, make_volume

DIRECTIONS = ("identity", "flip_xy", "oblique")


def direction_matrix(kind: str, angles_deg: np.ndarray) -> np.ndarray:
    """3x3 direction: identity, diag(-1, -1, 1), or the rotation with the given angles (degrees)."""
    if kind == "identity":
        return np.eye(3)
    if kind == "flip_xy":
        return np.diag([-1.0, -1.0, 1.0])
    if kind == "oblique":
        return rotation_matrix(angles_deg)
    raise ValueError(f"unknown direction '{kind}' (one of {', '.join(DIRECTIONS)})")


def place_grid(spec: ImageGrid, spacing_scale: float, center_world_mm: np.ndarray, offset_unit: np.ndarray, rng: np.random.Generator) -> dict:
    """Geometry of an image grid centred at center_world_mm + jitter (JSON-serialisable dict)."""
    angles = rng.uniform(-spec.oblique_max_deg, spec.oblique_max_deg, 3)
    direction = direction_matrix(spec.direction, angles)
    spacing = np.asarray(spec.spacing_mm, np.float64) * spacing_scale
    size = np.asarray(spec.size_xyz(spacing_scale))
    center = np.asarray(center_world_mm, np.float64) + offset_unit * spec.jitter_mm
    origin = center - direction @ (spacing * (size - 1) / 2)
    return {
        "spacing_mm": spacing.tolist(),
        "origin_mm": origin.tolist(),
        "direction": direction.tolist(),
        "size_xyz": [int(s) for s in size],
    }


def crop_center_z(spec: ImageGrid, spacing_scale: float, liver_z_mm: tuple[float, float], rng: np.random.Generator) -> tuple[float, dict | None]:
    """Canonical z of the FOV centre; with probability spec.crop_probability the FOV cuts 10-30 mm
    off the liver top or bottom (returned as {"side", "cut_mm"}), else spec.center_z_mm."""
    draw, side, cut = rng.uniform(), rng.choice(["top", "bottom"]), float(rng.uniform(10.0, 30.0))
    if draw >= spec.crop_probability:
        return spec.center_z_mm, None
    half = spec.size_xyz(spacing_scale)[2] * spec.spacing_mm[2] * spacing_scale / 2
    if side == "top":
        return liver_z_mm[1] - cut - half, {"side": "top", "cut_mm": cut}
    return liver_z_mm[0] + cut + half, {"side": "bottom", "cut_mm": cut}


def grid_volume(geometry: dict, array: np.ndarray) -> Volume:
    """A Volume with the given geometry dict and array (z, y, x)."""
    return make_volume(array, geometry["spacing_mm"], geometry["origin_mm"], geometry["direction"])


def world_points(geometry: dict) -> np.ndarray:
    """World coordinates (z, y, x, 3) float32 LPS mm of every voxel centre of the grid."""
    nx, ny, nz = geometry["size_xyz"]
    m = np.asarray(geometry["direction"]) * np.asarray(geometry["spacing_mm"])
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k], axis=-1).astype(np.float32)
    return (idx @ m.T.astype(np.float32) + np.asarray(geometry["origin_mm"], np.float32)).astype(np.float32)


def canonical_coords(can: Canonical, posture: dict, geometry: dict) -> np.ndarray:
    """Continuous canonical array indices (3, z, y, x) in (z, y, x) order of every voxel centre."""
    q = to_canonical(posture, world_points(geometry))
    idx = (q - can.origin_mm.astype(np.float32)) / np.float32(can.spacing_mm)
    return np.moveaxis(idx[..., ::-1], -1, 0)


def sample(volume: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """Sample a canonical array at continuous indices (3, ...); border values extend outwards."""
    if order == 1:
        volume = volume.astype(np.float32, copy=False)
    return ndimage.map_coordinates(volume, coords, order=order, mode="nearest", prefilter=False)


def anatomical_labels(can: Canonical, coords: np.ndarray, geometry: dict, landmarks: list[dict], lesion_ids: set[int]) -> dict[str, np.ndarray]:
    """Label maps (z, y, x) uint8 of one image: liver, lesions (instances 1..n), lungs, labels.

    Every landmark whose centre lies in the grid gets at least the voxel nearest to its centre,
    so tiny clips stay visible on coarse grids. landmarks: [{"id", "world_mm"}] in this session.
    """
    liver = sample(can.liver_sdf, coords, 1) < 0
    lungs = sample(can.lungs_sdf, coords, 1) < 0
    inside = sample(can.landmark_sdf, coords, 1) < 0
    ids = np.where(inside, sample(can.landmark_id, coords, 0), 0).astype(np.uint8)
    m = np.linalg.inv(np.asarray(geometry["direction"]) * np.asarray(geometry["spacing_mm"]))
    for lm in landmarks:
        ijk = np.rint(m @ (np.asarray(lm["world_mm"]) - np.asarray(geometry["origin_mm"]))).astype(int)
        zyx = tuple(ijk[::-1])
        in_grid = all(0 <= v < n for v, n in zip(zyx, ids.shape))
        if in_grid and not np.any(ids == lm["id"]):
            ids[zyx] = lm["id"]
    lesions = np.where(np.isin(ids, sorted(lesion_ids)), ids - 1, 0).astype(np.uint8)
    labels = np.where(ids > 0, ids, liver.astype(np.uint8)).astype(np.uint8)
    return {"liver": liver.astype(np.uint8), "lesions": lesions, "lungs": (lungs & ~liver).astype(np.uint8), "labels": labels}

"""Image grids of a session and sampling of the canonical patient onto them.

Every voxel centre of an image is carried from the session's world frame into the canonical
frame (inverse posture, :mod:`sirtjax.phantom.deform`) and the canonical volumes are sampled
there: intensities and signed distances trilinearly, tissue codes and landmark ids by nearest
neighbour. A label is the sign of its interpolated signed distance at the voxel centre, so the
same continuous anatomy defines the labels of every image, whatever its grid.
"""

from __future__ import annotations

import numpy as np
from sirtjax.phantom.config import ImageGrid
from sirtjax.phantom.deform import to_canonical
from sirtjax.phantom.raster import Canonical, Field
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


def _trilinear(volume: np.ndarray, iz: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Trilinear samples (M,) float32 of a (z, y, x) array at continuous indices iz, iy, ix (M,)
    lying inside the array (callers clip)."""
    dims = volume.shape
    v = volume.reshape(-1)
    strides = (dims[1] * dims[2], dims[2], 1)
    base = np.zeros(iz.shape, np.int64)
    frac = []
    for c, n, stride in zip((iz, iy, ix), dims, strides):
        low = np.minimum(c.astype(np.int64), max(n - 2, 0))  # c >= 0, so truncation is floor
        frac.append((c - low).astype(np.float32))
        base += low * stride
    fz, fy, fx = frac
    sz, sy, sx = (s if n > 1 else 0 for s, n in zip(strides, dims))

    def along_x(offset: int) -> np.ndarray:
        lo = v[base + offset].astype(np.float32)
        return lo + (v[base + offset + sx] - lo) * fx

    rows = [along_x(o) for o in (0, sy, sz, sz + sy)]
    c0 = rows[0] + (rows[1] - rows[0]) * fy
    c1 = rows[2] + (rows[3] - rows[2]) * fy
    return c0 + (c1 - c0) * fz


def _nearest(volume: np.ndarray, iz: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Nearest-neighbour samples (M,) of a (z, y, x) array at continuous indices inside it."""
    dims = volume.shape
    flat = np.rint(iz).astype(np.int64) * (dims[1] * dims[2]) + np.rint(iy).astype(np.int64) * dims[2] + np.rint(ix).astype(np.int64)
    return volume.reshape(-1)[flat]


class CanonicalSampler:
    """Samples canonical arrays at the canonical positions of an image's voxel centres.

    The positions are computed once (inverse posture); positions outside the canonical grid take
    the border value. Fields (arrays stored over a sub-box) are only interpolated at the voxels
    that fall inside their box, the others get the field's outside value.
    """

    def __init__(self, can: Canonical, posture: dict, geometry: dict):
        self.points_mm = to_canonical(posture, world_points(geometry))  # (z, y, x, 3) canonical mm
        self.shape = self.points_mm.shape[:3]
        flat = self.points_mm.reshape(-1, 3)
        self._idx = [
            np.clip((flat[:, axis] - np.float32(can.origin_mm[axis])) / np.float32(can.spacing_mm), 0.0, np.float32(n - 1))
            for axis, n in zip((2, 1, 0), can.tissue.shape)
        ]  # continuous canonical indices, (z, y, x) order

    def linear(self, volume: np.ndarray) -> np.ndarray:
        """Trilinear samples (z, y, x) float32 of a full canonical array."""
        return _trilinear(volume, *self._idx).reshape(self.shape)

    def nearest(self, volume: np.ndarray) -> np.ndarray:
        """Nearest-neighbour samples (z, y, x) of a full canonical array (keeps its dtype)."""
        return _nearest(volume, *self._idx).reshape(self.shape)

    def _inside(self, field: Field) -> tuple[np.ndarray, list[np.ndarray]]:
        sel = None
        for c, start, n in zip(self._idx, field.start, field.array.shape):
            ok = (c >= np.float32(start)) & (c <= np.float32(start + n - 1))
            sel = ok if sel is None else sel & ok
        sel = np.flatnonzero(sel)
        return sel, [c[sel] - np.float32(start) for c, start in zip(self._idx, field.start)]

    def field_linear(self, field: Field) -> np.ndarray:
        """Trilinear samples (z, y, x) float32 of a Field."""
        out = np.full(self._idx[0].shape, field.outside, np.float32)
        sel, local = self._inside(field)
        out[sel] = _trilinear(field.array, *local)
        return out.reshape(self.shape)

    def field_nearest(self, field: Field) -> np.ndarray:
        """Nearest-neighbour samples (z, y, x) of a Field (keeps its dtype)."""
        out = np.full(self._idx[0].shape, field.outside, field.array.dtype)
        sel, local = self._inside(field)
        out[sel] = _nearest(field.array, *local)
        return out.reshape(self.shape)


def anatomical_labels(can: Canonical, sampler: CanonicalSampler, geometry: dict, landmarks: list[dict], lesion_ids: set[int]) -> dict[str, np.ndarray]:
    """Label maps (z, y, x) uint8 of one image: liver, lesions (instances 1..n), lungs, labels.

    Every landmark whose centre lies in the grid gets at least the voxel nearest to its centre,
    so tiny clips stay visible on coarse grids. landmarks: [{"id", "world_mm"}] in this session.
    """
    liver = sampler.field_linear(can.liver_sdf) < 0
    lungs = sampler.field_linear(can.lungs_sdf) < 0
    inside = sampler.field_linear(can.landmark_sdf) < 0
    ids = np.where(inside, sampler.field_nearest(can.landmark_id), 0).astype(np.uint8)
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

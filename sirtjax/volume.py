"""Volume: a voxel array with its physical geometry, as a JAX pytree; Grid: the geometry alone.

Conventions (the one internal convention of sirtjax, see DESIGN.md):

- ``array`` is indexed like SimpleITK's ``GetArrayFromImage``: ``(z, y, x)`` for a scalar image,
  ``(z, y, x, C)`` for a vector image (displacement fields have ``C = 3``).
- ``spacing_mm``, ``origin_mm`` and ``direction`` follow ITK and are given in the **(x, y, z)**
  order of the index ``(i, j, k) = (x, y, z)``: ``spacing_mm[0]`` is the spacing along the last
  array axis. World coordinates are LPS millimetres (DICOM patient coordinates).
- The continuous index ``(i, j, k)`` of a voxel maps to the world point
  ``origin_mm + direction @ (spacing_mm * (i, j, k))``. ``direction`` has the unit axis of index
  ``i`` as its first column.

All four fields are pytree leaves, so a Volume passes through ``jit`` and ``vmap`` and its geometry
can be traced. On the host (I/O) geometry is kept in float64 numpy arrays; under ``jit`` it is
float32 like everything else.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # numpy or JAX array


@functools.partial(jax.tree_util.register_dataclass, data_fields=["spacing_mm", "origin_mm", "direction"],
                   meta_fields=["shape"])
@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel grid without data: shape (z, y, x), spacing (mm), origin (mm, LPS) and direction, ITK order.

    The geometry functions of this module take a Grid or a :class:`Volume` alike; a Grid carries no placeholder
    array, and its shape is static under ``jax.jit`` (a different shape is a different program).
    """

    shape: tuple[int, int, int]
    spacing_mm: Array
    origin_mm: Array
    direction: Array

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Grid size in ITK index order (x, y, z)."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def grid(self) -> Grid:
        """Itself (as :attr:`Volume.grid`, so code given either asks the same)."""
        return self

    def with_array(self, array: Array) -> Volume:
        """A Volume of this grid holding ``array`` (z, y, x[, C])."""
        if tuple(array.shape[:3]) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape} does not match grid {tuple(self.shape)}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction)


def make_grid(shape_zyx, spacing_mm: Array, origin_mm: Array, direction: Array | None = None) -> Grid:
    """A Grid from its shape (z, y, x) and ITK-ordered geometry (host float64); validates the geometry."""
    return Grid(tuple(int(n) for n in shape_zyx), *_checked_geometry(spacing_mm, origin_mm, direction))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Volume:
    """A 3D image (z, y, x[, C]) with spacing (mm), origin (mm, LPS) and direction, ITK order."""

    array: Array
    spacing_mm: Array
    origin_mm: Array
    direction: Array

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x) of the voxel grid."""
        return tuple(self.array.shape[:3])

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Grid size in ITK index order (x, y, z)."""
        return self.grid.size_xyz

    @property
    def grid(self) -> Grid:
        """The Volume's grid, without its data."""
        return Grid(self.shape, self.spacing_mm, self.origin_mm, self.direction)

    def with_array(self, array: Array) -> Volume:
        """The same grid carrying another array of the same spatial shape."""
        return self.grid.with_array(array)


def make_volume(
    array: Array,
    spacing_mm: Array = (1.0, 1.0, 1.0),
    origin_mm: Array = (0.0, 0.0, 0.0),
    direction: Array | None = None,
) -> Volume:
    """A Volume from an array (z, y, x[, C]) and ITK-ordered geometry; validates the geometry."""
    array = np.asarray(array) if not isinstance(array, jax.Array) else array
    if array.ndim not in (3, 4):
        raise ValueError(f"a Volume needs a 3D array (z, y, x) or (z, y, x, C), got {array.ndim}D")
    return Volume(array, *_checked_geometry(spacing_mm, origin_mm, direction))


def _checked_geometry(spacing_mm: Array, origin_mm: Array, direction: Array | None) -> tuple[np.ndarray, ...]:
    """Spacing, origin and direction as float64 host arrays (direction None: identity); ValueError unless spacing is
    positive and finite, origin finite and direction orthonormal."""
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    origin = np.asarray(origin_mm, dtype=np.float64).reshape(3)
    dirm = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be positive and finite, got {spacing.tolist()}")
    if not np.all(np.isfinite(origin)):
        raise ValueError(f"origin must be finite, got {origin.tolist()}")
    if not np.allclose(dirm.T @ dirm, np.eye(3), atol=1e-4):
        raise ValueError(f"direction must be orthonormal, got {dirm.tolist()}")
    return spacing, origin, dirm


def index_to_world(vol: Grid | Volume) -> np.ndarray:
    """4x4 float64 matrix mapping a homogeneous continuous index (i, j, k, 1) to LPS mm (host)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(vol.direction, np.float64) * np.asarray(vol.spacing_mm, np.float64)
    m[:3, 3] = np.asarray(vol.origin_mm, np.float64)
    return m


def world_to_index(vol: Grid | Volume) -> np.ndarray:
    """4x4 float64 matrix mapping LPS mm (homogeneous) to the continuous index (i, j, k) (host)."""
    return np.linalg.inv(index_to_world(vol))


def world_grid(vol: Grid | Volume) -> jax.Array:
    """World coordinates (LPS mm, components x, y, z) of every voxel centre, shape (z, y, x, 3)."""
    nz, ny, nx = vol.shape
    k, j, i = jnp.meshgrid(
        jnp.arange(nz, dtype=jnp.float32),
        jnp.arange(ny, dtype=jnp.float32),
        jnp.arange(nx, dtype=jnp.float32),
        indexing="ij",
    )
    idx = jnp.stack([i, j, k], axis=-1)
    return index_points_to_world(vol, idx)


def matvec3(matrix: jax.Array, points: jax.Array) -> jax.Array:
    """``points @ matrix.T`` for points (..., 3) as three broadcast multiply-adds.

    Not a dot: XLA's CPU dot kernel for (N, 3) x (3, 3) crashed (segfault in YNNPACK, jax 0.10.2)
    inside larger registration programs, and the elementwise form fuses with its neighbours.
    """
    m = jnp.asarray(matrix, jnp.float32)
    return points[..., 0:1] * m[:, 0] + points[..., 1:2] * m[:, 1] + points[..., 2:3] * m[:, 2]


def index_points_to_world(vol: Grid | Volume, idx_xyz: jax.Array) -> jax.Array:
    """Map continuous indices (..., 3) in (i, j, k) = (x, y, z) order to LPS mm (..., 3)."""
    a = jnp.asarray(vol.direction, jnp.float32) * jnp.asarray(vol.spacing_mm, jnp.float32)
    return matvec3(a, idx_xyz) + jnp.asarray(vol.origin_mm, jnp.float32)


def world_points_to_index(vol: Grid | Volume, points_mm: jax.Array) -> jax.Array:
    """Map LPS mm points (..., 3) to continuous indices (..., 3) in (i, j, k) = (x, y, z) order."""
    d = jnp.asarray(vol.direction, jnp.float32)
    s = jnp.asarray(vol.spacing_mm, jnp.float32)
    # direction is orthonormal, so its inverse is its transpose.
    return matvec3(d.T, points_mm - jnp.asarray(vol.origin_mm, jnp.float32)) / s


def corner_points_world(vol: Grid | Volume) -> np.ndarray:
    """World coordinates (LPS mm, float64) of the 8 corner voxel centres, shape (8, 3) (host)."""
    nx, ny, nz = vol.size_xyz
    corners = np.array(
        [[i, j, k, 1.0] for k in (0, nz - 1) for j in (0, ny - 1) for i in (0, nx - 1)]
    )
    return (corners @ index_to_world(vol).T)[:, :3]


def same_grid(a: Grid | Volume, b: Grid | Volume, *, tol_mm: float = 1e-3) -> bool:
    """True when a and b share shape, spacing, origin and direction within tol_mm (host)."""
    if a.shape != b.shape:
        return False
    return bool(np.allclose(corner_points_world(a), corner_points_world(b), atol=tol_mm))


def describe_grid(vol: Grid | Volume) -> str:
    """A short human-readable description of the grid for error messages and reports."""
    sp = ", ".join(f"{s:.3g}" for s in np.asarray(vol.spacing_mm))
    return f"{vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]} voxels (x,y,z) at ({sp}) mm"


def index_moments(weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Total, mean (3,) and second moments E[v vᵀ] (3, 3) of the voxel index v = (i, j, k) = (x, y, z) under
    non-negative weights (z, y, x), float64, from the weights' sums over one and two axes (no per-voxel coordinates).
    Mean and moments are zero for all-zero weights."""
    w = np.asarray(weights)
    yx, zx, zy = (w.sum(axis=a, dtype=np.float64) for a in range(3))  # 2-D marginals
    x, y, z = yx.sum(axis=0), yx.sum(axis=1), zy.sum(axis=1)  # 1-D marginals along x, y, z
    total = float(z.sum())
    if total <= 0:
        return 0.0, np.zeros(3), np.zeros((3, 3))
    idx = [np.arange(n, dtype=np.float64) for n in (x.size, y.size, z.size)]  # i, j, k
    mean = np.array([m @ i for m, i in zip((x, y, z), idx)]) / total
    second = np.empty((3, 3))
    for a, marginal in enumerate((x, y, z)):
        second[a, a] = marginal @ idx[a] ** 2
    second[0, 1] = second[1, 0] = idx[1] @ yx @ idx[0]
    second[0, 2] = second[2, 0] = idx[2] @ zx @ idx[0]
    second[1, 2] = second[2, 1] = idx[2] @ zy @ idx[1]
    return total, mean, second / total


def centroid_mm(vol: Volume, weights: np.ndarray) -> np.ndarray:
    """World centre of mass (3,) mm of non-negative weights (z, y, x) on vol's grid; the grid centre if all zero."""
    total, mean, _ = index_moments(weights)
    if total <= 0:
        nz, ny, nx = vol.shape
        mean = np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2])
    return index_to_world(vol)[:3] @ np.append(mean, 1.0)

"""Transforms in physical space and differentiable warping.

Module contract (DESIGN.md): a transform maps a **fixed** world point ``p`` (LPS mm, components
x, y, z) to the **moving** world point ``T(p)``. An affine transform is
``T(p) = M (p - c) + c + t`` with a 3x3 matrix ``M``, translation ``t`` (mm) and centre ``c`` (mm).
A displacement field is a Volume on the fixed grid with array ``(z, y, x, 3)``: components in mm
along physical x, y, z, ``T(p) = p + u(p)`` (ITK's ``DisplacementFieldTransform``).

Sampling follows ITK's linear interpolator: points whose continuous index lies within half a voxel
of the grid are interpolated with neighbours clamped to the border; points further out are
"outside" (``inside_grid`` is False, images take ``default_value``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.buckets import bucket_volume
from sirtjax.interpolate import gather_linear, inside_grid, sample_world
from sirtjax.programs import Program, ProgramCache
from sirtjax.registration.bspline import gather_bspline
from sirtjax.volume import Grid, Volume, make_volume, matvec3, world_grid, world_points_to_index

# float32 products in full float32 on every backend (a GPU would otherwise use TF32, ~1e-3 relative)
_EXACT = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AffineTransform:
    """``T(p) = matrix @ (p - centre_mm) + centre_mm + translation_mm``; world LPS mm, (x, y, z)."""

    matrix: jax.Array
    translation_mm: jax.Array
    centre_mm: jax.Array


def identity_affine(centre_mm=(0.0, 0.0, 0.0)) -> AffineTransform:
    """The identity transform about centre_mm (3,), as host (numpy float32) arrays."""
    return AffineTransform(np.eye(3, dtype=np.float32), np.zeros(3, np.float32), np.asarray(centre_mm, np.float32))


def affine_apply(aff: AffineTransform, points_mm: jax.Array) -> jax.Array:
    """Map fixed world points (..., 3) mm to moving world points (..., 3) mm."""
    c = aff.centre_mm
    return matvec3(aff.matrix, points_mm - c) + c + aff.translation_mm


def affine_to_homogeneous(aff: AffineTransform) -> np.ndarray:
    """4x4 float64 homogeneous matrix of the transform (fixed world mm -> moving world mm) (host)."""
    m = np.eye(4)
    a = np.asarray(aff.matrix, np.float64)
    c = np.asarray(aff.centre_mm, np.float64)
    m[:3, :3] = a
    m[:3, 3] = c + np.asarray(aff.translation_mm, np.float64) - a @ c
    return m


def affine_displacement(aff: AffineTransform, grid: Grid | Volume) -> jax.Array:
    """The affine as a displacement field on grid: ``T(p) - p``, shape (z, y, x, 3), mm."""
    p = world_grid(grid)
    return affine_apply(aff, p) - p


def sample_channels(
    vol: Volume, points_mm: jax.Array, default_value: float = 0.0, *, size_xyz: jax.Array | None = None,
    channels: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Linearly sample a (z, y, x[, C]) Volume at world points (..., 3) mm like ITK.

    ``size_xyz``: the grid's true size (3,) voxels when its array is padded past it at the
    high-index end by repeated border voxels (the outside test uses it; inside, the padding equals
    ITK's clamping); default the array's shape. ``channels``: (start, stop) of the channels to
    sample, all by default. Returns (values (...[, C]) with ``default_value`` outside, inside (...) bool).
    """
    idx = world_points_to_index(vol, points_mm)
    inside = inside_grid(vol.shape[::-1] if size_xyz is None else size_xyz, idx)
    vals = gather_linear(jnp.asarray(vol.array, jnp.float32), idx, channels)
    mask = inside[..., None] if vals.ndim > inside.ndim else inside
    return jnp.where(mask, vals, default_value), inside


def warp_volume(moving: Volume, displacement: Volume, *, order: int = 1, default_value: float = 0.0,
                programs: ProgramCache | None = None) -> Volume:
    """Resample moving onto the field's grid through ``T(p) = p + u(p)`` (ITK Resample semantics).

    Args:
      moving: scalar Volume (z, y, x) on any grid.
      displacement: field Volume (z, y, x, 3) in mm on the fixed grid.
      order: 1 linear (images), 0 nearest (label maps; the dtype is kept).
      default_value: value where ``T(p)`` falls outside the moving image.
      programs: a :class:`~sirtjax.programs.ProgramCache` that keeps the compiled warp. The moving image (by its
        border voxels, its true size kept for the outside test) and the field (by zeros) are then padded at their
        high end to their :func:`~sirtjax.buckets.grid_bucket` shapes and the result cut back: the
        same values, from a program that other patients' grids share.

    Returns:
      Volume on the fixed grid: float32 for order 1, moving's dtype for order 0.
    """
    if programs is None:
        out = np.asarray(warp_array(moving, displacement, order, default_value))
    else:
        out = _warp_program(bucket_volume(moving, "edge", np.float32 if order == 1 else None),
                            bucket_volume(displacement, dtype=np.float32), order, np.float32(default_value),
                            np.asarray(moving.shape[::-1], np.float32), programs=programs)
        out = np.asarray(out)[tuple(slice(0, n) for n in displacement.shape[:3])]
    if order == 0:
        out = out.astype(np.asarray(moving.array).dtype)
    return make_volume(out, displacement.spacing_mm, displacement.origin_mm, displacement.direction)


def _warp(moving: Volume, displacement: Volume, order: int, default_value, moving_size_xyz: jax.Array | None = None) -> jax.Array:
    """The array of :func:`warp_volume` (z, y, x) on the field's grid; ``moving_size_xyz``: see :func:`sample_index`."""
    pts = world_grid(displacement) + jnp.asarray(displacement.array, jnp.float32)
    if order == 1:
        moving = moving.with_array(jnp.asarray(moving.array, jnp.float32))
    return sample_world(moving, pts, order=order, default_value=default_value, size_xyz=moving_size_xyz)


warp_array = jax.jit(_warp, static_argnums=(2, 3))  # composable inside other programs
_warp_program = Program(_warp, "warp", static_argnums=(2,))  # the default value traced: one program for every value


def resample_field(field: Volume, grid: Grid | Volume, order: int = 1) -> jax.Array:
    """Resample a displacement field (z, y, x, 3) mm onto another grid; outside its grid the field is extended
    by its border values (clamped), so a field on a region-of-interest box stays continuous.

    ``order`` 1: the array holds the field's values, interpolated trilinearly; 3: it holds cubic B-spline
    coefficients (:func:`gather_bspline`), and the result is the spline's values.
    """
    if order not in (1, 3):
        raise ValueError(f"field order must be 1 or 3, got {order}")
    idx = world_points_to_index(field, world_grid(grid))
    arr = jnp.asarray(field.array, jnp.float32)
    if order == 1:
        return gather_linear(arr, idx)
    return gather_bspline(arr, idx.reshape(-1, 3)).reshape(*idx.shape[:-1], arr.shape[-1])


def compose_displacements(first: Volume, second: Volume) -> Volume:
    """Field of ``p -> T2(T1(p))`` on first's grid: ``u1(p) + u2(p + u1(p))`` (u2 zero outside its grid)."""
    p1 = world_grid(first) + jnp.asarray(first.array, jnp.float32)
    u2, _ = sample_channels(second, p1, 0.0)
    return first.with_array(jnp.asarray(first.array, jnp.float32) + u2)


def one_hot(labels: np.ndarray, label_ids: tuple[int, ...]) -> np.ndarray:
    """One-hot float32 channels (z, y, x, C) of an integer label map for the given ids (empty ids -> zeros)."""
    labels = np.asarray(labels)
    if not label_ids:
        return np.zeros(labels.shape + (0,), np.float32)
    return np.stack([labels == i for i in label_ids], axis=-1).astype(np.float32)

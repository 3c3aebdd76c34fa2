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
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.preprocess import sample_world
from sirtjax.registration.bspline import gather_bspline
from sirtjax.volume import Volume, make_volume, matvec3, world_grid, world_points_to_index

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


def affine_displacement(aff: AffineTransform, grid: Volume) -> jax.Array:
    """The affine as a displacement field on grid: ``T(p) - p``, shape (z, y, x, 3), mm."""
    p = world_grid(grid)
    return affine_apply(aff, p) - p


def inside_grid(size_xyz: jax.Array, idx_xyz: jax.Array) -> jax.Array:
    """True where a continuous index (..., 3) in (x, y, z) order lies within half a voxel of a grid of size_xyz (3,) voxels."""
    n_xyz = jnp.asarray(size_xyz, jnp.float32)
    return jnp.all((idx_xyz >= -0.5) & (idx_xyz <= n_xyz - 0.5), axis=-1)


@functools.partial(jax.jit, static_argnames="channels")  # eager callers: one program, not op by op (7 s -> 0.4 s cold)
def gather_linear(array: jax.Array, idx_xyz: jax.Array, channels: tuple[int, int] | None = None) -> jax.Array:
    """Trilinear interpolation of a (z, y, x) or (z, y, x, C) array at continuous indices (..., 3).

    Indices are in (x, y, z) order; neighbours are clamped to the border (no outside test, see
    :func:`inside_grid`). ``channels``: (start, stop) of the channels to sample (all by default;
    cheaper than slicing the array first). Returns (...) or (..., stop - start). Differentiable in
    the indices and the array; the forward pass computes the spatial derivative from the same 8
    corner gathers (a custom VJP), so a gradient costs little more than the interpolation. All
    channels share one set of corners.
    """
    scalar = array.ndim == 3
    arr = array[..., None] if scalar else array
    lead = idx_xyz.shape[:-1]
    channels = (0, arr.shape[-1]) if channels is None else channels
    out = _trilinear(channels, arr, idx_xyz.reshape(-1, 3))
    out = out.reshape(*lead, channels[1] - channels[0])
    return out[..., 0] if scalar else out


def _corner_index(shape_zyx: tuple[int, int, int], idx: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """Flat indices of each point's 8 corners (x fastest, then y, then z), clamped to the border, and the fractions (N, 3)."""
    nz, ny, nx = shape_zyx
    base = jnp.floor(idx)
    b = base.astype(jnp.int32)
    axes = []
    for a, (n, stride) in enumerate(((nx, 1), (ny, nx), (nz, nx * ny))):
        axes.append((jnp.clip(b[:, a], 0, n - 1) * stride, jnp.clip(b[:, a] + 1, 0, n - 1) * stride))
    lin = [z + y + x for z in axes[2] for y in axes[1] for x in axes[0]]
    return lin, idx - base


def _lerp_corners(c: list[jax.Array], frac: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Trilinear value (N, C) and its derivative along x, y, z (N, C, 3) from the 8 corner values (N, C) (order of _corner_index)."""
    fx, fy, fz = frac[:, 0:1], frac[:, 1:2], frac[:, 2:3]  # (N, 1): broadcast over channels
    dx = [c[i + 1] - c[i] for i in (0, 2, 4, 6)]  # x differences of the 4 (y, z) edges
    e = [c[i] + fx * d for i, d in zip((0, 2, 4, 6), dx)]  # values on those edges
    dxy = [dx[0] + fy * (dx[1] - dx[0]), dx[2] + fy * (dx[3] - dx[2])]
    ey = [e[1] - e[0], e[3] - e[2]]
    f = [e[0] + fy * ey[0], e[2] + fy * ey[1]]  # values on the two z faces
    value = f[0] + fz * (f[1] - f[0])
    grad = jnp.stack([dxy[0] + fz * (dxy[1] - dxy[0]), ey[0] + fz * (ey[1] - ey[0]), f[1] - f[0]], -1)
    return value, grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _trilinear(channels: tuple[int, int], arr: jax.Array, idx: jax.Array) -> jax.Array:
    return _trilinear_fwd(channels, arr, idx)[0]


def _trilinear_fwd(channels, arr, idx):
    lin, frac = _corner_index(arr.shape[:3], idx)
    flat = arr.reshape(-1, arr.shape[-1])
    rows = flat[:, channels[0]:channels[1]]
    # one gather of rows per corner, then lerps (the spatial derivative from the same corners)
    value, grad = _lerp_corners([rows.at[i].get(mode="promise_in_bounds") for i in lin], frac)  # i is clamped
    return value, (grad, idx, frac, arr.shape)


def _trilinear_bwd(channels, res, g):
    grad, idx, frac, shape = res
    d_idx = jnp.sum(g[:, :, None] * grad, axis=1)
    # the array's gradient: each point adds its 2 x 2 x 2 block of weighted cotangents, one scatter of blocks (XLA's
    # CPU scatter is a loop over updates: 8x fewer than a row per corner) into the array padded by one voxel on each
    # side, whose padding then folds onto the border voxels it stands for (the forward's clamped corners)
    n_zyx = np.asarray(shape[:3])
    start = jnp.clip(jnp.floor(idx[:, ::-1]).astype(jnp.int32), -1, n_zyx - 1) + 1  # (N, 3) z, y, x in the padded array
    fz, fy, fx = (jnp.stack([1 - f, f], -1) for f in (frac[:, 2], frac[:, 1], frac[:, 0]))
    blocks = fz[:, :, None, None, None] * fy[:, None, :, None, None] * fx[:, None, None, :, None] * g[:, None, None, None, :]
    dims = jax.lax.ScatterDimensionNumbers(update_window_dims=(1, 2, 3, 4), inserted_window_dims=(),
                                           scatter_dims_to_operand_dims=(0, 1, 2))
    padded = jax.lax.scatter_add(jnp.zeros(tuple(n_zyx + 2) + g.shape[-1:], g.dtype), start, blocks, dims,
                                 mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    for axis, n in enumerate(n_zyx):  # fold the padding onto the border: voxel 0 takes pad 0, voxel n - 1 pad n + 1
        at = functools.partial(_along, axis)
        padded = padded[at(slice(1, n + 1))].at[at(0)].add(padded[at(0)]).at[at(n - 1)].add(padded[at(n + 1)])
    pad_c = [(0, 0)] * 3 + [(channels[0], shape[-1] - channels[1])]
    return jnp.pad(padded, pad_c), d_idx


_trilinear.defvjp(_trilinear_fwd, _trilinear_bwd)


def _along(axis: int, index) -> tuple:
    """An index (int or slice) into one axis, every earlier axis whole."""
    return (slice(None),) * axis + (index,)


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


def warp_volume(moving: Volume, displacement: Volume, *, order: int = 1, default_value: float = 0.0) -> Volume:
    """Resample moving onto the field's grid through ``T(p) = p + u(p)`` (ITK Resample semantics).

    Args:
      moving: scalar Volume (z, y, x) on any grid.
      displacement: field Volume (z, y, x, 3) in mm on the fixed grid.
      order: 1 linear (images), 0 nearest (label maps; the dtype is kept).
      default_value: value where ``T(p)`` falls outside the moving image.

    Returns:
      Volume on the fixed grid: float32 for order 1, moving's dtype for order 0.
    """
    out = warp_array(moving, displacement, order, default_value)
    if order == 0:
        out = np.asarray(out).astype(np.asarray(moving.array).dtype)
    return make_volume(np.asarray(out), displacement.spacing_mm, displacement.origin_mm, displacement.direction)


@jax.jit(static_argnums=(2, 3))
def warp_array(moving: Volume, displacement: Volume, order: int, default_value: float) -> jax.Array:
    """The array of :func:`warp_volume` (z, y, x) on the field's grid, jitted (composable inside other programs)."""
    pts = world_grid(displacement) + jnp.asarray(displacement.array, jnp.float32)
    if order == 1:
        moving = moving.with_array(jnp.asarray(moving.array, jnp.float32))
    return sample_world(moving, pts, order=order, default_value=default_value)


def resample_field(field: Volume, grid: Volume, order: int = 1) -> jax.Array:
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

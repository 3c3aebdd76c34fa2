"""Cubic B-splines (elastix's transform): values of a coefficient grid at continuous indices, and on a
level grid whose nodes sit on every ``factor``-th voxel, with hand-written VJPs that read and scatter one
block of 4 x 4 x 4 coefficients per point. Products are in full float32 on every backend."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def gather_bspline(coefficients: jax.Array, idx_xyz: jax.Array) -> jax.Array:
    """Cubic B-spline (z, y, x, C) coefficients evaluated at continuous indices (N, 3) (x, y, z order): (N, C).

    The field ``sum_ijk c_ijk B(x - i) B(y - j) B(z - k)`` with B the cubic B-spline, the
    coefficients on the integer grid (elastix's B-spline transform); past the grid the coefficients
    are clamped to the border ones. Each point reads one 4 x 4 x 4 block (a single gather from the
    coefficients padded by their border values, 2-3x faster than 64 gathers on CPU). Differentiable in both
    arguments (a custom VJP: the coefficients' gradient as one product of per-axis weight matrices,
    (nz ny, N) x (N, nx C), instead of a scatter of 64 N updates: memory O(N (nz ny + nx C)), so it is
    meant for coarse coefficient grids such as the image stage's 40 mm nodes).
    """
    return _bspline(coefficients, idx_xyz)


def bspline_on_grid(coefficients: jax.Array, voxel_xyz: jax.Array, grid_shape_zyx, factor: int) -> jax.Array:
    """Cubic B-spline (z, y, x, C) coefficients with nodes every ``factor`` voxels of a (z, y, x) grid, at integer
    voxels (N, 3) (x, y, z order) of that grid: (N, C), equal to ``gather_bspline(coefficients, voxel_xyz / factor)``.

    Faster for many points: the spline is first summed along z at every z voxel (a (nz, ny', nx', C) table
    of the coefficient grid's size times ``factor``), so each point then reads one 4 x 4 block of it.
    Differentiable in the coefficients (a custom VJP: :func:`gather_bspline`'s product of per-axis weight
    matrices; autodiff of the table's gather spent most of an image-stage step transposing its (N, 4, 4, C)
    cotangent); the voxels are integers and get no gradient.
    """
    return _bspline_grid(coefficients, voxel_xyz, tuple(int(n) for n in grid_shape_zyx), int(factor))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bspline_grid(coefficients, voxel_xyz, grid_shape_zyx, factor):
    nzc, nyc, nxc, _ = coefficients.shape
    z = jnp.arange(grid_shape_zyx[0], dtype=jnp.float32)[:, None] / factor
    (nodes_z,), wz, _, _ = _bspline_support((nzc,), z)
    table = sum(wz[:, 0, a, None, None, None] * coefficients[nodes_z[:, a]] for a in range(4))  # (nz, nyc, nxc, C)
    _, w, _, first = _bspline_support((nyc, nxc), voxel_xyz[:, :2].astype(jnp.float32) / factor)
    start = jnp.stack([voxel_xyz[:, 2].astype(jnp.int32), first[:, 1], first[:, 0]], -1)
    blocks = _support_blocks(table, start, (False, True, True))  # (N, 4, 4, C)
    return jnp.einsum("nyxc,ny,nx->nc", blocks, w[:, 1], w[:, 0], precision=jax.lax.Precision.HIGHEST)


def _bspline_grid_fwd(coefficients, voxel_xyz, grid_shape_zyx, factor):
    return _bspline_grid(coefficients, voxel_xyz, grid_shape_zyx, factor), (coefficients.shape, voxel_xyz)


def _bspline_grid_bwd(grid_shape_zyx, factor, res, g):
    shape, voxel_xyz = res
    nodes, w, _, _ = _bspline_support(shape[:3], voxel_xyz.astype(jnp.float32) / factor)
    return _coefficient_gradient(shape, nodes, w, g), None


_bspline_grid.defvjp(_bspline_grid_fwd, _bspline_grid_bwd)


def _support_blocks(values: jax.Array, start_zyx: jax.Array, spline_axes: tuple[bool, bool, bool]) -> jax.Array:
    """Per point, the (z, y, x, C) values from ``start_zyx`` (N, 3): 4 along each spline axis (its start the
    first node's index, in ``[-2, n - 1]``; past the grid the border values repeat), 1 along the others (an
    index into the axis, which is dropped). One gather; (N, 4 per spline axis, C)."""
    padded = jnp.pad(values, [(2, 3) if a else (0, 0) for a in spline_axes] + [(0, 0)], mode="edge")
    dims = jax.lax.GatherDimensionNumbers(offset_dims=tuple(range(1, 2 + sum(spline_axes))), start_index_map=(0, 1, 2),
                                          collapsed_slice_dims=tuple(i for i, a in enumerate(spline_axes) if not a))
    shift = jnp.asarray([2 if a else 0 for a in spline_axes], jnp.int32)  # the padding below each spline axis
    return jax.lax.gather(padded, start_zyx + shift, dims, slice_sizes=tuple(4 if a else 1 for a in spline_axes) + values.shape[-1:],
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _bspline_weights(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cubic B-spline weights (..., 4) of the nodes at offsets -1, 0, 1, 2 from floor, for fractions t (...), and their derivatives."""
    w = jnp.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], -1) / 6.0
    dw = jnp.stack([-3 * (1 - t) ** 2, 9 * t**2 - 12 * t, -9 * t**2 + 6 * t + 3, 3 * t**2], -1) / 6.0
    return w, dw


def _bspline_support(shape_zyx, idx_xyz: jax.Array):
    """Per axis of idx (x, y, z order, one per axis of shape_zyx): the 4 clamped node indices (N, 4), their
    weights and weight derivatives (N, 4), and the first node's unclamped index (N, axes) in ``[-2, n - 1]``.

    Indices are first clipped to ``[-1, n]``: past that the clamped spline is constant (its value and
    gradient there equal those at the clip), so every support starts at most one node outside the grid.
    """
    x = jnp.clip(idx_xyz, -1.0, jnp.asarray(shape_zyx[::-1], idx_xyz.dtype))
    base = jnp.floor(x)
    w, dw = _bspline_weights(x - base)  # (N, 3, 4)
    first = base.astype(jnp.int32) - 1
    nodes = [jnp.clip(first[:, a, None] + jnp.arange(4), 0, n - 1) for a, n in enumerate(shape_zyx[::-1])]
    return nodes, w, dw, first


@jax.custom_vjp
def _bspline(coefficients, idx_xyz):
    return _bspline_fwd(coefficients, idx_xyz)[0]


def _bspline_fwd(coefficients, idx_xyz):
    nodes, w, dw, first = _bspline_support(coefficients.shape[:3], idx_xyz)
    rows = _support_blocks(coefficients, first[:, ::-1], (True, True, True)).reshape(len(idx_xyz), 64, -1)
    weights = (w[:, 2, :, None, None] * w[:, 1, None, :, None] * w[:, 0, None, None, :]).reshape(-1, 64)
    return jnp.einsum("nk,nkc->nc", weights, rows, precision=jax.lax.Precision.HIGHEST), (coefficients, nodes, w, dw, rows)


def _coefficient_gradient(shape, nodes, w, g):
    """Gradient (z, y, x, C) of the coefficients of a B-spline of ``shape`` from its points' cotangents g (N, C), given
    their :func:`_bspline_support` nodes and weights: one (nz ny, N) x (N, nx C) product of per-axis weight matrices
    instead of a scatter of 64 N updates (memory O(N (nz ny + nx C)): meant for coarse coefficient grids)."""
    (ix, iy, iz), (nz, ny, nx, c) = nodes, shape

    def dense(nodes, weights, n):  # (N, n): the 4 weights placed at their (clamped, so possibly repeated) nodes
        return jnp.sum(weights[:, :, None] * (nodes[:, :, None] == jnp.arange(n)), axis=1)

    zy = (dense(iz, w[:, 2], nz)[:, :, None] * dense(iy, w[:, 1], ny)[:, None, :]).reshape(len(g), nz * ny)
    xg = (dense(ix, w[:, 0], nx)[:, :, None] * g[:, None, :]).reshape(len(g), nx * c)
    return jnp.matmul(zy.T, xg, precision=jax.lax.Precision.HIGHEST).reshape(nz, ny, nx, c)


def _bspline_bwd(res, g):
    coefficients, nodes, w, dw, rows = res
    d_coef = _coefficient_gradient(coefficients.shape, nodes, w, g)
    rg = jnp.einsum("nkc,nc->nk", rows, g, precision=jax.lax.Precision.HIGHEST).reshape(-1, 4, 4, 4)  # (N, z, y, x) corner values along g
    d_idx = jnp.stack([jnp.einsum("nzyx,nz,ny,nx->n", rg, *(dw[:, a] if a == axis else w[:, a] for a in (2, 1, 0)),
                                  precision=jax.lax.Precision.HIGHEST)
                       for axis in (0, 1, 2)], -1)
    return d_coef, d_idx


_bspline.defvjp(_bspline_fwd, _bspline_bwd)

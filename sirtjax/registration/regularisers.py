"""Regularisers of a displacement field: the spring model, diffusion and bending energy.

Fields are ``(z, y, x, 3)`` arrays of displacements in mm (world x, y, z components) on a grid with
spacing ``spacing_mm`` (x, y, z order) and ``direction``; every energy is spacing-aware and
invariant to the grid's orientation. An optional stiffness map ``(z, y, x)`` weights the energy
locally (thesis 6.5: a stiffer or softer liver than its surroundings). All energies are means, so
their size does not depend on the number of voxels. On a grid padded past ``valid_zyx`` voxels
(:mod:`~sirtjax.registration.padding`) they are means over the valid part only: the springs, diffusion and the
folding barrier equal those of the unpadded field exactly; bending reads the linearly extrapolated padding, so
at the valid border its second differences are approximate (not the one-sided ones of an unpadded grid).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration.padding import extend, valid_count, valid_mask

NEIGHBOURHOODS = (6, 26)


def neighbour_offsets(neighbourhood: int) -> tuple[tuple[int, int, int], ...]:
    """Half of the 6- or 26-neighbourhood as (dx, dy, dz) index offsets (each spring counted once)."""
    if neighbourhood == 6:
        return ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    if neighbourhood == 26:
        offs = [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]
        return tuple((o[2], o[1], o[0]) for o in offs)
    raise ValueError(f"neighbourhood must be 6 or 26, got {neighbourhood}")


@functools.partial(jax.jit, static_argnames="neighbourhood")  # eager callers: one program, not op by op
def spring_energy(
    displacement_mm: jax.Array,
    spacing_mm: jax.Array,
    direction: jax.Array,
    *,
    rest_matrix: jax.Array | None = None,
    stiffness: jax.Array | None = None,
    neighbourhood: int = 26,
    valid_zyx: jax.Array | None = None,
) -> jax.Array:
    """Spring model (thesis 5.3.3): neighbouring voxels joined by springs that resist length change.

    A spring joins voxel x and its neighbour x + o. Deformed, it spans
    ``e = M dp + u(x + o) - u(x)`` where ``dp`` is the world offset between the voxel centres and
    ``M`` the rest matrix (the affine stage's matrix: springs are at rest under the affine, so the
    non-rigid stage does not undo it; identity when None). Its energy is the squared strain
    ``(|e| / |M dp| - 1)^2`` (dimensionless, spacing-aware), weighted by the mean stiffness of its two
    voxels. Returns the mean over all springs of the neighbourhood (6: face neighbours, 26: also
    edge and corner neighbours, which also resist shear). Grids with one voxel along an axis simply
    have no springs along it; a grid without springs gives 0. ``valid_zyx``: only springs between valid
    voxels count (a padded grid). Differentiable in the field, the rest matrix and the stiffness (a
    hand-written VJP: autodiff of the sum over neighbour offsets was 3x slower than the energy and its
    gradient written out).
    """
    d = jnp.asarray(direction, jnp.float32) * jnp.asarray(spacing_mm, jnp.float32)
    m = jnp.eye(3, dtype=jnp.float32) if rest_matrix is None else jnp.asarray(rest_matrix, jnp.float32)
    shape = displacement_mm.shape[:3]
    k = jnp.ones(shape, jnp.float32) if stiffness is None else jnp.asarray(stiffness, jnp.float32)
    offsets = tuple(o for o in neighbour_offsets(neighbourhood) if all(n > abs(a) for n, a in zip(shape, o[::-1])))
    if not offsets:
        return jnp.float32(0.0)
    if valid_zyx is None:
        valid = jnp.ones(shape, jnp.float32)
        count = sum(int(np.prod([n - abs(a) for n, a in zip(shape, o[::-1])])) for o in offsets)
    else:
        valid = valid_mask(shape, valid_zyx)
        count = sum(valid_count(jnp.maximum(valid_zyx - np.abs(np.asarray(o[::-1])), 0)) for o in offsets)
    exact = jax.lax.Precision.HIGHEST  # full float32 on a GPU too (not TF32)
    rests = jnp.matmul(m, jnp.matmul(d, jnp.asarray(np.asarray(offsets, np.float32).T), precision=exact),
                       precision=exact).T  # (n, 3) deformed rest vectors
    u = jnp.moveaxis(jnp.asarray(displacement_mm, jnp.float32), -1, 0)  # (3, z, y, x): contiguous components
    total = _spring_sum(offsets, u, rests, k, valid)
    return total / jnp.maximum(count, 1)


def _spring_slices(offset_xyz, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(z, y, x) slices of the springs' first voxels x and of their neighbours x + o."""
    o = offset_xyz[::-1]
    first = tuple(slice(max(-a, 0), n - max(a, 0)) for a, n in zip(o, shape))
    second = tuple(slice(max(a, 0), n - max(-a, 0)) for a, n in zip(o, shape))
    return first, second


def _springs(offsets, u, rests, k, valid):
    """Per offset: slices, spring vector e (3, ...), its length, the rest length, whether both ends are valid and the
    springs' stiffness (0 where not)."""
    shape = k.shape
    for i, o in enumerate(offsets):
        first, second = _spring_slices(o, shape)
        e = rests[i][:, None, None, None] + u[(slice(None), *second)] - u[(slice(None), *first)]
        length = jnp.sqrt(e[0] ** 2 + e[1] ** 2 + e[2] ** 2 + 1e-12)
        both = valid[first] * valid[second]
        yield first, second, e, length, jnp.linalg.norm(rests[i]), both, 0.5 * (k[first] + k[second]) * both


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _spring_sum(offsets, u, rests, k, valid):
    """Sum over springs between valid voxels of stiffness * strain^2 for displacement components u (3, z, y, x)."""
    return sum(jnp.sum(ks * (length / rest - 1.0) ** 2) for *_, length, rest, _, ks in _springs(offsets, u, rests, k, valid))


def _spring_sum_fwd(offsets, u, rests, k, valid):
    return _spring_sum(offsets, u, rests, k, valid), (u, rests, k, valid)


def _spring_sum_bwd(offsets, res, g):
    u, rests, k, valid = res
    du, dk, drests = jnp.zeros_like(u), jnp.zeros_like(k), []
    for i, (first, second, e, length, rest, both, ks) in enumerate(_springs(offsets, u, rests, k, valid)):
        strain = length / rest - 1.0
        de = (2.0 * g * ks * strain / (rest * length))[None] * e  # d(k s^2)/de
        du = du.at[(slice(None), *second)].add(de).at[(slice(None), *first)].add(-de)
        half = 0.5 * g * strain**2 * both
        dk = dk.at[first].add(half).at[second].add(half)
        # e depends on the rest vector r directly, and the rest length |r| divides the strain
        drests.append(jnp.sum(de, axis=(1, 2, 3)) - jnp.sum(2.0 * g * ks * strain * length) / rest**3 * rests[i])
    return du, jnp.stack(drests), dk, jnp.zeros_like(valid)


_spring_sum.defvjp(_spring_sum_fwd, _spring_sum_bwd)


def _gradient(displacement_mm: jax.Array, spacing_mm: jax.Array) -> list[jax.Array]:
    """Central-difference derivatives along the index axes x, y, z (mm/mm), each (z, y, x, 3)."""
    sp = jnp.asarray(spacing_mm, jnp.float32)
    out = []
    for axis_xyz in range(3):
        axis = 2 - axis_xyz
        if displacement_mm.shape[axis] < 2:
            out.append(jnp.zeros_like(displacement_mm))
        else:
            out.append(jnp.gradient(displacement_mm, axis=axis) / sp[axis_xyz])
    return out


def _weighted_mean(energy: jax.Array, stiffness: jax.Array | None, valid_zyx: jax.Array | None) -> jax.Array:
    weighted = energy if stiffness is None else stiffness * energy
    if valid_zyx is None:
        return jnp.mean(weighted)
    return jnp.sum(weighted * valid_mask(energy.shape, valid_zyx)) / valid_count(valid_zyx)


def diffusion_energy(displacement_mm: jax.Array, spacing_mm: jax.Array, *, stiffness: jax.Array | None = None,
                     valid_zyx: jax.Array | None = None) -> jax.Array:
    """Diffusion energy: mean over voxels of the squared Frobenius norm of the field's Jacobian (dimensionless)."""
    grads = _gradient(_extended(displacement_mm, valid_zyx), spacing_mm)
    energy = sum(jnp.sum(g * g, axis=-1) for g in grads)
    return _weighted_mean(energy, stiffness, valid_zyx)


def bending_energy(displacement_mm: jax.Array, spacing_mm: jax.Array, *, stiffness: jax.Array | None = None,
                   valid_zyx: jax.Array | None = None) -> jax.Array:
    """Bending energy: mean over voxels of the sum of squared second derivatives (1/mm^2), mixed terms twice."""
    grads = _gradient(_extended(displacement_mm, valid_zyx), spacing_mm)
    energy = 0.0
    for a in range(3):
        second = _gradient(grads[a], spacing_mm)
        for b in range(3):
            energy = energy + jnp.sum(second[b] ** 2, axis=-1)  # (a, b) and (b, a) both counted
    return _weighted_mean(energy, stiffness, valid_zyx)


def _extended(displacement_mm: jax.Array, valid_zyx: jax.Array | None) -> jax.Array:
    """The field with its padding past ``valid_zyx`` linearly extrapolated (unchanged without padding)."""
    return displacement_mm if valid_zyx is None else extend(displacement_mm, valid_zyx, linear=True)


def folding_penalty(
    displacement_mm: jax.Array, spacing_mm: jax.Array, direction: jax.Array, *,
    rest_matrix: jax.Array | None = None, margin: float = 0.1, valid_zyx: jax.Array | None = None,
) -> jax.Array:
    """Mean over voxels of ``relu(margin - det J)^2``, J the world Jacobian of ``p -> M p + u(p)`` (M the rest matrix).

    A barrier against folding (det J <= 0): the spring model alone cannot see it, since a spring
    turned inside out keeps its length. Zero wherever the map keeps at least ``margin`` of the
    local volume. Differences as :func:`sirtjax.metrics.jacobian_determinant` (central inside,
    one-sided at the edges, through a linearly extrapolated border: a liver cut by the field of
    view lies on the edge). ``valid_zyx``: the mean over the valid voxels of a padded grid, the border
    extrapolated at their edge. Differentiable in the field only (a hand-written VJP through the
    cofactors; autodiff was 5x the forward pass); the rest matrix, spacing and direction are
    constants. Grids of one voxel along an axis give 0.
    """
    shape = displacement_mm.shape[:3]
    if min(shape) < 2:
        return jnp.float32(0.0)
    u = jnp.moveaxis(_extended(jnp.asarray(displacement_mm, jnp.float32), valid_zyx), -1, 0)  # (3, z, y, x)
    u = jnp.pad(u, ((0, 0), (1, 1), (1, 1), (1, 1)), mode="reflect", reflect_type="odd")  # 2 u[0] - u[1] outside
    m = jnp.eye(3, dtype=jnp.float32) if rest_matrix is None else jnp.asarray(rest_matrix, jnp.float32)
    index_per_mm = jnp.asarray(direction, jnp.float32).T / jnp.asarray(spacing_mm, jnp.float32)[:, None]
    valid = jnp.ones(shape, jnp.float32) if valid_zyx is None else valid_mask(shape, valid_zyx)
    count = np.prod(shape) if valid_zyx is None else valid_count(valid_zyx)
    return _fold_sum(jax.lax.stop_gradient(m), jax.lax.stop_gradient(index_per_mm), u, valid, margin) / count


_INNER = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))


def _shifted(axis: int, step: int) -> tuple[slice, ...]:
    """Slices of u (3, z, y, x) picking the interior voxels' neighbours at +-1 along an array axis."""
    return tuple((slice(2, None) if step > 0 else slice(None, -2)) if k == axis else sl for k, sl in enumerate(_INNER))


def _fold_parts(m, index_per_mm, u, valid, margin):
    """The interior Jacobians' cofactors and the barrier's slope relu(margin - det) (0 off the valid voxels)."""
    d_index = [0.5 * (u[_shifted(axis, 1)] - u[_shifted(axis, -1)]) for axis in (3, 2, 1)]  # d/d index x, y, z
    j = [[m[c, w] + sum(d_index[a][c] * index_per_mm[a, w] for a in range(3)) for w in range(3)] for c in range(3)]
    cof = [[j[(c + 1) % 3][(w + 1) % 3] * j[(c + 2) % 3][(w + 2) % 3] - j[(c + 1) % 3][(w + 2) % 3] * j[(c + 2) % 3][(w + 1) % 3]
            for w in range(3)] for c in range(3)]
    det = j[0][0] * cof[0][0] + j[0][1] * cof[0][1] + j[0][2] * cof[0][2]
    return cof, jnp.maximum(margin - det, 0.0) * valid


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fold_sum(m, index_per_mm, u, valid, margin):
    """Sum over the valid interior voxels of relu(margin - det J)^2."""
    return jnp.sum(_fold_parts(m, index_per_mm, u, valid, margin)[1] ** 2)


def _fold_sum_fwd(m, index_per_mm, u, valid, margin):
    return _fold_sum(m, index_per_mm, u, valid, margin), (m, index_per_mm, u, valid)


def _fold_sum_bwd(margin, res, g):
    m, index_per_mm, u, valid = res
    cof, slack = _fold_parts(m, index_per_mm, u, valid, margin)
    d_det = -2.0 * g * slack  # d(slack^2)/d det; d det / d J[c][w] = cof[c][w]
    du = jnp.zeros_like(u)
    for a, axis in enumerate((3, 2, 1)):
        # d det / d(du_c / d index_a) = sum_w cof[c][w] * index_per_mm[a, w]; central difference: +-0.5
        g_a = jnp.stack([0.5 * d_det * sum(cof[c][w] * index_per_mm[a, w] for w in range(3)) for c in range(3)])
        du = du.at[_shifted(axis, 1)].add(g_a).at[_shifted(axis, -1)].add(-g_a)
    return jnp.zeros_like(m), jnp.zeros_like(index_per_mm), du, jnp.zeros_like(valid)


_fold_sum.defvjp(_fold_sum_fwd, _fold_sum_bwd)


def stiffness_map(mask: jax.Array, *, inside: float, outside: float = 1.0) -> jax.Array:
    """Spatial stiffness (z, y, x) from a soft or binary mask: ``outside + (inside - outside) * mask``."""
    return outside + (inside - outside) * jnp.asarray(mask, jnp.float32)


def regulariser(
    kind: str,
    displacement_mm: jax.Array,
    spacing_mm: jax.Array,
    direction: jax.Array,
    *,
    rest_matrix: jax.Array | None = None,
    stiffness: jax.Array | None = None,
    neighbourhood: int = 26,
    valid_zyx: jax.Array | None = None,
) -> jax.Array:
    """Dispatch to 'spring', 'diffusion' or 'bending' (see each); a scalar energy."""
    if kind == "spring":
        return spring_energy(displacement_mm, spacing_mm, direction, rest_matrix=rest_matrix,
                             stiffness=stiffness, neighbourhood=neighbourhood, valid_zyx=valid_zyx)
    if kind == "diffusion":
        return diffusion_energy(displacement_mm, spacing_mm, stiffness=stiffness, valid_zyx=valid_zyx)
    if kind == "bending":
        return bending_energy(displacement_mm, spacing_mm, stiffness=stiffness, valid_zyx=valid_zyx)
    raise ValueError(f"unknown regulariser '{kind}' (use spring, diffusion or bending)")

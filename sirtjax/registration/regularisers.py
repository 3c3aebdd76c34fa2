"""Regularisers of a displacement field: the spring model, diffusion and bending energy.

Fields are ``(z, y, x, 3)`` arrays of displacements in mm (world x, y, z components) on a grid with
spacing ``spacing_mm`` (x, y, z order) and ``direction``; every energy is spacing-aware and
invariant to the grid's orientation. An optional stiffness map ``(z, y, x)`` weights the energy
locally (thesis 6.5: a stiffer or softer liver than its surroundings). All energies are means, so
their size does not depend on the number of voxels.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

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
) -> jax.Array:
    """Spring model (thesis 5.3.3): neighbouring voxels joined by springs that resist length change.

    A spring joins voxel x and its neighbour x + o. Deformed, it spans
    ``e = M dp + u(x + o) - u(x)`` where ``dp`` is the world offset between the voxel centres and
    ``M`` the rest matrix (the affine stage's matrix: springs are at rest under the affine, so the
    non-rigid stage does not undo it; identity when None). Its energy is the squared strain
    ``(|e| / |M dp| - 1)^2`` (dimensionless, spacing-aware), weighted by the mean stiffness of its two
    voxels. Returns the mean over all springs of the neighbourhood (6: face neighbours, 26: also
    edge and corner neighbours, which also resist shear). Grids with one voxel along an axis simply
    have no springs along it; a grid without springs gives 0. Differentiable in the field, the
    rest matrix and the stiffness (a hand-written VJP: autodiff of the sum over neighbour offsets
    was 3x slower than the energy and its gradient written out).
    """
    d = jnp.asarray(direction, jnp.float32) * jnp.asarray(spacing_mm, jnp.float32)
    m = jnp.eye(3, dtype=jnp.float32) if rest_matrix is None else jnp.asarray(rest_matrix, jnp.float32)
    shape = displacement_mm.shape[:3]
    k = jnp.ones(shape, jnp.float32) if stiffness is None else jnp.asarray(stiffness, jnp.float32)
    offsets = tuple(o for o in neighbour_offsets(neighbourhood) if all(n > abs(a) for n, a in zip(shape, o[::-1])))
    if not offsets:
        return jnp.float32(0.0)
    count = sum(int(np.prod([n - abs(a) for n, a in zip(shape, o[::-1])])) for o in offsets)
    rests = (m @ (d @ jnp.asarray(np.asarray(offsets, np.float32).T))).T  # (n, 3) deformed rest vectors
    u = jnp.moveaxis(jnp.asarray(displacement_mm, jnp.float32), -1, 0)  # (3, z, y, x): contiguous components
    total = _spring_sum(offsets, u, rests, k)
    return total / count


def _spring_slices(offset_xyz, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(z, y, x) slices of the springs' first voxels x and of their neighbours x + o."""
    o = offset_xyz[::-1]
    first = tuple(slice(max(-a, 0), n - max(a, 0)) for a, n in zip(o, shape))
    second = tuple(slice(max(a, 0), n - max(-a, 0)) for a, n in zip(o, shape))
    return first, second


def _springs(offsets, u, rests, k):
    """Per offset: slices, spring vector e (3, ...), its length, the rest length and the springs' stiffness."""
    shape = k.shape
    for i, o in enumerate(offsets):
        first, second = _spring_slices(o, shape)
        e = rests[i][:, None, None, None] + u[(slice(None), *second)] - u[(slice(None), *first)]
        length = jnp.sqrt(e[0] ** 2 + e[1] ** 2 + e[2] ** 2 + 1e-12)
        yield first, second, e, length, jnp.linalg.norm(rests[i]), 0.5 * (k[first] + k[second])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _spring_sum(offsets, u, rests, k):
    """Sum over springs of stiffness * strain^2 for displacement components u (3, z, y, x)."""
    return sum(jnp.sum(ks * (length / rest - 1.0) ** 2) for _, _, _, length, rest, ks in _springs(offsets, u, rests, k))


def _spring_sum_fwd(offsets, u, rests, k):
    return _spring_sum(offsets, u, rests, k), (u, rests, k)


def _spring_sum_bwd(offsets, res, g):
    u, rests, k = res
    du, dk, drests = jnp.zeros_like(u), jnp.zeros_like(k), []
    for i, (first, second, e, length, rest, ks) in enumerate(_springs(offsets, u, rests, k)):
        strain = length / rest - 1.0
        de = (2.0 * g * ks * strain / (rest * length))[None] * e  # d(k s^2)/de
        du = du.at[(slice(None), *second)].add(de).at[(slice(None), *first)].add(-de)
        half = 0.5 * g * strain**2
        dk = dk.at[first].add(half).at[second].add(half)
        # e depends on the rest vector r directly, and the rest length |r| divides the strain
        drests.append(jnp.sum(de, axis=(1, 2, 3)) - jnp.sum(2.0 * g * ks * strain * length) / rest**3 * rests[i])
    return du, jnp.stack(drests), dk


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


def _weighted_mean(energy: jax.Array, stiffness: jax.Array | None) -> jax.Array:
    return jnp.mean(energy if stiffness is None else stiffness * energy)


def diffusion_energy(displacement_mm: jax.Array, spacing_mm: jax.Array, *, stiffness: jax.Array | None = None) -> jax.Array:
    """Diffusion energy: mean over voxels of the squared Frobenius norm of the field's Jacobian (dimensionless)."""
    grads = _gradient(displacement_mm, spacing_mm)
    energy = sum(jnp.sum(g * g, axis=-1) for g in grads)
    return _weighted_mean(energy, stiffness)


def bending_energy(displacement_mm: jax.Array, spacing_mm: jax.Array, *, stiffness: jax.Array | None = None) -> jax.Array:
    """Bending energy: mean over voxels of the sum of squared second derivatives (1/mm^2), mixed terms twice."""
    grads = _gradient(displacement_mm, spacing_mm)
    energy = 0.0
    for a in range(3):
        second = _gradient(grads[a], spacing_mm)
        for b in range(3):
            energy = energy + jnp.sum(second[b] ** 2, axis=-1)  # (a, b) and (b, a) both counted
    return _weighted_mean(energy, stiffness)


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
) -> jax.Array:
    """Dispatch to 'spring', 'diffusion' or 'bending' (see each); a scalar energy."""
    if kind == "spring":
        return spring_energy(displacement_mm, spacing_mm, direction, rest_matrix=rest_matrix,
                             stiffness=stiffness, neighbourhood=neighbourhood)
    if kind == "diffusion":
        return diffusion_energy(displacement_mm, spacing_mm, stiffness=stiffness)
    if kind == "bending":
        return bending_energy(displacement_mm, spacing_mm, stiffness=stiffness)
    raise ValueError(f"unknown regulariser '{kind}' (use spring, diffusion or bending)")

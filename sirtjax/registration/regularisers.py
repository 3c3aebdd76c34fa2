"""Regularisers of a displacement field: the spring model, diffusion and bending energy.

Fields are ``(z, y, x, 3)`` arrays of displacements in mm (world x, y, z components) on a grid with
spacing ``spacing_mm`` (x, y, z order) and ``direction``; every energy is spacing-aware and
invariant to the grid's orientation. An optional stiffness map ``(z, y, x)`` weights the energy
locally (thesis 6.5: a stiffer or softer liver than its surroundings). All energies are means, so
their size does not depend on the number of voxels.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

NEIGHBOURHOODS = (6, 26)


def neighbour_offsets(neighbourhood: int) -> tuple[tuple[int, int, int], ...]:
    """Half of the 6- or 26-neighbourhood as (dx, dy, dz) index offsets (each spring counted once)."""
    if neighbourhood == 6:
        return ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    if neighbourhood == 26:
        offs = [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]
        return tuple((o[2], o[1], o[0]) for o in offs)
    raise ValueError(f"neighbourhood must be 6 or 26, got {neighbourhood}")


def _pair(array: jax.Array, offset_xyz: tuple[int, int, int], lead: int = 0) -> tuple[jax.Array, jax.Array]:
    """(a, b) views of array ([lead axes,] z, y, x, ...) with b the neighbour of a at the (dx, dy, dz) offset."""
    lo, hi = [slice(None)] * lead, [slice(None)] * lead
    for d in offset_xyz[::-1]:  # (dz, dy, dx) for the (z, y, x) axes
        lo.append(slice(max(-d, 0), -d if d > 0 else None))
        hi.append(slice(max(d, 0), d if d < 0 else None))
    return array[tuple(lo)], array[tuple(hi)]


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
    have no springs along it; a grid without springs gives 0.
    """
    d = jnp.asarray(direction, jnp.float32) * jnp.asarray(spacing_mm, jnp.float32)
    m = jnp.eye(3, dtype=jnp.float32) if rest_matrix is None else rest_matrix
    k = jnp.ones(displacement_mm.shape[:3], jnp.float32) if stiffness is None else jnp.asarray(stiffness, jnp.float32)
    u = jnp.moveaxis(displacement_mm, -1, 0)  # (3, z, y, x): contiguous components vectorise on CPU
    total, count = jnp.float32(0.0), 0
    for o_xyz in neighbour_offsets(neighbourhood):  # 3 or 13 static shifted-array differences
        ka, kb = _pair(k, o_xyz)
        if ka.size == 0:
            continue
        ua, ub = _pair(u, o_xyz, lead=1)
        rest = m @ (d @ jnp.asarray(o_xyz, jnp.float32))
        e = rest[:, None, None, None] + (ub - ua)
        strain = jnp.sqrt(e[0] ** 2 + e[1] ** 2 + e[2] ** 2 + 1e-12) / jnp.linalg.norm(rest) - 1.0
        total = total + jnp.sum(0.5 * (ka + kb) * strain**2)
        count += ka.size
    return total / max(count, 1)


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

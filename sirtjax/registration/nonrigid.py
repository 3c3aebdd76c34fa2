"""The non-rigid stage: a dense displacement field on the level grid on top of the affine.

The parameter is a residual field ``v`` (z, y, x, 3) in mm on the fixed level grid; the transform is
``T(p) = A(p) + v(p)`` with ``A`` the affine stage's result, which is exactly the thesis' "affine
converted into the initial displacement field" with the field's increment as the unknown. The
objective is ``w_I L_I + w_S L_S + w_R L_R`` (thesis 5.3.3): L_I the image term (-MI or SSD), L_S
the overlap SSD of masks / label maps, L_R the regulariser (spring model by default, at rest under
the affine). The field lives on the level's region-of-interest box and its border voxels are
held at 0 (:func:`zero_border`). Between levels the field is upsampled trilinearly (mm values are kept).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from sirtjax.registration.optimise import adam_cosine, make_step
from sirtjax.registration.problem import LevelData, SimilarityOptions, sample_voxels, similarity_terms, voxel_world_mm
from sirtjax.registration.regularisers import regulariser
from sirtjax.registration.warp import affine_apply


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Weights:
    """Loss weights of the non-rigid objective (scalars, or arrays with a leading batch axis for vmap)."""

    image: jax.Array
    seg: jax.Array
    reg: jax.Array


@dataclasses.dataclass(frozen=True)
class RegulariserOptions:
    """Static regulariser choice: 'spring' (6 or 26 neighbours), 'diffusion' or 'bending'."""

    kind: str = "spring"
    neighbourhood: int = 26


def nonrigid_objective(opts: SimilarityOptions, reg: RegulariserOptions, *, image: bool, seg: bool):
    """Objective(v, data, weights, key) = w_I L_I + w_S L_S + w_R L_R and its terms by name."""

    def objective(v, data: LevelData, weights: Weights, key):
        v = zero_border(v)
        idx, w = sample_voxels(data, key, opts)
        pts = affine_apply(data.affine, voxel_world_mm(data.fixed, idx)) + v.reshape(-1, 3)[idx]
        terms = similarity_terms(data, idx, w, pts, opts, image=image, seg=seg)
        terms["reg"] = regulariser(
            reg.kind, v, data.fixed.spacing_mm, data.fixed.direction, rest_matrix=data.affine.matrix,
            stiffness=data.stiffness, neighbourhood=reg.neighbourhood,
        )
        loss = weights.reg * terms["reg"]
        if image:
            loss = loss + weights.image * terms["image"]
        if seg:
            loss = loss + weights.seg * terms["seg"]
        return loss, terms

    return objective



def zero_border(v: jax.Array) -> jax.Array:
    """The field (z, y, x, 3) with its outermost voxel layer set to 0 (axes of 3 or more voxels).

    The residual field is 0 outside its grid (the region-of-interest box); zeroing its border makes
    the springs there tie it to that 0, so the full-resolution field stays continuous.
    """
    for axis in range(3):
        n = v.shape[axis]
        if n >= 3:
            keep = jnp.zeros(n, v.dtype).at[1:-1].set(1.0)
            v = v * keep.reshape((1,) * axis + (n,) + (1,) * (3 - axis))
    return v


@functools.lru_cache(maxsize=64)
def nonrigid_step(opts: SimilarityOptions, reg: RegulariserOptions, image: bool, seg: bool,
                  learning_rate_mm: float, iterations: int):
    """(jit-compiled batched step, optimizer) of the non-rigid stage, built once per static setting."""
    tx = adam_cosine(learning_rate_mm, iterations)
    return make_step(nonrigid_objective(opts, reg, image=image, seg=seg), tx), tx

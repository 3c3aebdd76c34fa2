"""The non-rigid stage: a dense displacement field on the level grid on top of the affine.

The parameter is a residual field ``v`` (z, y, x, 3) in mm on the fixed level grid; the transform is
``T(p) = A(p) + v(p)`` with ``A`` the affine stage's result, which is exactly the thesis' "affine
converted into the initial displacement field" with the field's increment as the unknown. The
objective is ``w_I L_I + w_S L_S + w_R L_R`` (thesis 5.3.3): L_I the image term (-MI or SSD), L_S
the overlap SSD of masks / label maps, L_R the regulariser (spring model by default, at rest under
the affine, plus a barrier against folding: ``RegulariserOptions.fold_weight``). The field lives on the level's region-of-interest box (its border free) and is extended outside
the box by its border values; the regulariser is averaged over the whole level grid as if the
springs outside the box were at rest (an approximation: the extension is constant along the box
normals, so only its tangential variation would strain them). Between levels the field is upsampled trilinearly (mm values are kept).
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from sirtjax.registration.optimise import adam_cosine, make_step
from sirtjax.registration.problem import LevelData, SimilarityOptions, similarity_terms
from sirtjax.registration.regularisers import folding_penalty, regulariser
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
    """Static regulariser choice: 'spring' (6 or 26 neighbours), 'diffusion' or 'bending', plus the weight of
    the folding barrier (:func:`regularisers.folding_penalty`) added to it (0 = none)."""

    kind: str = "spring"
    neighbourhood: int = 26
    fold_weight: float = 0.0


def nonrigid_objective(opts: SimilarityOptions, reg: RegulariserOptions, *, image: bool, seg: bool):
    """Objective(v, data, weights, key) = w_I L_I + w_S L_S + w_R L_R and its terms by name."""

    def objective(v, data: LevelData, weights: Weights, key):
        terms = similarity_terms(data, key, lambda idx, p: affine_apply(data.affine, p) + v.reshape(-1, 3)[idx],
                                 opts, image=image, seg=seg)
        terms["reg"] = regulariser(
            reg.kind, v, data.fixed.spacing_mm, data.fixed.direction, rest_matrix=data.affine.matrix,
            stiffness=data.stiffness, neighbourhood=reg.neighbourhood,
        ) * data.box_fraction  # a mean over the whole level grid, whose springs outside the box are at rest
        if reg.fold_weight:
            terms["fold"] = folding_penalty(v, data.fixed.spacing_mm, data.fixed.direction,
                                            rest_matrix=data.affine.matrix) * data.box_fraction
            terms["reg"] = terms["reg"] + reg.fold_weight * terms["fold"]
        loss = weights.reg * terms["reg"]
        if image:
            loss = loss + weights.image * terms["image"]
        if seg:
            loss = loss + weights.seg * terms["seg"]
        return loss, terms

    return objective


@functools.lru_cache(maxsize=64)
def _nonrigid_step_program(opts: SimilarityOptions, reg: RegulariserOptions, image: bool, seg: bool):
    return make_step(nonrigid_objective(opts, reg, image=image, seg=seg), f"nonrigid {opts} {reg} {image} {seg}")


def nonrigid_step(opts: SimilarityOptions, reg: RegulariserOptions, image: bool, seg: bool, learning_rate_mm: float, iterations: int):
    """(jit-compiled batched step, optimizer) of the non-rigid stage; the step is built once per static
    setting and shared by every learning rate and iteration count (they live in the optimiser state)."""
    return _nonrigid_step_program(opts, reg, image, seg), adam_cosine(learning_rate_mm, iterations)

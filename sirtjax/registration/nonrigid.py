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

With ``field_factor`` f > 1 the field's nodes sit on every f-th voxel of the level grid (same
origin and direction, f times the spacing): the similarity terms still sample the images at the
level's resolution and see the field through trilinear interpolation between the nodes (as
elastix's B-spline control grid is coarser than its images), and the regulariser (springs between
neighbouring nodes, stiffness taken at the nodes) and the folding barrier act on the nodes, so
folding between them is not penalised exactly (the written field's det J is measured on it). With
``field_order`` 3 the nodes hold cubic B-spline coefficients instead of values (elastix's transform):
a smoother field between the same nodes, from 4 x 4 x 4 nodes per sample instead of 2 x 2 x 2.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from sirtjax.interpolate import gather_linear
from sirtjax.registration.bspline import bspline_on_grid
from sirtjax.registration.optimise import make_step
from sirtjax.registration.optimisers import LevelOptimiser, transformation
from sirtjax.registration.padding import extend, nodes_valid
from sirtjax.registration.problem import LevelData
from sirtjax.registration.regularisers import folding_penalty, regulariser
from sirtjax.registration.terms import SimilarityOptions, flat_to_index_xyz, similarity_terms
from sirtjax.registration.warp import affine_apply
from sirtjax.volume import Grid, Volume


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


def field_factor_for(field_spacing_mm: float, resolution_mm: float) -> int:
    """Voxels of a level between the field's nodes: round(field_spacing_mm / resolution_mm), at least 1."""
    return max(1, int(round(field_spacing_mm / resolution_mm)))


def field_shape(shape_zyx, factor: int) -> tuple[int, int, int]:
    """Shape (z, y, x) of the field grid with a node on every ``factor``-th voxel of a level grid of shape_zyx
    (voxels past the last node take its value)."""
    return tuple(-(-int(n) // factor) for n in shape_zyx)


def field_volume(v: jax.Array, grid: Volume, factor: int) -> Volume:
    """The field array v (z', y', x', 3) on its grid: level grid's origin and direction, ``factor`` times its spacing
    (computed on the host: the grid's geometry is concrete)."""
    return Volume(v, np.asarray(grid.spacing_mm) * factor, grid.origin_mm, grid.direction)


def field_grid(level: Volume, factor: int) -> Grid:
    """The grid of the field's nodes on an (unbatched) level: its origin and direction, ``factor`` times its spacing."""
    return Grid(field_shape(level.array.shape[:3], factor), level.spacing_mm * factor, level.origin_mm, level.direction)


def field_at(v: jax.Array, flat_index: jax.Array, level_shape_zyx, factor: int, order: int = 1) -> jax.Array:
    """The residual field (K, 3) mm at flat level-grid voxel indices (K,): a gather, or from the coarse node grid
    trilinearly (``order`` 1: v holds the field's values) or as a cubic B-spline (3: v holds its coefficients)."""
    if factor == 1 and order == 1:
        return v.reshape(-1, 3)[flat_index]
    idx = flat_to_index_xyz(level_shape_zyx, flat_index)
    return gather_linear(v, idx / factor) if order == 1 else bspline_on_grid(v, idx, level_shape_zyx, factor)


def nonrigid_objective(opts: SimilarityOptions, reg: RegulariserOptions, *, image: bool, seg: bool, field_factor: int = 1,
                       field_order: int = 1):
    """Objective(v, data, weights, key) = w_I L_I + w_S L_S + w_R L_R and its terms by name.

    The transform's residual field is ``data.base_field + v``; the springs act on v alone (a field from
    an earlier stage is their rest state), the folding barrier on the whole field. ``field_order`` 3: v
    holds cubic B-spline coefficients (:func:`field_at`); the springs and the barrier then act on the
    coefficients, an approximation of the field's own strain (its control polygon).
    """
    f = field_factor

    def objective(v, data: LevelData, weights: Weights, key):
        shape = data.fixed.array.shape[:3]
        nodes = nodes_valid(data.fixed_size_zyx, f)
        v = extend(v, nodes)  # a padded box: its padding nodes clamp to the valid ones, as the interpolation does at a border
        total = data.base_field + v
        terms = similarity_terms(data, key, lambda idx, p: affine_apply(data.affine, p) + field_at(total, idx, shape, f, field_order),
                                 opts, image=image, seg=seg)
        spacing, stiffness = data.fixed.spacing_mm * f, data.stiffness[::f, ::f, ::f]
        terms["reg"] = regulariser(
            reg.kind, v, spacing, data.fixed.direction, rest_matrix=data.affine.matrix,
            stiffness=stiffness, neighbourhood=reg.neighbourhood, valid_zyx=nodes,
        ) * data.box_fraction  # a mean over the whole level grid, whose springs outside the box are at rest
        if reg.fold_weight:
            terms["fold"] = folding_penalty(total, spacing, data.fixed.direction,
                                            rest_matrix=data.affine.matrix, valid_zyx=nodes) * data.box_fraction
            terms["reg"] = terms["reg"] + reg.fold_weight * terms["fold"]
        loss = weights.reg * terms["reg"]
        if image:
            loss = loss + weights.image * terms["image"]
        if seg:
            loss = loss + weights.seg * terms["seg"]
        return loss, terms

    return objective


@functools.lru_cache(maxsize=64)
def _nonrigid_step_program(opts: SimilarityOptions, reg: RegulariserOptions, image: bool, seg: bool, field_factor: int,
                           field_order: int, optimiser: str):
    name = f"nonrigid {opts} {reg} {image} {seg}" + (f" field/{field_factor}" if field_factor > 1 else "") + (
        f" order {field_order}" if field_order != 1 else "") + f" {optimiser}"
    objective = nonrigid_objective(opts, reg, image=image, seg=seg, field_factor=field_factor, field_order=field_order)
    return make_step(objective, transformation(optimiser, 1.0, 1), name)


def nonrigid_step(opts: SimilarityOptions, reg: RegulariserOptions, image: bool, seg: bool, learning_rate_mm: float,
                  iterations: int, field_factor: int = 1, field_order: int = 1, optimiser: str = "adam"):
    """(jit-compiled batched step, level optimiser) of the non-rigid stage; the step is built once per static
    setting and shared by every learning rate and iteration count (they live in the optimiser state)."""
    step = _nonrigid_step_program(opts, reg, image, seg, field_factor, field_order, optimiser)
    return step, LevelOptimiser(optimiser, learning_rate_mm, iterations)

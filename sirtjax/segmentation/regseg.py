"""The liver on a non-contrast CT from the same patient's contrast CT and its liver mask, by the joint
registration-segmentation network (:class:`sirtjax.models.regseg.RegSegNet`, paper 004).

1. An image-based affine pre-alignment by the registration core (Mattes MI on the whole images, no
   masks: the fixed image has none), batched over the pairs.
2. Both images windowed (CT, [-200, 200] HU to [-0.5, 0.5]) on the *network grid*: a box of the
   model's fixed shape (``grid_zyx``) and spacing, identity direction, centred where the reference
   liver lands in the fixed image by the affine; the moving image and mask reach it through the
   affine. One shape for every patient: one compiled program, and a pair's result does not depend
   on the batch it runs in (a convolution network's output depends on the padding around it).
3. The cascades, in one jitted call for the whole batch.
4. The field on the fixed grid, ``D(p) = A(p + u(p)) - p`` (ITK convention: fixed world -> moving
   world, as ``sirtjax register`` writes it), which warps the reference mask (linear, >= 0.5) into
   the fixed image's segmentation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.buckets import bucket_grid
from sirtjax.programs import Program, ProgramCache
from sirtjax.registration import RegistrationConfig, register_batch
from sirtjax.registration.levels import make_pair
from sirtjax.registration.warp import (AffineTransform, affine_apply, affine_displacement, affine_to_homogeneous,
                                      resample_field, warp_volume)
from sirtjax.segmentation.preprocess import antialias, normalize_intensity, prepare_on
from sirtjax.volume import Grid, Volume, centroid_mm, make_grid, make_volume, world_grid

if TYPE_CHECKING:  # Flax is imported where the network runs: segment --reference imports it beside the pre-alignment
    from sirtjax.models.regseg import RegSegNet, RegSegOutput

# the pre-alignment: the registration core's image-based affine alone
PREALIGN = RegistrationConfig(stages=())


@dataclasses.dataclass(frozen=True)
class NetworkPair:
    """One pair on its network grid: windowed fixed and moving
    images and the moving mask (0..1), each (z, y, x) float32."""

    grid: Grid
    fixed: np.ndarray
    moving: np.ndarray
    moving_mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class RegSegResult:
    """The fixed image's liver mask (uint8, its grid), the field (z, y, x, 3) mm on that grid and the pre-alignment."""

    mask: Volume
    displacement: Volume
    affine: AffineTransform


def prealign(pairs: Sequence[tuple[Volume, Volume]], programs=None) -> list[AffineTransform]:
    """Image-based affines (fixed world -> moving world) of (fixed, moving) pairs, one batched registration."""
    results = register_batch([make_pair(f, m) for f, m in pairs], PREALIGN, programs=programs)
    return [r.affine for r in results]


def network_box(centre_mm: np.ndarray, shape_zyx: Sequence[int], spacing_mm: Sequence[float]) -> Grid:
    """A network grid: identity direction, spacing (x, y, z) mm, centred on centre_mm (x, y, z)."""
    spacing = np.asarray(spacing_mm, np.float64).reshape(3)
    size_xyz = np.asarray(shape_zyx[::-1], np.float64)
    return make_grid(shape_zyx, spacing, np.asarray(centre_mm) - spacing * (size_xyz - 1) / 2, np.eye(3))


def network_pair(fixed: Volume, moving: Volume, moving_mask: Volume, affine: AffineTransform,
                 spacing_mm: Sequence[float], shape_zyx: Sequence[int], programs: ProgramCache | None = None) -> NetworkPair:
    """The network's inputs of one pair (see the module docstring, step 2); images in Hounsfield units. ``programs``:
    where the affine's field on the network grid (one shape for every patient) is kept compiled."""
    liver = np.asarray(moving_mask.array) > 0
    to_fixed = np.linalg.inv(affine_to_homogeneous(affine))  # moving world -> fixed world
    centre = (to_fixed @ np.append(centroid_mm(moving_mask, liver), 1.0))[:3]
    grid = network_box(centre, shape_zyx, spacing_mm)
    through = grid.with_array(np.asarray(_affine_field(affine, grid, programs=programs), np.float32))
    lowest = float(np.min(np.asarray(moving.array)))
    moved = warp_volume(antialias(moving, spacing_mm), through, default_value=lowest, programs=programs)
    mask = warp_volume(moving_mask.with_array(liver.astype(np.float32)), through, programs=programs)
    return NetworkPair(grid, np.asarray(prepare_on(fixed, "ct", grid, interpolate_hu=True, programs=programs).array),
                       normalize_intensity(np.asarray(moved.array), "ct").astype(np.float32),
                       np.asarray(mask.array, np.float32))


@functools.partial(jax.jit, static_argnames=("graphdef", "spacing_mm"))
def run_network(state: Any, fixed: jax.Array, moving: jax.Array, mask: jax.Array, *, graphdef, spacing_mm) -> RegSegOutput:
    """The network's outputs on a batch (N, z, y, x) of network-grid arrays, jitted (one program per shape)."""
    from flax import nnx

    return nnx.merge(graphdef, state)(fixed, moving, mask, spacing_mm)


def _network(graphdef, spacing_mm: tuple[float, ...], state: Any, fixed: jax.Array, moving: jax.Array,
             mask: jax.Array) -> jax.Array:
    """The network's field (N, z, y, x, 3) mm on a batch (N, z, y, x) of network-grid arrays."""
    return run_network(state, fixed, moving, mask, graphdef=graphdef, spacing_mm=spacing_mm).displacement_mm


def network_program(graphdef, spacing_mm: tuple[float, ...]) -> Program:
    """:func:`_network` of a model's graph as a :class:`Program` named by its structure, which a
    :class:`ProgramCache` keeps for later processes."""
    from sirtjax.segmentation.infer import graph_digest

    return Program(functools.partial(_network, graphdef, spacing_mm), f"regseg network {graph_digest(graphdef)} {spacing_mm}")


def network_fields(model: RegSegNet, spacing_mm: Sequence[float], pairs: Sequence[NetworkPair],
                   programs: ProgramCache | None = None) -> np.ndarray:
    """The network fields (N, z, y, x, 3) mm of pairs on grids of one shape, from one call on the batch (through
    ``programs``' executable when given)."""
    from flax import nnx

    stack = lambda name: jax.device_put(np.stack([getattr(p, name) for p in pairs]))
    graphdef, state = nnx.split(model)
    spacing = tuple(float(s) for s in spacing_mm)
    args = (state, stack("fixed"), stack("moving"), stack("moving_mask"))
    if programs is None:
        return np.asarray(_network(graphdef, spacing, *args))
    return np.asarray(network_program(graphdef, spacing)(*args, programs=programs))


def expect_network(model: RegSegNet, spec: dict[str, Any], batch: int, programs: ProgramCache | None) -> None:
    """Start loading (or compiling) the network's executable for a batch in the background (:meth:`ProgramCache.expect`),
    so that it is ready when the pre-alignment ends; nothing without ``programs``."""
    if programs is None:
        return
    from flax import nnx

    graphdef, state = nnx.split(model)
    spacing = tuple(float(s) for s in spec["spacing_mm"])
    image = jax.ShapeDtypeStruct((batch, *(int(n) for n in spec["grid_zyx"])), jnp.float32)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    programs.expect(network_program(graphdef, spacing), (abstract_state, image, image, image))


def _whole_field(field: Volume, affine: AffineTransform, fixed: Grid) -> jax.Array:
    """``A(p + u(p)) - p`` on the points p of ``fixed`` with u the network ``field`` (linear)."""
    p = world_grid(fixed)
    return affine_apply(affine, p + resample_field(field, fixed)) - p


_affine_field = Program(affine_displacement, "regseg affine field")
_whole_field_program = Program(_whole_field, "regseg whole field")


def fixed_field(field_mm: np.ndarray, grid: Grid, affine: AffineTransform, fixed: Volume,
                programs: ProgramCache | None = None) -> Volume:
    """The whole transform as a field on the fixed grid: ``A(p + u(p)) - p`` with u the network field on grid.

    Computed on the fixed grid padded at its high end to its :func:`~sirtjax.buckets.grid_bucket` shape
    and cut back (every point is computed alone), so that patients with similar grids share the compiled program
    that ``programs`` keeps."""
    d = _whole_field_program(grid.with_array(field_mm), affine, bucket_grid(fixed), programs=programs)
    cut = tuple(slice(0, n) for n in fixed.shape)
    return make_volume(np.asarray(d, np.float32)[cut], fixed.spacing_mm, fixed.origin_mm, fixed.direction)


def carry_mask(mask: Volume, displacement: Volume, programs: ProgramCache | None = None) -> Volume:
    """A 0/1 mask warped onto the field's grid through the field (linear, >= 0.5), uint8 (``programs``: where the
    warp is kept compiled)."""
    warped = warp_volume(mask.with_array(np.asarray(mask.array > 0, np.float32)), displacement, programs=programs)
    return warped.with_array((np.asarray(warped.array) >= 0.5).astype(np.uint8))


def regseg_batch(model: RegSegNet, spec: dict[str, Any], cases: Sequence[tuple[Volume, Volume, Volume]], *,
                 programs=None) -> list[RegSegResult]:
    """Segment the fixed image of each (fixed non-contrast CT, moving contrast CT, moving liver mask) case.

    The pre-alignment is one batched registration and the network one call on the whole batch.
    """
    expect_network(model, spec, len(cases), programs)
    affines = prealign([(f, m) for f, m, _ in cases], programs)
    return carry_references(model, spec, cases, affines, programs)


def carry_references(model: RegSegNet, spec: dict[str, Any], cases: Sequence[tuple[Volume, Volume, Volume]],
                     affines: Sequence[AffineTransform], programs=None) -> list[RegSegResult]:
    """:func:`regseg_batch` of cases already pre-aligned by ``affines`` (:func:`prealign`): steps 2-4 of the module
    docstring."""
    spacing = tuple(float(s) for s in spec["spacing_mm"])
    pairs = [network_pair(f, m, mm, a, spacing, spec["grid_zyx"], programs) for (f, m, mm), a in zip(cases, affines)]
    fields = network_fields(model, spacing, pairs, programs)
    out = []
    for (fixed, _, moving_mask), pair, field, affine in zip(cases, pairs, fields, affines):
        disp = fixed_field(field, pair.grid, affine, fixed, programs)
        out.append(RegSegResult(carry_mask(moving_mask, disp, programs), disp, affine))
    return out


def segment_by_reference(model: RegSegNet, spec: dict[str, Any], fixed: Volume, reference: Volume, reference_mask: Volume, *,
                         programs=None) -> RegSegResult:
    """The liver of the non-contrast CT ``fixed`` from the contrast CT ``reference`` and its liver mask (one case)."""
    return regseg_batch(model, spec, [(fixed, reference, reference_mask)], programs=programs)[0]

"""A batch of pairs as the optimiser sees it: guidance channels, pyramids, cropped and padded level data.

:func:`make_pair` turns images and masks or label maps into a :class:`Pair`; :func:`prepare_levels`
builds every pyramid level's :class:`~sirtjax.registration.problem.LevelData`, batched over pairs
(leading axis); :func:`affine_start` gives the affine stage its centre, radius and candidate starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from sirtjax.buckets import bucket, coarse_bucket
from sirtjax.programs import ProgramCache
from sirtjax.registration import init
from sirtjax.registration.config import RegistrationConfig
from sirtjax.registration.problem import LevelData, crop_level, make_level, pad_moving, roi_box, stack_channels, stack_levels
from sirtjax.registration.warp import AffineTransform, one_hot
from sirtjax.volume import Volume, centroid_mm


@dataclasses.dataclass(frozen=True)
class Pair:
    """A fixed and a moving image with optional segmentation channels (z, y, x, C) on their grids."""

    fixed: Volume
    moving: Volume
    fixed_seg: np.ndarray | None = None
    moving_seg: np.ndarray | None = None

    @property
    def n_seg(self) -> int:
        """Number of segmentation channels (0 without guidance)."""
        return 0 if self.fixed_seg is None else int(self.fixed_seg.shape[-1])


def make_pair(
    fixed: Volume,
    moving: Volume,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    fixed_labels: Volume | None = None,
    moving_labels: Volume | None = None,
    label_ids: Sequence[int] | None = None,
) -> Pair:
    """Build a Pair: masks become one channel, label maps one-hot channels of the given ids.

    With label maps, ``label_ids`` defaults to the non-zero ids present in both maps (sorted), so
    a landmark seen in only one image does not pull; label maps take precedence over masks. The
    segmentation arrays must be on the grid of their image.
    """
    for img, seg, name in ((fixed, fixed_mask, "fixed mask"), (moving, moving_mask, "moving mask"),
                           (fixed, fixed_labels, "fixed labels"), (moving, moving_labels, "moving labels")):
        if seg is not None and seg.shape != img.shape:
            raise ValueError(f"{name} shape {seg.shape} differs from its image {img.shape}")
    if (fixed_labels is None) != (moving_labels is None) or (fixed_mask is None) != (moving_mask is None):
        raise ValueError("guidance needs both the fixed and the moving segmentation")
    if fixed_labels is not None:
        fl, ml = np.asarray(fixed_labels.array), np.asarray(moving_labels.array)
        if label_ids is None:
            label_ids = sorted((set(np.unique(fl)) & set(np.unique(ml))) - {0})
        ids = tuple(int(i) for i in label_ids)
        return Pair(fixed, moving, one_hot(fl, ids), one_hot(ml, ids))
    if fixed_mask is not None:
        fm = (np.asarray(fixed_mask.array) != 0).astype(np.float32)[..., None]
        mm = (np.asarray(moving_mask.array) != 0).astype(np.float32)[..., None]
        return Pair(fixed, moving, fm, mm)
    return Pair(fixed, moving)


# field nodes at least this many voxels apart: the node grid, where a step's cost grows with the box, holds at most
# 1/27 of the box's voxels, so the box is rounded up to a power of 2 and a new patient's liver box more often finds
# its step compiled. Measured on 3 mm CT (150 steps of cnn-guided's image stage, nodes 13 voxels apart: 0.78-0.88 s
# on a 96 x 96 x 128 box, 0.78-0.84 s on 128^3; 40 steps of its mask stage, nodes 3 apart: 0.35 s on 77 x 94 x 96,
# 0.65 s on 128^3, the price of fewer compiles); denser nodes (image-based) keep the finer buckets
COARSE_NODES = 3


def resolutions_mm(fixed: Volume, config: RegistrationConfig) -> list[float]:
    """Pyramid resolutions (mm), coarsest first: finest * 2**(levels-1), ..., finest."""
    native, pyramid = float(np.max(fixed.spacing_mm)), config.pyramid
    finest = native if pyramid.finest_mm is None else max(float(pyramid.finest_mm), native)
    return [finest * 2 ** (pyramid.levels - 1 - i) for i in range(pyramid.levels)]


def resolutions_mm_from_levels(levels: list[LevelData]) -> list[float]:
    """The resolution (mm) of each batched level: its largest fixed spacing."""
    return [float(np.max(np.asarray(d.fixed.spacing_mm)[0])) for d in levels]


def _stack(items: Sequence) -> object:
    """Host pytrees of equal structure stacked along a new leading axis (numpy; one item: views, not a copy)."""
    if len(items) == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], items[0])
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


def take(tree: object, i: int) -> object:
    """Member i of a batched pytree."""
    return jax.tree.map(lambda x: x[i], tree)


def _per_pair(fn: Callable, items: Sequence) -> list:
    """[fn(item) for item in items], in threads for a batch: the host preparation of a pair is mostly numpy, scipy
    and XLA calls that release the GIL, so a batch's pairs are prepared side by side on the host's cores."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def pair_pyramids(pairs: Sequence[Pair], config: RegistrationConfig,
                  programs: ProgramCache | None = None) -> list[tuple[list[Volume], list[Volume]]]:
    """Per pair, the pyramid levels (coarsest first, :func:`resolutions_mm`) of its fixed and of its moving
    channels (:func:`problem.stack_levels`: the image, then the segmentation channels, host float32).

    The pyramid's resolutions are the first pair's; a pair whose fixed image gives others is refused (ValueError).
    Label-map channels are padded with empty classes to a multiple of 4 (empty classes do not count in the
    overlap term), so label maps with different numbers of landmarks batch and share compiled steps.
    """
    n_seg = max(p.n_seg for p in pairs)
    width = n_seg if n_seg <= 1 else -(-n_seg // 4) * 4
    res = resolutions_mm(pairs[0].fixed, config)
    if any(not np.allclose(resolutions_mm(p.fixed, config), res) for p in pairs[1:]):
        raise ValueError("the pairs of a batch need one pyramid: fixed images of one coarsest spacing")
    images = [(img, seg) for p in pairs for img, seg in ((p.fixed, p.fixed_seg), (p.moving, p.moving_seg))]
    levels = _per_pair(lambda item: stack_levels(stack_channels(*item, width), res, programs), images)
    return [(levels[2 * i], levels[2 * i + 1]) for i in range(len(pairs))]


def prepare_levels(pairs: Sequence[Pair], config: RegistrationConfig,
                   pyramids: Sequence[tuple[list[Volume], list[Volume]]] | None = None,
                   programs: ProgramCache | None = None, sharding: jax.sharding.Sharding | None = None, *,
                   images_only: bool = False) -> list[LevelData]:
    """LevelData of every pyramid level (coarsest first), batched over pairs (leading axis), placed by ``sharding``
    (None: on the default device).

    The levels of the affine and of ``config``'s stages on the pair's own levels, or with ``images_only`` those of
    its images-only stages: the image channel alone, the region of interest everywhere.
    ``pyramids``: the pairs' :func:`pair_pyramids` when already computed (for a config with the same
    levels; computed here when None); one pyramid serves both kinds. The affine is the identity and its
    centre and radius unset until :func:`run_affine` fills them in.
    Each level that runs a non-rigid stage has its fixed grid cut to the bounding box of the region of
    interest; levels of the affine stage alone keep the whole grid. There is one box size per level for the
    whole batch: the largest pair's, rounded up by :func:`~sirtjax.buckets.bucket` where the non-rigid field's nodes are
    less than ``COARSE_NODES`` voxels apart, else to a power of 2. Where that box is larger than the grid, the
    grid is padded to it (:mod:`~sirtjax.registration.padding`). The moving level grids are padded to the
    largest pair's rounded up to a power of 2 (:func:`~sirtjax.buckets.coarse_bucket`), their true sizes kept for the
    outside test. So the pairs stack, and pairs of similar size (other patients too) reuse compiled steps.
    The non-rigid residual field lives on the box and is extended outside it by its border values.
    """
    if len({p.n_seg > 0 for p in pairs}) != 1:
        raise ValueError("pairs in one batch must all have segmentation guidance or none")
    pyramids = pair_pyramids(pairs, config, programs) if pyramids is None else pyramids
    channels = 1 if images_only or not pairs[0].n_seg else None
    roi_margin_mm = None if images_only else config.similarity.roi_margin_mm
    per_pair = _per_pair(lambda pyramid: [
        make_level(f.with_array(f.array[..., :channels]), m.with_array(m.array[..., :channels]),
                   stiffness_inside=config.regulariser.liver_stiffness, roi_margin_mm=roi_margin_mm)
        for f, m in zip(*pyramid)], pyramids)
    stages = [s for s in config.stages if s.images_only == images_only]
    levels, n_levels = [], len(per_pair[0])
    for li, resolution in enumerate(resolutions_mm(pairs[0].fixed, config)):
        runs = [s for s in stages if li >= n_levels - s.levels]  # none: only the affine stage runs: the whole grid,
        # whose shape depends on the field of view only (its samples still come from the region of interest)
        boxes = [roi_box(pp[li]) if runs else (np.zeros(3, int), np.asarray(pp[li].roi_weight.shape)) for pp in per_pair]
        # box and moving grid rounded up to bucket sizes, the box padded past a grid smaller than it, so pairs of
        # similar size share compiled steps; the moving grid's size does not change a step's cost, nor the box's
        # unless the level runs a non-rigid field with dense nodes
        dense_field = any(s.field_spacing_mm < COARSE_NODES * resolution for s in runs)
        box = np.max([b[1] for b in boxes], axis=0)
        size = bucket(box) if dense_field else coarse_bucket(box, _spacing_zyx(pp[li].fixed for pp in per_pair))
        moving_shape = coarse_bucket(np.max([pp[li].moving.array.shape[:3] for pp in per_pair], axis=0),
                                     _spacing_zyx(pp[li].moving for pp in per_pair))
        levels.append(_stack([pad_moving(crop_level(pp[li], start - (size - sz) // 2, size), moving_shape)
                              for pp, (start, sz) in zip(per_pair, boxes)]))
    return jax.device_put(levels, sharding)  # built on the host, moved once


def _spacing_zyx(volumes) -> np.ndarray:
    """The finest spacing (z, y, x mm) per axis over some level grids (host)."""
    return np.min([np.asarray(v.spacing_mm, np.float64)[::-1] for v in volumes], axis=0)


def with_affine(levels: list[LevelData], affine: AffineTransform) -> list[LevelData]:
    """The levels with the (batched) affine set as the non-rigid starting point."""
    return [dataclasses.replace(d, affine=affine) for d in levels]


def _centroid_weights(image: Volume, seg: np.ndarray | None) -> np.ndarray:
    if seg is not None and seg.shape[-1] == 1 and np.any(seg):
        return seg[..., 0]
    if seg is not None and seg.shape[-1] > 1 and np.any(seg):
        return np.clip(seg @ np.ones(seg.shape[-1], seg.dtype), 0, 1)  # the sum over channels, as a product: 6x faster
    return init.body_mask(np.asarray(image.array))


@dataclasses.dataclass(frozen=True)
class AffineStart:
    """Where the affine stage starts, per pair: its centre (B, 3) mm and radius (B,) mm (see :mod:`affine`) and the
    candidate start translations (B, K, 3) mm."""

    centre_mm: np.ndarray
    radius_mm: np.ndarray
    translations_mm: np.ndarray


def affine_start(pairs: Sequence[Pair], config: RegistrationConfig) -> AffineStart:
    """The affine stage's start: centre and radius of the fixed segmentation (else of the Otsu body mask), and
    the candidate translations (centre-of-mass alignment plus z offsets, ``config.affine.candidates`` of them)."""
    def one(p: Pair) -> tuple[np.ndarray, float, np.ndarray]:
        w = _centroid_weights(p.fixed, p.fixed_seg)
        cf = centroid_mm(p.fixed, w)
        cm = centroid_mm(p.moving, _centroid_weights(p.moving, p.moving_seg))
        return cf, init.rms_radius_mm(p.fixed, w, cf), init.candidate_translations(cm - cf, init.z_extent_mm(p.fixed),
                                                                                   config.affine.candidates)

    centres, radii, starts = zip(*_per_pair(one, pairs))
    return AffineStart(np.asarray(centres, np.float32), np.asarray(radii, np.float32), np.stack(starts))

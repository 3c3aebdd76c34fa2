"""The similarity terms of one level: which fixed voxels they sample, and the image and segmentation terms there.

The image term (-MI or SSD) is drawn from the whole fixed box, the segmentation term (overlap SSD of
masks or label maps) from the region of interest; both are evaluated at the sampled voxels only, so a
step's cost does not grow with the grid. A padded box (:mod:`~sirtjax.registration.padding`) draws from its
valid voxels only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sirtjax.registration.similarity import mattes_mi
from sirtjax.registration.padding import valid_flat_index, valid_mask
from sirtjax.registration.problem import LevelData
from sirtjax.registration.similarity import overlap_ssd, ssd
from sirtjax.registration.warp import sample_channels
from sirtjax.volume import Volume, index_points_to_world


def stratified_picks(key: jax.Array, k: int, n: jax.Array) -> jax.Array:
    """K random indices into 0 .. n - 1 (n traced, k <= MAX_SAMPLES): one in each of K strata, in increasing order.

    Jittered sampling: pick i is ``(i n + t_i) // k`` with t_i uniform in 0 .. n - 1, so every index is
    drawn with probability k / n (an unbiased mean, as independent uniform draws), the draws cover the
    range evenly (a lower variance than k independent draws), and they come sorted: the samples of a
    flat (z, y, x) voxel list are read nearly in memory order (the gathers from the images and the
    field, and the field gradient's scatter, were cache-bound: the mask term of a 3 mm pair 8.3 -> 6.5 ms a step
    on this CPU). Integer arithmetic without overflow: ``i n + t = k (i q + t // k) + (i r + t % k)``
    with ``n = q k + r``, the last term below k^2 <= 2^32 in uint32.
    """
    t = jax.random.randint(key, (k,), 0, n).astype(jnp.uint32)
    i = jnp.arange(k, dtype=jnp.uint32)
    q, r = (n // k).astype(jnp.uint32), (n % k).astype(jnp.uint32)
    return (i * q + t // k + (i * r + t % k) // k).astype(jnp.int32)


def flat_to_index_xyz(shape_zyx, flat_index: jax.Array) -> jax.Array:
    """Voxel indices (K, 3) float32 in (x, y, z) order of flat indices (K,) into a (z, y, x) grid."""
    _, ny, nx = shape_zyx
    k, rest = jnp.divmod(flat_index, ny * nx)
    j, i = jnp.divmod(rest, nx)
    return jnp.stack([i, j, k], -1).astype(jnp.float32)


def voxel_world_mm(grid: Volume, flat_index: jax.Array) -> jax.Array:
    """World points (K, 3) mm (x, y, z) of flat voxel indices (K,) of grid's (z, y, x) array."""
    return index_points_to_world(grid, flat_to_index_xyz(grid.array.shape[:3], flat_index))


MAX_SAMPLES = 1 << 16  # random voxels per similarity term and step at most (:func:`stratified_picks`' integer range)


@dataclasses.dataclass(frozen=True)
class SimilarityOptions:
    """Static choices of the similarity terms: metric 'mi' or 'ssd', MI bins, fixed Parzen order, sampling.

    ``samples``: each similarity term is evaluated at that many fixed voxels drawn at random
    (fresh each step, one per stratum: :func:`stratified_picks`) when the level has more voxels than
    that; None (or a smaller grid) uses every voxel.
    """

    metric: str = "mi"
    bins: int = 32
    fixed_parzen_order: int = 0
    samples: int | None = None

    def __post_init__(self):
        check_samples(self.samples)


def check_samples(samples: int | None) -> None:
    """Raise ValueError unless a sample count is None (every voxel) or 1 .. MAX_SAMPLES."""
    if samples is not None and not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be None (every voxel) or 1 .. {MAX_SAMPLES}, got {samples}")


def sample_voxels(data: LevelData, key: jax.Array, opts: SimilarityOptions, *, roi: bool) -> tuple[jax.Array, jax.Array]:
    """Flat fixed-grid voxel indices (K,) where a similarity term is evaluated, and their weights (K,).

    ``roi``: draw from the region of interest, else from the whole (box) grid's valid voxels. On grids
    with more voxels than ``opts.samples``: K = ``opts.samples`` voxels drawn with ``key`` by
    :func:`stratified_picks` (weights 1). Otherwise every voxel, weighted by the ROI (or by validity).
    """
    shape = data.roi_weight.shape
    n = data.roi_weight.size
    if opts.samples is None or opts.samples >= n:
        weights = data.roi_weight if roi else valid_mask(shape, data.fixed_size_zyx)
        return jnp.arange(n, dtype=jnp.int32), weights.reshape(-1)
    ones = jnp.ones((opts.samples,), jnp.float32)
    if not roi:
        picks = stratified_picks(key, opts.samples, jnp.prod(data.fixed_size_zyx))
        return valid_flat_index(picks, data.fixed_size_zyx, shape), ones
    return data.roi_index[stratified_picks(key, opts.samples, jnp.maximum(data.roi_count, 1))], ones


def similarity_terms(
    data: LevelData, key: jax.Array, to_moving: Callable[[jax.Array, jax.Array], jax.Array],
    opts: SimilarityOptions, *, image: bool, seg: bool,
) -> dict[str, jax.Array]:
    """The similarity terms of a transform given as ``to_moving(flat_index (K,), fixed world mm (K, 3)) -> moving mm (K, 3)``.

    ``image``: the image term (-MI in nats, or SSD) on voxels drawn from the whole (box) grid, so
    the anatomy around the organ informs it; voxels mapped outside the moving image do not count
    (as ITK). ``seg``: overlap SSD of the segmentation channels on voxels drawn from the region of
    interest (the warped moving segmentation is 0 outside the moving image). Both draws are
    mapped with one call of ``to_moving``; each samples only its own channels.
    """
    k_img, k_seg = jax.random.split(key)
    sets = ([sample_voxels(data, k_img, opts, roi=False)] if image else []) + (
        [sample_voxels(data, k_seg, opts, roi=True)] if seg else [])
    idx = jnp.concatenate([s[0] for s in sets])
    pts = to_moving(idx, voxel_world_mm(data.fixed, idx))
    farr = jnp.asarray(data.fixed.array).reshape(-1, data.fixed.array.shape[-1])
    n_img = sets[0][0].shape[0] if image else 0
    terms: dict[str, jax.Array] = {}
    if seg:
        mvals, _ = sample_channels(data.moving, pts[n_img:], 0.0, size_xyz=data.moving_size_xyz,  # outside test: unpadded grid
                                   channels=(1, data.moving.array.shape[-1]))
        terms["seg"] = overlap_ssd(farr[idx[n_img:], 1:], mvals, sets[-1][1])
    if not image:
        return terms
    mvals, inside = sample_channels(data.moving, pts[:n_img], 0.0, size_xyz=data.moving_size_xyz, channels=(0, 1))
    fimg, mimg, w = farr[idx[:n_img], 0], mvals[:, 0], sets[0][1] * inside.astype(jnp.float32)
    if opts.metric == "mi":
        terms["image"] = -mattes_mi(
            fimg, mimg, w, fixed_range=(data.fixed_range[0], data.fixed_range[1]),
            moving_range=(data.moving_range[0], data.moving_range[1]), bins=opts.bins,
            fixed_order=opts.fixed_parzen_order,
        )
    elif opts.metric == "ssd":
        terms["image"] = ssd(fimg, mimg, w)
    else:
        raise ValueError(f"unknown metric '{opts.metric}' (use mi or ssd)")
    return terms

"""register(): affine then non-rigid registration of a fixed and a moving Volume, batched over pairs.

The pipeline (thesis 5.3.3, paper 001): a pyramid of ``levels`` resolutions (coarsest first); an
affine stage on every level (MI on the images, or overlap SSD on masks / label maps), started from
the centres of mass with a few candidate starts at the coarsest level; then a non-rigid stage on
the finest ``nonrigid_levels`` levels minimising ``w_I L_I + w_S L_S + w_R L_R``. Every level runs
one jit-compiled step vmapped over the batch of pairs (and over weight settings); the Python loop
around it decides convergence. Pairs in one batch must share the fixed shape (the moving shapes may
differ; spacings, origins and directions may differ too).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration import affine as affine_stage
from sirtjax.registration import init
from sirtjax.registration.nonrigid import RegulariserOptions, Weights, field_factor_for, field_shape, field_volume, nonrigid_step
from sirtjax.registration.optimise import OPTIMISERS, Convergence, LevelLog, Progress, run_level
from sirtjax.registration.problem import (
    LevelData, SimilarityOptions, check_samples, crop_level, make_level, pad_moving, roi_box, stack_channels, stack_levels,
)
from sirtjax.registration.pyramid import bucket
from sirtjax.registration.warp import (
    AffineTransform, affine_displacement, one_hot, resample_field, warp_array,
)
from sirtjax.volume import Volume, make_volume


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """Static settings of a registration (hashable; changing one recompiles).

    Defaults follow the thesis and ITK/elastix practice rather than any data set: 3 levels, 32 MI
    bins, spring model with 26 neighbours, Adam steps of a fraction of the level resolution.
    """

    levels: int = 3
    finest_mm: float | None = 6.0  # finest level (mm), never below the fixed spacing; None = the fixed spacing
    metric: str = "mi"
    bins: int = 32
    fixed_parzen_order: int = 0
    samples: int | None = 16384  # random fixed voxels per step for every similarity term on larger grids; None = all
    roi_margin_mm: float | None = 30.0  # similarity terms within the fixed segmentation grown by this margin; None = everywhere
    optimiser: str = "adam"  # or "lbfgs" (optimise.transformation), every stage
    affine_on: str = "images"  # or "segmentation" (the thesis' CNN-based affine)
    affine_iterations: int = 100
    affine_step: float = 0.1  # Adam step in units of the level resolution (mm / mm)
    candidates: int = 5
    # |E|_F of the affine's Green-Lagrange strain past which a barrier acts (affine.strain_excess); None = no limit.
    # For a whole-image MI affine: one patient's body maps nearly rigidly. An affine fitted to segmentations
    # follows the organ's own deformation and may strain more (3 mm seed 4 MR label maps: 0.17, and 2.5 mm RMSD
    # with the barrier against 0.56 mm without), so the guided presets leave it free
    affine_max_strain: float | None = 0.15
    nonrigid_levels: int = 3  # 0 = affine only
    nonrigid_iterations: int = 60
    nonrigid_step: float = 0.15  # larger steps, fewer of them: as accurate as 100 x 0.1 on 4 seeds, 40 % less time
    nonrigid_image: bool = True  # use the image term in the non-rigid stage
    field_spacing_mm: float = 0.0  # non-rigid field nodes at least this far apart (every k-th voxel of finer levels); 0 = every voxel
    field_order: int = 1  # between the nodes: 1 trilinear, 3 cubic B-spline (coefficients at the nodes; meant for coarse node grids)
    image_field_mm: float = 0.0  # > 0: first a non-rigid stage on the images alone (MI, whole grid), field nodes this far apart
    image_field_levels: int = 3  # that stage runs on the finest this many pyramid levels ...
    image_field_iterations: int = 200  # ... this many steps a level (no early stop) ...
    image_field_samples: int = 4096  # ... each on this many random voxels
    image_field_w_reg: float = 10.0  # ... and this spring weight (w_reg of that stage)
    regulariser: str = "spring"
    neighbourhood: int = 26
    liver_stiffness: float = 1.0  # stiffness inside the fixed liver relative to outside (thesis 6.5)
    fold_weight: float = 0.0  # folding barrier (det J < 0.1) relative to the spring energy; 0 = none
    window: int = 10  # a level stops when the mean loss of its last `window` steps ...
    rel_tol: float = 3e-3  # ... improved on the previous window's by less than rel_tol * |mean|
    min_iterations: int = 20
    w_image: float = 1.0
    w_seg: float = 1.0
    w_reg: float = 10.0  # a 10 % strain everywhere costs as much as 0.1 nats of MI or 0.1 of 1 - Dice

    def __post_init__(self):
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"unknown optimiser '{self.optimiser}' (use {' or '.join(OPTIMISERS)})")
        check_samples(self.samples)
        check_samples(self.image_field_samples)

    def similarity(self) -> SimilarityOptions:
        """The similarity options part of the config."""
        return SimilarityOptions(self.metric, self.bins, self.fixed_parzen_order, self.samples)

    def weights(self) -> Weights:
        """The default loss weights as scalars."""
        return Weights(jnp.float32(self.w_image), jnp.float32(self.w_seg), jnp.float32(self.w_reg))


PRESETS: dict[str, RegistrationConfig] = {
    # thesis 5.3.3: MI affine, MI + spring non-rigid, no segmentation; MI folded 0.17-0.47 % of all voxels
    # of MR pairs (small seeds 1, 2, 12) without the folding barrier, 0 with it at equal accuracy. Its non-rigid
    # stage on the finest two levels (12, 6 mm), not on the 24 mm level too: there a node per voxel (10 x 14 x 16 on
    # a 3 mm study) is fitted to MI from as few voxels, and on MR it stretched the liver along z at the fixed field
    # of view's edge (3 mm seed 5: RMSD 4.5 mm on the 12 and 6 mm levels, 15.6 mm with the 24 mm level before them).
    # Training seeds, field error CT / MR (mm, keys 0, 1), three levels -> two: 3 mm 101-104 2.21 / 4.11 -> 2.20 / 3.22,
    # 6 mm 101-105 2.07 / 3.90 -> 2.09 / 3.07 (seed 106's MR affine fails either way). The 6 mm level alone fit 3 mm
    # MR better but CT worse (2.25 / 2.92); the 12 mm level stays for deformations larger than the phantoms'.
    "image-based": RegistrationConfig(affine_on="images", fold_weight=100.0, nonrigid_levels=2),
    # CNN-guided: affine on liver masks; an image stage (image_field_mm): MI over the whole grid with a cubic
    # B-spline field, nodes 40 mm apart; then the non-rigid stage on the masks alone, its springs resisting only
    # its own part of the field. The masks fit the liver's surface but cannot show where its interior went
    # (benchmarks/registration/depth_error.py, seed 101: 3.5 mm off deep inside, 0.7 mm at the surface); the
    # coarse image field, seeing the whole body, moves it (training seeds 101-104, 3 mm CT RRMSD 1.67 -> 1.45 mm,
    # MR 1.84 -> 1.47, rounds 8-9 of benchmarks/registration/README.md). Weights chosen on the training seeds by
    # the field's error against the phantoms' true field in the liver (round 10): image stage springs w_R 5
    # (w_R 3 fitted CT better, MR worse), mask stage springs w_R 100 (at 10 it fitted the voxelised masks'
    # rounding: 3 mm CT 0.92 -> 0.71 mm, MR 1.07 -> 0.96, 6 mm CT 1.46 -> 1.17, MR 1.62 -> 1.48). No image term
    # at the masks' resolution (thesis 5.4.2: optimal w_I = 0 for MR; ours pulled lesions off and folded the field
    # at the fixed field-of-view edge); --w-image turns it on. Levels of 12, 6 and 3 mm (or the fixed spacing,
    # when coarser), the mask field's nodes at least 6 mm apart (a 3 mm field was less accurate and 4x slower).
    # Round 11, for speed: the image stage on the finest two levels, 150 steps each (not three levels of 200),
    # the mask stage on the finest level only (not two), 40 steps (not 60): 3 mm pairs 3.4-3.9 -> 2.2-2.9 s warm
    # (profile.py, seed 2); training field error 3 mm CT 0.708 -> 0.719 mm, MR 1.065 -> 1.007; 6 mm CT 1.148 -> 1.132,
    # MR 1.489 -> 1.674 (keys 0, 1). Round 16: 8192 samples a step for the mask affine and the mask stage (not 16384);
    # with stratified draws the accuracy hardly depends on it (training field error CT / MR, keys 0-5, 3 mm 101-104:
    # 16384 0.667 / 1.020, 8192 0.673 / 1.054, 4096 0.689 / 1.032 mm; 6 mm 101-106, keys 0-3: 1.092 / 1.619 ->
    # 1.106 / 1.577) and 3 mm pairs run 2.7-2.9 -> 2.2-2.5 s warm (benchmarks/registration/README.md, round 16).
    # Round 17: the mask stage's nodes 9 mm apart (not 6). Under the image stage's field the masks need only correct
    # the surface, and the coarser nodes fit less of the voxelised masks' rounding; the springs on 3.3x fewer nodes
    # cost a third. Training field error CT / MR (mm): 3 mm 101-104, keys 0-5, 0.673 / 1.054 -> 0.671 / 1.017 (12 mm:
    # 0.669 / 0.986, not taken: real livers may bend more locally than the phantoms); 6 mm 101-106 (nodes 12 mm
    # apart there), keys 0-3, 1.106 / 1.577 -> 1.104 / 1.439
    "cnn-guided": RegistrationConfig(affine_on="segmentation", candidates=1, affine_max_strain=None, nonrigid_image=False, w_image=0.0,
                                     samples=8192,
                                     nonrigid_iterations=40,
                                     finest_mm=3.0, nonrigid_levels=1, field_spacing_mm=9.0, image_field_mm=40.0,
                                     image_field_levels=2, image_field_iterations=150, image_field_w_reg=5.0, w_reg=100.0),
    # CNN&LM-guided: the same with label maps of liver and landmark classes; small landmark classes pull
    # hard locally and folded up to 0.16 % of liver voxels without the folding barrier (0 with it). The
    # levels and field of cnn-guided: on 3 mm training seeds RRMSD CT 0.82 -> 0.50, MR 1.02 -> 0.58 mm
    # (the landmarks are a few 3 mm voxels), at the same speed; 6 mm training seeds as before
    "cnn-lm-guided": RegistrationConfig(affine_on="segmentation", candidates=1, affine_max_strain=None, fold_weight=100.0,
                                        finest_mm=3.0, nonrigid_levels=2, field_spacing_mm=6.0),
}


def config_from_dict(values: dict) -> RegistrationConfig:
    """RegistrationConfig from a dict of its fields (JSON); missing fields keep the defaults.

    Raises ValueError naming any unknown field, a value of the wrong type or a sample count out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(RegistrationConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown registration setting(s): {', '.join(unknown)}")
    for name, value in values.items():
        default = getattr(RegistrationConfig, name)
        ok = (value is None and "None" in str(fields[name].type)) or isinstance(value, type(default)) or (
            isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)) or (
            default is None and isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"registration setting {name} = {value!r} has the wrong type")
    return RegistrationConfig(**{k: (float(v) if v is not None and isinstance(getattr(RegistrationConfig, k), float) else v)
                                 for k, v in values.items()})


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


@dataclasses.dataclass
class RegistrationResult:
    """One pair's result: the affine, the full displacement field and warped images, and diagnostics."""

    affine: AffineTransform
    displacement: Volume  # (z, y, x, 3) mm on the fixed grid, ITK convention
    warped: Volume  # moving image on the fixed grid, float32, linear
    diagnostics: dict


def resolutions_mm(fixed: Volume, config: RegistrationConfig) -> list[float]:
    """Pyramid resolutions (mm), coarsest first: finest * 2**(levels-1), ..., finest."""
    native = float(np.max(fixed.spacing_mm))
    finest = native if config.finest_mm is None else max(float(config.finest_mm), native)
    return [finest * 2 ** (config.levels - 1 - i) for i in range(config.levels)]


def _stack(items: Sequence) -> object:
    """Host pytrees of equal structure stacked along a new leading axis (numpy; one item: views, not a copy)."""
    if len(items) == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], items[0])
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


def _take(tree: object, i: int) -> object:
    return jax.tree.map(lambda x: x[i], tree)


def _per_pair(fn: Callable, items: Sequence) -> list:
    """[fn(item) for item in items], in threads for a batch: the host preparation of a pair is mostly numpy, scipy
    and XLA calls that release the GIL, so a batch's pairs are prepared side by side on the host's cores."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def pair_pyramids(pairs: Sequence[Pair], config: RegistrationConfig) -> list[tuple[list[Volume], list[Volume]]]:
    """Per pair, the pyramid levels (coarsest first, :func:`resolutions_mm`) of its fixed and of its moving
    channels (:func:`problem.stack_levels`: the image, then the segmentation channels, host float32).

    Label-map channels are padded with empty classes to a multiple of 4 (empty classes do not count in the
    overlap term), so label maps with different numbers of landmarks batch and share compiled steps.
    """
    n_seg = max(p.n_seg for p in pairs)
    width = n_seg if n_seg <= 1 else -(-n_seg // 4) * 4
    res = resolutions_mm(pairs[0].fixed, config)
    return _per_pair(lambda p: tuple(stack_levels(stack_channels(img, seg, width), res)
                                     for img, seg in ((p.fixed, p.fixed_seg), (p.moving, p.moving_seg))), pairs)


def prepare_levels(pairs: Sequence[Pair], config: RegistrationConfig,
                   pyramids: Sequence[tuple[list[Volume], list[Volume]]] | None = None) -> list[LevelData]:
    """LevelData of every pyramid level (coarsest first), batched over pairs (leading axis).

    ``pyramids``: the pairs' :func:`pair_pyramids` when already computed (for a config with the same
    levels; computed here when None); unguided pairs use only their image channel, so one pyramid serves
    both the guided levels and an unguided stage on the same images. The affine is the identity and its
    centre and radius unset until :func:`run_affine` fills them in.
    Each level's fixed grid is cut to the bounding box of the region of interest (one box size per
    level for the whole batch, the largest pair's rounded up by :func:`pyramid.bucket`, so the pairs
    stack and pairs of similar size reuse compiled steps), and the moving level grids are padded to
    the largest pair's rounded up the same way (their true sizes kept for the outside test, so pairs of
    different moving shapes batch too); the non-rigid residual
    field lives on that box and is extended outside it by its border values.
    """
    if len({p.n_seg > 0 for p in pairs}) != 1:
        raise ValueError("pairs in one batch must all have segmentation guidance or none")
    pyramids = pair_pyramids(pairs, config) if pyramids is None else pyramids
    channels = None if pairs[0].n_seg else 1
    per_pair = _per_pair(lambda pyramid: [
        make_level(f.with_array(f.array[..., :channels]), m.with_array(m.array[..., :channels]),
                   stiffness_inside=config.liver_stiffness, roi_margin_mm=config.roi_margin_mm)
        for f, m in zip(*pyramid)], pyramids)
    levels = []
    for li in range(len(per_pair[0])):
        boxes = [roi_box(pp[li]) for pp in per_pair]
        # box and moving grid rounded up to a multiple of 8 voxels: pairs of similar size share compiled steps
        size = np.minimum(bucket(np.max([b[1] for b in boxes], axis=0)), level_shape(per_pair[0][li]))
        moving_shape = bucket(np.max([pp[li].moving.array.shape[:3] for pp in per_pair], axis=0))
        levels.append(_stack([pad_moving(crop_level(pp[li], start - (size - sz) // 2, size), moving_shape)
                              for pp, (start, sz) in zip(per_pair, boxes)]))
    return jax.device_put(levels)  # built on the host, moved once


def level_shape(level: LevelData) -> np.ndarray:
    """The (z, y, x) shape of a level's fixed grid."""
    return np.asarray(level.roi_weight.shape)


def _centroid_weights(image: Volume, seg: np.ndarray | None) -> np.ndarray:
    if seg is not None and seg.shape[-1] > 0 and np.any(seg):
        return np.clip(seg @ np.ones(seg.shape[-1], seg.dtype), 0, 1)  # the sum over channels, as a product: 6x faster
    return init.body_mask(np.asarray(image.array)).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class AffineStart:
    """Where the affine stage starts, per pair: its centre (B, 3) mm and radius (B,) mm (see :mod:`affine`) and the
    candidate start translations (B, K, 3) mm."""

    centre_mm: np.ndarray
    radius_mm: np.ndarray
    translations_mm: np.ndarray


def affine_start(pairs: Sequence[Pair], config: RegistrationConfig) -> AffineStart:
    """The affine stage's start: centre and radius of the fixed segmentation (else of the Otsu body mask), and
    the candidate translations (centre-of-mass alignment plus z offsets, ``config.candidates`` of them)."""
    def one(p: Pair) -> tuple[np.ndarray, float, np.ndarray]:
        w = _centroid_weights(p.fixed, p.fixed_seg)
        cf = init.centroid_mm(p.fixed, w)
        cm = init.centroid_mm(p.moving, _centroid_weights(p.moving, p.moving_seg))
        return cf, init.rms_radius_mm(p.fixed, w, cf), init.candidate_translations(cm - cf, init.z_extent_mm(p.fixed),
                                                                                   config.candidates)

    centres, radii, starts = zip(*_per_pair(one, pairs))
    return AffineStart(np.asarray(centres, np.float32), np.asarray(radii, np.float32), np.stack(starts))


def run_affine(
    levels: list[LevelData],
    start: AffineStart,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
) -> tuple[AffineTransform, list[LevelLog]]:
    """The affine stage over all levels for a batch; returns the batched AffineTransform and the logs.

    Every candidate start (``start.translations_mm`` (B, K, 3)) runs through all levels, batched with the pairs;
    each pair keeps the candidate with the lowest mean loss over the last ``window`` steps of the
    finest level. The coarse levels' losses do not rank the candidates: on a blurred image MI
    differs little between optima (image-based MR seed 1: the coarsest level ranked the right start
    4th of 5, the finest level 1st).
    """
    batch, k = start.translations_mm.shape[:2]
    res = resolutions_mm_from_levels(levels)
    centre, radius = jnp.asarray(start.centre_mm), jnp.asarray(start.radius_mm)
    at_centre = AffineTransform(jnp.broadcast_to(jnp.eye(3), (batch, 3, 3)), jnp.zeros((batch, 3)), centre)
    levels = [dataclasses.replace(d, affine=at_centre, radius_mm=radius) for d in levels]
    params = jax.vmap(affine_stage.init_params)(jnp.asarray(start.translations_mm.reshape(batch * k, 3), jnp.float32))
    logs = []
    for li, data in enumerate(levels):
        step, tx = affine_stage.affine_step(config.similarity(), config.affine_on,
                                            config.affine_step * res[li], config.affine_iterations, config.affine_max_strain,
                                            config.optimiser)
        conv = Convergence(config.affine_iterations, config.window, config.rel_tol, config.min_iterations)
        if k > 1:
            data = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), data)
        key, sub = jax.random.split(key)
        params, log = run_level(step, params, tx, data, None, sub, conv, label=f"affine {res[li]:g} mm", progress=progress)
        logs.append(log)
    if k > 1:
        best = np.argmin(_final_window_mean(logs[-1].loss_history, config.window).reshape(batch, k), axis=1)
        pick = np.arange(batch) * k + best
        params = jax.tree.map(lambda x: x[pick], params)
        for log in logs:
            log.iterations = log.iterations[pick]
            log.last_terms = {n: v[pick] for n, v in log.last_terms.items()}
            log.loss_history = log.loss_history[:, pick]
    affine = jax.vmap(affine_stage.params_to_affine)(params, centre, radius)
    return affine, logs


def _final_window_mean(history: np.ndarray, window: int) -> np.ndarray:
    """Per member of a (iterations, B) loss history (NaN after a member stopped): mean of its last ``window`` losses."""
    out = np.empty(history.shape[1])
    for b in range(history.shape[1]):
        h = history[:, b][np.isfinite(history[:, b])]
        out[b] = h[-window:].mean() if h.size else np.inf
    return out


def resolutions_mm_from_levels(levels: list[LevelData]) -> list[float]:
    """The resolution (mm) of each batched level: its largest fixed spacing."""
    return [float(np.max(np.asarray(d.fixed.spacing_mm)[0])) for d in levels]


def with_affine(levels: list[LevelData], affine: AffineTransform) -> list[LevelData]:
    """The levels with the (batched) affine set as the non-rigid starting point."""
    return [dataclasses.replace(d, affine=affine) for d in levels]


def run_nonrigid(
    levels: list[LevelData],
    weights: Weights,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
    base: Volume | None = None,
    label: str = "non-rigid",
) -> tuple[Volume, list[LevelLog]]:
    """The non-rigid stage on the finest ``nonrigid_levels`` levels (affine already set in levels).

    ``base``: a batched residual field Volume from an earlier stage; this stage adds its own field to
    it, and its springs resist only its own (the base is their rest state). Returns the whole residual
    field, a batched Volume (B, z, y, x, 3) mm on the finest level's field grid, and the logs. Raises
    ValueError when an image weight is positive but the config leaves the image term out.
    """
    if not config.nonrigid_image and np.any(np.asarray(weights.image) > 0):
        raise ValueError("a positive image weight w_I needs the non-rigid image term (nonrigid_image=True)")
    nl = min(config.nonrigid_levels, len(levels))
    use = levels[len(levels) - nl:]
    seg = int(use[0].fixed.array.shape[-1]) > 1
    reg = RegulariserOptions(config.regulariser, config.neighbourhood, config.fold_weight)
    res = resolutions_mm_from_levels(use)
    factors = [field_factor_for(config.field_spacing_mm, r) for r in res]
    order = config.field_order
    if order not in (1, 3) or (order == 3 and base is not None):
        raise ValueError(f"field_order must be 1 or 3 (3 without an earlier stage's field), got {order}")
    v = jnp.zeros(use[0].fixed.array.shape[:1] + field_shape(use[0].fixed.array.shape[1:4], factors[0]) + (3,), jnp.float32)
    logs = []
    for li, data in enumerate(use):
        if li > 0:  # B-spline coefficients: the coarse spline's values at the new nodes start the finer level
            v = _upsample(field_volume(v, use[li - 1].fixed, factors[li - 1]), data.fixed, factors[li], order)
        if base is not None:
            data = dataclasses.replace(data, base_field=_upsample(base, data.fixed, factors[li]))
        step, tx = nonrigid_step(config.similarity(), reg, config.nonrigid_image, seg,
                                 config.nonrigid_step * res[li], config.nonrigid_iterations, factors[li], order,
                                 config.optimiser)
        conv = Convergence(config.nonrigid_iterations, config.window, config.rel_tol, config.min_iterations)
        key, sub = jax.random.split(key)
        v, log = run_level(step, v, tx, data, weights, sub, conv, label=f"{label} {res[li]:g} mm", progress=progress)
        logs.append(log)
    finest = use[-1].fixed
    if order == 3:  # the spline's values on a grid 4x finer than its nodes: trilinear between them is then within a
        # small fraction of the spline's curvature (a dense grid would cost 64 reads per voxel)
        out_factor = max(1, factors[-1] // 4)
        return field_volume(_upsample(field_volume(v, finest, factors[-1]), finest, out_factor, 3), finest, out_factor), logs
    return field_volume(data.base_field + v, finest, factors[-1]), logs


def image_stage_config(config: RegistrationConfig) -> RegistrationConfig:
    """The settings of the image stage that ``image_field_mm`` > 0 puts before the guided non-rigid stage.

    MI on the whole grids of the finest ``image_field_levels`` levels (``image_field_samples`` random voxels
    per step, as elastix's few thousand), a cubic B-spline field with nodes ``image_field_mm`` apart (as
    elastix's; training seeds 101-104, 3 mm CT: RRMSD 1.62 with trilinear nodes, 1.45 mm),
    ``image_field_iterations`` steps per level, springs weighted ``image_field_w_reg`` and the image-based
    preset's folding barrier. A
    coarse field sees the whole body's anatomy (outline, bones, organs, vessels): it moves the liver's
    interior and its surface tangentially, which masks cannot show; the guided stage then fits the
    surfaces on top of it.
    """
    its = config.image_field_iterations
    return dataclasses.replace(config, nonrigid_levels=config.image_field_levels, nonrigid_image=True, w_image=1.0,
                               w_reg=config.image_field_w_reg, fold_weight=100.0,
                               samples=config.image_field_samples, field_spacing_mm=config.image_field_mm, image_field_mm=0.0,
                               roi_margin_mm=None,
                               nonrigid_iterations=its, min_iterations=its, field_order=3)


@jax.jit(static_argnums=(2, 3))
def _upsample(coarse: Volume, fine_level: Volume, factor: int, order: int = 1) -> jax.Array:
    """A batched field Volume (values, or B-spline coefficients for ``order`` 3) resampled onto the field grid
    of a batched level grid with ``factor``: its values there (mm)."""
    def one(c, f):
        return resample_field(c, field_volume(jnp.zeros(field_shape(f.array.shape[:3], factor), jnp.uint8), f, factor), order)

    return jax.vmap(one)(coarse, fine_level)


@jax.jit
def _finish_arrays(affine: AffineTransform, residual: Volume, fixed: Volume, moving: Volume):
    """Full-resolution field (z, y, x, 3) mm and the linearly warped moving image, in one program."""
    field = affine_displacement(affine, fixed) + resample_field(residual, fixed)
    return field, warp_array(moving, fixed.with_array(field), 1, 0.0)


def register_batch(
    pairs: Sequence[Pair],
    config: RegistrationConfig = RegistrationConfig(),
    *,
    weights: Weights | None = None,
    key: jax.Array | None = None,
    progress: Progress | None = None,
) -> list[RegistrationResult]:
    """Register a batch of pairs of equal shapes in one vmapped optimisation per level.

    Args:
      pairs: from :func:`make_pair`; equal fixed shapes and channel counts (moving shapes may differ).
      config: static settings (see :class:`RegistrationConfig` and :data:`PRESETS`).
      weights: non-rigid loss weights, scalars or (B,) arrays; None uses the config's.
      key: PRNG key for the random similarity samples (grids above ``samples`` voxels).
      progress: optional callback(label, iteration, max_iterations).

    Returns:
      One :class:`RegistrationResult` per pair.
    """
    key = jax.random.key(0) if key is None else key
    batch = len(pairs)
    weights = config.weights() if weights is None else weights
    weights = jax.tree.map(lambda w: jnp.broadcast_to(jnp.asarray(w, jnp.float32), (batch,)), weights)
    pyramids = pair_pyramids(pairs, config)
    levels = prepare_levels(pairs, config, pyramids)
    k1, k2 = jax.random.split(key)
    affine, logs = run_affine(levels, affine_start(pairs, config), config, k1, progress)
    residual, nlogs = run_nonrigid_stages(pairs, levels, affine, weights, config, k2, progress, pyramids)
    stages = [("affine", lg) for lg in logs] + nlogs
    return [
        finish(p, _take(affine, i), _take(residual, i), [(s, lg, i) for s, lg in stages])
        for i, p in enumerate(pairs)
    ]


def run_nonrigid_stages(
    pairs: Sequence[Pair],
    levels: list[LevelData],
    affine: AffineTransform,
    weights: Weights,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
    pyramids: Sequence[tuple[list[Volume], list[Volume]]] | None = None,
) -> tuple[Volume, list[tuple[str, LevelLog]]]:
    """Everything after the affine stage: the image stage (``image_field_mm`` > 0) on the pairs' images, then the
    non-rigid stage on ``levels``; the batched residual field Volume and the (stage name, log) of every level.
    ``pyramids``: the pairs' :func:`pair_pyramids`, if computed already (the image stage's levels reuse them)."""
    if config.nonrigid_levels == 0:
        return field_volume(jnp.zeros(levels[-1].fixed.array.shape[:4] + (3,), jnp.float32), levels[-1].fixed, 1), []
    base, stages = None, []
    if config.image_field_mm > 0:
        pre = image_stage_config(config)
        key, sub = jax.random.split(key)
        plain = prepare_levels([Pair(p.fixed, p.moving) for p in pairs], pre, pyramids)
        pre_weights = jax.tree.map(lambda w: jnp.broadcast_to(w, (len(pairs),)), pre.weights())
        base, logs = run_nonrigid(with_affine(plain, affine), pre_weights, pre, sub, progress, label="image")
        stages += [("image", lg) for lg in logs]
    residual, logs = run_nonrigid(with_affine(levels, affine), weights, config, key, progress, base=base)
    return residual, stages + [("nonrigid", lg) for lg in logs]


def finish(pair: Pair, affine: AffineTransform, residual: Volume, stages: list) -> RegistrationResult:
    """Assemble one pair's result from its affine and residual field (on its level grid): full-resolution
    field, warped moving image and diagnostics."""
    fixed = pair.fixed
    field, warped = _finish_arrays(affine, residual, fixed.with_array(jnp.zeros(fixed.shape, jnp.uint8)), pair.moving)
    disp = make_volume(np.asarray(field, np.float32), fixed.spacing_mm, fixed.origin_mm, fixed.direction)
    warped = make_volume(np.asarray(warped, np.float32), fixed.spacing_mm, fixed.origin_mm, fixed.direction)
    diag = {"stages": [_stage_dict(stage, log, i) for stage, log, i in stages]}
    return RegistrationResult(affine, disp, warped, diag)


def _stage_dict(stage: str, log: LevelLog, i: int) -> dict:
    hist = log.loss_history[:, i] if log.loss_history.ndim == 2 else log.loss_history
    hist = hist[np.isfinite(hist)]
    return {
        "stage": stage,
        "level": log.label,
        "iterations": int(log.iterations[i]),
        "loss_first": float(hist[0]) if hist.size else None,
        "loss_last": float(hist[-1]) if hist.size else None,
        "terms_last": {k: float(np.asarray(v)[i]) for k, v in log.last_terms.items()},
        "compile_s": log.compile_s,
        "run_s": log.run_s,
    }


def register(
    fixed: Volume,
    moving: Volume,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    fixed_labels: Volume | None = None,
    moving_labels: Volume | None = None,
    config: RegistrationConfig = RegistrationConfig(),
    weights: Weights | None = None,
    key: jax.Array | None = None,
    progress: Progress | None = None,
) -> RegistrationResult:
    """Register moving onto fixed (affine then non-rigid); the transform maps fixed world mm to moving.

    Masks (0/1) guide with the CNN-guided loss, label maps (liver 1, landmarks >= 2, the same id in
    both) with the CNN&LM-guided loss. Returns the affine, the displacement field on the fixed grid
    (ITK convention), the warped moving image and per-level diagnostics.
    """
    pair = make_pair(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                     fixed_labels=fixed_labels, moving_labels=moving_labels)
    return register_batch([pair], config, weights=weights, key=key, progress=progress)[0]

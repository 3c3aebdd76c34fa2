"""Domain-randomised training images synthesised from tissue label maps (SynthSeg, Billot et al. 2023).

The model must segment scans from scanners, phases, sequences and resolutions it never saw, so most
training images carry no fixed contrast at all: each patch is rendered on the device from a tissue map,
a phantom's canonical one (every structure the phantom has: fat, muscle, bone, marrow, discs,
lungs and their vessels, heart, great vessels, liver and its vessels, spleen, kidneys, stomach,
gas, bowel, gallbladder, clips, each lesion and its necrotic core) or a real scan's
(`sirtjax.train.anatomy`; beyond the scan, ``OUTSIDE`` renders as padding with no label), as follows, every draw
from the key passed in:

1. geometry: a random rotation, per-axis scaling (log-uniform), smooth elastic displacement and the
   patch centre (on the liver with probability ``foreground_prob``) give where each voxel of the
   model-spacing patch reads the tissue map (nearest neighbour);
2. anatomy edits in label space: ascites (a fluid layer of random thickness around the liver that
   replaces fat and bowel) and resection (liver beyond a random plane near the patch centre becomes
   fluid or fat and leaves the label);
3. contrast: per tissue code a Gaussian with a random mean in the windowed range and a random
   standard deviation (air outside the body is dark with probability ``dark_air_prob``, as in both
   CT and MR windowing); with probability ``realistic_prob`` the means are a scanner's instead, a CT phase or
   an MR sequence (`sirtjax.train.contrasts`) jittered per tissue;
4. acquisition: a smooth multiplicative bias field, a random slice thickness along one axis
   (Gaussian slice profile, then sampling at that thickness and linear interpolation back), a
   small in-plane blur, a gamma change, Gaussian or Rician noise;
5. field of view: with probability ``fov_cut_prob`` everything beyond a random plane is outside the
   scan (the inference pad value, label 0), as for a liver cut by the field of view;
6. with procedural lesions and ``lesions.min_cnr`` > 0, a lesion is labelled only when the rendered patch
   shows it (`sirtjax.segmentation.visibility`).

Images end clipped to [-0.5, 0.5], the range of the CT and MR windows the model sees at inference
(`sirtjax.segmentation.preprocess.normalize_intensity`). Approximations: intensities are drawn in
that windowed space, not in HU; the slice profile is Gaussian; noise is white.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp

from sirtjax.phantom.raster import Tissue
from sirtjax.preprocess import PAD_VALUE
from sirtjax.segmentation.preprocess import LIVER_MARGIN_MM
from sirtjax.segmentation.visibility import visible_label
from sirtjax.train.augment import AugmentConfig, patch_centre, patch_coordinates, patch_offsets_mm
from sirtjax.train.contrasts import contrast_table
from sirtjax.train.label_maps import FAR_MM, FLUID, N_CODES, OUTSIDE, PHANTOM_CODES, LabelMaps
from sirtjax.train.synth_lesions import LesionConfig, lesion_ids, lesion_label, lesion_means, n_lesion_ids, paint_lesions

_ASCITES_REPLACES = (Tissue.FAT, Tissue.BOWEL, Tissue.GAS)


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Strengths of the synthetic generator (see the module docstring); zeros disable a step."""

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.25)  # per-axis scaling, log-uniform
    elastic_mm: float = 4.0
    elastic_spacing_mm: float = 40.0
    mean_range: tuple[float, float] = (-0.65, 0.65)  # tissue means, windowed units
    std_max: float = 0.08  # within-tissue standard deviation, drawn in [0, std_max]
    dark_air_prob: float = 0.9
    bias_max: float = 0.35  # standard deviation of the log bias field, drawn in [0, bias_max]
    bias_nodes: int = 4  # bias control points per axis
    slice_mm: tuple[float, float] = (1.0, 8.0)  # slice thickness range (uniform)
    slice_axis_probs: tuple[float, float, float] = (0.7, 0.15, 0.15)  # thick axis z, y, x
    blur_max_vox: float = 0.6  # isotropic point-spread sigma in voxels, drawn in [0, blur_max_vox]
    gamma_std: float = 0.3  # log-gamma standard deviation
    noise_max: float = 0.2  # noise standard deviation (windowed units), drawn in [0, noise_max]
    rician_prob: float = 0.3
    fov_cut_prob: float = 0.25
    ascites_prob: float = 0.2
    ascites_max_mm: float = 20.0
    resection_prob: float = 0.15
    resection_radius_mm: tuple[float, float] = (30.0, 70.0)
    lesions: LesionConfig | None = None  # procedural lesions (sirtjax.train.synth_lesions); None: the phantoms' own only
    realistic_prob: float = 0.0  # a patch's contrast is a scanner's (sirtjax.train.contrasts) instead of random
    realistic_jitter: float = 0.04  # standard deviation of a tissue's mean about the scanner's, window units (16 HU of CT)


def _gather(volume: jax.Array, idx: jax.Array, outside) -> jax.Array:
    """volume (Z, Y, X) at integer indices idx (3, ...), `outside` beyond its bounds."""
    shape = jnp.asarray(volume.shape)[:, None, None, None]
    inside = jnp.all((idx >= 0) & (idx < shape), axis=0)
    clipped = jnp.clip(idx, 0, shape - 1)
    return jnp.where(inside, volume[clipped[0], clipped[1], clipped[2]], outside)


def _blur_axis(x: jax.Array, sigma_vox: jax.Array, axis: int, radius: int = 8) -> jax.Array:
    """Gaussian blur of x along one axis (edge-replicated), sigma in voxels (0: unchanged)."""
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    w = jnp.exp(-0.5 * (taps / jnp.maximum(sigma_vox, 1e-3)) ** 2)
    w = w / w.sum()
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(w[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * radius + 1))


def _resample_axis(x: jax.Array, factor: jax.Array, axis: int) -> jax.Array:
    """Sample x every `factor` voxels along axis and interpolate linearly back (factor >= 1)."""
    n = x.shape[axis]
    pos = jnp.arange(n, dtype=jnp.float32)
    k = jnp.floor(pos / factor)
    lo, hi = k * factor, jnp.minimum((k + 1) * factor, n - 1)
    t = jnp.where(hi > lo, (pos - lo) / jnp.maximum(hi - lo, 1e-6), 0.0)

    shape = [1] * x.ndim
    shape[axis] = n

    def at(p):  # linear interpolation of x at fractional positions p along the axis
        i0 = jnp.clip(jnp.floor(p).astype(jnp.int32), 0, n - 1)
        a, b = jnp.take(x, i0, axis=axis), jnp.take(x, jnp.clip(i0 + 1, 0, n - 1), axis=axis)
        return a + (p - jnp.floor(p)).reshape(shape) * (b - a)

    return at(lo) + t.reshape(shape) * (at(hi) - at(lo))


def _acquire(key: jax.Array, image: jax.Array, spacing_mm: float, cfg: SynthConfig) -> jax.Array:
    """Bias, resolution, gamma and noise applied to a clean synthetic patch (windowed units)."""
    k_bias, k_bamp, k_thick, k_axis, k_blur, k_gamma, k_nsd, k_n1, k_n2, k_ric = jax.random.split(key, 10)
    x = image + 0.5  # >= 0 for multiplicative bias, gamma and Rician magnitude
    if cfg.bias_max > 0:
        amp = jax.random.uniform(k_bamp, (), maxval=cfg.bias_max)
        coarse = amp * jax.random.normal(k_bias, (cfg.bias_nodes,) * 3)
        x = x * jnp.exp(jax.image.resize(coarse, image.shape, method="cubic"))
    thick_mm = jax.random.uniform(k_thick, (), minval=cfg.slice_mm[0], maxval=cfg.slice_mm[1])
    thick_axis = jax.random.categorical(k_axis, jnp.log(jnp.asarray(cfg.slice_axis_probs)))
    psf = jax.random.uniform(k_blur, (), maxval=cfg.blur_max_vox)
    for axis in range(3):
        factor = jnp.where(thick_axis == axis, jnp.maximum(thick_mm / spacing_mm, 1.0), 1.0)
        sigma = jnp.maximum(psf, jnp.where(factor > 1.0, factor / 2.355, 0.0))
        x = _resample_axis(_blur_axis(x, sigma, axis), factor, axis)
    x = jnp.maximum(x, 0.0) ** jnp.exp(cfg.gamma_std * jax.random.normal(k_gamma))
    sd = jax.random.uniform(k_nsd, (), maxval=cfg.noise_max)
    n1, n2 = sd * jax.random.normal(k_n1, x.shape), sd * jax.random.normal(k_n2, x.shape)
    x = jnp.where(jax.random.bernoulli(k_ric, cfg.rician_prob), jnp.sqrt((x + n1) ** 2 + n2**2), x + n1)
    return jnp.clip(x - 0.5, -0.5, 0.5)


def _edit_anatomy(key: jax.Array, tissue: jax.Array, liver_mm: jax.Array, rel_mm: jax.Array, cfg: SynthConfig) -> tuple[jax.Array, jax.Array]:
    """Ascites and resection in label space; returns (tissue codes, liver 0/1)."""
    k_asc, k_thick, k_res, k_c, k_n, k_r, k_fill = jax.random.split(key, 7)
    liver = liver_mm == 0
    thick = jax.random.uniform(k_thick, (), minval=3.0, maxval=max(cfg.ascites_max_mm, 3.0))
    fluid = jax.random.bernoulli(k_asc, cfg.ascites_prob) & (liver_mm > 0) & (liver_mm <= thick) & jnp.isin(tissue, jnp.asarray(_ASCITES_REPLACES, tissue.dtype))
    tissue = jnp.where(fluid, FLUID, tissue)
    centre = 25.0 * jax.random.normal(k_c, (3,))
    normal = jax.random.normal(k_n, (3,))
    normal = normal / jnp.linalg.norm(normal)
    radius = jax.random.uniform(k_r, (), minval=cfg.resection_radius_mm[0], maxval=cfg.resection_radius_mm[1])
    d = rel_mm - centre[:, None, None, None]
    cut = jax.random.bernoulli(k_res, cfg.resection_prob) & liver & (jnp.einsum("i,i...->...", normal, d) > 0) & (jnp.sum(d**2, axis=0) < radius**2)
    tissue = jnp.where(cut, jnp.where(jax.random.bernoulli(k_fill), FLUID, Tissue.FAT), tissue)
    return tissue, (liver & ~cut).astype(jnp.float32)


def _draw(key: jax.Array, draw: Callable[[jax.Array, int], jax.Array]) -> jax.Array:
    """One value per tissue code: the phantom's codes drawn with ``key`` (as before real anatomy had codes of its
    own, so phantom-only configs draw what they drew), the real scans' codes with a key folded from it."""
    return jnp.concatenate([draw(key, PHANTOM_CODES), draw(jax.random.fold_in(key, PHANTOM_CODES), N_CODES - PHANTOM_CODES)])


def _scanner_means(key: jax.Array, cfg: SynthConfig) -> jax.Array:
    """Tissue means (N_CODES,) of a scanner's contrast (a CT phase or an MR sequence, :func:`contrast_table`), each
    jittered by ``realistic_jitter``; lesions hypo- or hyper-enhancing against the liver (:func:`lesion_means`)."""
    k_which, k_jit, k_les = jax.random.split(key, 3)
    table = jnp.asarray(contrast_table())
    row = table[jax.random.randint(k_which, (), 0, table.shape[0])]
    return lesion_means(k_les, row + cfg.realistic_jitter * jax.random.normal(k_jit, row.shape), cfg.lesions or LesionConfig())


def _contrast(key: jax.Array, tissue: jax.Array, cfg: SynthConfig) -> jax.Array:
    """A random Gaussian-mixture image: per tissue code a random mean and standard deviation."""
    k_mean, k_sd, k_air, k_airv, k_noise = jax.random.split(key, 5)
    means = _draw(k_mean, lambda k, n: jax.random.uniform(k, (n,), minval=cfg.mean_range[0], maxval=cfg.mean_range[1]))
    if cfg.lesions is not None:
        means = lesion_means(jax.random.fold_in(k_mean, 1), means, cfg.lesions)
    if cfg.realistic_prob > 0:
        means = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 11), cfg.realistic_prob), _scanner_means(jax.random.fold_in(key, 12), cfg), means)
    dark = jax.random.uniform(k_airv, (), minval=-0.6, maxval=-0.4)
    means = means.at[Tissue.AIR].set(jnp.where(jax.random.bernoulli(k_air, cfg.dark_air_prob), dark, means[Tissue.AIR]))
    sds = _draw(k_sd, lambda k, n: jax.random.uniform(k, (n,), maxval=cfg.std_max))
    codes = tissue.astype(jnp.int32)
    return means[codes] + sds[codes] * jax.random.normal(k_noise, tissue.shape)


def _fov_cut(key: jax.Array, shape: Sequence[int], cfg: SynthConfig) -> jax.Array:
    """A (*shape) bool mask of voxels inside the simulated field of view."""
    k_do, k_axis, k_pos, k_side = jax.random.split(key, 4)
    axis = jax.random.categorical(k_axis, jnp.log(jnp.asarray([0.6, 0.2, 0.2])))
    grids = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) / (n - 1) for n in shape], indexing="ij"))
    coord = jnp.take(grids, axis, axis=0)
    pos = jax.random.uniform(k_pos, (), minval=0.15, maxval=0.85)
    beyond = jnp.where(jax.random.bernoulli(k_side), coord > pos, coord < pos)
    return ~(jax.random.bernoulli(k_do, cfg.fov_cut_prob) & beyond)


def _render(keys: tuple[jax.Array, ...], maps: LabelMaps, case: jax.Array, centre: jax.Array, patch: tuple[int, int, int],
            spacing_mm: float, source_mm: float, cfg: SynthConfig) -> tuple[jax.Array, ...]:
    """One synthetic patch about `centre` of map `case`: (image, liver label, lesion label, liver distance mm, inside the
    field of view), each (*patch); keys: geometry, anatomy edits, contrast, acquisition, field of view, lesions."""
    k_geo, k_edit, k_con, k_acq, k_fov, k_les = keys
    spatial = AugmentConfig(
        max_rotation_deg=cfg.max_rotation_deg, elastic_mm=cfg.elastic_mm, elastic_spacing_mm=cfg.elastic_spacing_mm, scale_range=cfg.scale_range
    )
    coords = patch_coordinates(k_geo, centre, patch, (spacing_mm,) * 3, spatial, (source_mm,) * 3)
    idx = jnp.round(coords).astype(jnp.int32)
    tissue = _gather(maps.tissue[case], idx, maps.outside[case])
    liver_mm = _gather(maps.liver_mm[case], idx, jnp.uint8(FAR_MM))
    rel_mm = patch_offsets_mm(patch, (spacing_mm,) * 3)
    slots = jnp.zeros(patch, jnp.int32)
    if cfg.lesions is not None:
        tissue, slots = paint_lesions(k_les, tissue, liver_mm, rel_mm, cfg.lesions)
    tissue, liver = _edit_anatomy(k_edit, tissue, liver_mm, rel_mm, cfg)
    image = _acquire(k_acq, _contrast(k_con, tissue, cfg), spacing_mm, cfg)
    inside, lesion = _fov_cut(k_fov, patch, cfg) & (tissue != OUTSIDE), lesion_label(tissue)
    if cfg.lesions is not None and cfg.lesions.min_cnr > 0:  # label only the lesions this rendering shows
        ids = jnp.where(inside, lesion_ids(tissue, slots, cfg.lesions.max_lesions), 0)
        lesion = visible_label(image, ids, inside & (liver > 0) & (lesion == 0), n_lesion_ids(cfg.lesions), cfg.lesions.min_cnr)
    return image, liver, lesion, liver_mm, inside


def _liver_label(liver: jax.Array, lesion: jax.Array, liver_mm: jax.Array, inside: jax.Array) -> jax.Array:
    """The liver label of a patch: the liver with the lesion parts beyond its surface, 0 outside the field of view."""
    return jnp.where(inside, jnp.maximum(liver, lesion * (liver_mm > 0)), 0.0)


@partial(jax.jit, static_argnames=("batch_size", "in_patch", "out_patch", "spacing_mm", "source_mm", "cfg", "foreground_prob", "target"))
def synth_batch(
    key: jax.Array,
    maps: LabelMaps,
    *,
    batch_size: int,
    in_patch: tuple[int, int, int],
    out_patch: tuple[int, int, int],
    spacing_mm: float,
    source_mm: float,
    cfg: SynthConfig,
    foreground_prob: float,
    target: str = "liver",
) -> tuple[jax.Array, jax.Array]:
    """Synthetic patches: inputs (B, *in_patch, 1) float32 in [-0.5, 0.5], labels (B, *out_patch, 1).

    target 'liver': the liver label. target 'lesions': the lesion label (:func:`lesion_label`), and
    the input keeps only voxels within LIVER_MARGIN_MM of the liver or on a lesion, as the lesion
    model's input is masked at inference (`sirtjax.segmentation.preprocess.mask_to_liver`).
    """
    margin = [(i - o) // 2 for i, o in zip(in_patch, out_patch)]

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_case, k_fg, k_which, k_uni, k_geo, k_edit, k_con, k_acq, k_fov = jax.random.split(k, 9)
        case = jax.random.categorical(k_case, maps.log_weights)
        centre = patch_centre(k_fg, k_which, k_uni, maps.foreground[case], jnp.asarray(maps.tissue.shape[1:]), foreground_prob)
        image, liver, lesion, liver_mm, inside = _render((k_geo, k_edit, k_con, k_acq, k_fov, jax.random.fold_in(k, 9)), maps, case, centre,
                                                         in_patch, spacing_mm, source_mm, cfg)
        if target == "lesions":
            inside_input = inside & ((liver_mm.astype(jnp.float32) <= LIVER_MARGIN_MM) | (lesion > 0))
            image, label = jnp.where(inside_input, image, PAD_VALUE), jnp.where(inside, lesion, 0.0)
        else:
            image, label = jnp.where(inside, image, PAD_VALUE), _liver_label(liver, lesion, liver_mm, inside)
        label = label[margin[0] : margin[0] + out_patch[0], margin[1] : margin[1] + out_patch[1], margin[2] : margin[2] + out_patch[2]]
        return image[..., None], label[..., None]

    return jax.vmap(one)(jax.random.split(key, batch_size))


def synth_sampler(
    maps: LabelMaps, source_mm: float, *, batch_size: int, in_patch: Sequence[int], out_patch: Sequence[int], spacing_mm: float, cfg: SynthConfig, foreground_prob: float,
    target: str = "liver",
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """A function key -> (inputs, labels) drawing one synthetic batch (see :func:`synth_batch`)."""
    kwargs = dict(
        batch_size=int(batch_size),
        in_patch=tuple(int(n) for n in in_patch),
        out_patch=tuple(int(n) for n in out_patch),
        spacing_mm=float(spacing_mm),
        source_mm=float(source_mm),
        cfg=cfg,
        foreground_prob=float(foreground_prob),
        target=target,
    )
    return lambda key: synth_batch(key, maps, **kwargs)


def mixed_sampler(
    real: Callable[[jax.Array], tuple[jax.Array, jax.Array]] | None, synth: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Batches of realistic renderings (drawn by `real`, may be None) followed by synthetic patches."""
    if real is None:
        return synth

    def draw(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_real, k_synth = jax.random.split(key)
        (xr, yr), (xs, ys) = real(k_real), synth(k_synth)
        return jnp.concatenate([xr, xs]), jnp.concatenate([yr, ys])

    return draw


@partial(jax.jit, static_argnames=("batch_size", "patch", "spacing_mm", "source_mm", "cfg"))
def synth_pairs(
    key: jax.Array, maps: LabelMaps, *, batch_size: int, patch: tuple[int, int, int], spacing_mm: float, source_mm: float, cfg: SynthConfig,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Registration pairs (as SynthMorph): two renderings of one patient's liver region with independent geometry,
    contrast, acquisition and field of view. Returns fixed image, fixed liver, moving image, moving liver, each
    (B, *patch) float32. Anatomy edits and painted lesions act in patch space, so `cfg` should leave them off.
    """

    def one(k: jax.Array) -> tuple[jax.Array, ...]:
        k_case, k_fg, k_which, k_uni, k_edit, k_les, k_fixed, k_moving = jax.random.split(k, 8)
        case = jax.random.categorical(k_case, maps.log_weights)
        centre = patch_centre(k_fg, k_which, k_uni, maps.foreground[case], jnp.asarray(maps.tissue.shape[1:]), 1.0)

        def view(kv: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_geo, k_con, k_acq, k_fov = jax.random.split(kv, 4)
            image, liver, lesion, liver_mm, inside = _render((k_geo, k_edit, k_con, k_acq, k_fov, k_les), maps, case, centre, patch,
                                                             spacing_mm, source_mm, cfg)
            return jnp.where(inside, image, PAD_VALUE), _liver_label(liver, lesion, liver_mm, inside)

        return (*view(k_fixed), *view(k_moving))

    return jax.vmap(one)(jax.random.split(key, batch_size))

"""Procedural liver lesions painted into a synthetic patch's tissue codes, and the lesion label.

The phantoms' own lesions (1-16 lobulated ellipsoids, some necrotic) are too few and too alike for
a lesion model that must meet real tumours, so the generator adds more in label space, on the
device, for every patch (thesis chapter 7's lesion classes, as the synthetic step can express them):

- 1 to ``max_lesions`` lesions, diameters log-uniform in ``diameter_mm`` (5-80 mm by default),
  centred on random liver voxels of the patch, or with ``cluster_prob`` next to the first one, so
  that they merge into confluent masses;
- ellipsoids with per-axis radii varied by ``axis_sd`` (log-normal) and a lobulated surface (a
  smooth random field added to the normalised radius);
- reaching up to ``bulge_mm`` beyond the liver, as lesions at the liver surface bulge it;
- with probability ``rim_prob`` a rim of its own code (rim enhancement), ``core_prob`` a necrotic
  core (lesions over 20 mm) and ``calc_prob`` a calcified centre.

Each part has its own tissue code, so the contrast step gives it its own intensity. Lesion bodies
are drawn relative to the liver (:func:`lesion_means`): hypo- or hyper-enhancing by at least
``contrast_min`` window units, iso-enhancing lesions being those whose rim alone shows. With
``min_cnr`` > 0 the generator labels only the lesions that the finished patch shows
(`sirtjax.segmentation.visibility`); :func:`lesion_ids` names each lesion for that. Approximate:
shapes are lobulated ellipsoids, enhancement patterns are uniform per part, and vessels are painted
over rather than displaced.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sirtjax.phantom.raster import Tissue

BODY_CODES = (24, 25)  # two lesion populations per patch, each with its own intensity
RIM, CORE, CALC = 26, 27, 28
PHANTOM_LESIONS = tuple(range(Tissue.LESION, Tissue.NECROSIS))
PHANTOM_CORES = tuple(range(Tissue.NECROSIS, 63))  # 63 is the generator's fluid code


@dataclasses.dataclass(frozen=True)
class LesionConfig:
    """Strengths of the procedural lesions (see the module docstring)."""

    max_lesions: int = 12
    lesion_prob: float = 0.85  # probability that a patch gets any procedural lesion
    diameter_mm: tuple[float, float] = (5.0, 80.0)
    axis_sd: float = 0.2
    lobulation: float = 0.15
    cluster_prob: float = 0.3
    bulge_mm: float = 5.0
    rim_prob: float = 0.3
    core_prob: float = 0.4
    calc_prob: float = 0.1
    contrast_min: float = 0.04  # smallest body-to-liver difference, window units
    contrast_max: float = 0.4
    hypo_prob: float = 0.7  # a lesion population darker than the liver (else brighter)
    min_cnr: float = 0.0  # label only lesions whose integrated CNR reaches this (5: Rose); 0 labels every lesion


def lesion_label(tissue: jax.Array) -> jax.Array:
    """1.0 where a tissue code belongs to a lesion (phantom or procedural: body, rim, core, calcification), else 0.0."""
    t = tissue.astype(jnp.int32)
    procedural = (t >= BODY_CODES[0]) & (t <= CALC)
    phantom = (t >= Tissue.LESION) & (t < 63)
    return (procedural | phantom).astype(jnp.float32)


def _liver_voxel(key: jax.Array, liver: jax.Array, rel_mm: jax.Array) -> jax.Array:
    """The mm offset (3,) of a uniformly drawn liver voxel of the patch (the patch centre if it has none)."""
    g = jax.random.gumbel(key, liver.shape)
    flat = jnp.argmax(jnp.where(liver, g, -jnp.inf).ravel())
    return jnp.where(jnp.any(liver), rel_mm.reshape(3, -1)[:, flat], 0.0)


def lesion_ids(tissue: jax.Array, slots: jax.Array, max_lesions: int) -> jax.Array:
    """Lesion instance ids (Z, Y, X) int32: 0 where no lesion, slot i + 1 where procedural lesion i was painted
    (`slots`, from :func:`paint_lesions`), max_lesions + 1 + i on phantom lesion i and its necrotic core."""
    t = tissue.astype(jnp.int32)
    phantom = jnp.where(t >= Tissue.NECROSIS, t - Tissue.NECROSIS, t - Tissue.LESION)
    ids = jnp.where(slots > 0, slots, max_lesions + 1 + phantom)
    return jnp.where(lesion_label(tissue) > 0, ids, 0)


def n_lesion_ids(cfg: LesionConfig) -> int:
    """The number of ids :func:`lesion_ids` can give, 0 included."""
    return cfg.max_lesions + 1 + Tissue.NECROSIS - Tissue.LESION


def paint_lesions(key: jax.Array, tissue: jax.Array, liver_mm: jax.Array, rel_mm: jax.Array, cfg: LesionConfig) -> tuple[jax.Array, jax.Array]:
    """(tissue codes (Z, Y, X) with procedural lesions painted in, int32 slot map: i + 1 where lesion i was
    painted last, else 0); liver_mm is the distance to the liver (0 inside), rel_mm (3, Z, Y, X) the voxels'
    mm offsets from the patch centre."""
    k_any, k_n, k_lob, k_slots, k_first = jax.random.split(key, 5)
    liver = liver_mm == 0
    lob = cfg.lobulation * jax.image.resize(jax.random.normal(k_lob, (5, 5, 5)), tissue.shape, method="cubic")
    n = jnp.where(jax.random.bernoulli(k_any, cfg.lesion_prob), jax.random.randint(k_n, (), 1, cfg.max_lesions + 1), 0)
    lo, hi = jnp.log(cfg.diameter_mm[0]), jnp.log(cfg.diameter_mm[1])
    first = _liver_voxel(k_first, liver, rel_mm)

    def slot(i: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        out, slots = carry
        k = jax.random.split(jax.random.fold_in(k_slots, i), 11)
        radius = 0.5 * jnp.exp(jax.random.uniform(k[0], (), minval=lo, maxval=hi))
        axes = radius * jnp.exp(cfg.axis_sd * jax.random.normal(k[1], (3,)))
        near = first + radius * jax.random.normal(k[2], (3,)) / jnp.sqrt(3.0)
        centre = jnp.where((i > 0) & jax.random.bernoulli(k[3], cfg.cluster_prob), near, jnp.where(i == 0, first, _liver_voxel(k[4], liver, rel_mm)))
        q = jnp.sqrt(jnp.sum(((rel_mm - centre[:, None, None, None]) / axes[:, None, None, None]) ** 2, axis=0)) + lob
        bulge = jax.random.uniform(k[5], (), maxval=cfg.bulge_mm)
        inside = (i < n) & (q < 1.0) & (liver_mm.astype(jnp.float32) <= bulge)
        body = jnp.where(jax.random.bernoulli(k[6]), BODY_CODES[0], BODY_CODES[1])
        rim = jax.random.bernoulli(k[7], cfg.rim_prob) & (q > 1.0 - jnp.clip(3.0 / radius, 0.1, 0.4))
        core = jax.random.bernoulli(k[8], cfg.core_prob) & (radius > 10.0) & (q < jax.random.uniform(k[9], (), minval=0.3, maxval=0.65))
        calc = jax.random.bernoulli(k[10], cfg.calc_prob) & (q < jnp.clip(2.0 / radius, 0.1, 0.35))
        code = jnp.where(calc, CALC, jnp.where(core, CORE, jnp.where(rim, RIM, body)))
        return jnp.where(inside, code.astype(out.dtype), out), jnp.where(inside, i + 1, slots)

    return jax.lax.fori_loop(0, cfg.max_lesions, slot, (tissue, jnp.zeros(tissue.shape, jnp.int32)))


def lesion_means(key: jax.Array, means: jax.Array, cfg: LesionConfig) -> jax.Array:
    """Tissue means (N_CODES,) with every lesion body (procedural and phantom) hypo- or hyper-enhancing
    relative to the liver by contrast_min..contrast_max, rims brighter or darker than the liver,
    calcifications at an extreme of the window; cores keep their random means."""
    k_sign, k_size, k_rim, k_rsize, k_calc, k_csize, k_ph = jax.random.split(key, 7)
    liver = means[Tissue.LIVER]
    signs = jnp.where(jax.random.bernoulli(k_sign, cfg.hypo_prob, (len(BODY_CODES),)), -1.0, 1.0)
    sizes = jax.random.uniform(k_size, (len(BODY_CODES),), minval=cfg.contrast_min, maxval=cfg.contrast_max)
    means = means.at[jnp.asarray(BODY_CODES)].set(liver + signs * sizes)
    ph_sign = jnp.where(jax.random.bernoulli(k_ph, cfg.hypo_prob, (len(PHANTOM_LESIONS),)), -1.0, 1.0)
    ph_size = jax.random.uniform(jax.random.fold_in(k_ph, 1), (len(PHANTOM_LESIONS),), minval=cfg.contrast_min, maxval=cfg.contrast_max)
    means = means.at[jnp.asarray(PHANTOM_LESIONS)].set(liver + ph_sign * ph_size)
    rim_sign = jnp.where(jax.random.bernoulli(k_rim, 0.75), 1.0, -1.0)
    means = means.at[RIM].set(liver + rim_sign * jax.random.uniform(k_rsize, (), minval=cfg.contrast_min, maxval=cfg.contrast_max))
    calc_sign = jnp.where(jax.random.bernoulli(k_calc, 0.8), 1.0, -1.0)
    return means.at[CALC].set(calc_sign * jax.random.uniform(k_csize, (), minval=0.4, maxval=0.65))

"""Dose uncertainty from a SPECT-based plan as an ensemble: calibration, residual, lung shunt, VOI boundaries.

Each member draws the uncertain inputs and computes the dose again:

- ``calibration``: the activity scaled by c ~ N(1, calibration_rel_sd) (the dose calibrator);
- ``residual``: the fraction left in the vial and catheter, r ~ N(residual_fraction, residual_sd),
  clipped to [0, 0.99]. The activity given is the one delivered at the expected residual, so a
  member scales it by (1 - r) / (1 - residual_fraction) and the nominal member keeps it;
- ``lung_shunt``: LSF ~ N(LSF, lung_shunt_sd), clipped to [0, 0.99];
- ``registration``: with lesions mapped from a diagnostic image, the lesion map of one of the
  registrations run with other sampling keys (``lesion_alternatives``), or the plan's own, each
  equally likely;
- ``liver_boundary`` and ``lesion_boundary``: each surface moved outwards by an offset of
  N(0, boundary_sd_mm) mm, through the signed Euclidean distance to the mask
  (:func:`signed_distance_mm`), computed on the mask's own grid (a CT's, finer than the SPECT's)
  and resampled linearly onto the activity grid. The liver and the lesions draw separate offsets. A segmentation's error is mostly an over- or
  under-segmentation along the whole surface, and a given manual mask has one too, so the model
  serves whether the mask was segmented or drawn. A local, patchy error is not modelled.

The nominal member (every offset 0) has the dose table's masks (nearest-neighbour resampled), so
it reproduces the table; an offset moves the outline through the distance map.

The member's activity is the SPECT counts inside its liver region (liver and lesions), normalised
to A c (1 - r) / (1 - residual_fraction) (1 - LSF), as :func:`sirtjax.dosimetry.activity.activity_from_counts` does. The
member's dose is the VSV or LDM dose of that activity (no CT density). Its VOIs are the perturbed
liver region, its normal liver, and each lesion instance; a moved voxel belongs to the lesion
nearest to it. Per VOI, a member gives the mean dose, D70 (the dose of rank ceil(0.7 n) from the
hottest, as :func:`sirtjax.dosimetry.statistics.rank_for_percent` defines it) and V100 (% of the VOI
at 100 Gy or more).

:func:`ensemble` draws the members with a key and runs them in batches (``jax.lax.map``), on the
bounding box of the region that any offset (clipped to 5 sd) can reach. The box holds every source
and VOI voxel of every member, so the doses inside it are exact. :func:`summarise` gives each metric's
median and 5-95 % interval over all sources, and the same interval with one source varied at a
time (a tornado). The source with the widest interval dominates. :func:`activity_for_target` gives the same for
the activity a plan's dose target needs. :func:`stated_model` checks the command line's options into the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from sirtjax import keys
from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML, get_constants
from sirtjax.dosimetry.dose import convolve_same, voxel_volume_ml, vsv_gy_per_gbq
from sirtjax.dosimetry.kernels import voxel_kernel
from sirtjax.errors import InputError
from sirtjax.preprocess import crop_to_mask, resample_to
from sirtjax.programs import Program, ProgramCache
from sirtjax.volume import Volume

MAX_SD = 5.0  # drawn offsets are clipped to 5 sd, so the ensemble's box holds every member's VOIs
SOURCES = ("calibration", "residual", "lung_shunt", "liver_boundary", "lesion_boundary", "registration")
METRICS = ("mean_gy", "D70_gy", "V100_pct")


@dataclasses.dataclass(frozen=True)
class UncertaintyModel:
    """The stated uncertainties of the inputs (module docstring); 0 holds that source at its value."""

    calibration_rel_sd: float = 0.0
    residual_fraction: float = 0.0
    residual_sd: float = 0.0
    lung_shunt_sd: float = 0.0
    boundary_sd_mm: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {v}")
        if self.residual_fraction >= 1:
            raise ValueError(f"residual_fraction must be below 1, got {self.residual_fraction}")


def stated_model(members: int, calibration_sd: float, residual: float, residual_sd: float, lung_shunt_sd: float,
                 boundary_sd_mm: float) -> UncertaintyModel | None:
    """The UncertaintyModel of the command line's ensemble options, None without ``--uncertainty`` (0 members);
    InputError naming the option otherwise."""
    if members == 0:
        return None
    if not 2 <= members <= 1024:
        raise InputError("--uncertainty", f"an ensemble of 2-1024 members, got {members}")
    values = {"--calibration-sd": calibration_sd, "--residual": residual, "--residual-sd": residual_sd,
              "--lung-shunt-sd": lung_shunt_sd, "--boundary-sd-mm": boundary_sd_mm}
    for option, value in values.items():
        if not 0 <= value < (1 if option == "--residual" else float("inf")):  # NaN fails this too
            raise InputError(option, f"must be a finite number >= 0{' and below 1' if option == '--residual' else ''}, "
                                     f"got {value}")
    return UncertaintyModel(calibration_sd, residual, residual_sd, lung_shunt_sd, boundary_sd_mm)


@dataclasses.dataclass(frozen=True)
class EnsembleOptions:
    """The ensemble options as given, unchecked (``--uncertainty`` and the stated sds); :meth:`stated` checks them."""

    members: int = 0  # ensemble size (0: none)
    calibration_sd: float = 0.0  # relative sd of the activity calibration
    residual_fraction: float = 0.0  # activity left in the vial and catheter
    residual_sd: float = 0.0
    lung_shunt_sd: float = 0.0  # absolute sd of the lung shunt fraction
    boundary_sd_mm: float = 0.0  # sd of the liver and lesion outlines

    def stated(self) -> UncertaintyModel | None:
        """The checked UncertaintyModel (:func:`stated_model`), None without an ensemble."""
        return stated_model(self.members, self.calibration_sd, self.residual_fraction, self.residual_sd,
                            self.lung_shunt_sd, self.boundary_sd_mm)


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Metrics (members, VOIs, METRICS) of all members drawn with every source (``all``) and one source at a time."""

    names: tuple[str, ...]
    nominal: np.ndarray  # (VOIs, METRICS): every input at its stated value
    all: np.ndarray  # (N, VOIs, METRICS)
    by_source: dict[str, np.ndarray]  # source -> (N, VOIs, METRICS); only sources with a non-zero sd


def signed_distance_mm(mask: Volume) -> tuple[Volume, np.ndarray]:
    """Signed distance (mm, float32) of every voxel centre to a mask's surface, negative inside; and the index of the
    nearest voxel across the surface (z, y, x arrays), on the mask's own grid.

    The surface is taken where the ray from a voxel to its nearest voxel across leaves that voxel's box, so a
    face neighbour lies half a spacing from it and an offset of the surface by less than that moves no voxel.
    """
    inside = np.asarray(mask.array) > 0
    spacing_zyx = np.asarray(mask.spacing_mm, float)[::-1]
    if inside.all() or not inside.any():
        return mask.with_array(np.full(inside.shape, -1e6 if inside.any() else 1e6, np.float32)), np.indices(inside.shape)
    d_out, i_out = ndimage.distance_transform_edt(~inside, sampling=spacing_zyx, return_indices=True)
    d_in, i_in = ndimage.distance_transform_edt(inside, sampling=spacing_zyx, return_indices=True)
    across = np.where(inside, i_in, i_out)  # nearest voxel on the other side
    step_mm = (across - np.indices(inside.shape)) * spacing_zyx[:, None, None, None]
    length = np.sqrt(np.sum(step_mm**2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):  # distance from that voxel's centre to its box along the ray
        exit_mm = np.min(np.where(step_mm != 0, 0.5 * spacing_zyx[:, None, None, None] * length / np.abs(step_mm), np.inf), axis=0)
    surface = np.where(inside, d_in, d_out) - exit_mm
    return mask.with_array(np.where(inside, -surface, surface).astype(np.float32)), across


def outline_distance_on_grid(mask: Volume, grid: Volume, reach_mm: float,
                             programs: ProgramCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A mask's signed distance (mm) resampled linearly onto grid, and its labels' nearest-label map (order 0)
    (``programs``: where the resamplings are kept compiled).

    Where the linear distance and the nearest-neighbour mask (what the dose tables use) disagree on a voxel, the
    distance is nudged to the mask's side by 1 um, so that the offset 0 gives exactly that mask. Computed on the
    mask's bounding box widened by reach_mm (memory bounded by the mask, not the scan); beyond it the distance
    reads 1e6 mm (outside).
    """
    inside_nn = np.asarray(resample_to(mask, grid, order=0, programs=programs).array) > 0
    if np.any(np.asarray(mask.array) > 0):
        mask = crop_to_mask(mask, np.asarray(mask.array) > 0, margin_mm=reach_mm + float(np.max(mask.spacing_mm)))
    sdf, across = signed_distance_mm(mask)
    labels = np.asarray(mask.array).astype(np.int32)
    nearest = np.where(labels > 0, labels, labels[tuple(across)])
    linear = np.asarray(resample_to(sdf, grid, order=1, default_value=1e6, programs=programs).array, np.float32)
    linear = np.where(inside_nn, np.minimum(linear, -1e-3), np.maximum(linear, 1e-3))
    return linear, np.asarray(resample_to(mask.with_array(nearest), grid, order=0, programs=programs).array, np.int32)


def _draws(model: UncertaintyModel, lsf: float, key: jax.Array, n: int, sources: Sequence[str],
           alternatives: int = 1, programs: ProgramCache | None = None) -> jax.Array:
    """(n, 6) inputs per member: calibration factor, residual, LSF, liver and lesion offsets (mm), and the index of
    the lesion outline's alternative (0: the plan's); sources not in ``sources`` stay nominal (``programs``: where
    the draw's program is kept)."""
    on = np.asarray([s in sources for s in SOURCES[:5]], np.float32)
    sd = np.asarray([model.calibration_rel_sd, model.residual_sd, model.lung_shunt_sd,
                     model.boundary_sd_mm, model.boundary_sd_mm], np.float32)
    centre = np.asarray([1.0, model.residual_fraction, lsf, 0.0, 0.0], np.float32)
    return _DRAW_ROWS(key, on, sd, centre, np.float32(MAX_SD * model.boundary_sd_mm), np.bool_("registration" in sources),
                      np.int32(alternatives), n, programs=programs)


def _draw_rows(key, on, sd, centre, max_offset_mm, registration, alternatives, n: int) -> jax.Array:
    """:func:`_draws`' rows from the sources' on flags, sds and centres: one program per ensemble size, not a dozen
    eager operations."""
    k_normal, k_index = jax.random.split(key)
    d = centre + on * sd * jax.random.normal(k_normal, (n, 5))
    d = d.at[:, 3:].set(jnp.clip(d[:, 3:], -max_offset_mm, max_offset_mm))
    d = d.at[:, 0].set(jnp.maximum(d[:, 0], 0.01)).at[:, 1:3].set(jnp.clip(d[:, 1:3], 0.0, 0.99))
    index = jnp.where(registration, jax.random.randint(k_index, (n, 1), 0, alternatives), 0)
    return jnp.concatenate([d, index.astype(jnp.float32)], axis=1)


_DRAW_ROWS = Program(_draw_rows, "uncertainty draws", static_argnums=(7,))


def _voi_metrics(dose: jax.Array, masks: jax.Array) -> jax.Array:
    """(VOIs, METRICS) of a dose (Gy, >= 0) and its VOIs' masks (VOIs, ...). Each VOI's D70 is the dose of its voxel
    at rank ceil(0.7 n), hottest first, as the tables take it: found by bisection on the doses' float32 bit
    patterns (ordered as the doses are, for doses >= 0), 31 halvings of counts over the VOIs, the exact value a
    sort gives in a third of a sort's time."""
    flat, voxels = dose.ravel(), masks.reshape(masks.shape[0], -1)
    n = jnp.sum(voxels, axis=1, dtype=jnp.int32)
    rank = jnp.clip((70 * n + 99) // 100, 1, jnp.maximum(n, 1))
    bits = jnp.where(flat > 0, jax.lax.bitcast_convert_type(flat, jnp.int32), 0)

    def halve(_, bounds):  # count(bits >= lo) >= rank > count(bits >= hi)
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(voxels & (bits >= mid[:, None]), axis=1, dtype=jnp.int32) >= rank
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    above_inf = jnp.full(n.shape, 0x7F800001, jnp.int32)  # one past +inf's bit pattern
    lo, _ = jax.lax.fori_loop(0, 31, halve, (jnp.zeros(n.shape, jnp.int32), above_inf))
    d70 = jax.lax.bitcast_convert_type(lo, jnp.float32)
    mean = jnp.sum(jnp.where(voxels, flat, 0.0), axis=1) / n
    v100 = 100.0 * jnp.sum(voxels & (flat >= 100.0), axis=1) / n
    return jnp.where((n > 0)[:, None], jnp.stack([mean, d70, v100], axis=1), jnp.nan)


_BUCKET = 8  # boxes are padded to multiples of 8 voxels, so patients of similar size share one compiled program


def _padded(a: np.ndarray, fill) -> np.ndarray:
    pad = [(0, -n % _BUCKET) for n in a.shape]
    return np.pad(a, pad, constant_values=fill)


def _members(draws, counts, sdf_liver, sdf_lesion, nearest, ids, kernel, activity_gbq, residual0, ldm_gy_per_gbq,
             batch_size, absolute):
    """(members, 2 + lesions, METRICS) of every row of draws (module docstring); kernel None: LDM. ``absolute``:
    counts are GBq per voxel (a PET's), scaled by the calibration draw alone; else SPECT counts, normalised."""

    def member(d: jax.Array) -> jax.Array:
        k = d[5].astype(jnp.int32)
        liver_m, lesion_m = sdf_liver <= d[3], sdf_lesion[k] <= d[4]
        region_m = liver_m | lesion_m
        if absolute:
            act = counts * d[0]
        else:
            inside = jnp.where(region_m, counts, 0.0)
            act = inside * (activity_gbq * d[0] * (1.0 - d[1]) / (1.0 - residual0) * (1.0 - d[2]) / jnp.sum(inside))
        dose = jnp.maximum(convolve_same(act, kernel), 0.0) if kernel is not None else act * ldm_gy_per_gbq
        vois = [region_m, region_m & ~lesion_m] + [lesion_m & (nearest[k] == ids[i]) for i in range(ids.shape[0])]
        return _voi_metrics(dose, jnp.stack(vois))

    return jax.lax.map(member, draws, batch_size=batch_size)


_MEMBERS = Program(_members, "uncertainty members", static_argnums=(10, 11))


def ensemble(counts: Volume, liver: Volume, lesions: Volume | None, *, activity_gbq: float | None,
             lung_shunt_fraction: float, model: UncertaintyModel, key: jax.Array, n: int = 32, dose_model: str = "vsv",
             constants: str = "icrp107", batch_size: int = 8, tornado: bool = True,
             lesion_alternatives: Sequence[Volume] = (), liver_density_g_ml: float = LIVER_DENSITY_G_ML,
             programs: ProgramCache | None = None) -> Ensemble:
    """The ensemble of a SPECT-count plan under ``model``: counts, a liver mask and lesion instances (any grids).

    ``activity_gbq`` None: ``counts`` is a 90Y PET in Bq/ml (as ``voxel_dosimetry(input_kind='bq-per-ml')``
    takes it): every voxel's activity counts, without normalisation; the calibration draw scales it (the PET's
    quantification), and the residual and lung shunt do not apply.

    ``liver_density_g_ml``: the LDM's tissue density (VSV: the kernel's). ``lesion_alternatives``: other plausible lesion maps with the same ids (the lesions mapped by registrations with
    other sampling keys); the ``registration`` source picks one of them, or ``lesions``, per member.

    ``tornado`` False skips the one-source-at-a-time members (``by_source`` empty): n + 1 doses instead of
    up to 6 n + 1. ``programs``: where the members' compiled program is kept for later calls and processes
    (:class:`~sirtjax.programs.ProgramCache`; None: compiled in this process).
    """
    if n < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {n}")
    if dose_model not in ("vsv", "ldm"):
        raise ValueError(f"dose model must be vsv or ldm, got {dose_model!r}")
    spacing_mm = counts.spacing_mm
    spacing_zyx = np.asarray(spacing_mm, float)[::-1]
    reach_mm = MAX_SD * model.boundary_sd_mm + float(spacing_zyx.max())  # the farthest a drawn offset moves a surface
    sdf_liver, _ = outline_distance_on_grid(liver, counts, reach_mm, programs)
    outlines = [outline_distance_on_grid(m, counts, reach_mm, programs)
                for m in ([lesions, *lesion_alternatives] if lesions is not None else [])]
    if not outlines:
        outlines = [(np.full(counts.shape, 1e6, np.float32), np.zeros(counts.shape, np.int32))]
    sdf_lesion, nearest = np.stack([o[0] for o in outlines]), np.stack([o[1] for o in outlines])
    ids = tuple(int(i) for i in np.unique(np.asarray(lesions.array)) if i > 0) if lesions is not None else ()
    region = (sdf_liver <= 0) | (sdf_lesion[0] <= 0)
    if not region.any():
        raise ValueError("the liver mask is empty on the activity grid")
    kernel = vsv_gy_per_gbq(voxel_kernel(spacing_mm), constants) if dose_model == "vsv" else None
    absolute = activity_gbq is None
    if absolute:
        model = dataclasses.replace(model, residual_fraction=0.0, residual_sd=0.0, lung_shunt_sd=0.0)
    near = np.minimum(sdf_liver, sdf_lesion.min(axis=0)) <= reach_mm  # every VOI voxel (and SPECT source) of every member
    # a PET's every voxel is a source: the box also holds those within the kernel's reach of a VOI
    widen = np.array(kernel.shape) // 2 if absolute and kernel is not None else np.zeros(3, int)
    box = tuple(slice(max(int(a.min()) - w, 0), min(int(a.max()) + 1 + w, size))
                for a, w, size in zip(np.nonzero(near), widen, near.shape))
    image = np.asarray(counts.array, np.float32).clip(0) * np.float32(voxel_volume_ml(spacing_mm) * 1e-9 if absolute else 1.0)
    arrays = [_padded(a[box], fill) for a, fill in ((image, 0.0), (sdf_liver, 1e6))]
    arrays = jax.device_put(arrays + [np.stack([_padded(a[box], fill) for a in stack])
                                      for stack, fill in ((sdf_lesion, 1e6), (nearest, 0))])  # stacked on the host
    ldm_gy_per_gbq = get_constants(constants).gy_kg_per_gbq / (liver_density_g_ml * voxel_volume_ml(spacing_mm) * 1e-3)

    def run(draws):
        return np.asarray(_MEMBERS(draws, *arrays, np.asarray(ids, np.int32), kernel, np.float32(activity_gbq or 0.0),
                                   np.float32(model.residual_fraction), np.float32(ldm_gy_per_gbq), batch_size,
                                   absolute, programs=programs))

    draw_keys = keys.split(key, programs, len(SOURCES) + 1)
    residual, lsf = np.clip([model.residual_fraction, lung_shunt_fraction], 0.0, 0.99)  # as _draw_rows clips them
    nominal = run(np.asarray([[1.0, residual, lsf, 0.0, 0.0, 0.0]], np.float32))[0]  # every input at its value
    sds = dict(zip(SOURCES, (model.calibration_rel_sd, model.residual_sd, model.lung_shunt_sd,
                             model.boundary_sd_mm, model.boundary_sd_mm if ids else 0.0, len(outlines) - 1)))
    active = tuple(s for s in SOURCES if sds[s] > 0)
    every = run(_draws(model, lung_shunt_fraction, draw_keys[0], n, active, len(outlines), programs))
    by_source = {s: run(_draws(model, lung_shunt_fraction, draw_keys[1 + i], n, (s,), len(outlines), programs))
                 for i, s in enumerate(SOURCES) if s in active and tornado}
    names = ("liver", "normal_liver", *(f"lesion_{i}" for i in ids))
    return Ensemble(names, nominal, every, by_source)


def _interval(values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None, None, None
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return float(p50), float(p5), float(p95)


def _spread(every: np.ndarray, by_source: dict[str, np.ndarray], nominal: float) -> dict:
    """One quantity's nominal value, median and 5-95 % interval over the members, the same per source, and the
    source whose interval is widest (None when no source widens it)."""
    median, p5, p95 = _interval(every)
    per_source = {s: dict(zip(("median", "p5", "p95"), _interval(v))) for s, v in by_source.items()}
    widths = {s: r["p95"] - r["p5"] for s, r in per_source.items() if r["p5"] is not None}
    return {"nominal": nominal if math.isfinite(nominal) else None, "median": median, "p5": p5, "p95": p95,
            "by_source": per_source,
            "dominant": max(widths, key=widths.get) if widths and max(widths.values()) > 0 else None}


def summarise(e: Ensemble) -> list[dict]:
    """Per VOI and metric: the nominal value, median and 5-95 % interval, the interval per source, the dominant source.

    A member whose outlines leave a VOI no voxel has no value for it: the intervals are over the others, and
    ``members_without_voxels`` counts them (of ``members``).
    """
    out = []
    for v, name in enumerate(e.names):
        metrics = {metric: _spread(e.all[:, v, m], {s: vals[:, v, m] for s, vals in e.by_source.items()},
                                   float(e.nominal[v, m]))
                   for m, metric in enumerate(METRICS)}
        vanished = int(np.sum(~np.isfinite(e.all[:, v, 0])))
        out.append({"name": name, "members": int(e.all.shape[0]), "members_without_voxels": vanished, **metrics})
    return out


def activity_for_target(e: Ensemble, voi: str, target_gy: float, activity_gbq: float) -> dict:
    """The activity (GBq) that gives ``voi`` the mean dose ``target_gy`` in each member of a plan's ensemble drawn at
    ``activity_gbq``: its nominal value, median and 5-95 % interval, per source, and the dominant source.

    A member's dose is linear in the activity it was drawn with, so its activity for the target is
    ``activity_gbq * target_gy / mean``, its mean dose of the VOI. A dose calibrator that reads c times the true
    activity, a larger residual or shunt, or a smaller VOI thus move the activity a prescription needs.
    """
    v = e.names.index(voi)

    def needed(mean: np.ndarray) -> np.ndarray:
        mean = np.asarray(mean, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mean > 0, activity_gbq * target_gy / mean, np.nan)

    spread = _spread(needed(e.all[:, v, 0]), {s: needed(x[:, v, 0]) for s, x in e.by_source.items()},
                     float(needed(e.nominal[v, 0])))
    return {"voi": voi, "target_gy": float(target_gy), **spread}

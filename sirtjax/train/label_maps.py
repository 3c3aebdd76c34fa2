"""The synthetic generator's input: tissue label maps of phantoms and of real scans, stacked for on-device sampling.

A map is a pair (tissue codes uint8, liver distance uint8 mm) on one isotropic canonical grid: the phantom's from
its canonical patient (`sirtjax.phantom.study.canonical_patient`), a real scan's from its multi-organ labels
(`sirtjax.train.anatomy`). :class:`LabelMaps` stacks them, each padded with the code of what lies beyond it (air
around a phantom, ``OUTSIDE`` beyond a real scan), with the probability of drawing each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from sirtjax.phantom.config import PhantomConfig
from sirtjax.phantom.raster import Canonical, Tissue
from sirtjax.phantom.study import canonical_patient
from sirtjax.train.data import save_npz_atomic

PHANTOM_CODES = 64  # codes 0..63: Tissue, the procedural lesions' parts (24-28), LESION + i, NECROSIS + i, FLUID
REAL_CODES = 8  # codes 64..71: the real scans' tissues the phantom has no code for (sirtjax.train.anatomy), OUTSIDE
N_CODES = PHANTOM_CODES + REAL_CODES
FLUID = 63  # the code painted for ascites and resection cavities (unused by the phantom)
OUTSIDE = N_CODES - 1  # beyond a real scan's map (sirtjax.train.anatomy): rendered as the inference padding, no label
FAR_MM = 255  # liver distances are stored as uint8 mm, saturated here


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LabelMaps:
    """Canonical patients stacked for the generator: tissue (N, Z, Y, X) uint8 codes, liver
    distance (N, Z, Y, X) uint8 mm (0 inside the liver), foreground (N, K, 3) int32 liver voxels, outside (N,) uint8
    the code beyond each map (air around a phantom, ``OUTSIDE`` beyond a real scan), log_weights (N,) float32 log
    probabilities of drawing each map."""

    tissue: jax.Array
    liver_mm: jax.Array
    foreground: jax.Array
    outside: jax.Array
    log_weights: jax.Array


def patient_maps(can: Canonical) -> tuple[np.ndarray, np.ndarray]:
    """(tissue codes uint8, liver distance uint8 mm: 0 inside, saturating at 255) of a canonical patient."""
    sdf = np.full(can.tissue.shape, can.liver_sdf.outside, np.float32)
    z0, y0, x0 = can.liver_sdf.start
    dz, dy, dx = can.liver_sdf.array.shape
    sdf[z0 : z0 + dz, y0 : y0 + dy, x0 : x0 + dx] = can.liver_sdf.array
    liver = sdf < 0
    dist = ndimage.distance_transform_edt(~liver, sampling=can.spacing_mm)
    return can.tissue.astype(np.uint8), np.clip(np.ceil(dist), 0, FAR_MM).astype(np.uint8)


def stack_label_maps(patients: Sequence[tuple[np.ndarray, np.ndarray]], *, n_foreground: int = 4096, seed: int = 0,
                     outside: Sequence[int] | None = None, weights: Sequence[float] | None = None) -> LabelMaps:
    """Stack (tissue, liver distance) pairs into LabelMaps, each padded about its centre to the largest grid.

    ``outside``: per map, the code of everything beyond it, padding included (default air: canonical grids differ
    where a phantom variant widens them, arms beside the trunk, and the padding is air outside the body, far from the
    liver; a real scan's map has ``OUTSIDE`` beyond it). ``weights``: per map, the relative probability of drawing
    it (default equal).
    """
    if not patients:
        raise ValueError("no label maps for the synthetic generator")
    if any(t.shape != d.shape for t, d in patients):
        raise ValueError("a tissue map and its liver distance map differ in shape")
    outside = [int(Tissue.AIR)] * len(patients) if outside is None else [int(c) for c in outside]
    weights = np.ones(len(patients)) if weights is None else np.asarray(weights, np.float64)
    if len(outside) != len(patients) or weights.shape != (len(patients),):
        raise ValueError("outside codes and weights need one value per label map")
    if np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError("label map weights must be >= 0 with at least one > 0")
    big = np.max([t.shape for t, _ in patients], axis=0)

    def pad(a: np.ndarray, value: int) -> np.ndarray:
        extra = big - np.asarray(a.shape)
        return np.pad(a, [(e // 2, e - e // 2) for e in extra], constant_values=value)

    patients = [(pad(t, code), pad(d, FAR_MM)) for (t, d), code in zip(patients, outside)]
    rng = np.random.default_rng(seed)
    fg = []
    for _, liver_mm in patients:
        idx = np.argwhere(liver_mm == 0)
        fg.append(idx[rng.integers(0, len(idx), n_foreground)] if len(idx) else np.tile(np.array(liver_mm.shape) // 2, (n_foreground, 1)))
    return LabelMaps(
        jnp.asarray(np.stack([t for t, _ in patients])), jnp.asarray(np.stack([d for _, d in patients])), jnp.asarray(np.stack(fg).astype(np.int32)),
        jnp.asarray(outside, jnp.uint8), jnp.asarray(np.log(np.maximum(weights, 1e-30)), jnp.float32),
    )


def phantom_patient(seed: int, options: dict[str, Any], cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`patient_maps` of a phantom seed made with PhantomConfig(**options), cached as .npz in cache_dir."""
    tag = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    path = None if cache_dir is None else Path(cache_dir) / f"synth_seed{seed}_{tag}.npz"
    if path is not None and path.is_file():
        with np.load(path) as d:
            return d["tissue"], d["liver_mm"]
    tissue, liver_mm = patient_maps(canonical_patient(int(seed), PhantomConfig(**options)))
    if path is not None:
        save_npz_atomic(path, tissue=tissue, liver_mm=liver_mm)
    return tissue, liver_mm


def canonical_spacing_mm(variants: Sequence[dict[str, Any]]) -> float:
    """The canonical spacing (mm) that phantoms made with these PhantomConfig options share; ValueError if they differ."""
    spacings = {float(c.canonical_spacing_mm * c.spacing_scale) for c in (PhantomConfig(**o) for o in variants)}
    if len(spacings) != 1:
        raise ValueError(f"synth variants must share one canonical spacing, got {sorted(spacings)}")
    return spacings.pop()


def phantom_label_maps(seeds: Sequence[int], variants: Sequence[dict[str, Any]], cache_dir: Path | None, *, seed: int = 0,
                       real: Sequence[tuple[np.ndarray, np.ndarray]] = (), real_share: float = 0.0) -> tuple[LabelMaps, float]:
    """(LabelMaps, canonical spacing mm) of phantom seeds; seed i is made with variants[i % len(variants)].

    ``real``: maps of real anatomy on the same spacing (`sirtjax.train.anatomy.real_patient`), drawn ``real_share`` of
    the time altogether (each real map equally often, each phantom equally often), with ``OUTSIDE`` beyond them.
    """
    options = [variants[i % len(variants)] for i in range(len(seeds))]
    spacing_mm = canonical_spacing_mm(options)
    if not 0.0 <= real_share <= 1.0 or (real_share > 0) != bool(real) or (real_share == 1.0 and seeds):
        raise ValueError("real_share must be in [0, 1], above 0 exactly when real maps are given, and below 1 with phantom seeds")
    phantoms = [phantom_patient(s, o, cache_dir) for s, o in zip(seeds, options)]
    weights = [(1.0 - real_share) / len(phantoms)] * len(phantoms) + [real_share / max(len(real), 1)] * len(real)
    outside = [int(Tissue.AIR)] * len(phantoms) + [OUTSIDE] * len(real)
    return stack_label_maps([*phantoms, *real], seed=seed, outside=outside, weights=weights), spacing_mm

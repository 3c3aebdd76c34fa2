"""Training pairs of the joint registration-segmentation network: phantom studies on the network grid.

A pair is a fixed MAA CT (non-contrast) with its liver and a moving diagnostic (contrast) CT with
its liver, pre-aligned by the registration core's image-based affine and put on the fixed image's
network grid exactly as at inference (:func:`sirtjax.segmentation.regseg.network_pair`).
Intra-patient pairs take one seed's two CTs; inter-patient pairs one seed's MAA CT and another
seed's diagnostic CT (paper 004 trains on both). Prepared pairs are cached as .npz.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sirtjax.preprocess import PAD_VALUE
from sirtjax.segmentation.preprocess import prepare_label
from sirtjax.segmentation.regseg import network_pair, prealign
from sirtjax.train.data import save_npz_atomic


@dataclasses.dataclass(frozen=True)
class TrainPair:
    """One pair on its network grid, each (z, y, x) float32: fixed image and liver, moving image and liver (0..1)."""

    name: str
    fixed: np.ndarray
    fixed_mask: np.ndarray
    moving: np.ndarray
    moving_mask: np.ndarray


def pair_seeds(seeds: Sequence[int], inter_offsets: Sequence[int]) -> list[tuple[int, int]]:
    """(fixed seed, moving seed): every seed with itself, then with the seed `offset` places on (cyclic)."""
    seeds = list(seeds)
    out = [(s, s) for s in seeds]
    for off in inter_offsets:
        out += [(s, seeds[(i + int(off)) % len(seeds)]) for i, s in enumerate(seeds) if seeds[(i + int(off)) % len(seeds)] != s]
    return out


def phantom_pairs(pairs: Sequence[tuple[int, int]], spacing_mm: Sequence[float], shape_zyx: Sequence[int], cache_dir: Path | None) -> list[TrainPair]:
    """TrainPairs of (fixed seed, moving seed) phantom pairs, cached in cache_dir (phantoms are deterministic)."""
    from sirtjax.phantom import generate_study

    tag = "x".join(f"{float(s):g}" for s in spacing_mm) + "_" + "x".join(str(int(n)) for n in shape_zyx)
    path = {p: None if cache_dir is None else Path(cache_dir) / f"regseg_{p[0]}_{p[1]}_{tag}.npz" for p in pairs}
    todo = [p for p in pairs if path[p] is None or not path[p].is_file()]
    studies = {s: generate_study(int(s)).images for s in sorted({s for p in todo for s in p})}
    affines = prealign([(studies[f]["maa_ct"], studies[m]["diag_ct"]) for f, m in todo]) if todo else []
    made = {}
    for (f, m), affine in zip(todo, affines):
        fixed, moving = studies[f], studies[m]
        net = network_pair(fixed["maa_ct"], moving["diag_ct"], moving["diag_ct_liver"], affine, spacing_mm, shape_zyx)
        fixed_mask = np.asarray(prepare_label(fixed["maa_ct_liver"], net.grid).array > 0, np.float32)
        arrays = dict(fixed=net.fixed, fixed_mask=fixed_mask, moving=net.moving, moving_mask=net.moving_mask)
        if path[(f, m)] is not None:
            save_npz_atomic(path[(f, m)], **arrays)
        made[(f, m)] = arrays
    out = []
    for p in pairs:
        if p in made:
            arrays = made[p]
        else:
            with np.load(path[p]) as d:
                arrays = {k: d[k] for k in ("fixed", "fixed_mask", "moving", "moving_mask")}
        out.append(TrainPair(f"fixed{p[0]}_moving{p[1]}", **arrays))
    return out


def random_crop(rng: np.random.Generator, pair: TrainPair, crop: Sequence[int]) -> tuple[np.ndarray, ...]:
    """A (z, y, x) crop of the pair's four arrays about a random fixed-liver voxel; grids smaller than the crop are
    padded (air, no liver). Returns fixed, fixed liver, moving, moving liver."""
    arrays = [pair.fixed, pair.fixed_mask, pair.moving, pair.moving_mask]
    pads = [(0, max(0, int(c) - n)) for c, n in zip(crop, pair.fixed.shape)]
    arrays = [np.pad(a, pads, constant_values=v) for a, v in zip(arrays, (PAD_VALUE, 0.0, PAD_VALUE, 0.0))]
    liver = np.argwhere(arrays[1] > 0)
    centre = liver[rng.integers(len(liver))] if len(liver) else np.asarray(arrays[0].shape) // 2
    start = [int(np.clip(c - int(k) // 2, 0, n - int(k))) for c, k, n in zip(centre, crop, arrays[0].shape)]
    cut = tuple(slice(s, s + int(k)) for s, k in zip(start, crop))
    return tuple(a[cut] for a in arrays)

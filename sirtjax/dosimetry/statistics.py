"""Dose statistics for every VOI of a label map in one vectorised call: means, D_x, V_x, DVHs.

Definitions (all voxels of a grid have the same volume, so volume fractions are voxel fractions):
  - ``D_x`` (x in percent): the minimum dose to the hottest x % of the VOI. With the VOI's n doses
    sorted in decreasing order d_1 >= d_2 >= ... >= d_n, ``D_x = d_k`` with ``k = max(1, ceil(x n / 100))``.
    So D_100 is the minimum and D_0 the maximum; no interpolation between voxels.
  - ``V_x`` (x in Gy): percentage of the VOI's voxels receiving at least x Gy (``d >= x``).
  - DVH: per VOI, the fraction of its voxels in each dose bin ``[e_b, e_(b+1))`` of a common linear
    grid from 0 to a rounded-up maximum; cumulative DVH: the fraction with ``d >= e_b``. Negative
    doses (never produced by sirtjax) lie below the grid and are in no bin.
  - Empty VOI (a label with no voxel): count and volume 0, every dose statistic NaN (``to_records``
    turns NaN into None for JSON).

Method, without sorting and without a Python loop over voxels: the voxels of the VOIs are gathered
(on the host, padded to a power of two so that few sizes get compiled), their doses mapped to order-preserving
32-bit keys. One pass of ``bincount`` per label over the high 16 bits gives each VOI's counts and
locates, for every requested rank k, the 16-bit bucket holding the k-th largest dose; a second pass
histograms the low 16 bits of just the voxels in those buckets, which pins the exact dose (radix
selection). The same passes give per-VOI sums (accumulated per block and then in float64 on the
host), V_x counts and the DVH histogram. Memory is O(n + (labels + 1) * 65536), not n x bins.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.programs import Program, ProgramCache

DEFAULT_DOSE_LEVELS_PCT = (70.0, 50.0)
DEFAULT_VOLUME_LEVELS_GY = (70.0, 100.0, 120.0)
_RADIX = 1 << 16
_SUM_BLOCK = 1 << 16


@dataclasses.dataclass(frozen=True)
class VoiStatistics:
    """Per-VOI statistics for labels 1..L (axis 0 of every array is the label); doses in Gy."""

    voxel_count: np.ndarray  # (L,) int64
    volume_ml: np.ndarray  # (L,)
    mean_gy: np.ndarray  # (L,), NaN when empty
    min_gy: np.ndarray
    max_gy: np.ndarray
    dose_levels_pct: tuple[float, ...]
    d_gy: np.ndarray  # (L, len(dose_levels_pct)): D_x
    volume_levels_gy: tuple[float, ...]
    v_pct: np.ndarray  # (L, len(volume_levels_gy)): V_x in percent
    dvh_edges_gy: np.ndarray  # (B + 1,)
    dvh_fraction: np.ndarray  # (L, B): fraction of the VOI per bin
    cdvh_fraction: np.ndarray  # (L, B): fraction of the VOI with dose >= dvh_edges_gy[b]

    def to_records(self, names: list[str]) -> list[dict]:
        """One JSON-ready dict per VOI (name, volume, mean/min/max, D_x, V_x); NaN becomes None."""
        if len(names) != len(self.voxel_count):
            raise ValueError(f"{len(names)} names for {len(self.voxel_count)} VOIs")

        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else float(v)

        out = []
        for i, name in enumerate(names):
            rec = {
                "name": name,
                "voxels": int(self.voxel_count[i]),
                "volume_ml": float(self.volume_ml[i]),
                "mean_gy": num(self.mean_gy[i]),
                "min_gy": num(self.min_gy[i]),
                "max_gy": num(self.max_gy[i]),
            }
            rec.update({f"D{_fmt(x)}_gy": num(self.d_gy[i, j]) for j, x in enumerate(self.dose_levels_pct)})
            rec.update({f"V{_fmt(x)}_pct": num(self.v_pct[i, j]) for j, x in enumerate(self.volume_levels_gy)})
            out.append(rec)
        return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def _ordered_keys(d: jax.Array) -> jax.Array:
    """Order-preserving uint32 keys of float32 values (negatives included)."""
    u = jax.lax.bitcast_convert_type(d, jnp.uint32)
    return jnp.where((u >> 31) == 1, ~u, u | jnp.uint32(0x80000000))


def _keys_to_float(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, np.uint32)
    u = np.where(keys >> 31 == 1, keys ^ np.uint32(0x80000000), ~keys).astype(np.uint32)
    return u.view(np.float32).astype(np.float64)


def _segments(labels: jax.Array, num_labels: int) -> jax.Array:
    lab = labels.astype(jnp.int32)
    return jnp.where((lab >= 1) & (lab <= num_labels), lab - 1, num_labels)


def _pass_counts(dose: jax.Array, labels: jax.Array, v_levels: jax.Array, num_labels: int):
    d = dose.ravel().astype(jnp.float32)
    seg = _segments(labels.ravel(), num_labels)
    hi = (_ordered_keys(d) >> 16).astype(jnp.int32)
    hist_hi = jnp.bincount(seg * _RADIX + hi, length=(num_labels + 1) * _RADIX).reshape(num_labels + 1, _RADIX)
    n_blocks = -(-d.size // _SUM_BLOCK)
    block = jnp.arange(d.size, dtype=jnp.int32) // _SUM_BLOCK
    sums = jax.ops.segment_sum(d, seg * n_blocks + block, num_segments=(num_labels + 1) * n_blocks)
    above = sum((d >= v_levels[i]).astype(jnp.int32) for i in range(v_levels.shape[0]))
    n_v = v_levels.shape[0] + 1
    v_hist = jnp.bincount(seg * n_v + above, length=(num_labels + 1) * n_v).reshape(num_labels + 1, n_v)
    sums = sums.reshape(num_labels + 1, n_blocks)[:num_labels]
    return hist_hi[:num_labels], sums, v_hist[:num_labels], jnp.all(jnp.isfinite(d))


def _pass_select(dose, labels, lookup, bin_width, num_labels: int, num_pairs: int, num_bins: int):
    d = dose.ravel().astype(jnp.float32)
    seg = _segments(labels.ravel(), num_labels)
    keys = _ordered_keys(d)
    hi = (keys >> 16).astype(jnp.int32)
    lo = (keys & jnp.uint32(0xFFFF)).astype(jnp.int32)
    pair = lookup[seg, hi]
    idx = jnp.where(pair >= 0, pair * _RADIX + lo, num_pairs * _RADIX)
    hist_lo = jnp.bincount(idx, length=(num_pairs + 1) * _RADIX).reshape(num_pairs + 1, _RADIX)[:num_pairs]
    b = jnp.clip(jnp.floor(d / bin_width), 0, num_bins - 1).astype(jnp.int32)
    in_grid = jnp.where(d >= 0, seg, num_labels)  # negative doses lie below the grid
    dvh = jnp.bincount(in_grid * num_bins + b, length=(num_labels + 1) * num_bins).reshape(num_labels + 1, num_bins)
    return hist_lo, dvh[:num_labels]


_COUNTS = Program(_pass_counts, "dose statistics counts", static_argnums=(3,))
_SELECT = Program(_pass_select, "dose statistics select", static_argnums=(4, 5, 6))


def _compact(dose: np.ndarray, labels: np.ndarray, num_labels: int) -> tuple[jax.Array, jax.Array]:
    """The voxels of labels 1..num_labels only, zero-padded (label 0) to a power of two (few compilations)."""
    keep = np.flatnonzero((labels >= 1) & (labels <= num_labels))
    size = 1 << max(10, int(keep.size - 1).bit_length())
    d = np.zeros(size, np.float32)
    lab = np.zeros(size, np.int32)
    d[: keep.size] = dose[keep]
    lab[: keep.size] = labels[keep]
    return jax.device_put(d), jax.device_put(lab)


def _nice_ceil(v: float) -> float:
    if not np.isfinite(v) or v <= 0:
        return 1.0
    e = 10.0 ** math.floor(math.log10(v))
    return next(m * e for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * e >= v * (1 - 1e-12))


def _bucket_of_rank(hist: np.ndarray, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest value (k >= 1) of a histogram, and k's rank inside it."""
    above = np.cumsum(hist[::-1])[::-1]  # above[b]: values in buckets >= b
    b = int(np.nonzero(above >= k)[0][-1])
    return b, k - (int(above[b + 1]) if b + 1 < hist.size else 0)


def rank_for_percent(count: int, x_pct: float) -> int:
    """Rank k of D_x among a VOI's ``count`` doses sorted decreasingly: max(1, ceil(x * count / 100))."""
    k = math.ceil(round(x_pct * count, 9) / 100.0)
    return min(count, max(1, k))


def voi_statistics(
    dose_gy: jax.Array,
    labels: jax.Array,
    *,
    voxel_volume_ml: float,
    num_labels: int | None = None,
    dose_levels_pct=DEFAULT_DOSE_LEVELS_PCT,
    volume_levels_gy=DEFAULT_VOLUME_LEVELS_GY,
    num_bins: int = 500,
    programs: ProgramCache | None = None,
) -> VoiStatistics:
    """Statistics of dose_gy over each label 1..num_labels of labels (same shape, any shape; 0 = background).

    ``num_labels`` defaults to the largest label; labels above it are ignored like 0. Voxels of overlapping VOIs can be given by
    concatenating flattened (dose, label) arrays. Dose must be finite (ValueError otherwise). ``programs``: where its
    two passes' compiled programs are kept (:class:`~sirtjax.programs.ProgramCache`).
    """
    labels = np.asarray(labels)
    if np.shape(dose_gy) != labels.shape:
        raise ValueError(f"dose {np.shape(dose_gy)} and labels {labels.shape} differ in shape")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size >= 2**31:
        raise ValueError("more than 2**31 voxels are not supported")
    num_labels = int(labels.max(initial=0)) if num_labels is None else int(num_labels)
    if num_labels < 1:
        raise ValueError("no VOI: the label map has no label >= 1")
    dose, labels = _compact(np.asarray(dose_gy, np.float32).ravel(), labels.ravel(), num_labels)
    dose_levels = tuple(float(x) for x in dose_levels_pct)
    if any(not 0.0 <= x <= 100.0 for x in dose_levels):
        raise ValueError(f"D_x levels must be percentages in [0, 100], got {dose_levels}")
    volume_levels = tuple(float(x) for x in volume_levels_gy)
    v_sorted = np.sort(np.asarray(volume_levels, np.float32))

    hist_hi, sums, v_hist, finite = jax.device_get(
        _COUNTS(dose, labels, jax.device_put(v_sorted), num_labels, programs=programs)
    )
    if not finite:
        raise ValueError("dose contains NaN or infinite values")
    hist_hi = np.asarray(hist_hi, np.int64)
    counts = hist_hi.sum(axis=1)

    # Every requested rank: D_x levels, then the maximum (k = 1) and minimum (k = n).
    queries = []  # (label index, column, k)
    for lab in np.nonzero(counts)[0]:
        n = int(counts[lab])
        ks = [rank_for_percent(n, x) for x in dose_levels] + [1, n]
        queries += [(int(lab), col, k) for col, k in enumerate(ks)]
    lookup = np.full((num_labels + 1, _RADIX), -1, np.int32)
    pair_of, placed = {}, []
    for lab, col, k in queries:
        b, k_in = _bucket_of_rank(hist_hi[lab], k)
        pair = pair_of.setdefault((lab, b), len(pair_of))
        lookup[lab, b] = pair
        placed.append((lab, col, b, pair, k_in))
    top_bucket = max((b for lab, col, b, _, _ in placed if col == len(dose_levels)), default=None)
    upper = 1.0 if top_bucket is None else float(_keys_to_float(np.uint32((top_bucket << 16) | 0xFFFF)))
    edges = np.linspace(0.0, _nice_ceil(upper), num_bins + 1)

    hist_lo, dvh = jax.device_get(
        _SELECT(dose, labels, jax.device_put(lookup), np.float32(edges[1]), num_labels, max(1, len(pair_of)), num_bins,
                programs=programs)
    )
    ranked = np.full((num_labels, len(dose_levels) + 2), np.nan)
    for lab, col, b, pair, k_in in placed:
        lo, _ = _bucket_of_rank(np.asarray(hist_lo[pair], np.int64), k_in)
        ranked[lab, col] = _keys_to_float(np.uint32((b << 16) | lo))

    with np.errstate(invalid="ignore", divide="ignore"):
        n = counts.astype(np.float64)
        mean = sums.astype(np.float64).sum(axis=1) / n
        at_least = np.cumsum(np.asarray(v_hist, np.int64)[:, ::-1], axis=1)[:, ::-1][:, 1:]  # d >= v_sorted[i]
        order = np.searchsorted(v_sorted, np.asarray(volume_levels, np.float32))
        v_pct = 100.0 * at_least[:, order] / n[:, None]
        dvh = np.asarray(dvh, np.float64) / n[:, None]
        cdvh = np.cumsum(dvh[:, ::-1], axis=1)[:, ::-1]
    return VoiStatistics(
        voxel_count=counts,
        volume_ml=counts * float(voxel_volume_ml),
        mean_gy=mean,
        min_gy=ranked[:, -1],
        max_gy=ranked[:, -2],
        dose_levels_pct=dose_levels,
        d_gy=ranked[:, : len(dose_levels)],
        volume_levels_gy=volume_levels,
        v_pct=v_pct,
        dvh_edges_gy=edges,
        dvh_fraction=dvh,
        cdvh_fraction=cdvh,
    )

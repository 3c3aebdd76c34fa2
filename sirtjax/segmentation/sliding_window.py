"""Sliding-window inference with valid-convolution margins, Gaussian blending and batched tiles.

An image (z, y, x, C) is covered by output tiles of size `out_tile` overlapping by at least `overlap`
(50 % by default), spread evenly; each is predicted from the input tile `in_tile` centred on it (larger by the
network's margin on each side; for same-size networks in_tile == out_tile). Outside the image the
input is padded with `pad_value`. Overlapping predictions are blended with Gaussian weights
(sigma = `sigma_scale` x tile size, as in nnU-Net) so tile borders do not show. `shifts` adds placements of the
whole tiling, each moved back by a number of voxels along every axis, blended with the first: a network whose
prediction depends on its tile (instance normalisation, strided pooling) is averaged over more of them. Only one
batch of tiles and two accumulators of the image's size are held at a time (bounded memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from sirtjax.preprocess import PAD_VALUE

NNUNET_SIGMA_SCALE = 0.125  # nnU-Net's Gaussian: sigma = 1/8 of the tile, so each voxel is mostly its nearest tile centre's


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start indices of output tiles of length `tile` covering [0, size) with at least the given overlap.

    nnU-Net's rule: the fewest tiles spaced at most tile * (1 - overlap) apart (at least 1) before rounding to whole
    voxels, spread evenly from 0 to size - tile, so no two tiles nearly coincide. When the image is shorter than a
    tile, one tile starts at 0 (the rest is padding).
    """
    if size <= tile:
        return [0]
    n = int(np.ceil((size - tile) / max(1.0, tile * (1.0 - overlap)))) + 1
    return [int(round(i * (size - tile) / (n - 1))) for i in range(n)]


def gaussian_weights(tile: Sequence[int], sigma_scale: float = NNUNET_SIGMA_SCALE) -> np.ndarray:
    """Separable Gaussian importance map (z, y, x) float32 peaking at 1 in the tile centre, > 0 everywhere."""
    w = np.ones((), np.float32)
    for n in tile:
        c = (n - 1) / 2.0
        g = np.exp(-0.5 * ((np.arange(n) - c) / max(sigma_scale * n, 1e-3)) ** 2).astype(np.float32)
        w = np.multiply.outer(w, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def _tiles(shape: Sequence[int], out_tile: Sequence[int], overlap: float) -> Iterator[tuple[int, int, int]]:
    for z in tile_starts(shape[0], out_tile[0], overlap):
        for y in tile_starts(shape[1], out_tile[1], overlap):
            for x in tile_starts(shape[2], out_tile[2], overlap):
                yield (z, y, x)


def sliding_window(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    in_tile: Sequence[int],
    out_tile: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    pad_value: float = PAD_VALUE,
    sigma_scale: float = NNUNET_SIGMA_SCALE,
    shifts: Sequence[int] = (0,),
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Blend tile predictions over a whole image.

    Args:
      predict: maps a batch (B, *in_tile, C) float32 to (B, *out_tile, K) class scores; B is always
        `batch_size` (short batches are padded) so a jit-compiled function compiles once.
      image: (z, y, x, C) float32 network input.
      in_tile, out_tile: tile sizes (z, y, x); in_tile - out_tile must be even (twice the margin).
      overlap: the least fraction of the output tile shared with the next tile (before rounding), in [0, 1).
      sigma_scale: the blending Gaussian's sigma as a fraction of the tile (:func:`gaussian_weights`); larger
        values average more of the overlapping tiles' predictions.
      shifts: placements of the tiling (voxels >= 0, 0 among them): for each, every tile moved back by that many
        voxels along every axis (at most the output tile less one), so each placement has the same number of tiles;
        all of them are blended together.
      on_batch: optional progress callback(done_tiles, total_tiles).

    Returns:
      (z, y, x, K) float32: the Gaussian-weighted mean of the predictions covering each voxel.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 4:
        raise ValueError(f"image must be (z, y, x, C), got shape {image.shape}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if 0 not in shifts or min(shifts) < 0:
        raise ValueError(f"shifts must be voxel counts >= 0 that include 0 (the placement that reaches the image's end), got {tuple(shifts)}")
    shape = image.shape[:3]
    placements = sorted({tuple(min(int(s), o - 1) for o in out_tile) for s in shifts})  # every tile keeps image voxels
    front = np.max(placements, axis=0)
    margin = []
    for i, o in zip(in_tile, out_tile):
        if i < o or (i - o) % 2:
            raise ValueError(f"input tile {tuple(in_tile)} must exceed output tile {tuple(out_tile)} by an even margin")
        margin.append((i - o) // 2)
    pad = [(m + f, m + max(0, o - n)) for m, f, o, n in zip(margin, front, out_tile, shape)] + [(0, 0)]
    padded = np.pad(image, pad, constant_values=pad_value)
    weights = gaussian_weights(out_tile, sigma_scale)
    acc = None  # (z, y, x, K), allocated once K is known from the first prediction
    wsum = np.zeros(shape, np.float32)
    tiling = list(_tiles(shape, out_tile, overlap))
    starts = [tuple(v - s for v, s in zip(t, shift)) for shift in placements for t in tiling]  # each placement moved back
    for b0 in range(0, len(starts), batch_size):
        chunk = starts[b0 : b0 + batch_size]
        batch = np.full((batch_size, *in_tile, image.shape[3]), pad_value, np.float32)
        for t, start in enumerate(chunk):
            z, y, x = (int(v + f) for v, f in zip(start, front))
            batch[t] = padded[z : z + in_tile[0], y : y + in_tile[1], x : x + in_tile[2]]
        pred = np.asarray(predict(batch), np.float32)
        if acc is None:
            acc = np.zeros(shape + pred.shape[-1:], np.float32)
        for t, start in enumerate(chunk):
            inside = tuple(slice(max(s, 0), min(s + o, n)) for s, o, n in zip(start, out_tile, shape))  # in the image
            own = tuple(slice(i.start - s, i.stop - s) for i, s in zip(inside, start))  # the same voxels in the tile
            acc[inside] += pred[t][own] * weights[own][..., None]
            wsum[inside] += weights[own]
        if on_batch is not None:
            on_batch(min(b0 + batch_size, len(starts)), len(starts))
    return acc / wsum[..., None]

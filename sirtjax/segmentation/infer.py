"""Whole-image inference: prepare (canonical grid, window), sliding window, map back, post-process.

The probability map is computed on the model's canonical grid (e.g. 3 mm, identity direction) and
resampled trilinearly onto the input grid with ITK semantics (`sirtjax.preprocess.resample_to`),
so the mask lies exactly on the input's voxels whatever its spacing, origin and direction; the
threshold is applied after that resampling.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sirtjax.preprocess import PAD_VALUE, resample_to
from sirtjax.programs import Program, ProgramCache
from sirtjax.segmentation.noise import NoiseMatch
from sirtjax.segmentation.postprocess import foreground_box, liver_mask
from sirtjax.segmentation.preprocess import prepare_image
from sirtjax.segmentation.sliding_window import NNUNET_SIGMA_SCALE, sliding_window
from sirtjax.volume import Volume

DEFAULT_TILE_OUT = (136, 136, 163)  # thesis output tile, given (x, y, z) like the thesis' 163x136x136


def _probabilities(graphdef: nnx.GraphDef, flips: tuple[int, ...], state: nnx.State, x: jax.Array) -> jax.Array:
    """Class probabilities (B, z, y, x, C) of a batch; the mean over the input and its mirror along each of `flips`
    (spatial axes 0-2: z, y, x)."""
    model = nnx.merge(graphdef, state)

    def probs(inp: jax.Array) -> jax.Array:
        logits = model(inp)
        return jax.nn.sigmoid(logits) if logits.shape[-1] == 1 else jax.nn.softmax(logits, axis=-1)

    return sum((jnp.flip(probs(jnp.flip(x, a + 1)), a + 1) for a in flips), probs(x)) / (1 + len(flips))


_forward = jax.jit(_probabilities, static_argnums=(0, 1))


def tta_flips(spec: dict[str, Any]) -> tuple[int, ...]:
    """The spatial axes (z, y, x as 0-2) a model was trained mirrored along: the only flips test-time augmentation may
    use, since a flip along any other axis shows the network anatomy it never saw (a liver on the wrong side)."""
    return tuple(int(a) for a in spec.get("flip_axes", ()))


def graph_digest(graphdef: nnx.GraphDef) -> str:
    """A short digest of a model graph's structure (every static setting, function addresses left out): what names
    its compiled programs, so that a later process finds their executables in a :class:`ProgramCache`."""
    structure = re.sub(r" at 0x[0-9a-f]+", "", repr(graphdef))
    return hashlib.sha256(structure.encode()).hexdigest()[:20]


def forward_program(graphdef: nnx.GraphDef, flips: tuple[int, ...]) -> Program:
    """The forward pass of a model's graph as a :class:`Program`, named by :func:`graph_digest`."""
    return Program(partial(_probabilities, graphdef, flips), f"segmentation forward {graph_digest(graphdef)} flips {flips}")


def model_tiles(model: nnx.Module, image_shape: Sequence[int], max_out_tile: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(in_tile, out_tile) (z, y, x): output tiles no larger than needed for the image, valid for the model."""
    want = [min(int(n), int(t)) for n, t in zip(image_shape, max_out_tile)]
    in_tile = model.input_shape_for(want)
    return in_tile, model.output_shape(in_tile)


def predict_array(
    model: nnx.Module,
    image: np.ndarray,
    *,
    max_out_tile: Sequence[int],
    flips: tuple[int, ...] = (),
    overlap: float = 0.5,
    sigma_scale: float = NNUNET_SIGMA_SCALE,
    shifts: Sequence[int] = (0,),
    edge_margin: int = 0,
    batch_size: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
    programs: ProgramCache | None = None,
) -> np.ndarray:
    """Class probabilities (z, y, x, C) for a windowed network input (z, y, x) or (z, y, x, C).

    The tiles cover only the box of the image's content (:func:`content_box`): beyond it the image equals the
    sliding window's padding, and the prediction there is background (probability 0 for a sigmoid output, the first
    class for a softmax). A 400 mm CT field of view holds about half as many tiles of body as of image.
    ``flips``: also run the input mirrored along these spatial axes and average (:func:`tta_flips`).
    ``overlap``, ``sigma_scale``, ``shifts``: how the tiles overlap, are blended and placed
    (:func:`~sirtjax.segmentation.sliding_window.sliding_window`). ``edge_margin``: where the content reaches the
    image's border (a field of view that cuts the body) along an axis that needs several tiles, the tiles also cover
    that many voxels of padding beyond it, so that some tile holds the cut region away from its own edge, as training
    patches of a cut scan do (:func:`with_edge_margin`).
    ``programs``: where the compiled forward pass is kept for later processes (None: in this process only).
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 3:
        image = image[..., None]
    box = content_box(image)
    region, inside_region = with_edge_margin(image, box, edge_margin, max_out_tile)
    in_tile, out_tile = model_tiles(model, region.shape[:3], max_out_tile)
    graphdef, state = nnx.split(model)
    program = None if programs is None else forward_program(graphdef, flips)
    inside = sliding_window(
        lambda batch: (_forward(graphdef, flips, state, jax.device_put(batch)) if program is None
                       else program(state, jax.device_put(batch), programs=programs)),
        region,
        in_tile=in_tile,
        out_tile=out_tile,
        overlap=overlap,
        sigma_scale=sigma_scale,
        shifts=shifts,
        batch_size=batch_size,
        on_batch=on_batch,
    )[inside_region]
    if inside.shape[:3] == image.shape[:3]:
        return inside
    out = np.zeros(image.shape[:3] + inside.shape[3:], np.float32)
    if inside.shape[-1] > 1:
        out[..., 0] = 1.0  # softmax: the background class
    out[box] = inside
    return out


CONTENT_ABOVE_PAD = 1e-3  # window units (0.4 HU of the CT window): less is the padding's float error, not content


def with_edge_margin(image: np.ndarray, box: tuple[slice, ...], margin: int, out_tile: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """(the box's part of a network input (z, y, x, C), padded with ``margin`` voxels of the padding value beyond every
    side where the box reaches the image's border along an axis on which it needs more than one output tile; the
    slices of the box within it). Content that one tile holds whole is seen with padding beyond it already."""
    pads = [(margin if sl.start == 0 else 0, margin if sl.stop == n else 0) if sl.stop - sl.start > t else (0, 0)
            for sl, n, t in zip(box, image.shape[:3], out_tile)]
    region = np.pad(image[box], pads + [(0, 0)], constant_values=PAD_VALUE) if margin else image[box]
    return region, tuple(slice(lo, lo + sl.stop - sl.start) for (lo, _), sl in zip(pads, box))


def content_box(image: np.ndarray) -> tuple[slice, slice, slice]:
    """The box (z, y, x slices) of a windowed network input (z, y, x, C) holding every voxel above the sliding window's
    padding value (air in the CT window) by more than CONTENT_ABOVE_PAD; the whole image when it is all padding. Air
    clipped to the window and then smoothed and resampled reads the padding value to within float error
    (-0.49999997), and is padding. An MR's background noise rarely leaves anything outside."""
    if image.ndim != 4:
        raise ValueError(f"expected a (z, y, x, C) network input, got shape {image.shape}")
    box = foreground_box(np.any(image > PAD_VALUE + CONTENT_ABOVE_PAD, axis=-1))
    return box if box is not None else tuple(slice(0, n) for n in image.shape[:3])


def spec_tiling(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`predict_array`'s tiling from a model spec: the largest output tile (z, y, x; the spec's ``tile_out`` is
    x, y, z), the blending Gaussian's ``blend_sigma_scale`` (nnU-Net's 0.125 if absent), the tiling's placements
    ``tile_shifts_vox`` (one, unshifted, if absent) and ``edge_margin_vox`` (0 if absent)."""
    return {"max_out_tile": tuple(spec.get("tile_out", DEFAULT_TILE_OUT))[::-1], "sigma_scale": float(spec.get("blend_sigma_scale", NNUNET_SIGMA_SCALE)),
            "shifts": tuple(int(s) for s in spec.get("tile_shifts_vox", (0,))), "edge_margin": int(spec.get("edge_margin_vox", 0))}


def foreground(probs: np.ndarray) -> np.ndarray:
    """Foreground probability (z, y, x): the sigmoid channel, or 1 - p(background) for softmax output."""
    return probs[..., 0] if probs.shape[-1] == 1 else 1.0 - probs[..., 0]


def probability_on(
    model: nnx.Module,
    spec: dict[str, Any],
    prepared: Volume,
    grid: Volume,
    *,
    tta: bool = False,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    programs: ProgramCache | None = None,
) -> Volume:
    """Foreground probability (z, y, x) float32 of a prepared network input, resampled onto `grid` (0 outside it).

    `tta`: average over the mirrors the model was trained with (:func:`tta_flips`); a ValueError if it has none.
    `batch_size` tiles go through the network at once; by default the spec's ``tile_batch`` (1 if absent).
    Overlapping tiles are blended by a Gaussian of the spec's ``blend_sigma_scale`` (nnU-Net's 0.125 if absent).
    ``programs``: the compiled forward pass's cache (:func:`predict_array`).
    """
    if tta and not tta_flips(spec):
        raise ValueError("test-time augmentation needs a model trained with flips (its spec's flip_axes); this one has none")
    probs = predict_array(
        model, prepared.array, **spec_tiling(spec), flips=tta_flips(spec) if tta else (),
        batch_size=int(spec.get("tile_batch", 1)) if batch_size is None else batch_size, on_batch=on_batch,
        programs=programs,
    )
    return resample_to(prepared.with_array(foreground(probs).astype(np.float32)), grid, order=1, default_value=0.0,
                       programs=programs)


def predict_probability(
    model: nnx.Module, spec: dict[str, Any], vol: Volume, *, modality: str, on_noise: Callable[[NoiseMatch], None] | None = None,
    programs: ProgramCache | None = None, **predict_kwargs: Any,
) -> Volume:
    """Foreground probability (z, y, x) float32 on the input grid of `vol` (see module docstring); a CT noisier
    than the spec's ``ct_noise_index_hu``, or an MR noisier than its ``mr_noise_index``, is denoised first
    (:mod:`sirtjax.segmentation.noise`), and `on_noise` receives what was found and done.

    ``programs``: the compiled programs' cache (the resamplings and the forward pass); `predict_kwargs` (tta,
    batch_size, on_batch) go to :func:`probability_on`.
    """
    prepared = prepare_image(vol, modality, spec.get("spacing_mm", (3.0, 3.0, 3.0)), ct_noise_index_hu=spec.get("ct_noise_index_hu"),
                             mr_noise_index=spec.get("mr_noise_index"), on_noise=on_noise, programs=programs)
    return probability_on(model, spec, prepared, vol, programs=programs, **predict_kwargs)


def segment_liver(model: nnx.Module, spec: dict[str, Any], vol: Volume, *, threshold: float = 0.5, **predict_kwargs: Any) -> Volume:
    """Liver mask (uint8 0/1, z, y, x) on the grid of `vol`: threshold, largest component, holes filled.

    `predict_kwargs` (modality, on_noise, tta, batch_size, on_batch, programs) go to :func:`predict_probability`.
    """
    prob = predict_probability(model, spec, vol, **predict_kwargs)
    return prob.with_array(liver_mask(np.asarray(prob.array), threshold=threshold))

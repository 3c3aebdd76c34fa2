"""Freeze a network's instance normalisation at mean training statistics, folded into its convolutions.

Instance normalisation normalises every tile by the tile's own statistics, so what a network predicts for a voxel
depends on the tile around it, and a whole image cannot be segmented in one pass. Replacing each norm's per-tile
mean and variance by their means over training tiles (what batch normalisation does at inference) turns the norm
into a fixed per-channel affine map, which folds into the convolution before it:

    kernel * s  and  (bias - mean) * s + norm bias,  with  s = norm scale / sqrt(variance + epsilon).

The frozen network equals the normalised one on a tile whose statistics are those means, and approximates it on
others; it is fine-tuned afterwards (the training loop folds when ``init_from`` names an instance-normalised model
and the config's model has no norm).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import numpy as np
from flax import nnx


class _Recorder(nnx.Module):
    """A norm that also records the per-tile, per-channel mean and variance of its input (eager calls only)."""

    def __init__(self, norm: nnx.GroupNorm, sink: list[tuple[np.ndarray, np.ndarray]]):
        self.norm = norm
        self.sink = sink

    def __call__(self, x: jax.Array) -> jax.Array:
        axes = tuple(range(1, x.ndim - 1))
        self.sink.append((np.asarray(x.mean(axis=axes)), np.asarray(x.var(axis=axes))))
        return self.norm(x)


def instance_norm_statistics(model: nnx.Module, batches: Iterable[jax.Array]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """(mean, variance, epsilon) of every instance norm's input, per channel, averaged over the tiles of `batches`
    (each (B, z, y, x, C)), keyed by the norm's parameter prefix (e.g. ``down/0/norms/1``)."""
    probe = nnx.clone(model)
    sinks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    epsilons: dict[str, float] = {}
    for path, module in list(nnx.iter_graph(probe)):
        if isinstance(module, nnx.List) and module and all(isinstance(m, nnx.GroupNorm) for m in module):
            prefix = "/".join(str(p) for p in path)
            for i, norm in enumerate(module):
                key = f"{prefix}/{i}"
                sinks[key], epsilons[key] = [], float(norm.epsilon)
                module[i] = _Recorder(norm, sinks[key])
    if not sinks:
        raise ValueError("the model has no instance norms to freeze")
    for batch in batches:
        probe(batch)
    out = {}
    for key, sink in sinks.items():
        if not sink:
            raise ValueError("no batches: instance-norm statistics need at least one tile")
        out[key] = (np.concatenate([m for m, _ in sink]).mean(0), np.concatenate([v for _, v in sink]).mean(0), epsilons[key])
    return out


def fold_instance_norm(params: dict[str, np.ndarray], statistics: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> dict[str, np.ndarray]:
    """The parameters (keyed like :func:`sirtjax.models.store.param_arrays`) of the same network without norms, each
    norm frozen at `statistics` (:func:`instance_norm_statistics`) and folded into the convolution before it."""
    out = {k: np.asarray(v) for k, v in params.items() if "/norms/" not in k}
    for norm_key, (mean, var, eps) in statistics.items():
        conv = norm_key.replace("/norms/", "/convs/")
        s = params[f"{norm_key}/scale"] / np.sqrt(var + eps)
        out[f"{conv}/kernel"] = (params[f"{conv}/kernel"] * s).astype(np.float32)
        out[f"{conv}/bias"] = ((params[f"{conv}/bias"] - mean) * s + params[f"{norm_key}/bias"]).astype(np.float32)
    return out

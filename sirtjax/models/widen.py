"""Warm-start a wider thesis liver U-Net from a narrower one, computing the same function at the start.

Every old channel keeps its place in its block (the first channels of each level; in a decoder's
concatenated input, the first channels of the up-sampled part and of the skip part). The old
weights are copied into the wider kernels, and the weights from every new channel into an old one
are zero, so the old channels compute exactly what they did and the output is unchanged. The new
channels keep the fresh initialisation of the wider model (random kernels, unit norm scale), which
breaks their symmetry; their outgoing weights start at zero and learn from the first step. This is
the zero-outgoing-weight variant of Net2WiderNet (Chen et al., ICLR 2016), chosen because instance
normalisation makes Net2Net's replicate-and-divide rule change the normalised outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _channel_maps(old: Sequence[int], new: Sequence[int], in_features: int, out_features: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(old input channels' new indices, old output channels' new indices) of every convolution, by parameter prefix."""
    n = len(old)
    maps = {"head": (np.arange(old[0]), np.arange(out_features))}
    for i in range(n):
        inp = np.arange(in_features) if i == 0 else np.arange(old[i - 1])
        maps[f"down/{i}/convs/0"] = (inp, np.arange(old[i]))
        maps[f"down/{i}/convs/1"] = (np.arange(old[i]), np.arange(old[i]))
    for j, i in enumerate(reversed(range(n - 1))):  # decoder j works at level i: input = [up-sampled level i+1, skip of level i]
        concat = np.concatenate([np.arange(old[i + 1]), new[i + 1] + np.arange(old[i])])
        maps[f"up/{j}/convs/0"] = (concat, np.arange(old[i]))
        maps[f"up/{j}/convs/1"] = (np.arange(old[i]), np.arange(old[i]))
    return maps


def widen_unet_params(
    old: dict[str, np.ndarray], fresh: dict[str, np.ndarray], old_features: Sequence[int], new_features: Sequence[int]
) -> dict[str, np.ndarray]:
    """Parameters of a wider thesis liver U-Net (`fresh`: its initialisation) that compute what `old` computes.

    Both are keyed like :func:`sirtjax.models.store.param_arrays`. Raises ValueError unless the
    widths have the same number of levels and every new width is at least the old one.
    """
    old_features, new_features = tuple(int(f) for f in old_features), tuple(int(f) for f in new_features)
    if len(old_features) != len(new_features) or any(n < o for o, n in zip(old_features, new_features)):
        raise ValueError(f"cannot widen features {list(old_features)} to {list(new_features)}: same levels, none narrower")
    if set(old) != set(fresh):
        raise ValueError("the two models do not have the same parameters; not the same architecture?")
    maps = _channel_maps(old_features, new_features, old["down/0/convs/0/kernel"].shape[-2], old["head/kernel"].shape[-1])
    out: dict[str, np.ndarray] = {}
    for key, value in fresh.items():
        prefix, name = key.rsplit("/", 1)
        conv = prefix.replace("/norms/", "/convs/")  # a norm follows its convolution: same output channels
        rows, cols = maps[conv]
        wide = np.array(value, np.float32, copy=True)
        if name == "kernel":
            wide[..., cols] = 0.0  # old outputs read no new input
            wide[..., rows[:, None], cols[None, :]] = old[key]
        else:  # bias, scale
            wide[cols] = old[key]
        out[key] = wide
    return out

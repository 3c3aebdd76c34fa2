"""Training data: cases from Decathlon folders or phantom studies, stacked for on-device patch sampling.

A case is a prepared image (windowed, on the model's canonical grid, see
`sirtjax.segmentation.prepare_image`) and its 0/1 label on the same grid. Cases are padded to a
common shape and stacked so a jit-compiled sampler can draw a batch of augmented patches from a
single key: the patch centre is a random foreground voxel with probability `foreground_prob`,
otherwise a uniform voxel of the case.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.errors import InputError
from sirtjax.io import read_volume
from sirtjax.preprocess import PAD_VALUE
from sirtjax.segmentation.preprocess import lesion_input, prepare_image, prepare_label
from sirtjax.segmentation.visibility import visible_label
from sirtjax.train.augment import AugmentConfig, augment_intensity, patch_centre, patch_coordinates, sample_patch
from sirtjax.volume import Volume



@dataclasses.dataclass(frozen=True)
class Case:
    """One training or validation example: prepared image (z, y, x) float32 and 0/1 label (uint8)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing_mm: tuple[float, float, float]  # (x, y, z)
    weight: float = 1.0  # relative probability of drawing this case for a training patch


def make_case(
    name: str, image: Volume, label: Volume, modality: str, spacing_mm: Sequence[float], label_values: Sequence[int] | None, liver: Volume | None = None,
    min_cnr: float = 0.0, ct_noise_index_hu: float | None = None,
) -> Case:
    """Prepare one image/label pair: canonical grid, windowing; label = voxels with any of label_values
    (None: any non-zero). With `liver`, the image is the lesion model's input (:func:`lesion_input`), and
    with min_cnr > 0 as well, `label` holds lesion instance ids of which only those the prepared image
    shows are kept (`sirtjax.segmentation.visibility`). Without `liver`, a CT noisier than
    `ct_noise_index_hu` is noise-matched as inference does (:func:`prepare_image`); the lesion input is never matched.
    """
    if liver is not None and ct_noise_index_hu is not None:
        raise ValueError("noise matching is for the liver model's input, not the lesion model's")
    if liver is None:
        prepared = prepare_image(image, modality, spacing_mm, ct_noise_index_hu=ct_noise_index_hu)
    else:
        prepared = lesion_input(image, modality, spacing_mm, liver)
    lab = np.asarray(prepare_label(label, prepared).array)
    if liver is not None and min_cnr > 0:
        ids = lab.astype(np.int32)
        background = (np.asarray(prepare_label(liver, prepared).array) > 0) & (ids == 0)
        lab = np.asarray(visible_label(np.asarray(prepared.array), ids, background, int(ids.max()) + 1, min_cnr))
    lab = (lab != 0 if label_values is None else np.isin(lab, list(label_values))).astype(np.uint8)
    return Case(name, np.asarray(prepared.array, np.float32), lab, tuple(float(s) for s in spacing_mm))


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed .npz so that a killed writer leaves the old file or none, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def msd_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, label) NIfTI paths of a Medical Segmentation Decathlon task folder (imagesTr/labelsTr)."""
    root = Path(root)
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(root, "expected imagesTr/ and labelsTr/ folders (Medical Segmentation Decathlon layout)")
    pairs = []
    for img in sorted(images.glob("*.nii*")):
        if img.name.startswith("."):
            continue  # macOS resource forks shipped in some Decathlon archives
        lab = labels / img.name.replace("_0000", "")
        if not lab.is_file():
            raise InputError(img, f"no label {lab.name} in {labels}")
        pairs.append((img, lab))
    if not pairs:
        raise InputError(images, "no .nii/.nii.gz images")
    return pairs


def msd_cases(root: str | Path, *, modality: str, spacing_mm: Sequence[float], label_values: Sequence[int]) -> list[Case]:
    """All cases of a Decathlon folder, prepared (see :func:`make_case`)."""
    return [
        make_case(img.name.split(".")[0], read_volume(img), read_volume(lab), modality, spacing_mm, label_values)
        for img, lab in msd_pairs(root)
    ]


def phantom_cases(
    seeds: Sequence[int],
    images: dict[str, str],
    *,
    spacing_mm: Sequence[float],
    target: str = "liver",
    cache_dir: str | Path | None = None,
    phantom_options: dict | None = None,
    image_weights: dict[str, float] | None = None,
    lesion_min_cnr: float = 0.0,
    ct_noise_index_hu: float | None = None,
    tag: str = "",
) -> list[Case]:
    """Cases from phantom studies: for each seed and image name (-> modality), the image and its mask.

    target 'liver': the liver mask. target 'lesions': all lesions as one 0/1 mask, the image kept
    only near the true liver (the lesion model's input); with lesion_min_cnr > 0, only the lesions that
    the rendering shows (:func:`make_case`).

    `image_weights` maps image names to sampling weights (default 1), e.g. to draw the MR, one image
    in four per study, as often as the CTs together. With `cache_dir`, prepared cases are stored as
    .npz there and reused (phantoms are deterministic); `tag` ends the case names (and cache files), to tell
    apart studies rendered with other `phantom_options` in one cache. With `ct_noise_index_hu` (see
    :func:`make_case`), the names end in ``_match{index}hu_tv`` (the denoising method: caches of the earlier bilateral filter are not reused).
    """
    weights = {name: float((image_weights or {}).get(name, 1.0)) for name in images}
    from sirtjax.phantom import PhantomConfig, generate_study

    cases = []
    for seed in seeds:
        suffix = ("" if target == "liver" else f"_{target}") + (f"_cnr{lesion_min_cnr:g}" if target == "lesions" and lesion_min_cnr > 0 else "") + tag
        suffix += "" if ct_noise_index_hu is None else f"_match{ct_noise_index_hu:g}hu_tv"
        names = [f"seed{seed}_{name}{suffix}" for name in images]
        paths = [Path(cache_dir) / f"{n}.npz" for n in names] if cache_dir else []
        if paths and all(p.is_file() for p in paths):
            for name, n, p in zip(images, names, paths):
                with np.load(p) as d:
                    cases.append(Case(n, d["image"], d["label"], tuple(float(s) for s in spacing_mm), weights[name]))
            continue
        study = generate_study(int(seed), PhantomConfig(**(phantom_options or {})))
        for i, (name, modality) in enumerate(images.items()):
            liver = None if target == "liver" else study.images[f"{name}_liver"]  # a lesion case's input region
            case = make_case(names[i], study.images[name], study.images[f"{name}_{target}"], modality, spacing_mm,
                             (1,) if liver is None else None, liver, lesion_min_cnr, ct_noise_index_hu)
            case = dataclasses.replace(case, weight=weights[name])
            if paths:
                save_npz_atomic(paths[i], image=case.image, label=case.label)
            cases.append(case)
    return cases


def noisy_ct_cases(
    seeds: Sequence[int], images: dict[str, str], ct_noise_hu: tuple[float, float], *, spacing_mm: Sequence[float],
    ct_noise_index_hu: float, weight: float = 1.0, cache_dir: str | Path | None = None, phantom_options: dict | None = None,
) -> list[Case]:
    """Liver cases of the studies of `seeds` rendered with CT noise from ct_noise_hu[0] to ct_noise_hu[1] HU, evenly
    spread over the seeds in their order, and prepared as inference prepares them: noise-matched to the model's
    `ct_noise_index_hu` (:func:`make_case`), so that the network learns the smoothed images it will be given."""
    levels = np.linspace(float(ct_noise_hu[0]), float(ct_noise_hu[1]), len(seeds))  # one seed: the low end
    cases = []
    for seed, hu in zip(seeds, levels):
        cases += phantom_cases(
            [seed], images, spacing_mm=spacing_mm, cache_dir=cache_dir, phantom_options={**(phantom_options or {}), "ct_noise_hu": float(hu)},
            image_weights={name: weight for name in images}, ct_noise_index_hu=ct_noise_index_hu, tag=f"_noise{hu:g}hu",
        )
    return cases


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedCases:
    """Cases padded to one shape: images (N, Z, Y, X) float32, labels uint8, shapes (N, 3),
    foreground samples (N, K, 3) int32 voxel indices (the case centre when a label is empty),
    log_weights (N,) float32 log sampling weights."""

    images: jax.Array
    labels: jax.Array
    shapes: jax.Array
    foreground: jax.Array
    log_weights: jax.Array


def stack_cases(cases: Sequence[Case], *, n_foreground: int = 4096, seed: int = 0) -> StackedCases:
    """Stack prepared cases for :func:`sample_batch` (host numpy -> device arrays)."""
    if not cases:
        raise ValueError("no training cases")
    big = np.max([c.image.shape for c in cases], axis=0)
    rng = np.random.default_rng(seed)
    images = np.full((len(cases), *big), PAD_VALUE, np.float32)
    labels = np.zeros((len(cases), *big), np.uint8)
    fg = np.zeros((len(cases), n_foreground, 3), np.int32)
    for i, c in enumerate(cases):
        z, y, x = c.image.shape
        images[i, :z, :y, :x] = c.image
        labels[i, :z, :y, :x] = c.label
        idx = np.argwhere(c.label > 0)
        fg[i] = idx[rng.integers(0, len(idx), n_foreground)] if len(idx) else np.array(c.image.shape) // 2
    shapes = np.array([c.image.shape for c in cases], np.int32)
    weights = np.array([c.weight for c in cases], np.float64)
    if np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError("case sampling weights must be >= 0 with at least one > 0")
    log_w = np.log(np.maximum(weights, 1e-30)).astype(np.float32)
    return StackedCases(jnp.asarray(images), jnp.asarray(labels), jnp.asarray(shapes), jnp.asarray(fg), jnp.asarray(log_w))


@partial(jax.jit, static_argnames=("batch_size", "in_patch", "out_patch", "spacing_zyx_mm", "aug", "foreground_prob"))
def sample_batch(
    key: jax.Array,
    data: StackedCases,
    *,
    batch_size: int,
    in_patch: tuple[int, int, int],
    out_patch: tuple[int, int, int],
    spacing_zyx_mm: tuple[float, float, float],
    aug: AugmentConfig,
    foreground_prob: float,
) -> tuple[jax.Array, jax.Array]:
    """Augmented patches: inputs (B, *in_patch, 1) float32 and labels (B, *out_patch, 1) float32.

    The label patch is the centre `out_patch` of the input patch (the network's valid output).
    """
    margin = [(i - o) // 2 for i, o in zip(in_patch, out_patch)]

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_case, k_fg, k_which, k_uni, k_geo, k_int = jax.random.split(k, 6)
        case = jax.random.categorical(k_case, data.log_weights)
        shape = data.shapes[case].astype(jnp.float32)
        centre = patch_centre(k_fg, k_which, k_uni, data.foreground[case], shape, foreground_prob)
        coords = patch_coordinates(k_geo, centre, in_patch, spacing_zyx_mm, aug)
        # outside a case's own shape (the stacking pad) also reads as air / background
        image = sample_patch(data.images[case], coords, order=1, cval=PAD_VALUE)
        inside = jnp.all((coords > -0.5) & (coords < shape[:, None, None, None] - 0.5), axis=0)
        image = jnp.where(inside, augment_intensity(k_int, image, aug), PAD_VALUE)
        out_coords = coords[:, margin[0] : margin[0] + out_patch[0], margin[1] : margin[1] + out_patch[1], margin[2] : margin[2] + out_patch[2]]
        label = sample_patch(data.labels[case].astype(jnp.float32), out_coords, order=0, cval=0.0)
        return image[..., None], label[..., None]

    return jax.vmap(one)(jax.random.split(key, batch_size))


def batch_sampler(
    data: StackedCases, *, batch_size: int, in_patch: Sequence[int], out_patch: Sequence[int], spacing_mm: Sequence[float], aug: AugmentConfig, foreground_prob: float
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """A function key -> (inputs, labels) drawing one augmented batch (see :func:`sample_batch`)."""
    kwargs = dict(
        batch_size=int(batch_size),
        in_patch=tuple(int(n) for n in in_patch),
        out_patch=tuple(int(n) for n in out_patch),
        spacing_zyx_mm=tuple(float(s) for s in spacing_mm)[::-1],
        aug=aug,
        foreground_prob=float(foreground_prob),
    )
    return lambda key: sample_batch(key, data, **kwargs)

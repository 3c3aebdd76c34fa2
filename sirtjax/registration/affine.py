"""The affine stage: 12 parameters in world millimetres about a centre.

Parameters are ``{"translation_mm": (3,), "linear_mm": (3, 3)}``; the transform is
``T(p) = (I + linear_mm / radius_mm) (p - c) + c + translation_mm`` with ``c`` the centre and
``radius_mm`` the RMS distance of the fixed region from it. Scaling the linear part by the radius
makes every parameter a displacement in mm at a typical distance from the centre, so one Adam
learning rate (mm per step) suits all twelve (ITK needs parameter scales for the same reason).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sirtjax.registration.optimise import adam_cosine, make_step
from sirtjax.registration.problem import LevelData, SimilarityOptions, similarity_terms
from sirtjax.registration.warp import AffineTransform, affine_apply


def init_params(translation_mm: jax.Array) -> dict[str, jax.Array]:
    """Affine parameters for a pure translation (3,) mm."""
    return {"translation_mm": jnp.asarray(translation_mm, jnp.float32), "linear_mm": jnp.zeros((3, 3), jnp.float32)}


def params_to_affine(params: dict[str, jax.Array], centre_mm: jax.Array, radius_mm: jax.Array) -> AffineTransform:
    """The AffineTransform of parameters about centre_mm (3,) with the given radius (mm)."""
    matrix = jnp.eye(3, dtype=jnp.float32) + params["linear_mm"] / radius_mm
    return AffineTransform(matrix, params["translation_mm"], centre_mm)


def affine_objective(opts: SimilarityOptions, on: str):
    """Objective(params, data, weights, key) of the affine stage: the image term, or the segmentation overlap SSD.

    ``on`` is 'images' (MI or SSD on the intensities) or 'segmentation' (overlap SSD of masks or
    one-hot label maps: the thesis' CNN-based affine). ``weights`` is unused (kept for one step
    signature across stages).
    """
    if on not in ("images", "segmentation"):
        raise ValueError(f"affine stage runs on 'images' or 'segmentation', got '{on}'")
    image = on == "images"

    def objective(params, data: LevelData, weights, key):
        del weights
        aff = params_to_affine(params, data.affine.centre_mm, data.radius_mm)
        terms = similarity_terms(data, key, lambda idx, p: affine_apply(aff, p), opts, image=image, seg=not image)
        return terms["image" if image else "seg"], terms

    return objective


@functools.lru_cache(maxsize=64)
def _affine_step_program(opts: SimilarityOptions, on: str):
    return make_step(affine_objective(opts, on), f"affine {opts} {on}")


def affine_step(opts: SimilarityOptions, on: str, learning_rate_mm: float, iterations: int):
    """(jit-compiled batched step, optimizer) of the affine stage; the step is built once per static
    setting and shared by every learning rate and iteration count (they live in the optimiser state)."""
    return _affine_step_program(opts, on), adam_cosine(learning_rate_mm, iterations)

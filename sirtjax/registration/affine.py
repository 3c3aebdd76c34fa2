"""The affine stage: 12 parameters in world millimetres about a centre.

Parameters are ``{"translation_mm": (3,), "linear_mm": (3, 3)}``; the transform is
``T(p) = (I + linear_mm / radius_mm) (p - c) + c + translation_mm`` with ``c`` the centre and
``radius_mm`` the RMS distance of the fixed region from it. Scaling the linear part by the radius
makes every parameter a displacement in mm at a typical distance from the centre, so one Adam
learning rate (mm per step) suits all twelve (ITK needs parameter scales for the same reason).

The images are of one patient, so a whole-image affine stays near a rotation: an optional barrier on the Green-Lagrange
strain ``E = (M^T M - I) / 2`` of the matrix ``M`` (zero while ``|E|_F <= max_strain``) stops MI from
collapsing the fixed grid into a slab of the moving image. With fields of view that overlap only partly
along z, MI can gain by moving samples out of the moving image or into one homogeneous region (3 mm MR
phantom pairs: a principal stretch of 0.19 and the liver 40 mm off; plausible affines there had
``|E|_F`` <= 0.11). An affine fitted to liver segmentations follows the organ's own deformation and may
strain more; the guided presets leave it free (``RegistrationConfig.affine_max_strain``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration.optimise import make_step
from sirtjax.registration.optimisers import LevelOptimiser, transformation
from sirtjax.registration.problem import LevelData
from sirtjax.registration.terms import SimilarityOptions, similarity_terms
from sirtjax.registration.warp import AffineTransform, affine_apply


def init_params(translation_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Affine parameters (host arrays) for pure translations (..., 3) mm."""
    t = np.asarray(translation_mm, np.float32)
    return {"translation_mm": t, "linear_mm": np.zeros(t.shape[:-1] + (3, 3), np.float32)}


def params_to_affine(params: dict[str, jax.Array], centre_mm: jax.Array, radius_mm: jax.Array) -> AffineTransform:
    """The AffineTransform of parameters about centre_mm (3,) with the given radius (mm)."""
    matrix = jnp.eye(3, dtype=jnp.float32) + params["linear_mm"] / radius_mm
    return AffineTransform(matrix, params["translation_mm"], centre_mm)


# per unit of squared strain past the limit: a barrier next to MI (nats) and the overlap SSD, both of order 1; next to
# SSD of raw intensities (HU^2) it is weak
STRAIN_WEIGHT = 100.0


def strain_excess(matrix: jax.Array, max_strain: float) -> jax.Array:
    """``max(|E|_F^2 - max_strain^2, 0)`` for the Green-Lagrange strain E = (M^T M - I) / 2 of a (3, 3) matrix;
    rotations have none (dimensionless; smooth, and without the square root's kink at E = 0)."""
    e = 0.5 * (jnp.matmul(matrix.T, matrix, precision=jax.lax.Precision.HIGHEST) - jnp.eye(3, dtype=matrix.dtype))
    return jnp.maximum(jnp.sum(e * e) - max_strain**2, 0.0)


def affine_objective(opts: SimilarityOptions, on: str, max_strain: float | None = None):
    """Objective(params, data, weights, key) of the affine stage: the image term, or the segmentation overlap SSD,
    plus the strain barrier (:func:`strain_excess` times ``STRAIN_WEIGHT``; None: no limit).

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
        loss = terms["image" if image else "seg"]
        if max_strain is not None:
            terms["strain"] = strain_excess(aff.matrix, max_strain)
            loss = loss + STRAIN_WEIGHT * terms["strain"]
        return loss, terms

    return objective


@functools.lru_cache(maxsize=64)
def _affine_step_program(opts: SimilarityOptions, on: str, max_strain: float | None, optimiser: str):
    return make_step(affine_objective(opts, on, max_strain), transformation(optimiser, 1.0, 1),
                     f"affine {opts} {on}" + (f" strain {max_strain}" if max_strain is not None else "") + f" {optimiser}")


def affine_step(opts: SimilarityOptions, on: str, learning_rate_mm: float, iterations: int, max_strain: float | None = None,
                optimiser: str = "adam"):
    """(jit-compiled batched step, level optimiser) of the affine stage; the step is built once per static
    setting and shared by every learning rate and iteration count (they live in the optimiser state)."""
    return _affine_step_program(opts, on, max_strain, optimiser), LevelOptimiser(optimiser, learning_rate_mm, iterations)

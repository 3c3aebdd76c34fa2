"""Session postures: where each canonical tissue point lies in a session's world frame.

A posture maps a canonical point q (LPS mm) to the session's world point

    x = A (q + u(q)) + t

with A a rotation of a few degrees times a small scaling, t a translation, and u a smooth
non-rigid displacement (mm): a breathing field that moves the liver and the diaphragm region
along a mostly cranio-caudal vector, damped near the spine (which does not breathe), plus a few
random Gaussian radial-basis bumps for posture changes. Parameters are drawn so that
|grad u| < 0.6 everywhere; the inverse (world -> canonical) is then the fixed point of
q = A^-1 (x - t) - u(q), iterated to convergence.

Maps run in JAX (float32, jit-compiled per fixed-size chunk of points); positions are accurate
to ~1e-4 mm over the patient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.phantom.config import IMAGE_SESSION, PhantomConfig
from sirtjax.phantom.shapes import rotation_matrix
from sirtjax.volume import Volume, index_to_world, make_volume

CHUNK = 1 << 16
MAX_INVERSE_ITERATIONS = 60
INVERSE_TOLERANCE_MM = 1e-3


def sample_posture(rng: np.random.Generator, config: PhantomConfig, anat: dict) -> dict:
    """Draw one session's posture (JSON-serialisable): affine, breathing and posture bumps (mm)."""
    rot = rotation_matrix(rng.uniform(-config.rotation_max_deg, config.rotation_max_deg, 3))
    scale = 1.0 + rng.uniform(-config.scaling_max, config.scaling_max, 3)
    translation = rng.uniform(-1, 1, 3) * np.asarray(config.translation_max_mm)
    lo, hi = config.breathing_mm
    amplitude = rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])
    direction = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.35, -0.1) * np.sign(amplitude), 1.0])
    liver_c = np.asarray(anat["liver"]["right"]["center"])
    k = config.posture_rbf_count
    return {
        "affine": {"matrix": (rot @ np.diag(scale)).tolist(), "translation_mm": translation.tolist()},
        "breathing": {
            "amplitude_mm": (amplitude * direction / np.linalg.norm(direction)).tolist(),
            "center_mm": (liver_c + np.array([30.0, 0.0, 60.0]) + rng.uniform(-15, 15, 3)).tolist(),
            "sigma_mm": [float(rng.uniform(120, 150)), float(rng.uniform(110, 140)), float(rng.uniform(90, 115))],
            "spine_xy_mm": [anat["spine"]["x"], anat["spine"]["y"] + 20.0],
            "spine_sigma_mm": 40.0,
            "spine_damping": 0.8,
        },
        "rbf": {
            "centers": (liver_c + rng.uniform(-120, 120, (k, 3))).tolist(),
            "sigmas": rng.uniform(60, 90, k).tolist(),
            "amplitudes": rng.normal(0, config.posture_rbf_mm, (k, 3)).tolist(),
        },
    }


def _as_jax(posture: dict) -> dict:
    b, r = posture["breathing"], posture["rbf"]
    f = lambda v: jax.device_put(np.asarray(v, np.float32))  # noqa: E731
    return {
        "matrix": f(posture["affine"]["matrix"]),
        "matrix_inv": f(np.linalg.inv(np.asarray(posture["affine"]["matrix"], np.float64))),
        "translation": f(posture["affine"]["translation_mm"]),
        "b_amp": f(b["amplitude_mm"]),
        "b_center": f(b["center_mm"]),
        "b_sigma": f(b["sigma_mm"]),
        "spine_xy": f(b["spine_xy_mm"]),
        "spine_sigma": f(b["spine_sigma_mm"]),
        "spine_damping": f(b["spine_damping"]),
        "centers": f(r["centers"]).reshape(-1, 3),
        "sigmas": f(r["sigmas"]).reshape(-1),
        "amplitudes": f(r["amplitudes"]).reshape(-1, 3),
    }


def _displacement(p: dict, q: jax.Array) -> jax.Array:
    """u(q) in mm for canonical points q (3, N) (components first: XLA fuses this into one loop)."""
    x, y, z = q[0], q[1], q[2]
    c, s = p["b_center"], p["b_sigma"]
    g = jnp.exp(-0.5 * (((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 + ((z - c[2]) / s[2]) ** 2))
    spine = jnp.exp(-0.5 * ((x - p["spine_xy"][0]) ** 2 + (y - p["spine_xy"][1]) ** 2) / p["spine_sigma"] ** 2)
    w = g * (1.0 - p["spine_damping"] * spine)
    u = [w * p["b_amp"][i] for i in range(3)]
    for k in range(p["centers"].shape[0]):
        ck = p["centers"][k]
        wk = jnp.exp(-0.5 * ((x - ck[0]) ** 2 + (y - ck[1]) ** 2 + (z - ck[2]) ** 2) / p["sigmas"][k] ** 2)
        u = [u[i] + wk * p["amplitudes"][k, i] for i in range(3)]
    return jnp.stack(u)


@jax.jit
def _forward_chunk(p: dict, q: jax.Array) -> jax.Array:
    return p["matrix"] @ (q + _displacement(p, q)) + p["translation"][:, None]


@jax.jit
def _inverse_chunk(p: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = p["matrix_inv"] @ (x - p["translation"][:, None])

    def step(state):
        i, q, _ = state
        new = y - _displacement(p, q)
        return i + 1, new, jnp.max(jnp.abs(new - q))

    def more(state):
        i, _, change = state
        return (i < MAX_INVERSE_ITERATIONS) & (change > INVERSE_TOLERANCE_MM / 10)

    _, q, _ = jax.lax.while_loop(more, step, (0, y, jnp.asarray(jnp.inf, y.dtype)))
    residual = jnp.max(jnp.linalg.norm(q + _displacement(p, q) - y, axis=0))
    return q, residual


def _chunked(fn: Callable, posture: dict, points: np.ndarray) -> tuple[np.ndarray, float]:
    pts = np.asarray(points, np.float32).reshape(-1, 3)
    p = _as_jax(posture)
    out = np.empty_like(pts)
    worst = 0.0
    for start in range(0, len(pts), CHUNK):
        chunk = pts[start : start + CHUNK]
        n = len(chunk)
        if n < CHUNK:  # pad so every call has the same shape (one compilation)
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], CHUNK - n, axis=0)])
        res = fn(p, jax.device_put(np.ascontiguousarray(chunk.T)))
        if isinstance(res, tuple):
            res, r = res
            worst = max(worst, float(r))
        out[start : start + n] = np.asarray(res).T[:n]
    return out.reshape(np.shape(points)), worst


def to_world(posture: dict, canonical_mm: np.ndarray) -> np.ndarray:
    """Session world points (..., 3) LPS mm of canonical points (..., 3) (float32)."""
    return _chunked(_forward_chunk, posture, canonical_mm)[0]


def to_canonical(posture: dict, world_mm: np.ndarray) -> np.ndarray:
    """Canonical points (..., 3) of session world points (..., 3) (float32), by fixed-point iteration.

    Raises RuntimeError when the iteration has not converged to INVERSE_TOLERANCE_MM (a posture
    outside the drawn parameter ranges).
    """
    q, residual = _chunked(_inverse_chunk, posture, world_mm)
    if residual > INVERSE_TOLERANCE_MM:
        raise RuntimeError(f"posture inverse did not converge (residual {residual:.2e} mm)")
    return q


def true_mapping(truth: dict, fixed: str = "maa_ct", moving: str = "diag_ct") -> Callable[[np.ndarray], np.ndarray]:
    """Ground-truth registration: a function world mm (N, 3) in the fixed image's session -> the
    corresponding world mm (N, 3) in the moving image's session (numpy float64).

    fixed and moving are image names (``maa_ct``, ``diag_mr``, ...) or session names (``maa``,
    ``diag_ct``, ``diag_mr``, ``y90``). Points anywhere in space are mapped (the postures are
    defined everywhere); a registration's displacement at a fixed point p is mapping(p) - p.
    """
    postures = truth["postures"]

    def session(name: str) -> str:
        s = IMAGE_SESSION.get(name, name)
        if s not in postures:
            raise KeyError(f"unknown image or session '{name}'")
        return s

    pf, pm = postures[session(fixed)], postures[session(moving)]

    def mapping(points_mm: np.ndarray) -> np.ndarray:
        pts = np.asarray(points_mm, np.float64)
        return to_world(pm, to_canonical(pf, pts)).astype(np.float64)

    return mapping


def true_displacement(truth: dict, fixed_grid: Volume, fixed: str = "maa_ct", moving: str = "diag_ct") -> Volume:
    """Ground-truth displacement field on the voxel centres of fixed_grid (any Volume on the fixed
    image's grid): a Volume with array (z, y, x, 3) float32, components in mm along world x, y, z,
    such that fixed point p maps to moving point p + u(p) (ITK's DisplacementFieldTransform)."""
    nz, ny, nx = fixed_grid.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k, np.ones_like(i)], axis=-1).reshape(-1, 4).astype(np.float64)
    points = (idx @ index_to_world(fixed_grid).T)[:, :3]
    u = true_mapping(truth, fixed, moving)(points) - points
    return make_volume(u.reshape(nz, ny, nx, 3).astype(np.float32), fixed_grid.spacing_mm, fixed_grid.origin_mm, fixed_grid.direction)

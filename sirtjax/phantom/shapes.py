"""Implicit shapes: functions of world points returning approximate signed distances in mm.

A point is a tuple ``(x, y, z)`` of broadcastable float32 numpy arrays (LPS mm). Every shape
returns an array of the broadcast shape, negative inside, positive outside, with a gradient of
magnitude close to 1 near the surface (exact for spheres and capsules, Quilez's bound for
ellipsoids), so a linear interpolation of the values places the surface to sub-voxel accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[np.ndarray, np.ndarray, np.ndarray]


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """3x3 rotation Rz @ Ry @ Rx for angles (about x, y, z) in degrees."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def local(p: Point, center: Sequence[float], rotation_deg: Sequence[float] | None = None) -> Point:
    """Coordinates of p in a frame centred at center and rotated by rotation_deg (see rotation_matrix)."""
    d = [p[i] - np.float32(center[i]) for i in range(3)]
    if rotation_deg is None or not np.any(rotation_deg):
        return d[0], d[1], d[2]
    r = rotation_matrix(rotation_deg).astype(np.float32)  # columns: the local axes in world
    return tuple(r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2] for i in range(3))


def ellipsoid(p: Point, center: Sequence[float], radii: Sequence[float], rotation_deg=None) -> np.ndarray:
    """Ellipsoid with semi-axes radii (mm) along its rotated local axes."""
    q = local(p, center, rotation_deg)
    r = [np.float32(v) for v in radii]
    k0 = np.sqrt((q[0] / r[0]) ** 2 + (q[1] / r[1]) ** 2 + (q[2] / r[2]) ** 2)
    k1 = np.sqrt((q[0] / r[0] ** 2) ** 2 + (q[1] / r[1] ** 2) ** 2 + (q[2] / r[2] ** 2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))


def capsule(p: Point, a: Sequence[float], b: Sequence[float], radius_a: float, radius_b: float | None = None) -> np.ndarray:
    """Tube along the segment a-b (mm) with radius tapering linearly from radius_a to radius_b."""
    ab = np.asarray(b, np.float32) - np.asarray(a, np.float32)
    d = [p[i] - np.float32(a[i]) for i in range(3)]
    h = np.clip((d[0] * ab[0] + d[1] * ab[1] + d[2] * ab[2]) / np.float32(ab @ ab), 0.0, 1.0)
    dist = np.sqrt((d[0] - h * ab[0]) ** 2 + (d[1] - h * ab[1]) ** 2 + (d[2] - h * ab[2]) ** 2)
    rb = radius_a if radius_b is None else radius_b
    return dist - (np.float32(radius_a) + h * np.float32(rb - radius_a))


def superellipse_xy(p: Point, center_xy: Sequence[float], half_widths: Sequence[float], exponent: float) -> np.ndarray:
    """Infinite cylinder along z with a superelliptic cross-section |x/a|^n + |y/b|^n = 1.

    The distance is the first-order estimate (r - 1) / |grad r| of the superelliptic radius r.
    """
    a, b = (np.float32(v) for v in half_widths)
    n = np.float32(exponent)
    u = np.abs(p[0] - np.float32(center_xy[0])) / a + np.float32(1e-6)
    v = np.abs(p[1] - np.float32(center_xy[1])) / b + np.float32(1e-6)
    r = (u**n + v**n) ** (1.0 / n)
    grad = np.sqrt((u ** (n - 1) / a) ** 2 + (v ** (n - 1) / b) ** 2)
    return (r - 1.0) * r ** (n - 1) / grad


def smooth_union(a: np.ndarray, b: np.ndarray, k_mm: float) -> np.ndarray:
    """Polynomial smooth minimum of two distances, blending over k_mm."""
    h = np.maximum(np.float32(k_mm) - np.abs(a - b), 0.0) / np.float32(k_mm)
    return np.minimum(a, b) - h * h * np.float32(k_mm / 4.0)


def rbf_displacement(p: Point, centers: np.ndarray, sigmas: np.ndarray, amplitudes: np.ndarray) -> Point:
    """Smooth displacement (mm): sum over k of amplitudes[k] * exp(-|p - centers[k]|^2 / (2 sigmas[k]^2))."""
    out = [np.zeros(np.broadcast_shapes(*(c.shape for c in p)), np.float32) for _ in range(3)]
    for c, s, a in zip(np.asarray(centers), np.asarray(sigmas), np.asarray(amplitudes)):
        r2 = sum((p[i] - np.float32(c[i])) ** 2 for i in range(3))
        w = np.exp(-r2 / np.float32(2.0 * s * s))
        for i in range(3):
            out[i] += np.float32(a[i]) * w
    return out[0], out[1], out[2]

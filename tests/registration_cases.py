"""Synthetic registration cases shared by the registration tests: an anatomy of blobs and a known affine pair."""

from __future__ import annotations

import numpy as np

from sirtjax.volume import make_volume, world_grid


def rotation(deg_x, deg_z):
    """Rotation matrix: deg_x about x, then deg_z about z."""
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def anatomy(points):
    """Two-organ blob image and the 'liver' mask at world points (..., 3) mm."""
    body = np.linalg.norm(points / np.array([34.0, 26.0, 30.0]), axis=-1) < 1
    liver = np.linalg.norm((points - np.array([10.0, 0.0, 4.0])) / np.array([16.0, 12.0, 13.0]), axis=-1) < 1
    spot = np.linalg.norm(points - np.array([-12.0, 6.0, -8.0]), axis=-1) < 6
    return (40.0 * body + 60.0 * liver + 80.0 * spot).astype(np.float32), liver


def affine_case_volumes():
    """Fixed on an anisotropic grid; moving on an oblique grid, content mapped by a known affine."""
    rng = np.random.default_rng(0)
    fixed = make_volume(np.zeros((18, 20, 22), np.float32), (3.5, 3.0, 4.0), (-38.0, -30.0, -36.0))
    img, liver = anatomy(np.asarray(world_grid(fixed)))
    fixed = fixed.with_array(img + rng.normal(0, 2, img.shape).astype(np.float32))
    fmask = fixed.with_array(liver.astype(np.uint8))
    a_true = rotation(4, -6) @ np.diag([1.03, 0.98, 1.0])
    t_true = np.array([5.0, -4.0, 6.0])
    moving = make_volume(np.zeros((20, 22, 20), np.float32), (3.8, 3.3, 3.6), (-38.0, -36.0, -30.0), rotation(-8, 12))
    q = np.asarray(world_grid(moving))
    p = (q - t_true) @ np.linalg.inv(a_true).T  # moving point q shows the anatomy at fixed point p
    mimg, mliver = anatomy(p)
    moving = moving.with_array(250.0 - mimg + rng.normal(0, 2, mimg.shape).astype(np.float32))  # other contrast
    return fixed, moving, fmask, moving.with_array(mliver.astype(np.uint8)), a_true, t_true

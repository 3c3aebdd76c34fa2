"""A 90Y soft-tissue point kernel recovered from the voxel S-value tables, and S values for any box.

A voxel S value is a point kernel averaged over the source and the target voxel. For box voxels
with edges ``s = (s_x, s_y, s_z)`` mm (volume V) and a target voxel centred at offset ``c`` mm,

    S(c) = 1/V^2 * integral_0^R q(r) G_c(r) dr,
    G_c(r) = mean over directions w of T_s(r w - c),   T_s(v) = prod_a max(0, s_a - |v_a|),

where ``T_s`` is the overlap volume of two boxes shifted by v and ``q(r)`` is the dose-per-decay
point kernel integrated over the sphere of radius r, in mGy/(MBq*s) * mm^2 (``q = (E/rho) * f`` with
f the fraction of the decay energy deposited per mm of radius). Because the shifted overlaps sum to
V over the lattice, ``sum_c S(c) * V = integral q dr = E / rho``: energy closure holds for any box.

``q`` is fitted once to all 13 soft-tissue tables (Lanconelli et al. 2012; non-negative least
squares on relative errors, piecewise linear on ``NODES_MM``, a second-difference penalty, q = 0 at
12 mm, the range of 90Y betas) and shipped as ``data/vsv/y90_soft_point_kernel.csv``; rerun
``python scripts/refit_point_kernel.py`` to regenerate it. One kernel reproduces every table
within 0.4 % on all entries above 0.1 % of the self-dose, and a table left out of the fit is
predicted as well (tests). It drops the bremsstrahlung tail beyond 12 mm (< 0.2 % of the energy).
Outside the tabulated voxel sizes (2.21-9.28 mm) the box averages extrapolate the fit.

Everything here is host-side float64 numpy: it builds small kernels once per voxel size.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np

R_MAX_MM = 12.0
NODES_MM = np.concatenate([np.arange(0.0, 3.0, 0.1), np.arange(3.0, R_MAX_MM + 1e-9, 0.25)])
N_DIRECTIONS = 3000  # Fibonacci sphere; 3000 vs 30000 directions changes S by about 1e-3 relative
_GAUSS_POINTS = 3
_CHUNK_R = 6
_FIT_PENALTY = 1e-3
_FIT_WEIGHT_FLOOR = 1e-3
POINT_KERNEL_FILE = "y90_soft_point_kernel.csv"


def _directions(m: int) -> np.ndarray:
    """m nearly uniform unit vectors (Fibonacci sphere), shape (m, 3).

    Every coordinate takes m distinct values, which keeps the quadrature of the box-overlap tents
    accurate; sets made symmetric by reflecting one wedge share too few values per axis.
    """
    i = np.arange(m) + 0.5
    z = 1.0 - 2.0 * i / m
    phi = np.pi * (1.0 + 5.0**0.5) * i
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def _quadrature() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Legendre points r (Q,), weights (Q,) and hat-basis values (Q, nodes-1) on NODES_MM."""
    x, w = np.polynomial.legendre.leggauss(_GAUSS_POINTS)
    a, b = NODES_MM[:-1, None], NODES_MM[1:, None]
    r = ((a + b) / 2 + (b - a) / 2 * x).ravel()
    weights = ((b - a) / 2 * w).ravel()
    basis = np.stack([np.interp(r, NODES_MM, e) for e in np.eye(len(NODES_MM))], axis=1)
    return r, weights, basis[:, :-1]  # the last node is pinned to q = 0


def offsets_extent(spacing_mm: np.ndarray) -> tuple[int, int, int]:
    """Largest voxel offset (x, y, z) whose S value can be non-zero: ceil(R / s_a)."""
    return tuple(int(np.ceil(R_MAX_MM / s - 1e-9)) for s in np.asarray(spacing_mm, float))


def overlap_means(spacing_mm: np.ndarray, extent_xyz: tuple[int, int, int], r_mm: np.ndarray) -> np.ndarray:
    """G_c(r) for offsets c = (i s_x, j s_y, k s_z), 0 <= i, j, k <= extent; shape (R, nz, ny, nx) mm^3."""
    s = np.asarray(spacing_mm, float)
    dirs = _directions(N_DIRECTIONS)
    out = np.empty((len(r_mm), extent_xyz[2] + 1, extent_xyz[1] + 1, extent_xyz[0] + 1))
    for lo in range(0, len(r_mm), _CHUNK_R):
        r = r_mm[lo : lo + _CHUNK_R, None, None]
        tx, ty, tz = (
            np.maximum(0.0, s[a] - np.abs(r * dirs[None, :, a, None] - s[a] * np.arange(extent_xyz[a] + 1)))
            for a in range(3)
        )  # (r, m, n_a)
        out[lo : lo + _CHUNK_R] = np.einsum("rmy,rmx,rmz->rzyx", ty, tx, tz, optimize=True) / len(dirs)
    return out


def design_matrix(spacing_mm: np.ndarray, extent_xyz: tuple[int, int, int]) -> np.ndarray:
    """Linear map from q at NODES_MM[:-1] to the octant S values (nz, ny, nx, nodes-1)."""
    r, w, basis = _quadrature()
    g = overlap_means(spacing_mm, extent_xyz, r)
    volume = float(np.prod(spacing_mm))
    return np.einsum("rzyx,r,rb->zyxb", g, w, basis, optimize=True) / volume**2


def box_s_values(q_nodes: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Octant of S values (mGy/(MBq*s)) for box voxels of spacing (x, y, z) mm, shape (nz, ny, nx).

    Index (k, j, i) is the target offset (i s_x, j s_y, k s_z); mirror it for the full kernel.
    """
    spacing = np.asarray(spacing_mm, float)
    r, w, basis = _quadrature()
    g = overlap_means(spacing, offsets_extent(spacing), r)
    q = basis @ np.asarray(q_nodes, float)[:-1]
    return np.einsum("rzyx,r->zyx", g, w * q) / float(np.prod(spacing)) ** 2


def fit_point_kernel(tables: dict[float, np.ndarray], designs: dict[float, np.ndarray] | None = None) -> np.ndarray:
    """Fit q (at NODES_MM, mGy/(MBq*s)*mm^2) to octant tables {voxel size mm: S (6, 6, 6)}.

    ``designs`` may hold precomputed :func:`design_matrix` results for the same sizes.
    """
    from scipy.optimize import nnls

    rows, targets = [], []
    for size, octant in tables.items():
        extent = tuple(d - 1 for d in octant.shape[::-1])
        a = designs[size] if designs is not None else design_matrix(np.full(3, size), extent)
        y = np.asarray(octant, float).ravel()
        weight = 1.0 / np.maximum(y, _FIT_WEIGHT_FLOOR * y[0])
        rows.append(a.reshape(y.size, -1) * weight[:, None])
        targets.append(y * weight)
    a = np.vstack(rows)
    y = np.concatenate(targets)
    penalty = np.diff(np.eye(a.shape[1]), 2, axis=0) * _FIT_PENALTY * np.sqrt(len(y))
    q, _ = nnls(np.vstack([a, penalty]), np.concatenate([y, np.zeros(len(penalty))]))  # Lawson-Hanson
    return np.append(q, 0.0)


def point_kernel_file():
    """The shipped point kernel's CSV (a resource of the package)."""
    return resources.files("sirtjax").joinpath("data", "vsv", POINT_KERNEL_FILE)


def load_point_kernel() -> np.ndarray:
    """The shipped fitted point kernel q at NODES_MM (mGy/(MBq*s)*mm^2), shape (len(NODES_MM),)."""
    data = np.loadtxt(io.StringIO(point_kernel_file().read_text(encoding="utf-8")), delimiter=",", comments="#")
    if data.shape != (len(NODES_MM), 2) or not np.allclose(data[:, 0], NODES_MM, atol=1e-6):
        raise RuntimeError(f"{POINT_KERNEL_FILE} does not match NODES_MM; regenerate it")
    return data[:, 1]

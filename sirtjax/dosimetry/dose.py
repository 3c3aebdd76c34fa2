"""Absorbed dose from an activity map: local deposition (LDM) and voxel S-value convolution (VSV).

Arrays are (z, y, x) like :class:`~sirtjax.volume.Volume`; spacing is (x, y, z) mm. Activity is the
administered (time-zero) activity per voxel in GBq; microspheres are trapped for ever, so each GBq
gives ``constants.decays_per_gbq`` decays (physical decay only). Dose is in Gy, float32.

- LDM: every decay deposits its mean energy in its own voxel: ``D = F * A / (rho * V)`` with F the
  constant set's dose factor (Gy*kg/GBq), rho in g/ml and V the voxel volume in ml.
- VSV: ``D = (A_cumulated * S)`` (3D convolution) with the 90Y soft-tissue kernel for the voxel
  size (:func:`sirtjax.dosimetry.kernels.voxel_kernel`). The tables are normalised to the ICRP-107
  energy per decay; for another constant set the kernel is scaled by the ratio of the sets' dose
  factors, so LDM and VSV use the same energy. Convolution is an FFT product (rfft, jit) on a grid
  zero-padded by the kernel size, so nothing wraps around; the result is cropped back to the
  activity grid ("same" convolution, activity outside the grid is zero). Float32 FFT round-off
  (about 1e-6 of the peak) is clipped at zero so dose is never negative.
- Density: the kernel describes soft tissue of its closure density (about 1.03 g/ml). With a
  density map (e.g. from CT through :func:`hu_to_density_g_ml`) VSV dose is scaled voxel by voxel by
  ``rho_kernel / rho`` (energy deposited per voxel unchanged, mass changed), the usual first-order
  density correction; it ignores the longer beta range in lung and the shorter one in bone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML, DoseConstants, get_constants, kernel_reference
from sirtjax.dosimetry.kernels import VoxelKernel, voxel_kernel
from sirtjax.programs import Program, ProgramCache

# Default CT calibration (HU, g/ml): air, water, and a bone line reaching cortical bone (ICRU 1.85-1.92
# g/ml) at 1500 HU. Generic for 120 kVp; pass the scanner's own table when it is known.
DEFAULT_HU_DENSITY = ((-1000.0, 0.0012), (0.0, 1.0), (1500.0, 1.9))


def voxel_volume_ml(spacing_mm) -> float:
    """Volume of one voxel in ml from its spacing (x, y, z) mm."""
    return float(np.prod(np.asarray(spacing_mm, np.float64))) * 1e-3


def hu_to_density_g_ml(hu: jax.Array, calibration=DEFAULT_HU_DENSITY) -> jax.Array:
    """Mass density (g/ml) from CT numbers (HU), piecewise linear through (HU, g/ml) points, clamped."""
    pts = np.asarray(calibration, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or np.any(np.diff(pts[:, 0]) <= 0) or np.any(pts[:, 1] <= 0):
        raise ValueError("calibration must be (HU, g/ml) pairs with increasing HU and positive densities")
    return jnp.interp(jnp.asarray(hu, jnp.float32), jnp.asarray(pts[:, 0], jnp.float32), jnp.asarray(pts[:, 1], jnp.float32))


def dose_ldm(
    activity_gbq: jax.Array,
    spacing_mm,
    *,
    constants: str | DoseConstants = "icrp107",
    density_g_ml: float | jax.Array = LIVER_DENSITY_G_ML,
) -> jax.Array:
    """Local-deposition dose (Gy, (z, y, x)) of activity per voxel (GBq); density scalar or map (g/ml)."""
    c = get_constants(constants)
    mass_kg = jnp.asarray(density_g_ml, jnp.float32) * (voxel_volume_ml(spacing_mm) * 1e-3)
    return jnp.asarray(activity_gbq, jnp.float32) * jnp.float32(c.gy_kg_per_gbq) / mass_kg


def vsv_gy_per_gbq(kernel: VoxelKernel, constants: str | DoseConstants = "icrp107") -> np.ndarray:
    """The kernel as dose (Gy) per GBq administered in the source voxel, float32 (z, y, x)."""
    c = get_constants(constants)
    reference = kernel_reference()
    energy_scale = c.gy_kg_per_gbq / reference.gy_kg_per_gbq  # the set's half-life and energy, counted once
    gy_per_decay = kernel.s_values * 1e-9  # mGy/(MBq*s) = 1e-3 Gy per 1e6 decays
    return (gy_per_decay * reference.decays_per_gbq * energy_scale).astype(np.float32)


def padded_shape(shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> tuple[int, ...]:
    """FFT grid: at least n + m - 1 per axis (no wrap-around), rounded up to a fast length."""
    return tuple(scipy.fft.next_fast_len(n + m - 1, real=True) for n, m in zip(shape, kernel_shape))


def _small_kernel_rfftn(kernel: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    """rfftn of a small kernel zero-padded to shape, as three small DFT products (cheaper than an FFT)."""
    out = kernel.astype(jnp.complex64)
    for axis, n in enumerate(shape):  # z, y, then x (the real-FFT half-axis)
        freqs = n // 2 + 1 if axis == 2 else n
        taps = kernel.shape[axis]
        phase = (jnp.arange(taps)[:, None] * jnp.arange(freqs)[None, :]) % n  # exact integer phase
        dft = jnp.exp(-2j * jnp.pi * phase.astype(jnp.float32) / n).astype(jnp.complex64)  # (taps, freqs)
        out = jnp.moveaxis(jnp.tensordot(out, dft, axes=([axis], [0]), precision=jax.lax.Precision.HIGHEST), -1, axis)
    return out


@jax.jit
def convolve_same(volume: jax.Array, kernel: jax.Array) -> jax.Array:
    """Linear 3D convolution of a (z, y, x) array with a centred odd kernel; same shape, float32.

    Zero-padded rfft product (no circular wrap); values outside the array count as zero; no clipping.
    """
    volume = jnp.asarray(volume, jnp.float32)
    kernel = jnp.asarray(kernel, jnp.float32)
    shape = padded_shape(volume.shape, kernel.shape)
    spectrum = jnp.fft.rfftn(volume, shape) * _small_kernel_rfftn(kernel, shape)
    full = jnp.fft.irfftn(spectrum, shape)
    start = [(m - 1) // 2 for m in kernel.shape]
    return jax.lax.dynamic_slice(full, start, volume.shape)


def dose_vsv(
    activity_gbq: jax.Array,
    spacing_mm,
    *,
    constants: str | DoseConstants = "icrp107",
    density_g_ml: jax.Array | None = None,
    kernel: VoxelKernel | None = None,
    programs: ProgramCache | None = None,
) -> jax.Array:
    """Voxel S-value dose (Gy, (z, y, x), float32) of activity per voxel (GBq) on a grid of spacing (x, y, z) mm.

    ``kernel`` defaults to :func:`voxel_kernel` for the spacing; ``density_g_ml`` (a map on the same
    grid) scales the dose by ``rho_kernel / rho`` voxel by voxel. ``programs``: where the compiled convolution is
    kept (:class:`~sirtjax.programs.ProgramCache`).
    """
    kernel = voxel_kernel(spacing_mm) if kernel is None else kernel
    if not np.allclose(kernel.spacing_mm, np.asarray(spacing_mm, float).reshape(3), rtol=1e-6):
        raise ValueError(f"kernel spacing {kernel.spacing_mm} does not match the grid {tuple(spacing_mm)}")
    density = None if density_g_ml is None else jax.device_put(np.asarray(density_g_ml, np.float32))
    return _VSV(activity_gbq, vsv_gy_per_gbq(kernel, constants), np.float32(kernel.closure_density_g_ml()), density,
                programs=programs)


def _vsv(activity_gbq: jax.Array, kernel_gy_per_gbq: jax.Array, closure_density_g_ml, density_g_ml) -> jax.Array:
    """:func:`dose_vsv`'s arithmetic: the convolution, negatives clipped, scaled by density (None: not)."""
    dose = jnp.maximum(convolve_same(activity_gbq, kernel_gy_per_gbq), 0.0)
    return dose if density_g_ml is None else dose * (closure_density_g_ml / density_g_ml)


_VSV = Program(_vsv, "vsv dose")

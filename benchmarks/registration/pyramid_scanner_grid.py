"""Registration pyramid levels of a CT as a scanner reconstructs it (513 x 513 x 288 voxels of 0.78 x 0.78 x 1.25 mm),
timed side by side with SimpleITK in the same run.

The portal-venous CT of one study-renderer seed is rendered on that grid (as `benchmarks/segmentation/clinical_grid.py`
does). Each level (12, 6 and 3 mm, `sirtjax.registration.pyramid.pyramid_level`: a Gaussian of half the resolution,
then integer shrinking) is computed three ways, each twice, the second timed after compilation:
- sirtjax as shipped (padded to the coarse bucket, or to the fine bucket where that would add over 16 M voxels);
- sirtjax padded to the coarse bucket always (the rule before the padding budget);
- SimpleITK: `SmoothingRecursiveGaussian` of the same sigmas (mm) and a linear `Resample` onto the level's grid, an
  ITK pyramid's two steps (a recursive Gaussian approximates the sampled one, so the levels differ slightly).
Prints a Markdown table with the largest difference of each from the shipped level (HU; SimpleITK's without the
last voxel along each axis, whose block centre may lie past the CT, 0 for ITK and clamped for sirtjax).

    python benchmarks/registration/pyramid_scanner_grid.py [--seed 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np

SPACING_MM = (0.78, 0.78, 1.25)
FOV_MM = (400.0, 400.0, 360.0)


def timed(fn):
    """(result, wall s of a second call): the first call compiles."""
    fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    """Render, build each level three ways, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=300)
    a = ap.parse_args()
    import SimpleITK as sitk

    from sirtjax.io import to_sitk
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.pyramid import level_schedule, pyramid_level, shrink_grid, smooth_and_shrink_bucketed

    base = PhantomConfig()
    grid = dataclasses.replace(base.diag_ct, spacing_mm=SPACING_MM, fov_mm=FOV_MM)
    vol = generate_study(a.seed, dataclasses.replace(base, diag_ct=grid)).images["diag_ct"]
    image = sitk.Cast(to_sitk(vol), sitk.sitkFloat32)
    print(f"CT {'x'.join(map(str, vol.shape[::-1]))} voxels of {' x '.join(f'{s:g}' for s in vol.spacing_mm)} mm; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    rows = ["| level | sirtjax s | sirtjax, coarse bucket only s | SimpleITK s | max diff: coarse / SimpleITK HU |", "|---|---|---|---|---|"]
    for res in (12.0, 6.0, 3.0):
        shipped, t_shipped = timed(lambda: np.asarray(pyramid_level(vol, res).array))
        sigma_vox, factor = level_schedule(vol, res)
        level = shrink_grid(vol, factor)
        coarse, t_coarse = timed(lambda: np.asarray(smooth_and_shrink_bucketed(
            np.asarray(vol.array), sigma_vox, factor, None, np.asarray(level.spacing_mm)[::-1], pad_budget_voxels=2**62)))
        sigma_mm = [s * sp for s, sp in zip(sigma_vox[::-1], vol.spacing_mm)]  # x, y, z

        def itk():
            smoothed = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma_mm])
            ref = sitk.Image([int(n) for n in level.shape[::-1]], sitk.sitkFloat32)
            ref.SetSpacing([float(s) for s in level.spacing_mm])
            ref.SetOrigin([float(o) for o in level.origin_mm])
            ref.SetDirection([float(d) for d in np.asarray(level.direction).ravel()])
            return sitk.GetArrayFromImage(sitk.Resample(smoothed, ref, sitk.Transform(), sitk.sitkLinear, 0.0))

        itk_level, t_itk = timed(itk)
        inner = (slice(0, -1),) * 3  # a last block centre past the CT is outside for ITK (0), clamped for sirtjax
        rows.append(f"| {res:g} mm ({'x'.join(map(str, shipped.shape[::-1]))}) | {t_shipped:.2f} | {t_coarse:.2f} | {t_itk:.2f} | "
                    f"{np.abs(coarse - shipped).max():.1e} / {np.abs(itk_level - shipped)[inner].max():.1f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""Liver DSC under what real scans have and the study renderer does not: a patient table, metal streaks, bowel
loops against the liver, the scanner's padding outside its reconstruction circle, a fatty liver, MR hot spots and padding,
surface-coil brightness and arbitrary MR scaling.

Each artefact is painted onto a study-renderer image of an unseen seed (never the training generator) after it is
rendered; the reference liver is the rendering's own. Each cell is the mean liver DSC over the seeds (min in
brackets) and the mean volume (ml) segmented outside the true liver, of `segment_liver` with the given model.
The artefacts are crude physical imitations (documented on each function), not simulations of a scanner.

    python benchmarks/segmentation/artefacts.py [--model liver] [--seeds 300,301,302,303,304,305] [--rows TEXT] [--out FILE.md]

`--rows TEXT` runs only the rows whose name contains TEXT (e.g. "T1 MR").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from stress import render  # noqa: E402  (the study renderer's images of the stress rows)

Artefact = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def body_mask(image: np.ndarray, ct: bool) -> np.ndarray:
    """The patient: above -500 HU (CT) or 10 % of the maximum (MR), opened and hole-filled."""
    body = image > (-500.0 if ct else 0.1 * float(image.max()))
    return ndimage.binary_fill_holes(ndimage.binary_opening(body, iterations=2))


def table(image, liver, spacing_zyx, rng):
    """A carbon-fibre couch 8 mm behind the patient, 50 mm thick: 3 mm shells of 300 HU around foam at -850 HU,
    across the whole width; skipped (image unchanged) when the field of view ends behind the patient."""
    out = image.copy()
    rows = np.nonzero(body_mask(image, True).any(axis=(0, 2)))[0]
    y0 = rows.max() + int(round(8 / spacing_zyx[1]))
    y1 = min(image.shape[1], y0 + int(round(50 / spacing_zyx[1])))
    shell = max(1, int(round(3 / spacing_zyx[1])))
    out[:, y0:y1, :] = -850.0
    out[:, y0:min(y1, y0 + shell), :] = 300.0
    out[:, max(y0, y1 - shell):y1, :] = 300.0
    return out


def metal_streaks(image, liver, spacing_zyx, rng):
    """A 4 mm metal object (3000 HU) at the liver's centre with 7 alternating bright and dark streaks (400 HU, 2 mm
    wide, fading as 1 / (1 + r / 40 mm)) through it, over 40 mm of slices: an embolisation coil's artefact."""
    out = image.astype(np.float32).copy()
    cz, cy, cx = (int(c) for c in ndimage.center_of_mass(liver))
    yy, xx = np.meshgrid((np.arange(image.shape[1]) - cy) * spacing_zyx[1], (np.arange(image.shape[2]) - cx) * spacing_zyx[2], indexing="ij")
    streak = np.zeros_like(yy)
    for k, angle in enumerate(np.linspace(0.0, np.pi, 7, endpoint=False)):
        distance = np.abs(-np.sin(angle) * xx + np.cos(angle) * yy)
        streak += (1 if k % 2 else -1) * 400.0 * np.exp(-0.5 * (distance / 2.0) ** 2)
    radius = np.hypot(yy, xx)
    half = int(round(20 / spacing_zyx[0]))
    slab = slice(max(0, cz - half), cz + half)
    out[slab] += (streak / (1 + radius / 40.0))[None]
    out[slab] = np.where(radius[None] < 2.0, 3000.0, out[slab])
    return out


def bowel(wall_hu: float, content_hu: float) -> Artefact:
    """Bowel loops: 14 random-walk tubes (10-14 mm radius, 2 mm wall of wall_hu, lumen of content_hu) starting
    8-20 mm from the lower liver, painted only outside the liver and inside the body."""

    def paint(image, liver, spacing_zyx, rng):
        out = image.copy()
        body = body_mask(image, True)
        distance = ndimage.distance_transform_edt(~liver, sampling=spacing_zyx)
        z_low = np.percentile(np.nonzero(liver)[0], 30) + 10 / spacing_zyx[0]
        starts = np.argwhere((distance > 8) & (distance < 20) & body & (np.arange(image.shape[0])[:, None, None] < z_low))
        world = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(image.shape, spacing_zyx)], indexing="ij"), -1)
        lumen, tube = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
        for _ in range(14):
            p, d, r = starts[rng.integers(len(starts))] * spacing_zyx, rng.normal(size=3), rng.uniform(10.0, 14.0)
            for _ in range(8):
                d = d + 0.6 * rng.normal(size=3)
                d /= np.linalg.norm(d)
                p = p + 8.0 * d
                lo = np.maximum(((p - r - 3) / spacing_zyx).astype(int), 0)
                hi = np.minimum(((p + r + 3) / spacing_zyx).astype(int) + 1, image.shape)
                box = tuple(slice(a, b) for a, b in zip(lo, hi))
                dist = np.linalg.norm(world[box] - p, axis=-1)
                lumen[box] |= dist < r - 2
                tube[box] |= dist < r
        free = body & ~liver
        out[tube & ~lumen & free] = wall_hu
        out[lumen & free] = content_hu
        return out

    return paint


def padded_circle(width_fraction: float, value: float = -3024.0, ct: bool = True) -> Artefact:
    """A padding value (a CT scanner's -3024 HU outside its reconstruction circle; -32768 from an MR's conversion)
    outside an in-plane circle centred on the body, `width_fraction` times the body's left-right width across: above 1
    it blanks the image's corners, below 1 it cuts the flanks of a patient wider than the field."""

    def paint(image, liver, spacing_zyx, rng):
        body = body_mask(image, ct)
        ys, xs = (np.nonzero(body.any(axis=axes))[0] for axes in ((0, 2), (0, 1)))
        radius_mm = 0.5 * width_fraction * (xs.max() - xs.min() + 1) * spacing_zyx[2]
        yy = (np.arange(image.shape[1]) - 0.5 * (ys.min() + ys.max())) * spacing_zyx[1]
        xx = (np.arange(image.shape[2]) - 0.5 * (xs.min() + xs.max())) * spacing_zyx[2]
        out = image.astype(np.float32)
        out[:, np.hypot(yy[:, None], xx[None, :]) > radius_mm] = value
        return out

    return paint


def fatty_liver(drop_hu: float) -> Artefact:
    """Steatosis, common after the chemotherapy that precedes SIRT: the liver (its lesions too) `drop_hu` darker,
    painted on the rendering's own liver with its edge blurred by 1 mm (a partial volume), so a 58 HU non-contrast
    liver reads 28 HU at 30, below the spleen's 47."""

    def paint(image, liver, spacing_zyx, rng):
        return image - drop_hu * ndimage.gaussian_filter(liver.astype(np.float32), 1.0 / np.asarray(spacing_zyx))

    return paint


def hot_spot(times_max: float) -> Artefact:
    """A 3x3x3-voxel spot at `times_max` times the image maximum just inside the anterior body wall of the middle
    slice (a flow artefact, a skin marker, a saturated value), which moves the MR window's maximum."""
    def paint(image, liver, spacing_zyx, rng):
        out = image.astype(np.float32)
        z = image.shape[0] // 2
        ys, xs = np.nonzero(body_mask(image, False)[z])
        i = np.argmin(ys)
        out[z - 1:z + 2, ys[i] + 1:ys[i] + 4, xs[i] - 1:xs[i] + 2] = times_max * float(image.max())
        return out
    return paint


def surface_coil(image, liver, spacing_zyx, rng):
    """Surface-coil brightness: the image times 1 + 1.5 exp(-depth / 30 mm), depth from the body surface."""
    depth = ndimage.distance_transform_edt(body_mask(image, False), sampling=spacing_zyx)
    return image * (1.0 + 1.5 * np.exp(-depth / 30.0))


def rescaled(image, liver, spacing_zyx, rng):
    """Arbitrary scanner scaling: 1000 x the image + 37."""
    return image * 1000.0 + 37.0


# row -> (stress.py row of the image, modality, artefact; None: the image as rendered)
ROWS: dict[str, tuple[str, str, Artefact | None]] = {
    "portal-venous CT, as rendered": ("CT portal-venous (diag CT)", "ct", None),
    "portal-venous CT, patient table": ("CT portal-venous (diag CT)", "ct", table),
    "portal-venous CT, metal streaks at the liver": ("CT portal-venous (diag CT)", "ct", metal_streaks),
    "portal-venous CT, bowel loops with gas": ("CT portal-venous (diag CT)", "ct", bowel(50.0, -900.0)),
    "portal-venous CT, bowel loops with oral contrast": ("CT portal-venous (diag CT)", "ct", bowel(50.0, 300.0)),
    "portal-venous CT, bowel loops of 60 HU": ("CT portal-venous (diag CT)", "ct", bowel(60.0, 60.0)),
    "portal-venous CT, fatty liver (30 HU darker)": ("CT portal-venous (diag CT)", "ct", fatty_liver(30.0)),
    "portal-venous CT, -3024 HU outside the reconstruction circle": ("CT portal-venous (diag CT)", "ct", padded_circle(1.15)),
    "portal-venous CT, reconstruction circle cutting the flanks": ("CT portal-venous (diag CT)", "ct", padded_circle(0.9)),
    "non-contrast CT, as rendered": ("CT non-contrast (MAA CT)", "ct", None),
    "non-contrast CT, bowel loops with gas": ("CT non-contrast (MAA CT)", "ct", bowel(50.0, -900.0)),
    "non-contrast CT, bowel loops of fluid": ("CT non-contrast (MAA CT)", "ct", bowel(50.0, 15.0)),
    "non-contrast CT, bowel loops of 60 HU": ("CT non-contrast (MAA CT)", "ct", bowel(60.0, 60.0)),
    "non-contrast CT, enhancing bowel wall": ("CT non-contrast (MAA CT)", "ct", bowel(110.0, 20.0)),
    "non-contrast CT, fatty liver (30 HU darker)": ("CT non-contrast (MAA CT)", "ct", fatty_liver(30.0)),
    "non-contrast CT, fatty liver (60 HU darker)": ("CT non-contrast (MAA CT)", "ct", fatty_liver(60.0)),
    "non-contrast CT, reconstruction circle cutting the flanks": ("CT non-contrast (MAA CT)", "ct", padded_circle(0.9)),
    "T1 MR, as rendered": ("MR T1 (oblique grid)", "mr", None),
    "T1 MR, hot spot (5 x the maximum)": ("MR T1 (oblique grid)", "mr", hot_spot(5.0)),
    "T1 MR, hot spot (50 x the maximum)": ("MR T1 (oblique grid)", "mr", hot_spot(50.0)),
    "T1 MR, -32768 padding outside a circle": ("MR T1 (oblique grid)", "mr", padded_circle(1.15, -32768.0, ct=False)),
    "T1 MR, surface-coil brightness": ("MR T1 (oblique grid)", "mr", surface_coil),
    "T1 MR, rescaled (1000 x + 37)": ("MR T1 (oblique grid)", "mr", rescaled),
}


def main() -> None:
    """Segment every row for every seed and print (and write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="liver")
    ap.add_argument("--seeds", default="300,301,302,303,304,305")
    ap.add_argument("--rows", default="", help="only the rows whose name contains this text")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = {name: row for name, row in ROWS.items() if a.rows in name}
    if not rows:
        ap.error(f"no row's name contains {a.rows!r}")
    from sirtjax.metrics import dice
    from sirtjax.models import load_model
    from sirtjax.segmentation import segment_liver
    from sirtjax.volume import make_volume

    model, spec = load_model(a.model)
    seeds = [int(s) for s in a.seeds.split(",")]
    rendered = {(row, seed): render((row, seed))[2] for row in {r for r, _, _ in rows.values()} for seed in seeds}
    t0 = time.perf_counter()
    cells = {}
    for name, (row, modality, artefact) in rows.items():
        for seed in seeds:
            r = rendered[(row, seed)]
            liver, spacing_zyx = r["liver"] > 0, np.asarray(r["spacing"])[::-1]
            image = r["image"] if artefact is None else artefact(r["image"], liver, spacing_zyx, np.random.default_rng(seed))
            mask = np.asarray(segment_liver(model, spec, make_volume(image, r["spacing"], r["origin"], r["direction"]), modality=modality).array) > 0
            cells.setdefault(name, []).append((dice(mask, liver), float((mask & ~liver).sum() * np.prod(spacing_zyx)) / 1000.0))
            print(f"{name} seed {seed}: DSC {cells[name][-1][0]:.3f}, {cells[name][-1][1]:.0f} ml outside", flush=True)
    lines = [f"model {a.model}; seeds {a.seeds}{f'; rows with {a.rows!r}' if a.rows else ''}; {platform.machine()}, {os.cpu_count()} CPUs; {time.perf_counter() - t0:.0f} s", "",
             "| image, artefact | liver DSC (min) | ml segmented outside the liver |", "|---|---|---|"]
    for name, values in cells.items():
        d, ml = np.asarray(values).T
        lines.append(f"| {name} | {d.mean():.3f} ({d.min():.3f}) | {ml.mean():.0f} |")
    text = "\n".join(lines)
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

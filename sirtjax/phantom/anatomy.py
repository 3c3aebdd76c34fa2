"""Random patient anatomy: every organ's parameters, drawn from a numpy Generator.

The result is a plain JSON-serialisable dict (lists and floats, mm in the canonical LPS frame)
that :mod:`sirtjax.phantom.organs` turns into shapes; it is stored verbatim in ``truth.json``.
The layout is that of an adult abdomen: liver under the right dome of the diaphragm with a left
lobe reaching across the midline, stomach and spleen under the left dome, kidneys beside the
lumbar spine, heart on the diaphragm between the lungs, aorta and IVC in front of the spine.
Lesions are placed inside the liver at least 2 mm from its surface and from each other; metal
clips 4-25 mm deep in the liver away from lesions.
"""

from __future__ import annotations

import numpy as np

from sirtjax.phantom import organs
from sirtjax.phantom.config import PhantomConfig


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _jit(rng: np.random.Generator, point, mm: float) -> list[float]:
    return [float(v) for v in np.asarray(point, np.float64) + rng.uniform(-mm, mm, 3)]


def _ellipsoid(rng, center, radii, rotation_deg, scale, jitter_mm=6.0, rot_jitter_deg=8.0) -> dict:
    return {
        "center": _jit(rng, center, jitter_mm),
        "radii": [float(r * scale * rng.uniform(0.92, 1.08)) for r in radii],
        "rotation_deg": _jit(rng, rotation_deg, rot_jitter_deg),
    }


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=3)
    return [float(c) for c in v / np.linalg.norm(v)]


def sample_anatomy(rng: np.random.Generator, config: PhantomConfig) -> dict:
    """Draw a patient: body habitus, organs, vessels, lesions and clips (canonical LPS mm)."""
    height_cm = _u(rng, 155.0, 192.0)
    bmi = _u(rng, *config.bmi)
    weight_kg = bmi * (height_cm / 100.0) ** 2
    a = 138.0 + 2.6 * (bmi - 19.0) + 0.3 * (height_cm - 170.0)
    b = 96.0 + 2.2 * (bmi - 19.0)
    cy = 12.0
    fat = max(2.0, 8.0 + 1.6 * (bmi - 19.0) + rng.uniform(-3, 3))  # the bound only acts below BMI 19
    anat: dict = {
        "patient": {"height_cm": height_cm, "weight_kg": weight_kg, "bmi": bmi},
        "body": {"center_xy": [0.0, cy], "half_widths": [a, b], "exponent": _u(rng, 2.2, 2.6), "fat_mm": fat, "muscle_mm": _u(rng, 9.0, 14.0)},
    }
    if config.arms_down:
        anat["arms"] = _arms(a, cy, fat)
    ys = cy + b - fat - _u(rng, 52.0, 60.0)  # vertebral body centre, in front of the back muscles
    anat["spine"] = {"x": _u(rng, -3, 3), "y": ys, "level_mm": _u(rng, 32.0, 36.0), "phase_mm": _u(rng, 0.0, 34.0)}
    zr = _u(rng, 70.0, 100.0)  # top of the right dome
    anat["diaphragm"] = {
        "right": [_u(rng, -80, -60), cy + _u(rng, -15, 5), zr],
        "left": [_u(rng, 55, 75), cy + _u(rng, -15, 5), zr - _u(rng, 8.0, 22.0)],
        "width_mm": _u(rng, 95.0, 115.0),
        "drop_mm": _u(rng, 55.0, 75.0),
    }
    zl = anat["diaphragm"]["left"][2]
    anat["ribs"] = {
        "top_z": _u(rng, 280.0, 300.0),
        "spacing_mm": _u(rng, 27.0, 31.0),
        "count": 12,
        "drop_mm": _u(rng, 60.0, 85.0),
        "inset_mm": 9.0,
        "half_width_mm": 4.0,
        "half_height_mm": 7.0,
    }
    anat["lungs"] = {"wall_mm": 20.0, "apex_z": _u(rng, 300.0, 320.0), "taper_start_z": 200.0, "taper": 0.6}
    anat["mediastinum"] = {"center_xy": [_u(rng, 4, 14), cy - 10.0], "half_widths": [_u(rng, 24, 32), b * 1.2]}
    s = _u(rng, *config.liver_scale) * (height_cm / 175.0) ** 0.3
    ac = a - fat - anat["body"]["muscle_mm"]  # half-widths of the abdominal cavity
    bc = b - fat - anat["body"]["muscle_mm"]
    left_scale = _u(rng, *config.left_lobe_scale)
    ap, shift, caudal = config.liver_ap_scale, config.left_lobe_shift_mm, config.liver_caudal_scale
    anat["liver"] = {  # a right lobe grown caudally keeps its top under the dome
        "right": _ellipsoid(rng, [-0.52 * ac, cy - 0.15 * bc, zr - 78.0 - 98.0 * s * (caudal - 1.0)], [0.57 * ac, 0.92 * bc * ap, 98.0 * caudal], [0.0, 25.0, 8.0], s),
        "left": _ellipsoid(rng, [0.1 * ac + shift, cy - 0.62 * bc, zr - 52.0], [0.55 * ac * left_scale, 0.4 * bc * ap, 32.0], [0.0, 12.0, -22.0], s),
        "blend_mm": _u(rng, 20.0, 35.0),
        "deformation": {
            "centers": [_jit(rng, [-40.0, cy - 20.0, zr - 70.0], 60.0) for _ in range(6)],
            "sigmas": [_u(rng, 35.0, 65.0) for _ in range(6)],
            "amplitudes": [[float(v) for v in rng.normal(0, config.liver_deformation_mm / 1.5, 3)] for _ in range(6)],
        },
    }
    anat["gallbladder"] = _ellipsoid(rng, [-38.0, cy - 62.0, zr - 140.0], [14.0, 15.0, 36.0], [25.0, -15.0, 0.0], 1.0)
    anat["stomach"] = _ellipsoid(rng, [68.0, cy - 28.0, zl - 78.0], [44.0, 36.0, 62.0], [0.0, 30.0, 25.0], 1.0)
    anat["stomach"]["gas_fraction"] = _u(rng, 0.0, 0.45)
    anat["spleen"] = _ellipsoid(rng, [a - fat - 50.0, cy + 40.0, zl - 72.0], [30.0, 56.0, 56.0], [0.0, 0.0, 35.0], _u(rng, 0.85, 1.15))
    anat["kidneys"] = [
        _ellipsoid(rng, [-72.0, ys - 8.0, zr - 205.0], [28.0, 24.0, 55.0], [0.0, 10.0, 30.0], 1.0),
        _ellipsoid(rng, [72.0, ys - 8.0, zr - 185.0], [28.0, 24.0, 55.0], [0.0, -10.0, -30.0], 1.0),
    ]
    anat["heart"] = _ellipsoid(rng, [22.0, cy - 25.0, zr + 25.0], [52.0, 42.0, 48.0], [0.0, -20.0, 35.0], _u(rng, 0.9, 1.1))
    anat["vessels"] = _sample_vessels(rng, anat, ys, cy, zr, zl)
    _place_lesions_and_clips(rng, config, anat)
    return anat


def _arms(half_width_mm: float, cy: float, fat_mm: float) -> list[dict]:
    """Both arms hanging beside the trunk, 10 mm from it: elliptic cylinders along z around a humerus.

    They follow from the body's size and draw nothing, so that a seed keeps its patient with or without them.
    """
    x = half_width_mm + 10.0 + 42.0
    return [
        {"center_xy": [side * x, cy + 8.0], "half_widths": [42.0, 50.0], "fat_mm": 0.6 * fat_mm, "bone_xy": [side * (x + 4.0), cy + 12.0], "bone_radius_mm": 11.0}
        for side in (-1.0, 1.0)
    ]


def _seg(a, b, ra, rb=None) -> dict:
    return {"a": [float(v) for v in a], "b": [float(v) for v in b], "radius_a": float(ra), "radius_b": float(ra if rb is None else rb)}


def _sample_vessels(rng, anat, ys, cy, zr, zl) -> dict:
    aorta_x, ivc_x = _u(rng, 12, 22), _u(rng, -28, -20)
    ivc_top = [ivc_x + 2.0, ys - 34.0, zr + 25.0]
    confluence = _jit(rng, [4.0, cy - 10.0, zr - 165.0], 6.0)
    hilum = _jit(rng, [-32.0, cy - 18.0, zr - 112.0], 6.0)
    right_end = _jit(rng, [-92.0, cy - 5.0, zr - 92.0], 8.0)
    left_end = _jit(rng, [22.0, cy - 52.0, zr - 70.0], 8.0)
    spleen_hilum = np.asarray(anat["spleen"]["center"]) + np.array([-28.0, -10.0, -5.0])
    portal = [_seg(confluence, hilum, 8.0, 7.0), _seg(hilum, right_end, 6.5, 4.0), _seg(hilum, left_end, 5.5, 3.5), _seg(confluence, spleen_hilum, 5.0, 4.0)]
    for end, start in ((right_end, hilum), (left_end, hilum)):
        axis = np.asarray(end) - np.asarray(start)
        axis /= np.linalg.norm(axis)
        for _ in range(3):
            d = axis + rng.normal(0, 0.7, 3)
            portal.append(_seg(end, np.asarray(end) + d / np.linalg.norm(d) * _u(rng, 25, 45), 3.5, 2.0))
    junction = [ivc_x, ys - 34.0, zr - 12.0]
    hepatic = [
        _seg(junction, _jit(rng, [-128.0, cy + 12.0, zr - 72.0], 8.0), 6.0, 2.5),
        _seg(junction, _jit(rng, [-58.0, cy - 78.0, zr - 95.0], 8.0), 5.5, 2.5),
        _seg(junction, _jit(rng, [35.0, cy - 62.0, zr - 55.0], 8.0), 5.0, 2.5),
    ]
    return {
        "aorta": _seg([aorta_x, ys - 42.0, -300.0], [aorta_x, ys - 42.0, zl + 120.0], _u(rng, 10.5, 13.0)),
        "ivc": _seg([ivc_x, ys - 30.0, -300.0], ivc_top, _u(rng, 10.0, 12.5)),
        "portal": portal,
        "hepatic": hepatic,
    }


def _liver_candidates(rng: np.random.Generator, anat: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points in the liver's bounding region and their liver signed distance (mm)."""
    lv = anat["liver"]
    c = np.array([lv["right"]["center"], lv["left"]["center"]])
    r = np.array([max(x) for x in (lv["right"]["radii"], lv["left"]["radii"])])
    lo, hi = (c - r[:, None]).min(0) - 20, (c + r[:, None]).max(0) + 20
    pts = rng.uniform(lo, hi, (n, 3)).astype(np.float32)
    f = organs.liver(anat, (pts[:, 0], pts[:, 1], pts[:, 2]))
    return pts, f


def _place_lesions_and_clips(rng: np.random.Generator, config: PhantomConfig, anat: dict) -> None:
    pts, depth = _liver_candidates(rng, anat, 60000)
    anat["liver"]["max_depth_mm"] = float(-depth.min())
    n_lesions = int(rng.integers(config.n_lesions[0], config.n_lesions[1] + 1))
    lo, hi = np.log(config.lesion_diameter_mm[0]), np.log(config.lesion_diameter_mm[1])
    placed: list[tuple[np.ndarray, float]] = []
    lesions = []
    for _ in range(n_lesions):
        radius = float(np.exp(rng.uniform(lo, hi)) / 2)
        min_radius = config.lesion_diameter_mm[0] / 2
        while True:  # shrink towards the smallest diameter until the lesion fits
            free = depth < -(radius * 1.15 + 2.0)
            for c, rc in placed:
                free &= np.linalg.norm(pts - c, axis=1) > radius * 1.15 + rc + 2.0
            if free.any() or radius <= min_radius:
                break
            radius = max(radius * 0.9, min_radius)
        if not free.any():
            break  # the liver is full: fewer lesions than drawn (recorded in truth)
        center = pts[rng.choice(np.flatnonzero(free))].astype(np.float64)
        placed.append((center, radius * 1.15))
        necrotic = radius > 12.0 and rng.uniform() < config.necrosis_probability
        lesions.append({
            "id": 2 + len(lesions),
            "center": [float(v) for v in center],
            "radii": [float(radius * rng.uniform(0.87, 1.13)) for _ in range(3)],
            "rotation_deg": [float(v) for v in rng.uniform(-180, 180, 3)],
            "lobe_directions": [_unit(rng) for _ in range(3)],
            "lobe_amplitudes_mm": [float(radius * rng.uniform(0.0, 0.18)) for _ in range(3)],
            "necrotic_fraction": float(rng.uniform(0.35, 0.6)) if necrotic else 0.0,
            "enhancement": "hyper" if rng.uniform() < config.hyperenhancing_probability else "hypo",
        })
    anat["lesions"] = lesions
    anat["lesions_drawn"] = n_lesions  # more than len(lesions) when the liver had no room left
    clips = []
    n_clips = int(rng.integers(config.n_clips[0], config.n_clips[1] + 1))
    for _ in range(n_clips):
        free = (depth < -4.0) & (depth > -25.0)
        for c, rc in placed:
            free &= np.linalg.norm(pts - c, axis=1) > rc + config.clip_label_radius_mm + 6.0
        if not free.any():
            break
        center = pts[rng.choice(np.flatnonzero(free))].astype(np.float64)
        placed.append((center, config.clip_label_radius_mm + 10.0))
        clips.append({
            "id": 2 + len(lesions) + len(clips),
            "center": [float(v) for v in center],
            "axis": _unit(rng),
            "length_mm": _u(rng, 5.0, 9.0),
            "radius_mm": 1.0,
        })
    anat["clips"] = clips

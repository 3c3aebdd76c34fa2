"""Organ shapes of the canonical patient as implicit functions of LPS points (mm).

Each function takes the anatomy parameters (the JSON-serialisable dict made by
:func:`sirtjax.phantom.anatomy.sample_anatomy`) and a point tuple ``(x, y, z)`` of broadcastable
float32 arrays, and returns an approximate signed distance in mm (negative inside); see
:mod:`sirtjax.phantom.shapes`. Organs that touch are carved so that labelled structures never
overlap: the liver excludes the IVC, gallbladder, stomach, kidneys and everything above the
diaphragm; the lungs exclude the mediastinum, heart, spine and everything below the diaphragm.
"""

from __future__ import annotations

import numpy as np

from sirtjax.phantom.shapes import Point, capsule, ellipsoid, rbf_displacement, smooth_union, superellipse_xy

FAR_MM = np.float32(1e3)


def _ell(p: Point, spec: dict) -> np.ndarray:
    return ellipsoid(p, spec["center"], spec["radii"], spec.get("rotation_deg"))


def body(anat: dict, p: Point) -> np.ndarray:
    """Skin surface: a superelliptic cylinder along z."""
    b = anat["body"]
    return superellipse_xy(p, b["center_xy"], b["half_widths"], b["exponent"])


def arm(anat: dict, index: int, p: Point) -> np.ndarray:
    """Skin of arm `index` (0: right, 1: left), present when the arms hang beside the trunk: a cylinder along z."""
    a = anat["arms"][index]
    return superellipse_xy(p, a["center_xy"], a["half_widths"], 2.0)


def humerus(anat: dict, index: int, p: Point) -> np.ndarray:
    """Humerus of arm `index`: a circular cylinder along z (exact distance)."""
    a = anat["arms"][index]
    dx, dy = p[0] - np.float32(a["bone_xy"][0]), p[1] - np.float32(a["bone_xy"][1])
    return np.sqrt(dx**2 + dy**2) - np.float32(a["bone_radius_mm"])


def muscle_wall(anat: dict, p: Point) -> np.ndarray:
    """Inside of the subcutaneous fat (muscle wall and everything within)."""
    return body(anat, p) + np.float32(anat["body"]["fat_mm"])


def cavity(anat: dict, p: Point) -> np.ndarray:
    """Abdominal and thoracic cavity: inside the muscle wall."""
    b = anat["body"]
    return body(anat, p) + np.float32(b["fat_mm"] + b["muscle_mm"])


def diaphragm_height(anat: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z (mm) of the diaphragm surface above (x, y): the higher of two paraboloid domes."""
    d = anat["diaphragm"]
    w = np.float32(d["width_mm"])
    domes = []
    for side in ("right", "left"):
        cx, cy, cz = d[side]
        domes.append(np.float32(cz) - np.float32(d["drop_mm"]) * (((x - np.float32(cx)) / w) ** 2 + ((y - np.float32(cy)) / w) ** 2))
    return np.maximum(domes[0], domes[1])


def below_diaphragm(anat: dict, p: Point, gap_mm: float) -> np.ndarray:
    """Negative below the diaphragm, at least gap_mm under its surface."""
    return p[2] - diaphragm_height(anat, p[0], p[1]) + np.float32(gap_mm)


def above_diaphragm(anat: dict, p: Point, gap_mm: float) -> np.ndarray:
    """Negative above the diaphragm, at least gap_mm over its surface."""
    return diaphragm_height(anat, p[0], p[1]) - p[2] + np.float32(gap_mm)


def liver_frame(anat: dict, p: Point) -> Point:
    """Points carried by the liver's smooth random deformation (used for the liver and its vessels)."""
    d = anat["liver"]["deformation"]
    v = rbf_displacement(p, np.asarray(d["centers"]), np.asarray(d["sigmas"]), np.asarray(d["amplitudes"]))
    return p[0] + v[0], p[1] + v[1], p[2] + v[2]


def vessel_tree(segments: list[dict], p: Point) -> np.ndarray:
    """Union of tapered tubes, each {"a": [...], "b": [...], "radius_a": r, "radius_b": r} (mm)."""
    f = np.full(np.broadcast_shapes(*(c.shape for c in p)), FAR_MM, np.float32)
    for s in segments:
        f = np.minimum(f, capsule(p, s["a"], s["b"], s["radius_a"], s["radius_b"]))
    return f


def great_vessel(anat: dict, name: str, p: Point) -> np.ndarray:
    """Aorta or IVC (straight tubes along z)."""
    return vessel_tree([anat["vessels"][name]], p)


def gallbladder(anat: dict, p: Point) -> np.ndarray:
    """Gallbladder (in the liver's deformed frame: it sits in the liver bed)."""
    return _ell(liver_frame(anat, p), anat["gallbladder"])


def stomach(anat: dict, p: Point) -> np.ndarray:
    """Stomach, below the left dome of the diaphragm."""
    return np.maximum(_ell(p, anat["stomach"]), below_diaphragm(anat, p, 6.0))


def spleen(anat: dict, p: Point) -> np.ndarray:
    """Spleen, below the left dome and inside the cavity."""
    f = np.maximum(_ell(p, anat["spleen"]), below_diaphragm(anat, p, 5.0))
    return np.maximum(f, cavity(anat, p) + 2.0)


def kidney(anat: dict, side: int, p: Point) -> np.ndarray:
    """Kidney 0 (right) or 1 (left)."""
    return _ell(p, anat["kidneys"][side])


def heart(anat: dict, p: Point) -> np.ndarray:
    """Heart, resting on the diaphragm."""
    return np.maximum(_ell(p, anat["heart"]), above_diaphragm(anat, p, 4.0))


def liver(anat: dict, p: Point) -> np.ndarray:
    """Whole liver (lesions and intrahepatic vessels included; IVC and gallbladder excluded)."""
    lv = anat["liver"]
    q = liver_frame(anat, p)
    f = smooth_union(_ell(q, lv["right"]), _ell(q, lv["left"]), lv["blend_mm"])
    f = np.maximum(f, below_diaphragm(anat, p, 5.0))
    f = np.maximum(f, cavity(anat, p) + 2.0)
    for other in (
        great_vessel(anat, "ivc", p),
        _ell(q, anat["gallbladder"]),
        stomach(anat, p),
        kidney(anat, 0, p),
        spine_block(anat, p),
    ):
        f = np.maximum(f, 2.0 - other)
    return f


def spine_block(anat: dict, p: Point) -> np.ndarray:
    """A cylinder enclosing the vertebrae and paraspinal muscles (used for carving)."""
    s = anat["spine"]
    return superellipse_xy(p, (s["x"], s["y"] + 20.0), (42.0, 50.0), 2.0)


def mediastinum(anat: dict, p: Point) -> np.ndarray:
    """The midline slab between the lungs."""
    m = anat["mediastinum"]
    return superellipse_xy(p, m["center_xy"], m["half_widths"], 2.0)


def lungs(anat: dict, p: Point) -> np.ndarray:
    """Both lungs: the chest cavity above the diaphragm minus the mediastinum, heart and spine."""
    lg = anat["lungs"]
    f = body(anat, p) + np.float32(anat["body"]["fat_mm"] + lg["wall_mm"])
    f = f + np.maximum(p[2] - np.float32(lg["taper_start_z"]), 0.0) * np.float32(lg["taper"])
    f = np.maximum(f, above_diaphragm(anat, p, 5.0))
    f = np.maximum(f, p[2] - np.float32(lg["apex_z"]))
    for other in (mediastinum(anat, p), heart(anat, p), spine_block(anat, p), great_vessel(anat, "aorta", p)):
        f = np.maximum(f, 3.0 - other)
    return f


def lesion(anat: dict, index: int, p: Point) -> np.ndarray:
    """Lesion `index` (0-based): a lobulated ellipsoid (the rasteriser clips it to the liver)."""
    les = anat["lesions"][index]
    q = [p[i] - np.float32(les["center"][i]) for i in range(3)]
    f = _ell(p, les)
    r = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) + np.float32(1e-3)
    lobes = np.zeros_like(f)
    for direction, amp in zip(les["lobe_directions"], les["lobe_amplitudes_mm"]):
        cos = (q[0] * direction[0] + q[1] * direction[1] + q[2] * direction[2]) / r
        lobes += np.float32(amp) * (cos * cos - np.float32(1.0 / 3.0))
    return f - lobes


def necrotic_core(anat: dict, index: int, p: Point) -> np.ndarray:
    """Necrotic core of lesion `index` (FAR everywhere when it has none)."""
    les = anat["lesions"][index]
    frac = les["necrotic_fraction"]
    if frac <= 0:
        return np.full(np.broadcast_shapes(*(c.shape for c in p)), FAR_MM, np.float32)
    return ellipsoid(p, les["center"], [r * frac for r in les["radii"]], les.get("rotation_deg"))


def clip_metal(anat: dict, index: int, p: Point, min_radius_mm: float) -> np.ndarray:
    """Metal clip `index`: a short tube, at least min_radius_mm thick so a grid can see it."""
    c = anat["clips"][index]
    half = np.asarray(c["axis"], np.float64) * c["length_mm"] / 2
    a, b = np.asarray(c["center"]) - half, np.asarray(c["center"]) + half
    return capsule(p, a, b, max(c["radius_mm"], min_radius_mm))


def clip_region(anat: dict, index: int, p: Point, radius_mm: float) -> np.ndarray:
    """The landmark region of clip `index`: a sphere of radius_mm around its centre."""
    c = anat["clips"][index]["center"]
    return np.sqrt(sum((p[i] - np.float32(c[i])) ** 2 for i in range(3))) - np.float32(radius_mm)

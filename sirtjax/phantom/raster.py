"""Rasterise the canonical patient: a tissue map and label distance fields on a regular grid.

The canonical grid is axis-aligned (identity direction) in the canonical LPS frame and covers
x in [-200, 200] (with the arms down or a body wider than 370 mm [-320, 320]), y in [-150, 170],
z in [-260, 340] mm. Shapes are evaluated only inside their
bounding boxes and painted in anatomical order (later tissues replace earlier ones). Labelled
structures (liver, lungs, landmarks) keep their signed distance in mm so that session images can
sample them with linear interpolation and place their surfaces to sub-voxel accuracy; outside a
structure's bounding box its distance is a large positive constant.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
from scipy import ndimage

from sirtjax.phantom import organs
from sirtjax.phantom.shapes import Point, capsule, rotation_matrix, superellipse_xy

EXTENT_MM = ((-200.0, 200.0), (-150.0, 170.0), (-260.0, 340.0))  # x, y, z
WIDE_X_MM = (-320.0, 320.0)  # x extent for the arms down or a body wider than 370 mm
FAR = np.float32(50.0)


class Tissue(enum.IntEnum):
    """Tissue codes of the canonical map; lesion i is LESION + i, its necrotic core NECROSIS + i."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    CORTEX = 3
    MARROW = 4
    DISC = 5
    CSF = 6
    LUNG = 7
    LUNG_VESSEL = 8
    HEART = 9
    AORTA = 10
    IVC = 11
    LIVER = 12
    PORTAL = 13
    HEPATIC = 14
    SPLEEN = 15
    KIDNEY_CORTEX = 16
    KIDNEY_MEDULLA = 17
    STOMACH_WALL = 18
    STOMACH_CONTENT = 19
    GAS = 20
    BOWEL = 21
    GALLBLADDER = 22
    CLIP = 23
    LESION = 32
    NECROSIS = 48


@dataclasses.dataclass(frozen=True)
class Field:
    """A canonical array stored over the sub-box where it differs from ``outside``.

    ``array[0, 0, 0]`` is canonical voxel ``start`` (z, y, x); every voxel outside the box has the
    value ``outside``.
    """

    array: np.ndarray
    start: tuple[int, int, int]
    outside: float


@dataclasses.dataclass(frozen=True)
class Canonical:
    """The rasterised patient. Arrays are (z, y, x); voxel (0, 0, 0) is at origin_mm (x, y, z)."""

    origin_mm: np.ndarray
    spacing_mm: float
    tissue: np.ndarray  # uint8 Tissue codes, whole grid
    liver_sdf: Field  # float32 mm, negative inside the liver
    lungs_sdf: Field  # float32 mm, negative inside the lungs
    landmark_sdf: Field  # float32 mm, negative inside any landmark (lesion or clip region)
    landmark_id: Field  # uint8: id of the nearest landmark near landmarks, 0 elsewhere
    liver_texture: Field  # float32, unit-variance smooth noise (4 mm) in liver parenchyma, 0 elsewhere


def _crop(full: np.ndarray, where: np.ndarray, outside: float) -> Field:
    """The Field of full over the bounding box of where, grown by one voxel (empty box: 1 voxel)."""
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(where.any(axis=tuple(a for a in range(3) if a != axis)))
        first, last = (hits[0], hits[-1]) if hits.size else (0, 0)
        lo.append(max(int(first) - 1, 0))
        hi.append(min(int(last) + 2, full.shape[axis]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return Field(np.ascontiguousarray(full[box]), tuple(lo), outside)


class _Grid:
    """Axis coordinates of the canonical grid and bounding-box sub-grids."""

    def __init__(self, spacing_mm: float, extent_mm=EXTENT_MM):
        self.spacing = float(spacing_mm)
        self.extent = tuple(extent_mm)
        self.axes = [np.arange(lo, hi + 1e-6, self.spacing, dtype=np.float32) for lo, hi in self.extent]
        self.shape = tuple(len(a) for a in self.axes[::-1])  # (z, y, x)

    def region(self, lo_mm, hi_mm) -> tuple[tuple[slice, slice, slice], Point]:
        """Slices (z, y, x) and broadcastable points of the voxels inside the box [lo, hi] (x, y, z mm)."""
        sl = []
        for ax, lo, hi in zip(self.axes, lo_mm, hi_mm):
            i0 = int(np.searchsorted(ax, lo, "left"))
            i1 = int(np.searchsorted(ax, hi, "right"))
            sl.append(slice(i0, max(i0, i1)))
        x = self.axes[0][sl[0]][None, None, :]
        y = self.axes[1][sl[1]][None, :, None]
        z = self.axes[2][sl[2]][:, None, None]
        return (sl[2], sl[1], sl[0]), (x, y, z)

    def everywhere(self) -> tuple[tuple[slice, slice, slice], Point]:
        """The whole grid."""
        return self.region([e[0] for e in self.extent], [e[1] for e in self.extent])


def _box(center, radius_mm) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(center, np.float64)
    return c - radius_mm, c + radius_mm


def _ellipsoid_box(spec: dict, margin: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (x, y, z mm) of a rotated ellipsoid, grown by margin."""
    r = rotation_matrix(spec.get("rotation_deg") or (0.0, 0.0, 0.0)) * np.asarray(spec["radii"])
    return _box(spec["center"], np.sqrt((r**2).sum(axis=1)) + margin)


def _segments_box(segments: list[dict], margin: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    pts = np.array([s[k] for s in segments for k in ("a", "b")])
    r = max(max(s["radius_a"], s["radius_b"]) for s in segments) + margin
    return pts.min(0) - r, pts.max(0) + r


def _paint(tissue: np.ndarray, sl, inside: np.ndarray, code: int) -> None:
    view = tissue[sl]
    view[np.broadcast_to(inside, view.shape)] = code


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (float32), made on a grid up to
    4x coarser than ``shape`` (as coarse as sigma allows) and linearly upsampled."""
    factor = int(np.clip(sigma_vox // 1.2, 1, 4))
    coarse = tuple((n - 1) // factor + 2 if factor > 1 else n for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma_vox / factor, mode="wrap", truncate=3.0)
    for axis, n in enumerate(shape if factor > 1 else ()):
        pos = np.arange(n, dtype=np.float32) / factor
        i0 = pos.astype(np.int64)
        w = (pos - i0).reshape((-1,) + (1,) * (len(shape) - axis - 1))
        field = np.take(field, i0, axis=axis) * (1 - w) + np.take(field, i0 + 1, axis=axis) * w
    return field / np.float32(max(float(field.std()), 1e-6))


def rasterize(anat: dict, spacing_mm: float, clip_label_radius_mm: float, rng: np.random.Generator) -> Canonical:
    """Rasterise the anatomy on the canonical grid at spacing_mm; rng draws the lung and bowel textures."""
    wide = "arms" in anat or anat["body"]["half_widths"][0] > 185.0
    g = _Grid(spacing_mm, (WIDE_X_MM, *EXTENT_MM[1:]) if wide else EXTENT_MM)
    tissue = np.zeros(g.shape, np.uint8)
    _paint_trunk(anat, g, tissue)
    lungs_sdf = np.full(g.shape, FAR, np.float32)
    _paint_thorax(anat, g, tissue, lungs_sdf, rng)
    _paint_skeleton(anat, g, tissue)
    _paint_abdomen(anat, g, tissue, rng)
    liver_sdf = np.full(g.shape, FAR, np.float32)
    landmark_sdf = np.full(g.shape, FAR, np.float32)
    landmark_id = np.zeros(g.shape, np.uint8)
    _paint_liver(anat, g, tissue, liver_sdf)
    _paint_landmarks(anat, g, tissue, liver_sdf, landmark_sdf, landmark_id, clip_label_radius_mm)
    origin = np.array([a[0] for a in g.axes], np.float64)
    near_landmark = landmark_sdf < FAR
    return Canonical(
        origin,
        g.spacing,
        tissue,
        _crop(liver_sdf, liver_sdf < FAR, float(FAR)),
        _crop(lungs_sdf, lungs_sdf < FAR, float(FAR)),
        _crop(landmark_sdf, near_landmark, float(FAR)),
        _crop(landmark_id, near_landmark, 0),
        _liver_texture(tissue, rng, g.spacing),
    )


def _paint_trunk(anat: dict, g: _Grid, tissue: np.ndarray) -> None:
    sl, p = g.everywhere()
    p2 = (p[0], p[1], np.zeros((1, 1, 1), np.float32))
    _paint(tissue, sl, organs.body(anat, p2) < 0, Tissue.FAT)
    _paint(tissue, sl, organs.muscle_wall(anat, p2) < 0, Tissue.MUSCLE)
    _paint(tissue, sl, organs.cavity(anat, p2) < 0, Tissue.FAT)
    for i, arm in enumerate(anat.get("arms", ())):
        skin = organs.arm(anat, i, p2)
        bone = organs.humerus(anat, i, p2)
        _paint(tissue, sl, skin < 0, Tissue.FAT)
        _paint(tissue, sl, skin + np.float32(arm["fat_mm"]) < 0, Tissue.MUSCLE)
        _paint(tissue, sl, bone < 0, Tissue.CORTEX)
        _paint(tissue, sl, bone < -3.0, Tissue.MARROW)
    s = anat["spine"]
    for side in (-1.0, 1.0):  # erector spinae
        _paint(tissue, sl, superellipse_xy(p2, (s["x"] + side * 36.0, s["y"] + 42.0), (30.0, 25.0), 2.2) < 0, Tissue.MUSCLE)
    zr = anat["diaphragm"]["right"][2]
    for side in (-1.0, 1.0):  # psoas
        a = (s["x"] + side * 28.0, s["y"] - 8.0, zr - 150.0)
        b = (s["x"] + side * 58.0, s["y"] - 22.0, -270.0)
        box_lo, box_hi = np.minimum(a, b) - 30.0, np.maximum(a, b) + 30.0
        rsl, rp = g.region(box_lo, box_hi)
        _paint(tissue, rsl, capsule(rp, a, b, 6.0, 24.0) < 0, Tissue.MUSCLE)
    # the diaphragm: a muscle sheet inside the cavity
    rsl, rp = g.region((-200, -150, -40), (200, 170, 140))
    sheet = np.abs(rp[2] - organs.diaphragm_height(anat, rp[0], rp[1])) < 5.0
    _paint(tissue, rsl, sheet & (organs.cavity(anat, rp) < 0), Tissue.MUSCLE)


def _paint_thorax(anat: dict, g: _Grid, tissue: np.ndarray, lungs_sdf: np.ndarray, rng: np.random.Generator) -> None:
    sl, p = g.region((-200, -150, -60), (200, 170, 340))
    f = organs.lungs(anat, p)
    lungs_sdf[sl] = np.minimum(f, FAR)
    inside = f < 0
    _paint(tissue, sl, inside, Tissue.LUNG)
    # pulmonary vessels: where two smooth random fields both cross zero (a network of tubes)
    sigma = 6.0 / g.spacing
    v = _smooth_noise(rng, inside.shape, sigma) ** 2 + _smooth_noise(rng, inside.shape, sigma) ** 2
    _paint(tissue, sl, inside & (v < 0.06), Tissue.LUNG_VESSEL)
    hsl, hp = g.region(*_ellipsoid_box(anat["heart"]))
    _paint(tissue, hsl, organs.heart(anat, hp) < 0, Tissue.HEART)
    for name, code in (("aorta", Tissue.AORTA), ("ivc", Tissue.IVC)):
        vsl, vp = g.region(*_segments_box([anat["vessels"][name]]))
        _paint(tissue, vsl, organs.great_vessel(anat, name, vp) < 0, code)


def _paint_skeleton(anat: dict, g: _Grid, tissue: np.ndarray) -> None:
    s = anat["spine"]
    sl, p = g.region((s["x"] - 60, s["y"] - 30, -260), (s["x"] + 60, s["y"] + 80, 340))
    x, y = p[0] - np.float32(s["x"]), p[1] - np.float32(s["y"])
    level = np.float32(s["level_mm"])
    zz = np.mod(p[2] - np.float32(s["phase_mm"]), level) - level / 2  # position within a vertebra
    body_xy = superellipse_xy((x, y, zz), (0.0, 0.0), (22.0, 17.0), 2.0)
    half = level / 2 - 3.0
    vert = np.maximum(body_xy, np.abs(zz) - half)
    _paint(tissue, sl, (body_xy < 0) & (np.abs(zz) >= half), Tissue.DISC)
    _paint(tissue, sl, vert < 0, Tissue.CORTEX)
    _paint(tissue, sl, vert < -2.5, Tissue.MARROW)
    canal = np.sqrt(x**2 + (y - 30.0) ** 2)
    arch = (canal < 15.0) & (np.abs(zz) < half - 2.0) & (y > 14.0)
    spinous = (np.abs(x) < 4.0) & (y > 40.0) & (y < 64.0 - 0.3 * np.abs(zz)) & (np.abs(zz) < half - 3.0)
    transverse = (np.abs(x) < 40.0) & (np.abs(y - 28.0 + 0.12 * np.abs(x)) < 4.5) & (np.abs(zz) < 5.0)
    _paint(tissue, sl, arch | spinous | transverse, Tissue.CORTEX)
    _paint(tissue, sl, canal < 9.0, Tissue.CSF)
    _paint_ribs(anat, g, tissue)


def _paint_ribs(anat: dict, g: _Grid, tissue: np.ndarray) -> None:
    r, b = anat["ribs"], anat["body"]
    bottom = r["top_z"] - r["spacing_mm"] * (r["count"] - 1) - r["drop_mm"] - 15.0
    sl, p = g.region((-200, -150, bottom), (200, 170, r["top_z"] + 15.0))
    inset = b["fat_mm"] + r["inset_mm"]
    ax, by = (np.float32(h - inset) for h in b["half_widths"])
    u, v = p[0] / ax, (p[1] - np.float32(b["center_xy"][1])) / by
    rn = np.sqrt(u * u + v * v) + np.float32(1e-6)
    cos_phi = v / rn  # 1 at the back, -1 at the front
    phi = np.degrees(np.arccos(np.clip(cos_phi, -1.0, 1.0)))
    sin_phi = np.sqrt(np.maximum(1.0 - cos_phi * cos_phi, 0.0))
    radius = ax * by / np.sqrt((by * sin_phi) ** 2 + (ax * cos_phi) ** 2)
    d_r = (rn - 1.0) * radius
    zeta = p[2] + np.float32(r["drop_mm"]) * (1.0 - cos_phi) / 2  # height the rib had at the back
    k = np.clip(np.round((np.float32(r["top_z"]) - zeta) / np.float32(r["spacing_mm"])), 0, r["count"] - 1)
    dz = zeta - (np.float32(r["top_z"]) - k * np.float32(r["spacing_mm"]))
    f = np.sqrt((d_r / np.float32(r["half_width_mm"])) ** 2 + (dz / np.float32(r["half_height_mm"])) ** 2) - 1.0
    end_deg = np.where(k < 7, 160.0, 160.0 - 14.0 * (k - 6))  # floating ribs stop at the side
    f = np.where((phi > 14.0) & (phi < end_deg), f, np.float32(1.0))
    _paint(tissue, sl, f < 0, Tissue.CORTEX)
    _paint(tissue, sl, f < -0.45, Tissue.MARROW)
    front = b["center_xy"][1] - b["half_widths"][1] + b["fat_mm"] + 10.0
    ssl, sp = g.region((-20, front - 20, 60), (20, front + 20, 300))
    _paint(tissue, ssl, capsule(sp, (0.0, front, 80.0), (0.0, front + 6.0, 280.0), 9.0) < 0, Tissue.MARROW)


def _paint_abdomen(anat: dict, g: _Grid, tissue: np.ndarray, rng: np.random.Generator) -> None:
    zr = anat["diaphragm"]["right"][2]
    top, back = zr - 130.0, anat["spine"]["y"] - 25.0
    sl, p = g.region((-200, -150, -260), (200, 170, top + 60.0))
    field = _smooth_noise(rng, tuple(int(n) for n in tissue[sl].shape), 7.0 / g.spacing)
    # bowel loops fill the visceral fat, thinning out upwards and towards the retroperitoneum
    field = field - np.maximum(p[2] - np.float32(top), 0.0) / 15.0 - np.maximum(p[1] - np.float32(back), 0.0) / 10.0
    visceral = (tissue[sl] == Tissue.FAT) & (organs.cavity(anat, p) < -4.0)
    _paint(tissue, sl, visceral & (field > -0.9), Tissue.BOWEL)
    _paint(tissue, sl, visceral & (field > 2.1), Tissue.GAS)
    for kid in (0, 1):
        ksl, kp = g.region(*_ellipsoid_box(anat["kidneys"][kid]))
        f = organs.kidney(anat, kid, kp)
        _paint(tissue, ksl, f < 0, Tissue.KIDNEY_CORTEX)
        _paint(tissue, ksl, f < -7.0, Tissue.KIDNEY_MEDULLA)
    ssl, sp = g.region(*_ellipsoid_box(anat["spleen"]))
    _paint(tissue, ssl, organs.spleen(anat, sp) < 0, Tissue.SPLEEN)
    st = anat["stomach"]
    ssl, sp = g.region(*_ellipsoid_box(st))
    f = organs.stomach(anat, sp)
    _paint(tissue, ssl, f < 0, Tissue.STOMACH_WALL)
    _paint(tissue, ssl, f < -4.0, Tissue.STOMACH_CONTENT)
    gas_level = st["center"][1] - max(st["radii"]) * (1.0 - 2.0 * st["gas_fraction"])
    _paint(tissue, ssl, (f < -4.0) & (sp[1] < gas_level), Tissue.GAS)
    gsl, gp = g.region(*_ellipsoid_box(anat["gallbladder"], margin=25.0))
    _paint(tissue, gsl, organs.gallbladder(anat, gp) < 0, Tissue.GALLBLADDER)
    psl, pp = g.region(*_segments_box(anat["vessels"]["portal"][:1] + anat["vessels"]["portal"][3:4]))
    _paint(tissue, psl, organs.vessel_tree(anat["vessels"]["portal"][:1] + anat["vessels"]["portal"][3:4], pp) < 0, Tissue.PORTAL)


def _liver_box(anat: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the liver: its lobes grown by the largest displacement of its deformation."""
    lv = anat["liver"]
    boxes = [_ellipsoid_box(lv[k], 0.0) for k in ("right", "left")]
    lo, hi = np.minimum(boxes[0][0], boxes[1][0]), np.maximum(boxes[0][1], boxes[1][1])
    reach = 3.0 * float(np.abs(np.asarray(lv["deformation"]["amplitudes"])).max())  # >= max |v|
    reach = _max_displacement(anat, lo - reach, hi + reach) + 4.0
    return lo - reach, hi + reach


def _liver_texture(tissue: np.ndarray, rng: np.random.Generator, spacing_mm: float) -> Field:
    """Smooth parenchymal texture: unit-variance noise of 4 mm correlation inside LIVER voxels."""
    parenchyma = tissue == Tissue.LIVER
    box = _crop(parenchyma, parenchyma, 0.0)
    noise = _smooth_noise(rng, box.array.shape, 4.0 / spacing_mm) * box.array
    return Field(noise.astype(np.float32), box.start, 0.0)


def _paint_liver(anat: dict, g: _Grid, tissue: np.ndarray, liver_sdf: np.ndarray) -> None:
    sl, p = g.region(*_liver_box(anat))
    f = organs.liver(anat, p)
    liver_sdf[sl] = np.minimum(f, FAR)
    inside = f < 0
    _paint(tissue, sl, inside, Tissue.LIVER)
    reach = _max_displacement(anat, *_liver_box(anat)) + 4.0
    for name, code in (("portal", Tissue.PORTAL), ("hepatic", Tissue.HEPATIC)):
        for seg in anat["vessels"][name]:
            vsl, vp = g.region(*_segments_box([seg], margin=reach))
            tube = organs.vessel_tree([seg], organs.liver_frame(anat, vp)) < 0
            near = liver_sdf[vsl] < (0.0 if code == Tissue.PORTAL else 8.0)
            _paint(tissue, vsl, tube & (near | (tissue[vsl] == code)), code)


def _max_displacement(anat: dict, lo: np.ndarray, hi: np.ndarray) -> float:
    """Largest displacement (mm) of the liver's random deformation over the box [lo, hi]."""
    axes = [np.linspace(a, b, 24, dtype=np.float32) for a, b in zip(lo, hi)]
    p = (axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None])
    q = organs.liver_frame(anat, p)
    return float(np.sqrt(sum((q[i] - p[i]) ** 2 for i in range(3))).max())


def _paint_landmarks(anat, g, tissue, liver_sdf, landmark_sdf, landmark_id, clip_label_radius_mm) -> None:
    for i, les in enumerate(anat["lesions"]):
        sl, p = g.region(*_ellipsoid_box(les, margin=max(les["lobe_amplitudes_mm"]) + 8.0))
        f = np.maximum(organs.lesion(anat, i, p), liver_sdf[sl])
        _paint(tissue, sl, f < 0, Tissue.LESION + i)
        _paint(tissue, sl, (organs.necrotic_core(anat, i, p) < 0) & (f < 0), Tissue.NECROSIS + i)
        _merge_landmark(landmark_sdf, landmark_id, sl, f, les["id"])
    for i, clip in enumerate(anat["clips"]):
        sl, p = g.region(*_box(clip["center"], clip_label_radius_mm + clip["length_mm"] + 3 * g.spacing))
        _paint(tissue, sl, organs.clip_metal(anat, i, p, 0.6 * g.spacing) < 0, Tissue.CLIP)
        _merge_landmark(landmark_sdf, landmark_id, sl, organs.clip_region(anat, i, p, clip_label_radius_mm), clip["id"])


def _merge_landmark(landmark_sdf, landmark_id, sl, f, ident: int) -> None:
    cur = landmark_sdf[sl]
    closer = f < cur
    landmark_id[sl][closer] = ident
    cur[closer] = f[closer]

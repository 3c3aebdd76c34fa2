"""VOI colours: distinct for every VOI, fixed per name, the same in slice contours, DVHs and RT-Struct."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pydicom
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from sirtjax.report import dvh_png, fused_slices_png, voi_colour, voi_colours
from sirtjax.report.colours import LESION_PALETTE, NAMED_COLOURS, voi_colour_rgb
from sirtjax.io.rtstruct import write_rtstruct
from sirtjax.volume import make_volume

ORGANS = ("liver", "normal_liver", "lungs", "lesions")


def _lab(hex_colour: str) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour: the standard sRGB -> XYZ -> Lab formulas."""
    c = np.asarray(to_rgb(hex_colour))
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def deltaE_cie76(a, b) -> float:
    return float(np.linalg.norm(a - b))


def test_lab_formula_matches_published_values():
    # sRGB red and white in CIE Lab (D65), as tabulated e.g. by Bruce Lindbloom's calculator.
    np.testing.assert_allclose(_lab("#ff0000"), [53.24, 80.09, 67.20], atol=0.05)
    np.testing.assert_allclose(_lab("#ffffff"), [100.0, 0.0, 0.0], atol=0.05)


def test_every_voi_has_its_own_colour():
    names = [*ORGANS, *(f"lesion_{i}" for i in range(1, 41))]
    colours = voi_colours(names)
    assert len(set(colours.values())) == len(names)  # liver and lesion_3 used to share one
    # The fixed colours (organs and the first lesions) differ at a glance: CIE76 difference > 40
    # (about 10 is already distinguishable side by side).
    fixed = [*ORGANS, *(f"lesion_{i}" for i in range(1, len(LESION_PALETTE) + 1))]
    worst = min(deltaE_cie76(_lab(colours[a]), _lab(colours[b])) for a, b in itertools.combinations(fixed, 2))
    assert worst > 40
    # Lesions beyond the palette: consecutive ids are far apart in hue (golden-angle spacing).
    extra = [_lab(colours[f"lesion_{i}"]) for i in range(len(LESION_PALETTE) + 1, 41)]
    assert min(deltaE_cie76(a, b) for a, b in zip(extra, extra[1:])) > 20


def test_colour_depends_on_the_name_only():
    # lesion_3 keeps its colour whether or not lesion_1/lesion_2 are in the figure
    assert voi_colours(["lesion_3"]) == {"lesion_3": voi_colours(["liver", "lesion_1", "lesion_3"])["lesion_3"]}
    assert voi_colour("liver") == NAMED_COLOURS["liver"] and voi_colour("lesion_1") == LESION_PALETTE[0]
    assert voi_colour("spleen") == voi_colour("spleen") and voi_colour("spleen").startswith("#")
    assert voi_colour_rgb("liver") == tuple(round(255 * c) for c in to_rgb(NAMED_COLOURS["liver"]))


def _pixels_of(png: bytes, hex_colour: str, tol: int = 6) -> int:
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(np.count_nonzero(np.abs(img - np.array(voi_colour_rgb_hex(hex_colour))).max(axis=-1) <= tol))


def voi_colour_rgb_hex(hex_colour: str) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in to_rgb(hex_colour))


def test_contours_and_dvh_draw_a_voi_in_its_colour():
    shape = (20, 40, 40)
    z, y, x = np.indices(shape)
    liver = ((x - 20) ** 2 + (y - 20) ** 2 < 15**2) & (abs(z - 10) < 8)
    lesion3 = (x - 24) ** 2 + (y - 20) ** 2 + (z - 10) ** 2 < 4**2
    ct = make_volume(np.where(liver, 60.0, -100.0).astype(np.float32), (1.5, 1.5, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    contours = {"liver": ct.with_array(liver.astype(np.uint8)), "lesion_3": ct.with_array(lesion3.astype(np.uint8))}
    slices = fused_slices_png(ct, contours=contours, center_mm=(24 * 1.5, 20 * 1.5, 20.0))
    edges = np.linspace(0, 100, 11)
    dvh = dvh_png({"plan": (edges, np.linspace(1, 0, 10)[None].repeat(2, 0), ["liver", "lesion_3"])})
    for name in ("liver", "lesion_3"):
        # line centres are drawn in the exact colour (antialiasing only blends their edges)
        assert _pixels_of(slices, voi_colour(name)) > 20, name
        assert _pixels_of(dvh, voi_colour(name)) > 20, name
    assert _pixels_of(slices, "#ff3d8b") == 0  # no longer one pink for all lesions


def test_rtstruct_roi_colours_are_the_report_colours(tmp_path):
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    ct = make_volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    vois = {"liver": ct.with_array(mask), "lesion_3": ct.with_array(mask), "lesion_7": ct.with_array(mask)}
    rt = pydicom.dcmread(write_rtstruct(ct, vois, tmp_path / "rt"))
    names = {int(r.ROINumber): r.ROIName for r in rt.StructureSetROISequence}
    got = {names[int(c.ReferencedROINumber)]: tuple(int(v) for v in c.ROIDisplayColor) for c in rt.ROIContourSequence}
    assert got == {n: voi_colour_rgb(n) for n in vois}


@pytest.mark.parametrize("top_gy", [40.0, 160.0])
def test_dvh_axis_ends_past_the_highest_dose(top_gy):
    # The x axis used to run to the histogram's rounded-up top (up to twice the maximum dose); now
    # the VOI's drop to 0 % sits at 1/1.05 of the axis width. Axis extent: the horizontal grid lines.
    edges = np.linspace(0, 400, 401)
    curve = (edges[:-1] < top_gy).astype(float)[None]
    img = np.asarray(Image.open(io.BytesIO(dvh_png({"plan": (edges, curve, ["liver"])}))).convert("RGB")).astype(int)
    grid = np.argwhere(np.all(np.abs(img - 0xDD) <= 2, axis=-1))[:, 1]
    line = np.argwhere(np.abs(img - np.array(voi_colour_rgb_hex(voi_colour("liver")))).max(axis=-1) <= 6)[:, 1]
    left, right = grid.min(), grid.max()
    assert (line.max() - left) / (right - left) == pytest.approx(1 / 1.05, abs=0.02)  # a few pixels of line width

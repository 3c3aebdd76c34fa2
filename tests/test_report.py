"""The HTML report: slice orientation and physical aspect, figures, tables, the page and its atomic writer."""

from __future__ import annotations

import base64
import io
import os
import re

import numpy as np
import pytest
import scipy.ndimage as ndi
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from sirtjax.dosimetry.comparison import Compared, VoiComparison, compare_vois
from sirtjax.report import (FigurePng, KeyValues, Note, Section, Table, checkerboard_png, comparison_table,
                            contour_overlay_png, dose_table, dvh_figure, dvh_png,
                            fused_slices_figure, fused_slices_png, prescription_table, provenance_section,
                            render_report, study_section, voi_colour, write_report)
from sirtjax.report.slices import mask_center_mm, orient, plane
from sirtjax.volume import index_to_world, make_volume, same_grid

SPACING = (0.9, 1.6, 3.0)


def _sphere(shape_zyx=(24, 30, 40), spacing=SPACING, radius_mm=14.0, direction=None) -> tuple:
    """A bright sphere (1) on 0, centred in the grid, and the same as a uint8 mask."""
    idx = np.indices(shape_zyx).astype(np.float64)
    centre = (np.array(shape_zyx) - 1) / 2
    d2 = sum(((idx[a] - centre[a]) * spacing[2 - a]) ** 2 for a in range(3))
    inside = d2 <= radius_mm**2
    vol = make_volume(inside.astype(np.float32), spacing, (-20.0, 35.0, 100.0),
                      np.eye(3) if direction is None else direction)
    return vol, vol.with_array(inside.astype(np.uint8))


def _components(png: bytes, threshold: int = 240, min_pixels: int = 150) -> list[tuple[float, float, float]]:
    """Bright blobs of a PNG: (bounding-box width / height, centre column, centre row), left to right."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    lab, n = ndi.label(grey >= threshold)
    out = []
    for sl in ndi.find_objects(lab):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        on_border = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == grey.shape[0] or sl[1].stop == grey.shape[1]
        if h * w >= min_pixels and not on_border:  # the white page around the panels touches the border
            out.append((w / h, (sl[1].start + sl[1].stop) / 2, (sl[0].start + sl[0].stop) / 2))
    return sorted(out, key=lambda c: c[1])


def _same_image_on_permuted_flipped_grid(vol):
    """The same physical image on a grid whose x index runs along world z and whose y axis is flipped."""
    a = np.transpose(np.asarray(vol.array), (2, 1, 0))[:, ::-1, :]  # (z', y', x') = (x, -y, z)
    sx, sy, sz = vol.spacing_mm
    ny = vol.shape[1]
    d = np.array([[0.0, 0, 1], [0, -1, 0], [1, 0, 0]])  # columns: i' -> +z, j' -> -y, k' -> +x
    origin = np.asarray(vol.origin_mm) + np.array([0.0, (ny - 1) * sy, 0.0])
    return make_volume(np.ascontiguousarray(a), (sz, sy, sx), origin, d)


def test_orient_undoes_permutations_and_flips():
    vol, _ = _sphere()
    rng = np.random.default_rng(0)
    vol = vol.with_array(rng.random(vol.shape).astype(np.float32))
    other = _same_image_on_permuted_flipped_grid(vol)
    # Check the construction against the geometry: voxel (x, y, z) of vol is at the same world point in other.
    p = index_to_world(vol) @ np.array([3, 5, 7, 1.0])
    q = index_to_world(other) @ np.array([7, vol.shape[1] - 1 - 5, 3, 1.0])
    np.testing.assert_allclose(p, q, atol=1e-9)
    a, b = orient(vol), orient(other)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing_mm == pytest.approx(SPACING) and b.spacing_mm == pytest.approx(SPACING)


def test_plane_extents_are_physical():
    vol, _ = _sphere(shape_zyx=(10, 20, 30))
    o = orient(vol)
    ax = plane(o, "axial", (0, 0, 4))
    assert ax.image.shape == (20, 30)
    left, right, bottom, top = ax.extent
    assert abs(right - left) == pytest.approx(30 * 0.9) and abs(top - bottom) == pytest.approx(20 * 1.6)
    cor = plane(o, "coronal", (0, 3, 0))
    assert cor.image.shape == (10, 30) and abs(cor.extent[3] - cor.extent[2]) == pytest.approx(10 * 3.0)
    sag = plane(o, "sagittal", (5, 0, 0))
    assert sag.image.shape == (10, 20) and sag.letters == ("A", "P", "I", "S")
    with pytest.raises(ValueError, match="view"):
        plane(o, "oblique", (0, 0, 0))


def test_mask_centre_matches_scipy():
    vol, mask = _sphere()
    arr = np.zeros(mask.shape, np.uint8)
    arr[3:9, 10:14, 5:30] = 1
    m = mask.with_array(arr)
    com_zyx = ndi.center_of_mass(arr)
    want = index_to_world(m) @ np.array([com_zyx[2], com_zyx[1], com_zyx[0], 1.0])
    np.testing.assert_allclose(mask_center_mm(m), want[:3], atol=1e-3)  # float32 world mapping
    assert mask_center_mm(m.with_array(np.zeros_like(arr))) is None


@pytest.mark.parametrize("permuted", [False, True])
def test_fused_slices_show_a_sphere_round_in_every_view(permuted):
    # A physical sphere on a strongly anisotropic grid must be drawn round (aspect from spacing), on any
    # axis order/flip of the grid. Bounding boxes of the rasterised blobs: within 12 % of square
    # (voxel steps of up to 3 mm on a 28 mm disc, plus antialiasing).
    vol, _ = _sphere()
    if permuted:
        vol = _same_image_on_permuted_flipped_grid(vol)
    png = fused_slices_png(vol, anatomy_window=(0.0, 1.0))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    blobs = _components(png)
    assert len(blobs) == 3, blobs
    for ratio, _, _ in blobs:
        assert ratio == pytest.approx(1.0, abs=0.12)


def test_axial_view_is_radiological():
    # Patient's left (+x in LPS) is drawn on the image's right, anterior (-y) at the top.
    shape = (12, 40, 40)
    arr = np.zeros(shape, np.float32)
    arr[:, 18:22, 18:22] = 1.0  # centre
    arr[:, 2:10, 30:38] = 1.0  # left (large x) and anterior (small y)
    vol = make_volume(arr, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    blobs = _components(fused_slices_png(vol, anatomy_window=(0.0, 1.0), center_mm=(19.5, 19.5, 10.0)), min_pixels=40)
    # Blobs left to right: the axial centre block, the axial marker, then the coronal and sagittal centre
    # blocks (the marker is off those planes).
    assert len(blobs) == 4, blobs
    centre, marker = blobs[0], blobs[1]
    assert marker[1] > centre[1] and marker[2] < centre[2]  # right of and above the centre block


def test_fused_slices_with_overlay_and_contours_on_other_grids():
    vol, mask = _sphere()
    spect = make_volume(np.ones((8, 9, 10), np.float32), (6.0, 6.0, 6.0), (-30.0, 20.0, 80.0), np.eye(3))
    png = fused_slices_png(vol, overlay=spect, contours={"liver": mask, "empty": mask.with_array(np.zeros(mask.shape, np.uint8))},
                           overlay_label="counts", anatomy_window=None)
    im = Image.open(io.BytesIO(png))
    assert im.size[0] > im.size[1] > 100


def test_registration_figures():
    vol, mask = _sphere()
    warped = vol.with_array(np.roll(np.asarray(vol.array), 3, axis=2))
    png = checkerboard_png(vol, warped, squares=4, contour=mask)
    assert Image.open(io.BytesIO(png)).size[0] > 300
    with pytest.raises(ValueError, match="grid"):
        checkerboard_png(vol, make_volume(np.zeros((3, 3, 3), np.float32), (1, 1, 1), (0, 0, 0), np.eye(3)))
    with pytest.raises(ValueError, match="squares"):
        checkerboard_png(vol, warped, squares=0)
    png = contour_overlay_png(vol, {"liver": mask}, {"liver": mask.with_array(np.roll(np.asarray(mask.array), 2, axis=1))})
    assert png[:4] == b"\x89PNG"


def test_dvh_png_checks_shapes():
    edges = np.linspace(0, 100, 11)
    cdvh = np.clip(1 - np.linspace(0, 1, 10)[None, :] * np.array([[1.0], [2.0]]), 0, 1)
    assert dvh_png({"plan": (edges, cdvh, ["liver", "lesion_1"]), "verification": (edges, cdvh * 0.9, ["liver", "lesion_1"])})[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="edges"):
        dvh_png({"plan": (edges[:-1], cdvh, ["liver", "lesion_1"])})


def test_fused_slices_colour_bar_has_units_and_no_offset():
    # A PET in Bq/ml peaks near 2e6: matplotlib would print "1e6" above the colour bar. The bar's
    # ticks are plain numbers and its label carries the unit.
    vol, mask = _sphere()
    pet = vol.with_array(np.asarray(vol.array) * 2.4e6 + 1.3e6)
    fig = fused_slices_figure(vol, overlay=pet, contours={"liver": mask}, overlay_label="PET (Bq/ml)")
    FigureCanvasAgg(fig).draw()  # tick labels and the offset text are set when the figure is drawn
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "PET (Bq/ml)"
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert labels and all(t.isdigit() for t in labels), labels  # 0, 500000, ... (plain, no 1e6 scale)
    assert bar.yaxis.get_offset_text().get_text() == ""


def test_workflow_report_shows_the_pet_in_mbq_per_ml():
    from sirtjax.pipelines.report import pet_emission

    vol, _ = _sphere()
    pet = vol.with_array(np.asarray(vol.array, np.float32) * 2.5e6)
    shown, label, _ = pet_emission(pet)
    assert label == "PET (MBq/ml)"
    assert float(np.max(shown.array)) == pytest.approx(2.5) and same_grid(shown, pet)


def test_dvh_liver_stays_visible_under_the_normal_liver():
    # Small lesions: the liver and normal-liver curves coincide. The liver is a wide translucent band
    # drawn under the normal liver's thin line, in the plot and in the legend.
    edges = np.linspace(0, 100, 11)
    curve = np.clip(1 - np.linspace(0, 1, 10), 0, 1)
    names = ["liver", "normal_liver", "lesion_1"]
    fig = dvh_figure({"plan": (edges, np.stack([curve, curve, curve ** 0.5]), names),
                      "verification": (edges, np.stack([curve, curve, curve]) * 0.9, names)})
    ax = fig.axes[0]
    by_colour = {}
    for line in ax.get_lines():
        by_colour.setdefault(line.get_color(), []).append(line)
    liver, normal = by_colour[voi_colour("liver")], by_colour[voi_colour("normal_liver")]
    assert len(liver) == len(normal) == 2
    for a, b in zip(liver, normal):
        assert a.get_linewidth() >= 2.5 * b.get_linewidth()
        assert a.get_zorder() < b.get_zorder()  # the wide liver band lies under the thin normal-liver line
        assert a.get_linestyle() == b.get_linestyle()  # the line style is the set's (plan / verification)
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert legend["liver"].get_linewidth() > legend["normal_liver"].get_linewidth()


def _prescription(method, activity, comps, constants=("icrp107", 49.43)):
    return {"method": method, "activity_gbq": activity, "liver_activity_gbq": 0.9 * activity,
            "lung_shunt_fraction": 0.1, "lung_mass_kg": 1.0, "lung_dose_gy": 4.9 * activity, "compartments": comps,
            "constants": {"name": constants[0], "gy_kg_per_gbq": constants[1]}, "warnings": []}


def test_prescription_table_side_by_side():
    part = _prescription("partition", 1.7, [
        {"name": "normal_liver", "mass_kg": 1.3, "tn_ratio": 1.0, "dose_gy": 40.0},
        {"name": "tumour_1", "mass_kg": 0.2, "tn_ratio": 3.0, "dose_gy": 120.0}])
    mono = _prescription("mono-compartment", 1.6, [{"name": "target", "mass_kg": 1.5, "tn_ratio": None, "dose_gy": 50.0}])
    t = prescription_table([part, mono])
    assert t.headers == ("", "Partition model", "Mono-compartment (MIRD)")
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows["Activity to inject (GBq)"] == ("1.700", "1.600")
    assert rows["Lung shunt fraction (%)"] == ("10.0", "10.0")
    assert rows["Mean dose, tumour 1 (Gy)"] == ("120.0", None)
    assert rows["T/N ratio, tumour 1"] == ("3.00", None)
    assert rows["Mean dose, target (Gy)"] == (None, "50.0")
    assert "T/N ratio, target" not in rows
    assert t.caption == "Dose constants: icrp107, 49.43 Gy·kg/GBq, in every column."
    with pytest.raises(ValueError):
        prescription_table([])


def test_prescription_table_names_each_columns_constants_once():
    # The demo's table: partition and MIRD with ICRP-107, BSA with the resin convention.
    comps = [{"name": "target", "mass_kg": 1.5, "tn_ratio": None, "dose_gy": 50.0}]
    t = prescription_table([_prescription("partition", 1.7, comps), _prescription("mono-compartment", 1.6, comps),
                            _prescription("bsa", 1.5, comps, ("resin", 49.67))])
    assert t.caption == ("Dose constants per column — Partition model and Mono-compartment (MIRD): icrp107, "
                         "49.43 Gy·kg/GBq; BSA method: resin, 49.67 Gy·kg/GBq.")
    assert t.caption.count("icrp107") == 1 and t.caption.count("resin") == 1


RECORDS_PLAN = [
    {"name": "liver", "volume_ml": 1500.0, "mean_gy": 52.4, "D70_gy": 48.3, "D50_gy": 57.2, "V70_pct": 1.8, "V100_pct": 0.2},
    {"name": "lesion_1", "volume_ml": 2.1, "mean_gy": 99.8, "D70_gy": 86.5, "D50_gy": 102.5, "V70_pct": 100.0, "V100_pct": 66.7},
    {"name": "lesion_2", "volume_ml": 0.0, "mean_gy": None, "D70_gy": None, "D50_gy": None, "V70_pct": None, "V100_pct": None},
]
RECORDS_VERIF = [
    {"name": "liver", "volume_ml": 1490.0, "mean_gy": 49.7, "D70_gy": 48.7, "D50_gy": 52.7, "V70_pct": 0.6, "V100_pct": 0.2},
    {"name": "lesion_1", "volume_ml": 3.1, "mean_gy": 85.1, "D70_gy": 84.1, "D50_gy": 84.9, "V70_pct": 100.0, "V100_pct": 0.0},
    {"name": "lesion_3", "volume_ml": 1.0, "mean_gy": 90.0, "D70_gy": 66.9, "D50_gy": 113.0, "V70_pct": 50.0, "V100_pct": 50.0},
]


def test_dose_table_and_differences():
    t = dose_table(RECORDS_PLAN)
    assert t.headers == ("VOI", "Volume (ml)", "Mean (Gy)", "D70 (Gy)", "D50 (Gy)", "V70 (%)", "V100 (%)")
    assert t.rows[0] == ("liver", "1500.0", "52.4", "48.3", "57.2", "1.8", "0.2")
    assert t.rows[2][2:] == (None,) * 5  # an empty VOI shows dashes, never NaN
    diffs = compare_vois(RECORDS_PLAN, RECORDS_VERIF)
    assert [d.name for d in diffs] == ["liver", "lesion_1", "lesion_2", "lesion_3"]
    assert diffs[0]["mean_gy"].difference == pytest.approx(49.7 - 52.4)
    assert diffs[1].to_dict()["V100_pct"] == {"plan": 66.7, "verification": 0.0, "difference": pytest.approx(-66.7)}
    assert diffs[2].to_dict()["D70_gy"] == {"plan": None, "verification": None, "difference": None}
    assert diffs[3].to_dict()["mean_gy"] == {"plan": None, "verification": 90.0, "difference": None}
    c = comparison_table(diffs)
    assert len(c.headers) == 1 + 3 * 4 and sum(n for _, n in c.groups) == len(c.headers)
    assert c.rows[0][1:4] == ("52.4", "49.7", "-2.7") and c.rows[0][4:7] == ("48.3", "48.7", "+0.4")
    tiny = comparison_table([VoiComparison("liver", {"mean_gy": Compared(1.0, 0.99)})], keys=("mean_gy",))
    assert tiny.rows[0][3] == "+0.0"  # never "-0.0"


def test_study_and_provenance_sections():
    study = {"name": "patient-042", "patient": {"id": "042", "height_cm": 172.0, "weight_kg": 80.5},
             "activities": {"maa_injected_mbq": 150.0, "y90_planned_gbq": 1.8},
             "target_doses_gy": {"tumour": 120.0},
             "series": {"maa_ct": {"path": "/data/042/dicom/maa_ct", "modality": "CT", "session": "maa", "units": "HU"}}}
    s = study_section(study)
    kv = dict(s.blocks[0].items)
    assert kv["Patient id"] == "042" and kv["Height (cm)"] == "172" and kv["99mTc-MAA injected (MBq)"] == "150"
    assert kv["Target dose, tumour (Gy)"] == "120"
    assert s.blocks[1].rows == (("maa_ct", "CT", "maa", "HU", "maa_ct"),)
    p = provenance_section({"name": "icrp107", "half_life_h": 64.1, "mean_energy_mev": 0.9267, "gy_kg_per_gbq": 49.4287,
                            "source": "ICRP-107"}, parameters={"dose model": "vsv", "bins": 500}, version="9.9")
    kv = dict(p.blocks[0].items)
    assert kv["sirtjax version"] == "9.9" and kv["Dose factor (Gy·kg/GBq)"] == "49.429" and kv["bins"] == "500"


def _page(**kw) -> tuple[str, bytes]:
    png = fused_slices_png(_sphere()[0], anatomy_window=(0.0, 1.0))
    sections = [
        Section("Study <&>", (KeyValues((("Patient", "<script>alert(1)</script>"),)),)),
        Section("Doses", (dose_table(RECORDS_PLAN), Note("a note"), FigurePng(png, "a figure"))),
        Section("Comparison", (comparison_table(compare_vois(RECORDS_PLAN, RECORDS_VERIF)),)),
    ]
    return render_report("SIRT plan — test", sections, subtitle="sub", version="1.2.3", **kw), png


def test_render_report_is_self_contained_and_escaped():
    html, png = _page(warnings=["lung dose 35.0 Gy exceeds 30 Gy", {"code": "x", "message": "LSF > 20 %"}])
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "Study &lt;&amp;&gt;" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)  # no external asset
    assert "<link" not in html and "@import" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [base64.b64decode(i) for i in images] == [png]
    assert "Warnings (2)" in html and "LSF &gt; 20 %" in html
    assert "sirtjax 1.2.3" in html
    assert html.count("<section>") == 3


def test_render_without_warnings_says_so():
    html, _ = _page()
    assert "No warnings." in html and "Warnings (" not in html
    with pytest.raises(TypeError, match="block"):
        render_report("t", [Section("bad", ("text",))])


def test_table_without_rows_and_text_alignment():
    html = render_report("t", [Section("s", (Table(("A", "B"), (), numeric=False),))], version="0")
    assert '<table class="text">' in html and "<tbody></tbody>" in html


def test_write_report_is_atomic(tmp_path):
    html, _ = _page()
    out = write_report(html, tmp_path / "sub" / "report.html")
    assert out.read_text(encoding="utf-8") == html
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o644)
    assert os.listdir(out.parent) == ["report.html"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_report(html, blocker / "report.html")
    with pytest.raises(UnicodeEncodeError):  # a failing write leaves neither the target nor a temporary file
        write_report("\ud800", tmp_path / "bad.html")
    assert sorted(os.listdir(tmp_path)) == ["file", "sub"]

"""Metrics against implementations we did not write: SimpleITK, medpy, scipy, analytic cases."""

from __future__ import annotations

import json
import math

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

import sirtjax.metrics as M
from sirtjax.io import to_sitk
from sirtjax.volume import make_volume, world_grid

SPACING = (0.8, 1.3, 2.5)  # ITK (x, y, z) mm, anisotropic
SHAPE = (20, 28, 34)  # (z, y, x)
ROTATED = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()


def ellipsoid(centre_mm, radii_mm, shape=SHAPE, spacing=SPACING):
    """Voxels of an axis-aligned ellipsoid in index-space mm (origin 0, identity direction)."""
    z, y, x = np.indices(shape)
    p = np.stack([x * spacing[0], y * spacing[1], z * spacing[2]], -1)
    return (((p - np.asarray(centre_mm)) / np.asarray(radii_mm)) ** 2).sum(-1) <= 1.0


def blob(seed, shape=SHAPE, quantile=0.6):
    """A random non-convex object (smoothed noise above a quantile), several components at times."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3.0)
    return noise > np.quantile(noise, quantile)


def itk_mask(a, spacing=SPACING):
    img = sitk.GetImageFromArray(a.astype(np.uint8))
    img.SetSpacing(spacing)
    return img


# Pairs of objects: overlapping, disjoint, nested, touching the border (centre outside the image).
PAIRS = {
    "overlap": (ellipsoid((12, 18, 24), (7, 9, 12)), ellipsoid((15, 16, 28), (8, 7, 10))),
    "disjoint": (ellipsoid((6, 8, 10), (4, 5, 6)), ellipsoid((20, 26, 38), (5, 6, 7))),
    "nested": (ellipsoid((13, 18, 25), (4, 5, 6)), ellipsoid((13, 18, 25), (9, 12, 15))),
    "border": (ellipsoid((-2, 18, 24), (9, 10, 14)), ellipsoid((1, 17, 48), (8, 12, 9))),
}
BLOBS = {"blobs1": (blob(1), blob(101)), "blobs2": (blob(2, quantile=0.8), blob(102, quantile=0.7))}


def medpy_distances(pred, ref):
    """Directed surface distances from medpy's private helper (voxelspacing in array-axis order)."""
    surface_distances = getattr(medpy_binary, "__surface_distances")
    sampling = SPACING[::-1]
    return surface_distances(pred, ref, sampling, 1), surface_distances(ref, pred, sampling, 1)


def scipy_hd95(pred, ref, spacing_zyx):
    """HD95 written from scratch: 6-connected erosion surfaces, scipy EDT, numpy percentiles."""
    def surf(m):
        return m & ~ndimage.binary_erosion(m, border_value=0)

    d1 = ndimage.distance_transform_edt(~surf(ref), sampling=spacing_zyx)[surf(pred)]
    d2 = ndimage.distance_transform_edt(~surf(pred), sampling=spacing_zyx)[surf(ref)]
    return max(np.percentile(d1, 95), np.percentile(d2, 95))


# ----------------------------------------------------------------------------- overlap


def test_dice_per_label_matches_simpleitk_label_overlap():
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    for lab, (a, b) in enumerate([*PAIRS.values(), *BLOBS.values()][:4], start=1):
        pred[a & (pred == 0)] = lab
        ref[b & (ref == 0)] = lab + (lab == 4)  # label 4 only in pred, 5 only in ref
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(itk_mask(pred), itk_mask(ref))
    ours = M.label_metrics(pred, ref, spacing_mm=SPACING)
    assert sorted(ours) == [1, 2, 3, 4, 5]
    for lab in (1, 2, 3):
        # ITK computes the same integer counts; only float rounding differs.
        assert ours[lab].dsc == pytest.approx(f.GetDiceCoefficient(lab), rel=1e-12)
    assert ours[4].dsc == 0.0 and ours[4].empty == "ref" and ours[4].rv == math.inf
    assert ours[5].dsc == 0.0 and ours[5].empty == "pred" and ours[5].rv == 0.0


@pytest.mark.parametrize("name", [*PAIRS, *BLOBS])
def test_dice_rv_volume_match_counts(name):
    a, b = {**PAIRS, **BLOBS}[name]
    voxel_ml = np.prod(SPACING) / 1000.0
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(itk_mask(a), itk_mask(b))
    assert M.dice(a, b) == pytest.approx(f.GetDiceCoefficient(1), rel=1e-12)  # same counts
    assert M.relative_volume(a, b) == pytest.approx(a.sum() / b.sum(), rel=1e-12)
    assert M.volume_ml(a, spacing_mm=SPACING) == pytest.approx(a.sum() * voxel_ml, rel=1e-12)


# ----------------------------------------------------------------------------- surface distances


@pytest.mark.parametrize("name", list(PAIRS))
def test_hausdorff_matches_simpleitk(name):
    # ITK measures the HD between the voxel sets, which equals the surface HD for convex objects
    # (also when cut by the image border); for non-convex ones a ridge voxel inside an object
    # can be farther, so blobs are compared with medpy/scipy below instead.
    a, b = PAIRS[name]
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(itk_mask(a), itk_mask(b))
    assert M.hausdorff(a, b, spacing_mm=SPACING) == pytest.approx(f.GetHausdorffDistance(), rel=1e-9)


@pytest.mark.parametrize("name", [*PAIRS, *BLOBS])
def test_surface_distances_match_medpy_and_scipy(name):
    a, b = {**PAIRS, **BLOBS}[name]
    d_ab, d_ba = medpy_distances(a, b)
    ours = M.surface_metrics(a, b, spacing_mm=SPACING)
    # Directed means are medpy's asd (voxelspacing in array-axis order); float64 sums.
    assert ours.msd_pred_to_ref_mm == pytest.approx(medpy_binary.asd(a, b, voxelspacing=SPACING[::-1]), rel=1e-9)
    assert ours.msd_ref_to_pred_mm == pytest.approx(medpy_binary.asd(b, a, voxelspacing=SPACING[::-1]), rel=1e-9)
    # ASSD pools both directions (DESIGN.md); medpy.assd averages the two means instead.
    assert ours.assd_mm == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), rel=1e-9)
    assert ours.hd_mm == pytest.approx(medpy_binary.hd(a, b, voxelspacing=SPACING[::-1]), rel=1e-12)
    assert ours.hd95_mm == pytest.approx(scipy_hd95(a, b, SPACING[::-1]), rel=1e-12)


def test_assd_equals_medpy_assd_when_surfaces_have_equal_size():
    # An object translated by whole voxels, away from the border, has the same surface size.
    a = ellipsoid((12, 18, 24), (6, 8, 11))
    b = np.roll(a, (1, 2, 3), axis=(0, 1, 2))
    assert M.surface_mask(a).sum() == M.surface_mask(b).sum()
    assert M.assd(a, b, spacing_mm=SPACING) == pytest.approx(
        medpy_binary.assd(a, b, voxelspacing=SPACING[::-1]), rel=1e-9
    )


def test_surface_includes_the_image_border():
    a = np.ones((4, 5, 6), bool)  # fills the image: everything but the inner 2x3x4 block is surface
    assert M.surface_mask(a).sum() == a.size - 2 * 3 * 4
    # A mask filling the image against its own copy shifted out by one slice: HD is one z step.
    b = a.copy()
    b[0] = False
    assert M.hausdorff(a, b, spacing_mm=SPACING) == pytest.approx(SPACING[2], rel=1e-12)


def test_volumes_with_nonidentity_direction_give_same_distances():
    a, b = PAIRS["overlap"]
    va = make_volume(a.astype(np.uint8), SPACING, (5.0, -3.0, 7.0), ROTATED)
    vb = make_volume(b.astype(np.uint8), SPACING, (5.0, -3.0, 7.0), ROTATED)
    assert M.surface_metrics(va, vb) == M.surface_metrics(a, b, spacing_mm=SPACING)


def test_mismatched_grids_and_missing_spacing_raise():
    a, b = PAIRS["overlap"]
    with pytest.raises(TypeError, match="spacing_mm"):
        M.assd(a, b)
    va = make_volume(a.astype(np.uint8), SPACING)
    vb = make_volume(b.astype(np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="differs"):
        M.assd(va, vb)


# ----------------------------------------------------------------------------- empty masks


def test_empty_masks_have_defined_values_and_valid_json():
    a = PAIRS["overlap"][0]
    empty = np.zeros(SHAPE, bool)
    both = M.mask_metrics(empty, empty, spacing_mm=SPACING)
    assert (both.dsc, both.rv, both.assd_mm, both.hd_mm, both.hd95_mm, both.mcd_mm) == (1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    assert both.empty == "both"
    pred_empty = M.mask_metrics(empty, a, spacing_mm=SPACING)
    assert pred_empty.empty == "pred" and pred_empty.dsc == 0.0 and pred_empty.rv == 0.0
    assert pred_empty.assd_mm == pred_empty.hd_mm == pred_empty.hd95_mm == pred_empty.mcd_mm == math.inf
    ref_empty = M.mask_metrics(a, empty, spacing_mm=SPACING)
    assert ref_empty.empty == "ref" and ref_empty.rv == math.inf and ref_empty.hd95_mm == math.inf
    for m in (both, pred_empty, ref_empty):
        text = json.dumps(m.to_json(), allow_nan=False)  # strict JSON: inf became null
        assert json.loads(text)["empty"] == m.empty
    assert json.loads(json.dumps(pred_empty.to_json()))["assd_mm"] is None
    assert M.mcd(empty, empty, spacing_mm=SPACING) == 0.0
    assert M.mcd(a, empty, spacing_mm=SPACING) == math.inf
    with pytest.raises(ValueError, match="empty"):
        M.mass_centre_mm(empty, spacing_mm=SPACING)


# ----------------------------------------------------------------------------- label maps


def test_label_metrics_per_label_equal_binary_metrics_on_full_image():
    # Each label is evaluated in its padded bounding box: it must equal the full-image result,
    # including a label that touches the border.
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    pairs = [PAIRS["border"], PAIRS["disjoint"], BLOBS["blobs2"]]
    for lab, (a, b) in zip((1, 3, 7), pairs):
        pred[a & (pred == 0)] = lab
        ref[b & (ref == 0)] = lab
    vp = make_volume(pred, SPACING, (10.0, 20.0, -5.0), ROTATED)
    vr = make_volume(ref, SPACING, (10.0, 20.0, -5.0), ROTATED)
    ours = M.label_metrics(vp, vr)
    for lab in (1, 3, 7):
        full = M.mask_metrics(vp.with_array(pred == lab), vr.with_array(ref == lab))
        assert dataclasses_equal(ours[lab], full, label=lab)
        d_ab, d_ba = medpy_distances(pred == lab, ref == lab)
        assert ours[lab].assd_mm == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), rel=1e-9)


def dataclasses_equal(x, y, label):
    def same(a, b):  # text flags compare exactly; pytest >= 9.2 refuses approx() on strings
        return a == b if isinstance(b, str) else a == pytest.approx(b, rel=1e-12)

    return x.label == label and all(same(getattr(x, f), getattr(y, f)) for f in x.__dataclass_fields__ if f != "label")


def test_float_label_maps_with_fractions_are_rejected():
    with pytest.raises(ValueError, match="label map"):
        M.label_metrics(np.full(SHAPE, 0.5), np.zeros(SHAPE), spacing_mm=SPACING)


# ----------------------------------------------------------------------------- mass centres


def test_mass_centre_matches_simpleitk_centroid_with_direction():
    a = blob(5).astype(np.uint8)
    vol = make_volume(a, SPACING, (-40.0, 12.5, 300.0), ROTATED)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(to_sitk(vol))
    # ITK's centroid is in world coordinates (spacing, origin, direction); float64 sums.
    np.testing.assert_allclose(M.mass_centre_mm(vol), stats.GetCentroid(1), atol=1e-9)


def test_mcd_of_shifted_sphere_is_the_shift():
    # A whole-voxel shift of 3 along x moves the centre exactly 3 * 0.8 mm, whatever the direction.
    a = ellipsoid((13, 18, 25), (6, 6, 6))
    b = np.roll(a, 3, axis=2)
    va = make_volume(a.astype(np.uint8), SPACING, (1.0, 2.0, 3.0), ROTATED)
    vb = va.with_array(b.astype(np.uint8))
    assert M.mcd(va, vb) == pytest.approx(3 * SPACING[0], rel=1e-12)


@pytest.mark.parametrize("d_mm", [0.0, 4.0, 9.5])
def test_mcd_across_grids_is_world_distance(d_mm):
    # The same world sphere voxelised on a rotated grid and on an axis-aligned grid of other
    # spacing, the second sphere moved by d_mm along a world axis: MCD = d_mm up to the
    # voxelisation error of the centre (< 0.15 mm for a 9 mm sphere on <= 1.5 mm voxels).
    centre = np.array([-5.0, 10.0, 20.0])
    shift = np.array([0.6, -0.48, 0.64]) * d_mm  # unit vector times d_mm

    def sphere_on(grid_vol, c):
        pts = np.asarray(world_grid(grid_vol), np.float64)
        return grid_vol.with_array((np.linalg.norm(pts - c, axis=-1) <= 9.0).astype(np.uint8))

    g1 = make_volume(np.zeros((24, 22, 26), np.uint8), (1.1, 1.2, 1.5), (-20.0, -8.0, 2.0), np.eye(3))
    g2 = make_volume(np.zeros((28, 30, 32), np.uint8), (1.0, 1.3, 1.4), (-5.0, 10.0, 20.0) - ROTATED @ [16, 19, 17], ROTATED)
    a, b = sphere_on(g1, centre), sphere_on(g2, centre + shift)
    assert M.mcd(a, b) == pytest.approx(d_mm, abs=0.15)


# ----------------------------------------------------------------------------- RMSD / RRMSD


def test_rmsd_combines_liver_msd_and_landmark_mcds():
    liver_p, liver_r = PAIRS["overlap"]
    pred = liver_p.astype(np.uint8)
    ref = liver_r.astype(np.uint8)
    lm = ellipsoid((5, 5, 5), (3, 3, 3))
    pred[lm] = 2
    ref[np.roll(lm, 2, axis=2)] = 2  # landmark 2 shifted 2 voxels along x: MCD 1.6 mm
    pred[np.roll(lm, 10, axis=1)] = 3
    ref[np.roll(lm, (10, 1), axis=(1, 0))] = 3  # landmark 3 shifted one z voxel: MCD 2.5 mm
    pred[np.roll(lm, 14, axis=0)] = 4  # landmark 4 only in pred
    d_ab, d_ba = medpy_distances(pred == 1, ref == 1)
    msd = np.concatenate([d_ab, d_ba]).mean()
    res = M.rmsd(pred, ref, spacing_mm=SPACING)
    assert res.msd_mm == pytest.approx(msd, rel=1e-9)
    assert res.mcd_mm == {2: pytest.approx(1.6, rel=1e-9), 3: pytest.approx(2.5, rel=1e-9)}
    assert res.missing_in_ref == (4,) and res.missing_in_pred == ()
    assert res.rmsd_mm == pytest.approx(math.sqrt((msd**2 + 1.6**2 + 2.5**2) / 3), rel=1e-9)
    json.dumps(res.to_json(), allow_nan=False)


def test_rmsd_with_missing_liver_is_inf_and_rrmsd_is_root_mean_square():
    ref = PAIRS["overlap"][1].astype(np.uint8)
    assert M.rmsd(np.zeros(SHAPE, np.uint8), ref, spacing_mm=SPACING).rmsd_mm == math.inf
    assert M.rrmsd([3.0, 4.0]) == pytest.approx(math.sqrt(12.5), rel=1e-12)
    assert M.rrmsd([M.rmsd(ref, ref, spacing_mm=SPACING), 2.0]) == pytest.approx(math.sqrt(2.0), rel=1e-12)
    with pytest.raises(ValueError):
        M.rrmsd([])


def test_rmsd_liver_is_the_outer_contour_with_landmarks_drawn_over_it():
    # Lesion 2 inside the liver moves 2 voxels along x; lesion 3 straddles the liver surface;
    # clip 9 lies outside, not touching. The livers (with their lesions) are identical, so the
    # MSD is 0 and only the moved lesion counts: RMSD = sqrt(1.6^2 / (1 + 3)).
    liver = ellipsoid((13, 18, 25), (9, 12, 15))
    lesion = ellipsoid((13, 18, 25), (3, 3, 3))
    straddle = ellipsoid((13 + 8.5, 18, 25), (3, 3, 4))
    clip = ellipsoid((2, 2, 2), (1.5, 1.5, 2.6))
    ref = liver.astype(np.uint8)
    ref[lesion], ref[straddle], ref[clip] = 2, 3, 9
    pred = liver.astype(np.uint8)
    pred[np.roll(lesion, 2, axis=2)], pred[straddle], pred[clip] = 2, 3, 9
    assert (straddle & ~liver).any() and not (ndimage.binary_dilation(clip, np.ones((3, 3, 3))) & liver).any()
    np.testing.assert_array_equal(M.liver_mask(ref), liver | straddle)
    res = M.rmsd(pred, ref, spacing_mm=SPACING)
    assert res.msd_mm == 0.0
    assert res.mcd_mm == {2: pytest.approx(1.6, rel=1e-9), 3: 0.0, 9: 0.0}
    assert res.rmsd_mm == pytest.approx(1.6 / 2, rel=1e-9)
    # Label 1 alone would have lesion-shaped inner surfaces that do not match.
    assert M.assd(pred == 1, ref == 1, spacing_mm=SPACING) > 0.05

"""The ground-truth registration of phantom studies reproduces labels across sessions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sirtjax.phantom import PhantomConfig, generate_study, true_mapping
from sirtjax.volume import index_to_world


@pytest.fixture(scope="module")
def study():
    # 4.5 mm CT voxels (the small preset's 6 mm leaves the staircase error of a warped mask at
    # Dice ~0.97); clip regions of 7 mm cover several voxels so their centroids are meaningful
    return generate_study(2, PhantomConfig(spacing_scale=1.5, clip_label_radius_mm=7.0))


def _world(vol) -> np.ndarray:
    nz, ny, nx = vol.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(np.float64)
    return (idx @ index_to_world(vol).T)[:, :3]


def _warp_mask(moving, points_mm: np.ndarray, shape) -> np.ndarray:
    """Warp a binary mask: Gaussian-smoothed indicator (sigma half a voxel), trilinear, > 0.5.

    Smoothing recovers the sub-voxel boundary position from the staircase (what ITK's
    LabelImageGaussianInterpolator does); nearest neighbour would cost ~h/4 of boundary error.
    """
    soft = ndimage.gaussian_filter(np.asarray(moving.array, np.float32), 0.5)
    ijk = (np.linalg.inv(index_to_world(moving)) @ np.c_[points_mm, np.ones(len(points_mm))].T)[:3]
    return (ndimage.map_coordinates(soft, ijk[::-1], order=1, mode="constant") > 0.5).reshape(shape)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


@pytest.mark.parametrize("fixed,moving", [("maa_ct", "diag_ct"), ("diag_ct", "diag_mr"), ("y90_ct", "maa_ct")])
def test_warped_moving_liver_matches_fixed_liver(study, fixed, moving):
    f_liver = study.images[f"{fixed}_liver"]
    mapping = true_mapping(study.truth, fixed=fixed, moving=moving)
    pts = mapping(_world(f_liver))
    warped = _warp_mask(study.images[f"{moving}_liver"], pts, f_liver.shape)
    fixed_mask = np.asarray(f_liver.array) > 0
    # a crop may cut the liver in one session: compare where both grids see the liver
    m_vol = study.images[f"{moving}_liver"]
    ijk = (np.linalg.inv(index_to_world(m_vol)) @ np.c_[pts, np.ones(len(pts))].T)[:3].T
    seen = np.all((ijk > 0.5) & (ijk < np.asarray(m_vol.size_xyz) - 1.5), axis=1).reshape(f_liver.shape)
    # the residual is the resampling of a staircase boundary (see _warp_mask), ~0.98 at 4.5 mm
    assert _dice(fixed_mask & seen, warped & seen) > 0.97


@pytest.mark.parametrize("fixed,moving", [("maa_ct", "diag_ct"), ("diag_mr", "y90_ct")])
def test_landmark_centroids_map_within_one_voxel(study, fixed, moving):
    mapping = true_mapping(study.truth, fixed=fixed, moving=moving)
    f_lab, m_lab = study.images[f"{fixed}_labels"], study.images[f"{moving}_labels"]
    common = set(study.truth["images"][fixed]["landmark_ids"]) & set(study.truth["images"][moving]["landmark_ids"])
    assert common
    voxel = max(np.max(f_lab.spacing_mm), np.max(m_lab.spacing_mm))
    checked = 0
    for ident in sorted(common):
        centroids = []
        for vol in (f_lab, m_lab):
            zyx = np.argwhere(np.asarray(vol.array) == ident)
            if np.any(zyx == 0) or np.any(zyx == np.asarray(vol.shape) - 1):
                break  # cut by the field of view: its centroid moves with the cut
            centroids.append((index_to_world(vol) @ np.r_[zyx[:, ::-1].mean(0), 1.0])[:3])
        else:
            moved = mapping(centroids[0][None])[0]
            assert np.linalg.norm(moved - centroids[1]) < voxel, ident
            checked += 1
    assert checked >= 2


def test_mapping_is_exact_on_landmark_centres_and_invertible(study):
    truth = study.truth
    forward = true_mapping(truth, "maa_ct", "diag_mr")
    backward = true_mapping(truth, "diag_mr", "maa")
    centres = np.array([lm["world_mm"]["maa"] for lm in truth["landmarks"]])
    expected = np.array([lm["world_mm"]["diag_mr"] for lm in truth["landmarks"]])
    # float32 maps on coordinates of ~300 mm: 1e-2 mm covers rounding, far below any voxel
    np.testing.assert_allclose(forward(centres), expected, atol=1e-2)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-150, 150, (500, 3))
    np.testing.assert_allclose(backward(forward(pts)), pts, atol=1e-2)
    moved = forward(pts)
    assert np.all(np.linalg.norm(moved - pts, axis=1) < 200.0)  # a posture change, not a scramble
    with pytest.raises(KeyError):
        true_mapping(truth, "maa_ct", "ct")


def test_true_displacement_warps_like_simpleitk(study):
    import SimpleITK as sitk

    from sirtjax.io import to_sitk
    from sirtjax.phantom import true_displacement

    fixed, moving = study.images["maa_ct_liver"], study.images["diag_ct_liver"]
    field = true_displacement(study.truth, fixed, "maa_ct", "diag_ct")
    assert field.array.shape == fixed.shape + (3,)
    soft = moving.with_array(ndimage.gaussian_filter(np.asarray(moving.array, np.float32), 0.5))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(to_sitk(field), sitk.sitkVectorFloat64))
    warped = sitk.Resample(to_sitk(soft), to_sitk(fixed), transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    itk_mask = sitk.GetArrayFromImage(warped) > 0.5
    ours = _warp_mask(moving, _world(fixed) + field.array.reshape(-1, 3), fixed.shape)
    # same smoothed mask, same linear interpolation: only float rounding at the 0.5 level differs
    assert np.mean(itk_mask != ours) < 1e-3
    assert _dice(itk_mask, np.asarray(fixed.array) > 0) > 0.97

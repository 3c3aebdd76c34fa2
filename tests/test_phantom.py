"""Phantom studies: determinism, geometry on disk, label consistency, physical plausibility."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sirtjax.phantom import IMAGE_FILES, PhantomConfig, generate_study, read_study, write_study
from sirtjax.phantom.config import ANATOMICAL_IMAGES


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "seed0"
    write_study(generate_study(0, PhantomConfig.small()), folder)
    return folder


@pytest.fixture(scope="module")
def study(small_folder):
    return read_study(small_folder)


def test_same_seed_gives_same_bytes_and_other_seeds_other_anatomy(small_folder, tmp_path):
    again = write_study(generate_study(0, PhantomConfig.small()), tmp_path / "again")
    names = sorted(p.name for p in small_folder.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (small_folder / name).read_bytes() == (again / name).read_bytes(), name
    other = generate_study(1, PhantomConfig.small())
    first = read_study(small_folder)
    assert other.truth["anatomy"]["liver"] != first.truth["anatomy"]["liver"]
    assert abs(other.truth["liver_volume_ml"] - first.truth["liver_volume_ml"]) > 1.0


def test_files_match_design_names_and_read_back(study, small_folder):
    expected = {f"{stem}.nii.gz" for stem in IMAGE_FILES} | {"truth.json", "study.json"}
    assert expected == {p.name for p in small_folder.iterdir()}
    manifest = study.manifest
    for x in ANATOMICAL_IMAGES:
        for kind, fname in manifest["masks"][x].items():
            assert (small_folder / fname).is_file() and fname == f"{x}_{kind}.nii.gz"
    assert manifest["patient"]["height_cm"] > 100 and manifest["patient"]["weight_kg"] > 30
    assert manifest["activities"]["y90_injected_gbq"] > 0


@pytest.mark.parametrize("stem", IMAGE_FILES)
def test_geometry_on_disk_with_simpleitk_and_nibabel(study, small_folder, stem):
    base = stem if stem in study.truth["images"] else stem.rsplit("_", 1)[0]
    geom = study.truth["images"][base]
    spacing, origin = np.asarray(geom["spacing_mm"]), np.asarray(geom["origin_mm"])
    direction = np.asarray(geom["direction"])
    img = sitk.ReadImage(str(small_folder / f"{stem}.nii.gz"))
    # NIfTI stores the affine in float32: 1e-4 mm on coordinates of a few hundred mm
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-4)
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-3)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), direction, atol=1e-5)
    assert img.GetSize() == tuple(geom["size_xyz"])
    affine = nib.load(str(small_folder / f"{stem}.nii.gz")).affine
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    np.testing.assert_allclose(lps[:, :3], direction * spacing, atol=1e-4)
    np.testing.assert_allclose(lps[:, 3], origin, atol=1e-3)


def test_directions_and_grids_differ_between_sessions(study):
    images = study.truth["images"]
    assert np.allclose(images["maa_ct"]["direction"], np.diag([-1.0, -1.0, 1.0]))
    mr = np.asarray(images["diag_mr"]["direction"])
    assert not np.allclose(np.abs(mr), np.eye(3), atol=1e-3)  # oblique
    assert images["maa_spect"]["spacing_mm"][0] == pytest.approx(2 * 4.42)
    maa_z = images["maa_ct"]["size_xyz"][2] * images["maa_ct"]["spacing_mm"][2]
    diag_z = images["diag_ct"]["size_xyz"][2] * images["diag_ct"]["spacing_mm"][2]
    assert maa_z < diag_z


def test_labels_are_consistent_across_images(study):
    truth = study.truth
    all_ids = {lm["id"] for lm in truth["landmarks"]}
    lesion_ids = {les["id"] for les in truth["lesions"]}
    assert len(lesion_ids) >= 1 and all_ids > lesion_ids
    for x in ANATOMICAL_IMAGES:
        labels = np.asarray(study.images[f"{x}_labels"].array)
        liver = np.asarray(study.images[f"{x}_liver"].array)
        lesions = np.asarray(study.images[f"{x}_lesions"].array)
        lungs = np.asarray(study.images[f"{x}_lungs"].array)
        ids = set(np.unique(labels).tolist()) - {0, 1}
        assert ids == set(truth["images"][x]["landmark_ids"])
        if truth["images"][x]["crop"] is None:
            assert ids == all_ids, x
        else:
            assert ids <= all_ids
        assert set(np.unique(liver).tolist()) == {0, 1} and set(np.unique(lungs).tolist()) <= {0, 1}
        assert not np.any(liver & lungs)
        # lesion instances are the landmark id - 1, at exactly the lesion voxels of the label map
        is_lesion = np.isin(labels, sorted(lesion_ids))
        np.testing.assert_array_equal(lesions > 0, is_lesion)
        np.testing.assert_array_equal(lesions[is_lesion], labels[is_lesion] - 1)
        # the liver label map is the liver mask where no landmark is
        np.testing.assert_array_equal(labels == 1, (liver == 1) & (labels < 2))
        assert np.all(liver[is_lesion] == 1)  # lesions lie in the liver


def _core(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=1) & (labels < 2)


def test_ct_and_mr_intensities_are_plausible(study):
    hu = study.truth["intensities"]
    for name, modality, noise in (("maa_ct", "nc_ct", 25.0), ("diag_ct", "ce_ct", 12.0), ("y90_ct", "nc_ct", 25.0)):
        ct = np.asarray(study.images[name].array, np.float64)
        liver = _core(np.asarray(study.images[f"{name}_liver"].array) > 0, np.asarray(study.images[f"{name}_labels"].array))
        # the liver mean holds intrahepatic vessels and partial volume: within 15 HU of parenchyma
        assert abs(np.median(ct[liver]) - hu[modality]["LIVER"]) < 15.0, name
        assert 0.5 * noise < np.std(ct[liver]) < 3.0 * noise + 20.0, name
        lungs = ndimage.binary_erosion(np.asarray(study.images[f"{name}_lungs"].array) > 0)
        if lungs.sum() > 20:
            assert np.median(ct[lungs]) < -600.0, name
        assert np.median(ct[0]) < -900.0 or np.median(ct[:, 0]) < -900.0  # air around the body
        assert ct.min() >= -1024 and ct.max() <= 3071
    assert hu["ce_ct"]["LIVER"] > hu["nc_ct"]["LIVER"] + 30.0  # portal-venous enhancement
    mr = np.asarray(study.images["diag_mr"].array, np.float64)
    liver = _core(np.asarray(study.images["diag_mr_liver"].array) > 0, np.asarray(study.images["diag_mr_labels"].array))
    # the bias field spans ±25 %: the liver median stays within 40 % of its nominal T1 signal
    assert abs(np.median(mr[liver]) / hu["mr_t1"]["LIVER"] - 1.0) < 0.4
    assert mr.min() >= 0


def test_metal_clips_are_bright_on_ct_and_dark_on_mr(study):
    truth = study.truth
    clips = [lm for lm in truth["landmarks"] if lm["kind"] == "clip"]
    assert clips
    for name, bright in (("diag_ct", True), ("diag_mr", False)):
        vol = study.images[name]
        labels = np.asarray(study.images[f"{name}_labels"].array)
        arr = np.asarray(vol.array, np.float64)
        for clip in clips:
            region = labels == clip["id"]
            if bright:
                assert arr[region].max() > 400.0  # metal on a 6 mm grid: diluted but far above tissue
            else:
                liver = arr[_core(np.asarray(study.images[f"{name}_liver"].array) > 0, labels)]
                assert arr[region].min() < 0.5 * np.median(liver)


def test_spect_counts_sum_to_expected(study):
    em = study.truth["emission_maa"]
    counts = np.asarray(study.images["maa_spect"].array, np.float64)
    assert np.issubdtype(study.images["maa_spect"].array.dtype, np.integer) and counts.min() >= 0
    n = em["expected_counts_in_image"]
    assert abs(counts.sum() - n) < 5 * np.sqrt(n)  # Poisson: 5 standard deviations
    assert n == pytest.approx(em["total_counts"], rel=0.01)  # the FOV holds all but the blur tails


def test_pet_integrates_to_the_injected_activity(study):
    em = study.truth["emission_y90"]
    pet = study.images["y90_pet"]
    voxel_ml = float(np.prod(pet.spacing_mm)) / 1000.0
    total_bq = float(np.asarray(pet.array, np.float64).sum()) * voxel_ml
    counts_per_bq = study.truth["config"]["pet_counts_per_gbq"] / 1e9
    n = em["expected_bq_in_image"] * counts_per_bq
    assert abs(total_bq - em["expected_bq_in_image"]) < 5 * np.sqrt(n) / counts_per_bq  # Poisson
    assert em["expected_bq_in_image"] == pytest.approx(study.truth["activities"]["y90_gbq"] * 1e9, rel=0.01)


def test_lung_shunt_fraction_within_poisson_tolerance():
    # SPECT on the MAA CT grid, no blur: the CT labels are then exactly the emission compartments
    base = PhantomConfig.small()
    grid = dataclasses.replace(base.maa_ct, crop_probability=0.0)
    config = dataclasses.replace(base, maa_ct=grid, maa_spect=grid, spect_fwhm_mm=0.0)
    study = generate_study(5, config)
    counts = np.asarray(study.images["maa_spect"].array, np.float64)
    lung = counts[np.asarray(study.images["maa_ct_lungs"].array) > 0].sum()
    liver = counts[np.asarray(study.images["maa_ct_liver"].array) > 0].sum()
    lsf = study.truth["lung_shunt_fraction"]["maa"]
    n = lung + liver
    measured = lung / n
    assert abs(measured - lsf) < 5 * np.sqrt(lsf * (1 - lsf) / n)  # binomial split of the counts
    bg = study.truth["config"]["body_background_fraction"]
    expected = study.truth["emission_maa"]["total_counts"] * (1 - bg)
    assert abs(n - expected) < 5 * np.sqrt(expected)


def test_truth_records_volumes_and_parameters(study):
    truth = study.truth
    assert 800.0 < truth["liver_volume_ml"] < 3000.0
    for les in truth["lesions"]:
        # a lobulated ellipsoid of the recorded mean diameter: volume within a factor 2 of the sphere's
        sphere_ml = np.pi / 6 * les["diameter_mm"] ** 3 / 1000.0
        assert 0.5 * sphere_ml < les["volume_ml"] < 2.0 * sphere_ml
        assert les["tn_ratio_maa"] > 1.0
    assert set(truth["postures"]) == {"maa", "diag_ct", "diag_mr", "y90"}
    assert PhantomConfig.from_json(truth["config"]) == PhantomConfig.small()
    assert 0.0 < truth["lung_shunt_fraction"]["maa"] < 0.3


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        generate_study(-1, PhantomConfig.small())


@pytest.mark.parametrize(
    "overrides",
    [
        {"spacing_scale": 0.0}, {"n_lesions": (3, 1)}, {"spect_fwhm_mm": -1.0}, {"lung_shunt_fraction": (0.1, 1.0)}, {"necrotic_uptake": 2.0},
        {"liver_scale": (1.2, 1.0)}, {"liver_ap_scale": 0.0}, {"liver_caudal_scale": -1.0}, {"bmi": (14.0, 20.0)}, {"bmi": (30.0, 25.0)}, {"diag_ct_phase": "venous"}, {"diag_mr_sequence": "dwi"},
    ],
)
def test_config_rejects_absurd_values(overrides):
    with pytest.raises(ValueError):
        PhantomConfig(**overrides)
    with pytest.raises(ValueError, match="direction"):
        dataclasses.replace(PhantomConfig().maa_ct, direction="sideways")


def test_study_without_landmarks_and_with_a_full_liver():
    empty = generate_study(3, PhantomConfig(spacing_scale=3.0, n_lesions=(0, 0), n_clips=(0, 0)))
    assert empty.truth["lesions"] == [] and empty.truth["landmarks"] == []
    for x in ANATOMICAL_IMAGES:
        assert set(np.unique(empty.images[f"{x}_labels"].array).tolist()) == {0, 1}
        assert not np.any(empty.images[f"{x}_lesions"].array)
    crowded = generate_study(3, PhantomConfig(spacing_scale=3.0, n_lesions=(6, 6), lesion_diameter_mm=(50.0, 60.0)))
    placed = crowded.truth["lesions"]
    assert crowded.truth["anatomy"]["lesions_drawn"] == 6 and 1 <= len(placed) <= 6
    assert all(les["diameter_mm"] > 0.87 * 50.0 for les in placed)  # radii jitter by up to 13 %


def test_liver_size_options_scale_the_liver_and_leave_the_rest_of_the_patient():
    volumes = {}
    for scale in (0.8, 1.0, 1.25):
        t = generate_study(5, PhantomConfig(spacing_scale=2.0, liver_scale=(scale, scale))).truth
        volumes[scale] = t["liver_volume_ml"]
        assert t["patient"]["height_cm"] == pytest.approx(generate_study(5, PhantomConfig(spacing_scale=2.0)).truth["patient"]["height_cm"])
    # the cube of the scale for a small liver (0.51); the diaphragm and the cavity clip a large one (1.27, not 1.95)
    assert volumes[0.8] < 0.75 * volumes[1.0] and volumes[1.25] > 1.2 * volumes[1.0]


def test_caudal_scale_grows_the_liver_downwards():
    """Hepatomegaly (liver_caudal_scale 1.5): a larger liver whose top stays under the dome and whose lowest point moves down."""
    from sirtjax.phantom.study import canonical_patient

    def liver_ml_and_z_range_mm(config):
        c = canonical_patient(5, config)
        inside = c.liver_sdf.array < 0
        zs = (np.nonzero(inside.any(axis=(1, 2)))[0] + c.liver_sdf.start[0]) * c.spacing_mm
        return inside.sum() * c.spacing_mm**3 / 1000.0, zs.min(), zs.max()

    ml, low, top = liver_ml_and_z_range_mm(PhantomConfig(spacing_scale=2.0, liver_scale=(1.2, 1.2)))
    big_ml, big_low, big_top = liver_ml_and_z_range_mm(PhantomConfig(spacing_scale=2.0, liver_scale=(1.2, 1.2), liver_caudal_scale=1.5))
    assert big_ml > 1.3 * ml and big_low < low - 60.0 and abs(big_top - top) <= 8.0


def test_arms_down_add_arms_beside_the_trunk_and_keep_the_patient():
    """arms_down: fat, muscle and a humerus on both sides outside the trunk, in a wide CT; the seed's liver is unchanged."""
    plain = generate_study(4, PhantomConfig(spacing_scale=2.0))
    wide = dataclasses.replace(PhantomConfig().maa_ct, fov_mm=(560.0, 336.0, 240.0), crop_probability=0.0)
    arms = generate_study(4, PhantomConfig(spacing_scale=2.0, arms_down=True, maa_ct=wide))
    assert arms.truth["liver_volume_ml"] == plain.truth["liver_volume_ml"]
    assert {k: v for k, v in arms.truth["anatomy"].items() if k != "arms"} == plain.truth["anatomy"]
    half_width = plain.truth["anatomy"]["body"]["half_widths"][0]
    ct = arms.images["maa_ct"]
    idx = np.argwhere(np.asarray(ct.array) > -200)  # soft tissue and bone
    xyz = np.asarray(ct.origin_mm) + (idx[:, ::-1] * np.asarray(ct.spacing_mm)) @ np.asarray(ct.direction).T
    lateral = np.abs(xyz[:, 0] - np.median(xyz[:, 0])) > half_width + 30.0  # beyond the skin and any posture shift
    assert lateral.sum() > 1000 and (xyz[lateral, 0] > 0).any() and (xyz[lateral, 0] < 0).any()
    bone = np.asarray(ct.array)[tuple(idx[lateral].T)] > 500
    assert bone.any()


def test_body_mass_range_sets_the_habitus_and_the_grid_holds_the_widest():
    """bmi (15-45): thin and obese bodies; an obese patient with the arms down still ends inside the canonical grid."""
    from sirtjax.phantom.raster import Tissue
    from sirtjax.phantom.study import canonical_patient

    thin, obese = (generate_study(6, PhantomConfig(spacing_scale=3.0, bmi=b)).truth["anatomy"]["body"] for b in ((16.0, 16.0), (45.0, 45.0)))
    assert thin["half_widths"][0] < 140.0 < 200.0 < obese["half_widths"][0] and thin["fat_mm"] < 8.0 < 40.0 < obese["fat_mm"]
    tissue = canonical_patient(6, PhantomConfig(spacing_scale=3.0, bmi=(45.0, 45.0), arms_down=True)).tissue
    for edge in (tissue[..., 0], tissue[..., -1], tissue[:, 0], tissue[:, -1]):  # x and y borders: air
        assert np.all(edge == Tissue.AIR)


def test_phases_and_sequences_render_their_contrast():
    """Arterial CT: aorta far above the liver; delayed: between non-contrast and portal; T2: fluid
    bright, liver darker than spleen; opposed-phase: fat darker than in-phase T1, the liver not."""
    base = generate_study(7, PhantomConfig.small())
    hu = base.truth["intensities"]
    assert hu["art_ct"]["AORTA"] > hu["art_ct"]["LIVER"] + 150 and hu["art_ct"]["LIVER"] < hu["ce_ct"]["LIVER"]
    assert hu["nc_ct"]["LIVER"] < hu["del_ct"]["LIVER"] < hu["ce_ct"]["LIVER"]
    assert hu["mr_t2"]["GALLBLADDER"] > 3 * hu["mr_t2"]["LIVER"] and hu["mr_t2"]["SPLEEN"] > hu["mr_t2"]["LIVER"]
    seen = {}
    for key, opts, image in (("art", {"diag_ct_phase": "arterial"}, "diag_ct"), ("opp", {"diag_mr_sequence": "opposed"}, "diag_mr"), ("t1", {}, "diag_mr")):
        st = generate_study(7, PhantomConfig.small(**opts))
        np.testing.assert_array_equal(st.images[f"{image}_liver"].array, base.images[f"{image}_liver"].array)  # same patient, same grid
        seen[key] = np.asarray(st.images[image].array, np.float64)
    liver = np.asarray(base.images["diag_ct_liver"].array) > 0
    assert abs(np.median(seen["art"][liver]) - hu["art_ct"]["LIVER"]) < 20
    fat = np.asarray(base.images["diag_mr"].array) > 0.85 * hu["mr_t1"]["FAT"]  # bright on T1: fat
    mr_liver = np.asarray(base.images["diag_mr_liver"].array) > 0
    # opposed phase |water - fat|: fat (90 % fat signal) keeps 0.8 of its in-phase signal, the fat-free liver all of it
    assert 0.7 < np.median(seen["opp"][fat]) / np.median(seen["t1"][fat]) < 0.9
    assert abs(np.median(seen["opp"][mr_liver]) / np.median(seen["t1"][mr_liver]) - 1) < 0.05


def test_montage_has_a_legend_for_its_contour_colours(study, tmp_path):
    from matplotlib.colors import to_hex

    from sirtjax.phantom.montage import CONTOURS, montage_figure, write_montage

    fig = montage_figure(study.images)
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    for name, colour in CONTOURS:  # every contour colour drawn in the panels is named
        assert to_hex(entries[name].get_color()) == to_hex(colour)
    assert any("PET" in t for t in entries)
    png = write_montage(study.images, tmp_path / "montage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mr_like_maps_hu_to_t1_like_contrast_on_the_ct_grid():
    """Fat brightest, liver above muscle, bone and air dark; the grid is the CT's; the noise is Rician (sigma 15)."""
    from sirtjax.phantom.mr_like import HU_POINTS, T1_LIKE_POINTS, mr_like
    from sirtjax.volume import make_volume

    tissues_hu = {"air": -1000.0, "fat": -100.0, "muscle": 45.0, "liver": 60.0, "bone": 700.0}
    hu = np.repeat(np.array(list(tissues_hu.values()), np.float32), 40 * 30 * 20).reshape(5 * 40, 30, 20)
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    ct = make_volume(hu, (0.8, 1.1, 2.5), (10.0, -20.0, 5.0), direction)
    mr = mr_like(ct, np.random.default_rng(0))
    assert mr.shape == ct.shape and np.allclose(mr.spacing_mm, ct.spacing_mm) and np.allclose(mr.direction, ct.direction)
    means = {name: float(np.asarray(mr.array)[i * 40 : (i + 1) * 40].mean()) for i, name in enumerate(tissues_hu)}
    assert means["fat"] > means["liver"] > means["muscle"] > means["bone"] > means["air"]
    liver_expected = np.interp(60.0, HU_POINTS, T1_LIKE_POINTS)
    assert means["liver"] == pytest.approx(np.hypot(liver_expected, 15.0), abs=1.0)  # Rician: sqrt(A^2 + sigma^2) for A >> sigma
    assert means["air"] == pytest.approx(15.0 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh mean where the signal is 0


def test_random_contrast_draws_a_map_per_generator_with_air_dark():
    """Each generator gives its own piecewise-linear map through HU_POINTS (reproducible from its seed), air stays
    below 5 % of the range, tissue order changes between draws, and the grid is the CT's."""
    from sirtjax.phantom.mr_like import HU_POINTS, RANDOM_MAX, random_contrast
    from sirtjax.volume import make_volume

    hu = np.repeat(np.array([-1000.0, -100.0, 60.0], np.float32), 40 * 30 * 20).reshape(3 * 40, 30, 20)
    ct = make_volume(hu, (0.8, 1.1, 2.5), (10.0, -20.0, 5.0), np.diag([1.0, -1.0, 1.0]))
    fat_brighter = []
    for seed in range(20):
        img = random_contrast(ct, np.random.default_rng([seed, 1]))
        assert img.shape == ct.shape and np.allclose(img.direction, ct.direction)
        np.testing.assert_array_equal(img.array, random_contrast(ct, np.random.default_rng([seed, 1])).array)
        rng = np.random.default_rng([seed, 1])  # the same draws as random_contrast's
        values = rng.uniform(0.0, RANDOM_MAX, len(HU_POINTS))
        values[:2] = rng.uniform(0.0, 0.05 * RANDOM_MAX, 2)
        a = np.asarray(img.array)
        assert a[:40].mean() < 0.05 * RANDOM_MAX + 3 * 0.03 * RANDOM_MAX  # air: its knot plus Rician noise
        liver_expected = np.interp(60.0, HU_POINTS, values)
        assert a[80:].mean() == pytest.approx(np.hypot(liver_expected, 0.03 * values.max()), abs=0.02 * RANDOM_MAX)
        fat_brighter.append(a[40:80].mean() > a[80:].mean())
    assert 3 < sum(fat_brighter) < 17

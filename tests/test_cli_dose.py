"""``sirtjax dose`` and ``sirtjax prescribe`` end to end: files, geometry, report, one-line errors."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.cli import main
from sirtjax.io import write_volume
from sirtjax.volume import make_volume

SPACING = (4.42, 4.42, 3.0)
ORIGIN = (12.0, -40.0, 7.5)
DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated 90 degrees about z


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """SPECT counts, liver, lesions (on a finer grid), lungs; anisotropic, rotated grid."""
    d = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    shape = (24, 20, 22)
    liver = np.zeros(shape, np.uint8)
    liver[4:16, 4:16, 4:18] = 1
    lungs = np.zeros(shape, np.uint8)
    lungs[18:23, 4:16, 4:18] = 1
    lesion_vox = np.zeros(shape, np.uint8)
    lesion_vox[6:10, 6:9, 6:10] = 1
    lesion_vox[11:14, 10:14, 12:16] = 2
    counts = rng.poisson(50, shape).astype(np.float32) * (liver + 3 * (lesion_vox > 0)) + rng.poisson(5, shape) * lungs
    grid = dict(spacing_mm=SPACING, origin_mm=ORIGIN, direction=DIRECTION)
    write_volume(make_volume(counts, **grid), d / "spect.nii.gz")
    write_volume(make_volume(liver, **grid), d / "liver.nii.gz")
    write_volume(make_volume(lungs, **grid), d / "lungs.nii.gz")
    # lesions on a grid twice as fine in x and y, same first-voxel corner: resampled by the CLI
    fine = np.repeat(np.repeat(lesion_vox, 2, 1), 2, 2)
    fine_origin = np.asarray(ORIGIN) + DIRECTION @ (np.array([-0.25, -0.25, 0.0]) * np.asarray(SPACING) * 2)
    write_volume(make_volume(fine, (2.21, 2.21, 3.0), fine_origin * 1.0, DIRECTION), d / "lesions_fine.nii.gz")
    write_volume(make_volume(np.zeros(shape, np.uint8), **grid), d / "empty.nii.gz")
    far = make_volume(liver, SPACING, (5000.0, 5000.0, 5000.0), DIRECTION)
    write_volume(far, d / "far_liver.nii.gz")
    # CT of water (0 HU) on a 2 mm grid covering the activity grid, and one covering only a corner
    ct_origin = np.asarray(ORIGIN) - DIRECTION @ np.array([5.0, 5.0, 5.0])
    write_volume(make_volume(np.zeros((44, 56, 60), np.int16), (2.0, 2.0, 2.0), ct_origin, DIRECTION), d / "ct.nii.gz")
    write_volume(make_volume(np.zeros((10, 10, 10), np.int16), (2.0, 2.0, 2.0), ct_origin, DIRECTION), d / "ct_small.nii.gz")
    pet = (counts * 1e4).astype(np.float32)
    pet[0, 0, 0] = -1e4
    write_volume(make_volume(pet, **grid), d / "pet.nii.gz")
    return d


def run(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dose_vsv_writes_all_outputs_on_the_activity_grid(study, tmp_path, capsys):
    out = tmp_path / "vsv"
    code, stdout, err = run([
        "dose", str(study / "spect.nii.gz"), "--liver", str(study / "liver.nii.gz"),
        "--lesions", str(study / "lesions_fine.nii.gz"), "--lung", str(study / "lungs.nii.gz"),
        "--activity-gbq", "1.5", "--constants", "resin", "-o", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["dose.nii.gz", "dvh.csv", "dvh.png", "report.json"]
    img = sitk.ReadImage(str(out / "dose.nii.gz"))  # geometry read by SimpleITK, not by sirtjax
    np.testing.assert_allclose(img.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), DIRECTION, atol=1e-6)
    assert sitk.GetArrayFromImage(img).shape == (24, 20, 22)
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "vsv" and report["constants"]["name"] == "resin"
    assert report["kernel"]["method"] == "point-kernel"
    assert report["masks"]["lesions"]["resampled_nearest"] is True
    assert report["masks"]["liver"]["resampled_nearest"] is False
    names = [v["name"] for v in report["vois"]]
    assert names == ["liver", "normal_liver", "lesion_1", "lesion_2", "lungs"]
    assert report["input"]["lsf_source"].startswith("counts")
    assert 0 < report["input"]["lung_shunt_fraction"] < 0.2
    assert set(report["vois"][2]) >= {"D70_gy", "D50_gy", "V70_pct", "V100_pct", "V120_pct", "mean_gy", "volume_ml"}
    lesion, normal = report["vois"][2], report["vois"][1]
    assert lesion["mean_gy"] > 2 * normal["mean_gy"]  # 4x the counts concentration
    assert lesion["volume_ml"] == pytest.approx(48 * np.prod(SPACING) / 1000)
    with open(out / "dvh.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["dose_gy"] + [f"{n}_volume_pct" for n in names]
    assert float(rows[1][1]) == 100.0 and len(rows) == 501
    assert (out / "dvh.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lesion_1" in stdout and "lung dose" in stdout


def test_dose_ldm_mean_equals_the_mono_compartment_formula(study, tmp_path, capsys):
    out = tmp_path / "ldm"
    args = ["dose", str(study / "spect.nii.gz"), "--liver", str(study / "liver.nii.gz"), "--model", "ldm",
            "--activity-gbq", "2", "--lung-shunt", "0.1"]
    code, _, err = run(args + ["--liver-density", "1.05", "-o", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    liver = report["vois"][0]
    # LDM conserves activity, so the liver's mean dose is thesis eq. 1.4: F (1 - LSF) A / (rho V)
    assert liver["mean_gy"] == pytest.approx(49.4293 * 0.9 * 2 / (liver["volume_ml"] * 1.05 / 1000), rel=1e-4)
    assert report["lung"]["mass_source"] == "conventional 1 kg"
    assert report["lung"]["dose_gy"] == pytest.approx(49.4293 * 0.1 * 2, rel=1e-4)
    # with a CT of water on another grid the density is 1.0 g/ml everywhere
    code, _, err = run(args + ["--ct", str(study / "ct.nii.gz"), "-o", str(tmp_path / "ct")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "ct" / "report.json").read_text())
    assert report["density"]["source"] == "ct"
    assert report["vois"][0]["mean_gy"] == pytest.approx(49.4293 * 0.9 * 2 / (liver["volume_ml"] / 1000), rel=1e-4)
    code, _, err = run(args + ["--ct", str(study / "ct_small.nii.gz"), "-o", str(tmp_path / "ct2")], capsys)
    assert code == 2 and "ct_small.nii.gz" in err and "does not cover" in err


def test_dose_from_pet(study, tmp_path, capsys):
    out = tmp_path / "pet"
    code, _, err = run(["dose", str(study / "pet.nii.gz"), "--liver", str(study / "liver.nii.gz"),
                        "--input", "bq-per-ml", "--model", "ldm", "-o", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["negative_activity_removed_gbq"] == pytest.approx(1e4 * np.prod(SPACING) * 1e-12, rel=1e-5)
    assert "negative_activity_removed" in {w["code"] for w in report["warnings"]}
    assert report["lung"] is None


def test_dose_from_pet_with_recovery_and_resolution_matching(study, tmp_path, capsys):
    """--fwhm-mm gives each lesion the analytic recovery coefficient at its volume; --recovery-csv a measured
    curve; --match-fwhm-mm blurs the PET first."""
    from sirtjax.dosimetry.recovery import gaussian_recovery_curve

    base = ["dose", str(study / "pet.nii.gz"), "--liver", str(study / "liver.nii.gz"), "--lesions",
            str(study / "lesions_fine.nii.gz"), "--input", "bq-per-ml", "--model", "ldm"]
    code, stdout, err = run(base + ["--fwhm-mm", "8", "-o", str(tmp_path / "a")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    curve = gaussian_recovery_curve(8.0)
    vois = {v["name"]: v for v in report["vois"]}
    assert [r["name"] for r in report["recovery"]["lesions"]] == ["lesion_1", "lesion_2"]
    for r in report["recovery"]["lesions"]:
        rc = curve.coefficient(vois[r["name"]]["volume_ml"])
        assert r["coefficient"] == pytest.approx(rc) and r["corrected_mean_gy"] == pytest.approx(vois[r["name"]]["mean_gy"] / rc)
        assert r["within_curve"]
    assert "recovery coefficient" in stdout and "analytic" in report["recovery"]["source"]
    rc_csv = tmp_path / "rc.csv"
    rc_csv.write_text("volume_ml,recovery_coefficient\n3.0,0.5\n30.0,0.9\n")  # both lesions (2.8 ml) below 3 ml
    code, _, err = run(base + ["--recovery-csv", str(rc_csv), "-o", str(tmp_path / "b")], capsys)
    assert code == 0 and "outside the spheres of the recovery curve" in err
    report_b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["coefficient"] for r in report_b["recovery"]["lesions"]] == [0.5, 0.5]
    assert "lesion_outside_recovery_curve" in {w["code"] for w in report_b["warnings"]}
    code, _, err = run(base + ["--fwhm-mm", "8", "--match-fwhm-mm", "14", "-o", str(tmp_path / "c")], capsys)
    assert code == 0, err
    report_c = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report_c["resolution"] == {"fwhm_mm": 8.0, "matched_to_fwhm_mm": 14.0}
    lesion_c = {v["name"]: v for v in report_c["vois"]}["lesion_1"]
    assert lesion_c["mean_gy"] < 0.9 * vois["lesion_1"]["mean_gy"]  # the hot lesion spills out at 14 mm
    assert [r["coefficient"] for r in report_c["recovery"]["lesions"]] == pytest.approx(
        [gaussian_recovery_curve(14.0).coefficient(lesion_c["volume_ml"])] * 2, rel=0.3)  # the blurred image's curve
    assert "FWHM 14 mm" in report_c["recovery"]["source"]
    for extra, option in ((["--match-fwhm-mm", "14"], "--match-fwhm-mm"), (["--fwhm-mm", "nan"], "--fwhm-mm"),
                          (["--fwhm-mm", "8", "--match-fwhm-mm", "14", "--recovery-csv", str(rc_csv)], "--recovery-csv")):
        code, _, err = run(base + extra + ["-o", str(tmp_path / "d")], capsys)
        assert code == 2 and option in err and not (tmp_path / "d").exists()


def test_dose_uncertainty_ensemble(study, tmp_path, capsys):
    """--uncertainty N: per VOI the nominal value (the dose table's) inside its 5-95 % interval, the sources
    varied one at a time, the stated sds in the report, and the tornado chart; PET input is refused."""
    out = tmp_path / "u"
    code, stdout, err = run(["dose", str(study / "spect.nii.gz"), "--liver", str(study / "liver.nii.gz"), "--lesions",
                             str(study / "lesions_fine.nii.gz"), "--activity-gbq", "1.5", "--lung-shunt", "0.1",
                             "--uncertainty", "8", "--calibration-sd", "0.05", "--boundary-sd-mm", "3", "-o", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    u = report["uncertainty"]
    assert u["members"] == 8 and u["stated"]["calibration_rel_sd"] == 0.05 and u["stated"]["boundary_sd_mm"] == 3.0
    table = {v["name"]: v for v in report["vois"]}
    for v in u["vois"]:
        mean = v["mean_gy"]
        assert mean["nominal"] == pytest.approx(table[v["name"]]["mean_gy"], rel=1e-4)
        assert set(mean["by_source"]) == {"calibration", "lung_shunt", "liver_boundary", "lesion_boundary"}
    assert [v["name"] for v in u["vois"]] == ["liver", "normal_liver", "lesion_1", "lesion_2"]
    assert (out / "uncertainty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "5-95 %" in stdout
    code, _, err = run(["dose", str(study / "pet.nii.gz"), "--liver", str(study / "liver.nii.gz"), "--input", "bq-per-ml",
                        "--uncertainty", "8", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and "--uncertainty" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra, culprit, message", [
    ([], "--activity-gbq", "need the administered activity"),
    (["--activity-gbq", "-1"], "--activity-gbq", "must be positive"),
    (["--activity-gbq", "1", "--lung-shunt", "1.2"], "--lung-shunt", "[0, 1)"),
    (["--activity-gbq", "1", "--input", "bq-per-ml"], "--activity-gbq", "absolute"),
    (["--activity-gbq", "1", "--dx", "70,150"], "--dx", "percentages"),
    (["--activity-gbq", "1", "--model", "mc"], "", "mc"),
    (["--activity-gbq", "1", "--uncertainty", "4", "--calibration-sd", "-1"], "--calibration-sd", "finite number >= 0"),
    (["--activity-gbq", "1", "--uncertainty", "4", "--residual", "1"], "--residual", "below 1"),
    (["--activity-gbq", "1", "--uncertainty", "1"], "--uncertainty", "2-1024"),
])
def test_dose_bad_parameters(study, tmp_path, capsys, extra, culprit, message):
    code, _, err = run(["dose", str(study / "spect.nii.gz"), "--liver", str(study / "liver.nii.gz"),
                        "-o", str(tmp_path / "x")] + extra, capsys)
    assert code == 2 and message in err and culprit in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("liver_file, message", [
    ("empty.nii.gz", "empty"), ("far_liver.nii.gz", "does not overlap"), ("missing.nii.gz", "no such file")])
def test_dose_bad_masks(study, tmp_path, capsys, liver_file, message):
    code, _, err = run(["dose", str(study / "spect.nii.gz"), "--liver", str(study / liver_file),
                        "--activity-gbq", "1", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and message in err and liver_file in err
    assert len(err.strip().splitlines()) == 1


def test_prescribe_worked_check_json(capsys):
    code, out, err = run(["prescribe", "--dose-gy", "40", "--normal-ml", "1300", "--tumour-ml", "200", "--tn", "3",
                          "--lsf", "0.1", "--density", "1.0", "--constants", "resin", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert round(r["activity_gbq"], 3) == 1.700 and round(r["lung_dose_gy"], 2) == 8.44
    assert [round(c["dose_gy"], 6) for c in r["compartments"]] == [40.0, 120.0]
    assert r["constants"]["name"] == "resin" and r["inputs"]["lsf_source"] == "given"


def test_prescribe_bsa_table_and_from_masks(study, capsys):
    code, out, err = run(["prescribe", "--method", "bsa", "--height-m", "1.75", "--weight-kg", "75",
                          "--liver-ml", "1500", "--tumour-ml", "200", "--lung-counts", "40", "--liver-counts", "160"], capsys)
    assert code == 0, err
    assert "bsa_m2: 1.903" in out and "lung shunt 20.0 %" in out and "reduced to 60 %" not in out
    assert "warning: BSA method only: its activity is reduced to 60 %" in err  # warnings go to stderr
    code, out, err = run(["prescribe", "--spect", str(study / "spect.nii.gz"), "--liver", str(study / "liver.nii.gz"),
                          "--lesions", str(study / "lesions_fine.nii.gz"), "--lung", str(study / "lungs.nii.gz"),
                          "--dose-gy", "40", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    tn = [t["tn_ratio"] for t in r["inputs"]["measured"]["tumours"]]
    assert len(tn) == 2 and all(3.0 < x < 5.0 for x in tn)  # counts 4x inside lesions, Poisson noise
    assert r["inputs"]["lsf_source"].startswith("SPECT")


@pytest.mark.parametrize("args, message", [
    (["--dose-gy", "40", "--normal-ml", "1300", "--tumour-ml", "200"], "T/N"),
    (["--dose-gy", "40"], "--liver-ml"),
    (["--normal-ml", "1300"], "--dose-gy"),
    (["--dose-gy", "40", "--liver-ml", "100", "--tumour-ml", "200", "--tn", "2"], "not positive"),
    (["--method", "bsa", "--liver-ml", "1500", "--weight-kg", "70"], "--height-m"),
    (["--method", "bsa", "--liver-ml", "1500", "--height-m", "175", "--weight-kg", "70"], "--height-m: 175 m is no patient's height"),
    (["--method", "bsa", "--liver-ml", "1500", "--height-m", "1.75", "--weight-kg", "70000"], "--weight-kg: 70000 kg"),
    (["--dose-gy", "40", "--liver-ml", "1500", "--lsf", "0.1", "--lung-counts", "3"], "not both"),
])
def test_prescribe_bad_input(capsys, args, message):
    code, _, err = run(["prescribe"] + args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_constant_choices_are_the_library_sets():
    from sirtjax.cli.dose import ConstantSet
    from sirtjax.dosimetry.constants import constant_sets

    assert {c.value for c in ConstantSet} == set(constant_sets())

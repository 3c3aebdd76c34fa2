"""The library behind ``sirtjax dose`` and ``sirtjax radiobiology``: requests checked, files read, typed results whose
JSON is what report.json holds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sirtjax.dosimetry.dose_files import DoseRequest, dose_from_files
from sirtjax.dosimetry.radiobiology_files import radiobiology_from_files
from sirtjax.dosimetry.recovery import (RecoveryCurve, checked_recovery_curve, gaussian_recovery_curve,
                                        recovery_correction, recovery_report)
from sirtjax.dosimetry.uncertainty import EnsembleOptions, UncertaintyModel, stated_model
from sirtjax.errors import InputError
from sirtjax.io import write_volume
from sirtjax.outputs import write_json
from sirtjax.volume import make_volume

SPACING = (4.0, 4.0, 5.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """SPECT counts 4x as hot in a lesion (id 3) as in the rest of the liver, the masks on the same grid."""
    d = tmp_path_factory.mktemp("files")
    shape = (12, 14, 16)
    liver = np.zeros(shape, np.uint8)
    liver[2:10, 3:11, 3:13] = 1
    lesion = np.zeros(shape, np.uint8)
    lesion[4:7, 5:8, 5:8] = 3
    counts = (liver + 3.0 * (lesion > 0)).astype(np.float32)
    for name, arr in (("spect", counts), ("liver", liver), ("lesions", lesion)):
        write_volume(make_volume(arr, SPACING, (0.0, 0.0, 0.0), np.eye(3)), d / f"{name}.nii.gz")
    return d


def _request(files, out, **options) -> DoseRequest:
    return DoseRequest(files / "spect.nii.gz", files / "liver.nii.gz", out, lesions=files / "lesions.nii.gz",
                       activity_gbq=1.5, lung_shunt_fraction=0.1, model="ldm", **options)


def test_dose_report_json_is_report_json_and_its_values_are_typed(files, tmp_path):
    """The report written is to_json(); the lung dose, the recovery lesions and the warnings are typed values; the
    stages are told in order."""
    stages = []
    result = dose_from_files(_request(files, tmp_path / "out", fwhm_mm=10.0), stages.append)
    assert stages == ["reading images", "computing LDM dose", "writing outputs"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dose.nii.gz", "dvh.csv", "dvh.png", "report.json"]
    text = (tmp_path / "out" / "report.json").read_text()
    assert write_json(result.to_json(), tmp_path / "again.json").read_text() == text
    written = json.loads(text)
    lung = result.dose.lung
    assert written["lung"] == {"mass_kg": lung.mass_kg, "mass_source": lung.mass_source, "dose_gy": lung.dose_gy,
                               "formula": lung.formula}
    assert lung.mass_kg == 1.0 and lung.dose_gy == pytest.approx(result.dose.constants.gy_kg_per_gbq * 0.1 * 1.5)
    assert [r.name for r in result.recovery.lesions] == ["lesion_3"] and result.uncertainty is None
    assert written["recovery"]["lesions"][0]["coefficient"] == pytest.approx(result.recovery.lesions[0].coefficient)
    assert [w.to_dict() for w in result.warnings] == written["warnings"]
    assert "resolution" not in written and "uncertainty" not in written


@pytest.mark.parametrize("options, option, message", [
    (dict(dose_levels_pct=(70.0, 150.0)), "--dx", "D_x levels are percentages in [0, 100], got 70,150"),
    (dict(seed=-1), "--seed", "must be a non-negative integer, got -1"),
    (dict(ensemble=EnsembleOptions(4), ct="ct.nii.gz"), "--uncertainty", "is for SPECT counts without --ct"),
    (dict(ensemble=EnsembleOptions(4), input_kind="bq-per-ml"), "--uncertainty", "is for SPECT counts without --ct"),
    (dict(match_fwhm_mm=12.0), "--match-fwhm-mm", "needs --fwhm-mm"),
    (dict(liver_density_g_ml=-1.0), "--liver-density", "positive density"),
])
def test_a_bad_request_names_its_option_and_writes_nothing(files, tmp_path, options, option, message):
    with pytest.raises(InputError) as exc:
        dose_from_files(_request(files, tmp_path / "out", **options))
    assert exc.value.source == option and message in exc.value.problem
    assert not (tmp_path / "out").exists()


def test_a_missing_mask_is_named_by_its_path(files, tmp_path):
    request = DoseRequest(files / "spect.nii.gz", files / "missing.nii.gz", tmp_path / "out", activity_gbq=1.0)
    with pytest.raises(InputError) as exc:
        dose_from_files(request)
    assert exc.value.source == str(files / "missing.nii.gz")


def test_stated_model_checks_the_ensemble_options():
    assert stated_model(0, -1.0, 0.0, 0.0, 0.0, 0.0) is None  # no ensemble: the sds are not read
    assert stated_model(8, 0.05, 0.1, 0.01, 0.02, 2.0) == UncertaintyModel(0.05, 0.1, 0.01, 0.02, 2.0)
    for args, option in (((1, 0.05, 0, 0, 0, 0), "--uncertainty"), ((4, math.nan, 0, 0, 0, 0), "--calibration-sd"),
                         ((4, 0.05, 1.0, 0, 0, 0), "--residual"), ((4, 0.05, 0, 0, 0, -2.0), "--boundary-sd-mm")):
        with pytest.raises(InputError) as exc:
            stated_model(*args)
        assert exc.value.source == option


def test_checked_recovery_curve_chooses_the_resolution_of_the_dose(tmp_path):
    assert checked_recovery_curve({"--fwhm-mm": None}, None, None) is None
    assert checked_recovery_curve({"--fwhm-mm": 8.0}, 14.0, None).fwhm_mm == 14.0  # the blurred image's curve
    assert checked_recovery_curve({"--pet-fwhm-mm": 8.0, "--spect-fwhm-mm": 12.0}, None, None).fwhm_mm == 8.0
    with pytest.raises(InputError, match="--spect-fwhm-mm"):
        checked_recovery_curve({"--pet-fwhm-mm": 8.0, "--spect-fwhm-mm": 200.0}, None, None)
    with pytest.raises(InputError, match="--recovery-csv"):
        checked_recovery_curve({"--fwhm-mm": 8.0}, 14.0, tmp_path / "rc.csv")


def test_recovery_correction_is_the_report_entry_and_warns_outside_the_spheres():
    curve = RecoveryCurve((3.0, 30.0), (0.5, 0.9), "measured: test")
    vois = [{"name": "liver", "volume_ml": 900.0, "mean_gy": 50.0},
            {"name": "lesion_1", "volume_ml": 2.0, "mean_gy": 80.0},
            {"name": "lesion_2", "volume_ml": 10.0, "mean_gy": 120.0}]
    correction = recovery_correction(vois, curve)
    assert [(r.name, r.within_curve) for r in correction.lesions] == [("lesion_1", False), ("lesion_2", True)]
    assert correction.lesions[0].corrected_mean_gy == pytest.approx(160.0)  # held at the smallest sphere's 0.5
    assert recovery_report(vois, curve) == (correction.to_dict(), correction.warnings)
    assert [w.code for w in correction.warnings] == ["lesion_outside_recovery_curve"]
    assert "lesion_1:" in correction.warnings[0].message
    assert recovery_correction(vois[2:], gaussian_recovery_curve(8.0)).warnings == ()


def test_radiobiology_from_files_returns_what_it_writes(files, tmp_path):
    dose = make_volume(np.full((12, 14, 16), 40.0, np.float32), SPACING, (0.0, 0.0, 0.0), np.eye(3))
    write_volume(dose, tmp_path / "dose.nii.gz")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"normal_liver": {"alpha_beta_gy": 2.5, "repair_half_time_h": 1.5, "source": "test"}}))
    result = radiobiology_from_files(dose=tmp_path / "dose.nii.gz", liver=files / "liver.nii.gz", params=params,
                                     out=tmp_path / "out", lesions=files / "lesions.nii.gz")
    assert [v.name for v in result.vois] == ["normal_liver"] and result.unmodelled == ("lesion_3",)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dose"] == str(tmp_path / "dose.nii.gz") and report["unmodelled"] == ["lesion_3"]
    assert report["vois"][0]["mean_bed_gy"] == pytest.approx(result.vois[0].mean_bed_gy)
    with pytest.raises(InputError) as exc:
        radiobiology_from_files(dose=tmp_path / "dose.nii.gz", liver=files / "liver.nii.gz", params=params,
                                out=tmp_path / "out")
    assert exc.value.source == str(tmp_path / "out")  # an existing output, refused before any work

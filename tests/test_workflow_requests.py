"""The library calls behind ``sirtjax prescribe``, ``plan``/``verify`` and ``demo``: typed requests in, typed results
out, bad options refused with the option's name before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sirtjax.dosimetry import partition
from sirtjax.dosimetry.uncertainty import EnsembleOptions
from sirtjax.errors import InputError
from sirtjax.pipelines.demo import run_demo
from sirtjax.pipelines.planned import PlanRecord
from sirtjax.pipelines.prescribe import PrescriptionRequest, given_lung_shunt, prescribe_activity
from sirtjax.pipelines.request import WorkflowRequest, run_workflow


def test_prescribe_activity_is_the_partition_model_with_its_inputs():
    """The thesis' worked check (LSF 0.1, 40 Gy, T/N 3, 0.2 + 1.3 kg, resin constants) through the request."""
    r = prescribe_activity(PrescriptionRequest(dose_gy=40.0, normal_volume_ml=1300.0, tumour_volumes_ml=(200.0,),
                                               tn_ratios=(3.0,), lung_shunt_fraction=0.1, density_g_ml=1.0,
                                               constants="resin"))
    direct = partition(40.0, 1.3, [0.2], [3.0], lung_shunt_fraction=0.1, constants="resin")
    assert r.prescription.activity_gbq == pytest.approx(direct.activity_gbq) and round(direct.activity_gbq, 3) == 1.700
    assert r.lung_shunt.source == "given" and r.warnings == direct.warnings
    report = r.to_json()
    assert report["inputs"] == {"normal_volume_ml": 1300.0, "tumour_volumes_ml": [200.0], "tn_ratios": [3.0],
                                "density_g_ml": 1.0, "lsf_source": "given", "measured": None}
    assert list(report)[:3] == ["method", "activity_gbq", "liver_activity_gbq"]


def test_prescribe_activity_without_a_lung_shunt_assumes_zero_with_a_warning():
    r = prescribe_activity(PrescriptionRequest(method="mono-compartment", dose_gy=50.0, liver_volume_ml=1500.0))
    assert r.prescription.lung_shunt_fraction == 0.0 and r.lung_shunt.source == "assumed 0"
    assert [w.code for w in r.warnings] == ["lung_shunt_assumed_zero"]
    assert r.prescription.compartments[0].mass_kg == pytest.approx(1.5 * 1.03)


def test_given_lung_shunt_from_counts_or_the_fraction():
    assert given_lung_shunt(None, 40.0, 160.0) == (pytest.approx(0.2), "lung and liver counts")
    assert given_lung_shunt(0.05, None, None) == (0.05, "given")
    assert given_lung_shunt(None, None, None) == (None, "given")
    with pytest.raises(InputError, match="--lsf: give --lsf or --lung-counts"):
        given_lung_shunt(0.1, 3.0, None)
    with pytest.raises(InputError, match="--lung-counts: needs both"):
        given_lung_shunt(None, 3.0, None)


@pytest.mark.parametrize("request_, message", [
    (PrescriptionRequest(dose_gy=40.0), "--liver-ml: give the liver volume"),
    (PrescriptionRequest(liver_volume_ml=1500.0), "--dose-gy: is required for this method"),
    (PrescriptionRequest(dose_gy=40.0, liver_volume_ml=1500.0, tumour_volumes_ml=(100.0,)), "--tn: 0 T/N ratios"),
    (PrescriptionRequest(method="bsa", liver_volume_ml=1500.0, height_m=175.0, weight_kg=70.0), "--height-m: 175 m"),
    (PrescriptionRequest(method="bsa", liver_volume_ml=1500.0, weight_kg=70.0), "--height-m: is required"),
    (PrescriptionRequest(dose_gy=40.0, liver=Path("liver.nii.gz")), "--liver: masks need --spect"),
    (PrescriptionRequest(method="mirds", dose_gy=40.0, liver_volume_ml=1500.0), "--method: one of partition"),
])
def test_prescribe_activity_names_the_option_at_fault(request_, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        prescribe_activity(request_)


def _plan_json(**changes) -> dict:
    report = {"workflow": "plan", "study": "s1", "session": {"emission": "maa_spect"},
              "planned_activity": {"gbq": 1.5}, "lung_shunt": {"fraction": 0.08},
              "dose": {"model": "vsv", "constants": {"name": "icrp107"},
                       "vois": [{"name": "liver"}, {"name": "lesion_1"}, "garbage"]},
              "study_manifest": {"patient": {"id": 7}}}
    return {**report, **changes}


def test_plan_record_parses_a_plan_report_once():
    data = _plan_json()
    record = PlanRecord.from_json(data)
    assert (record.study, record.patient_id, record.emission) == ("s1", "7", "maa_spect")
    assert (record.planned_gbq, record.lung_shunt_fraction) == (1.5, 0.08)
    assert (record.dose_model, record.constants_name) == ("vsv", "icrp107")
    assert record.voi_names == frozenset({"liver", "lesion_1"}) and record.report is data


@pytest.mark.parametrize("data, message", [
    (_plan_json(workflow="verify"), "not the report of a plan (workflow: 'verify')"),
    ([1, 2], "not the report of a plan (workflow: None)"),
    ({k: v for k, v in _plan_json().items() if k != "dose"}, "the plan report lacks 'dose'"),
    (_plan_json(planned_activity={"gbq": "1.5"}), "must be numbers"),
])
def test_plan_record_says_what_is_wrong(data, message):
    with pytest.raises(ValueError) as exc:
        PlanRecord.from_json(data)
    assert message in str(exc.value)


@pytest.mark.parametrize("changes, message", [
    ({"lung_shunt_fraction": 1.5}, "--lung-shunt: must be in [0, 1)"),
    ({"seed": -1}, "--seed: must be a non-negative integer"),
    ({"constants": "nope"}, "--constants: unknown constant set 'nope'"),
    ({"registration_samples": 33}, "--registration-samples: 0-32"),
    ({"ensemble": EnsembleOptions(1)}, "--uncertainty: an ensemble of 2-1024"),
    ({"spect_fwhm_mm": 12.0}, "--spect-fwhm-mm: is for --match-fwhm-mm"),
    ({"plan_dir": Path("no-such-plan")}, "no-such-plan: --plan takes the output folder"),
])
def test_run_workflow_refuses_bad_options_before_any_work(tmp_path, changes, message):
    request = WorkflowRequest(tmp_path / "missing-study", tmp_path / "out", **changes)
    with pytest.raises(InputError) as exc:
        run_workflow(request)
    assert message in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_run_workflow_needs_an_importer_for_a_pacs_export(tmp_path):
    (tmp_path / "export").mkdir()
    with pytest.raises(InputError, match="no study.json"):
        run_workflow(WorkflowRequest(tmp_path / "export", tmp_path / "out"))


def test_run_demo_refuses_a_negative_seed(tmp_path):
    with pytest.raises(InputError, match="--seed"):
        run_demo(tmp_path / "demo", seed=-1)
    assert not (tmp_path / "demo").exists()


def test_prescribe_activity_from_a_spect_names_the_mask_file(tmp_path):
    from sirtjax.io import write_volume
    from sirtjax.volume import make_volume

    spect = write_volume(make_volume(np.ones((8, 8, 8), np.float32), (4.0, 4.0, 4.0)), tmp_path / "spect.nii.gz")
    empty = write_volume(make_volume(np.zeros((8, 8, 8), np.uint8), (4.0, 4.0, 4.0)), tmp_path / "liver.nii.gz")
    with pytest.raises(InputError) as exc:
        prescribe_activity(PrescriptionRequest(dose_gy=40.0, spect=spect, liver=empty))
    assert str(empty) in str(exc.value)

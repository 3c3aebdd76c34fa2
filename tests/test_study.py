"""Study manifests: the phantom's study.json, hand-written manifests (NIfTI and DICOM), validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.errors import InputError
from sirtjax.io import write_volume
from sirtjax.phantom import PhantomConfig, generate_study, write_study
from sirtjax.io.study import load_study, parse_manifest
from sirtjax.volume import make_volume, same_grid


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "study"
    write_study(generate_study(3, PhantomConfig.small()), folder)
    return folder


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


@pytest.fixture()
def patient_folder(tmp_path):
    """A hand-written study: CT as a DICOM series folder, SPECT and a lesion mask as NIfTI."""
    ct = make_volume(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) - 100, (0.8, 0.9, 2.5),
                     (-10.0, 20.0, 5.0), _rotation(20))
    write_volume(ct, tmp_path / "dicom" / "maa_ct")
    spect = make_volume(np.ones((5, 5, 5), np.float32), (4.42,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    write_volume(spect, tmp_path / "spect.nii.gz")
    lesions = ct.with_array((np.arange(ct.array.size).reshape(ct.shape) % 3).astype(np.uint8))
    write_volume(lesions, tmp_path / "lesions.nii.gz")
    manifest = {
        "name": "patient-042",
        "patient": {"id": "042", "height_cm": 172, "weight_kg": 80.5},
        "series": {
            "maa_ct": {"folder": "dicom/maa_ct", "modality": "CT", "session": "maa", "units": "HU"},
            "maa_spect": {"file": "spect.nii.gz", "modality": "spect", "session": "maa", "ct": "maa_ct"},
        },
        "masks": {"maa_ct": {"lesions": "lesions.nii.gz"}},
        "activities": {"maa_injected_mbq": 150, "y90_planned_gbq": 1.8},
        "target_doses_gy": {"tumour": 120, "normal_liver": 40},
    }
    (tmp_path / "study.json").write_text(json.dumps(manifest))
    return tmp_path, manifest, ct, lesions


def test_phantom_manifest_loads_and_reads(phantom_folder):
    study = load_study(phantom_folder)
    manifest = json.loads((phantom_folder / "study.json").read_text())
    assert study.name == manifest["name"]
    assert set(study.series) == set(manifest["series"])
    assert study.sessions == manifest["sessions"]
    assert study.series["maa_spect"].anatomical == "maa_ct"
    assert study.activities["y90_injected_gbq"] == manifest["activities"]["y90_injected_gbq"]
    assert study.target_doses_gy == manifest["target_doses_gy"]
    assert study.read_truth()["seed"] == 3
    ct = study.read("maa_ct")
    liver = study.read_mask("maa_ct", "liver")
    assert same_grid(ct, liver) and liver.array.dtype == np.uint8 and liver.array.max() == 1
    # The lazily read image is the file's content (checked through SimpleITK, not our reader).
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_folder / "maa_ct.nii.gz")))
    np.testing.assert_array_equal(np.asarray(ct.array), ref)
    assert study.read_mask("maa_spect", "liver") is None
    json.dumps(study.to_dict())  # JSON-ready


def test_manifest_path_or_folder_and_relative_paths(phantom_folder, tmp_path):
    a = load_study(phantom_folder)
    b = load_study(phantom_folder / "study.json")
    assert a == b
    # A manifest elsewhere naming absolute paths resolves them as given.
    m = json.loads((phantom_folder / "study.json").read_text())
    for entry in m["series"].values():
        entry["file"] = str(phantom_folder / entry["file"])
    m["masks"] = {}
    m.pop("truth")
    (tmp_path / "elsewhere.json").write_text(json.dumps(m))
    c = load_study(tmp_path / "elsewhere.json")
    assert c.series["maa_ct"].path == a.series["maa_ct"].path


def test_hand_written_manifest_with_dicom_folder(patient_folder):
    folder, _, ct, lesions = patient_folder
    study = load_study(folder)
    assert study.patient == {"id": "042", "height_cm": 172.0, "weight_kg": 80.5}
    assert study.sessions == {"maa": {"ct": "maa_ct", "spect": "maa_spect"}}  # derived from the series
    assert study.series["maa_spect"].modality == "SPECT"
    got = study.read("maa_ct")
    assert same_grid(got, ct, tol_mm=1e-3)
    np.testing.assert_array_equal(np.asarray(got.array), np.asarray(ct.array))
    les = study.read_mask("maa_ct", "lesions")
    np.testing.assert_array_equal(np.asarray(les.array), np.asarray(lesions.array))
    assert study.truth_path is None and study.read_truth() is None


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.update(extra=1), "extra: unknown key"),
        (lambda m: m["patient"].update(height_cm=1720), "patient.height_cm: 1720 is outside"),
        (lambda m: m["patient"].update(weight_kg="80"), "patient.weight_kg: expected a number"),
        (lambda m: m["patient"].update(weight_kg=True), "patient.weight_kg: expected a number"),
        (lambda m: m["activities"].update(y90_planned_gbq=0), "activities.y90_planned_gbq: 0 is outside"),
        (lambda m: m["activities"].update(y90_planned_gbq=-1.5), "activities.y90_planned_gbq"),
        (lambda m: m["activities"].update(y90_gbq=1.5), "activities.y90_gbq: unknown key"),
        (lambda m: m["target_doses_gy"].update(tumour=12000), "target_doses_gy.tumour"),
        (lambda m: m["series"]["maa_ct"].update(folder="dicom/nope"), "series.maa_ct.folder: no such folder"),
        (lambda m: m["series"]["maa_spect"].update(file="dicom"), "series.maa_spect.file: 'dicom' is a folder"),
        (lambda m: m["series"]["maa_spect"].update(file="study.json"), "series.maa_spect.file: 'study.json' is not"),
        (lambda m: m["series"]["maa_ct"].update(file="spect.nii.gz"), "series.maa_ct: give exactly one"),
        (lambda m: m["series"]["maa_ct"].pop("session"), "series.maa_ct: missing \"session\""),
        (lambda m: m["series"]["maa_ct"].update(modality="XR"), "series.maa_ct.modality: 'XR' is not one of"),
        (lambda m: m["series"]["maa_ct"].update(modality="PET"), "series.maa_ct.modality: a PET series has no role"),
        (lambda m: m["series"]["maa_ct"].update(sesion="maa"), "series.maa_ct.sesion: unknown key"),
        (lambda m: m["series"]["maa_spect"].update(ct="diag_ct"), "series.maa_spect.ct: names no series"),
        (lambda m: m["series"]["maa_ct"].update(ct="maa_ct"), "series.maa_ct.ct: only SPECT and PET"),
        (lambda m: m.update(sessions={"maa": {"ct": "maa_spect"}}), "sessions.maa.ct: 'maa_spect' is a SPECT"),
        (lambda m: m.update(sessions={"maa": {"pet": "maa_ct"}}), "sessions.maa.pet: unknown key"),
        (lambda m: m.update(masks={"maa_ct": {"tumor": "lesions.nii.gz"}}), "masks.maa_ct.tumor: unknown key"),
        (lambda m: m.update(masks={"diag_ct": {}}), "masks.diag_ct: names no series"),
        (lambda m: m.update(masks={"maa_ct": {"liver": "liver.nii.gz"}}), "masks.maa_ct.liver: no such file"),
        (lambda m: m.update(series={}), "series: empty"),
        (lambda m: m.pop("series"), "series: missing"),
        (lambda m: m.update(schema_version=2), "schema_version: version 2"),
        (lambda m: m.update(name=""), "name: expected a non-empty string"),
    ],
)
def test_bad_manifests_name_the_manifest_and_field(patient_folder, edit, field):
    folder, manifest, _, _ = patient_folder
    m = json.loads(json.dumps(manifest))
    edit(m)
    with pytest.raises(InputError) as exc:
        parse_manifest(m, folder / "study.json")
    msg = str(exc.value)
    assert msg.startswith(str(folder / "study.json") + ": ") and field in msg, msg
    assert "\n" not in msg


def test_two_series_of_a_modality_need_explicit_sessions(patient_folder):
    folder, manifest, _, _ = patient_folder
    m = json.loads(json.dumps(manifest))
    m["series"]["maa_ct_2"] = dict(m["series"]["maa_ct"])
    with pytest.raises(InputError, match="two CT series"):
        parse_manifest(m, folder / "study.json")
    m["sessions"] = {"maa": {"ct": "maa_ct_2", "spect": "maa_spect"}}
    assert parse_manifest(m, folder / "study.json").session_series("maa", "ct") == "maa_ct_2"


def test_bad_files_and_masks(patient_folder):
    folder, manifest, ct, _ = patient_folder
    with pytest.raises(InputError, match="no such file"):
        load_study(folder / "other")
    (folder / "broken.json").write_text("{\"series\": ")
    with pytest.raises(InputError, match=r"broken.json: invalid JSON"):
        load_study(folder / "broken.json")
    (folder / "list.json").write_text("[]")
    with pytest.raises(InputError, match=r"list.json: expected a JSON object, got a list"):
        load_study(folder / "list.json")
    write_volume(ct.with_array(np.full(ct.shape, 0.5, np.float32)), folder / "frac.nii.gz")
    write_volume(ct.with_array(np.full(ct.shape, 2, np.uint8)), folder / "two.nii.gz")
    m = dict(manifest, masks={"maa_ct": {"lesions": "frac.nii.gz", "liver": "two.nii.gz"}})
    study = parse_manifest(m, folder / "study.json")
    with pytest.raises(InputError, match="frac.nii.gz: a mask must hold integer labels"):
        study.read_mask("maa_ct", "lesions")
    with pytest.raises(InputError, match="two.nii.gz: a liver/lungs mask must be 0/1"):
        study.read_mask("maa_ct", "liver")
    with pytest.raises(InputError, match="no series 'diag_ct'"):
        study.read("diag_ct")


def test_lung_shunt_fraction_of_the_manifest(patient_folder):
    from sirtjax.pipelines import study_data

    folder, manifest, _, _ = patient_folder
    assert load_study(folder).lung_shunt_fraction is None
    study = parse_manifest({**manifest, "lung_shunt_fraction": 0.08}, folder / "study.json")
    assert study.lung_shunt_fraction == 0.08 and study.to_dict()["lung_shunt_fraction"] == 0.08
    # precedence: the command line's value, then the manifest's (then, in plan(), SPECT counts)
    assert (study_data(study).lung_shunt_fraction, study_data(study).lung_shunt_source) == (
        0.08, "planar scintigraphy (study manifest)")
    given = study_data(study, 0.12)
    assert (given.lung_shunt_fraction, given.lung_shunt_source) == (0.12, "planar scintigraphy (--lung-shunt)")
    assert study_data(load_study(folder)).lung_shunt_fraction is None
    assert parse_manifest({**manifest, "lung_shunt_fraction": 0}, folder / "study.json").lung_shunt_fraction == 0.0


@pytest.mark.parametrize("value, message", [
    (8, "lung_shunt_fraction: 8 is not a fraction in [0, 1) (a lung shunt of 8 % is 0.08)"),
    (1.0, "lung_shunt_fraction: 1.0 is not a fraction"),
    (-0.1, "lung_shunt_fraction: -0.1 is outside the plausible range [0, 1]"),
    (250, "lung_shunt_fraction: 250 is outside the plausible range"),
    ("0.08", "lung_shunt_fraction: expected a number"),
    (True, "lung_shunt_fraction: expected a number"),
])
def test_absurd_lung_shunt_fraction_is_one_line_error(patient_folder, value, message):
    folder, manifest, _, _ = patient_folder
    with pytest.raises(InputError) as exc:
        parse_manifest({**manifest, "lung_shunt_fraction": value}, folder / "study.json")
    assert message in str(exc.value) and "study.json" in str(exc.value) and "\n" not in str(exc.value)

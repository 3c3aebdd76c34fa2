"""`sirtjax study`: a PACS-style export of a phantom study back to the study, series by series."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pacs_export import write_pacs_export

from sirtjax.cli import main
from sirtjax.io.dicom_study import assign_series, decay_to_administration, scan_dicom
from sirtjax.errors import InputError
from sirtjax.io import read_volume
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.io.study import load_study
from sirtjax.volume import same_grid

ROLES = ("maa_ct", "maa_spect", "diag_ct", "diag_mr", "y90_ct", "y90_pet")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    study = generate_study(5, PhantomConfig.small())
    root = tmp_path_factory.mktemp("pacs") / "export"
    return study, root, write_pacs_export(study, root)


def test_series_are_grouped_across_folders_and_given_their_roles(export):
    study, root, uids = export
    found, skipped = scan_dicom(root)
    assert skipped == 1  # README.txt
    assert {s.uid for s in found} == set(uids.values())
    assignment = assign_series(found)
    assert {name: s.uid for name, s in assignment.chosen.items()} == {name: uids[name] for name in ROLES}
    reasons = {s.uid: why for s, why in assignment.unused}
    assert reasons[uids["scout"]] == "localiser"
    assert reasons[uids["planar"]].startswith("not a tomographic reconstruction")
    assert reasons[uids["diag_ct_arterial"]].startswith("has missing slices (about 1")


def test_study_command_converts_every_series_in_physical_space(export, tmp_path, capsys):
    study, root, uids = export
    main(["study", str(root), "-o", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert uids["diag_ct_arterial"] in err and "warning: the MAA SPECT" in err  # the table, whole UIDs; the units
    manifest = load_study(tmp_path / "study")
    raw = json.loads((tmp_path / "study" / "study.json").read_text())
    assert raw["patient"] == {"id": "P042", "height_cm": 169.9, "weight_kg": 83.1}
    assert raw["activities"] == study.manifest["activities"]
    assert raw["series"]["y90_pet"] | {"file": ""} == {"file": "", "modality": "PET", "session": "y90", "units": "Bq/ml",
                                                        "tracer": "90Y", "decay_corrected_to": "injection (so corrected in DICOM)",
                                                        "ct": "y90_ct"}
    assert raw["series"]["maa_spect"]["ct"] == "maa_ct" and raw["series"]["diag_ct"]["contrast"] is True
    for name in ROLES:
        vol, truth = read_volume(tmp_path / "study" / "images" / f"{name}.nii.gz"), study.images[name]
        assert same_grid(vol, truth), name  # also the oblique MR and the flipped MAA CT
        step = 0.0 if name != "y90_pet" else float(np.ptp(truth.array)) / 64000  # PET slices hold int16 x slope
        np.testing.assert_allclose(np.asarray(vol.array, np.float64), np.asarray(truth.array, np.float64), atol=step, err_msg=name)
    assert set(manifest.series) == set(ROLES)


def test_pet_is_decay_corrected_to_the_administration(export):
    """A PET corrected to its acquisition start, 2 h after the administration, gains 2^(2 h / T_half)."""
    _, root, uids = export
    pet = next(s for s in scan_dicom(root)[0] if s.uid == uids["y90_pet"])
    assert pet.administered_datetime == "20260119090000" and pet.series_datetime == "20260119110000"
    assert decay_to_administration(pet)[0] == 1.0  # ADMIN
    start = dataclasses.replace(pet, decay_correction="START")
    assert decay_to_administration(start)[0] == pytest.approx(2.0 ** (7200 / 230400))  # the series' half-life tag
    assert decay_to_administration(dataclasses.replace(start, half_life_s=None))[0] == pytest.approx(2.0 ** (2 / 64.1))
    for bad in (dataclasses.replace(pet, decay_correction="NONE"), dataclasses.replace(start, administered_datetime="")):
        with pytest.raises(InputError, match="cannot decay correct"):
            decay_to_administration(bad)


def test_ambiguity_stops_with_the_way_out(export, tmp_path):
    study, root, uids = export
    found, _ = scan_dicom(root)
    pv = next(s for s in found if s.uid == uids["diag_ct"])
    twin = dataclasses.replace(pv, uid="9.9.9", description="Abdomen PV repeat")
    with pytest.raises(InputError, match=r"2 series could be diag_ct: .*--series UID=diag_ct"):
        assign_series([*found, twin])
    chosen = assign_series([*found, twin], {"9.9": "diag_ct"}).chosen
    assert chosen["diag_ct"].uid == "9.9.9"
    assert "diag_mr" not in assign_series(found, {uids["diag_mr"]: "ignore"}).chosen
    with pytest.raises(InputError, match="must be one of"):
        assign_series(found, {uids["diag_mr"]: "mr"})
    with pytest.raises(SystemExit) as exc:
        main(["study", str(root), "-o", str(tmp_path / "s"), "--series", "no-equals-sign"])
    assert exc.value.code == 2 and not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["plan", "verify"])
def test_workflow_of_the_export_is_the_workflow_of_the_nifti_study(export, tmp_path, command):
    """`sirtjax plan|verify EXPORT` in one command equals the same on the study written as NIfTI (no masks in either)."""
    from sirtjax.phantom import write_study

    study, root, _ = export
    nifti = write_study(study, tmp_path / "nifti")
    manifest = json.loads((nifti / "study.json").read_text())
    for key in ("masks", "truth", "target_doses_gy", "sessions"):
        manifest.pop(key, None)
    manifest["series"] = {k: v for k, v in manifest["series"].items() if k in ROLES}
    (nifti / "study.json").write_text(json.dumps(manifest))
    main([command, str(root), "-o", str(tmp_path / "from_dicom"), "--quick"])
    main([command, str(nifti), "-o", str(tmp_path / "from_nifti"), "--quick"])
    plans = [tmp_path / d / ("plan" if command == "verify" else "") for d in ("from_dicom", "from_nifti")]
    a, b = (json.loads((p / "report.json").read_text()) for p in plans)
    assert a["planned_activity"]["gbq"] == pytest.approx(b["planned_activity"]["gbq"], rel=1e-5)
    # the PET is stored as int16 x slope per slice: the delivered dose agrees to that quantisation
    rtol = 1e-5 if command == "plan" else 1e-4
    dose_a, dose_b = (np.asarray(read_volume(tmp_path / d / "dose.nii.gz").array) for d in ("from_dicom", "from_nifti"))
    np.testing.assert_allclose(dose_a, dose_b, rtol=rtol, atol=rtol * dose_b.max())
    assert (tmp_path / "from_dicom" / "study" / "study.json").is_file()  # the imported study is kept with the plan


def test_bad_roots_stop_with_one_line(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no DICOM here")
    for root, message in ((tmp_path / "missing", "not a folder"), (tmp_path / "notes", "no DICOM series below this folder")):
        with pytest.raises(SystemExit) as exc:
            main(["study", str(root), "-o", str(tmp_path / "out")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""`sirtjax plan`, `sirtjax verify` and `sirtjax demo` on the command line (small phantom, masks given: no registration)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from sirtjax.cli import main
from sirtjax.pipelines.demo import DEMO_MASKS, clinical_manifest
from sirtjax.io import read_volume
from sirtjax.phantom import PhantomConfig, generate_study, write_study
from sirtjax.volume import same_grid

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return write_study(generate_study(5, PhantomConfig.small()), tmp_path_factory.mktemp("s") / "study")


@pytest.fixture(scope="module")
def verified(study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / "v"
    main(["verify", str(study_dir), "-o", str(out), "--lung-shunt", "0.08", "--pet-fwhm-mm", "8"])
    return out


def test_verify_writes_plan_and_verification(study_dir, verified, tmp_path):
    out = verified
    for folder, anat, emission in ((out / "plan", "maa_ct", "maa_spect"), (out, "y90_ct", "y90_pet")):
        names = {p.name for p in folder.iterdir()}
        assert {f"{anat}_liver.nii.gz", f"{anat}_lesions.nii.gz", f"{emission}_liver.nii.gz",
                f"{emission}_lesions.nii.gz", "dose.nii.gz", "dvh.csv", "report.json", "report.html", "rtstruct"} <= names
        emission_vol = read_volume(study_dir / f"{emission}.nii.gz")
        assert same_grid(read_volume(folder / "dose.nii.gz"), emission_vol)
        assert same_grid(read_volume(folder / f"{emission}_liver.nii.gz"), emission_vol)
        assert same_grid(read_volume(folder / f"{anat}_liver.nii.gz"), read_volume(study_dir / f"{anat}.nii.gz"))
        assert (folder / "rtstruct" / "rtstruct.dcm").is_file()
        # the RT Dose beside it is dose.nii.gz, in the frame of reference of the CT written with the RT-Struct
        one = tmp_path / anat
        one.mkdir()
        shutil.copy(folder / "rtstruct" / "rtdose.dcm", one)
        rtdose, nifti = read_volume(one), read_volume(folder / "dose.nii.gz")
        ds = pydicom.dcmread(one / "rtdose.dcm")
        assert ds.FrameOfReferenceUID == pydicom.dcmread(next((folder / "rtstruct" / "ct").iterdir())).FrameOfReferenceUID
        assert ds.DoseSummationType == ("PLAN" if folder.name == "plan" else "RECORD")
        assert same_grid(rtdose, nifti)
        np.testing.assert_allclose(rtdose.array, nifti.array, rtol=1e-6, atol=float(ds.DoseGridScaling))
        seg = hd.seg.segread(folder / "rtstruct" / "seg.dcm")  # the liver segment is the liver mask
        ct_files = sorted((folder / "rtstruct" / "ct").iterdir(), key=lambda f: int(pydicom.dcmread(f).InstanceNumber))
        liver = seg.get_pixels_by_source_instance(source_sop_instance_uids=[pydicom.dcmread(f).SOPInstanceUID for f in ct_files],
                                                  segment_numbers=[1])[..., 0]
        assert seg.get_segment_description(1).segment_label == "liver"
        np.testing.assert_array_equal(liver > 0, np.asarray(read_volume(folder / f"{anat}_liver.nii.gz").array) > 0)
        report = json.loads((folder / "report.json").read_text())  # strict JSON (no NaN)
        assert report["vois"]["lesions"] == f"given on {anat}"
    plan_report = json.loads((out / "plan" / "report.json").read_text())
    assert plan_report["lung_shunt"] == {"fraction": 0.08, "source": "planar scintigraphy (--lung-shunt)",
                                         "from_spect": plan_report["compartments"]["lung_shunt_fraction"]}
    verify_report = json.loads((out / "report.json").read_text())
    assert {r["name"] for r in verify_report["comparison"]} >= {"liver", "normal_liver"}
    # --pet-fwhm-mm alone: the analytic recovery curve at 8 mm for every lesion of the PET dose, no blurring
    lesions = [v for v in verify_report["dose"]["vois"] if v["name"].startswith("lesion_")]
    recovered = verify_report["recovery"]["lesions"]
    assert [r["name"] for r in recovered] == [v["name"] for v in lesions] and "FWHM 8 mm" in verify_report["recovery"]["source"]
    assert all(r["corrected_mean_gy"] > r["mean_gy"] for r in recovered) and "resolution" not in verify_report
    html = (out / "report.html").read_text()
    assert "Plan vs verification" in html and "Prescription" in html and "data:image/png;base64," in html
    assert "Lesion recovery (90Y PET)" in html
    dose = np.asarray(read_volume(out / "plan" / "dose.nii.gz").array)
    assert np.isfinite(dose).all() and dose.max() > 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_workflow_report_renders_in_chromium(verified, tmp_path):
    shot = tmp_path / "shot.png"
    res = subprocess.run(["bash", str(SCRIPT), str(verified / "report.html"), str(shot), "1000,2400"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert tuple(img[10, 500]) == (0x0B, 0x3D, 0x5C)  # the report's header bar colour (flat CSS fill)
    assert len(np.unique(img[600:, :, 0])) > 50  # embedded CT/SPECT figures decoded: many grey levels


def test_plan_alone(study_dir, tmp_path, capsys):
    out = tmp_path / "p"
    tissues = tmp_path / "tissues.json"
    tissues.write_text(json.dumps({"normal_liver": {"alpha_beta_gy": 2.5, "repair_half_time_h": 1.5, "source": "test",
                                                    "lkb": {"td50_gy": 40, "m": 0.15, "n": 0.97, "quantity": "eqd2"}}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"normal_liver": {"alpha_beta_gy": 2.5, "source": "test"}}))
    with pytest.raises(SystemExit) as exc:  # refused before any work, naming the file
        main(["plan", str(study_dir / "study.json"), "-o", str(out), "--radiobiology", str(bad)])
    assert exc.value.code == 2 and str(bad) in capsys.readouterr().err and not out.exists()
    main(["plan", str(study_dir / "study.json"), "-o", str(out), "--model", "ldm", "--method", "mono-compartment",
          "--rtdose-bits", "16", "--uncertainty", "4", "--boundary-sd-mm", "1.5", "--radiobiology", str(tissues)])
    assert "mono-compartment prescription" in capsys.readouterr().out
    ds = pydicom.dcmread(out / "rtstruct" / "rtdose.dcm")  # a 16-bit RT Dose (for AMIDE), still dose.nii.gz
    assert ds.BitsAllocated == 16 and ds.pixel_array.dtype == np.uint16
    nifti = np.asarray(read_volume(out / "dose.nii.gz").array, np.float64)
    assert float(ds.DoseGridScaling) <= nifti.max() / 65535 * (1 + 1e-9)
    np.testing.assert_allclose(ds.pixel_array * float(ds.DoseGridScaling), np.maximum(nifti, 0),  # a right-handed grid
                               rtol=0, atol=float(ds.DoseGridScaling) * 0.5 + 1e-12)
    report = json.loads((out / "report.json").read_text())
    assert report["dose"]["model"] == "ldm"
    assert report["planned_activity"]["source"] == "mono-compartment prescription"
    assert not (out / "plan").exists()
    # no --lung-shunt: the LSF comes from SPECT counts in the given lung mask, with a warning when
    # the MAA CT's field of view cuts the lungs
    assert report["lung_shunt"]["source"] == "SPECT counts in the lung and liver masks"
    assert report["lung_shunt"]["fraction"] == report["compartments"]["lung_shunt_fraction"]
    lungs = np.asarray(read_volume(study_dir / "maa_ct_lungs.nii.gz").array) != 0
    cut = any(np.any(np.take(lungs, i, axis=ax)) for ax in range(3) for i in (0, -1))
    assert cut == any(w["code"] == "lung_mask_cut" for w in report["warnings"])
    assert cut  # this phantom's MAA CT stops inside the lungs (the case below)
    # A cut lung mask gives the LSF but no lung mass: the lung dose uses the conventional 1 kg (a
    # sliver of lung once gave 0.1 g and a 90 kGy lung dose), and no lungs VOI enters the dose statistics.
    assert report["dose"]["lung"]["mass_source"] == "conventional 1 kg"
    assert "lungs" not in {v["name"] for v in report["dose"]["vois"]}
    assert "cut by the CT field of view" in report["vois"]["lungs"]
    # The plan's own report has the predicted DVHs (README: "predicted dose, DVHs, report.html").
    html = (out / "report.html").read_text()
    assert "Predicted cumulative DVHs per VOI" in html
    assert html.count("data:image/png;base64,") == 5  # SPECT and dose slices, DVHs, tornado, BED DVHs (no registration)
    # --radiobiology: BED and NTCP of the predicted dose per VOI; the lesions have no tissue model here
    rb = report["radiobiology"]
    assert [v["name"] for v in rb["vois"]] == ["normal_liver"] and 0 <= rb["vois"][0]["ntcp"] <= 1
    assert rb["vois"][0]["mean_bed_gy"] > rb["vois"][0]["mean_dose_gy"] and rb["unmodelled"]
    assert "Radiobiology (predicted dose)" in html and "source: test" in html
    # --uncertainty: the ensemble's intervals beside the plan's numbers, with the stated sds
    u = report["uncertainty"]
    assert u["members"] == 4 and u["stated"]["boundary_sd_mm"] == 1.5 and u["stated"]["calibration_rel_sd"] == 0.05
    liver = u["vois"][0]
    assert liver["name"] == "liver" and liver["mean_gy"]["p5"] <= liver["mean_gy"]["p95"]
    assert liver["mean_gy"]["nominal"] == pytest.approx(report["dose"]["vois"][0]["mean_gy"], rel=1e-4)
    assert "Dose uncertainty" in html and "stated assumptions" in html


@pytest.mark.parametrize("args, message", [
    (["--lung-shunt", "1.2"], "--lung-shunt"),
    (["--constants", "nope"], "--constants"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_options_exit_2(study_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(study_dir), "-o", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_liver_without_a_model_exits_2_naming_the_manifest(study_dir, tmp_path, capsys):
    manifest = json.loads((study_dir / "study.json").read_text())
    manifest["masks"] = {}
    path = study_dir / "no_masks.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(path), "-o", str(tmp_path / "o"), "--liver-model", str(tmp_path / "no_model")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no_masks.json" in err and "maa_ct: no liver mask given, and segmenting it failed" in err
    assert "no_model" in err and len(err.strip().splitlines()) == 1


def _whole_image_model(folder):
    """A tiny liver model that calls every voxel liver (a constant sigmoid of 1)."""
    from flax import nnx

    from sirtjax.models.store import build_model, load_param_arrays, param_arrays, save_model

    spec = {"arch": "thesis_liver_unet", "in_features": 1, "out_features": 1, "features": [2, 2, 2, 2], "norm": "instance",
            "spacing_mm": [6.0, 6.0, 6.0], "tile_out": [19, 19, 19], "modalities": ["ct", "mr"], "labels": {"1": "liver"}}
    model = build_model(spec, rngs=nnx.Rngs(0))
    arrays = param_arrays(model)
    arrays["head/kernel"] = np.zeros_like(arrays["head/kernel"])
    arrays["head/bias"] = np.full_like(arrays["head/bias"], 20.0)
    load_param_arrays(model, arrays)
    return save_model(model, spec, folder)


def test_an_implausible_segmented_liver_stops_the_plan(study_dir, tmp_path, capsys):
    """A liver model that calls the whole MAA CT liver stops the plan with exit 2 and nothing written."""
    manifest = json.loads((study_dir / "study.json").read_text())
    manifest["masks"]["maa_ct"].pop("liver")
    path = study_dir / "no_maa_liver.json"
    path.write_text(json.dumps(manifest))
    model = _whole_image_model(tmp_path / "whole")
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(path), "-o", str(tmp_path / "o"), "--liver-model", str(model), "--lesion-model", "none"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_maa_liver.json" in err and "maa_ct: the segmented liver is" in err
    assert "outside 600-4500 ml" in err and "--accept-implausible" in err
    assert not (tmp_path / "o").exists()


def test_missing_study_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(tmp_path / "none"), "-o", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_demo_manifest_keeps_the_clinical_masks(study_dir):
    manifest = json.loads((study_dir / "study.json").read_text())
    demo = clinical_manifest(manifest)
    assert {s: set(m) for s, m in demo["masks"].items()} == {s: set(k) for s, k in DEMO_MASKS.items()}
    assert "lesions" not in demo["masks"]["maa_ct"] and "lesions" in demo["masks"]["diag_ct"]
    assert manifest["masks"]["maa_ct"]["lesions"]  # the input is not modified


def test_demo_rejects_a_file_as_output(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["demo", str(target)])
    assert exc.value.code == 2


@pytest.fixture(scope="module")
def plan_dir(study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "plan"
    main(["plan", str(study_dir), "-o", str(out), "--lung-shunt", "0.08"])
    return out


def test_verify_against_a_plan_folder_matches_plan_then_verify(study_dir, plan_dir, verified, tmp_path, capsys):
    out = tmp_path / "v"
    main(["verify", str(study_dir), "--plan", str(plan_dir), "-o", str(out)])
    assert "report:" in capsys.readouterr().out
    assert not (out / "plan").exists()  # the plan is not redone
    ours = json.loads((out / "report.json").read_text())
    theirs = json.loads((verified / "report.json").read_text())
    assert ours["plan"] == str(plan_dir) and theirs["plan"] == "planned in this run"
    # Same study, seed and settings: the plan folder and the in-run plan are the same plan, so the
    # comparisons agree (the plan's numbers come from report.json; the at-injected comparison from
    # the dose recomputed on the SPECT, float32 FFT, hence approx).
    assert ours["comparison"] == theirs["comparison"]
    assert_nested_close(ours["comparison_at_injected_activity"], theirs["comparison_at_injected_activity"])
    html = (out / "report.html").read_text()
    assert "Plan (read from its folder)" in html and f"{plan_dir}/report.html" in html and "Plan vs verification" in html


def assert_nested_close(ours, theirs, rel=1e-6, path="report"):
    """Equal JSON trees, floats within `rel` (pytest.approx takes no nested data since pytest 9)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), path
        for k in theirs:
            assert_nested_close(ours[k], theirs[k], rel, f"{path}.{k}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_nested_close(a, b, rel, f"{path}[{i}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=rel), path
    else:
        assert ours == theirs, path


def _copy_plan(plan_dir, tmp_path):
    target = tmp_path / "plan_copy"
    shutil.copytree(plan_dir, target)
    return target


def _edit_report(folder, edit):
    report = json.loads((folder / "report.json").read_text())
    edit(report)
    (folder / "report.json").write_text(json.dumps(report))


def _scale_dose(folder):
    from sirtjax.io import write_volume

    dose = read_volume(folder / "dose.nii.gz")
    write_volume(dose.with_array(np.asarray(dose.array) * 1.05), folder / "dose.nii.gz")


@pytest.mark.parametrize("damage, blamed, message", [
    (lambda f: (f / "report.json").unlink(), "report.json", "no such file"),
    (lambda f: (f / "report.json").write_text("{not json"), "report.json", "invalid JSON"),
    (lambda f: _edit_report(f, lambda r: r["study_manifest"]["patient"].update(id="someone-else")), "report.json",
     "patient id 'someone-else'"),
    (lambda f: _edit_report(f, lambda r: r.update(workflow="verify")), "report.json", "not the report of a plan"),
    (lambda f: _edit_report(f, lambda r: r.pop("dose")), "report.json", "lacks 'dose'"),
    (lambda f: (f / "dose.nii.gz").unlink(), "dose.nii.gz", "no such file"),
    (lambda f: (f / "dose.nii.gz").write_bytes(b"garbage" * 20), "dose.nii.gz", "cannot read"),
    (_scale_dose, "dose.nii.gz", "differs from the plan's dose recomputed"),
])
def test_bad_plan_folder_exits_2_naming_the_file(study_dir, plan_dir, tmp_path, capsys, damage, blamed, message):
    folder = _copy_plan(plan_dir, tmp_path)
    damage(folder)
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(study_dir), "--plan", str(folder), "-o", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{folder / blamed}:" in err and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--lung-shunt", "0.1"], "--lung-shunt: not used with --plan"),
    (["--model", "ldm"], "--model: the plan in"),
    (["--constants", "glass"], "--constants: the plan in"),
])
def test_verify_options_that_contradict_the_plan_exit_2(study_dir, plan_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(study_dir), "--plan", str(plan_dir), "-o", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_verify_refuses_to_write_into_the_plan_folder(study_dir, plan_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(study_dir), "--plan", str(plan_dir), "-o", str(plan_dir)])
    assert exc.value.code == 2
    assert "must not be the --plan folder" in capsys.readouterr().err


def test_plan_takes_the_manifest_lung_shunt_fraction(study_dir, tmp_path):
    manifest = json.loads((study_dir / "study.json").read_text())
    path = study_dir / "with_lsf.json"
    path.write_text(json.dumps({**manifest, "lung_shunt_fraction": 0.11}))
    main(["plan", str(path), "-o", str(tmp_path / "p"), "--model", "ldm"])
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["lung_shunt"]["fraction"] == 0.11
    assert report["lung_shunt"]["source"] == "planar scintigraphy (study manifest)"
    assert report["lung_shunt"]["from_spect"] == report["compartments"]["lung_shunt_fraction"]  # shown beside it
    assert not any(w["code"] == "lung_mask_cut" for w in report["warnings"])  # the cut lungs do not matter then


def test_demo_report_points_into_its_own_study_copy(tmp_path):
    """The demo's report.json names the study copy inside the output, not the deleted temporary folder."""
    out = tmp_path / "demo"
    main(["demo", str(out), "--small"])
    report = json.loads((out / "report.json").read_text())
    named = [Path(report["study_manifest"]["manifest"])] + [Path(s["path"]) for s in report["study_manifest"]["series"].values()]
    assert all(p.is_relative_to(out.absolute() / "study") and p.exists() for p in named), named
    assert (out / "report.html").exists() and (out / "plan" / "report.json").exists()
    # the demo shows the plan's dose uncertainty (docs/uncertainty.md)
    assert json.loads((out / "plan" / "report.json").read_text())["uncertainty"]["members"] == 16
    assert "Dose uncertainty" in (out / "report.html").read_text()

"""Bad input across every command: exit 2, one line naming the file and the problem, nothing written.

One row per (input, command). Each row runs the real console entry point in this process, with the
C-level stderr captured too (ITK prints there), and is printed in the table at the end of the test
output (tests/conftest.py). Rows that must succeed with a notice (a mask on another, overlapping
grid) are in the second table.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.cli import main
from sirtjax.io import read_volume, write_volume
from sirtjax.volume import make_volume

ROWS: list[tuple[str, str, int, str]] = []
"""(input, command, exit code, message) of every row run; printed by tests/conftest.py."""

DIRECTION = np.array([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])  # a tilted grid, as in a real scan


def _vol(array, spacing=(2.0, 3.0, 2.5), origin=(-20.0, -30.0, 10.0)):
    return make_volume(np.asarray(array), spacing, origin, DIRECTION)


def _nifti(path: Path, array, affine=None) -> Path:
    """Write an array as NIfTI with nibabel directly (bypassing sirtjax's writer and its checks); sform only."""
    img = nib.Nifti1Image(np.asarray(array), None)
    img.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every bad (and a few good) inputs, written once."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    ct = (rng.normal(50, 20, (20, 24, 24)) - 1000 * (np.arange(24) < 3)[None, None, :]).astype(np.float32)
    liver = np.zeros(ct.shape, np.uint8)
    liver[5:15, 6:18, 6:18] = 1
    activity = (liver * 100.0 + 1.0).astype(np.float32)
    f = {
        "ct": write_volume(_vol(ct), d / "ct.nii.gz"),
        "liver": write_volume(_vol(liver), d / "liver.nii.gz"),
        "activity": write_volume(_vol(activity), d / "activity.nii.gz"),
        "empty_mask": write_volume(_vol(np.zeros_like(liver)), d / "empty_mask.nii.gz"),
        "fractional_labels": write_volume(_vol(liver * 0.5), d / "fractional_labels.nii.gz", dtype=np.float32),
        "zero_activity": write_volume(_vol(np.zeros_like(activity)), d / "zero_activity.nii.gz"),
        "all_air": write_volume(_vol(rng.normal(-1000.0, 20.0, ct.shape).clip(-1024.0, -900.0).astype(np.float32)), d / "all_air.nii.gz"),
        "negative_activity": write_volume(_vol(-activity), d / "negative_activity.nii.gz"),
        "far_mask": write_volume(make_volume(liver, (2.0, 3.0, 2.5), (5000.0, 0.0, 0.0), DIRECTION), d / "far_mask.nii.gz"),
        "image_2d": _nifti(d / "image_2d.nii.gz", ct[0]),
        "image_4d": _nifti(d / "image_4d.nii.gz", np.stack([ct, ct], axis=-1)),
        "nan_voxels": _nifti(d / "nan_voxels.nii.gz", np.where(liver > 0, np.nan, ct).astype(np.float32)),
        "inf_voxels": _nifti(d / "inf_voxels.nii.gz", np.where(liver > 0, np.inf, ct).astype(np.float32)),
        "zero_spacing": _nifti(d / "zero_spacing.nii.gz", ct, np.diag([2.0, 0.0, 2.0, 1.0])),
        "folder": d / "a_folder",
        "missing": d / "missing.nii.gz",
        "missing_config": d / "missing.json",
    }
    f["folder"].mkdir()
    data = gzip.decompress(f["ct"].read_bytes())
    (d / "truncated.nii.gz").write_bytes(gzip.compress(data[: len(data) // 3])[:-20])
    f["truncated"] = d / "truncated.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 2048))
    hdr.set_data_dtype(np.float32)
    (d / "huge.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)  # a header claiming 128 GiB
    f["huge"] = d / "huge.nii"
    for name, arrays in (("two_series", (ct, ct + 10)), ("missing_slice", (ct,)), ("uneven_spacing", (ct,))):
        folder = d / name
        folder.mkdir()
        for k, a in enumerate(arrays):
            write_volume(_vol(a), d / f"{name}_{k}", dicom_modality="CT")
            for dcm in (d / f"{name}_{k}").iterdir():
                shutil.move(str(dcm), folder / f"s{k}_{dcm.name}")
        f[name] = folder
    from sirtjax.phantom import PhantomConfig, generate_study, write_study

    f["study"] = write_study(generate_study(5, PhantomConfig.small()), d / "study")
    f["stored_ct"] = write_volume(_vol(np.clip(ct + 1024.0, 0.0, None)), d / "stored_ct.nii.gz")  # intercept lost
    f["stored_study"] = Path(shutil.copytree(f["study"], d / "stored_study"))
    maa_ct = read_volume(f["stored_study"] / "maa_ct.nii.gz")
    write_volume(maa_ct.with_array(np.clip(maa_ct.array + 1024.0, 0.0, None)), f["stored_study"] / "maa_ct.nii.gz")
    (f["missing_slice"] / "s0_IMG0010.dcm").unlink()
    _shift_slice(f["uneven_spacing"] / "s0_IMG0010.dcm", 1.2)
    return f


def _shift_slice(path: Path, shift_mm: float) -> None:
    """Move one DICOM slice along the slice normal, so the series' spacing is uneven."""
    import pydicom

    ds = pydicom.dcmread(path)
    normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float))
    ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(ds.ImagePositionPatient, float) + shift_mm * normal]
    ds.save_as(path)


@dataclass(frozen=True)
class Row:
    """One bad input: what it is, the command line (with {placeholders}), and what the message names."""

    input: str
    argv: tuple[str, ...]
    names: str  # a fragment the one-line message must contain (the file or the option)
    problem: str  # a fragment of the problem's description


def _seg(image: str) -> tuple[str, ...]:
    return ("segment", image, "-o", "{out}/mask.nii.gz", "--modality", "ct")


def _dose(activity: str = "{activity}", liver: str = "{liver}", *extra: str) -> tuple[str, ...]:
    return ("dose", activity, "--liver", liver, "--activity-gbq", "1", "-o", "{out}", *extra)


def _reg(moving: str, *extra: str) -> tuple[str, ...]:
    return ("register", "{ct}", moving, "-o", "{out}", "--levels", "1", "--iterations", "1", *extra)


def _ev(image: str) -> tuple[str, ...]:
    return ("evaluate", image, "{liver}")


def _rows() -> list[Row]:
    return [
        Row("a missing file", _seg("{missing}"), "missing.nii.gz", "no such file"),
        Row("a missing file", _reg("{missing}"), "missing.nii.gz", "no such file"),
        Row("a missing file", _ev("{missing}"), "missing.nii.gz", "no such file"),
        Row("a missing study", ("plan", "{missing}", "-o", "{out}"), "missing.nii.gz", "no such"),
        Row("a missing config", ("train", "{missing_config}"), "missing.json", "no such"),
        Row("a folder where a file is expected", _ev("{folder}"), "a_folder", "no DICOM series"),
        Row("a folder where a file is expected", ("train", "{folder}"), "a_folder", "folder"),
        Row("a truncated .nii.gz", _seg("{truncated}"), "truncated.nii.gz", "cannot read"),
        Row("a 2D image", _ev("{image_2d}"), "image_2d.nii.gz", "3D"),
        Row("a 4D image", _dose("{image_4d}"),
            "image_4d.nii.gz", "3D"),
        Row("NaN voxels", _seg("{nan_voxels}"), "nan_voxels.nii.gz", "NaN"),
        Row("Inf voxels", _reg("{inf_voxels}"), "inf_voxels.nii.gz", "infinite"),
        Row("zero spacing", _ev("{zero_spacing}"), "zero_spacing.nii.gz", "zero voxel size"),
        Row("a mask that misses the image", _dose(liver="{far_mask}"), "far_mask.nii.gz", "does not overlap"),
        Row("a mask that misses the image", ("register", "{ct}", "{ct}", "-o", "{out}", "--fixed-mask", "{far_mask}",
                                             "--moving-mask", "{liver}"), "far_mask.nii.gz", "does not overlap"),
        Row("an empty mask", _dose(liver="{empty_mask}"),
            "empty_mask.nii.gz", "empty"),
        Row("an empty mask", ("register", "{ct}", "{ct}", "-o", "{out}", "--fixed-mask", "{empty_mask}",
                              "--moving-mask", "{liver}"), "empty_mask.nii.gz", "empty"),
        Row("non-integer labels", _dose("{activity}", "{liver}", "--lesions", "{fractional_labels}"), "fractional_labels.nii.gz", "non-integer"),
        Row("an all-zero activity map", _dose("{zero_activity}"), "zero_activity.nii.gz", "activity"),
        Row("a negative activity map", _dose("{negative_activity}"), "negative_activity.nii.gz",
            "negative"),
        Row("a DICOM folder with two series", _ev("{two_series}"), "two_series", "2 DICOM series"),
        Row("a DICOM series with a missing slice", _seg("{missing_slice}"), "missing_slice", "missing"),
        Row("a DICOM series with uneven slice spacing", _ev("{uneven_spacing}"), "uneven_spacing", "uneven"),
        Row("a volume too large for memory", _seg("{huge}"), "huge.nii", "GiB"),
        Row("a CT of stored values (rescale intercept lost)", _seg("{stored_ct}"), "stored_ct.nii.gz", "not in Hounsfield units"),
        Row("a CT of stored values (rescale intercept lost)", _dose("{activity}", "{liver}", "--ct", "{stored_ct}"),
            "stored_ct.nii.gz", "not in Hounsfield units"),
        Row("a CT of stored values (rescale intercept lost)", ("plan", "{stored_study}", "-o", "{out}/p"), "maa_ct.nii.gz",
            "not in Hounsfield units"),
        Row("an unwritable output folder", ("dose", "{activity}", "--liver", "{liver}", "--activity-gbq", "1", "-o",
                                            "/proc/sirtjax_out"), "/proc/sirtjax_out", "cannot write"),
        Row("an unwritable output folder", ("segment", "{ct}", "-o", "/proc/x/mask.nii.gz"), "/proc/x/mask.nii.gz",
            "cannot write"),
        Row("an existing output file", ("segment", "{ct}", "-o", "{liver}"), "liver.nii.gz", "--overwrite"),
        Row("a liver model for lesions", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--target", "lesions", "--model", "liver"),
            "--model", "segments liver, not lesions"),
        Row("a lesion threshold out of range", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--target", "lesions", "--threshold", "1.5"),
            "--threshold", "between 0 and 1"),
        Row("a negative lesion contrast-to-noise floor", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--target", "lesions", "--min-cnr", "-1"),
            "--min-cnr", ">= 0"),
        Row("a lesion contrast-to-noise floor for the liver", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--min-cnr", "3"), "--min-cnr",
            "is for --target lesions"),
        Row("a lesion threshold for the liver", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--threshold", "0.6"), "--threshold",
            "is for --target lesions"),
        Row("a liver mask for the liver", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--liver", "{liver}"), "--liver",
            "is for --target lesions"),
        Row("an empty mask", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--target", "lesions", "--liver", "{empty_mask}",
                              "--modality", "ct"), "empty_mask.nii.gz", "empty"),
        Row("a reference without its mask", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--reference", "{ct}"), "--reference-mask",
            "go together"),
        Row("a U-Net for registration", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--reference", "{ct}", "--reference-mask", "{liver}",
                                         "--model", "liver"), "--model", "not a registration-segmentation network"),
        Row("test-time flips for a model trained without them", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--tta"), "--tta",
            "trained without flips"),
        Row("the registration network without a reference", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--model", "regseg"), "--model",
            "use --reference"),
        Row("a U-Net as the plan's registration network", ("plan", "{study}", "-o", "{out}/p", "--regseg-model", "liver"),
            "--regseg-model", "not a registration-segmentation network"),
        Row("an MR for the registration network", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--reference", "{ct}", "--reference-mask",
                                                   "{liver}", "--modality", "mr"), "--modality", "both are ct"),
        Row("an empty reference mask", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--reference", "{ct}", "--reference-mask",
                                        "{empty_mask}"), "empty_mask.nii.gz", "empty"),
        Row("an existing DICOM output folder", ("segment", "{ct}", "-o", "{two_series}"), "two_series", "--overwrite"),
        Row("an output of unknown format", ("segment", "{ct}", "-o", "{out}/mask.seg"), "mask.seg",
            "unknown output format"),
        Row("an output with a detached header", ("segment", "{ct}", "-o", "{out}/mask.mhd"), "mask.mhd",
            "detached-header"),
        Row("a displacement field as a DICOM series", ("segment", "{ct}", "-o", "{out}/l.nii.gz", "--reference", "{ct}",
                                                       "--reference-mask", "{liver}", "--field", "{out}/field"),
            "out/field", "vector image"),
        Row("the output is the input", ("segment", "{ct}", "-o", "{ct}", "--overwrite"), "ct.nii.gz", "input"),
        Row("an image of air alone", ("segment", "{all_air}", "-o", "{out}/l.nii.gz"), "all_air.nii.gz", "holds no body"),
        Row("a constant MR", ("segment", "{zero_activity}", "-o", "{out}/l.nii.gz", "--modality", "mr"), "zero_activity.nii.gz",
            "holds no body"),
        Row("an output folder holding the inputs", ("dose", "{activity}", "--liver", "{liver}", "--activity-gbq", "1",
                                                    "-o", "{activity_dir}", "--overwrite"), "inputs", "input"),
        Row("the output is the input study", ("plan", "{study}", "-o", "{study}", "--overwrite"), "study", "input"),
        Row("a study inside the PACS export it reads", ("study", "{two_series}", "-o", "{two_series}/out"), "two_series/out",
            "inside the input folder"),
        Row("an output inside the input study", ("plan", "{study}", "-o", "{study}/plan"), "study/plan",
            "inside the input folder"),
        Row("a --plan folder that does not exist", ("verify", "{study}", "--plan", "{missing}", "-o", "{out}"),
            "missing.nii.gz", "no such folder"),
        Row("a SPECT resolution without a match", ("verify", "{study}", "-o", "{out}", "--spect-fwhm-mm", "12"),
            "--spect-fwhm-mm", "is for --match-fwhm-mm"),
        Row("a match without the SPECT's resolution", ("verify", "{study}", "-o", "{out}", "--pet-fwhm-mm", "8",
                                                      "--match-fwhm-mm", "14"), "--match-fwhm-mm",
            "needs --pet-fwhm-mm and --spect-fwhm-mm"),
        Row("a match sharper than the SPECT", ("verify", "{study}", "-o", "{out}", "--pet-fwhm-mm", "8", "--spect-fwhm-mm",
                                               "12", "--match-fwhm-mm", "10"), "--match-fwhm-mm", "no sharper than either"),
        Row("LSF >= 1", ("plan", "{study}", "-o", "{out}", "--lung-shunt", "1.5"), "--lung-shunt", "[0, 1)"),
        Row("negative activity", ("dose", "{activity}", "--liver", "{liver}", "--activity-gbq", "-1", "-o", "{out}"), "--activity-gbq", "positive"),
        Row("negative activity", ("prescribe", "--method", "bsa", "--height-m", "1.7", "--weight-kg", "-70",
                                  "--liver-ml", "1500", "--tumour-ml", "100"), "--weight-kg", "positive"),
        Row("LSF >= 1", _dose("{activity}", "{liver}", "--lung-shunt", "1"), "--lung-shunt", "[0, 1)"),
        Row("LSF >= 1", ("prescribe", "--dose-gy", "40", "--normal-ml", "1300", "--tumour-ml", "200", "--tn", "3",
                         "--lsf", "1.0"), "--lsf", "[0, 1)"),
        Row("zero iterations", ("register", "{ct}", "{ct}", "-o", "{out}", "--iterations", "0"), "--iterations",
            "at least 1"),
    ]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r.argv[0]}: {r.input}")
def test_bad_input_is_one_line_and_exit_2(row, files, tmp_path, capfd):
    out = tmp_path / "out"
    activity_dir = tmp_path / "inputs"
    activity_dir.mkdir()
    for k in ("activity", "liver"):
        shutil.copy(files[k], activity_dir / files[k].name)
    names = {k: str(v) for k, v in files.items()} | {"out": str(out), "activity_dir": str(activity_dir)}
    if row.input == "an output folder holding the inputs":
        names |= {"activity": str(activity_dir / "activity.nii.gz"), "liver": str(activity_dir / "liver.nii.gz")}
    argv = [a.format(**names) for a in row.argv]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capfd.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    ROWS.append((row.input, "sirtjax " + " ".join(map(_short, argv)), exit_info.value.code,
                 re.sub(re.escape(tempfile.gettempdir()) + r"/\S*/", "", lines[0]) if lines else ""))
    assert exit_info.value.code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and row.names in lines[0] and row.problem in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists(), "an output was left behind"
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before, "files appeared or changed next to the output"


def _short(arg: str) -> str:
    """A path in the test's temporary folders shortened to its file name."""
    return Path(arg).name if arg.startswith(tempfile.gettempdir()) else arg


def test_mask_on_another_overlapping_grid_is_resampled_and_said(files, tmp_path, capfd):
    """dose --liver on another grid: exit 0, and the console says it resampled, with both volumes."""
    d = tmp_path
    liver = nib.load(str(files["liver"]))
    other = write_volume(make_volume(np.transpose(np.asarray(liver.dataobj), (2, 1, 0))[::2],
                                     (2.0, 3.0, 5.0), (-20.0, -30.0, 10.0), DIRECTION), d / "liver_4mm.nii.gz")
    capfd.readouterr()
    main(["dose", str(files["activity"]), "--liver", str(other), "--activity-gbq", "1", "-o", str(d / "out")])
    captured = capfd.readouterr()
    notice = [ln for ln in captured.err.splitlines() if "resampled" in ln]
    ROWS.append(("a mask on another, overlapping grid", "sirtjax dose activity.nii.gz --liver liver_4mm.nii.gz ...",
                 0,
                 notice[0] if notice else ""))
    assert notice and notice[0].startswith("warning: the liver mask is on another grid"), captured.err
    assert not captured.out.startswith("\n") and not captured.err.startswith("\n")  # no blank first line
    report = json.loads((d / "out" / "report.json").read_text())
    assert any(w["code"] == "mask_resampled" for w in report["warnings"]), report["warnings"]


def test_a_tilted_nifti_is_read_through_its_qform_with_one_warning_line(files, tmp_path, capfd):
    """dose on an activity and a liver whose sforms are sheared (a gantry tilt) and whose qforms are their grids: exit
    0, one warning line per file naming it, and the dose on the qform's grid, as SimpleITK reads the file."""
    tilted = {}
    for k in ("activity", "liver"):
        img = nib.load(str(files[k]))
        qform = img.affine
        sform = qform.copy()
        sform[1, 2] += 0.5
        out = nib.Nifti1Image(np.asarray(img.dataobj), sform)
        out.set_qform(qform, code=1)
        out.set_sform(sform, code=1)
        tilted[k] = tmp_path / f"tilted_{k}.nii.gz"
        nib.save(out, str(tilted[k]))
    capfd.readouterr()
    main(["dose", str(tilted["activity"]), "--liver", str(tilted["liver"]), "--activity-gbq", "1", "-o", str(tmp_path / "out")])
    captured = capfd.readouterr()
    warned = [ln for ln in captured.err.splitlines() if "sheared" in ln]
    ROWS.append(("a NIfTI with a sheared sform and a qform", "sirtjax dose tilted_activity.nii.gz --liver tilted_liver.nii.gz ...",
                 0, re.sub(re.escape(str(tmp_path)) + "/", "", warned[0]) if warned else ""))
    assert [ln.split(":")[1].strip() for ln in warned] == [str(tilted["activity"]), str(tilted["liver"])], captured.err
    assert all(ln.startswith("warning: ") and "read with the qform" in ln for ln in warned)
    dose, reference = sitk.ReadImage(str(tmp_path / "out" / "dose.nii.gz")), sitk.ReadImage(str(tilted["activity"]))
    np.testing.assert_allclose(dose.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(dose.GetDirection(), reference.GetDirection(), atol=1e-6)

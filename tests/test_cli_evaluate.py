"""`sirtjax evaluate`: files in, per-label numbers out (JSON or tables), one-line input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

import sirtjax.metrics as M
from sirtjax.cli import main
from sirtjax.io import read_volume, write_volume
from sirtjax.volume import make_volume

SPACING = (0.8, 1.3, 2.5)
ORIGIN = (-30.0, 12.0, 140.0)
DIRECTION = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
SHAPE = (16, 22, 26)


def ellipsoid(centre_zyx, radii_vox):
    z, y, x = np.indices(SHAPE)
    d = ((z - centre_zyx[0]) / radii_vox[0]) ** 2 + ((y - centre_zyx[1]) / radii_vox[1]) ** 2
    return d + ((x - centre_zyx[2]) / radii_vox[2]) ** 2 <= 1.0


def write(tmp_path, name, array, origin=ORIGIN):
    path = tmp_path / name
    write_volume(make_volume(array.astype(np.uint8), SPACING, origin, DIRECTION), path)
    return path


def run_json(capsys, *args):
    main(["evaluate", *map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def label_files(tmp_path):
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    pred[ellipsoid((8, 11, 13), (6, 8, 9))] = 1
    ref[ellipsoid((9, 10, 14), (6, 7, 10))] = 1
    pred[ellipsoid((0, 3, 3), (3, 3, 3))] = 2  # touches the border
    ref[ellipsoid((1, 3, 4), (3, 3, 3))] = 2
    pred[ellipsoid((13, 18, 22), (2, 2, 2))] = 4  # only in pred
    return write(tmp_path, "pred.nii.gz", pred), write(tmp_path, "ref.nii.gz", ref)


def test_json_per_label_matches_library_and_simpleitk(label_files, capsys):
    pred_path, ref_path = label_files
    report = run_json(capsys, pred_path, ref_path)
    rows = {r["label"]: r for r in report["labels"]}
    assert sorted(rows) == [1, 2, 4]
    expected = M.label_metrics(read_volume(pred_path), read_volume(ref_path))
    for lab in (1, 2):
        assert rows[lab] == pytest.approx(expected[lab].to_json())
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.ReadImage(str(pred_path)), sitk.ReadImage(str(ref_path)))
    assert rows[1]["dsc"] == pytest.approx(f.GetDiceCoefficient(1), rel=1e-12)  # same integer counts
    assert rows[4]["empty"] == "ref" and rows[4]["assd_mm"] is None and rows[4]["rv"] is None


def test_binary_masks_with_an_empty_prediction_give_valid_json(tmp_path, capsys):
    pred = write(tmp_path, "empty.nii.gz", np.zeros(SHAPE))
    ref = write(tmp_path, "ref.nii.gz", ellipsoid((8, 11, 13), (5, 6, 7)))
    report = run_json(capsys, pred, ref)
    (row,) = report["labels"]
    assert row["empty"] == "pred" and row["dsc"] == 0.0 and row["hd95_mm"] is None and row["volume_pred_ml"] == 0.0


def test_tables_list_every_label(label_files, capsys):
    main(["evaluate", *map(str, label_files), "--rmsd"])
    out = capsys.readouterr().out
    assert "HD95" in out and "RMSD" in out and "missing in ref [4]" in out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "4"]
    assert rows[2][-1] == "ref" and rows[2][5:9] == ["inf"] * 4  # label 4 only in pred


def test_rmsd_json(label_files, capsys):
    report = run_json(capsys, *label_files, "--rmsd")
    expected = M.rmsd(read_volume(label_files[0]), read_volume(label_files[1]))
    assert report["rmsd"]["rmsd_mm"] == pytest.approx(expected.rmsd_mm)
    assert report["rmsd"]["missing_in_ref"] == [4] and list(report["rmsd"]["mcd_mm"]) == ["2"]


def test_lesions_on_binary_masks(tmp_path, capsys):
    pred = ellipsoid((4, 5, 5), (2, 2, 2)) | ellipsoid((12, 16, 20), (2, 2, 2))
    ref = ellipsoid((4, 6, 5), (2, 3, 2)) | ellipsoid((10, 5, 20), (2, 2, 2))
    report = run_json(capsys, write(tmp_path, "p.nii.gz", pred), write(tmp_path, "r.nii.gz", ref), "--lesions")
    d = report["lesions"]
    assert (d["n_ref"], d["n_pred"], d["tp"], d["fn"], d["fp"]) == (2, 2, 1, 1, 1)
    (row,) = report["labels"]
    assert row["label"] == 1 and row["dsc"] == pytest.approx(M.dice(pred, ref))


def test_grid_mismatch_is_one_line_naming_pred(label_files, tmp_path, capsys):
    shifted = write(tmp_path, "shifted.nii.gz", np.ones(SHAPE), origin=(-29.0, 12.0, 140.0))
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(shifted), str(label_files[1])])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {shifted}: grid differs") and "origin" in err and "\n" not in err


@pytest.mark.parametrize("problem", ["fractional", "missing", "both-flags"])
def test_bad_input_exits_2_with_one_line(problem, label_files, tmp_path, capsys):
    pred, ref = label_files
    extra = []
    if problem == "fractional":
        pred = tmp_path / "prob.nii.gz"
        write_volume(make_volume(np.full(SHAPE, 0.3, np.float32), SPACING, ORIGIN, DIRECTION), pred)
    elif problem == "missing":
        pred = tmp_path / "nope.nii.gz"
    else:
        extra = ["--rmsd", "--lesions"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(pred), str(ref), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {pred}:") and "\n" not in err

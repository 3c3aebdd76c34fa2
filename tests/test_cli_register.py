"""`sirtjax register` end to end on small volumes: outputs, SimpleITK reproduction, errors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.cli import main
from sirtjax.io import read_volume, write_volume
from sirtjax.registration import PRESETS, RegistrationConfig, config_from_dict
from sirtjax.volume import make_volume, world_grid

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "registration"


def _scene(vol, shift):
    p = np.asarray(world_grid(vol)) - shift
    body = np.linalg.norm(p / np.array([30.0, 24.0, 26.0]), axis=-1) < 1
    liver = np.linalg.norm((p - np.array([8.0, 0.0, 3.0])) / np.array([14.0, 11.0, 12.0]), axis=-1) < 1
    spot = np.linalg.norm(p - np.array([-10.0, 5.0, -6.0]), axis=-1) < 6
    labels = liver.astype(np.uint8) + 2 * spot.astype(np.uint8)
    return (50.0 * body + 60.0 * liver + 80.0 * spot).astype(np.float32), labels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("reg")
    fixed = make_volume(np.zeros((16, 18, 20), np.float32), (3.5, 3.0, 3.5), (-34.0, -27.0, -28.0))
    moving = make_volume(np.zeros((16, 18, 18), np.float32), (3.6, 3.2, 3.8), (-30.0, -30.0, -32.0),
                         np.array([[0.98, -0.2, 0], [0.2, 0.98, 0], [0, 0, 1.0]]) / np.sqrt(0.98**2 + 0.04) * [1, 1, np.sqrt(0.98**2 + 0.04)])
    fi, fl = _scene(fixed, np.zeros(3))
    mi, ml = _scene(moving, np.array([4.0, -3.0, 5.0]))
    out = {}
    for name, vol in (("fixed", fixed.with_array(fi)), ("moving", moving.with_array(200 - mi)),
                      ("fixed_labels", fixed.with_array(fl)), ("moving_labels", moving.with_array(ml))):
        out[name] = write_volume(vol, d / f"{name}.nii.gz")
    return d, out


def test_register_cli_outputs_and_simpleitk_reproduces_the_warp(files, capsys):
    d, f = files
    out = d / "out"
    main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(out), "--fixed-labels", str(f["fixed_labels"]),
          "--moving-labels", str(f["moving_labels"]), "--apply", str(f["moving_labels"]), "--levels", "1",
          "--iterations", "15", "--config", str(CONFIGS / "cnn-lm-guided.json")])
    message = capsys.readouterr().out
    assert "registered (cnn-lm-guided)" in message and "% of the fixed liver" in message
    assert {p.name for p in out.iterdir()} == {"warped.nii.gz", "displacement.nii.gz", "affine.json", "report.json",
                                               "moving_labels_warped.nii.gz"}
    field = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    fixed_img, moving_img = sitk.ReadImage(str(f["fixed"])), sitk.ReadImage(str(f["moving"]))
    ref = sitk.GetArrayFromImage(sitk.Resample(moving_img, fixed_img, tx, sitk.sitkLinear, 0.0))
    np.testing.assert_allclose(read_volume(out / "warped.nii.gz").array, ref, atol=2e-3)  # float32 vs ITK float64
    labels = read_volume(out / "moving_labels_warped.nii.gz")
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) <= {0, 1, 2}
    ref_labels = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(f["moving_labels"])), fixed_img, tx,
                                                      sitk.sitkNearestNeighbor, 0))
    assert np.mean(labels.array == ref_labels) > 0.999  # nearest rounding at exact half-voxel ties may differ
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == {**dataclasses.asdict(PRESETS["cnn-lm-guided"]), "levels": 1, "affine_iterations": 15,
                                "nonrigid_iterations": 15}  # the file, then the command-line overrides
    assert [s["stage"] for s in report["stages"]] == ["affine", "image", "nonrigid"]  # one level keeps the test fast
    assert report["compile_s"] >= 0 and report["optimise_s"] > 0
    assert 0 <= report["jacobian_liver"]["fraction_nonpositive"] < 0.001
    affine = json.loads((out / "affine.json").read_text())
    assert np.asarray(affine["homogeneous"]).shape == (4, 4)


def test_register_cli_cnn_guided_leaves_the_image_term_out_unless_weighted(files):
    d, f = files
    common = ["--fixed-mask", str(f["fixed_labels"]), "--moving-mask", str(f["moving_labels"]), "--levels", "1",
              "--iterations", "10"]
    for name, extra in (("default", []), ("weighted", ["--w-image", "0.5"])):
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(d / name), *common, *extra])
    default, weighted = (json.loads((d / n / "report.json").read_text()) for n in ("default", "weighted"))
    assert default["preset"] == "cnn-guided" and not default["config"]["nonrigid_image"]
    assert set(default["stages"][-1]["terms_last"]) == {"loss", "seg", "reg"}
    assert weighted["config"]["nonrigid_image"] and weighted["config"]["w_image"] == 0.5
    assert set(weighted["stages"][-1]["terms_last"]) == {"loss", "image", "seg", "reg"}


def test_register_cli_rejects_half_given_guidance(files, capsys):
    d, f = files
    with pytest.raises(SystemExit) as exc:
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(d / "bad"), "--fixed-mask", str(f["fixed_labels"])])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "give both --fixed-mask and --moving-mask" in err
    assert not (d / "bad").exists()


def test_register_cli_rejects_zero_iterations(files, capsys):
    d, f = files
    with pytest.raises(SystemExit) as exc:
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(d / "bad"), "--iterations", "0"])
    assert exc.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_config_files_are_the_presets():
    """configs/registration/<preset>.json hold exactly PRESETS (regenerate them from PRESETS with
    json.dumps(dataclasses.asdict(PRESETS[name]), indent=2) after changing a preset)."""
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(PRESETS)
    for name, preset in PRESETS.items():
        assert config_from_dict(json.loads((CONFIGS / f"{name}.json").read_text())) == preset, name
    assert config_from_dict({"levels": 2}) == dataclasses.replace(RegistrationConfig(), levels=2)
    assert config_from_dict({"finest_mm": 3}).finest_mm == 3.0 and config_from_dict({"samples": None}).samples is None
    # float settings that may be None (null in the JSON files) stay None
    assert config_from_dict({"roi_margin_mm": None, "finest_mm": None}) == dataclasses.replace(
        RegistrationConfig(), roi_margin_mm=None, finest_mm=None)
    for bad in ({"level": 2}, {"levels": "2"}, {"w_reg": True}, {"samples": 0}, {"image_field_samples": 10**6}):
        with pytest.raises(ValueError):
            config_from_dict(bad)


def test_register_cli_rejects_a_bad_config_file(files, capsys):
    d, f = files
    bad = d / "bad.json"
    bad.write_text('{"levels": 3, "stiffnes": 2}')
    with pytest.raises(SystemExit) as exc:
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(d / "bad"), "--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown registration setting(s): stiffnes" in err
    assert not (d / "bad").exists()

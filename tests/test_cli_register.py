"""`sirtjax register` end to end on small volumes: outputs, SimpleITK reproduction, errors."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.cli import main
from sirtjax.io import read_volume, write_volume
from sirtjax.registration import PRESETS, NonrigidStage, Overrides, RegistrationConfig, config_from_dict
from sirtjax.registration.config import Pyramid
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
    # the file, then the command-line overrides
    assert report["config"] == json.loads(json.dumps(dataclasses.asdict(Overrides(levels=1, iterations=15).apply(
        PRESETS["cnn-lm-guided"]))))
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
    assert default["preset"] == "cnn-guided" and not default["config"]["stages"][-1]["image_term"]
    assert set(default["stages"][-1]["terms_last"]) == {"loss", "seg", "reg"}
    assert weighted["config"]["stages"][-1]["image_term"] and weighted["config"]["stages"][-1]["w_image"] == 0.5
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
    default = RegistrationConfig()
    assert config_from_dict({"pyramid": {"levels": 2}}) == dataclasses.replace(default, pyramid=Pyramid(levels=2))
    assert config_from_dict({"pyramid": {"finest_mm": 3}}).pyramid.finest_mm == 3.0
    assert config_from_dict({"affine": {"samples": None}}).affine.samples is None
    # float settings that may be None (null in the JSON files) stay None
    assert config_from_dict({"similarity": {"roi_margin_mm": None}, "pyramid": {"finest_mm": None}}) == dataclasses.replace(
        default, similarity=dataclasses.replace(default.similarity, roi_margin_mm=None), pyramid=Pyramid(finest_mm=None))
    # a stage's missing fields are NonrigidStage's defaults; no stages: the affine alone
    two = config_from_dict({"stages": [{"images_only": True, "field_order": 3}, {"w_reg": 50}]})
    assert two.stages == (NonrigidStage(images_only=True, field_order=3), NonrigidStage(w_reg=50.0))
    assert config_from_dict({"stages": []}).stages == ()
    for bad, says in (({"levels": 2}, "unknown registration setting(s): levels"),
                      ({"pyramid": {"level": 2}}, "pyramid.level"), ({"pyramid": {"levels": "2"}}, "pyramid.levels"),
                      ({"stages": [{"w_reg": True}]}, "stages[0].w_reg"), ({"affine": {"samples": 0}}, "samples"),
                      ({"stages": {"w_reg": 1}}, "must be a list"), ({"affine": 3}, "must be a JSON object"),
                      ({"stages": [{}, {"field_order": 3}]}, "first non-rigid stage"), ({"optimiser": "sgd"}, "sgd")):
        with pytest.raises(ValueError, match=re.escape(says)):
            config_from_dict(bad)


def test_overrides_change_the_guided_stages():
    """Overrides set what they name: the affine's and the guided stages' iterations and weights, not the images-only
    stage's; the image weight switches the image term; no non-rigid levels or no image stages drop stages."""
    preset = PRESETS["cnn-guided"]
    image, guided = preset.stages
    changed = Overrides(iterations=7, w_image=0.5, w_reg=3.0, levels=2, liver_stiffness=2.0, metric="ssd").apply(preset)
    assert changed.stages[0] == image and changed.affine.iterations == 7 and changed.pyramid.levels == 2
    assert changed.stages[1] == dataclasses.replace(guided, iterations=7, w_image=0.5, image_term=True, w_reg=3.0)
    assert changed.regulariser.liver_stiffness == 2.0 and changed.similarity.metric == "ssd"
    assert Overrides(image_stages=False).apply(preset).stages == (guided,)
    assert Overrides(nonrigid_levels=0).apply(preset).stages == ()
    assert Overrides().apply(preset) == preset and Overrides(w_reg=3.0).given() == {"w_reg": 3.0}


def test_register_cli_rejects_a_bad_config_file(files, capsys):
    d, f = files
    bad = d / "bad.json"
    bad.write_text('{"pyramid": {"levels": 3}, "stiffnes": 2}')
    with pytest.raises(SystemExit) as exc:
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(d / "bad"), "--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown registration setting(s): stiffnes (the settings are nested: pyramid," in err
    assert not (d / "bad").exists()


def test_register_process_keeps_its_imports_lean(files, tmp_path):
    """A `sirtjax register` process (issue 33's start-up budget) imports neither flax, orbax nor matplotlib, nor the
    workflow pipelines: checked from the interpreter's own import log (-X importtime) of a whole run."""
    import os
    import subprocess
    import sys

    d, f = files
    env = dict(os.environ, SIRTJAX_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "sirtjax", "register", str(f["fixed"]), str(f["moving"]),
                          "--fixed-mask", str(f["fixed_labels"]), "--moving-mask", str(f["moving_labels"]),
                          "--iterations", "2", "-o", str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "sirtjax.registration" in imported and (tmp_path / "out" / "report.json").exists()
    heavy = sorted(m for m in imported if m.split(".")[0] in ("flax", "orbax", "matplotlib") or m.startswith("sirtjax.pipelines"))
    assert not heavy, heavy


def test_registration_settings_hold_the_preset_rules_of_register_and_cohort(files):
    """One function checks what register and cohort are given: guidance in pairs and as the preset needs it (the preset
    chosen from it when not given), levels and iterations >= 1, weights >= 0, an affine on segmentations only with
    guidance; each refusal names the option or file."""
    from sirtjax.errors import InputError
    from sirtjax.registration.request import registration_settings

    _, f = files
    guided, none = CONFIGS / "cnn-guided.json", dict.fromkeys(("fixed_mask", "moving_mask", "fixed_labels", "moving_labels"))
    masks = {**none, "fixed_mask": f["fixed_labels"], "moving_mask": f["moving_labels"]}
    assert registration_settings(None, guided, guidance=masks) == ("cnn-guided", PRESETS["cnn-guided"])
    assert registration_settings(None, guidance=none) == ("image-based", None)
    assert registration_settings(None) == (None, None)  # a cohort's: the preset comes from each case
    for args, kwargs, says in (
        ((None,), {"guidance": {**none, "moving_labels": f["moving_labels"]}},
         f"{f['moving_labels']}: give both --fixed-labels and --moving-labels"),
        (("cnn-lm-guided",), {"guidance": masks}, "cnn-lm-guided: the cnn-lm-guided preset needs --fixed-labels and --moving-labels"),
        ((None,), {"overrides": Overrides(levels=0)}, "--levels: must be at least 1"),
        ((None,), {"overrides": Overrides(w_reg=-1.0)}, "--stiffness: must be a non-negative number, got -1.0"),
        ((None,), {"overrides": Overrides(liver_stiffness=float("nan"))}, "--liver-stiffness: must be a non-negative number, got nan"),
        (("image-based", guided), {}, f"{guided}: an affine on segmentations needs masks or label maps"),
        ((None, guided), {"guidance": none}, f"{guided}: an affine on segmentations needs masks or label maps"),
    ):
        with pytest.raises(InputError) as exc:
            registration_settings(*args, **kwargs)
        assert str(exc.value) == says


def test_register_files_returns_the_numbers_of_its_report(files):
    """register_files gives the report's numbers typed: the preset, seconds in all and compiling, det J <= 0 fractions."""
    from sirtjax.registration.request import RegistrationRequest, register_files

    d, f = files
    run = register_files(RegistrationRequest(f["fixed"], f["moving"], d / "typed", fixed_mask=f["fixed_labels"],
                                             moving_mask=f["moving_labels"], overrides=Overrides(levels=1, iterations=3)))
    report = json.loads((d / "typed" / "report.json").read_text())
    assert run.checked.preset == report["preset"] == "cnn-guided"
    assert (run.total_s, run.compile_s) == (report["total_s"], report["compile_s"]) and run.total_s > run.compile_s
    assert run.nonpositive_fraction == report["jacobian"]["fraction_nonpositive"]
    assert run.liver_nonpositive_fraction == report["jacobian_liver"]["fraction_nonpositive"]
    assert [w.to_dict() for w in run.warnings] == report["warnings"]


def test_register_no_compress_writes_the_same_images_as_nii_and_a_seconds_table(files):
    """--no-compress writes .nii images equal to the .nii.gz ones of the same call; report.json's seconds table
    names every phase, and its parts fit inside the call."""
    d, f = files
    outs = {}
    for flag in ("--compress", "--no-compress"):
        outs[flag] = out = d / f"nc{flag}"
        main(["register", str(f["fixed"]), str(f["moving"]), "-o", str(out), "--fixed-mask", str(f["fixed_labels"]),
              "--moving-mask", str(f["moving_labels"]), "--levels", "1", "--iterations", "5", flag,
              "--apply", str(f["moving_labels"])])
    assert {p.name for p in outs["--no-compress"].iterdir()} == {"warped.nii", "displacement.nii", "affine.json",
                                                                "report.json", "moving_labels_warped.nii"}
    for name in ("warped", "moving_labels_warped"):
        np.testing.assert_array_equal(read_volume(outs["--no-compress"] / f"{name}.nii").array,
                                      read_volume(outs["--compress"] / f"{name}.nii.gz").array)
    np.testing.assert_array_equal(read_volume(outs["--no-compress"] / "displacement.nii", vector=True).array,
                                  read_volume(outs["--compress"] / "displacement.nii.gz", vector=True).array)
    report = json.loads((outs["--no-compress"] / "report.json").read_text())
    seconds = report["seconds"]
    assert list(seconds) == ["read", "pyramids", "levels", "affine", "nonrigid", "finish", "checks", "write"]
    assert all(s >= 0 for s in seconds.values())
    assert sum(v for k, v in seconds.items() if k != "write") <= report["total_s"]

"""`sirtjax radiobiology`: the BED map and per-VOI NTCP/TCP of a dose file, against the closed forms (scipy)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from sirtjax.cli import main
from sirtjax.dosimetry.constants import Y90_HALF_LIFE_H
from sirtjax.io import read_volume, write_volume
from sirtjax.volume import make_volume, same_grid

NORMAL = {"alpha_beta_gy": 2.5, "repair_half_time_h": 1.5, "source": "test values",
          "lkb": {"td50_gy": 40.0, "m": 0.15, "n": 0.97, "quantity": "eqd2"}}
LESION = {"alpha_beta_gy": 10.0, "repair_half_time_h": 0.5, "source": "test values", "alpha_per_gy": 0.3,
          "clonogens_per_ml": 1e6}


def _bed(d, ab, rep):
    lam, mu = math.log(2) / Y90_HALF_LIFE_H, math.log(2) / rep
    return d * (1 + d * lam / ((mu + lam) * ab))


@pytest.fixture
def case(tmp_path):
    """A 40 Gy normal liver and a 150 Gy lesion (id 7) on an oblique, anisotropic dose grid, the masks on the same grid."""
    c, s = math.cos(0.3), math.sin(0.3)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    shape = (12, 20, 24)
    liver = np.zeros(shape, np.uint8)
    liver[2:10, 4:16, 4:20] = 1
    lesion = np.zeros(shape, np.uint16)
    lesion[4:8, 6:10, 6:10] = 7
    dose = np.where(lesion > 0, 150.0, np.where(liver > 0, 40.0, 2.0)).astype(np.float32)
    geo = dict(spacing_mm=(4.0, 3.0, 5.0), origin_mm=(-30.0, 10.0, -40.0), direction=direction)
    paths = {}
    for name, arr in (("dose", dose), ("liver", liver), ("lesions", lesion)):
        paths[name] = write_volume(make_volume(arr, geo["spacing_mm"], geo["origin_mm"], geo["direction"]),
                                   tmp_path / f"{name}.nii.gz")
    return tmp_path, paths


def _params(folder, **tissues):
    path = folder / "params.json"
    path.write_text(json.dumps(tissues))
    return path


def test_radiobiology_command_against_closed_forms(case, capsys):
    folder, paths = case
    out = folder / "out"
    main(["radiobiology", str(paths["dose"]), "--liver", str(paths["liver"]), "--lesions", str(paths["lesions"]),
          "--params", str(_params(folder, normal_liver=NORMAL, lesion=LESION)), "-o", str(out)])
    assert "wrote" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    vois = {v["name"]: v for v in report["vois"]}
    assert set(vois) == {"normal_liver", "lesion_7"} and report["unmodelled"] == report["empty"] == []
    bed_liver = _bed(40.0, 2.5, 1.5)
    assert vois["normal_liver"]["mean_bed_gy"] == pytest.approx(bed_liver, rel=1e-5)
    eqd2 = bed_liver / (1 + 2 / 2.5)
    assert vois["normal_liver"]["ntcp"] == pytest.approx(stats.norm.cdf((eqd2 - 40.0) / (0.15 * 40.0)), abs=1e-5)
    bed_lesion = _bed(150.0, 10.0, 0.5)
    clonogens = 1e6 * 64 * 60 / 1000  # 64 voxels of 60 mm^3
    assert vois["lesion_7"]["tcp"] == pytest.approx(math.exp(-clonogens * math.exp(-0.3 * bed_lesion)), rel=1e-4)
    assert vois["lesion_7"]["eud_bed_gy"] == pytest.approx(bed_lesion, rel=1e-5)  # uniform: EUD = BED
    assert vois["lesion_7"]["ntcp"] is None and vois["normal_liver"]["tcp"] is None
    bed = read_volume(out / "bed.nii.gz")
    assert same_grid(bed, read_volume(paths["dose"]))
    lesion = np.asarray(read_volume(paths["lesions"]).array) > 0
    liver = (np.asarray(read_volume(paths["liver"]).array) > 0) & ~lesion
    b = np.asarray(bed.array)
    np.testing.assert_allclose(b[lesion], bed_lesion, rtol=1e-5)
    np.testing.assert_allclose(b[liver], bed_liver, rtol=1e-5)
    assert np.all(b[~liver & ~lesion] == 0)
    header = (out / "bed_dvh.csv").read_text().splitlines()[0]
    assert header == "bed_gy,normal_liver_volume_pct,lesion_7_volume_pct"


def test_radiobiology_without_a_lesion_model_skips_the_lesions(case, capsys):
    folder, paths = case
    main(["radiobiology", str(paths["dose"]), "--liver", str(paths["liver"]), "--lesions", str(paths["lesions"]),
          "--params", str(_params(folder, normal_liver=NORMAL)), "-o", str(folder / "out")])
    assert "no tissue model for: lesion_7" in capsys.readouterr().err
    assert json.loads((folder / "out" / "report.json").read_text())["unmodelled"] == ["lesion_7"]


@pytest.mark.parametrize("tissues, message", [
    ({"normal_liver": {**NORMAL, "alpha_beta_gy": -1}}, "normal_liver.alpha_beta_gy: expected a positive number"),
    ({"normal_liver": {k: v for k, v in NORMAL.items() if k != "source"}}, "'source' is required"),
    ({"tumour": LESION}, "expected an object with normal_liver and/or lesion"),
    ({"lesion": {**LESION, "alpha_per_gy": None}}, "clonogens_per_ml (TCP) needs alpha_per_gy"),
    ({"normal_liver": {**NORMAL, "lkb": {**NORMAL["lkb"], "quantity": "dose"}}}, "lkb.quantity: one of eqd2, bed"),
])
def test_bad_parameters_exit_2_naming_the_file(case, capsys, tissues, message):
    folder, paths = case
    params = _params(folder, **tissues)
    with pytest.raises(SystemExit) as exc:
        main(["radiobiology", str(paths["dose"]), "--liver", str(paths["liver"]), "--params", str(params),
              "-o", str(folder / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(params) in err and message in err and len(err.strip().splitlines()) == 1
    assert not (folder / "out").exists()

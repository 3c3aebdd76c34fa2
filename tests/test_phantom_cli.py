"""`sirtjax phantom` and `sirtjax demo` on the command line."""

from __future__ import annotations

import json

import pytest

from sirtjax.cli import main
from sirtjax.phantom import IMAGE_FILES


def test_phantom_writes_the_study_folder(tmp_path, capsys):
    out = tmp_path / "study"
    main(["phantom", str(out), "--seed", "4", "--small"])
    names = {p.name for p in out.iterdir()}
    assert names == {f"{s}.nii.gz" for s in IMAGE_FILES} | {"truth.json", "study.json", "montage.png"}
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "truth.json").read_text())["seed"] == 4
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("seed", ["-3", "abc", "1.5"])
def test_bad_seed_exits_2_with_one_line(tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as exc:
        main(["phantom", str(tmp_path / "x"), "--seed", seed])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "seed" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_output_path_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["phantom", str(target), "--small"])
    assert exc.value.code == 2
    assert str(target) in capsys.readouterr().err

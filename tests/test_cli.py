"""The command-line shell: help lists the commands; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sirtjax.cli import main


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "sirtjax", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("demo", "phantom", "evaluate"):
        assert command in out.stdout


def test_the_executable_ends_fast_with_its_output_and_exit_status(tmp_path):
    """``python -m sirtjax`` (and the ``sirtjax`` script) end with os._exit after the command: stdout arrives whole,
    a success is 0 and bad input 2 with its one line."""
    from sirtjax.io import write_volume
    from sirtjax.volume import make_volume

    mask = np.zeros((6, 7, 8), np.uint8)
    mask[2:4, 2:5, 3:6] = 1
    path = write_volume(make_volume(mask, (2.0, 2.0, 3.0)), tmp_path / "mask.nii.gz")
    ok = subprocess.run([sys.executable, "-m", "sirtjax", "evaluate", str(path), str(path), "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["labels"][0]["dsc"] == 1.0
    bad = subprocess.run([sys.executable, "-m", "sirtjax", "evaluate", str(tmp_path / "nope.nii.gz"), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope.nii.gz" in bad.stderr


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    main(["--version"])
    assert capsys.readouterr().out.strip() == f"sirtjax {version('sirtjax')}"


def _run(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def test_missing_input_file_is_one_line_exit_2(capsys, tmp_path):
    missing = tmp_path / "nope.nii.gz"
    code, err = _run(capsys, "evaluate", str(missing), str(missing))
    assert code == 2
    assert str(missing) in err
    assert "Traceback" not in err


def test_unknown_option_is_usage_error(capsys):
    code, err = _run(capsys, "phantom", "--no-such-option")
    assert code == 2
    assert "no-such-option" in err


def test_debug_shows_the_exception(tmp_path):
    from sirtjax.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "evaluate", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")])


HELP_COMMANDS = ["plan", "verify", "register", "segment", "dose", "prescribe", "demo", "phantom", "cohort", "study",
                 "evaluate", "radiobiology", "train"]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_is_plain_and_names_only_its_own_options(command, capsys):
    """No '<bool>' after flags, no Python types ('<str>', '<list[Path]>') for options, no blank first line, no pointer
    to the repository's files (an installed package has no docs/, configs/ or DESIGN.md), and at most 70 lines; plan's
    help does not refer to verify's --plan."""
    main([command, "--help"])  # returns: no exit code but 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and out.startswith("Usage: ")
    assert not any(t in out for t in ("docs/", "configs/", "DESIGN.md")), out
    assert len(out.splitlines()) <= 70, out
    assert not any(t in out for t in ("<str>", "<int>", "<float>", "<list[")), out
    assert ("--plan" in out) == (command == "verify")
    if command in ("plan", "prescribe"):
        assert "mono-compartment" in out


def test_choices_are_the_librarys_and_help_shows_them(capsys):
    """The command line's choices are the library's names: presets, modalities; an unknown one is a usage error."""
    from sirtjax.cli._app import Modality, Preset
    from sirtjax.registration import PRESETS
    from sirtjax.segmentation.preprocess import MODALITIES

    assert [p.value for p in Preset] == list(PRESETS) and tuple(m.value for m in Modality) == MODALITIES
    main(["register", "--help"])
    assert "<image-based|cnn-guided|cnn-lm-guided>" in capsys.readouterr().out
    code, err = _run(capsys, "register", "a.nii.gz", "b.nii.gz", "-o", "out", "--preset", "elastic")
    assert code == 2 and "--preset" in err

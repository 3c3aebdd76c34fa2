"""The command-line shell: help lists the commands; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sirtjax.cli import main


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "sirtjax", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("demo", "phantom", "evaluate"):
        assert command in out.stdout


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


@pytest.mark.parametrize("command", ["plan", "verify", "register", "segment", "dose", "prescribe", "demo", "phantom"])
def test_help_is_plain_and_names_only_its_own_options(command, capsys):
    """No '<bool>' after flags, no blank first line; plan's help does not refer to verify's --plan."""
    main([command, "--help"])  # returns: no exit code but 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and out.startswith("Usage: ")
    assert ("--plan" in out) == (command == "verify")
    if command in ("plan", "prescribe"):
        assert "mono-compartment" in out

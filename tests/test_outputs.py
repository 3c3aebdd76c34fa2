"""Outputs appear whole or not at all: refusal without --overwrite, whole-folder replacement, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sirtjax.cli import main
from sirtjax.errors import InputError
from sirtjax.outputs import check_output, output_dir, write_json


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_output(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "report.json").write_text('{"run": "old"}')
    (folder / "user_notes.txt").write_text("kept by the user")
    return _tree(folder)


def test_existing_output_is_refused_without_overwrite(tmp_path):
    old = _old_output(tmp_path / "out")
    with pytest.raises(InputError, match="--overwrite"):
        with output_dir(tmp_path / "out") as tmp:
            (tmp / "report.json").write_text("new")
    assert _tree(tmp_path / "out") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_overwrite_replaces_the_folder_as_a_whole(tmp_path):
    _old_output(tmp_path / "out")
    with output_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "report.json").write_text("new")
    assert _tree(tmp_path / "out") == {"report.json": b"new"}  # the stale file is gone: no merge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    with output_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    assert _tree(tmp_path / "out") == {"a.txt": b"a"}


def test_a_failure_leaves_the_old_output(tmp_path):
    old = _old_output(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "out", overwrite=True) as tmp:
            (tmp / "report.json").write_text("half")
            raise RuntimeError("the computation failed")
    assert _tree(tmp_path / "out") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("out, inputs, problem", [
    ("study", ["study"], "is the input"),
    ("study/plan", ["study"], "inside the input folder"),
    (".", ["study/ct.nii.gz"], "would replace the input"),
])
def test_outputs_keep_clear_of_inputs(tmp_path, out, inputs, problem):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=problem):
        check_output(tmp_path / out, overwrite=True, inputs=[tmp_path / p for p in inputs])


def test_unwritable_output_is_an_input_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits; /proc stands in
            locked = Path("/proc")
        with pytest.raises(InputError, match="cannot write"):
            check_output(locked / "out")
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_write_json_is_strict_json(tmp_path):
    import numpy as np

    path = write_json({"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2), "d": tmp_path}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [0, 1], "d": str(tmp_path)}


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sirtjax.outputs import output_dir
    with output_dir(sys.argv[1], overwrite=True) as tmp:
        for k in range(400):
            (tmp / f"part{k:03d}.txt").write_text("new" * 100)
            if k == 10:
                print("writing", flush=True)
            time.sleep(0.005)
    print("published", flush=True)
""")


@pytest.mark.parametrize("delay_s", [0.0, 0.5, 1.5, 5.0])
def test_sigkill_leaves_the_old_output_or_the_new_one(tmp_path, delay_s):
    """A real SIGKILL at some point of the writing: the folder holds the old run or the new one, whole."""
    old = _old_output(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    final = tmp_path / "out"
    if final.exists():
        tree = _tree(final)
        assert tree == old or (len(tree) == 400 and "report.json" not in tree), sorted(tree)[:5]
    else:  # killed between the two renames of publishing: the old output is whole beside it
        (aside,) = tmp_path.glob(".out.*.old")
        assert _tree(aside / "out") == old


def test_cli_refuses_an_existing_output_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "phantom"
    main(["phantom", str(out), "--small", "--seed", "3"])
    (out / "stale.txt").write_text("from an earlier run")
    with pytest.raises(SystemExit) as exit_info:
        main(["phantom", str(out), "--small", "--seed", "3"])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()
    main(["phantom", str(out), "--small", "--seed", "3", "--overwrite"])
    assert not (out / "stale.txt").exists() and (out / "study.json").exists()


def test_sigkill_of_a_real_command_while_it_writes_keeps_the_old_output(tmp_path):
    """`sirtjax phantom OUT --overwrite` killed once its staging folder exists: OUT is still the old run, whole."""
    old = _old_output(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-m", "sirtjax", "phantom", str(tmp_path / "out"), "--small", "--overwrite"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.partial/*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the command ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _tree(tmp_path / "out") == old

"""Where a command's outputs go: checked before any computation, staged, and published whole.

A command calls :func:`check_output` first, so that an unwritable, existing or misplaced output is
an :class:`~sirtjax.errors.InputError` (exit code 2) before any work is done. Folders are then
written through :func:`output_dir`, single files through the atomic writers of :mod:`sirtjax.io`.

The rules:

- an existing output is refused unless ``overwrite`` is set (an existing *empty* folder is used);
- with ``overwrite`` a folder is replaced as a whole: no stale file of an earlier run, and no
  unrelated file the user kept there, survives next to the new outputs;
- an output may not be, lie inside, or contain one of the command's inputs (``plan S -o S`` would
  otherwise rewrite the study it reads);
- the nearest existing folder on the output's path must be writable.

Publishing a folder over an existing one takes two renames (the old folder aside, the new one in);
a process killed between them leaves no output under the name and the complete old one under a
hidden ``.NAME.*.old`` sibling. Everything else leaves either the old output or the new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sirtjax.errors import InputError

__all__ = ["check_output", "default_mode", "output_dir", "write_json"]


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _probe_writable(path: Path) -> None:
    """InputError naming path unless a folder can be created next to it (where staging happens)."""
    home = _nearest_existing(path.parent)
    if not home.is_dir():
        raise InputError(path, f"{home} is a file, so no folder can be made under it")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sirtjax-probe.", dir=home))
    except OSError as exc:
        raise InputError(path, f"cannot write in {home}: {exc.strerror or exc}") from None


def _check_inputs(out: Path, inputs: Iterable[str | Path]) -> None:
    """InputError when the output is, lies inside, or contains one of the inputs."""
    target = out.resolve()
    for given in inputs:
        src = Path(given).resolve()
        if target == src:
            raise InputError(out, f"the output is the input {given}; choose another output")
        if src.is_dir() and target.is_relative_to(src):
            raise InputError(out, f"the output lies inside the input folder {given}; choose a folder outside it")
        if src.is_relative_to(target):
            raise InputError(out, f"the output would replace the input {given}; choose another output")


def check_output(path: str | Path, *, overwrite: bool = False, folder: bool = True,
                 inputs: Iterable[str | Path] = ()) -> Path:
    """Check an output path before any computation (see the module docstring); returns it as a Path.

    Args:
      path: the output folder (``folder=True``) or file.
      overwrite: replace an existing output instead of refusing it.
      folder: whether the output is a folder or a single file.
      inputs: the command's input files and folders, which the output must keep clear of.
    """
    out = Path(path)
    _check_inputs(out, inputs)
    if out.exists() or out.is_symlink():
        if folder and not out.is_dir():
            raise InputError(out, "the output exists and is not a folder")
        if not folder and out.is_dir():
            raise InputError(out, "the output is an existing folder; give a file name (e.g. liver.nii.gz)")
        if not overwrite and (not folder or any(out.iterdir())):
            raise InputError(out, "the output exists; pass --overwrite to replace it")
    _probe_writable(out)
    return out


def default_mode(mode: int) -> int:
    """The permission bits a plain open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _publish(staging: Path, final: Path, overwrite: bool) -> None:
    """Move the complete staging folder to final, replacing an existing final folder when allowed."""
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    if not final.exists():
        os.rename(staging, final)
        return
    if not overwrite:  # it appeared while the command ran
        raise InputError(final, "the output exists; pass --overwrite to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    os.rename(final, old / final.name)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def output_dir(path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Stage a folder of outputs next to path and publish it there whole when the block succeeds.

    The checks of :func:`check_output` run on entry. On an exception the staging folder is removed
    and path is left as it was.
    """
    final = check_output(path, overwrite=overwrite, folder=True, inputs=inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(staging, default_mode(0o777))  # mkdtemp creates 0700
    try:
        yield staging
        _publish(staging, final, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _json_ready(value):
    """Strict-JSON form: NaN/inf become None, numpy scalars and arrays Python numbers, dataclasses and paths too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


@contextlib.contextmanager
def atomic_path(path: Path, *, suffix: str = "", mode: int | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` (ending in ``suffix``, for writers that choose the format by it) to write; renamed
    onto ``path`` when the block ends without an error, removed otherwise, so a partly written file is never seen.
    Its permissions: ``mode``, else what a plain open() would give (mkstemp's own are 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode(0o666) if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(data, path: str | Path, *, sort_keys: bool = False) -> Path:
    """Write data as strict JSON (see _json_ready), indented, atomically (:func:`atomic_path`)."""
    p = Path(path)
    text = json.dumps(_json_ready(data), indent=1, allow_nan=False, sort_keys=sort_keys) + "\n"
    with atomic_path(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


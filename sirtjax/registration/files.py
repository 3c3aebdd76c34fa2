"""A registration's files: its guidance read from disk and checked, and its results written as ``sirtjax register``
writes them (warped.nii.gz, displacement.nii.gz in the ITK convention, affine.json, report.json).

Shared by ``sirtjax register`` and ``sirtjax cohort``, so a cohort case's folder is the one a single call writes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sirtjax.errors import InputError
from sirtjax.io import read_volume, write_volume
from sirtjax.outputs import write_json
from sirtjax.programs import ProgramCache
from sirtjax.plausibility import ResultWarning, check_resampled
from sirtjax.preprocess import labels_on_grid
from sirtjax.registration.config import RegistrationConfig, config_from_dict
from sirtjax.registration.guided import PRESET_GUIDANCE, CheckedRegistration, Guidance
from sirtjax.registration.warp import affine_to_homogeneous, warp_volume
from sirtjax.volume import Volume

AFFINE_CONVENTION = ("fixed world point p (LPS mm) -> moving world point: "
                     "matrix @ (p - centre_mm) + centre_mm + translation_mm")


def load_config(path: Path) -> RegistrationConfig:
    """The RegistrationConfig of a JSON settings file; :class:`InputError` naming it if unreadable or invalid."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read registration settings: {exc}") from None
    if not isinstance(values, dict):
        raise InputError(path, "registration settings must be a JSON object (RegistrationConfig's fields, nested)")
    try:
        return config_from_dict(values)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def load_guidance(paths: Mapping[str, Path | None], fixed: Volume, moving: Volume, preset: str,
                  read: Callable[[Path], Volume] = read_volume) -> tuple[Guidance, list[ResultWarning]]:
    """The guidance ``preset`` uses, read from ``paths`` (Guidance field name -> file; by ``read``, when the files
    were read already) onto its image's grid.

    A mask or label map on another grid is resampled by nearest neighbour (with a warning where that loses much of
    it). Raises :class:`InputError` naming the file when it cannot be placed or holds no liver.
    """
    guides, warnings = {}, []
    for key in PRESET_GUIDANCE[preset]:
        path = paths[key]
        side = key.split("_")[0]
        ref = fixed if side == "fixed" else moving
        try:
            array, note = labels_on_grid(read(path), ref, key.replace("_", " "), grid_name=f"{side} image's")
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
        if not np.any(array if key.endswith("mask") else array == 1):
            what = "mask is empty" if key.endswith("mask") else "label map has no liver (label 1)"
            where = f" on the {side} image's grid" if note["resampled_nearest"] else ""
            raise InputError(path, f"the {what}{where}")
        warnings += [dataclasses.replace(w, message=f"{path}: {w.message}")
                     for w in check_resampled(key.replace("_", " "), note, f"{side} image's")]
        guides[key] = ref.with_array(array)
    return Guidance(**guides), warnings


def registration_report(checked: CheckedRegistration, warnings: list[ResultWarning], **inputs) -> dict:
    """report.json of a registration: its ``inputs`` (paths as given), preset, settings, stages, times, Jacobian
    statistics and warnings."""
    compile_s, optimise_s = stage_seconds(checked)
    report = {
        **inputs, "preset": checked.preset, "config": dataclasses.asdict(checked.config),
        "stages": checked.result.diagnostics["stages"], "compile_s": compile_s, "optimise_s": optimise_s,
        "jacobian": checked.jacobian,
    }
    if checked.jacobian_liver is not None:
        report["jacobian_liver"] = checked.jacobian_liver
    report["warnings"] = [w.to_dict() for w in warnings]
    return report


def stage_seconds(checked: CheckedRegistration) -> tuple[float, float]:
    """(compile, optimise) seconds of a registration, summed over its stages."""
    stages = checked.result.diagnostics["stages"]
    return sum(s["compile_s"] for s in stages), sum(s["run_s"] for s in stages)


def write_registration(folder: Path, checked: CheckedRegistration, report: dict,
                       extra: list[tuple[Path, Volume, int]] = (), *, compress: bool = True,
                       programs: ProgramCache | None = None) -> list[str]:
    """Write warped.nii.gz, displacement.nii.gz (float32, ITK), affine.json and report.json into ``folder``, and each
    ``extra`` moving-space (path, volume, interpolation order) warped as ``<name>_warped.nii.gz``; their names.
    ``compress`` False: the images as ``.nii`` (a float field barely compresses, and gzip is most of its writing).
    ``programs``: where the extra images' warp is kept compiled.

    ``folder`` should be the temporary folder of :func:`sirtjax.outputs.output_dir`, so the outputs appear whole.
    Where ``report`` has a ``seconds`` table, the images' writing is added to it as ``write``.
    """
    start = time.perf_counter()
    result = checked.result
    suffix = ".nii.gz" if compress else ".nii"
    write_volume(result.warped, folder / f"warped{suffix}")
    write_volume(result.displacement, folder / f"displacement{suffix}", dtype=np.float32)
    written = []
    for path, vol, order in extra:
        name = path.name if path.is_dir() else path.name.split(".")[0]
        target = folder / f"{name}_warped{suffix}"
        write_volume(warp_volume(vol, result.displacement, order=order, programs=programs), target)
        written.append(target.name)
    affine = result.affine
    write_json({"convention": AFFINE_CONVENTION, "matrix": np.asarray(affine.matrix, float).tolist(),
                "translation_mm": np.asarray(affine.translation_mm, float).tolist(),
                "centre_mm": np.asarray(affine.centre_mm, float).tolist(),
                "homogeneous": affine_to_homogeneous(affine).tolist()}, folder / "affine.json")
    if "seconds" in report:
        report = {**report, "seconds": {**report["seconds"], "write": time.perf_counter() - start}}
    write_json({**report, "applied": written}, folder / "report.json")
    return written

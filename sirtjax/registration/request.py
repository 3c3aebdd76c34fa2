"""A registration asked for by file names, as ``sirtjax register`` takes it: the rules its options follow (shared
with ``sirtjax cohort``), and read → register → report → write, with the report's numbers returned typed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sirtjax import keys
from sirtjax.errors import InputError
from sirtjax.io import read_volumes
from sirtjax.outputs import check_output, output_dir
from sirtjax.plausibility import ResultWarning
from sirtjax.programs import ProgramCache
from sirtjax.registration.config import Overrides, RegistrationConfig
from sirtjax.registration.files import load_config, load_guidance, registration_report, stage_seconds, write_registration
from sirtjax.registration.guided import (PRESET_GUIDANCE, CheckedRegistration, check_guidance, choose_preset,
                                        register_checked)
from sirtjax.registration.optimise import Progress

GUIDANCE_PAIRS = (("fixed_mask", "moving_mask"), ("fixed_labels", "moving_labels"))
"""The guidance files given in pairs (Guidance field names), one for each image."""

_FLAGS = {"w_reg": "--stiffness"}  # an Overrides field whose command-line option has another name


def _flag(name: str) -> str:
    """The command-line option of a Guidance or Overrides field."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def registration_settings(preset: str | None, config: Path | None = None, overrides: Overrides = Overrides(),
                          guidance: Mapping[str, Path | None] | None = None) -> tuple[str | None, RegistrationConfig | None]:
    """The preset and the settings file's RegistrationConfig (None: the preset's) of a command line, its rules checked.

    ``guidance`` (Guidance field name -> file or None; None: given per case, as in a cohort) must come in pairs
    and hold what the preset needs; without a ``preset`` it chooses one (:func:`choose_preset`). Levels and
    iterations are at least 1, weights non-negative, and an affine on segmentations needs a guided preset.
    Raises :class:`InputError` naming the option or file.
    """
    if guidance is not None:
        for a, b in GUIDANCE_PAIRS:
            if (guidance[a] is None) != (guidance[b] is None):
                raise InputError(guidance[a] or guidance[b], f"give both {_flag(a)} and {_flag(b)}")
        given = [name for name, path in guidance.items() if path is not None]
        if preset is None:
            preset = choose_preset(masks="fixed_mask" in given, labels="fixed_labels" in given)
        try:
            check_guidance(preset, given)
        except ValueError as exc:
            raise InputError(preset, str(exc)) from None
    for name in ("levels", "iterations"):
        if (value := getattr(overrides, name)) is not None and value < 1:
            raise InputError(_flag(name), "must be at least 1")
    for name in ("w_image", "w_seg", "w_reg", "liver_stiffness"):
        if (value := getattr(overrides, name)) is not None and not value >= 0:
            raise InputError(_flag(name), f"must be a non-negative number, got {value}")
    base = None if config is None else load_config(config)
    if base is not None and base.affine.on == "segmentation" and preset == "image-based":
        raise InputError(config, "an affine on segmentations needs masks or label maps")
    return preset, base


@dataclasses.dataclass(frozen=True)
class RegistrationRequest:
    """``sirtjax register``'s inputs: the images, the guidance files (None: not given), the output folder, the preset
    (None: from the guidance), a settings file replacing the preset's, the overrides, and the moving-space files to
    warp too (``apply``: label maps found by their values; ``apply_labels``: all by nearest neighbour); ``compress``
    False writes the images as .nii instead of .nii.gz."""

    fixed: Path
    moving: Path
    out: Path
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    preset: str | None = None
    config: Path | None = None
    overrides: Overrides = Overrides()
    apply: tuple[Path, ...] = ()
    apply_labels: tuple[Path, ...] = ()
    seed: int = 0
    overwrite: bool = False
    compress: bool = True

    def guidance(self) -> dict[str, Path | None]:
        """The guidance files by Guidance field name (None: not given)."""
        return {name: getattr(self, name) for pair in GUIDANCE_PAIRS for name in pair}

    def inputs(self) -> list[Path]:
        """Every file the request reads, which the output must keep clear of."""
        return [p for p in (self.fixed, self.moving, *self.guidance().values(), self.config, *self.apply,
                            *self.apply_labels) if p is not None]


@dataclasses.dataclass(frozen=True)
class RegistrationRun:
    """A registration written by :func:`register_files`: the checked registration, every warning, and the numbers of
    its report.json: seconds from the call to the writing and compiling, the fractions of voxels with det J <= 0
    over the fixed grid and in the fixed liver (None without a liver)."""

    checked: CheckedRegistration
    warnings: tuple[ResultWarning, ...]
    total_s: float
    compile_s: float
    nonpositive_fraction: float
    liver_nonpositive_fraction: float | None


def register_files(request: RegistrationRequest, *, progress: Progress | None = None,
                   programs: ProgramCache | None = None) -> RegistrationRun:
    """Check, read, register and write ``request.out`` whole as ``sirtjax register`` does (docs/register.md)."""
    t_start = time.perf_counter()
    paths = request.guidance()
    preset, base = registration_settings(request.preset, request.config, request.overrides, paths)
    inputs = request.inputs()
    check_output(request.out, overwrite=request.overwrite, inputs=inputs)
    files = [request.fixed, request.moving, *(paths[k] for k in PRESET_GUIDANCE[preset]), *request.apply,
             *request.apply_labels]
    read_s = time.perf_counter()
    volumes = dict(zip(files, read_volumes(files)))
    read_s = time.perf_counter() - read_s
    fixed, moving = volumes[request.fixed], volumes[request.moving]
    guidance, warnings = load_guidance(paths, fixed, moving, preset, read=volumes.__getitem__)
    extra = [(p, volumes[p], 0 if _is_label_map(volumes[p].array) else 1) for p in request.apply]
    extra += [(p, volumes[p], 0) for p in request.apply_labels]
    checked = register_checked(fixed, moving, guidance, preset=preset, config=base, overrides=request.overrides,
                               key=keys.key(request.seed), progress=progress, programs=programs)
    warnings += list(checked.warnings)
    report = registration_report(checked, warnings, fixed=str(request.fixed), moving=str(request.moving),
                                 config_file=None if request.config is None else str(request.config))
    with output_dir(request.out, overwrite=request.overwrite, inputs=inputs) as tmp:
        report["total_s"] = total_s = time.perf_counter() - t_start
        report["seconds"] = {"read": read_s, **checked.result.diagnostics["seconds"]}
        write_registration(tmp, checked, report, extra, compress=request.compress, programs=programs)
    liver = checked.jacobian_liver
    return RegistrationRun(checked, tuple(warnings), total_s, stage_seconds(checked)[0],
                           checked.jacobian["fraction_nonpositive"],
                           None if liver is None else liver["fraction_nonpositive"])


def _is_label_map(array) -> bool:
    """Integer voxels with at most 256 distinct values: a label map, warped by nearest neighbour."""
    a = np.asarray(array)
    return np.issubdtype(a.dtype, np.integer) and np.unique(a).size <= 256

"""A cohort's batch of registrations (vmapped and sharded over the devices), and what every task shares.

A task has a bucket key per case, read from the image headers only, and runs a batch of cases of one key. It
writes each case's folder whole (:func:`publish`), as the single command would, plus ``case.json`` with the
summary's numbers, and returns one :class:`CaseOutcome` per case. A case that cannot be read or computed fails
alone with its one-line reason. The tasks that run case by case (dose, segment, plan): :mod:`~sirtjax.cohort.serial`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import jax
import numpy as np
import SimpleITK as sitk

from sirtjax.buckets import coarse_bucket
from sirtjax.cohort.manifest import Case
from sirtjax.errors import InputError, SirtjaxError
from sirtjax.outputs import output_dir, write_json
from sirtjax.programs import ProgramCache
from sirtjax.registration.config import Overrides, RegistrationConfig


@dataclasses.dataclass(frozen=True)
class CaseOutcome:
    """One case's end: ``done`` with its numbers, or ``failed`` with the reason; its share of the batch's wall time."""

    id: str
    status: str
    seconds: float
    reason: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """The outcome as JSON values."""
        return dataclasses.asdict(self)


Publisher = Callable[[Path, Case, float, dict, Callable[[Path], object]], "CaseOutcome | Future[CaseOutcome]"]
"""Publishes a finished case's folder as :func:`publish` does, or starts doing so and gives the Future of its outcome."""
Published = CaseOutcome | Future
"""A case's outcome, or the Future of it while its folder is being written."""


@dataclasses.dataclass(frozen=True)
class RegisterSettings:
    """A registration cohort's settings: the preset (None: from each case's guidance), settings replacing the
    preset's (None: the preset's own) and the iterations per level and stage (None: the settings')."""

    preset: str | None = None
    config: RegistrationConfig | None = None
    iterations: int | None = None


@dataclasses.dataclass(frozen=True)
class Devices:
    """Where a batch runs: a batch ``sharding`` over the local devices (None: one device) and the program cache
    (one device only: a cache entry is a one-device executable)."""

    sharding: jax.sharding.Sharding | None
    programs: ProgramCache | None

    @property
    def count(self) -> int:
        """How many devices a batch is split over."""
        return 1 if self.sharding is None else len(self.sharding.device_set)


def local_devices(programs: ProgramCache | None) -> Devices:
    """The batch axis split over every local device by a one-axis mesh. One device of a one-process run keeps the
    program cache: a cache entry is an executable for one device, which under ``jax.distributed`` is one process's
    device only (another process's copy of it fails to run)."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return Devices(None, programs if jax.process_count() == 1 else None)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    return Devices(jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")), None)


def header_grid(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape z, y, x; spacing mm) of an image file from its header alone (a DICOM folder is read whole); empty for
    an unreadable one, which fails its case when its batch reads it."""
    if path.is_dir():
        from sirtjax.io import read_volume

        try:
            vol = read_volume(path)
        except SirtjaxError:
            return (), ()
        return tuple(vol.shape), tuple(float(s) for s in vol.spacing_mm)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return (), ()
    return tuple(reader.GetSize()[::-1]), tuple(reader.GetSpacing())


def _preset(case: Case, settings: RegisterSettings) -> str:
    from sirtjax.registration.guided import choose_preset

    return settings.preset or choose_preset(masks="fixed_mask" in case.paths, labels="fixed_labels" in case.paths)


def register_key(case: Case, settings: RegisterSettings) -> tuple:
    """A registration case's bucket: its preset, its fixed image's coarsest spacing (the pyramid's resolutions)
    and its fixed grid's :func:`~sirtjax.buckets.coarse_bucket` shape (the batch's levels are padded to its largest).
    Raises :class:`InputError` naming the case when the preset needs guidance that the case lacks."""
    from sirtjax.registration.guided import PRESET_GUIDANCE

    preset = _preset(case, settings)
    missing = [k for k in PRESET_GUIDANCE[preset] if k not in case.paths]
    if missing:
        raise InputError(f"case {case.id}", f"the {preset} preset needs the columns {' and '.join(missing)}")
    shape, spacing = header_grid(case.paths["fixed"])
    return preset, _coarsest_mm(spacing), tuple(int(n) for n in coarse_bucket(shape, spacing[::-1])) if shape else ()


def _coarsest_mm(spacing_mm) -> float:
    return round(float(max(spacing_mm, default=0.0)), 4)


def run_register(cases: Sequence[Case], settings: RegisterSettings, key: jax.Array, out: Path,
                 devices: Devices, todo: frozenset[str], publisher: Publisher | None = None) -> list[Published]:
    """Register a batch of cases of one bucket in one :func:`register_checked_batch`, sharded by ``devices`` (the
    batch repeated up to a multiple of the device count; the repeats are dropped); write the folders of the cases
    in ``todo`` (the others run only to keep the batch as it was) through ``publisher`` (default :func:`publish`)."""
    from sirtjax.io import read_ahead
    from sirtjax.registration.files import load_guidance
    from sirtjax.registration.guided import register_checked_batch

    t0 = time.perf_counter()
    loaded, outcomes = [], []
    files = read_ahead([p for case in cases for p in case.paths.values()])
    for case in cases:
        preset = _preset(case, settings)
        try:
            fixed, moving = files(case.paths["fixed"]), files(case.paths["moving"])
            guidance, warnings = load_guidance({k: case.paths.get(k) for k in
                                                ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels")},
                                               fixed, moving, preset, read=files)
        except (SirtjaxError, ValueError) as exc:
            outcomes.append(CaseOutcome(case.id, "failed", 0.0, str(exc)))
            continue
        loaded.append((case, fixed, moving, guidance, warnings))
    groups: dict[float, list] = {}  # the pyramid follows the coarsest spacing, read now, not from the header
    for item in loaded:
        groups.setdefault(_coarsest_mm(item[1].spacing_mm), []).append(item)
    overrides = Overrides(iterations=settings.iterations)
    for group in groups.values():
        batch = [(f, m, g) for _, f, m, g, _ in group]
        batch += [batch[-1]] * (-len(batch) % devices.count)
        try:
            checked = register_checked_batch(batch, preset=_preset(group[0][0], settings), config=settings.config,
                                             overrides=overrides, key=key, programs=devices.programs,
                                             sharding=devices.sharding)
        except (SirtjaxError, ValueError) as exc:
            outcomes += [CaseOutcome(c.id, "failed", 0.0, f"the batch failed: {exc}") for c, *_ in group]
            continue
        outcomes += _write_registrations(group, checked, (time.perf_counter() - t0) / len(loaded), out, todo,
                                         publisher or publish)
    return outcomes


def _write_registrations(group: list, checked: list, seconds: float, out: Path, todo: frozenset[str],
                         publisher: Publisher) -> list[Published]:
    from sirtjax.registration.files import registration_report, write_registration

    outcomes = []
    for (case, _, _, _, warnings), result in zip(group, checked):
        if case.id not in todo:
            continue
        report = registration_report(result, warnings + list(result.warnings), fixed=str(case.paths["fixed"]),
                                     moving=str(case.paths["moving"]), config_file=None)
        metrics = {"preset": result.preset,
                   "det_j_nonpositive_pct": 100 * result.jacobian["fraction_nonpositive"],
                   "liver_det_j_nonpositive_pct": None if result.jacobian_liver is None
                   else 100 * result.jacobian_liver["fraction_nonpositive"]}
        outcomes.append(publisher(out, case, seconds, metrics, lambda tmp, r=result, rep=report:
                                   write_registration(tmp, r, rep)))
    return outcomes


def publish(out: Path, case: Case, seconds: float, metrics: dict, write: Callable[[Path], object]) -> CaseOutcome:
    """Write a finished case's folder ``out/<id>`` whole: ``write(folder)``'s files, then case.json; a failed write
    fails the case alone."""
    outcome = CaseOutcome(case.id, "done", seconds, metrics=metrics)
    try:
        with output_dir(out / case.id) as tmp:
            write(tmp)
            write_json(outcome.to_dict(), tmp / "case.json")
    except (SirtjaxError, OSError) as exc:
        return CaseOutcome(case.id, "failed", seconds, f"cannot write its outputs: {exc}")
    return outcome

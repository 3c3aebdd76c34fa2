"""The cohort tasks that run case by case on the default device: dose, liver segmentation and planning.

Each writes what its single command writes (``sirtjax dose``, ``sirtjax segment``, ``sirtjax plan``) into the
case's folder, whole (:func:`~sirtjax.cohort.tasks.publish`). They are not vmapped or sharded. What a batch shares
is the compiled programs (a dose convolution per grid, the network per tile shape, the registrations' programs) and,
for segmentation, the loaded model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from sirtjax.cohort.manifest import Case
from sirtjax.cohort.tasks import CaseOutcome, Devices, Published, Publisher, publish
from sirtjax.errors import SirtjaxError


@dataclasses.dataclass(frozen=True)
class DoseSettings:
    """A dose cohort's settings: what the activity images hold (counts or bq-per-ml), the dose model and constants."""

    input_kind: str = "counts"
    model: str = "vsv"
    constants: str = "icrp107"


@dataclasses.dataclass(frozen=True)
class SegmentSettings:
    """A segmentation cohort's settings: the liver model (shipped name or folder) and the modality (None: guessed
    per image, as ``sirtjax segment`` does)."""

    model: str = "liver"
    modality: str | None = None


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """A planning cohort's settings: the quick registration or not, the liver model for images without masks, the
    lesion model for studies without lesions ('none': plan without), and whether a case goes on with a segmented
    liver outside 0.6-4.5 L (default: that case fails)."""

    quick: bool = False
    liver_model: str = "liver"
    lesion_model: str = "lesions"
    accept_implausible: bool = False


def _each(cases: Sequence[Case], todo: frozenset[str], out: Path,
          compute: Callable[[Case], tuple[dict, Callable[[Path], object]]], publisher: Publisher | None) -> list[Published]:
    """Every case in ``todo``: ``compute(case)`` gives its numbers and its writer, which ``publisher`` (default
    :func:`~sirtjax.cohort.tasks.publish`) runs; an input error fails it alone."""
    outcomes = []
    for case in (c for c in cases if c.id in todo):
        t0 = time.perf_counter()
        try:
            metrics, write = compute(case)
        except (SirtjaxError, ValueError) as exc:
            outcomes.append(CaseOutcome(case.id, "failed", time.perf_counter() - t0, str(exc)))
            continue
        outcomes.append((publisher or publish)(out, case, time.perf_counter() - t0, metrics, write))
    return outcomes


def run_dose(cases: Sequence[Case], settings: DoseSettings, key: jax.Array, out: Path, devices: Devices,
             todo: frozenset[str], publisher: Publisher | None = None) -> list[Published]:
    """The voxel dosimetry of each case in ``todo``, with ``sirtjax dose``'s outputs (dose.nii.gz, dvh.csv, dvh.png,
    report.json)."""
    from sirtjax.dosimetry.outputs import write_dose_outputs
    from sirtjax.dosimetry.voxel import voxel_dosimetry
    from sirtjax.io import read_volume

    def compute(case: Case):
        vols = {k: read_volume(p) for k, p in case.paths.items()}
        result = voxel_dosimetry(vols["activity"], vols["liver"], lesions=vols.get("lesions"), lungs=vols.get("lung"),
                                 ct=vols.get("ct"), input_kind=settings.input_kind,
                                 activity_gbq=case.numbers.get("activity_gbq"),
                                 lung_shunt_fraction=case.numbers.get("lung_shunt_fraction"),
                                 model=settings.model, constants=settings.constants, programs=devices.programs)
        metrics = {"liver_mean_gy": result.mean_gy("liver"), "total_gbq": result.total_gbq}
        return metrics, lambda tmp: write_dose_outputs(result, tmp)

    return _each(cases, todo, out, compute, publisher)


def no_key(case: Case, settings) -> tuple:
    """One bucket for every case: a task that runs case by case on grids of any size (jit keeps a compiled program
    per grid whatever the order), so no header is read to group them."""
    return ()


def run_segment(cases: Sequence[Case], settings: SegmentSettings, key: jax.Array, out: Path, devices: Devices,
                todo: frozenset[str], publisher: Publisher | None = None) -> list[Published]:
    """The liver mask of each case in ``todo`` by the model (loaded once a batch), as ``liver.nii.gz`` (uint8)."""
    from sirtjax.io import read_ct, read_volume, write_volume
    from sirtjax.models import load_model
    from sirtjax.segmentation import segment_liver
    from sirtjax.segmentation.preprocess import guess_modality

    net, spec = load_model(settings.model)

    def compute(case: Case):
        image = (read_ct if settings.modality == "ct" else read_volume)(case.paths["image"])
        modality = settings.modality or guess_modality(image.array)
        mask = segment_liver(net, spec, image, modality=modality)
        volume_ml = float(np.asarray(mask.array).sum()) * float(np.prod(image.spacing_mm)) / 1000.0
        return ({"modality": modality, "liver_ml": volume_ml},
                lambda tmp: write_volume(mask, tmp / "liver.nii.gz", dtype=np.uint8))

    return _each(cases, todo, out, compute, publisher)


def run_plan(cases: Sequence[Case], settings: PlanSettings, key: jax.Array, out: Path, devices: Devices,
             todo: frozenset[str], publisher: Publisher | None = None) -> list[Published]:
    """``sirtjax plan`` of each study in ``todo``, its folder in ``<id>/plan/``; the registrations share ``devices``'
    program cache, and the seed of a case's registrations comes from its batch's key."""
    import shutil

    from sirtjax.pipelines.run import run_study
    from sirtjax.pipelines.segment import workflow_options
    from sirtjax.io.study import load_study

    options = workflow_options(quick=settings.quick, liver_model=settings.liver_model, lesion_model=settings.lesion_model,
                               programs=devices.programs, accept_implausible_liver=settings.accept_implausible)
    seed = int(jax.random.randint(key, (), 0, 2**30))

    def compute(case: Case):
        planned = out / f".{case.id}.plan"  # published whole by run_study, then moved into the case's folder
        shutil.rmtree(planned, ignore_errors=True)  # what a killed run left
        result = run_study(load_study(case.paths["study"]), planned, options=options, seed=seed,
                           lung_shunt_fraction=case.numbers.get("lung_shunt_fraction"))
        metrics = {"planned_activity_gbq": result.plan.planned_activity_gbq,
                   "lung_shunt_fraction": result.plan.lung_shunt_fraction,
                   "liver_mean_gy": result.plan.dose.mean_gy("liver")}
        return metrics, lambda tmp: planned.rename(tmp / "plan")

    return _each(cases, todo, out, compute, publisher)

"""The plan a verification is compared with: from a plan computed in the same run, or from a plan folder.

``sirtjax verify STUDY -o DIR`` plans and verifies in one run; ``sirtjax verify STUDY --plan
PLAN_DIR -o DIR`` compares with a plan made earlier by ``sirtjax plan`` (its report.json, its VOIs
on the SPECT grid and its dose.nii.gz, read by :func:`sirtjax.pipelines.read.read_plan`). Either
way the verification gets a :class:`PlannedDose`: the plan's report, the MAA SPECT (counts) with
the plan's VOIs on its grid, and the plan's dose (map, statistics, DVHs).

A plan folder's report.json is parsed once, into a :class:`PlanRecord`. The folder holds the dose map but not
the DVH statistics behind it, so :func:`planned_from_record` recomputes the plan's dose from the SPECT, the VOIs
and the plan's activity, lung shunt, dose model and constants (deterministic, a few seconds) and checks it against
the folder's dose map: a plan folder made from other images (another study, an edited SPECT) or
with other settings fails that check instead of giving a comparison with the wrong plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sirtjax.dosimetry import DoseResult, voxel_dosimetry
from sirtjax.dosimetry.recovery import match_resolution
from sirtjax.pipelines.plan import PlanResult
from sirtjax.programs import ProgramCache
from sirtjax.volume import Volume, same_grid

# The recomputed dose map must match the folder's within float32 round-off of the FFT convolution
# (relative 1e-6 .. 1e-5 of the maximum); 1e-3 of the maximum leaves margin for another BLAS/CPU
# while any change of activity, LSF, VOI or image changes the map by far more.
DOSE_MAP_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class PlannedDose:
    """A plan as verification uses it: report (report.json), MAA SPECT (counts), VOIs on its grid, dose.

    ``source`` says where the plan came from ('planned in this run' or the plan folder's path). The
    numbers verification computes with are typed fields; ``report`` is shown, not read back.
    """

    report: dict
    spect: Volume
    liver: Volume
    lesions: Volume | None
    lungs: Volume | None
    dose: DoseResult
    source: str
    planned_activity_gbq: float  # the activity of the plan's predicted dose
    lung_shunt_fraction: float  # the LSF the plan used, in [0, 1)
    dose_model: str  # vsv or ldm
    constants: str  # the name of the 90Y constant set

    def at_resolution(self, fwhm_mm: float, target_fwhm_mm: float, programs: ProgramCache | None = None) -> PlannedDose:
        """The plan with its MAA SPECT blurred from fwhm_mm to target_fwhm_mm (:func:`match_resolution`) and its dose
        recomputed from it at the planned activity (``programs``: :meth:`dose_at`'s)."""
        blurred = dataclasses.replace(self, spect=match_resolution(self.spect, fwhm_mm, target_fwhm_mm),
                                      source=f"{self.source}, its MAA SPECT blurred to {target_fwhm_mm:g} mm FWHM")
        return dataclasses.replace(blurred, dose=blurred.dose_at(self.planned_activity_gbq, programs))

    def dose_at(self, activity_gbq: float, programs: ProgramCache | None = None) -> DoseResult:
        """The plan's dose recomputed for another activity (same SPECT, VOIs, LSF, model and constants; ``programs``:
        where the dosimetry's compiled programs are kept)."""
        return voxel_dosimetry(self.spect, self.liver, lesions=self.lesions, lungs=self.lungs,
                               activity_gbq=float(activity_gbq), lung_shunt_fraction=self.lung_shunt_fraction,
                               model=self.dose_model, constants=self.constants, programs=programs)


@dataclasses.dataclass(frozen=True)
class PlanRecord:
    """What a plan folder's report.json says about the plan, parsed once (:meth:`from_json`): its study, patient id
    and MAA SPECT series, planned activity (GBq), lung shunt fraction, dose model, constant set and dose VOIs.

    ``report`` is the whole report as written, shown in the verification's report, not read back.
    """

    study: str
    patient_id: str
    emission: str
    planned_gbq: float
    lung_shunt_fraction: float
    dose_model: str
    constants_name: str
    voi_names: frozenset[str]
    report: dict = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> PlanRecord:
        """The record of a parsed report.json; ValueError saying what is wrong when it is not a plan's report."""
        if not isinstance(data, dict) or data.get("workflow") != "plan":
            kind = data.get("workflow") if isinstance(data, dict) else None
            raise ValueError(f"not the report of a plan (workflow: {kind!r}); --plan takes a `sirtjax plan` folder")
        try:
            study, emission, gbq = data["study"], data["session"]["emission"], data["planned_activity"]["gbq"]
            lsf, dose = data["lung_shunt"]["fraction"], data["dose"]
            model, constants, vois = dose["model"], dose["constants"]["name"], dose["vois"]
            patient = data["study_manifest"]["patient"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"the plan report lacks {exc}") from None
        if not isinstance(gbq, (int, float)) or not isinstance(lsf, (int, float)):
            raise ValueError("the plan report's planned activity and lung shunt fraction must be numbers")
        names = frozenset(str(v.get("name")) for v in vois if isinstance(v, dict))
        return cls(study, str(patient.get("id", "")), emission, float(gbq), float(lsf), model, constants, names, data)


def planned_from_result(p: PlanResult) -> PlannedDose:
    """The PlannedDose of a plan computed in this run (nothing recomputed)."""
    v = p.vois
    lungs = v.lungs_emission if "lungs" in p.dose.voi_names else None  # the lungs the plan's dosimetry used
    return PlannedDose(p.report, p.session.emission, v.liver_emission, v.lesions_emission, lungs, p.dose,
                       "planned in this run", p.planned_activity_gbq, p.lung_shunt_fraction, p.dose.model,
                       p.dose.constants.name)


def planned_from_record(record: PlanRecord, spect: Volume, liver: Volume, lesions: Volume | None,
                        lungs: Volume | None, dose_map: Volume, source: str) -> PlannedDose:
    """The PlannedDose of a saved plan: its record (report.json), SPECT, VOIs and dose map (Gy), all on the SPECT grid.

    Recomputes the plan's dose and raises ValueError when it differs from ``dose_map`` by more than
    ``DOSE_MAP_RTOL`` of its maximum (the folder was made from other images or settings), or when a
    map is not on the SPECT grid.
    """
    for name, vol in (("liver", liver), ("lesions", lesions), ("lungs", lungs), ("dose map", dose_map)):
        if vol is not None and not same_grid(vol, spect):
            raise ValueError(f"the plan's {name} is not on the grid of the MAA SPECT")
    draft = PlannedDose(record.report, spect, liver, lesions, lungs, None, source, record.planned_gbq,
                        record.lung_shunt_fraction, record.dose_model, record.constants_name)
    dose = draft.dose_at(draft.planned_activity_gbq)
    ours, theirs = np.asarray(dose.dose.array, np.float32), np.asarray(dose_map.array, np.float32)
    scale = max(float(np.max(np.abs(ours))), 1e-12)
    worst = float(np.max(np.abs(ours - theirs)))
    if worst > DOSE_MAP_RTOL * scale:
        raise ValueError(f"differs from the plan's dose recomputed from this study's MAA SPECT and the plan's VOIs "
                         f"(max difference {worst:.3g} Gy of {scale:.3g} Gy): the plan was made from other images "
                         "or settings")
    return dataclasses.replace(draft, dose=dose)

"""Read a study manifest's series and given masks, and an earlier plan's folder, into workflow inputs (the I/O edge)."""

from __future__ import annotations

import json
from pathlib import Path

from sirtjax.errors import InputError
from sirtjax.io import read_volume
from sirtjax.pipelines.inputs import Anatomy, Session, StudyData
from sirtjax.pipelines.planned import PlannedDose, PlanRecord, planned_from_record
from sirtjax.io.study import StudyManifest
from sirtjax.volume import describe_grid, same_grid

_EMISSION_ROLE = {"maa": "spect", "y90": "pet"}


def read_anatomy(study: StudyManifest, series: str) -> Anatomy:
    """Read an anatomical series (CT/MR) and its given masks; InputError when a mask is off the image grid."""
    image = study.read(series)
    masks = {kind: study.read_mask(series, kind) for kind in ("liver", "lesions", "lungs", "labels")}
    for kind, mask in masks.items():
        if mask is not None and tuple(mask.shape) != tuple(image.shape):
            raise InputError(study.mask_path(series, kind), f"not on the grid of {series} "
                             f"({describe_grid(mask)} vs {describe_grid(image)})")
    return Anatomy(series, study.series[series].modality, image, **masks)


def read_session(study: StudyManifest, session: str) -> Session:
    """The 'maa' (CT + SPECT) or 'y90' (CT or MR + PET) session; InputError naming what is missing."""
    emission = study.session_series(session, _EMISSION_ROLE[session])
    anatomical = study.session_series(session, "ct") or study.session_series(session, "mr")
    if emission is None or anatomical is None:
        role = _EMISSION_ROLE[session].upper()
        raise InputError(study.path, f"session '{session}' needs a {role} and its CT or MR series")
    linked = study.series[emission].anatomical
    if linked is not None and linked in study.series and study.series[linked].session == session:
        anatomical = linked
    return Session(read_anatomy(study, anatomical), study.read(emission), emission)


def read_diagnostics(study: StudyManifest) -> tuple[Anatomy, ...]:
    """The diagnostic CT and MR (in that order) with their given masks; () when the study has none."""
    names = [study.session_series("diagnostic", role) for role in ("ct", "mr")]
    return tuple(read_anatomy(study, n) for n in names if n is not None)


def study_data(study: StudyManifest, lung_shunt_fraction: float | None = None) -> StudyData:
    """Patient, activities and target doses of a manifest, with the planar LSF: the one given here, else the manifest's.

    Neither: None (the plan then takes the LSF from SPECT counts, with its warnings).
    """
    if lung_shunt_fraction is not None:
        lsf, source = lung_shunt_fraction, "planar scintigraphy (--lung-shunt)"
    else:
        lsf, source = study.lung_shunt_fraction, "planar scintigraphy (study manifest)"
    return StudyData(study.name, dict(study.patient), dict(study.activities), dict(study.target_doses_gy), lsf,
                     source)


def read_plan_report(folder: str | Path) -> PlanRecord:
    """The record of a plan folder's report.json (:class:`PlanRecord`); InputError naming the file otherwise."""
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise InputError(path, "no such file (--plan takes the output folder of `sirtjax plan`)")
    try:
        return PlanRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def read_plan(folder: str | Path, study: StudyManifest) -> PlannedDose:
    """The plan of ``study`` saved by ``sirtjax plan`` in folder: report.json, VOIs on the SPECT grid, dose.nii.gz.

    The MAA SPECT is read from the study. InputError (naming the file) when a file is missing or
    garbled, when the plan belongs to another study or patient, or when its dose map does not match
    the dose recomputed from the study's SPECT and the plan's VOIs (see :mod:`sirtjax.pipelines.planned`).
    """
    folder = Path(folder)
    report_path = folder / "report.json"
    record = read_plan_report(folder)
    ours = str(study.patient.get("id", ""))
    if record.study != study.name or record.patient_id != ours:
        raise InputError(report_path, f"a plan of study '{record.study}' (patient id '{record.patient_id}'), "
                                      f"not of '{study.name}' (patient id '{ours}')")
    emission = record.emission
    if emission != study.session_series("maa", "spect"):
        raise InputError(report_path, f"planned on the SPECT series '{emission}', which is not the MAA SPECT of "
                                      f"{study.path.name}")
    spect = study.read(emission)

    def on_spect_grid(path: Path, used: bool):
        """The map when the plan's dosimetry used it (read_volume: InputError when missing or garbled), else None."""
        if not used:
            return None
        vol = read_volume(path)
        if not same_grid(vol, spect):
            raise InputError(path, f"not on the grid of {emission} ({describe_grid(vol)} vs {describe_grid(spect)})")
        return vol

    liver = on_spect_grid(folder / f"{emission}_liver.nii.gz", True)
    lesions_used = any(n.startswith("lesion_") for n in record.voi_names)
    lesions = on_spect_grid(folder / f"{emission}_lesions.nii.gz", lesions_used)
    lungs = on_spect_grid(folder / f"{emission}_lungs.nii.gz", "lungs" in record.voi_names)
    dose_path = folder / "dose.nii.gz"
    dose_map = on_spect_grid(dose_path, True)
    try:
        return planned_from_record(record, spect, liver, lesions, lungs, dose_map, str(folder))
    except ValueError as exc:
        raise InputError(dose_path, str(exc)) from None

"""A study from a PACS export: scan a DICOM tree, group its files by series, assign sessions and roles.

:func:`scan_dicom` reads the headers of every file below a folder (pixel data is not read; files
that are not DICOM are counted and passed over) and groups the image files by Series Instance UID,
whatever folders they lie in. :func:`assign_series` gives each series a place in the study, from
its tags alone:

- PET (Modality PT) with the radionuclide 90Y -> ``y90_pet`` (session ``y90``);
- a reconstructed SPECT (NM with Image Type RECON TOMO) with 99mTc -> ``maa_spect``;
- a CT or MR sharing its Frame of Reference UID with that PET or SPECT -> the CT/MR of its session
  (``y90_ct``, ``y90_mr``, ``maa_ct``);
- any other CT or MR -> the diagnostic session (``diag_ct``, ``diag_mr``).

Series that fit no role (localisers, planar scintigraphy, SPECT projections, other tracers, RT objects) are
listed as not used, with the reason. Two series competing for one role, or a role's only candidate
being unreadable (missing slices, uneven spacing), stop with one line naming the series and how to
choose: ``--series UID=NAME`` assigns a series by hand, ``--series UID=ignore`` drops one.

:func:`write_study` converts the chosen series to NIfTI and writes the ``study.json`` that the
workflows read (``docs/study-manifest.md``), with the patient's id, height and weight, the
administered activities from the radiopharmaceutical sequence, and the units: the PET must be in
Bq/ml (Units BQML) and is decay corrected to the administration as the verification expects
(:func:`decay_to_administration`); the SPECT is in counts (a warning: it is not quantitative).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from sirtjax.errors import InputError

ROLES = {  # manifest series name -> (modality, session)
    "maa_ct": ("CT", "maa"), "maa_spect": ("SPECT", "maa"), "diag_ct": ("CT", "diagnostic"),
    "diag_mr": ("MR", "diagnostic"), "y90_ct": ("CT", "y90"), "y90_mr": ("MR", "y90"), "y90_pet": ("PET", "y90"),
}
_EMISSION = {"maa_spect": ("maa_ct", None), "y90_pet": ("y90_ct", "y90_mr")}  # emission -> its CT / MR roles
_TAGS = ("SeriesInstanceUID", "Modality", "SOPClassUID", "ImageType", "SeriesDescription", "StudyDate", "SeriesDate",
         "AcquisitionDate", "FrameOfReferenceUID", "PatientID", "PatientSize", "PatientWeight",
         "Units", "DecayCorrection", "RadiopharmaceuticalInformationSequence", "ContrastBolusAgent",
         "ImagePositionPatient", "ImageOrientationPatient", "SeriesTime", "AcquisitionTime")


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """What the headers of one series say (the first file's tags; files in any folder)."""

    uid: str
    modality: str  # the DICOM Modality: CT, MR, PT, NM, ...
    description: str
    date: str  # acquisition, series or study date (YYYYMMDD), the first present
    frame_of_reference: str
    image_type: tuple[str, ...]
    nuclide: str  # e.g. "Y-90", "Tc-99m"; "" when the series has no radiopharmaceutical
    injected_bq: float | None  # Radionuclide Total Dose
    units: str  # PET Units (BQML, CNTS, ...); "" when absent
    decay_correction: str  # PET Decay Correction (START, ADMIN, NONE); "" when absent
    series_datetime: str  # Series Date + Time (YYYYMMDDHHMMSS...): a PET's START decay-correction reference
    administered_datetime: str  # Radiopharmaceutical Start DateTime; "" when absent
    half_life_s: float | None  # Radionuclide Half Life
    contrast: bool  # a Contrast/Bolus Agent is named
    patient: tuple[str, float | None, float | None]  # id, height cm, weight kg
    files: tuple[Path, ...]
    problem: str = ""  # why the slices cannot make a volume (missing slices, uneven spacing); "" when none


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Where each series goes: manifest name -> series, and the series not used with the reason."""

    chosen: Mapping[str, SeriesInfo]
    unused: tuple[tuple[SeriesInfo, str], ...]


def _nuclide(ds) -> tuple[str, float | None, str, float | None]:
    """(radionuclide, injected Bq, administration date-time, half-life s) from the Radiopharmaceutical
    Information Sequence, or ("", None, "", None)."""
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not seq:
        return "", None, "", None
    item = seq[0]
    text = " ".join(str(getattr(item, k, "")) for k in ("Radiopharmaceutical", "Radionuclide"))
    for code in getattr(item, "RadionuclideCodeSequence", []):
        text += f" {getattr(code, 'CodeMeaning', '')} {getattr(code, 'CodeValue', '')}"
    key = text.lower().replace("^", "").replace(" ", "").replace("-", "")
    if "90y" in key or "y90" in key or "yttrium" in key:
        nuclide = "Y-90"
    elif "99mtc" in key or "tc99m" in key or "technetium" in key:
        nuclide = "Tc-99m"
    else:
        nuclide = text.strip() or "unknown"
    dose, half_life = getattr(item, "RadionuclideTotalDose", None), getattr(item, "RadionuclideHalfLife", None)
    start = str(getattr(item, "RadiopharmaceuticalStartDateTime", "") or "")
    if not start and getattr(item, "RadiopharmaceuticalStartTime", ""):
        start = str(getattr(ds, "SeriesDate", "") or getattr(ds, "StudyDate", "")) + str(item.RadiopharmaceuticalStartTime)
    return (nuclide, float(dose) if dose not in (None, "") else None, start,
            float(half_life) if half_life not in (None, "") else None)


def _slice_problem(headers: list) -> str:
    """The slice-spacing problem of single-frame slices (positions along the first slice's normal)."""
    import numpy as np

    from sirtjax.io import slice_spacing_problem

    first = headers[0]
    if len(headers) < 3 or not getattr(first, "ImageOrientationPatient", None):
        return ""
    o = np.asarray(first.ImageOrientationPatient, np.float64)
    normal = np.cross(o[:3], o[3:])
    positions = [float(np.asarray(h.ImagePositionPatient, np.float64) @ normal) for h in headers if getattr(h, "ImagePositionPatient", None)]
    return slice_spacing_problem(positions) if len(positions) == len(headers) else "has slices without a position"


def _info(uid: str, headers: list, files: list[Path]) -> SeriesInfo:
    ds = headers[0]
    nuclide, injected, administered, half_life = _nuclide(ds)
    series_datetime = str(getattr(ds, "SeriesDate", "") or "") + str(getattr(ds, "SeriesTime", "") or "")
    size_m, weight = getattr(ds, "PatientSize", None), getattr(ds, "PatientWeight", None)
    date = next((str(getattr(ds, k)) for k in ("AcquisitionDate", "SeriesDate", "StudyDate") if getattr(ds, k, "")), "")
    return SeriesInfo(
        uid=uid, modality=str(getattr(ds, "Modality", "")), description=str(getattr(ds, "SeriesDescription", "")),
        date=date, frame_of_reference=str(getattr(ds, "FrameOfReferenceUID", "")),
        image_type=tuple(str(v).upper() for v in (getattr(ds, "ImageType", None) or ())),
        nuclide=nuclide, injected_bq=injected,
        units=str(getattr(ds, "Units", "")), decay_correction=str(getattr(ds, "DecayCorrection", "")),
        series_datetime=series_datetime, administered_datetime=administered, half_life_s=half_life,
        contrast=bool(str(getattr(ds, "ContrastBolusAgent", "")).strip()),
        patient=(str(getattr(ds, "PatientID", "")), float(size_m) * 100 if size_m else None, float(weight) if weight else None),
        files=tuple(sorted(files)), problem=_slice_problem(headers) if len(files) > 1 else "")


def scan_dicom(root: str | Path) -> tuple[tuple[SeriesInfo, ...], int]:
    """(the image series below root, sorted by date then description; the number of non-DICOM files passed over)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    found: dict[str, list[tuple]] = {}  # series UID -> (header, path) of each of its files
    skipped = 0
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
            except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
                skipped += 1
                continue
            uid = str(getattr(ds, "SeriesInstanceUID", ""))
            if not uid or not getattr(ds, "Modality", ""):
                skipped += 1  # DICOMDIR and other files without a series
                continue
            found.setdefault(uid, []).append((ds, path))
    if not found:
        raise InputError(root, f"no DICOM series below this folder ({skipped} other files)")
    series = [_info(uid, [ds for ds, _ in entries], [path for _, path in entries]) for uid, entries in found.items()]
    return tuple(sorted(series, key=lambda s: (s.date, s.modality, s.description, s.uid))), skipped


def _role(s: SeriesInfo) -> tuple[str | None, str]:
    """(the emission role of a series, or None; and the reason when it has no role of its own)."""
    if "LOCALIZER" in s.image_type:
        return None, "localiser"
    if s.modality == "PT":
        return ("y90_pet", "") if s.nuclide == "Y-90" else (None, f"PET of {s.nuclide or 'an unknown tracer'}, not 90Y")
    if s.modality == "NM":
        if not {"RECON TOMO", "RECON GATED TOMO"} & set(s.image_type):
            return None, "not a tomographic reconstruction (planar, whole-body or projections)"
        return ("maa_spect", "") if s.nuclide == "Tc-99m" else (None, f"SPECT of {s.nuclide or 'an unknown tracer'}, not 99mTc-MAA")
    if s.modality in ("CT", "MR"):
        return None, ""
    return None, f"modality {s.modality} is not an image sirtjax reads"


def assign_series(series: Iterable[SeriesInfo], overrides: Mapping[str, str] | None = None) -> Assignment:
    """Sessions and roles of the series (module docstring); ``overrides`` maps a Series Instance UID
    (or a unique prefix of it) to a manifest name or 'ignore'. InputError on an ambiguity."""
    series = list(series)
    forced = _resolve_overrides(series, overrides or {})
    candidates: dict[str, list[SeriesInfo]] = {}
    unused: list[tuple[SeriesInfo, str]] = []
    emission_frames: dict[str, str] = {}  # frame of reference -> emission role
    anatomical: list[SeriesInfo] = []  # CT and MR: their role depends on the emission series
    for s in series:
        if s.uid in forced:
            continue
        role, why = _role(s)
        if role is not None:
            candidates.setdefault(role, []).append(s)
            if s.frame_of_reference:
                emission_frames[s.frame_of_reference] = role
        elif why:
            unused.append((s, why))
        else:
            anatomical.append(s)
    for s in anatomical:
        emission = emission_frames.get(s.frame_of_reference)
        if emission is not None:
            ct_role, mr_role = _EMISSION[emission]
            role = ct_role if s.modality == "CT" else mr_role
            if role is None:
                unused.append((s, f"an MR in the frame of reference of the {emission}"))
                continue
        else:
            role = "diag_ct" if s.modality == "CT" else "diag_mr"
        candidates.setdefault(role, []).append(s)
    chosen: dict[str, SeriesInfo] = {}
    for uid, name in forced.items():
        s = next(x for x in series if x.uid == uid)
        if name == "ignore":
            unused.append((s, "ignored (--series)"))
        else:
            chosen[name] = s
    for role, found in candidates.items():
        if role in chosen:
            unused.extend((s, f"{role} given by --series") for s in found)
            continue
        broken = [s for s in found if s.problem]
        if broken and len(broken) == len(found):
            s = broken[0]
            raise InputError(s.files[0].parent, f"series {s.uid} ('{s.description}', the only {role}) {s.problem}")
        unused.extend((s, s.problem) for s in broken)
        found = [s for s in found if not s.problem]
        if len(found) > 1:
            listed = "; ".join(f"{s.uid} ({s.modality} {s.date} '{s.description}')" for s in found)
            raise InputError("--series", f"{len(found)} series could be {role}: {listed}; choose one with "
                                         f"--series UID={role} (or drop the others with --series UID=ignore)")
        chosen[role] = found[0]
    return Assignment(dict(sorted(chosen.items())), tuple(unused))


def _resolve_overrides(series: list[SeriesInfo], overrides: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, name in overrides.items():
        if name != "ignore" and name not in ROLES:
            raise InputError("--series", f"{key}={name}: the name must be one of {', '.join(ROLES)} or 'ignore'")
        match = [s.uid for s in series if s.uid.startswith(key)]
        if len(match) != 1:
            raise InputError("--series", f"{key} matches {len(match)} series; give more of its Series Instance UID")
        out[match[0]] = name
    return out


def _datetime(value: str):
    """A DICOM DT/DA+TM string (YYYYMMDDHHMMSS[.ffffff], time zone dropped) as a datetime, or None."""
    import datetime

    digits = value.split("+")[0].split("-")[0]
    whole, _, fraction = digits.partition(".")
    if len(whole) < 12:
        return None
    try:
        stamp = datetime.datetime.strptime(whole[:14].ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return stamp + datetime.timedelta(seconds=float("0." + fraction) if fraction else 0.0)


def decay_to_administration(s: SeriesInfo) -> tuple[float, str]:
    """(factor, note): multiply a 90Y PET in Bq/ml by factor to have it decay corrected to the administration,
    as the verification expects.

    ADMIN: 1. START (corrected to the Series Date/Time, the acquisition start): 2^(dt / T_half),
    dt from the administration (Radiopharmaceutical Start DateTime), T_half the series' Radionuclide
    Half Life or ICRP-107's 64.1 h. NONE or a missing time: InputError, since the activity at
    administration cannot be known from the tags.
    """
    from sirtjax.dosimetry.constants import Y90_HALF_LIFE_H

    if s.decay_correction == "ADMIN":
        return 1.0, "so corrected in DICOM"
    start, admin = _datetime(s.series_datetime), _datetime(s.administered_datetime)
    if s.decay_correction != "START" or start is None or admin is None:
        raise InputError(f"series {s.uid}", f"the 90Y PET's Decay Correction is '{s.decay_correction or 'absent'}' and "
                                            f"its times are {s.series_datetime or 'absent'} (series) and "
                                            f"{s.administered_datetime or 'absent'} (administration): cannot decay "
                                            "correct it to the administration")
    half_life_s = s.half_life_s or Y90_HALF_LIFE_H * 3600.0
    dt_s = (start - admin).total_seconds()
    if dt_s < 0:
        raise InputError(f"series {s.uid}", f"the 90Y PET starts before the administration ({s.series_datetime} < "
                                            f"{s.administered_datetime})")
    factor = 2.0 ** (dt_s / half_life_s)
    return factor, f"corrected here from the acquisition start, {dt_s / 3600:.2f} h later: x{factor:.4f}"


def study_manifest(name: str, assignment: Assignment) -> tuple[dict, list[str]]:
    """(the study.json dict for the chosen series, converted to ``images/NAME.nii.gz``; warnings about units)."""
    chosen, warnings = assignment.chosen, []
    patients = {s.patient[0] for s in chosen.values()}
    if len(patients) > 1:
        raise InputError("DICOM", f"the chosen series belong to {len(patients)} patients ({', '.join(sorted(patients))}); "
                                  "give one patient's export, or drop series with --series UID=ignore")
    series: dict[str, dict] = {}
    for role, s in chosen.items():
        modality, session = ROLES[role]
        entry: dict = {"file": f"images/{role}.nii.gz", "modality": modality, "session": session}
        if modality == "CT":
            entry.update(units="HU", contrast=s.contrast)
        elif modality == "PET":
            if s.units != "BQML":
                raise InputError(f"series {s.uid}", f"the 90Y PET ('{s.description}') is in {s.units or 'unknown units'}; "
                                                    "the verification needs Bq/ml (Units BQML)")
            entry.update(units="Bq/ml", tracer="90Y", decay_corrected_to=f"injection ({decay_to_administration(s)[1]})")
        elif modality == "SPECT":
            entry.update(units="counts", tracer="99mTc-MAA")
            warnings.append(f"the MAA SPECT ({s.description or s.uid}) is in counts, not quantitative: its activity "
                            "distribution is used relative to the liver and lungs")
        for other, kind in zip(_EMISSION.get(role, ()), ("ct", "mr")):
            if other in chosen and chosen[other].frame_of_reference == s.frame_of_reference:
                entry[kind] = other
        series[role] = entry
    heights = [s.patient[1] for s in chosen.values() if s.patient[1]]
    weights = [s.patient[2] for s in chosen.values() if s.patient[2]]
    patient = {"id": next(iter(patients))} | ({"height_cm": round(heights[0], 1)} if heights else {}) | (
        {"weight_kg": round(weights[0], 1)} if weights else {})
    activities = {}
    if "maa_spect" in chosen and chosen["maa_spect"].injected_bq:
        activities["maa_injected_mbq"] = round(chosen["maa_spect"].injected_bq / 1e6, 3)
    if "y90_pet" in chosen and chosen["y90_pet"].injected_bq:
        activities["y90_injected_gbq"] = round(chosen["y90_pet"].injected_bq / 1e9, 4)
    manifest = {"schema": "sirtjax.study", "schema_version": 1, "name": name, "patient": patient, "series": series}
    if activities:
        manifest["activities"] = activities
    return manifest, warnings


def write_study(assignment: Assignment, out: str | Path, *, name: str, overwrite: bool = False) -> tuple[Path, list[str]]:
    """Convert the chosen series to NIfTI under ``out/images`` and write ``out/study.json`` (atomically);
    returns (the manifest's path, warnings). The manifest is checked by :func:`sirtjax.io.study.load_study`."""
    import numpy as np

    from sirtjax.io import read_dicom_files, write_volume
    from sirtjax.outputs import output_dir, write_json
    from sirtjax.io.study import load_study

    manifest, warnings = study_manifest(name, assignment)
    inputs = [f for s in assignment.chosen.values() for f in s.files[:1]]
    with output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        (tmp / "images").mkdir()
        for role, s in assignment.chosen.items():
            vol = read_dicom_files(s.files, shown_as=f"series {s.uid} ('{s.description}')")
            if role == "y90_pet":
                vol = vol.with_array(np.asarray(vol.array, np.float32) * np.float32(decay_to_administration(s)[0]))
            write_volume(vol, tmp / "images" / f"{role}.nii.gz")
        write_json(manifest, tmp / "study.json")
        load_study(tmp / "study.json")  # the workflows' own checks, before the folder appears
    return Path(out) / "study.json", warnings

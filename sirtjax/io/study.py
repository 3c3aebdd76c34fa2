"""Study manifests: the JSON file that names a patient's series, masks, activities and targets.

A study is a folder (or any place) with a manifest, ``study.json``, that the workflows
(``sirtjax plan`` / ``sirtjax verify``) read. Phantom studies (:mod:`sirtjax.phantom`) come with
one; for a real patient it is written by hand (see ``docs/study-manifest.md``). Paths in the
manifest are relative to the manifest's folder (absolute paths are kept). Images are read only
when asked for (:meth:`StudyManifest.read`), so loading a manifest is instant and checks only that
the files exist.

Schema (every key is checked; unknown keys are an error, so typos do not pass silently)::

    {
      "schema": "sirtjax.study",              optional; if given, exactly this
      "schema_version": 1,                    optional; if given, 1
      "name": "patient-042",                  optional; default: the folder name
      "patient": {"id": "042", "height_cm": 172, "weight_kg": 80},        all optional
      "series": {                             required, at least one
        NAME: {
          "file": "maa_ct.nii.gz"             a NIfTI/MHA/NRRD file, or
          "folder": "dicom/maa_ct",           a folder holding one DICOM series (exactly one of the two)
          "modality": "CT" | "MR" | "SPECT" | "PET",
          "session": "maa" | "diagnostic" | "y90",
          "units": "HU" | "counts" | "Bq/ml" | "a.u." | ...      optional free text
          "tracer": "99mTc-MAA" | "90Y",      optional (emission series)
          "ct": NAME or "mr": NAME,           optional (SPECT/PET): the CT/MR acquired with it
          "contrast": true|false, "phase": "...", "sequence": "T1", "decay_corrected_to": "injection"
        }},
      "sessions": {                           optional; derived from the series when absent
        "maa": {"ct": NAME, "spect": NAME},
        "diagnostic": {"ct": NAME, "mr": NAME},
        "y90": {"ct": NAME, "mr": NAME, "pet": NAME}},
      "masks": {SERIES: {"liver": PATH, "lesions": PATH, "lungs": PATH, "labels": PATH}},  optional
      "activities": {"maa_injected_mbq": 150, "y90_planned_gbq": 1.8, "y90_injected_gbq": 1.75},
      "target_doses_gy": {"tumour": 120, "normal_liver": 40, "whole_liver": 50, "lung_limit": 30},
      "lung_shunt_fraction": 0.08,            optional: planar-scintigraphy LSF, a fraction in [0, 1)
      "truth": "truth.json"                   optional (phantom studies: the ground truth)
    }

Masks are label images on their series' grid: ``liver`` and ``lungs`` 0/1, ``lesions`` 0 and one
id per lesion instance, ``labels`` liver = 1 and one id >= 2 per landmark. Plausibility limits
(an error outside them): height 50-250 cm, weight 2-400 kg, MAA activity (0, 2000] MBq, 90Y
activities (0, 20] GBq, target doses (0, 1000] Gy, lung limit (0, 100] Gy, lung shunt fraction
[0, 1) (a fraction: 8 % is 0.08). The workflows use the lung shunt fraction of the command line
(``--lung-shunt``) first, then the manifest's, then the one from SPECT lung/liver counts.

Every problem raises :class:`~sirtjax.errors.InputError` naming the manifest file and the field
(``study.json: series.maa_ct.file: no such file 'maa_ct.nii.gz'``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from sirtjax.errors import InputError
from sirtjax.io import is_volume_path, read_ct, read_volume
from sirtjax.volume import Volume

SCHEMA = "sirtjax.study"
SCHEMA_VERSION = 1
MANIFEST_NAME = "study.json"
MODALITIES = ("CT", "MR", "SPECT", "PET")
SESSION_ROLES = {"maa": ("ct", "spect"), "diagnostic": ("ct", "mr"), "y90": ("ct", "mr", "pet")}
MASK_KINDS = ("liver", "lesions", "lungs", "labels")
_TOP_KEYS = ("schema", "schema_version", "name", "patient", "series", "sessions", "masks", "activities",
             "target_doses_gy", "lung_shunt_fraction", "truth")
_SERIES_KEYS = ("file", "folder", "modality", "session", "units", "tracer", "ct", "mr", "contrast", "phase",
                "sequence", "decay_corrected_to")
_PATIENT_LIMITS = {"height_cm": (50.0, 250.0), "weight_kg": (2.0, 400.0)}
_ACTIVITY_LIMITS = {"maa_injected_mbq": 2000.0, "y90_planned_gbq": 20.0, "y90_injected_gbq": 20.0}
_DOSE_LIMITS = {"tumour": 1000.0, "normal_liver": 1000.0, "whole_liver": 1000.0, "lung_limit": 100.0}


@dataclasses.dataclass(frozen=True)
class Series:
    """One image series of a study: its resolved path (file or DICOM folder) and description."""

    name: str
    path: Path
    modality: str
    session: str
    units: str | None
    anatomical: str | None  # SPECT/PET: the CT/MR series acquired with it
    info: dict  # the manifest entry as written (tracer, contrast, phase, ...)


@dataclasses.dataclass(frozen=True)
class StudyManifest:
    """A validated study manifest with resolved absolute paths; images are read on demand."""

    path: Path
    name: str
    patient: dict  # id (str), height_cm, weight_kg (float); only the keys given
    series: dict[str, Series]
    sessions: dict[str, dict[str, str]]  # session -> role (ct/mr/spect/pet) -> series name
    masks: dict[str, dict[str, Path]]  # series name -> mask kind -> path
    activities: dict[str, float]
    target_doses_gy: dict[str, float]
    truth_path: Path | None
    lung_shunt_fraction: float | None = None  # planar scintigraphy, in [0, 1)

    def relocated(self, folder: Path) -> StudyManifest:
        """The same manifest with every path inside its folder moved under folder (a copy of the study)."""
        old, new = self.path.parent, Path(folder)

        def move(p: Path | None) -> Path | None:
            return new / p.relative_to(old) if p is not None and p.is_relative_to(old) else p

        return dataclasses.replace(
            self, path=move(self.path), truth_path=move(self.truth_path),
            series={k: dataclasses.replace(s, path=move(s.path)) for k, s in self.series.items()},
            masks={k: {kind: move(p) for kind, p in m.items()} for k, m in self.masks.items()})

    def input_paths(self) -> tuple[Path, ...]:
        """The manifest's folder and every file it names: what a workflow's output must keep clear of."""
        named = [s.path for s in self.series.values()] + [p for m in self.masks.values() for p in m.values()]
        return (self.path.parent, *named, *([self.truth_path] if self.truth_path else []))

    def session_series(self, session: str, role: str) -> str | None:
        """The series name playing role ('ct', 'mr', 'spect', 'pet') in session, or None."""
        return self.sessions.get(session, {}).get(role)

    def read(self, series: str) -> Volume:
        """Read one series as a Volume (no caching: keep the result); InputError if unknown or unreadable, or a CT not in
        Hounsfield units (:func:`~sirtjax.io.read_ct`)."""
        if series not in self.series:
            raise InputError(self.path, f"no series '{series}' (the manifest has {', '.join(sorted(self.series))})")
        path = self.series[series].path
        return read_ct(path) if self.series[series].modality == "CT" else read_volume(path)

    def mask_path(self, series: str, kind: str) -> Path | None:
        """Path of the given mask of a series (kind in liver/lesions/lungs/labels), or None."""
        if kind not in MASK_KINDS:
            raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
        return self.masks.get(series, {}).get(kind)

    def read_mask(self, series: str, kind: str) -> Volume | None:
        """Read a given mask as an integer-label Volume, or None when the manifest gives none.

        Raises InputError when the file holds non-integer or negative values, or (liver/lungs)
        values other than 0/1.
        """
        path = self.mask_path(series, kind)
        if path is None:
            return None
        vol = read_volume(path)
        return vol.with_array(_label_array(path, vol.array, binary=kind in ("liver", "lungs")))

    def read_truth(self) -> dict | None:
        """The phantom ground truth (truth.json) as a dict, or None for studies without one."""
        if self.truth_path is None:
            return None
        return _read_json(self.truth_path)

    def to_dict(self) -> dict:
        """JSON-ready summary (absolute paths as strings), for report.json."""
        return {
            "manifest": str(self.path),
            "name": self.name,
            "patient": dict(self.patient),
            "series": {k: {"path": str(s.path), "modality": s.modality, "session": s.session, "units": s.units}
                       for k, s in self.series.items()},
            "sessions": {k: dict(v) for k, v in self.sessions.items()},
            "masks": {k: {m: str(p) for m, p in v.items()} for k, v in self.masks.items()},
            "activities": dict(self.activities),
            "target_doses_gy": dict(self.target_doses_gy),
            "lung_shunt_fraction": self.lung_shunt_fraction,
        }


def load_study(path: str | Path) -> StudyManifest:
    """Load and validate a study manifest: a JSON file, or a folder holding ``study.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    data = _read_json(p)
    return parse_manifest(data, p)


def parse_manifest(data: object, manifest_path: str | Path) -> StudyManifest:
    """Validate a manifest dict; paths resolve relative to manifest_path's folder (which need not hold it)."""
    mpath = Path(manifest_path).absolute()
    c = _Checker(mpath)
    data = c.mapping(data, "", _TOP_KEYS)
    if "schema" in data and data["schema"] != SCHEMA:
        c.fail("schema", f"expected '{SCHEMA}', got {data['schema']!r}")
    if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        c.fail("schema_version", f"version {data['schema_version']!r} is not supported (this sirtjax reads {SCHEMA_VERSION})")
    name = c.string(data["name"], "name") if "name" in data else mpath.parent.name
    patient = _patient(c, data.get("patient", {}))
    series = _series(c, data.get("series"))
    sessions = _sessions(c, data.get("sessions"), series)
    masks = _masks(c, data.get("masks", {}), series)
    activities = {k: c.number(v, f"activities.{k}", 0.0, _ACTIVITY_LIMITS[k], open_low=True)
                  for k, v in c.mapping(data.get("activities", {}), "activities", tuple(_ACTIVITY_LIMITS)).items()}
    doses = {k: c.number(v, f"target_doses_gy.{k}", 0.0, _DOSE_LIMITS[k], open_low=True)
             for k, v in c.mapping(data.get("target_doses_gy", {}), "target_doses_gy", tuple(_DOSE_LIMITS)).items()}
    truth = c.existing(data["truth"], "truth", folder=False) if "truth" in data else None
    lsf = _lung_shunt(c, data["lung_shunt_fraction"]) if "lung_shunt_fraction" in data else None
    return StudyManifest(mpath, name, patient, series, sessions, masks, activities, doses, truth, lsf)


# ----------------------------------------------------------------------------- validation


class _Checker:
    """Field checks that raise InputError(manifest, 'field: problem')."""

    def __init__(self, manifest: Path):
        self.manifest = manifest

    def fail(self, field: str, problem: str):
        raise InputError(self.manifest, f"{field}: {problem}" if field else problem)

    def mapping(self, value, field: str, allowed: tuple[str, ...] | None) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"expected a JSON object, got {_kind(value)}")
        if allowed is not None:
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                where = f"{field}." if field else ""
                self.fail(f"{where}{unknown[0]}", f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def string(self, value, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"expected a non-empty string, got {_kind(value)}")
        return value

    def number(self, value, field: str, low: float, high: float, *, open_low: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, f"expected a number, got {_kind(value)}")
        v = float(value)
        if not math.isfinite(v) or v < low or v > high or (open_low and v == low):
            bracket = "(" if open_low else "["
            self.fail(field, f"{value!r} is outside the plausible range {bracket}{low:g}, {high:g}]")
        return v

    def existing(self, value, field: str, *, folder: bool) -> Path:
        rel = self.string(value, field)
        p = Path(rel) if Path(rel).is_absolute() else self.manifest.parent / rel
        if not p.exists():
            self.fail(field, f"no such {'folder' if folder else 'file'} '{rel}'")
        if folder and not p.is_dir():
            self.fail(field, f"'{rel}' is not a folder (use \"file\" for image files)")
        if not folder and p.is_dir():
            self.fail(field, f"'{rel}' is a folder (use \"folder\" for DICOM series)")
        return p


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"{value!r}")


def _patient(c: _Checker, value) -> dict:
    value = c.mapping(value, "patient", ("id", *_PATIENT_LIMITS))
    out: dict = {}
    if "id" in value:
        out["id"] = c.string(value["id"], "patient.id")
    for key, (low, high) in _PATIENT_LIMITS.items():
        if key in value:
            out[key] = c.number(value[key], f"patient.{key}", low, high)
    return out


def _lung_shunt(c: _Checker, value) -> float:
    """The planar LSF: a fraction in [0, 1); a value in [1, 100] (a percentage?) gets a hint."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1.0 <= value <= 100.0:
        c.fail("lung_shunt_fraction", f"{value!r} is not a fraction in [0, 1) (a lung shunt of {value:g} % is "
                                      f"{value / 100:g})")
    return c.number(value, "lung_shunt_fraction", 0.0, 1.0)


def _series(c: _Checker, value) -> dict[str, Series]:
    if value is None:
        c.fail("series", "missing (the manifest must name at least one image series)")
    value = c.mapping(value, "series", None)
    if not value:
        c.fail("series", "empty (the manifest must name at least one image series)")
    out = {}
    for name, entry in value.items():
        f = f"series.{name}"
        entry = c.mapping(entry, f, _SERIES_KEYS)
        if ("file" in entry) == ("folder" in entry):
            c.fail(f, "give exactly one of \"file\" (NIfTI/MHA/NRRD) or \"folder\" (DICOM series)")
        key = "file" if "file" in entry else "folder"
        path = c.existing(entry[key], f"{f}.{key}", folder=key == "folder")
        if key == "file" and not is_volume_path(path):
            c.fail(f"{f}.file", f"'{entry['file']}' is not an image format sirtjax reads (.nii, .nii.gz, .mha, .nrrd)")
        for k in ("modality", "session"):
            if k not in entry:
                c.fail(f, f"missing \"{k}\"")
        modality = c.string(entry["modality"], f"{f}.modality").upper()
        if modality not in MODALITIES:
            c.fail(f"{f}.modality", f"{entry['modality']!r} is not one of {', '.join(MODALITIES)}")
        session = c.string(entry["session"], f"{f}.session")
        if session not in SESSION_ROLES:
            c.fail(f"{f}.session", f"{session!r} is not one of {', '.join(SESSION_ROLES)}")
        if modality.lower() not in SESSION_ROLES[session]:
            c.fail(f"{f}.modality", f"a {modality} series has no role in the {session} session "
                                    f"(roles: {', '.join(SESSION_ROLES[session])})")
        units = c.string(entry["units"], f"{f}.units") if "units" in entry else None
        out[name] = Series(name, path, modality, session, units, None, dict(entry))
    for name, s in list(out.items()):
        links = [k for k in ("ct", "mr") if k in s.info]
        if links and s.modality not in ("SPECT", "PET"):
            c.fail(f"series.{name}.{links[0]}", "only SPECT and PET series name the CT/MR acquired with them")
        if len(links) > 1:
            c.fail(f"series.{name}", "give one of \"ct\" or \"mr\", not both")
        if links:
            _check_ref(c, f"series.{name}.{links[0]}", s.info[links[0]], out, links[0].upper(), s.session)
            out[name] = dataclasses.replace(s, anatomical=s.info[links[0]])
    return out


def _check_ref(c: _Checker, field: str, ref, series: dict[str, Series], modality: str, session: str) -> None:
    ref = c.string(ref, field)
    if ref not in series:
        c.fail(field, f"names no series ('{ref}'; the manifest has {', '.join(sorted(series))})")
    if series[ref].modality != modality:
        c.fail(field, f"'{ref}' is a {series[ref].modality} series, expected {modality}")
    if series[ref].session != session:
        c.fail(field, f"'{ref}' belongs to the {series[ref].session} session, not {session}")


def _sessions(c: _Checker, value, series: dict[str, Series]) -> dict[str, dict[str, str]]:
    if value is None:
        out: dict[str, dict[str, str]] = {}
        for name, s in series.items():
            roles = out.setdefault(s.session, {})
            role = s.modality.lower()
            if role in roles:
                c.fail("sessions", f"missing, and the {s.session} session has two {s.modality} series "
                                   f"('{roles[role]}', '{name}'): say which plays the role")
            roles[role] = name
        return out
    value = c.mapping(value, "sessions", tuple(SESSION_ROLES))
    out = {}
    for session, roles in value.items():
        roles = c.mapping(roles, f"sessions.{session}", SESSION_ROLES[session])
        for role, ref in roles.items():
            _check_ref(c, f"sessions.{session}.{role}", ref, series, role.upper(), session)
        out[session] = dict(roles)
    return out


def _masks(c: _Checker, value, series: dict[str, Series]) -> dict[str, dict[str, Path]]:
    value = c.mapping(value, "masks", None)
    out = {}
    for name, kinds in value.items():
        if name not in series:
            c.fail(f"masks.{name}", f"names no series (the manifest has {', '.join(sorted(series))})")
        kinds = c.mapping(kinds, f"masks.{name}", MASK_KINDS)
        out[name] = {}
        for kind, rel in kinds.items():
            path = c.existing(rel, f"masks.{name}.{kind}", folder=Path(str(rel)).suffix == "")
            out[name][kind] = path
    return out


def _label_array(path: Path, array, *, binary: bool) -> np.ndarray:
    a = np.asarray(array)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(a == np.round(a)):
            raise InputError(path, "a mask must hold integer labels, found fractional values")
        a = a.astype(np.int32)
    if a.size and a.min() < 0:
        raise InputError(path, f"a mask must hold labels >= 0, found {int(a.min())}")
    if binary and a.size and a.max() > 1:
        raise InputError(path, f"a liver/lungs mask must be 0/1, found label {int(a.max())}")
    return a.astype(np.uint8) if binary else a


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "no such file (a study is a folder with study.json, or the manifest itself)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None

"""Report tables and sections from plain JSON-ready data (the same dicts that go into report.json).

Inputs are the dictionaries the library already produces, so a report can be rebuilt from
report.json alone: ``StudyManifest.to_dict()`` (study), ``Prescription.to_dict()`` (one per method),
``VoiStatistics.to_records(names)`` (dose statistics per VOI: ``volume_ml``, ``mean_gy``,
``D<x>_gy``, ``V<x>_pct``) and ``DoseConstants.to_dict()``. Missing or None values show as a dash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from sirtjax.dosimetry.comparison import COMPARE_KEYS, Compared, VoiComparison
from sirtjax.report.html import KeyValues, Section, Table
_ACTIVITY_TITLES = {"maa_injected_mbq": "99mTc-MAA injected (MBq)", "y90_planned_gbq": "90Y planned (GBq)",
                    "y90_injected_gbq": "90Y injected (GBq)"}
_METHOD_TITLES = {"partition": "Partition model", "mono-compartment": "Mono-compartment (MIRD)", "bsa": "BSA method"}


def fmt(value, digits: int = 2) -> str | None:
    """A number with `digits` decimals (None, NaN and non-numbers give None, i.e. a dash)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return f"{value:.{digits}f}"


def column_title(key: str) -> str:
    """Human header for a statistics key: 'D70_gy' -> 'D70 (Gy)', 'V100_pct' -> 'V100 (%)', 'mean_gy' -> 'Mean (Gy)'."""
    m = re.fullmatch(r"([DV][0-9.]+)_(gy|pct)", key)
    if m:
        return f"{m.group(1)} ({'Gy' if m.group(2) == 'gy' else '%'})"
    base, _, unit = key.rpartition("_")
    units = {"gy": "Gy", "ml": "ml", "pct": "%", "gbq": "GBq", "kg": "kg"}
    if base and unit in units:
        return f"{base.replace('_', ' ').capitalize()} ({units[unit]})"
    return key.replace("_", " ").capitalize()


def study_section(study: Mapping) -> Section:
    """Patient and study: patient data, activities, target doses and the series table (from StudyManifest.to_dict())."""
    patient = study.get("patient", {})
    items = [("Study", str(study.get("name", "")))]
    items += [(label, str(patient[k]) if k == "id" else f"{patient[k]:g}")
              for k, label in (("id", "Patient id"), ("height_cm", "Height (cm)"), ("weight_kg", "Weight (kg)"))
              if k in patient]
    items += [(_ACTIVITY_TITLES.get(k, column_title(k)), f"{v:g}") for k, v in study.get("activities", {}).items()]
    items += [(f"Target dose, {k.replace('_', ' ')} (Gy)", f"{v:g}") for k, v in study.get("target_doses_gy", {}).items()]
    series = study.get("series", {})
    rows = tuple((name, s.get("modality"), s.get("session"), s.get("units"), Path(str(s.get("path", ""))).name)
                 for name, s in series.items())
    blocks = [KeyValues(tuple(items))]
    if rows:
        blocks.append(Table(("Series", "Modality", "Session", "Units", "File"), rows, numeric=False))
    return Section("Patient and study", tuple(blocks))


def prescription_table(prescriptions: Sequence[Mapping]) -> Table:
    """The prescription methods side by side (one column each): activities, lung shunt/dose, dose per compartment.

    The caption names each dose constant set once, with the columns that use it (the BSA method
    uses the resin-sphere convention, the partition and MIRD models usually ICRP-107).
    """
    if not prescriptions:
        raise ValueError("no prescription to tabulate")
    headers = ("", *(_METHOD_TITLES.get(p["method"], p["method"]) for p in prescriptions))

    def row(label, get, digits=2):
        return (label, *(fmt(get(p), digits) for p in prescriptions))

    rows = [
        row("Activity to inject (GBq)", lambda p: p.get("activity_gbq"), 3),
        row("Activity reaching the liver (GBq)", lambda p: p.get("liver_activity_gbq"), 3),
        row("Lung shunt fraction (%)", lambda p: 100 * p["lung_shunt_fraction"] if "lung_shunt_fraction" in p else None, 1),
        row("Lung dose (Gy)", lambda p: p.get("lung_dose_gy"), 1),
    ]
    names = list(dict.fromkeys(c["name"] for p in prescriptions for c in p.get("compartments", ())))
    for name in names:
        def comp(p, key, name=name):
            return next((c.get(key) for c in p.get("compartments", ()) if c["name"] == name), None)
        label = name.replace("_", " ")
        rows.append(row(f"Mean dose, {label} (Gy)", lambda p, comp=comp: comp(p, "dose_gy"), 1))
        rows.append(row(f"Mass, {label} (kg)", lambda p, comp=comp: comp(p, "mass_kg"), 3))
        if any(comp(p, "tn_ratio") is not None for p in prescriptions):
            rows.append(row(f"T/N ratio, {label}", lambda p, comp=comp: comp(p, "tn_ratio"), 2))
    return Table(headers, tuple(rows), _constants_caption(prescriptions, headers[1:]))


def _constants_caption(prescriptions: Sequence[Mapping], titles: Sequence[str]) -> str:
    """Which dose constant set each column uses, each set named once with the columns that use it."""
    groups: dict[tuple, list[str]] = {}
    for p, title in zip(prescriptions, titles):
        c = p.get("constants")
        if c:
            groups.setdefault((c.get("name"), c.get("gy_kg_per_gbq")), []).append(title)
    if not groups:
        return ""

    def factor(f):
        return f", {f:.2f} Gy·kg/GBq" if fmt(f) is not None else ""

    if len(groups) == 1 and len(next(iter(groups.values()))) == len(prescriptions):
        (name, f), = groups
        return f"Dose constants: {name}{factor(f)}, in every column."
    parts = [f"{' and '.join(cols)}: {name}{factor(f)}" for (name, f), cols in groups.items()]
    return "Dose constants per column — " + "; ".join(parts) + "."


def _stat_keys(records: Sequence[Mapping]) -> list[str]:
    keys = ["volume_ml", "mean_gy"]
    for rec in records:
        keys += [k for k in rec if re.fullmatch(r"[DV][0-9.]+_(gy|pct)", k) and k not in keys]
    return keys


def dose_table(records: Sequence[Mapping], *, keys: Sequence[str] | None = None, caption: str = "") -> Table:
    """Dose statistics per VOI (rows): volume, mean, D_x and V_x columns (default: every such key present)."""
    keys = list(keys) if keys is not None else _stat_keys(records)
    rows = tuple((str(r["name"]), *(fmt(r.get(k), 1) for k in keys)) for r in records)
    return Table(("VOI", *(column_title(k) for k in keys)), rows, caption)


def comparison_table(comparisons: Sequence[VoiComparison], keys: Sequence[str] = COMPARE_KEYS) -> Table:
    """Plan vs verification per VOI (:func:`sirtjax.dosimetry.comparison.compare_vois`): plan / verification / difference per key."""
    headers = ["VOI"] + ["plan", "verif.", "Δ"] * len(keys)
    groups = (("", 1), *((column_title(k), 3) for k in keys))
    rows = []
    for rec in comparisons:
        cells = [rec.name]
        for k in keys:
            d = rec.values.get(k, Compared(None, None))
            diff = fmt(d.difference, 1)
            if diff is not None and float(diff) == 0.0:
                diff = "0.0"  # not "-0.0" for a difference that rounds to zero
            cells += [fmt(d.plan, 1), fmt(d.verification, 1),
                      None if diff is None else ("+" + diff if not diff.startswith("-") else diff)]
        rows.append(tuple(cells))
    return Table(tuple(headers), tuple(rows), "Δ = verification − plan. –: the VOI is absent or empty on that "
                 "side (e.g. a lesion not mapped, or lost when its mask was resampled onto the SPECT/PET grid).", groups)


def provenance_section(constants: Mapping, *, parameters: Mapping | None = None, version: str | None = None) -> Section:
    """Software version, the dosimetry constant set (DoseConstants.to_dict()) and other parameters used."""
    if version is None:
        from sirtjax import __version__ as version
    items = [("sirtjax version", version)]
    if constants:
        items += [
            ("Dose constant set", str(constants.get("name"))),
            ("90Y half-life (h)", f"{constants['half_life_h']:.4g}" if "half_life_h" in constants else "–"),
            ("Mean energy per decay (MeV)", f"{constants['mean_energy_mev']:.5g}" if "mean_energy_mev" in constants else "–"),
            ("Dose factor (Gy·kg/GBq)", f"{constants['gy_kg_per_gbq']:.3f}" if "gy_kg_per_gbq" in constants else "–"),
            ("Source", str(constants.get("source", "–"))),
        ]
    items += [(str(k), v if isinstance(v, str) else f"{v:g}" if isinstance(v, (int, float)) else str(v))
              for k, v in (parameters or {}).items()]
    return Section("Software and constants", (KeyValues(tuple(items)),))

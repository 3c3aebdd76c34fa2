"""A cohort's manifest: the task and its cases, read from a CSV or JSON file and checked before any work.

CSV: a header row of column names, one case per row; the task is given (``sirtjax cohort --task``) or read from
the columns (``fixed`` and ``moving``: register; ``activity`` and ``liver``: dose; ``image``: segment; ``study``:
plan). JSON: ``{"task": ...,
"cases": [{column: value, ...}, ...]}``. Relative paths are relative to the manifest's folder. Columns per task:

- register: ``id, fixed, moving`` and optionally ``fixed_mask, moving_mask`` (cnn-guided) or ``fixed_labels,
  moving_labels`` (cnn-lm-guided);
- dose: ``id, activity, liver`` and optionally ``lesions, lung, ct``, ``activity_gbq`` (needed for SPECT counts)
  and ``lung_shunt_fraction``;
- segment: ``id, image``;
- plan: ``id, study`` (a study folder with its study.json) and optionally ``lung_shunt_fraction``.

An id names its output folder: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, unique.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

from sirtjax.errors import InputError

PATH_COLUMNS = {
    "register": (("fixed", "moving"), ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels")),
    "dose": (("activity", "liver"), ("lesions", "lung", "ct")),
    "segment": (("image",), ()),
    "plan": (("study",), ()),
}
NUMBER_COLUMNS = {"register": (), "dose": ("activity_gbq", "lung_shunt_fraction"), "segment": (),
                  "plan": ("lung_shunt_fraction",)}
PAIRED = {"register": (("fixed_mask", "moving_mask"), ("fixed_labels", "moving_labels")), "dose": (), "segment": (),
          "plan": ()}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED = {"summary.csv", "cohort.json"}  # the cohort's own files beside the case folders


@dataclasses.dataclass(frozen=True)
class Case:
    """One case of a cohort: its id, its input files (column -> absolute path) and its numbers (column -> finite value)."""

    id: str
    paths: dict[str, Path]
    numbers: dict[str, float]

    def to_dict(self) -> dict:
        """The case as JSON values (paths as strings)."""
        return {"id": self.id, **{k: str(v) for k, v in self.paths.items()}, **self.numbers}


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The task and its cases, in the manifest's order."""

    source: Path
    task: str
    cases: tuple[Case, ...]


def read_manifest(path: str | Path, task: str | None = None) -> Manifest:
    """The manifest at ``path`` (CSV or JSON, see the module docstring), checked: known columns, unique ids, the
    files present. ``task`` overrides the manifest's own. Raises :class:`InputError` naming the file and the case."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV may start with a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest: {exc}") from None
    if path.suffix.lower() == ".json":
        rows, given_task = _json_rows(path, text)
    else:
        rows, given_task = _csv_rows(path, text), None
    if not rows:
        raise InputError(path, "the manifest has no cases")
    task = task or given_task or _task_from_columns(path, rows)
    if task not in PATH_COLUMNS:
        raise InputError(path, f"unknown task '{task}' (use {' or '.join(PATH_COLUMNS)})")
    cases, seen = [], set()
    for n, row in enumerate(rows, start=1):
        case = _case(path, task, row, n)
        if case.id.lower() in seen:  # folders of ids that differ in case only collide on some file systems
            raise InputError(path, f"case {n}: the id '{case.id}' is used twice (ids are compared ignoring case)")
        seen.add(case.id.lower())
        cases.append(case)
    return Manifest(path, task, tuple(cases))


def _csv_rows(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "id" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(path, "a CSV manifest needs a header row with an 'id' column")
    rows = []
    for row in reader:
        if None in row:
            raise InputError(path, f"line {reader.line_num}: more values than columns")
        rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    return rows


def _json_rows(path: Path, text: str) -> tuple[list[dict], str | None]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise InputError(path, 'a JSON manifest is {"task": ..., "cases": [{...}, ...]}')
    if not all(isinstance(c, dict) for c in doc["cases"]):
        raise InputError(path, "every case must be a JSON object of column: value")
    rows = [{str(k): "" if v is None else str(v) for k, v in c.items()} for c in doc["cases"]]
    return rows, doc.get("task")


def _task_from_columns(path: Path, rows: list[dict]) -> str:
    columns = set(rows[0])
    for task, (required, _) in PATH_COLUMNS.items():
        if set(required) <= columns:
            return task
    raise InputError(path, "cannot tell the task from the columns (give --task, or the columns fixed,moving for "
                           "register, activity,liver for dose, image for segment or study for plan)")


def _case(path: Path, task: str, row: dict, n: int) -> Case:
    required, optional = PATH_COLUMNS[task]
    known = {"id", *required, *optional, *NUMBER_COLUMNS[task]}
    unknown = sorted(set(row) - known)
    if unknown:
        raise InputError(path, f"unknown column '{unknown[0]}' for the {task} task (known: {', '.join(sorted(known))})")
    case_id = row.get("id", "").strip()
    if not _ID.fullmatch(case_id) or case_id.lower() in RESERVED:
        raise InputError(path, f"case {n}: the id '{case_id}' must be letters, digits, '.', '_' or '-', "
                               f"starting with a letter or digit, and not {' or '.join(sorted(RESERVED))}")
    where = f"case {case_id}"
    paths = {}
    for column in (*required, *optional):
        value = row.get(column, "")
        if not value:
            if column in required:
                raise InputError(path, f"{where}: no '{column}'")
            continue
        file = Path(value) if Path(value).is_absolute() else path.parent / value
        if not file.exists():
            raise InputError(path, f"{where}: the {column} '{value}' does not exist")
        paths[column] = file
    for a, b in PAIRED[task]:
        if (a in paths) != (b in paths):
            raise InputError(path, f"{where}: give both '{a}' and '{b}' or neither")
    numbers = {}
    for column in NUMBER_COLUMNS[task]:
        value = row.get(column, "")
        if value:
            try:
                numbers[column] = float(value)
            except ValueError:
                numbers[column] = float("nan")
            if not math.isfinite(numbers[column]):
                raise InputError(path, f"{where}: '{column}' must be a finite number, got '{value}'")
    return Case(case_id, paths, numbers)

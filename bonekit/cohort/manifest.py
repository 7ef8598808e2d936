"""The manifest of a cohort batch: one row per case, checked completely before any work starts.

A manifest is a CSV file with a header row:

``case`` (required)
    The case id: unique, letters, digits, ``.``, ``_`` and ``-`` only (it names the case's folder).
``image`` (required)
    The CT: a volume file (NIfTI, NRRD, MetaImage) or a DICOM folder.
``points``
    One point per vertebra (Slicer markups JSON, CSV, or VerSe centroid JSON): for the ``segment`` step.
``labels``
    A vertebra label map (VerSe ids) instead of segmenting.
``calibration``
    A calibration JSON (``bonekit calibrate``): BMD in mg HA/cm3 instead of HU.

Every other column is subject metadata (age, sex, fracture, ...) and is copied into the results.
Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import BoneKitError

__all__ = ["Case", "STEPS", "ALL_STEPS", "REQUIRED_COLUMNS", "PATH_COLUMNS", "read_manifest", "check_steps"]

#: The steps a batch runs by default, in the order they run.
STEPS = ("segment", "vertebra", "morphometry", "focal")
#: Every step, in running order: ``sr`` (super-resolution of each VOI, then morphometry on it) is asked for.
ALL_STEPS = (*STEPS, "sr")
REQUIRED_COLUMNS = ("case", "image")
PATH_COLUMNS = ("image", "points", "labels", "calibration")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Case:
    """One row of a manifest, its paths made absolute."""

    case: str
    image: str
    points: str | None = None
    labels: str | None = None
    calibration: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"case": self.case, "image": self.image, "points": self.points, "labels": self.labels,
                "calibration": self.calibration, "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        return cls(d["case"], d["image"], d.get("points"), d.get("labels"), d.get("calibration"),
                   dict(d.get("metadata") or {}))


def check_steps(steps: Sequence[str] | str) -> tuple[str, ...]:
    """The steps asked for (a list or "a,b,c"), checked and in running order; vertebra is implied by the
    steps that measure inside its masks."""
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        raise BoneKitError(f"Unknown step {', '.join(repr(s) for s in unknown)}: choose from {', '.join(ALL_STEPS)}.")
    if not steps:
        raise BoneKitError(f"No step chosen: choose from {', '.join(ALL_STEPS)}.")
    chosen = set(steps)
    if chosen & {"morphometry", "focal", "sr"}:
        chosen.add("vertebra")   # they measure inside the vertebra step's VOI and ROI
    return tuple(s for s in ALL_STEPS if s in chosen)


def read_manifest(path, steps: Sequence[str] | str = STEPS) -> list[Case]:
    """Read and check a manifest: every problem is reported at once, as one error, before any work.

    Checked: the file, the required columns, empty and duplicate case ids, ids that cannot name a
    folder, paths that do not exist, and that each case has what its steps need (points or labels
    for ``segment``; labels when ``segment`` is not run).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BoneKitError(f"{path}: no such manifest.")
    steps = check_steps(steps)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as error:
        raise BoneKitError(f"{path}: not a readable CSV file ({error}).") from None
    if not rows:
        raise BoneKitError(f"{path}: no cases (a header row and one row per case are needed).")
    if None in header:
        raise BoneKitError(f"{path}: a row has more fields than the header.")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise BoneKitError(f"{path}: no column {', '.join(repr(c) for c in missing)}; the manifest needs "
                           f"{', '.join(REQUIRED_COLUMNS)} (optional: points, labels, calibration, metadata).")
    base = path.parent
    problems, cases, seen = [], [], {}
    for line, row in enumerate(rows, start=2):
        row = {k: (v or "").strip() for k, v in row.items()}
        case_id = row["case"]
        where = f"line {line}" + (f" (case {case_id})" if case_id else "")
        if not case_id:
            problems.append(f"{where}: empty case id")
        elif not _CASE_ID.match(case_id):
            problems.append(f"{where}: the case id may hold letters, digits, '.', '_' and '-' only")
        elif case_id in seen:
            problems.append(f"{where}: case id '{case_id}' already on line {seen[case_id]}")
        else:
            seen[case_id] = line
        paths = {}
        for column in PATH_COLUMNS:
            value = row.get(column, "")
            if not value:
                paths[column] = None
                continue
            p = Path(value).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.exists():
                problems.append(f"{where}: {column} {value} does not exist")
            paths[column] = str(p.resolve())
        if not row.get("image"):
            problems.append(f"{where}: no image")
        if "segment" in steps and not (paths["points"] or paths["labels"]):
            problems.append(f"{where}: the segment step needs a points file (column 'points') or a label map "
                            "(column 'labels')")
        if "segment" not in steps and "vertebra" in steps and not paths["labels"]:
            problems.append(f"{where}: without the segment step, a label map is needed (column 'labels')")
        metadata = {k: v for k, v in row.items() if k not in ("case", *PATH_COLUMNS)}
        cases.append(Case(case_id, paths["image"] or "", paths["points"], paths["labels"], paths["calibration"],
                          metadata))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise BoneKitError(f"{path}: {len(problems)} problem(s), nothing was run:\n  " + "\n  ".join(shown))
    return cases

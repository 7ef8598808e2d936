"""Vertebra points: one labelled point per vertebra, in LPS millimetres.

Three file formats are read, all into ``{VerSe id: (x, y, z) LPS mm}``:

* Slicer markups (``.mrk.json``): control-point labels ``L1``, ``T12`` ... (or VerSe ids),
  positions in the file's ``coordinateSystem`` (RAS or LPS);
* CSV with header ``label,x,y,z`` in LPS millimetres (SimpleITK's
  ``TransformIndexToPhysicalPoint``);
* VerSe centroid JSON (``*_ctd.json``): a header entry ``{"direction": [...]}`` then
  ``{"label": id, "X": i, "Y": j, "Z": k}`` in voxel coordinates of the image reoriented to
  that direction code; converting them needs the CT they belong to.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .errors import BoneKitError
from .volume import Volume, orientation_code

#: VerSe label ids (Löffler et al. 2020): C1-C7 = 1-7, T1-T12 = 8-19, L1-L6 = 20-25, T13 = 28.
VERSE_IDS = {**{f"C{i}": i for i in range(1, 8)}, **{f"T{i}": 7 + i for i in range(1, 13)},
             **{f"L{i}": 19 + i for i in range(1, 7)}, "T13": 28}
VERSE_NAMES = {v: k for k, v in VERSE_IDS.items()}

Points = dict[int, np.ndarray]


def verse_id(label) -> int:
    """VerSe id from a name ('L1', 'l1', 'T12') or a number ('20', 20)."""
    text = str(label).strip().upper()
    if text in VERSE_IDS:
        return VERSE_IDS[text]
    try:
        value = int(float(text))
    except ValueError:
        value = -1
    if value in VERSE_NAMES:
        return value
    raise BoneKitError(f"'{label}' is not a vertebra name or VerSe id; use names such as T12, L1 ... L5 "
                       f"or ids 1-25, 28.")


def _add(points: Points, label, xyz, source: str) -> None:
    vid = verse_id(label)
    if vid in points:
        raise BoneKitError(f"{source}: vertebra {VERSE_NAMES[vid]} is given twice; give one point per vertebra.")
    xyz = np.asarray(xyz, dtype=float)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise BoneKitError(f"{source}: the point for {VERSE_NAMES[vid]} is not three finite numbers.")
    points[vid] = xyz


def read_markups(path) -> Points:
    """Points from a Slicer markups file (``.mrk.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        markups = data["markups"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BoneKitError(f"{path} is not a Slicer markups file (.mrk.json): {exc}") from None
    points: Points = {}
    for markup in markups:
        flip = np.array([-1.0, -1.0, 1.0]) if str(markup.get("coordinateSystem", "LPS")).upper() == "RAS" \
            else np.ones(3)
        for cp in markup.get("controlPoints", []):
            _add(points, cp.get("label", ""), np.asarray(cp["position"], dtype=float) * flip, str(path))
    if not points:
        raise BoneKitError(f"{path} holds no control points.")
    return points


def read_csv_points(path) -> Points:
    """Points from a CSV file with header ``label,x,y,z`` (LPS mm)."""
    path = Path(path)
    points: Points = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or [f.strip().lower() for f in reader.fieldnames][:4] != ["label", "x", "y", "z"]:
            raise BoneKitError(f"{path}: the CSV header must be 'label,x,y,z' (LPS millimetres).")
        for row in reader:
            row = {k.strip().lower(): v for k, v in row.items()}
            try:
                xyz = [float(row[c]) for c in "xyz"]
            except (TypeError, ValueError):
                raise BoneKitError(f"{path}: row {row} has a coordinate that is not a number.") from None
            _add(points, row["label"], xyz, str(path))
    if not points:
        raise BoneKitError(f"{path} holds no points.")
    return points


def read_verse_centroids(path, image: Volume) -> Points:
    """Points from a VerSe centroid JSON, converted to LPS with the geometry of ``image``.

    The voxel coordinates refer to ``image`` reoriented to the file's direction code
    (nibabel-style "points-to" codes such as P, I, R); ``image`` may be stored in any orientation.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
        header = next(e for e in entries if "direction" in e)
        code = "".join(str(c).upper() for c in header["direction"])
    except (OSError, ValueError, StopIteration, TypeError, KeyError):
        raise BoneKitError(f"{path} is not a VerSe centroid file (a list starting with {{'direction': [...]}}).") \
            from None
    own = orientation_code(image.direction)
    axis_of = {c: n for n, c in enumerate(own)}
    opposite = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
    perm, flip = [], []
    for c in code:
        if c in axis_of:
            perm.append(axis_of[c])
            flip.append(False)
        elif opposite.get(c) in axis_of:
            perm.append(axis_of[opposite[c]])
            flip.append(True)
        else:
            raise BoneKitError(f"{path}: direction code {code} does not match the image axes ({own}).")
    if sorted(perm) != [0, 1, 2]:
        raise BoneKitError(f"{path}: direction code {code} does not match the image axes ({own}).")
    size = image.size
    points: Points = {}
    for e in entries:
        if "label" not in e:
            continue
        ijk = np.zeros(3)
        for axis, (m, f) in enumerate(zip(perm, flip)):
            value = float(e["XYZ"[axis]])
            ijk[m] = size[m] - 1 - value if f else value
        _add(points, e["label"], image.index_to_physical(ijk), str(path))
    if not points:
        raise BoneKitError(f"{path} holds no centroids.")
    return points


def read_points(path, image: Volume | None = None) -> Points:
    """Read any supported point file (by extension): .mrk.json / .json markups, VerSe ctd JSON, .csv."""
    path = Path(path)
    if not path.is_file():
        raise BoneKitError(f"Point file {path} does not exist.")
    if path.suffix.lower() == ".csv":
        return read_csv_points(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise BoneKitError(f"{path} is neither CSV nor valid JSON: {exc}") from None
    if isinstance(data, dict) and "markups" in data:
        return read_markups(path)
    if isinstance(data, list):
        if image is None:
            raise BoneKitError(f"{path} is a VerSe centroid file in voxel coordinates; it needs its CT image.")
        return read_verse_centroids(path, image)
    raise BoneKitError(f"{path}: not a Slicer markups file, a VerSe centroid file or a label,x,y,z CSV.")


def write_csv_points(points: Points, path) -> Path:
    """Write points as ``label,x,y,z`` (LPS mm), vertebrae in cranio-caudal order."""
    from .io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "x", "y", "z"])
        for vid in sorted(points):
            writer.writerow([VERSE_NAMES[vid], *(f"{c:.4f}" for c in points[vid])])
    return Path(path)

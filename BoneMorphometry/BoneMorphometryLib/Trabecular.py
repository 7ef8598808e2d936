"""Trabecular morphometry of regions of a CT (VOIs, ROIs, any segment), without MRML or Qt.

Each region is measured by the core, :func:`bonekit.morphometry.morphometry` (BoneJ's
conventions: BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV, Conn.D), which reads only the region's bounding
box (and the margin a blur needs) and returns its maps on that box.

**Apparent, not true, trabecular values on clinical CT.** Trabeculae are 0.1-0.3 mm thick;
clinical CT voxels are about 0.5 mm (and the scanner blur wider). The binarised "bone" is
then clusters of trabeculae: Tb.Th cannot come out below two voxels (1 mm on 0.5 mm voxels:
BoneJ's digital thickness of a one-voxel plate), BV/TV follows the threshold (an automatic
threshold splits any VOI), and none of the numbers may be compared with micro-CT values.
They are *apparent* measures (app.BV/TV, app.Tb.Th ...), comparable between scans of one
protocol and voxel size only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.results import Result, quantity

from BoneKitLib import ProgressCallback, reportProgress

__all__ = ["THRESHOLD_METHODS", "MAP_NAME", "TrabecularMorphometryOutputs", "RegionName", "parseMorphometryThreshold",
           "parseMorphometryBlur", "regionMorphometry"]

#: Automatic thresholds (ImageJ names, :mod:`bonekit.threshold`); a number is a fixed level in HU.
THRESHOLD_METHODS = ("default", "ij_isodata", "isodata", "otsu")
#: The thickness map's key in the core's maps, and its unit.
MAP_NAME = "Tb.Th"


@dataclass
class RegionName(Result):
    """First column of a morphometry table: the region (segment) a row was measured in."""

    segment: str = quantity(None, "segment the morphometry was measured in", name="Segment")


@dataclass
class TrabecularMorphometryOutputs:
    """What :meth:`BoneMorphometryLibLogic.segmentMorphometry` produces."""

    table: Any          # vtkMRMLTableNode: one row per segment, "Segment" then the MorphometryResult columns
    thicknessMap: Any   # vtkMRMLScalarVolumeNode: Tb.Th in mm on the CT grid, 0 outside bone
    results: dict = field(default_factory=dict)  # segment name -> bonekit.morphometry.MorphometryResult


def parseMorphometryThreshold(threshold) -> str | float:
    """The binarisation level as the core takes it: an automatic method name or a number in HU.

    Accepts ``None`` or "" (-> "default"), a method name in any case ("Default", "otsu" ...),
    a number, or a number written as text ("200", " -50.5 ").
    """
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        return "default"
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, bool):
        value = float(threshold)
    elif isinstance(threshold, str):
        name = threshold.strip().lower()
        if name in THRESHOLD_METHODS:
            return name
        try:
            value = float(name)
        except ValueError:
            value = None
    else:
        value = None
    if value is None or not math.isfinite(value):
        raise BoneKitError(f"The morphometry threshold must be {', '.join(THRESHOLD_METHODS)} or a number in HU "
                           f"(bone is above it), not {threshold!r}.")
    return value


def parseMorphometryBlur(blurMm) -> float:
    """The Gaussian sigma in mm, checked: a finite number >= 0 (0: no blur)."""
    try:
        value = float(0.0 if blurMm is None else blurMm)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0 or isinstance(blurMm, bool):
        raise BoneKitError(f"The morphometry blur must be a Gaussian sigma in mm >= 0 (0 for none), not {blurMm!r}.")
    return value


def regionMorphometry(ct: Volume, regions: Iterable[tuple[str, np.ndarray]], threshold="default",
                      blurMm: float = 0.0, count: int | None = None,
                      progressCallback: ProgressCallback | None = None):
    """Trabecular morphometry of each region of ``ct``, and one Tb.Th map of them all.

    Parameters
    ----------
    ct : bonekit.Volume
        CT in HU.
    regions : iterable of (name, mask)
        ``mask``: boolean (or non-zero) array on the CT grid; consumed one at a time, so a
        generator keeps a single full-size mask in memory.
    threshold : "default" | "ij_isodata" | "isodata" | "otsu" | number
        Bone is ``value > threshold`` (HU) after the blur; an automatic method is computed
        from the histogram inside each region (so each region has its own level).
    blurMm : float
        Gaussian sigma in mm applied before thresholding (0: none).
    count : int, optional
        Number of regions, for the progress fractions.
    progressCallback : callable(fraction, message), optional

    Returns
    -------
    results : list of (name, bonekit.morphometry.MorphometryResult)
        In the order of ``regions``.
    thickness : bonekit.Volume
        float32 Tb.Th in mm on the CT grid, **0 outside bone** (the core's NaN, replaced so
        that the map displays and thresholds everywhere); where regions overlap, the later one.

    Raises
    ------
    BoneKitError
        A bad threshold or blur, an empty region, or a region the core cannot measure (no
        bone, or nothing but bone, at the threshold), each naming the region.
    """
    from bonekit.morphometry import morphometry

    threshold = parseMorphometryThreshold(threshold)
    blurMm = parseMorphometryBlur(blurMm)
    thickness = np.zeros(ct.shape, np.float32)
    results = []
    for index, (name, mask) in enumerate(regions):
        start = index / count if count else 0.0
        stop = (index + 1) / count if count else 0.0
        reportProgress(progressCallback, start, f"Trabecular morphometry: {name}")
        mask = np.asarray(mask)
        if mask.shape != ct.shape:
            raise BoneKitError(f"The region {name} has shape {mask.shape}, the CT {ct.shape}.")
        if not mask.any():
            raise BoneKitError(f"The region {name} is empty on the CT grid: it holds no voxel of the CT "
                               "(is it outside the image?).")
        progress = None
        if progressCallback is not None and count:
            progress = lambda f, m, a=start, b=stop: progressCallback(a + (b - a) * float(f), f"{name}: {m}")
        try:
            result, maps = morphometry(ct, ct.with_array((mask != 0).astype(np.uint8)), threshold=threshold,
                                       blur_mm=blurMm, maps=True, progress=progress)
        except BoneKitError as error:
            raise BoneKitError(f"Trabecular morphometry of {name}: {error}") from None
        part = maps[MAP_NAME]  # on the region's bounding box: paste it back by its corner
        box = ct.box_of(part)
        bone = ~np.isnan(part.array)
        thickness[box][bone] = part.array[bone]
        results.append((name, result))
    if not results:
        raise BoneKitError("No region to measure the trabecular morphometry in.")
    reportProgress(progressCallback, 1.0, "Trabecular morphometry done")
    map_ = ct.with_array(thickness, modality=None, units="mm",
                         metadata={"map": MAP_NAME, "outside bone": 0, "regions": [n for n, _ in results],
                                   "threshold": [r.threshold for _, r in results], "blur_mm": blurMm})
    return results, map_

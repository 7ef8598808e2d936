"""Checking the volumes the modules are given, and summarising them.

Every BoneKit module starts from a CT in Hounsfield units. :func:`ctVolumeFromNode`
turns the selected node into a :class:`bonekit.Volume` and refuses, with a message
a radiologist can act on, what cannot be one: a label map, a single slice, or
values that are not HU (raw stored values without the DICOM rescale, an 8-bit
export, a probability map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.progress import ProgressCallback
from bonekit.results import Result, quantity

from .tables import resultsToTable
from .volumes import volumeFromNode

__all__ = ["ProgressCallback", "ProcessingCancelled", "reportProgress", "ctVolumeFromNode", "checkHounsfieldUnits",
           "CTSummary", "summarizeCT", "ctSummaryTable", "loadCalibration", "CTInputLogic"]

#: Plausible HU bounds: the lowest value must show air or padding, the highest some bone or tissue.
AIR_BELOW_HU = -200.0
BONE_ABOVE_HU = 100.0
HU_LIMITS = (-4000.0, 40000.0)


class ProcessingCancelled(Exception):
    """Raised by a module logic's ``process`` after its ``cancel()``: nothing was written to the scene."""


def reportProgress(callback: ProgressCallback | None, fraction: float, message: str) -> None:
    """Call ``callback`` if there is one."""
    if callback is not None:
        callback(float(fraction), message)


def checkHounsfieldUnits(volume: Volume, what: str = "The input CT") -> None:
    """Raise a :class:`bonekit.BoneKitError` unless the values look like a body CT in HU."""
    values = volume.array
    if values.dtype.kind not in "iuf":
        raise BoneKitError(f"{what} holds {values.dtype} values, not Hounsfield units.")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise BoneKitError(f"{what} contains NaN or infinite values; it is not a CT in Hounsfield units.")
    low, high = float(values.min()), float(values.max())
    if low < HU_LIMITS[0] or high > HU_LIMITS[1]:
        raise BoneKitError(f"{what} ranges from {low:g} to {high:g}, outside any CT in Hounsfield units "
                           f"({HU_LIMITS[0]:g} to {HU_LIMITS[1]:g}).")
    if low > AIR_BELOW_HU:
        raise BoneKitError(
            f"{what} does not look like a CT in Hounsfield units: its lowest value is {low:g}, but air "
            "(about -1000 HU) should appear around the body. If it comes from DICOM, load it so that "
            "Rescale Slope/Intercept are applied; if it is an 8-bit or normalised export, use the original CT.")
    if high < BONE_ABOVE_HU:
        raise BoneKitError(f"{what} has no voxel above {BONE_ABOVE_HU:g} HU (highest {high:g}), so it shows no "
                           "bone. Check that the right series was chosen.")


def ctVolumeFromNode(node, what: str = "The input CT") -> Volume:
    """The CT in a scalar volume node as a :class:`bonekit.Volume` in HU, after sanity checks.

    Raises
    ------
    BoneKitError
        No node, no image data, a label map, fewer than two voxels along an
        axis, a non-linear parent transform, or values that are not HU.
    """
    if node is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise BoneKitError(f"{what} '{node.GetName()}' is a label map, not a CT. Choose the CT volume.")
    volume = volumeFromNode(node)
    if min(volume.shape) < 2:
        raise BoneKitError(f"{what} '{node.GetName()}' has {volume.size} voxels: a 3D CT with several "
                           "slices is needed, not a single slice.")
    checkHounsfieldUnits(volume, f"{what} '{node.GetName()}'")
    volume.modality = volume.modality or "CT"
    volume.units = volume.units or "HU"
    return volume


@dataclass
class CTSummary(Result):
    """Grid and value range of one input CT."""

    name: str = quantity(None, "volume (node) name", name="Volume")
    size_i: int = quantity("voxels", "number of columns", name="Size I")
    size_j: int = quantity("voxels", "number of rows", name="Size J")
    size_k: int = quantity("voxels", "number of slices", name="Size K")
    spacing_i: float = quantity("mm", "voxel size along the columns", name="Spacing I")
    spacing_j: float = quantity("mm", "voxel size along the rows", name="Spacing J")
    spacing_k: float = quantity("mm", "voxel size along the slices", name="Spacing K")
    orientation: str = quantity(None, "anatomical direction of the i, j, k axes (LPS = axial DICOM)",
                                name="Orientation")
    minimum: float = quantity("HU", "lowest voxel value", name="Minimum")
    maximum: float = quantity("HU", "highest voxel value", name="Maximum")
    mean: float = quantity("HU", "mean voxel value", name="Mean")


def summarizeCT(volume: Volume, name: str) -> CTSummary:
    """A :class:`CTSummary` of ``volume``."""
    description = volume.describe()
    return CTSummary(name, *description["size_ijk"], *description["spacing_mm"], description["orientation"],
                     description["min"], description["max"], description["mean"])


def ctSummaryTable(volumes: Mapping[str, Volume], sceneOrNode, name: str = "Input summary"):
    """A table node with one :class:`CTSummary` row per named volume."""
    return resultsToTable([summarizeCT(v, n) for n, v in volumes.items()], sceneOrNode,
                          resultType=CTSummary, name=name)


def loadCalibration(calibration):
    """The HU -> BMD calibration a module was given: a file to read, one already read, or none.

    Parameters
    ----------
    calibration : bonekit.calibration.Calibration or str or Path or None
        A calibration (returned as it is), the path of a BoneKit calibration file (.json), or
        None, "" or "." (what an empty path widget gives) for no calibration.

    Returns
    -------
    bonekit.calibration.Calibration or None

    Raises
    ------
    BoneKitError
        The file does not exist or is not a BoneKit calibration file.
    """
    from bonekit.calibration import Calibration

    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    if str(calibration).strip() in ("", "."):
        return None
    path = Path(calibration)
    if not path.is_file():
        raise BoneKitError(f"The calibration file {path} does not exist. Choose a BoneKit calibration file "
                           "(.json) for this scanner and protocol, or none to report HU only.")
    return Calibration.load(path)


class CTInputLogic:
    """Base of the module logics whose input is one CT.

    :meth:`inputVolume` checks the CT (subclasses add their own requirements);
    :meth:`process` writes the CT's summary table until the module's algorithm
    takes its place.
    """

    def inputVolume(self, node) -> Volume:
        """The input CT as a :class:`bonekit.Volume` in HU (see :func:`ctVolumeFromNode`)."""
        return ctVolumeFromNode(node)

    def process(self, inputVolumeNode, outputTableNode=None, progressCallback: ProgressCallback | None = None):
        """Check the CT and write its summary table.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU.
        outputTableNode : vtkMRMLTableNode, optional
            Overwritten; by default a new "Input summary" table in the CT's scene.
        progressCallback : callable(fraction, message), optional

        Returns
        -------
        vtkMRMLTableNode
            One :class:`CTSummary` row.
        """
        reportProgress(progressCallback, 0.0, "Checking the CT")
        ct = self.inputVolume(inputVolumeNode)
        table = ctSummaryTable({inputVolumeNode.GetName(): ct}, outputTableNode or inputVolumeNode.GetScene())
        reportProgress(progressCallback, 1.0, "Done")
        return table

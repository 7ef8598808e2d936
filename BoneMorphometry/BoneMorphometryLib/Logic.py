"""BoneMorphometry logic without Qt: MRML nodes in, BoneKit core calls, MRML nodes out.

The pipeline of the module (Li et al. 2022; Jin et al. 2021; Löffler et al. 2020)
works vertebra by vertebra: GrowCut segmentation, cylindrical VOI, BMD
calibration, trabecular morphometry and fracture grade each add columns to one
per-vertebra table. This first step checks the inputs and fills that table with
what the CT and the segmentation alone give: each vertebra's size and mean HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.results import Result, quantity

from BoneKitLib import ProgressCallback, ctVolumeFromNode, reportProgress, resultsToTable, segmentationToLabelmap

__all__ = ["BoneMorphometryLibLogic", "VertebraSummary"]


@dataclass
class VertebraSummary(Result):
    """What the CT says about one segmented vertebra before any analysis."""

    label: int = quantity(None, "label value (VerSe numbering: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6)",
                          name="Label")
    name: str = quantity(None, "vertebra (segment) name", name="Vertebra")
    voxels: int = quantity("voxels", "number of CT voxels in the vertebra", name="Voxels")
    volume: float = quantity("mm3", "vertebra volume", name="Volume")
    meanHU: float = quantity("HU", "mean CT value in the vertebra", name="Mean")


class BoneMorphometryLibLogic:
    """Per-vertebra analysis of a CT (Qt-free; usable from ``PythonSlicer`` and pip slicer-core)."""

    def inputVolume(self, node) -> Volume:
        """The input CT as a :class:`bonekit.Volume` in HU (see :func:`BoneKitLib.ctVolumeFromNode`)."""
        return ctVolumeFromNode(node)

    def vertebraLabels(self, segmentationNode, ct: Volume) -> tuple[Volume, dict[int, str]]:
        """The vertebra segments as a label map on the CT grid, and the name of each label."""
        if segmentationNode is None:
            raise BoneKitError("No vertebra segmentation selected. Segment the vertebrae first "
                               "(one segment per vertebra).")
        return segmentationToLabelmap(segmentationNode, ct)

    def vertebraSummaries(self, ct: Volume, labels: Volume, names: dict[int, str]) -> list[VertebraSummary]:
        """One :class:`VertebraSummary` per label present in ``labels`` (sorted by label value)."""
        ct.require_same_grid(labels, "vertebra label map")
        flatLabels = labels.array.ravel().astype(np.int64)
        counts = np.bincount(flatLabels)
        sums = np.bincount(flatLabels, weights=ct.array.ravel().astype(np.float64))
        summaries = []
        for value in sorted(names):
            voxels = int(counts[value]) if value < len(counts) else 0
            if voxels == 0:
                raise BoneKitError(f"The vertebra '{names[value]}' (label {value}) is empty on the CT grid.")
            summaries.append(VertebraSummary(value, names[value], voxels, voxels * ct.voxel_volume,
                                             float(sums[value] / voxels)))
        return summaries

    def process(self, inputVolumeNode, vertebraSegmentationNode, outputTableNode=None,
                progressCallback: ProgressCallback | None = None):
        """Check the inputs and write the per-vertebra input summary table.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU.
        vertebraSegmentationNode : vtkMRMLSegmentationNode
            One segment per vertebra; label values from the ``BoneKit.LabelValue`` tags.
        outputTableNode : vtkMRMLTableNode, optional
            Overwritten; by default a new "Vertebra summary" table in the CT's scene.
        progressCallback : callable(fraction, message), optional

        Returns
        -------
        vtkMRMLTableNode
            One :class:`VertebraSummary` row per vertebra.
        """
        reportProgress(progressCallback, 0.0, "Checking the CT")
        ct = self.inputVolume(inputVolumeNode)
        reportProgress(progressCallback, 0.3, "Reading the vertebra segments")
        labels, names = self.vertebraLabels(vertebraSegmentationNode, ct)
        reportProgress(progressCallback, 0.6, "Summarising each vertebra")
        rows = self.vertebraSummaries(ct, labels, names)
        table = resultsToTable(rows, outputTableNode or inputVolumeNode.GetScene(), name="Vertebra summary")
        reportProgress(progressCallback, 1.0, "Done")
        return table

"""SyntheticCT logic without Qt: synthetic CT from biplanar radiographs (Zanier et al. 2024).

TomoRay (X2CT-GAN style) turns an anteroposterior and a lateral radiograph (or
DRR) of the spine into a 3D CT; the network runs in a separate ``PythonSlicer``
process once the core provides it. This first step checks the pair of views and
writes their summary table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonekit import BoneKitError
from bonekit.results import Result, quantity

from BoneKitLib import ProgressCallback, reportProgress, resultsToTable, volumeFromNode

__all__ = ["SyntheticCTLibLogic", "RadiographSummary"]


@dataclass
class RadiographSummary(Result):
    """Pixel grid and value range of one radiograph view."""

    view: str = quantity(None, "projection: AP (anteroposterior) or lateral", name="View")
    name: str = quantity(None, "image (node) name", name="Image")
    # not "rows"/"columns": a field must not shadow Result.columns()
    height: int = quantity("pixels", "number of pixel rows", name="Rows")
    width: int = quantity("pixels", "number of pixel columns", name="Columns")
    rowSpacing: float = quantity("mm", "pixel size between rows", name="Row spacing")
    columnSpacing: float = quantity("mm", "pixel size between columns", name="Column spacing")
    minimum: float = quantity("a.u.", "lowest pixel value", name="Minimum")
    maximum: float = quantity("a.u.", "highest pixel value", name="Maximum")


class SyntheticCTLibLogic:
    """Synthetic CT from two radiographs (Qt-free; usable from ``PythonSlicer`` and pip slicer-core)."""

    def radiograph(self, node, view: str) -> tuple[np.ndarray, tuple[float, float]]:
        """One view as a 2D image: pixels (rows x columns) and (row, column) spacing in mm.

        A radiograph in Slicer is a scalar volume one voxel thick along any axis.
        """
        if node is None:
            raise BoneKitError(f"No {view} radiograph selected.")
        volume = volumeFromNode(node)
        if volume.array.dtype.kind not in "iuf" or (volume.array.dtype.kind == "f"
                                                      and not np.all(np.isfinite(volume.array))):
            raise BoneKitError(f"The {view} radiograph '{node.GetName()}' must hold finite grey values.")
        planeAxes = [axis for axis, n in enumerate(volume.shape) if n > 1]  # array axes k, j, i
        if len(planeAxes) != 2:
            raise BoneKitError(
                f"The {view} radiograph '{node.GetName()}' has {volume.size} voxels; a radiograph is one "
                "image (a single slice). Choose the 2D projection, not a CT volume.")
        spacing = volume.spacing_kji[planeAxes]
        return volume.array.squeeze(), (float(spacing[0]), float(spacing[1]))

    def process(self, apNode, lateralNode, outputTableNode=None, progressCallback: ProgressCallback | None = None):
        """Check the AP and lateral views and write their summary table.

        Both views must have the same pixel grid, as the network sees them side by side.

        Returns
        -------
        vtkMRMLTableNode
            Two :class:`RadiographSummary` rows (AP, lateral); ``outputTableNode`` if given.
        """
        reportProgress(progressCallback, 0.0, "Checking the radiographs")
        rows = []
        for view, node in (("AP", apNode), ("lateral", lateralNode)):
            image, (rowSpacing, columnSpacing) = self.radiograph(node, view)
            rows.append(RadiographSummary(view, node.GetName(), *image.shape, rowSpacing, columnSpacing,
                                          float(image.min()), float(image.max())))
        ap, lateral = rows
        if (ap.height, ap.width) != (lateral.height, lateral.width):
            raise BoneKitError(f"The AP ({ap.height} x {ap.width} pixels) and lateral ({lateral.height} x "
                               f"{lateral.width} pixels) radiographs must have the same size.")
        table = resultsToTable(rows, outputTableNode or apNode.GetScene(), name="Radiograph summary")
        reportProgress(progressCallback, 1.0, "Done")
        return table

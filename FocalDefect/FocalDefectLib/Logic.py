"""FocalDefect logic without Qt: focal bone-loss maps of the vertebral body (Li et al. 2022).

The maps themselves (star-line void detection on a 0.3 mm isotropic CT, focal
BMD and BMC loss per voxel) come with the core algorithm. Until then
:meth:`process` checks the CT and writes its summary table; how a loss map is
shown is already settled here: a ColdToHot overlay on the CT, 0 (no loss) hidden.
"""

from __future__ import annotations

from bonekit import BoneKitError, Volume

from BoneKitLib import CTInputLogic, showOverlay

__all__ = ["FocalDefectLibLogic"]


class FocalDefectLibLogic(CTInputLogic):
    """Focal-defect analysis of a CT (Qt-free; usable from ``PythonSlicer`` and pip slicer-core)."""

    #: Coarsest voxel size (mm) for which star-line profiles can resolve trabecular voids.
    maximumSpacing = 3.0
    #: Focal BMD loss is a fraction, (1200 - BMD) / 1200 averaged over the void.
    lossMapRange = (0.0, 1.0)
    #: Map values below this are drawn transparent (no void found there).
    lossMapThreshold = 0.01

    def inputVolume(self, node) -> Volume:
        """The input CT in HU, refused when its voxels are too coarse for focal analysis."""
        ct = super().inputVolume(node)
        if max(ct.spacing) > self.maximumSpacing:
            raise BoneKitError(
                f"Focal-defect maps need voxels of at most {self.maximumSpacing:g} mm, but "
                f"'{node.GetName()}' has {', '.join(f'{s:.2f}' for s in ct.spacing)} mm. Use the thin-slice "
                "reconstruction of the scan.")
        return ct

    def showLossMap(self, mapNode, ctNode=None, opacity: float = 0.6):
        """Overlay a focal loss map on the CT in every slice view (ColdToHot, 0 to 1, no-loss voxels hidden)."""
        return showOverlay(mapNode, self.lossMapRange, threshold=self.lossMapThreshold, colormap="ColdToHot",
                           opacity=opacity, backgroundNode=ctNode)

"""BoneSR logic without Qt: micro-CT-like super-resolution of clinical CT (Jin et al. 2021).

The generator (pix2pixHD: global generator + local enhancer) works on axial
slices and runs in a separate ``PythonSlicer`` process once the core provides
it. Until then :meth:`process` checks that the input is an axial CT stack in HU
and writes its summary table.
"""

from __future__ import annotations

from bonekit import BoneKitError, Volume, orientation_code

from BoneKitLib import CTInputLogic

__all__ = ["BoneSRLibLogic"]


class BoneSRLibLogic(CTInputLogic):
    """Super-resolution of a CT (Qt-free; usable from ``PythonSlicer`` and pip slicer-core)."""

    def inputVolume(self, node) -> Volume:
        """The input CT in HU; its slices must be axial, as the training slices were."""
        ct = super().inputVolume(node)
        orientation = orientation_code(ct.direction)
        if orientation[2] not in "SI":
            raise BoneKitError(
                f"Super-resolution works on axial slices, but the slices of '{node.GetName()}' are "
                f"{'sagittal' if orientation[2] in 'LR' else 'coronal'} (orientation {orientation}). "
                "Use the axial reconstruction, or resample the CT to axial slices first.")
        return ct

"""SyntheticCT logic without Qt: synthetic CT from biplanar radiographs (Zanier et al. 2024).

TomoRay (X2CT-GAN style) turns an anteroposterior and a lateral radiograph (or DRR) of the spine
into a 3D CT. The network runs in a separate process through the core's command line
(:class:`BoneKitLib.CoreProcessLogic`)::

    PythonSlicer -m bonekit sct infer --model MODEL (--ap AP.nrrd --lateral LAT.nrrd | --ct CT.nrrd
                 --mask LABELS.nrrd) --out SCT.nrrd --device auto --json SUMMARY.json --progress-lines

:meth:`SyntheticCTLibLogic.synthesize` takes two radiograph nodes (single-slice volumes, in BoneKit's
layout: superior at the top, AP columns towards the patient's left, lateral columns towards posterior);
:meth:`SyntheticCTLibLogic.synthesizeFromCT` makes the DRRs from a CT and its vertebra labels. The result
is a scalar volume node (HU within the model's window) with a bone volume rendering.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from bonekit import BoneKitError
from BoneKitLib import (DEVICES, FROM_FILE, CoreProcessLogic, ProgressCallback, ctVolumeFromNode, reportProgress,
                        segmentationToLabelmap, setNodeAttributes, volumeFromNode, volumeToNode)

__all__ = ["SyntheticCTLibLogic", "SyntheticCTOutputs", "DEVICES", "FROM_FILE", "BONE_OPACITY_HU"]

#: The bone volume rendering: opacity 0 up to the first HU, rising to the given opacity at each next point.
BONE_OPACITY_HU = ((-250.0, 0.0), (150.0, 0.0), (400.0, 0.6), (1050.0, 0.9))
_BONE_COLOURS = ((150.0, (0.55, 0.25, 0.15)), (400.0, (0.90, 0.82, 0.66)), (1050.0, (1.0, 1.0, 0.95)))


@dataclass
class SyntheticCTOutputs:
    """What :meth:`SyntheticCTLibLogic.synthesize` produces."""

    volume: Any                                   # vtkMRMLScalarVolumeNode: the synthetic CT (HU, float32)
    summary: dict = field(default_factory=dict)   # the core's run summary (device, seconds, size, spacing, ...)


class SyntheticCTLibLogic(CoreProcessLogic):
    """Synthetic CT from two radiographs (Qt-free; usable from ``PythonSlicer`` and pip slicer-core)."""

    @staticmethod
    def modelLabel(entry: dict) -> str:
        """One line describing a catalogue entry: name, output size and voxel size."""
        text = str(entry.get("name", "?"))
        try:
            text += f" ({int(entry['size'])}^3 voxels of {float(entry['spacing_mm']):g} mm)"
        except (KeyError, TypeError, ValueError):
            pass
        return text

    processTitle = "synthetic-CT"
    modelKind = "sct"
    modelFileName = "SyntheticCT model file (.pt), e.g. one made by 'bonekit sct train'"
    logName = "SyntheticCT"

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

    # ------------------------------------------------------------------ the network, in a child process
    def command(self, outputPath, model, *, ap=None, lateral=None, ct=None, mask=None, device: str = "auto",
                pixelSpacing=None, magnification: float | None = None, summaryPath=None) -> list[str]:
        """``<python> -m bonekit sct infer ... --progress-lines`` for two radiographs or a CT and its labels."""
        device = self.deviceArgument(device)
        arguments = [self.pythonExecutable(), "-m", "bonekit", "sct", "infer", "--model", self.modelArgument(model)]
        if ct is not None:
            arguments += ["--ct", str(ct), "--mask", str(mask)]
        else:
            arguments += ["--ap", str(ap), "--lateral", str(lateral)]
            if pixelSpacing is not None:
                arguments += ["--pixel", ",".join(f"{float(v):g}" for v in np.atleast_1d(pixelSpacing))]
            if magnification is not None:
                arguments += ["--magnification", f"{float(magnification):g}"]
        arguments += ["--out", str(outputPath), "--device", device]
        if summaryPath is not None:
            arguments += ["--json", str(summaryPath)]
        return arguments + ["--progress-lines"]

    def synthesize(self, apNode, lateralNode, model, device: str = "auto", pixelSpacing=None,
                   magnification: float | None = None, outputVolumeNode=None, showResult: bool = True,
                   progressCallback: ProgressCallback | None = None) -> SyntheticCTOutputs:
        """Synthetic CT from an AP and a lateral radiograph node (see the module docstring for their layout).

        ``pixelSpacing`` (mm, one value or row, column) replaces the nodes' spacing; ``magnification``
        (SID/SOD) defaults to the model's own. Nothing is written to the scene unless the run succeeds.
        """
        from bonekit.io import write_volume

        images = {}
        for view, node in (("AP", apNode), ("lateral", lateralNode)):
            image, spacing = self.radiograph(node, view)
            images[view] = (image, spacing)
        # views of different sizes are fine: the core rescales each to the model's detector
        def write(folder: Path) -> dict:
            paths = {}
            for view, key in (("AP", "ap"), ("lateral", "lateral")):
                image, spacing = images[view]
                vol = radiographVolume(image, spacing)
                paths[key] = write_volume(vol, folder / f"{key}.nrrd", compress=False)
            return paths

        return self._infer(write, model, device, pixelSpacing, magnification, outputVolumeNode, showResult,
                           progressCallback, name=f"{apNode.GetName()} sCT", source=apNode)

    def synthesizeFromCT(self, ctNode, labelsNode, model, device: str = "auto", outputVolumeNode=None,
                         showResult: bool = True, progressCallback: ProgressCallback | None = None
                         ) -> SyntheticCTOutputs:
        """Synthetic CT from the AP and lateral DRRs of a CT, bones extracted with its vertebra labels
        (a segmentation, or a label map volume), as the model was trained."""
        from bonekit.io import write_volume

        if ctNode is None:
            raise BoneKitError("No CT selected.")
        if labelsNode is None:
            raise BoneKitError("No vertebra labels selected: the DRRs show the vertebrae alone, as in training. "
                               "Segment them in BoneMorphometry or choose a label map.")
        ct = ctVolumeFromNode(ctNode)
        if labelsNode.IsA("vtkMRMLSegmentationNode"):
            labels, _ = segmentationToLabelmap(labelsNode, ct)
        elif isinstance(labelsNode, slicer.vtkMRMLScalarVolumeNode):
            labels = volumeFromNode(labelsNode).labels_on(ct)
        else:
            raise BoneKitError(f"'{labelsNode.GetName()}' is a {labelsNode.GetClassName()}; the vertebra labels "
                               "must be a segmentation or a label map.")

        def write(folder: Path) -> dict:
            return {"ct": write_volume(ct, folder / "ct.nrrd", compress=False),
                    "mask": write_volume(labels, folder / "labels.nrrd", compress=False)}

        return self._infer(write, model, device, None, None, outputVolumeNode, showResult, progressCallback,
                           name=f"{ctNode.GetName()} sCT", source=ctNode)

    def _infer(self, write, model, device, pixelSpacing, magnification, outputVolumeNode, showResult,
               progressCallback, name: str, source) -> SyntheticCTOutputs:
        from bonekit.io import read_volume

        report, state = self.startRun(progressCallback)
        self.command("sct.nrrd", model, ap="ap.nrrd", lateral="lat.nrrd", device=device)   # checked before writing
        folder = Path(tempfile.mkdtemp(prefix="SyntheticCT-", dir=self.temporaryDirectory))
        try:
            report(0.01, "Writing the inputs for the synthetic-CT process")
            inputs = write(folder)
            outputPath, summaryPath = folder / "sct.nrrd", folder / "summary.json"
            self.runCore(self.command(outputPath, model, device=device, pixelSpacing=pixelSpacing,
                                      magnification=magnification, summaryPath=summaryPath, **inputs),
                         folder, report, state)
            report(self.childProgressRange[1], "Reading the synthetic CT")
            volume = read_volume(outputPath)
            summary = json.loads(summaryPath.read_text()) if summaryPath.is_file() else {}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # the run succeeded: only now is the scene changed
        volume.modality, volume.units = "CT", "HU"
        node = volumeToNode(volume, outputVolumeNode if outputVolumeNode is not None else source.GetScene(),
                            name=None if outputVolumeNode is not None else name)
        setNodeAttributes(node, {"SyntheticCT.model": summary.get("model", str(model)),
                                 "SyntheticCT.device": summary.get("device"),
                                 "SyntheticCT.seconds": summary.get("seconds"), "SyntheticCT.input": source.GetID(),
                                 "SyntheticCT.created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                     timespec="seconds")})
        if showResult:
            self.showBoneRendering(node)
        reportProgress(progressCallback, 1.0, "Done")
        return SyntheticCTOutputs(node, summary)

    @staticmethod
    def showBoneRendering(node, volumeRenderingLogic=None):
        """Show ``node`` as a bone volume rendering (opacity from 150 HU, :data:`BONE_OPACITY_HU`); returns the
        display node. Uses the Volume Rendering module's logic (or the one given)."""
        logic = volumeRenderingLogic
        if logic is None:
            modules = getattr(slicer, "modules", None)
            module = getattr(modules, "volumerendering", None) if modules is not None else None
            if module is None:
                return None          # no Volume Rendering module (e.g. pip slicer-core without one given)
            logic = module.logic()
        display = logic.CreateDefaultVolumeRenderingNodes(node)
        prop = display.GetVolumePropertyNode().GetVolumeProperty()
        opacity = prop.GetScalarOpacity()
        opacity.RemoveAllPoints()
        for hu, value in BONE_OPACITY_HU:
            opacity.AddPoint(hu, value)
        colour = prop.GetRGBTransferFunction()
        colour.RemoveAllPoints()
        for hu, rgb in _BONE_COLOURS:
            colour.AddRGBPoint(hu, *rgb)
        prop.ShadeOn()
        display.SetVisibility(True)
        return display


def radiographVolume(image: np.ndarray, spacing) -> "Any":
    """A radiograph (rows x columns, (row, column) spacing in mm) as a one-slice volume for the core."""
    from bonekit import Volume
    from bonekit.volume import make_affine

    return Volume(np.asarray(image, np.float32)[np.newaxis], make_affine((spacing[1], spacing[0], 1.0)))

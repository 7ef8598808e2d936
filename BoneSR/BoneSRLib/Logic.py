"""BoneSR logic without Qt: micro-CT-like super-resolution of clinical CT (Jin et al. 2021).

The generator (pix2pixHD, trained on paired clinical CT and micro-CT slices) runs in a separate
Python process through the core's command line::

    PythonSlicer -m bonekit sr infer CT.nrrd --model MODEL --out SR.nrrd [--roi ROI.nrrd]
                 --device auto --precision auto --json SUMMARY.json --progress-lines

so that Slicer stays responsive, a crash of torch or CUDA cannot take the scene down, and the
same code runs outside Slicer. :meth:`BoneSRLibLogic.process` writes the CT (and the ROI mask,
resampled onto the CT grid) to a temporary folder, runs the command, forwards its
``PROGRESS <fraction> <message>`` lines to a progress callback, and loads the result into a
scalar volume node with the exact geometry the core gives (spacing = CT spacing / scale, RAS
from the core's LPS). :meth:`BoneSRLibLogic.cancel` stops the child process; nothing is then
written to the scene. The temporary folder is always removed.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from bonekit import BoneKitError, Volume, orientation_code

from BoneKitLib import (DEVICES, FROM_FILE, CoreProcessLogic, CTInputLogic, ProcessingCancelled, ProgressCallback, reportProgress,
                        segmentationToLabelmap, setNodeAttributes, volumeFromNode, volumeToNode)

__all__ = ["BoneSRLibLogic", "BoneSROutputs", "ProcessingCancelled", "DEVICES", "PRECISIONS", "FROM_FILE",
           "MODEL_ATTRIBUTE", "MODEL_FILE_ATTRIBUTE", "DEVICE_ATTRIBUTE", "PRECISION_ATTRIBUTE", "SCALE_ATTRIBUTE",
           "SECONDS_ATTRIBUTE", "CREATED_ATTRIBUTE", "INPUT_ATTRIBUTE", "FALLBACKS_ATTRIBUTE"]

#: Arithmetic of the generator: auto = bf16/fp16 on a GPU, fp32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Attributes of an output volume node: how it was made.
MODEL_ATTRIBUTE = "BoneSR.model"            # the model as asked for (catalogue name or file)
MODEL_FILE_ATTRIBUTE = "BoneSR.modelFile"   # the model file that ran
DEVICE_ATTRIBUTE = "BoneSR.device"          # where the generator finally ran (after any fallback)
PRECISION_ATTRIBUTE = "BoneSR.precision"
SCALE_ATTRIBUTE = "BoneSR.scale"
SECONDS_ATTRIBUTE = "BoneSR.seconds"        # wall time of the core's super_resolve
CREATED_ATTRIBUTE = "BoneSR.created"        # ISO 8601 time (UTC) the node was written
INPUT_ATTRIBUTE = "BoneSR.input"            # node ID of the input CT
FALLBACKS_ATTRIBUTE = "BoneSR.fallbacks"    # JSON list: smaller tiles, CPU after a GPU out-of-memory

@dataclass
class BoneSROutputs:
    """What :meth:`BoneSRLibLogic.process` produces."""

    volume: Any  # vtkMRMLScalarVolumeNode: the micro-CT-like volume in HU (float32)
    summary: dict = field(default_factory=dict)  # the core's run summary: model, device, precision, tile,
    #                                               fallbacks, seconds, shape_kji, spacing_mm


class BoneSRLibLogic(CTInputLogic, CoreProcessLogic):
    """Super-resolution of a CT in a separate process (Qt-free; usable from ``PythonSlicer`` and pip
    slicer-core).

    >>> logic = BoneSRLibLogic()
    >>> outputs = logic.process(ctNode, roiNode=segmentationNode, model="demo")  # doctest: +SKIP
    >>> outputs.volume, outputs.summary["device"]  # doctest: +SKIP

    :meth:`cancel`, called from the progress callback, from a GUI event handled while it runs (the
    module's Cancel button: the widget's callback processes events) or from another thread, stops the
    child process; :meth:`process` then raises :class:`ProcessingCancelled` and writes nothing.
    While the child runs, the progress callback is also called every :attr:`pollInterval` seconds
    with the last fraction and message, so that a GUI can process its events.
    """

    processTitle = "super-resolution"
    modelKind = "sr"
    modelFileName = "BoneSR model file (.pt)"
    logName = "BoneSR"

    # ------------------------------------------------------------------ inputs
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

    def roiMask(self, roiNode, ct: Volume, segmentId: str | None = None, ctNode=None) -> Volume:
        """The ROI as a uint8 mask (1 inside) on the CT grid: only its bounding box is super-resolved.

        Parameters
        ----------
        roiNode : vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode or vtkMRMLScalarVolumeNode
            A segmentation (the segment ``segmentId``, by ID or name; by default the union of all
            segments) or a mask volume (its non-zero voxels). On the CT grid or not: a mask on another
            grid is resampled onto the CT's (nearest neighbour), a segmentation is exported onto it.
        ct : bonekit.Volume
            The CT (:meth:`inputVolume`), for its grid.
        segmentId : str, optional
        ctNode : vtkMRMLScalarVolumeNode, optional
            The CT's node, so that choosing it as the ROI is refused by name.

        Raises
        ------
        BoneKitError
            Not a segmentation or volume, no such segment, or an ROI that holds no voxel of the CT.
        """
        if roiNode is None:
            raise BoneKitError("No ROI given.")
        name = roiNode.GetName()
        if ctNode is not None and roiNode is ctNode:
            raise BoneKitError(f"'{name}' is chosen both as the CT and as the ROI; choose a segmentation or a "
                               "label map of the region to super-resolve, or no ROI.")
        if roiNode.IsA("vtkMRMLSegmentationNode"):
            segmentation = roiNode.GetSegmentation()
            if segmentation.GetNumberOfSegments() == 0:
                raise BoneKitError(f"The segmentation '{name}' is empty: it has no segments. Draw the region "
                                   "to super-resolve in the Segment Editor, or choose no ROI.")
            ids = None
            if segmentId:
                found = segmentId if segmentation.GetSegment(segmentId) is not None else \
                    segmentation.GetSegmentIdBySegmentName(segmentId)
                if not found:
                    raise BoneKitError(f"The segmentation '{name}' has no segment '{segmentId}'.")
                ids = [found]
            labels, _ = segmentationToLabelmap(roiNode, ct, ids)
            mask = np.asarray(labels.array) != 0
            what = f"The segment '{segmentId}' of '{name}'" if segmentId else f"The segmentation '{name}'"
        elif isinstance(roiNode, slicer.vtkMRMLScalarVolumeNode):
            volume = volumeFromNode(roiNode)
            mask = np.asarray(self._onGrid(volume, ct, name).array) != 0
            what = f"The ROI '{name}'"
        else:
            raise BoneKitError(f"'{name}' is a {roiNode.GetClassName()}; the ROI must be a segmentation or a "
                               "label map (mask volume).")
        if not mask.any():
            raise BoneKitError(f"{what} holds no voxel of the CT: draw it on this CT, or choose no ROI.")
        return ct.with_array(mask.astype(np.uint8), modality="SEG", units="label",
                             metadata={"source": f"ROI '{name}' on the CT grid"})

    @staticmethod
    def _onGrid(volume: Volume, ct: Volume, name: str) -> Volume:
        """``volume`` on the CT grid: as it is when it lies there, else resampled by nearest neighbour."""
        if ct.same_grid(volume):
            return volume
        logging.info("BoneSR: the ROI '%s' is not on the CT grid; resampled onto it (nearest neighbour).", name)
        return volume.labels_on(ct)

    # ------------------------------------------------------------------ models
    @staticmethod
    def modelLabel(entry: dict) -> str:
        """One line describing a catalogue entry: name, scale and voxel sizes."""
        text = str(entry.get("name", "?"))
        try:
            scale, spacing = int(entry["scale"]), float(entry["lr_spacing_mm"])
            text += f" (x{scale}: {spacing:.3g} mm -> {spacing / scale:.3g} mm)"
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
        return text

    def command(self, inputPath, outputPath, model, roiPath=None, device: str = "auto", precision: str = "auto",
                tile: int | None = None, allowSpacing: bool = False, summaryPath=None) -> list[str]:
        """The command line of one run: ``<python> -m bonekit sr infer ... --progress-lines``.

        Parameters
        ----------
        inputPath, outputPath : str or Path
            The CT to read and the volume to write (NRRD, NIfTI or MetaImage).
        model : str or Path
            A catalogue name ("demo" = the first) or a model file (made absolute).
        roiPath : str or Path, optional
            A mask on the CT grid: only its bounding box is processed.
        device : "auto", "cuda", "cuda:N" or "cpu"
        precision : "auto", "fp32", "bf16" or "fp16"
        tile : int, optional
            Tile edge in output pixels (None or 0: whole slices).
        allowSpacing : bool
            Run even if the CT's voxel size is far from the model's.
        summaryPath : str or Path, optional
            Where the core writes its run summary (JSON).
        """
        device = self.deviceArgument(device)
        precision = str(precision or "auto").strip().lower()
        if precision not in PRECISIONS:
            raise BoneKitError(f"Unknown precision '{precision}': choose {', '.join(PRECISIONS)}.")
        arguments = [self.pythonExecutable(), "-m", "bonekit", "sr", "infer", str(inputPath),
                     "--model", self.modelArgument(model), "--out", str(outputPath)]
        if roiPath is not None:
            arguments += ["--roi", str(roiPath)]
        arguments += ["--device", device, "--precision", precision]
        if tile:
            if int(tile) != tile or tile < 0:
                raise BoneKitError(f"The tile size must be a whole number of pixels, got {tile}.")
            arguments += ["--tile", str(int(tile))]
        if allowSpacing:
            arguments.append("--allow-spacing")
        if summaryPath is not None:
            arguments += ["--json", str(summaryPath)]
        arguments.append("--progress-lines")
        return arguments

    # ------------------------------------------------------------------ processing
    def process(self, inputVolumeNode, roiNode=None, segmentId: str | None = None, model="demo",
                device: str = "auto", precision: str = "auto", tile: int | None = None, allowSpacing: bool = False,
                outputVolumeNode=None, showResult: bool = True,
                progressCallback: ProgressCallback | None = None) -> BoneSROutputs:
        """Micro-CT-like super-resolution of a CT, in a separate process (:meth:`command`).

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            Clinical CT in HU, axial slices. Not modified.
        roiNode : vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode, optional
            Only the bounding box of this region (plus 1 mm) is super-resolved (see :meth:`roiMask`).
        segmentId : str, optional
            With a segmentation: this segment (ID or name) only; by default all of them.
        model : str or Path
            A catalogue name (:meth:`models`; "demo" = the first) or a BoneSR model file (.pt).
        device, precision, tile, allowSpacing
            As :meth:`command` takes them.
        outputVolumeNode : vtkMRMLScalarVolumeNode, optional
            Overwritten (its name kept); by default a new node named "<CT> SR x<scale>".
        showResult : bool
            Put the output in the background of every slice view.
        progressCallback : callable(fraction, message), optional
            Fractions rise from 0 to 1; between the child's reports it is called again every
            :attr:`pollInterval` s with the last values. :meth:`cancel` (from it, from a GUI event it
            processes, or from another thread) stops the run.

        Returns
        -------
        BoneSROutputs
            ``volume``: float32 HU on the grid ``scale`` times finer on each axis (the core's
            :func:`bonekit.sr.infer.upsample` grid), with attributes ``BoneSR.model``, ``.modelFile``,
            ``.device``, ``.precision``, ``.scale``, ``.seconds``, ``.created``, ``.input``,
            ``.fallbacks``; ``summary``: the core's run summary.

        Raises
        ------
        BoneKitError
            Bad CT, ROI, model, device ..., with the core's message when the child refused the input.
        ProcessingCancelled
            After :meth:`cancel`.
        In both cases nothing was written to the scene, and the temporary files are gone.
        """
        from bonekit.io import read_volume, write_volume

        report, state = self.startRun(progressCallback)
        if outputVolumeNode is not None:
            if outputVolumeNode is inputVolumeNode:
                raise BoneKitError(f"'{inputVolumeNode.GetName()}' is chosen both as the input and as the output; "
                                   "the input is never overwritten. Choose another output volume or a new one.")
            if (not isinstance(outputVolumeNode, slicer.vtkMRMLScalarVolumeNode)
                    or outputVolumeNode.IsA("vtkMRMLLabelMapVolumeNode")
                    or outputVolumeNode.IsA("vtkMRMLVectorVolumeNode")):
                raise BoneKitError(f"'{outputVolumeNode.GetName()}' is a {outputVolumeNode.GetClassName()}; the "
                                   "output must be a scalar volume.")
        ct = self.inputVolume(inputVolumeNode)
        roi = None if roiNode is None else self.roiMask(roiNode, ct, segmentId, ctNode=inputVolumeNode)
        # the command is checked (device, precision, model chosen) before anything is written
        self.command("ct.nrrd", "sr.nrrd", model, None, device, precision, tile, allowSpacing)

        folder = Path(tempfile.mkdtemp(prefix="BoneSR-", dir=self.temporaryDirectory))
        try:
            report(0.01, "Writing the CT for the super-resolution process")
            inputPath = write_volume(ct, folder / "ct.nrrd", compress=False)
            roiPath = None if roi is None else write_volume(roi, folder / "roi.nrrd", compress=False)
            outputPath, summaryPath = folder / "sr.nrrd", folder / "summary.json"
            arguments = self.command(inputPath, outputPath, model, roiPath, device, precision, tile, allowSpacing,
                                     summaryPath)
            self.runCore(arguments, folder, report, state)
            report(self.childProgressRange[1], "Reading the super-resolved volume")
            volume = read_volume(outputPath)
            summary = json.loads(summaryPath.read_text()) if summaryPath.is_file() else {}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                logging.warning("BoneSR: could not remove the temporary folder %s", folder)

        # The run succeeded: only now is the scene changed.
        scale = max(1, int(round(float(ct.spacing[0]) / float(volume.spacing[0]))))
        modelFile = str(summary.get("model", model))
        volume.modality, volume.units = "CT", "HU"
        volume.metadata = {"source": f"BoneSR x{scale} of '{inputVolumeNode.GetName()}'", "model": modelFile,
                           **{k: summary[k] for k in ("device", "precision", "tile", "fallbacks", "seconds")
                              if k in summary}}
        node = volumeToNode(volume, outputVolumeNode if outputVolumeNode is not None else inputVolumeNode.GetScene(),
                            name=None if outputVolumeNode is not None else f"{inputVolumeNode.GetName()} SR x{scale}")
        attributes = {
            MODEL_ATTRIBUTE: str(model), MODEL_FILE_ATTRIBUTE: modelFile,
            DEVICE_ATTRIBUTE: summary.get("device"), PRECISION_ATTRIBUTE: summary.get("precision"),
            SCALE_ATTRIBUTE: scale, SECONDS_ATTRIBUTE: summary.get("seconds"),
            CREATED_ATTRIBUTE: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            INPUT_ATTRIBUTE: inputVolumeNode.GetID(), FALLBACKS_ATTRIBUTE: json.dumps(summary.get("fallbacks", [])),
        }
        setNodeAttributes(node, attributes)
        if showResult:
            self.showVolume(node)
        reportProgress(progressCallback, 1.0, "Done")
        return BoneSROutputs(node, summary)

    # ------------------------------------------------------------------ outputs
    @staticmethod
    def showVolume(node) -> None:
        """Put a volume in the background of every slice view (the scene's slice composite nodes)."""
        scene = node.GetScene()
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            compositeNode = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            compositeNode.SetBackgroundVolumeID(node.GetID())

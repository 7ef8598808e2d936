"""FocalDefect logic without Qt: focal bone-loss maps of the vertebral body (Li et al. 2022).

For each region of interest (a segment of a segmentation, e.g. the trabecular "L1 ROI" segments
that BoneMorphometry writes to "Vertebra regions", or a label of a label map) the core,
:func:`bonekit.focal.focal_maps`, resamples the CT to 0.3 mm, finds bone voids along star lines
and returns three voxel maps and their ROI means:

* IncptWidth (mm): width of the void a voxel lies in, averaged over the star's orientations;
* FocalBMDLoss (fraction): (1200 - BMD) / 1200 averaged over the void;
* FocalBMCLoss (mm): FocalBMDLoss x IncptWidth.

This logic turns the MRML inputs into core calls and the results back into nodes: three map
volumes per region (on the core's 0.3 mm grid, geometry exactly the core's), shown as colour
overlays with fixed ranges and colour legends, and one table with a row per region. All regions
are computed before anything is written, so an error or a cancel leaves the scene as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.results import Result, quantity

from BoneKitLib import (CTInputLogic, ProcessingCancelled, ProgressCallback, addResultColumns, loadCalibration,
                        reportProgress, resultsToTable, segmentationToLabelmap, showColorLegend, showOverlay,
                        volumeFromNode, volumeToNode)

__all__ = ["FocalDefectLibLogic", "FocalDefectOutputs", "FocalRegion", "MapDisplay", "MAP_DISPLAY",
           "ProcessingCancelled", "MAP_ATTRIBUTE", "REGION_ATTRIBUTE", "INPUT_ATTRIBUTE", "REGION_TAG"]

#: Node attributes of a map volume: which map, of which region, of which input CT (node ID).
#: A new run over the same CT and region overwrites the nodes that carry them.
MAP_ATTRIBUTE = "FocalDefect.map"
REGION_ATTRIBUTE = "FocalDefect.region"
INPUT_ATTRIBUTE = "FocalDefect.input"
#: Segment tag naming the region kind ("body", "ROI", "VOI") of BoneMorphometry's "Vertebra regions"
#: (``BoneMorphometryLib.Logic.REGION_TAG``); segments tagged "ROI" are the default input here.
REGION_TAG = "BoneKit.Region"
ROI_REGION = "ROI"



class MapDisplay(NamedTuple):
    """How a focal map is shown: colour map (:data:`BoneKitLib.COLORMAPS`), fixed value range, legend."""

    valueRange: tuple[float, float]
    colormap: str
    title: str
    labelFormat: str


#: Display of each map. Fixed ranges, so that colours mean the same on every vertebra and scan:
#: voids of trabecular bone are up to a few mm wide (a 3 mm IncptWidth is a large void) and the
#: BMD loss is a fraction. Widths and BMC loss (mm) get perceptually uniform maps, the loss
#: fraction the diverging ColdToHot map.
MAP_DISPLAY = {
    "IncptWidth": MapDisplay((0.0, 3.0), "Viridis", "IncptWidth (mm)", "%.1f"),
    "FocalBMDLoss": MapDisplay((0.0, 1.0), "ColdToHot", "Focal BMD loss", "%.2f"),
    "FocalBMCLoss": MapDisplay((0.0, 3.0), "Inferno", "Focal BMC loss (mm)", "%.1f"),
}


@dataclass
class FocalRegion(Result):
    """First column of the focal-loss table: the region (segment or label) a row was measured in."""

    segment: str = quantity(None, "segment (or label) whose focal bone loss the row gives", name="Segment")


@dataclass
class FocalDefectOutputs:
    """What :meth:`FocalDefectLibLogic.process` produces."""

    table: Any  # vtkMRMLTableNode: one row per region, "Segment" then the FocalResult columns (with units)
    maps: dict = field(default_factory=dict)     # region name -> {map name: vtkMRMLScalarVolumeNode}
    results: dict = field(default_factory=dict)  # region name -> bonekit.focal.FocalResult


def _segmentTag(segment, key: str) -> str | None:
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


class FocalDefectLibLogic(CTInputLogic):
    """Focal bone-loss maps of a CT in regions of interest (Qt-free; usable from ``PythonSlicer``
    and pip slicer-core).

    >>> logic = FocalDefectLibLogic()
    >>> outputs = logic.process(ctNode, slicer.util.getNode("Vertebra regions"))  # doctest: +SKIP
    >>> outputs.table, outputs.maps["L1 ROI"]["FocalBMCLoss"]  # doctest: +SKIP

    :meth:`cancel`, called from the progress callback or from a GUI event handled while it runs (the
    module's Cancel button: the widget's callback processes events), stops the run at its next
    progress report, with :class:`ProcessingCancelled` and nothing written.
    """

    #: Coarsest voxel size (mm) for which star-line profiles can resolve trabecular voids.
    maximumSpacing = 3.0
    #: Focal BMD loss is a fraction, (1200 - BMD) / 1200 averaged over the void.
    lossMapRange = MAP_DISPLAY["FocalBMDLoss"].valueRange
    #: Map values below this are drawn transparent: 0 is "in no void" (in every map), and any void
    #: voxel has a value far above it.
    lossMapThreshold = 1e-6
    #: Foreground opacity of the maps over the CT.
    mapOpacity = 0.6
    #: The map put in the slice views after a run (the first region's); the others are one click away.
    shownMap = "FocalBMCLoss"
    tableName = "Focal bone loss"
    #: Set by :meth:`cancel`, cleared when :meth:`process` starts (a class default, so that no
    #: ``__init__`` is needed alongside ``ScriptedLoadableModuleLogic``'s).
    _cancelRequested = False

    # ------------------------------------------------------------------ inputs
    def inputVolume(self, node) -> Volume:
        """The input CT in HU, refused when its voxels are too coarse for focal analysis."""
        ct = super().inputVolume(node)
        if max(ct.spacing) > self.maximumSpacing:
            raise BoneKitError(
                f"Focal-defect maps need voxels of at most {self.maximumSpacing:g} mm, but "
                f"'{node.GetName()}' has {', '.join(f'{s:.2f}' for s in ct.spacing)} mm. Use the thin-slice "
                "reconstruction of the scan.")
        return ct

    def regions(self, roiNode, ct: Volume, segments: Sequence | None = None,
                ctNode=None) -> list[tuple[str, Callable[[], np.ndarray]]]:
        """The regions to map: ``(name, mask)`` pairs, ``mask()`` giving a boolean array on the CT grid.

        Parameters
        ----------
        roiNode : vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode
            A segmentation: one region per segment. By default every segment, except that when some
            segments are tagged as BoneMorphometry's trabecular ROIs (``BoneKit.Region`` = "ROI", the
            "L1 ROI" ... of "Vertebra regions"), only those. A label map: one region per non-zero
            label, named "Label <value>"; resampled (nearest neighbour) onto the CT grid when it lies
            on another one.
        ct : bonekit.Volume
            The CT, for its grid.
        segments : list of str (or int for a label map), optional
            Segment IDs or names, or label values: only these regions, in this order.
        ctNode : vtkMRMLScalarVolumeNode, optional
            The CT's node, so that choosing it as the ROI is refused by name.

        The masks are made one at a time when called (each is a full CT grid); an empty one is refused
        then, naming the region.
        """
        if roiNode is None:
            raise BoneKitError("No ROI selected. Choose the segmentation that holds the trabecular ROI of each "
                               "vertebra (BoneMorphometry's 'Vertebra regions') or a label map of the ROIs.")
        if ctNode is not None and roiNode is ctNode:
            raise BoneKitError(f"'{roiNode.GetName()}' is chosen both as the CT and as the ROI; choose the "
                               "segmentation or label map of the ROIs.")
        if roiNode.IsA("vtkMRMLSegmentationNode"):
            return self._segmentRegions(roiNode, ct, segments)
        if roiNode.IsA("vtkMRMLLabelMapVolumeNode"):
            return self._labelRegions(roiNode, ct, segments)
        hint = (" A grey-level volume is not one: convert it to a label map (Volumes module, Convert to label map)."
                if roiNode.IsA("vtkMRMLScalarVolumeNode") else "")
        raise BoneKitError(f"'{roiNode.GetName()}' is a {roiNode.GetClassName()}; the ROI must be a segmentation "
                           f"or a label map.{hint}")

    def _segmentRegions(self, segmentationNode, ct: Volume, segments):
        segmentation = segmentationNode.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' is empty: it has no segments. "
                               "Run BoneMorphometry first, or draw the ROI in the Segment Editor.")
        if segments is None:
            ids = list(segmentation.GetSegmentIDs())
            rois = [i for i in ids if _segmentTag(segmentation.GetSegment(i), REGION_TAG) == ROI_REGION]
            ids = rois or ids
        else:
            if isinstance(segments, str):
                segments = [segments]
            ids = []
            for segment in segments:
                segmentId = str(segment)
                if segmentation.GetSegment(segmentId) is None:
                    segmentId = segmentation.GetSegmentIdBySegmentName(str(segment))
                if not segmentId:
                    raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' has no segment '{segment}'.")
                ids.append(segmentId)
            if not ids:
                raise BoneKitError("No segment chosen for the focal bone-loss maps.")
        names = [segmentation.GetSegment(i).GetName() for i in ids]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' has several segments named "
                               f"{', '.join(repr(n) for n in duplicates)}; rename them so each row and map is "
                               "named after one region.")

        def mask(segmentId: str, name: str) -> np.ndarray:
            labels, _ = segmentationToLabelmap(segmentationNode, ct, [segmentId])
            region = labels.array != 0
            if not region.any():
                raise BoneKitError(f"The segment '{name}' of '{segmentationNode.GetName()}' is empty on the CT "
                                   "grid: it holds no voxel of the CT. Draw it on this CT or pick another segment.")
            return region

        return [(name, lambda i=i, n=name: mask(i, n)) for i, name in zip(ids, names)]

    def _labelRegions(self, labelmapNode, ct: Volume, segments):
        labels = self.labelsOnGrid(volumeFromNode(labelmapNode), ct, labelmapNode.GetName())
        present = [int(v) for v in np.unique(labels.array) if v != 0]
        if not present:
            raise BoneKitError(f"The label map '{labelmapNode.GetName()}' has no label on the CT grid (all 0). "
                               "Choose the label map of the ROIs of this CT.")
        if segments is None:
            values = present
        else:
            values = []
            for segment in ([segments] if isinstance(segments, (str, int)) else segments):
                text = str(segment).strip()
                text = text[len("Label "):] if text.startswith("Label ") else text
                try:
                    value = int(text)
                except ValueError:
                    value = None
                if value not in present:
                    raise BoneKitError(f"The label map '{labelmapNode.GetName()}' has no label {segment!r} on the "
                                       f"CT grid; it has {', '.join(map(str, present))}.")
                values.append(value)
        return [(f"Label {v}", lambda v=v: labels.array == v) for v in values]

    @staticmethod
    def labelsOnGrid(labels: Volume, ct: Volume, name: str = "label map") -> Volume:
        """``labels`` on the CT grid: as it is when it lies there, else resampled by nearest neighbour."""
        if labels.array.dtype.kind not in "iu":
            raise BoneKitError(f"The label map '{name}' holds {labels.array.dtype} values, not integer labels.")
        if ct.same_grid(labels):
            return labels
        logging.info("FocalDefect: '%s' is not on the CT grid; resampled onto it (nearest neighbour).", name)
        out = labels.labels_on(ct)
        out.modality, out.units, out.metadata = "SEG", "label", {"source": f"'{name}' on the CT grid"}
        return out

    # ------------------------------------------------------------------ progress and cancel
    def cancel(self) -> None:
        """Ask a running :meth:`process` to stop at its next progress report (it raises
        :class:`ProcessingCancelled` and writes nothing)."""
        self._cancelRequested = True

    @property
    def cancelRequested(self) -> bool:
        return self._cancelRequested

    def _checkCancel(self) -> None:
        if self._cancelRequested:
            raise ProcessingCancelled("Focal bone-loss mapping was cancelled; nothing was written.")

    def _progress(self, callback: ProgressCallback | None, start: float, stop: float,
                  prefix: str = "") -> ProgressCallback:
        """A callback for the core: maps 0..1 onto ``start``..``stop`` of ``callback``, and raises
        :class:`ProcessingCancelled` once :meth:`cancel` was called (before or during the report)."""
        def report(fraction: float, message: str) -> None:
            self._checkCancel()
            reportProgress(callback, start + (stop - start) * float(fraction),
                           f"{prefix}: {message}" if prefix else message)
            self._checkCancel()
        return report

    # ------------------------------------------------------------------ processing
    def process(self, inputVolumeNode, roiNode, segments: Sequence | None = None, calibration=None,
                params=None, units: str = "auto", outputTableNode=None, showMaps: bool = True,
                progressCallback: ProgressCallback | None = None) -> FocalDefectOutputs:
        """Focal bone-loss maps and their ROI means, one run of :func:`bonekit.focal.focal_maps` per region.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU, voxels of at most :attr:`maximumSpacing` mm. Not modified.
        roiNode : vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode
            The regions (see :meth:`regions`): e.g. BoneMorphometry's "Vertebra regions", whose "L1 ROI" ...
            segments are taken by default. Not modified.
        segments : list of str (or label values), optional
            Only these segments (IDs or names) or labels.
        calibration : bonekit.calibration.Calibration or str or Path, optional
            HU -> BMD calibration or its file: the profiles and the loss are then in mg HA/cm3 (else HU,
            the reference 1200 read as HU).
        params : bonekit.focal.FocalParameters, optional
            The method's parameters; Li et al. 2022's by default.
        units : "auto" | "bmd" | "hu"
            As :func:`bonekit.focal.focal_maps` takes it.
        outputTableNode : vtkMRMLTableNode, optional
            Overwritten; by default a new "Focal bone loss" table.
        showMaps : bool
            Show the maps over the CT (see :meth:`showLossMap`); the first region's :attr:`shownMap`
            ends up in the slice views.
        progressCallback : callable(fraction, message), optional
            Called throughout; :meth:`cancel` (from it, or from a GUI event it processes) stops the run.

        Returns
        -------
        FocalDefectOutputs
            ``table`` (one row per region: "Segment", then the ``FocalResult`` columns with their units),
            ``maps`` ({region: {"IncptWidth" | "FocalBMDLoss" | "FocalBMCLoss": volume node}}: float32 on the
            core's 0.3 mm grid around the region, 0 outside it, named "<CT> <region> <map>"; a run over the
            same CT and region overwrites them), ``results`` ({region: FocalResult}).

        Raises
        ------
        BoneKitError
            No or bad CT, ROI, segment, calibration or parameters, or a region the core cannot map, named.
        ProcessingCancelled
            After :meth:`cancel`.
        In both cases nothing was written: the regions are all computed first.
        """
        from bonekit.focal import MAP_NAMES, FocalParameters, focal_maps

        self._cancelRequested = False
        report = self._progress(progressCallback, 0.0, 1.0)
        report(0.0, "Checking the inputs")
        params = FocalParameters() if params is None else params
        if not isinstance(params, FocalParameters):
            raise BoneKitError(f"The focal parameters must be a bonekit.focal.FocalParameters, not "
                               f"{type(params).__name__}.")
        params.check()
        if outputTableNode is not None and not outputTableNode.IsA("vtkMRMLTableNode"):
            raise BoneKitError(f"'{outputTableNode.GetName()}' is a {outputTableNode.GetClassName()}, not a table.")
        ct = self.inputVolume(inputVolumeNode)
        calibration = loadCalibration(calibration)
        regions = self.regions(roiNode, ct, segments, ctNode=inputVolumeNode)

        computed = []
        start, stop = 0.02, 0.95
        for index, (name, mask) in enumerate(regions):
            a = start + (stop - start) * index / len(regions)
            b = start + (stop - start) * (index + 1) / len(regions)
            report(a, f"Focal bone loss: {name}")
            region = mask()
            try:
                result, maps = focal_maps(ct, ct.with_array(region.astype(np.uint8), modality="SEG", units="label"),
                                          calibration, units, params, progress=self._progress(progressCallback, a, b,
                                                                                            name))
            except BoneKitError as error:
                raise BoneKitError(f"Focal bone loss of '{name}': {error}") from None
            computed.append((name, result, {m: maps[m] for m in MAP_NAMES}))
        report(stop, "Writing the maps and the table")

        # Everything is computed: only now is the scene changed.
        scene = inputVolumeNode.GetScene()
        table = resultsToTable([FocalRegion(name) for name, _, _ in computed], outputTableNode or scene,
                               name=None if outputTableNode else self.tableName)
        addResultColumns([result for _, result, _ in computed], table)
        nodes = {name: {m: self.writeMap(volume, inputVolumeNode, name, m) for m, volume in maps.items()}
                 for name, _, maps in computed}
        if showMaps:
            for name in reversed(list(nodes)):  # the first region's maps last, so that they end up shown
                for mapName in sorted(nodes[name], key=lambda m: m == self.shownMap):
                    self.showLossMap(nodes[name][mapName], inputVolumeNode, mapName=mapName)
        reportProgress(progressCallback, 1.0, "Done")
        return FocalDefectOutputs(table, nodes, {name: result for name, result, _ in computed})

    # ------------------------------------------------------------------ outputs
    def writeMap(self, volume: Volume, inputVolumeNode, region: str, mapName: str):
        """A map into the volume node of the same map, region and CT from an earlier run, or a new one
        named "<CT> <region> <map>". Its geometry is the core Volume's, exactly."""
        scene = inputVolumeNode.GetScene()
        existing = None
        for node in scene.GetNodesByClass("vtkMRMLScalarVolumeNode"):
            if (node.GetAttribute(MAP_ATTRIBUTE) == mapName and node.GetAttribute(REGION_ATTRIBUTE) == region
                    and node.GetAttribute(INPUT_ATTRIBUTE) == inputVolumeNode.GetID()
                    and not node.IsA("vtkMRMLLabelMapVolumeNode")):
                existing = node
                break
        node = volumeToNode(volume, existing or scene, name=f"{inputVolumeNode.GetName()} {region} {mapName}")
        node.SetAttribute(MAP_ATTRIBUTE, mapName)
        node.SetAttribute(REGION_ATTRIBUTE, region)
        node.SetAttribute(INPUT_ATTRIBUTE, inputVolumeNode.GetID())
        return node

    def showLossMap(self, mapNode, ctNode=None, opacity: float | None = None, mapName: str | None = None,
                    legend: bool = True):
        """Overlay a focal map on the CT in every slice view, with a colour legend.

        The map's colours and fixed range come from :data:`MAP_DISPLAY` (IncptWidth 0-3 mm Viridis,
        FocalBMDLoss 0-1 ColdToHot, FocalBMCLoss 0-3 mm Inferno); ``mapName`` defaults to the map the
        node holds (its ``FocalDefect.map`` attribute), else FocalBMDLoss. Voxels in no void (0) are
        transparent. Returns the map's display node.
        """
        mapName = mapName or mapNode.GetAttribute(MAP_ATTRIBUTE) or "FocalBMDLoss"
        if mapName not in MAP_DISPLAY:
            raise BoneKitError(f"Unknown focal map '{mapName}'; the maps are {', '.join(MAP_DISPLAY)}.")
        display = MAP_DISPLAY[mapName]
        displayNode = showOverlay(mapNode, display.valueRange, threshold=self.lossMapThreshold,
                                  colormap=display.colormap,
                                  opacity=self.mapOpacity if opacity is None else opacity, backgroundNode=ctNode)
        if legend:
            showColorLegend(mapNode, display.title, display.labelFormat)
        return displayNode

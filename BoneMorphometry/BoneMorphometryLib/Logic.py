"""BoneMorphometry logic without Qt: MRML nodes in, BoneKit core calls, MRML nodes out.

The module works vertebra by vertebra (Li et al. 2022; Jin et al. 2021; Löffler et al. 2020):

1. :meth:`~BoneMorphometryLibLogic.segment`: one point per vertebra (a markups point list whose
   control points are labelled L1, T12 ... or a point file) -> GrowCut in two passes
   (:func:`bonekit.segment.segment_vertebrae` on Slicer's own ``vtkImageGrowCutSegment``)
   -> a segmentation node "Vertebrae" with one segment per vertebra.
2. :meth:`~BoneMorphometryLibLogic.analyse`: that segmentation (or any segmentation whose
   segments are named after vertebrae) -> :func:`bonekit.vertebra.analyse_vertebrae` ->
   a second segmentation node "Vertebra regions" holding "L1 body", "L1 ROI" and "L1 VOI"
   per vertebra, a table "Vertebra measurements" (one row per vertebra, units on the columns),
   and a point list "VOI centres" with one point per vertebra at its cylindrical VOI's centre.
   Moving a VOI point and analysing again moves that VOI (and changes only the VOI segments and
   VOI columns); deleting it gives the automatic centre back.
3. Trabecular morphometry (``trabecularMorphometry=True`` in :meth:`~BoneMorphometryLibLogic.analyse`
   and ``process``): :func:`bonekit.morphometry.morphometry` in each vertebra's VOI, its columns
   (BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV, Conn.D, threshold ...) added to the vertebra table, and a
   Tb.Th map shown over the CT. :meth:`~BoneMorphometryLibLogic.segmentMorphometry` does the same
   in any segments (an ROI, a hand-drawn region). On clinical CT these are *apparent* values (see
   :mod:`BoneMorphometryLib.Trabecular`).

The regions go to their own segmentation node so that the vertebra segmentation stays what the
user made or edited (and a valid input for the next run), while the regions, which are derived,
are simply rewritten each time.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.points import VERSE_NAMES, verse_id

from BoneKitLib import (LABEL_VALUE_TAG, ProgressCallback, addResultColumns, ctVolumeFromNode, labelmapToSegmentation,
                        loadCalibration, reportProgress, resultsToTable, segmentationToLabelmap, segmentLabelValues, showColorLegend,
                        showOverlay, volumeToNode)

from .Trabecular import (MAP_NAME, RegionName, TrabecularMorphometryOutputs, parseMorphometryBlur,
                         parseMorphometryThreshold, regionMorphometry)

__all__ = ["BoneMorphometryLibLogic", "BoneMorphometryOutputs", "TrabecularMorphometryOutputs", "RAS_FROM_LPS",
           "REGIONS", "REGION_TAG", "AUTOMATIC_VOI_ATTRIBUTE"]

#: LPS <-> RAS: negate x and y (the same diagonal both ways).
RAS_FROM_LPS = np.array([-1.0, -1.0, 1.0])
#: Region kinds of :class:`bonekit.vertebra.VertebraMasks`, their segment-name suffix and colour.
REGIONS = {"body": ("body", (0.95, 0.85, 0.55)), "roi": ("ROI", (0.30, 0.70, 0.95)), "voi": ("VOI", (1.0, 0.25, 0.20))}
#: Segment tag naming the region kind ("body", "ROI", "VOI") of a segment in the regions node.
REGION_TAG = "BoneKit.Region"
#: Attribute of the VOI point list: JSON {vertebra name: automatic VOI centre, LPS mm}. A point
#: still at its automatic centre follows the segmentation; a moved point overrides it.
AUTOMATIC_VOI_ATTRIBUTE = "BoneKit.AutomaticVOICentres"
#: Vertebra segment colours, cycling with the VerSe id (neighbours always differ).
PALETTE = ((0.89, 0.47, 0.35), (0.42, 0.68, 0.84), (0.56, 0.80, 0.45), (0.94, 0.76, 0.36), (0.70, 0.52, 0.82),
           (0.45, 0.82, 0.78))
#: Segment names such as "vertebrae L1" or "L1_vertebra" (TotalSegmentator, other tools).
_NAME_PATTERN = re.compile(r"^(?:vertebra(?:e)?[\s_-]*)?([CTL]\d{1,2})(?:[\s_-]*vertebra(?:e)?)?$", re.IGNORECASE)
#: A moved point is farther than this from its automatic centre (mm).
_MOVED_MM = 1e-6


@dataclass
class BoneMorphometryOutputs:
    """What :meth:`BoneMorphometryLibLogic.analyse` and ``process`` produce."""

    vertebrae: Any      # vtkMRMLSegmentationNode: one segment per vertebra (the input of the analysis)
    regions: Any        # vtkMRMLSegmentationNode: "L1 body", "L1 ROI", "L1 VOI" ...
    table: Any          # vtkMRMLTableNode: one VertebraResult row per vertebra
    voiPoints: Any      # vtkMRMLMarkupsFiducialNode "VOI centres": one point per vertebra (RAS)
    rows: list = field(default_factory=list)  # the VertebraResult records in the table
    morphometry: list = field(default_factory=list)  # a MorphometryResult per row (VOI), with trabecularMorphometry
    thicknessMap: Any = None  # vtkMRMLScalarVolumeNode "Tb.Th map" (mm, 0 outside bone), with trabecularMorphometry


def _scaled(callback: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """A progress callback mapping 0..1 onto ``start``..``stop`` of ``callback``."""
    if callback is None:
        return None
    return lambda fraction, message: callback(start + (stop - start) * float(fraction), message)


def _controlPoints(node) -> list[tuple[int, str, np.ndarray]]:
    """(index, label, world RAS) of every placed control point of a markups node."""
    points = []
    for index in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            continue  # still being placed
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(index, ras)
        points.append((index, node.GetNthControlPointLabel(index), np.array(ras, dtype=float)))
    return points


def _pointVerseId(node, index: int, label: str, what: str) -> int:
    try:
        return verse_id(label)
    except BoneKitError:
        raise BoneKitError(
            f"{what} '{node.GetName()}': control point {index + 1} is labelled '{label}', which is not a vertebra. "
            "Rename each control point after its vertebra (T12, L1 ... L5, or VerSe ids such as 20), e.g. by "
            "double-clicking its label in the Markups module.") from None


class BoneMorphometryLibLogic:
    """Vertebra segmentation and per-vertebra analysis of a CT (Qt-free; usable from ``PythonSlicer``
    and pip slicer-core).

    >>> logic = BoneMorphometryLibLogic()
    >>> outputs = logic.process(ctNode, pointsNode=slicer.util.getNode("Vertebra points"))  # doctest: +SKIP
    >>> outputs.table, outputs.regions, outputs.voiPoints  # doctest: +SKIP
    """

    vertebraeName = "Vertebrae"
    regionsName = "Vertebra regions"
    tableName = "Vertebra measurements"
    voiPointsName = "VOI centres"
    morphometryTableName = "Trabecular morphometry"
    thicknessMapName = "Tb.Th map"
    #: Colour map of the Tb.Th overlay (:data:`BoneKitLib.COLORMAPS`), its opacity, and the level
    #: below which voxels are not drawn: every bone voxel has a thickness > 0, the rest is 0.
    thicknessColormap = "Inferno"
    thicknessOpacity = 0.6
    thicknessShownAbove = 1e-3

    # ------------------------------------------------------------------ inputs
    def inputVolume(self, node) -> Volume:
        """The input CT as a :class:`bonekit.Volume` in HU (see :func:`BoneKitLib.ctVolumeFromNode`)."""
        return ctVolumeFromNode(node)

    def vertebraPoints(self, points, ct: Volume) -> dict[int, np.ndarray]:
        """One point per vertebra, ``{VerSe id: LPS mm}``, each inside the CT.

        Parameters
        ----------
        points : vtkMRMLMarkupsNode or str or Path
            A markups point list whose control points are labelled after their vertebra (L1,
            T12, ... or VerSe ids; positions in world RAS, parent transforms applied), or a
            point file: Slicer ``.mrk.json``, CSV ``label,x,y,z`` in LPS mm, or a VerSe centroid
            JSON (voxel coordinates of ``ct``).
        ct : bonekit.Volume
            The CT the points belong to (for VerSe centroids and the inside check).
        """
        if points is None:
            raise BoneKitError("No vertebra points given. Place one point inside each vertebral body and label it "
                               "after its vertebra (L1, L2 ...), or choose a point file.")
        if isinstance(points, (str, Path)):
            from bonekit.points import read_points
            return read_points(points, ct)
        result: dict[int, np.ndarray] = {}
        placed = _controlPoints(points)
        if not placed:
            raise BoneKitError(f"The point list '{points.GetName()}' has no points. Place one point inside each "
                               "vertebral body and label it after its vertebra (L1, L2 ...).")
        for index, label, ras in placed:
            vid = _pointVerseId(points, index, label, "Vertebra points")
            if vid in result:
                raise BoneKitError(f"The point list '{points.GetName()}' has two points labelled {VERSE_NAMES[vid]}; "
                                   "give one point per vertebra.")
            lps = ras * RAS_FROM_LPS
            if not ct.contains_index(ct.physical_to_index(lps)):
                raise BoneKitError(f"The point {label} of '{points.GetName()}' at RAS "
                                   f"{np.round(ras, 1).tolist()} mm lies outside the CT. Place it inside the "
                                   "vertebral body on this CT.")
            result[vid] = lps
        return result

    def vertebraLabels(self, segmentationNode, ct: Volume) -> tuple[Volume, dict[int, str]]:
        """The vertebra segments as a label map of VerSe ids on the CT grid, and each vertebra's segment name.

        A segment's vertebra is its ``BoneKit.LabelValue`` tag when that is a VerSe id (segments made by
        :meth:`segment`), otherwise its name: "L1", "T12", "vertebrae L1" ...
        """
        if segmentationNode is None:
            raise BoneKitError("No vertebra segmentation selected. Segment the vertebrae first (from one point "
                               "per vertebra) or choose a segmentation with one segment per vertebra.")
        segmentation = segmentationNode.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' is empty: it has no segments. "
                               "Segment the vertebrae from points first.")
        values = segmentLabelValues(segmentationNode)
        vertebraOf: dict[str, int] = {}
        segmentOf: dict[int, str] = {}
        for segmentId in values:
            name = segmentation.GetSegment(segmentId).GetName()
            vid = self._segmentVerseId(segmentation.GetSegment(segmentId), name, segmentationNode)
            if vid in segmentOf:
                other = segmentation.GetSegment(segmentOf[vid]).GetName()
                raise BoneKitError(f"The segments '{other}' and '{name}' of '{segmentationNode.GetName()}' are both "
                                   f"vertebra {VERSE_NAMES[vid]}; keep one segment per vertebra.")
            vertebraOf[segmentId] = vid
            segmentOf[vid] = segmentId
        exported, _ = segmentationToLabelmap(segmentationNode, ct)
        lookup = np.zeros(max(values.values()) + 1, np.uint8)
        for segmentId, value in values.items():
            lookup[value] = vertebraOf[segmentId]
        labels = exported.with_array(lookup[exported.array], units="label", modality="SEG")
        counts = np.bincount(labels.array.ravel(), minlength=max(segmentOf) + 1)
        names = {}
        for vid in sorted(segmentOf):
            name = segmentation.GetSegment(segmentOf[vid]).GetName()
            if counts[vid] == 0:
                raise BoneKitError(f"The segment '{name}' of '{segmentationNode.GetName()}' is empty on the CT grid. "
                                   "Segment that vertebra again or remove the segment.")
            names[vid] = name
        return labels, names

    @staticmethod
    def _segmentVerseId(segment, name: str, segmentationNode) -> int:
        import vtk
        tag = vtk.reference("")
        if segment.GetTag(LABEL_VALUE_TAG, tag) and int(str(tag)) in VERSE_NAMES:
            return int(str(tag))
        match = _NAME_PATTERN.match(name.strip())
        for candidate in (name, match.group(1) if match else None):
            if candidate is not None:
                try:
                    return verse_id(candidate)
                except BoneKitError:
                    pass
        raise BoneKitError(f"The segment '{name}' of '{segmentationNode.GetName()}' is not named after a vertebra. "
                           "Name each segment after its vertebra (T12, L1 ... L5) or remove the segments that are "
                           "not vertebrae.")

    @staticmethod
    def calibration(path):
        """The :class:`bonekit.calibration.Calibration` in ``path``, or None for no path (BMD then stays empty)."""
        return loadCalibration(path)

    # ------------------------------------------------------------------ segmentation
    def segment(self, inputVolumeNode, points, outputSegmentationNode=None,
                progressCallback: ProgressCallback | None = None):
        """Segment the vertebrae by GrowCut from one point per vertebra.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU.
        points : vtkMRMLMarkupsFiducialNode or str or Path
            One point inside each vertebral body, labelled after its vertebra (see :meth:`vertebraPoints`).
        outputSegmentationNode : vtkMRMLSegmentationNode, optional
            Emptied and filled; by default a new "Vertebrae" node.
        progressCallback : callable(fraction, message), optional

        Returns
        -------
        vtkMRMLSegmentationNode
            One segment per vertebra, named after it (L1 ...), its VerSe id in the
            ``BoneKit.LabelValue`` tag; reference geometry: the CT.
        """
        from bonekit.segment import segment_vertebrae

        from BoneKitLib.growcut import vtkGrowCut

        reportProgress(progressCallback, 0.0, "Checking the CT and the points")
        ct = self.inputVolume(inputVolumeNode)
        vertebraPoints = self.vertebraPoints(points, ct)
        labels = segment_vertebrae(ct, vertebraPoints, growcut=vtkGrowCut,
                                   progress=_scaled(progressCallback, 0.05, 0.9))
        reportProgress(progressCallback, 0.9, "Creating the vertebra segments")
        present = [vid for vid in sorted(vertebraPoints) if np.any(labels.array == vid)]
        scene = inputVolumeNode.GetScene()
        if outputSegmentationNode is not None:
            outputSegmentationNode.GetSegmentation().RemoveAllSegments()
            outputSegmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolumeNode)
            if outputSegmentationNode.GetDisplayNode() is None:
                outputSegmentationNode.CreateDefaultDisplayNodes()
        node = labelmapToSegmentation(labels, scene, names={v: VERSE_NAMES[v] for v in present},
                                      colors={v: PALETTE[v % len(PALETTE)] for v in present},
                                      name=self.vertebraeName, referenceNode=inputVolumeNode,
                                      segmentationNode=outputSegmentationNode)
        self.showVertebrae(node)
        reportProgress(progressCallback, 1.0, "Segmentation done")
        return node

    def showVertebrae(self, segmentationNode) -> None:
        """Show the vertebrae in slice views and, half transparent, in 3D (closed surfaces)."""
        segmentationNode.CreateClosedSurfaceRepresentation()
        displayNode = segmentationNode.GetDisplayNode()
        if displayNode is not None:
            displayNode.SetOpacity3D(0.4)

    # ------------------------------------------------------------------ analysis
    def voiOverrides(self, voiPointsNode, present: dict[int, str]) -> dict[int, np.ndarray]:
        """VOI centres (LPS) the user moved: points not at the automatic centre recorded in the node."""
        if voiPointsNode is None:
            return {}
        automatic = json.loads(voiPointsNode.GetAttribute(AUTOMATIC_VOI_ATTRIBUTE) or "{}")
        overrides = {}
        for index, label, ras in _controlPoints(voiPointsNode):
            vid = _pointVerseId(voiPointsNode, index, label, "VOI points")
            if vid not in present:
                logging.warning("VOI point %s of '%s' has no vertebra in the segmentation; it is dropped.",
                                label, voiPointsNode.GetName())
                continue
            lps = ras * RAS_FROM_LPS
            previous = automatic.get(VERSE_NAMES[vid])
            if previous is None or np.linalg.norm(lps - np.asarray(previous, float)) > _MOVED_MM:
                overrides[vid] = lps
        return overrides

    def analyse(self, inputVolumeNode, segmentationNode, calibrationPath=None, voiPointsNode=None,
                outputTableNode=None, outputRegionsNode=None, trabecularMorphometry: bool = False,
                morphometryThreshold="default", morphometryBlurMm: float = 0.0, outputThicknessMapNode=None,
                showThicknessMap: bool = True,
                progressCallback: ProgressCallback | None = None) -> BoneMorphometryOutputs:
        """Body, trabecular ROI, cylindrical VOI, HU/BMD, heights and Genant grade of each vertebra,
        and optionally the trabecular morphometry of each VOI.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU.
        segmentationNode : vtkMRMLSegmentationNode
            One segment per vertebra (see :meth:`vertebraLabels`). Not modified.
        calibrationPath : str or Path, optional
            BoneKit HU->BMD calibration file (JSON); without it BMD columns stay empty and HU is reported.
        voiPointsNode : vtkMRMLMarkupsFiducialNode, optional
            The "VOI centres" list of a previous run (or any list labelled L1 ...). A point moved away from
            its automatic centre sets that vertebra's VOI centre; the node is then updated in place.
            By default a new "VOI centres" list is created.
        outputTableNode : vtkMRMLTableNode, optional
            Overwritten; by default a new "Vertebra measurements" table.
        outputRegionsNode : vtkMRMLSegmentationNode, optional
            Emptied and filled with "<vertebra> body", "<vertebra> ROI" and "<vertebra> VOI"
            segments; by default a new "Vertebra regions" node.
        trabecularMorphometry : bool
            Also measure :func:`bonekit.morphometry.morphometry` in each VOI (exactly the "L1 VOI"
            segments): its columns (``MorphometryResult.columns()``: BV/TV, BA/TA, Tb.Th, Tb.Th.SD,
            Tb.Sp, Tb.Sp.SD, Tb.N, BS/BV, Conn.D, DA, SMI, threshold, method, BV, TV, BS, Euler,
            Euler.delta, ITK, BA/TA.slices) are added to the table and a Tb.Th map is written. **On clinical CT
            (voxels of about 0.5 mm, wider than trabeculae) these are apparent values**, not true
            trabecular ones: comparable between scans of one protocol, not with micro-CT.
        morphometryThreshold : "default" | "ij_isodata" | "isodata" | "otsu" | number
            Bone is above this level in HU; the automatic methods (ImageJ's, "default" = ImageJ
            "Default" IsoData) are computed inside each VOI. Text such as "200" is a number.
        morphometryBlurMm : float
            Gaussian sigma (mm) applied before thresholding; 0 for none.
        outputThicknessMapNode : vtkMRMLScalarVolumeNode, optional
            Overwritten with the Tb.Th map; by default a new "Tb.Th map" volume.
        showThicknessMap : bool
            Show the map over the CT (foreground layer, colour legend); see :meth:`showThicknessMap`.
        progressCallback : callable(fraction, message), optional

        Returns
        -------
        BoneMorphometryOutputs
            With ``morphometry`` (one MorphometryResult per row) and ``thicknessMap`` when
            ``trabecularMorphometry`` is on. A VOI that cannot be measured (empty, no bone or
            only bone at the threshold) raises a :class:`bonekit.BoneKitError` naming it, and
            nothing is written.
        """
        from bonekit.vertebra import analyse_vertebrae

        if outputRegionsNode is not None and outputRegionsNode is segmentationNode:
            raise BoneKitError(f"'{segmentationNode.GetName()}' is chosen both as the vertebra segmentation and as "
                               "the output regions; choose another node (or none) for the regions.")
        if trabecularMorphometry:
            morphometryThreshold = parseMorphometryThreshold(morphometryThreshold)
            morphometryBlurMm = parseMorphometryBlur(morphometryBlurMm)
            self._checkThicknessMapNode(outputThicknessMapNode, inputVolumeNode)
        reportProgress(progressCallback, 0.0, "Reading the vertebra segmentation")
        ct = self.inputVolume(inputVolumeNode)
        labels, names = self.vertebraLabels(segmentationNode, ct)
        calibration = self.calibration(calibrationPath)
        overrides = self.voiOverrides(voiPointsNode, names)
        analysed = 0.5 if trabecularMorphometry else 0.8
        rows, masks = analyse_vertebrae(ct, labels, calibration, voi_centres=overrides or None,
                                        progress=_scaled(progressCallback, 0.1, analysed))
        morphometry, thickness = [], None
        if trabecularMorphometry:
            voi = masks.voi.array
            measured, thickness = regionMorphometry(
                ct, ((f"{row.vertebra} VOI", voi == row.label) for row in rows), morphometryThreshold,
                morphometryBlurMm, count=len(rows), progressCallback=_scaled(progressCallback, analysed, 0.85))
            morphometry = [result for _, result in measured]
        reportProgress(progressCallback, 0.85 if trabecularMorphometry else 0.8,
                       "Writing the table, regions and VOI centres")
        scene = inputVolumeNode.GetScene()
        table = resultsToTable(rows, outputTableNode or scene, name=None if outputTableNode else self.tableName)
        thicknessMap = None
        if trabecularMorphometry:
            addResultColumns(morphometry, table)
            thicknessMap = self.writeThicknessMap(thickness, inputVolumeNode, outputThicknessMapNode,
                                                  show=showThicknessMap)
        regions = self.writeRegions(masks, inputVolumeNode, outputRegionsNode)
        voiPoints = self.writeVoiPoints(rows, overrides, scene, voiPointsNode)
        reportProgress(progressCallback, 1.0, "Done")
        return BoneMorphometryOutputs(segmentationNode, regions, table, voiPoints, rows, morphometry, thicknessMap)

    def writeRegions(self, masks, inputVolumeNode, regionsNode=None):
        """The body, ROI and VOI label maps as segments "L1 body", "L1 ROI", "L1 VOI" ... (VOI shown in 3D)."""
        scene = inputVolumeNode.GetScene()
        if regionsNode is None:
            regionsNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.regionsName)
            regionsNode.CreateDefaultDisplayNodes()
        else:
            regionsNode.GetSegmentation().RemoveAllSegments()
            if regionsNode.GetDisplayNode() is None:
                regionsNode.CreateDefaultDisplayNodes()
        regionsNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolumeNode)
        segmentation = regionsNode.GetSegmentation()
        for kind, (suffix, color) in REGIONS.items():
            mask = getattr(masks, kind)
            present = [int(v) for v in np.unique(mask.array) if v]
            if not present:
                continue
            before = set(segmentation.GetSegmentIDs())
            labelmapToSegmentation(mask, scene, names={v: f"{VERSE_NAMES[v]} {suffix}" for v in present},
                                   colors={v: color for v in present}, segmentationNode=regionsNode)
            for segmentId in set(segmentation.GetSegmentIDs()) - before:
                segmentation.GetSegment(segmentId).SetTag(REGION_TAG, suffix)
        self.showRegions(regionsNode)
        return regionsNode

    def showRegions(self, regionsNode) -> None:
        """VOIs filled in slice views and as closed surfaces in 3D; bodies and ROIs as outlines in slice views only."""
        regionsNode.CreateClosedSurfaceRepresentation()
        displayNode = regionsNode.GetDisplayNode()
        segmentation = regionsNode.GetSegmentation()
        import vtk
        for segmentId in segmentation.GetSegmentIDs():
            tag = vtk.reference("")
            segmentation.GetSegment(segmentId).GetTag(REGION_TAG, tag)
            isVoi = str(tag) == "VOI"
            displayNode.SetSegmentVisibility3D(segmentId, isVoi)
            displayNode.SetSegmentVisibility2DFill(segmentId, isVoi)
            displayNode.SetSegmentVisibility2DOutline(segmentId, True)

    def writeVoiPoints(self, rows, overrides: dict[int, np.ndarray], scene, voiPointsNode=None):
        """One control point per vertebra at its VOI centre (RAS), labelled after the vertebra.

        The automatic centres are recorded in the node (:data:`AUTOMATIC_VOI_ATTRIBUTE`); a vertebra
        whose VOI was overridden keeps its previously recorded automatic centre.
        """
        if voiPointsNode is None:
            voiPointsNode = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", self.voiPointsName)
            voiPointsNode.CreateDefaultDisplayNodes()
        previous = json.loads(voiPointsNode.GetAttribute(AUTOMATIC_VOI_ATTRIBUTE) or "{}")
        automatic = {}
        wasModifying = voiPointsNode.StartModify()
        voiPointsNode.RemoveAllControlPoints()
        for row in rows:
            lps = np.array([row.voi_x, row.voi_y, row.voi_z], dtype=float)
            if row.label in overrides:
                if row.vertebra in previous:
                    automatic[row.vertebra] = previous[row.vertebra]
            else:
                automatic[row.vertebra] = lps.tolist()
            voiPointsNode.AddControlPoint(*(lps * RAS_FROM_LPS), row.vertebra)
        voiPointsNode.SetAttribute(AUTOMATIC_VOI_ATTRIBUTE, json.dumps(automatic))
        voiPointsNode.EndModify(wasModifying)
        return voiPointsNode

    # ------------------------------------------------------------------ trabecular morphometry
    def segmentMorphometry(self, inputVolumeNode, segmentationNode, segments=None, threshold="default",
                           blurMm: float = 0.0, outputTableNode=None, outputThicknessMapNode=None,
                           showThicknessMap: bool = True,
                           progressCallback: ProgressCallback | None = None) -> TrabecularMorphometryOutputs:
        """Trabecular morphometry (:func:`bonekit.morphometry.morphometry`) in each of the chosen segments.

        For a region other than the automatic VOIs (which :meth:`analyse` measures with
        ``trabecularMorphometry=True``): a vertebra's "L1 ROI", a VOI drawn in the Segment Editor ...
        **On clinical CT the values are apparent, not true, trabecular values** (voxels of about
        0.5 mm are wider than trabeculae): compare them between scans of one protocol only.

        Parameters
        ----------
        inputVolumeNode : vtkMRMLScalarVolumeNode
            CT in HU.
        segmentationNode : vtkMRMLSegmentationNode
            Holds the regions. Not modified.
        segments : list of str, optional
            Segment IDs or names; by default every segment. Each is measured on its own.
        threshold : "default" | "ij_isodata" | "isodata" | "otsu" | number
            Bone is above this level in HU (an automatic level is computed inside each segment).
        blurMm : float
            Gaussian sigma (mm) applied before thresholding; 0 for none.
        outputTableNode : vtkMRMLTableNode, optional
            Overwritten; by default a new "Trabecular morphometry" table: one row per segment,
            "Segment" then the columns of ``MorphometryResult.columns()`` (names and units).
        outputThicknessMapNode : vtkMRMLScalarVolumeNode, optional
            Overwritten with the Tb.Th map; by default a new "Tb.Th map" volume.
        showThicknessMap : bool
            Show the map over the CT (see :meth:`showThicknessMap`).
        progressCallback : callable(fraction, message), optional

        Returns
        -------
        TrabecularMorphometryOutputs
            ``table``, ``thicknessMap``, ``results`` ({segment name: MorphometryResult}).

        Raises
        ------
        BoneKitError
            No segmentation, an unknown segment, an empty segment, a bad threshold or blur, or a
            segment the core cannot measure; nothing is written then.
        """
        threshold = parseMorphometryThreshold(threshold)
        blurMm = parseMorphometryBlur(blurMm)
        self._checkThicknessMapNode(outputThicknessMapNode, inputVolumeNode)
        reportProgress(progressCallback, 0.0, "Reading the segments")
        ct = self.inputVolume(inputVolumeNode)
        segmentIds = self._segmentIds(segmentationNode, segments)
        segmentation = segmentationNode.GetSegmentation()
        names = [segmentation.GetSegment(segmentId).GetName() for segmentId in segmentIds]

        def regions():
            for segmentId, name in zip(segmentIds, names):
                labels, _ = segmentationToLabelmap(segmentationNode, ct, [segmentId])
                if not labels.array.any():
                    raise BoneKitError(f"The segment '{name}' of '{segmentationNode.GetName()}' is empty on the CT "
                                       "grid: it holds no voxel of the CT. Draw it on this CT or pick another segment.")
                yield f"segment '{name}'", labels.array

        measured, thickness = regionMorphometry(ct, regions(), threshold, blurMm, count=len(segmentIds),
                                                progressCallback=_scaled(progressCallback, 0.05, 0.9))
        reportProgress(progressCallback, 0.9, "Writing the table and the Tb.Th map")
        results = [result for _, result in measured]
        table = resultsToTable([RegionName(name) for name in names], outputTableNode or inputVolumeNode.GetScene(),
                               name=None if outputTableNode else self.morphometryTableName)
        addResultColumns(results, table)
        thicknessMap = self.writeThicknessMap(thickness, inputVolumeNode, outputThicknessMapNode,
                                              show=showThicknessMap)
        reportProgress(progressCallback, 1.0, "Done")
        return TrabecularMorphometryOutputs(table, thicknessMap, dict(zip(names, results)))

    @staticmethod
    def _segmentIds(segmentationNode, segments) -> list[str]:
        """IDs of ``segments`` (IDs or names; all when None), checked."""
        if segmentationNode is None:
            raise BoneKitError("No segmentation selected for the trabecular morphometry. Choose the segmentation "
                               "that holds the region(s) to measure.")
        segmentation = segmentationNode.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' is empty: it has no segments.")
        if segments is None:
            return list(segmentation.GetSegmentIDs())
        if isinstance(segments, str):
            segments = [segments]
        ids = []
        for segment in segments:
            segmentId = segment if segmentation.GetSegment(segment) is not None \
                else segmentation.GetSegmentIdBySegmentName(segment)
            if not segmentId:
                raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' has no segment '{segment}'.")
            ids.append(segmentId)
        if not ids:
            raise BoneKitError("No segment chosen for the trabecular morphometry.")
        return ids

    @staticmethod
    def _checkThicknessMapNode(mapNode, inputVolumeNode) -> None:
        if mapNode is None:
            return
        if mapNode is inputVolumeNode:
            raise BoneKitError(f"'{mapNode.GetName()}' is chosen both as the input CT and as the Tb.Th map; choose "
                               "another volume (or none) for the map.")
        if mapNode.IsA("vtkMRMLLabelMapVolumeNode") or not mapNode.IsA("vtkMRMLScalarVolumeNode"):
            raise BoneKitError(f"'{mapNode.GetName()}' is a {mapNode.GetClassName()}; the Tb.Th map needs a scalar "
                               "volume (or none, for a new one).")

    def writeThicknessMap(self, thickness: Volume, inputVolumeNode, mapNode=None, show: bool = True):
        """The Tb.Th map (mm, 0 outside bone) in a new "Tb.Th map" volume or ``mapNode``, on the CT's grid."""
        self._checkThicknessMapNode(mapNode, inputVolumeNode)
        node = volumeToNode(thickness, mapNode or inputVolumeNode.GetScene(),
                            name=None if mapNode else self.thicknessMapName)
        if show:
            self.showThicknessMap(node, inputVolumeNode, float(np.max(thickness.array)))
        return node

    def showThicknessMap(self, mapNode, inputVolumeNode=None, maximum: float | None = None):
        """Show the Tb.Th map over the CT: foreground layer of every slice view, "BoneKit Inferno" colours
        from 0 to ``maximum`` mm (the map's maximum by default), voxels outside bone (0) transparent,
        and a colour legend "Tb.Th (mm)". Returns the map's display node."""
        if maximum is None:
            from slicer.util import arrayFromVolume
            maximum = float(np.max(arrayFromVolume(mapNode)))
        displayNode = showOverlay(mapNode, (0.0, max(maximum, self.thicknessShownAbove * 2)),
                                  threshold=self.thicknessShownAbove, colormap=self.thicknessColormap,
                                  opacity=self.thicknessOpacity, backgroundNode=inputVolumeNode)
        showColorLegend(mapNode, f"{MAP_NAME} (mm)")
        return displayNode

    # ------------------------------------------------------------------ both
    def process(self, inputVolumeNode, vertebraSegmentationNode=None, pointsNode=None, calibrationPath=None,
                voiPointsNode=None, outputTableNode=None, outputRegionsNode=None, trabecularMorphometry: bool = False,
                morphometryThreshold="default", morphometryBlurMm: float = 0.0, outputThicknessMapNode=None,
                showThicknessMap: bool = True,
                progressCallback: ProgressCallback | None = None) -> BoneMorphometryOutputs:
        """Segment (when needed) and analyse.

        The vertebrae are segmented from ``pointsNode`` when ``vertebraSegmentationNode`` is None or
        has no segments (a new node, or the given one filled); a segmentation that has segments is
        analysed as it is, so that edits made in the Segment Editor are kept and moving a VOI
        point does not segment again. Other parameters (trabecular morphometry of the VOIs
        included): see :meth:`segment` and :meth:`analyse`.
        """
        if voiPointsNode is not None and voiPointsNode is pointsNode:
            raise BoneKitError(f"'{pointsNode.GetName()}' is chosen both as the vertebra points and as the VOI "
                               "centres; choose another point list (or none) for the VOI centres.")
        if trabecularMorphometry:  # checked before segmenting, which takes a while
            morphometryThreshold = parseMorphometryThreshold(morphometryThreshold)
            morphometryBlurMm = parseMorphometryBlur(morphometryBlurMm)
            self._checkThicknessMapNode(outputThicknessMapNode, inputVolumeNode)
        hasSegments = (vertebraSegmentationNode is not None
                       and vertebraSegmentationNode.GetSegmentation().GetNumberOfSegments() > 0)
        if not hasSegments:
            if pointsNode is None:
                raise BoneKitError("No vertebra segmentation and no vertebra points: place one point inside each "
                                   "vertebral body (labelled L1, L2 ...) or choose a vertebra segmentation.")
            vertebraSegmentationNode = self.segment(inputVolumeNode, pointsNode, vertebraSegmentationNode,
                                                    _scaled(progressCallback, 0.0, 0.6))
        elif pointsNode is not None:
            logging.info("BoneMorphometry: '%s' already has segments; it is analysed as it is (the points are not "
                         "used). Empty it to segment again.", vertebraSegmentationNode.GetName())
        start = 0.6 if not hasSegments else 0.0
        return self.analyse(inputVolumeNode, vertebraSegmentationNode, calibrationPath, voiPointsNode,
                            outputTableNode, outputRegionsNode, trabecularMorphometry, morphometryThreshold,
                            morphometryBlurMm, outputThicknessMapNode, showThicknessMap,
                            _scaled(progressCallback, start, 1.0))

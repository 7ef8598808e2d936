"""Label map Volumes <-> segmentation nodes, label values preserved.

A BoneKit label map is a :class:`bonekit.Volume` of integer labels (0 is
background), e.g. VerSe vertebra ids (20 = L1). In Slicer each label becomes one
segment; the label value travels in the segment tag ``BoneKit.LabelValue`` so
that exporting gives back the same numbers, whatever the segment order and
whatever other segments the user adds (those get the next free values).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import numpy as np
import slicer
import vtk
from slicer.util import arrayFromVolume

from bonekit import BoneKitError, Volume
from bonekit.volume import LPS_TO_RAS

from .volumes import ijkToRASMatrix, setIJKToRASMatrix, volumeToNode

__all__ = ["LABEL_VALUE_TAG", "labelmapToSegmentation", "segmentationToLabelmap", "segmentLabelValues",
           "ensureConverterRules"]

LABEL_VALUE_TAG = "BoneKit.LabelValue"

RGB = Sequence[float]


def ensureConverterRules(scene) -> None:
    """Register the segmentation representation converters if nothing has yet.

    Slicer's Segmentations module does this at start-up. Under pip slicer-core
    nothing does, and adding a segment fails with "Unable to construct empty
    representation type 'Binary labelmap'" until a
    ``vtkSlicerSegmentationsModuleLogic`` has been given a scene once (the
    rules then stay registered in the process-wide converter factory).
    """
    if not slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules():
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)


def labelmapToSegmentation(labels: Volume, scene, *, names: Mapping[int, str] | None = None,
                           colors: Mapping[int, RGB] | None = None, name: str = "Segmentation",
                           referenceNode=None, segmentationNode=None):
    """One segment per non-zero label value of an integer label map.

    Parameters
    ----------
    labels : bonekit.Volume
        Integer labels, 0 = background. Never modified.
    scene : vtkMRMLScene
        Scene for a new segmentation node.
    names : {label: name}, optional
        Segment names, e.g. ``{20: "L1"}``; other labels are named "Label <value>".
    colors : {label: (r, g, b)}, optional
        Segment colours in 0..1; other labels keep Slicer's generated colours.
    name : str
        Name of a new segmentation node.
    referenceNode : vtkMRMLVolumeNode, optional
        Volume whose grid becomes the segmentation's reference geometry (the CT
        the labels belong to); by default the label map's own grid.
    segmentationNode : vtkMRMLSegmentationNode, optional
        Add the segments to this node instead of a new one.

    Returns
    -------
    vtkMRMLSegmentationNode
    """
    names = names or {}
    colors = colors or {}
    ensureConverterRules(scene)
    # A node outside the scene: nothing to clean up, and the import only needs its image and geometry.
    labelmapNode = volumeToNode(labels, slicer.vtkMRMLLabelMapVolumeNode(), labelmap=True)
    if segmentationNode is None:
        segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceNode or labelmapNode)
    segmentation = segmentationNode.GetSegmentation()
    existing = set(segmentation.GetSegmentIDs())
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmapNode, segmentationNode, ""):
        raise BoneKitError(f"Slicer could not import the label map into '{segmentationNode.GetName()}'.")
    expected = {int(v) for v in np.unique(labels.array) if v != 0}
    imported = set()
    for segmentId in segmentation.GetSegmentIDs():
        if segmentId in existing:
            continue
        segment = segmentation.GetSegment(segmentId)
        value = int(segment.GetLabelValue())
        imported.add(value)
        segment.SetTag(LABEL_VALUE_TAG, str(value))
        segment.SetName(names.get(value, f"Label {value}"))
        if value in colors:
            segment.SetColor(*(float(c) for c in colors[value]))
    if imported != expected:
        raise BoneKitError(f"Importing labels {sorted(expected)} gave segments for {sorted(imported)}.")
    return segmentationNode


def segmentLabelValues(segmentationNode, segmentIds: Sequence[str] | None = None) -> dict[str, int]:
    """Label value of each segment: its ``BoneKit.LabelValue`` tag, or the next free value."""
    segmentation = segmentationNode.GetSegmentation()
    segmentIds = list(segmentation.GetSegmentIDs() if segmentIds is None else segmentIds)
    values: dict[str, int] = {}
    for segmentId in segmentIds:
        segment = segmentation.GetSegment(segmentId)
        if segment is None:
            raise BoneKitError(f"'{segmentationNode.GetName()}' has no segment '{segmentId}'.")
        tag = vtk.reference("")
        if segment.GetTag(LABEL_VALUE_TAG, tag):
            values[segmentId] = int(str(tag))
    used = set(values.values())
    nextValue = 1
    for segmentId in segmentIds:
        if segmentId not in values:
            while nextValue in used:
                nextValue += 1
            values[segmentId] = nextValue
            used.add(nextValue)
    return values


def segmentationToLabelmap(segmentationNode, reference: Volume | slicer.vtkMRMLScalarVolumeNode,
                           segmentIds: Sequence[str] | None = None) -> tuple[Volume, dict[int, str]]:
    """Export segments to an integer label map on a reference grid.

    Parameters
    ----------
    segmentationNode : vtkMRMLSegmentationNode
    reference : bonekit.Volume or vtkMRMLScalarVolumeNode
        The grid of the result (typically the CT the segments belong to).
    segmentIds : list of str, optional
        Segments to export, by default all. Where segments overlap the later one wins.

    Returns
    -------
    labels : bonekit.Volume
        Label values from :func:`segmentLabelValues`, on ``reference``'s grid
        (same affine), in the smallest unsigned integer type that holds them.
    names : {label: segment name}
    """
    segmentation = segmentationNode.GetSegmentation()
    values = segmentLabelValues(segmentationNode, segmentIds)
    if not values:
        raise BoneKitError(f"The segmentation '{segmentationNode.GetName()}' has no segments to export.")
    if isinstance(reference, Volume):
        referenceNode = _geometryNode(reference)
        affine, shape = reference.affine, reference.shape
    else:
        referenceNode, affine = reference, LPS_TO_RAS @ ijkToRASMatrix(reference)
        shape = tuple(reversed(reference.GetImageData().GetDimensions()))
    scene = segmentationNode.GetScene()
    ids = vtk.vtkStringArray()
    for segmentId in values:
        ids.InsertNextValue(segmentId)
    with _temporaryNodes(scene):
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmapNode, referenceNode, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise BoneKitError(f"Slicer could not export '{segmentationNode.GetName()}' to a label map.")
        ordinal = arrayFromVolume(labelmapNode)  # 1..N in the order of ``ids``
        if ordinal.shape != shape:
            raise BoneKitError(f"The exported label map has shape {ordinal.shape}, the reference {shape}.")
        lookup = np.array([0, *values.values()], dtype=np.min_scalar_type(max(values.values())))
        labels = lookup[ordinal]
    names = {value: segmentation.GetSegment(segmentId).GetName() for segmentId, value in values.items()}
    return Volume(labels, affine, modality="SEG", units="label",
                  metadata={"source": f"Slicer segmentation '{segmentationNode.GetName()}'"}), names


def _geometryNode(volume: Volume):
    """A volume node (outside any scene) with the grid of ``volume`` and no voxel values."""
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.size)
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetAndObserveImageData(image)
    setIJKToRASMatrix(node, volume.ijk_to_ras)
    return node


@contextlib.contextmanager
def _temporaryNodes(scene) -> Iterator[None]:
    """Remove the nodes added to ``scene`` inside the block (singletons such as the subject hierarchy stay)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and node.GetSingletonTag() is None:
                scene.RemoveNode(node)

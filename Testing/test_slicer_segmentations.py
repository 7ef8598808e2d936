"""Label map Volume <-> segmentation node, label values and names preserved (BoneKitLib.segmentations)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)

import vtk  # noqa: E402
from BoneKitLib import (LABEL_VALUE_TAG, labelmapToSegmentation, segmentationToLabelmap,  # noqa: E402
                        segmentLabelValues, smallSpinePhantom, volumeToNode)
from bonekit import BoneKitError, Volume  # noqa: E402
from bonekit.phantom import VERSE_NAMES  # noqa: E402


def gappedLabels() -> Volume:
    """Labels 5, 20 and 22 (gaps, like a partial VerSe spine) on an oblique, anisotropic grid."""
    array = np.zeros((8, 10, 12), np.uint8)
    array[1:4, 2:6, 3:9] = 20
    array[5:7, 1:9, 1:11] = 22
    array[0, 0, 0] = 5
    theta = np.deg2rad(20)
    direction = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
    return Volume.from_geometry(array, (0.6, 0.8, 1.5), (3.0, -4.0, 50.0), direction)


def segmentNames(segmentationNode) -> dict[int, str]:
    segmentation = segmentationNode.GetSegmentation()
    return {value: segmentation.GetSegment(segmentId).GetName()
            for segmentId, value in segmentLabelValues(segmentationNode).items()}


def test_round_trip_keeps_values_names_and_grid(slicer_app):
    labels = gappedLabels()
    names = {20: "L1", 22: "L3"}
    segmentationNode = labelmapToSegmentation(labels, slicer_app.scene, names=names, colors={20: (1.0, 0.0, 0.0)})
    assert segmentationNode.GetSegmentation().GetNumberOfSegments() == 3
    assert segmentNames(segmentationNode) == {5: "Label 5", 20: "L1", 22: "L3"}
    segmentation = segmentationNode.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("L1"))
    assert segment.GetColor() == (1.0, 0.0, 0.0)
    tag = vtk.reference("")
    assert segment.GetTag(LABEL_VALUE_TAG, tag) and str(tag) == "20"
    back, backNames = segmentationToLabelmap(segmentationNode, labels)
    assert np.array_equal(back.array, labels.array)
    assert np.array_equal(back.affine, labels.affine)
    assert back.array.dtype == np.uint8
    assert backNames == {5: "Label 5", 20: "L1", 22: "L3"}


def test_reference_geometry_and_node_reference(slicer_app):
    phantom = smallSpinePhantom()
    ctNode = volumeToNode(phantom.ct, slicer_app.scene, name="CT")
    segmentationNode = labelmapToSegmentation(phantom.labels, slicer_app.scene, names=VERSE_NAMES,
                                              referenceNode=ctNode, name="Vertebrae")
    geometry = segmentationNode.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    size = phantom.ct.size
    assert geometry.endswith(f"0;{size[0] - 1};0;{size[1] - 1};0;{size[2] - 1};")
    assert sorted(segmentNames(segmentationNode).values()) == ["L1", "L2"]
    nodesBefore = slicer_app.scene.GetNumberOfNodes()
    back, names = segmentationToLabelmap(segmentationNode, ctNode)
    assert slicer_app.scene.GetNumberOfNodes() == nodesBefore  # temporary export nodes removed
    assert np.array_equal(back.array, phantom.labels.array)
    assert np.array_equal(back.affine, phantom.ct.affine)
    assert names == {20: "L1", 21: "L2"}


def test_untagged_segments_get_the_next_free_values(slicer_app):
    labels = gappedLabels()
    segmentationNode = labelmapToSegmentation(labels, slicer_app.scene)
    added = segmentationNode.GetSegmentation().AddEmptySegment("", "drawn by hand")
    values = segmentLabelValues(segmentationNode)
    assert values[added] == 1
    subset, names = segmentationToLabelmap(segmentationNode, labels,
                                           [segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("Label 22")])
    assert names == {22: "Label 22"}
    assert np.array_equal(subset.array, np.where(labels.array == 22, 22, 0))


def test_bad_inputs(slicer_app):
    with pytest.raises(BoneKitError, match="integer labels"):
        labelmapToSegmentation(Volume(np.ones((2, 2, 2), np.float32)), slicer_app.scene)
    empty = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(BoneKitError, match="no segments"):
        segmentationToLabelmap(empty, gappedLabels())
    with pytest.raises(BoneKitError, match="no segment 'nope'"):
        segmentLabelValues(empty, ["nope"])

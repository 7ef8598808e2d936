"""bonekit.Volume <-> MRML volume nodes: bit-exact arrays and geometry (BoneKitLib.volumes)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)

import vtk  # noqa: E402
from BoneKitLib import ijkToRASMatrix, volumeFromNode, volumeToNode  # noqa: E402
from bonekit import BoneKitError, Volume  # noqa: E402
from bonekit.volume import LPS_TO_RAS  # noqa: E402


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation (oblique in every axis)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def obliqueVolume(dtype, shape=(5, 7, 9), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        array = rng.normal(0, 500, size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return Volume.from_geometry(array, spacing=(0.37, 0.81, 2.3), origin=(-120.25, 33.3, 801.7),
                                direction=rotation(rng), modality="CT", units="HU", metadata={"case": seed})


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32, np.float64, np.uint16, np.int8])
def test_volume_node_volume_is_bit_exact(slicer_app, dtype):
    volume = obliqueVolume(dtype)
    node = volumeToNode(volume, slicer_app.scene, name="ct")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert node.GetName() == "ct"
    assert np.array_equal(ijkToRASMatrix(node), volume.ijk_to_ras)
    back = volumeFromNode(node)
    assert back.array.dtype == np.dtype(dtype)
    assert np.array_equal(back.array, volume.array)
    assert np.array_equal(back.affine, volume.affine)
    assert (back.modality, back.units, back.metadata) == ("CT", "HU", {"case": 0})
    back.array[0, 0, 0] += 1  # a copy, not a view of the node's memory
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == volume.array[0, 0, 0]


def test_geometry_is_bit_exact_for_many_oblique_matrices(slicer_app):
    """Plain SetIJKToRASMatrix loses the last bit in about a third of these; the exact factorisation none."""
    rng = np.random.default_rng(7)
    node = slicer_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    for _ in range(300):
        volume = Volume.from_geometry(np.zeros((2, 2, 2), np.uint8), rng.uniform(0.1, 5.0, 3),
                                      rng.uniform(-500, 500, 3), rotation(rng))
        volumeToNode(volume, node)
        assert np.array_equal(volumeFromNode(node).affine, volume.affine)


def test_node_volume_node_keeps_the_ijk_to_ras_matrix(slicer_app):
    rng = np.random.default_rng(3)
    ijkToRAS = np.eye(4)
    ijkToRAS[:3, :3] = rotation(rng) * [0.43, 0.43, 1.7]
    ijkToRAS[:3, 3] = [10.1, -20.2, 30.3]
    array = rng.integers(-1024, 3000, size=(6, 8, 10), dtype=np.int16)
    original = slicer.util.addVolumeFromArray(array, ijkToRAS, "original")
    copy = volumeToNode(volumeFromNode(original), slicer_app.scene, name="copy")
    assert np.array_equal(ijkToRASMatrix(copy), ijkToRASMatrix(original))
    assert np.array_equal(slicer.util.arrayFromVolume(copy), array)
    assert slicer.util.arrayFromVolume(copy).dtype == np.int16


def test_labelmap_node_round_trip(slicer_app):
    labels = obliqueVolume(np.uint8)
    node = volumeToNode(labels, slicer_app.scene, labelmap=True)
    assert node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    back = volumeFromNode(node)
    assert back.array.dtype == np.uint8
    assert np.array_equal(back.array, labels.array)
    assert np.array_equal(back.affine, labels.affine)
    with pytest.raises(BoneKitError, match="integer labels"):
        volumeToNode(obliqueVolume(np.float32), slicer_app.scene, labelmap=True)


def test_unsupported_dtypes_are_cast_without_loss(slicer_app):
    mask = Volume(np.eye(4, dtype=bool)[np.newaxis].repeat(2, axis=0))
    assert volumeFromNode(volumeToNode(mask, slicer_app.scene)).array.dtype == np.uint8
    wide = Volume(np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 5)
    back = volumeFromNode(volumeToNode(wide, slicer_app.scene))
    assert back.array.dtype == np.int32 and np.array_equal(back.array, wide.array)
    with pytest.raises(BoneKitError, match="32-bit"):
        volumeToNode(Volume(np.full((2, 2, 2), 2**40, dtype=np.int64)), slicer_app.scene)


def test_writing_into_an_existing_node_keeps_node_and_class(slicer_app):
    node = slicer_app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
    volume = obliqueVolume(np.uint8)
    assert volumeToNode(volume, node) is node
    assert node.GetName() == "mask"
    assert np.array_equal(slicer.util.arrayFromVolume(node), volume.array)
    with pytest.raises(BoneKitError, match="scene or a scalar volume node"):
        volumeToNode(volume, slicer_app.scene.AddNewNodeByClass("vtkMRMLTableNode"))


def test_linear_parent_transform_is_folded_in_and_node_untouched(slicer_app):
    volume = obliqueVolume(np.int16)
    node = volumeToNode(volume, slicer_app.scene)
    transformNode = slicer_app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    toParent = np.array([[0, -1, 0, 5.0], [1, 0, 0, -7.0], [0, 0, 1, 12.5], [0, 0, 0, 1]])
    transformNode.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(toParent))
    node.SetAndObserveTransformNodeID(transformNode.GetID())
    hardened = volumeFromNode(node)
    assert np.allclose(hardened.affine, LPS_TO_RAS @ toParent @ volume.ijk_to_ras, rtol=0, atol=1e-12)
    assert np.array_equal(hardened.array, volume.array)
    assert node.GetParentTransformNode() is transformNode
    assert np.array_equal(ijkToRASMatrix(node, world=False), volume.ijk_to_ras)


def test_non_linear_parent_transform_is_refused(slicer_app):
    node = volumeToNode(obliqueVolume(np.int16), slicer_app.scene)
    transformNode = slicer_app.scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    grid = vtk.vtkImageData()
    grid.SetDimensions(2, 2, 2)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    gridTransform = vtk.vtkGridTransform()
    gridTransform.SetDisplacementGridData(grid)
    transformNode.SetAndObserveTransformToParent(gridTransform)
    node.SetAndObserveTransformNodeID(transformNode.GetID())
    with pytest.raises(BoneKitError, match="non-linear transform 'warp'.*Harden"):
        volumeFromNode(node)


def test_bad_nodes_are_refused(slicer_app):
    empty = slicer_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(BoneKitError, match="'empty' is empty"):
        volumeFromNode(empty)
    with pytest.raises(BoneKitError, match="No volume selected"):
        volumeFromNode(None)
    vector = slicer_app.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(BoneKitError, match="not a scalar volume"):
        volumeFromNode(vector)

"""`bonekit.Volume` <-> MRML scalar volume nodes, bit-exact both ways.

Voxel values are copied with their dtype unchanged (every type VTK images hold:
8/16/32-bit integers, float32, float64; see :func:`vtkCompatibleArray` for the
few that need a lossless cast). Geometry goes through the full 4x4 IJK->RAS
matrix, so oblique directions and anisotropic spacing survive.

Why a special factorisation: MRML does not store the IJK->RAS matrix, it stores
spacing and unit direction vectors and multiplies them on every
``GetIJKToRASMatrix`` call. Plain ``SetIJKToRASMatrix`` divides by the column
norms, and ``(a / s) * s`` differs from ``a`` in the last bit for about a third
of oblique matrices. :func:`setIJKToRASMatrix` picks, among the floats within a
few ulps of the column norm, a spacing and directions whose product gives back
the exact matrix, so a Volume -> node -> Volume round trip returns the same
affine bit for bit (and node -> Volume -> node the same IJK->RAS matrix).

Parent transforms: :func:`volumeFromNode` never modifies its input. A linear
parent transform is folded into the returned geometry (what "Harden transform"
would give, without touching the node); a non-linear one cannot be expressed as
a voxel grid without resampling, so it raises a :class:`bonekit.BoneKitError`
asking the user to harden it first.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import slicer
import vtk
from slicer.util import arrayFromVolume, arrayFromVTKMatrix, updateVolumeFromArray

from bonekit import BoneKitError, Volume
from bonekit.volume import LPS_TO_RAS

__all__ = ["volumeToNode", "volumeFromNode", "setIJKToRASMatrix", "ijkToRASMatrix", "vtkCompatibleArray"]

#: Node attributes that carry what MRML has no field for.
MODALITY_ATTRIBUTE = "BoneKit.modality"
UNITS_ATTRIBUTE = "BoneKit.units"
METADATA_ATTRIBUTE = "BoneKit.metadata"

_ULP_SEARCH = 64  # spacing candidates tried on each side of the column norm


def vtkCompatibleArray(array: np.ndarray, labelmap: bool = False) -> np.ndarray:
    """The array as a VTK image can hold it, values unchanged.

    Booleans become uint8, 64-bit integers become 32-bit ones when every value
    fits (VTK images of type long long are not displayed by Slicer), float16
    becomes float32 and big-endian data native. Everything else keeps its dtype.

    Raises
    ------
    BoneKitError
        64-bit integers out of the 32-bit range; non-integer values for a label map.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        narrow = np.int32 if array.dtype.kind == "i" else np.uint32
        info = np.iinfo(narrow)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise BoneKitError(
                f"Voxel values from {array.min()} to {array.max()} do not fit the 32-bit integers "
                "Slicer displays. Rescale the image or store it as floating point.")
        array = array.astype(narrow)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if labelmap and array.dtype.kind not in "iu":
        raise BoneKitError(
            f"A label map needs integer labels, but this image holds {array.dtype} values. "
            "Round or cast the labels to integers first.")
    return array


def _exactColumnFactors(column: np.ndarray) -> tuple[float, np.ndarray]:
    """Spacing ``s`` and direction ``d`` with ``d * s == column`` exactly in float64.

    Falls back to the plain norm split (error below one ulp) in the unlikely case
    no candidate reproduces every element.
    """
    norm = float(np.sqrt(np.dot(column, column)))
    candidates = [norm]
    up = down = norm
    for _ in range(_ULP_SEARCH):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        candidates += [float(up), float(down)]
    for spacing in candidates:
        direction = column / spacing
        for row, target in enumerate(column):
            for value in (direction[row], np.nextafter(direction[row], np.inf),
                          np.nextafter(direction[row], -np.inf)):
                if value * spacing == target:
                    direction[row] = value
                    break
            else:
                break
        else:
            return spacing, direction
    return norm, column / norm


def setIJKToRASMatrix(node, ijkToRAS: np.ndarray) -> None:
    """Set a volume node's geometry so that ``GetIJKToRASMatrix`` returns exactly ``ijkToRAS``."""
    ijkToRAS = np.asarray(ijkToRAS, dtype=float)
    directions = vtk.vtkMatrix4x4()
    spacing = []
    for col in range(3):
        s, d = _exactColumnFactors(ijkToRAS[:3, col].copy())
        spacing.append(s)
        for row in range(3):
            directions.SetElement(row, col, float(d[row]))
    wasModifying = node.StartModify()
    node.SetIJKToRASDirectionMatrix(directions)
    node.SetSpacing(*spacing)
    node.SetOrigin(*(float(v) for v in ijkToRAS[:3, 3]))
    node.EndModify(wasModifying)


def ijkToRASMatrix(node, world: bool = True) -> np.ndarray:
    """A volume node's IJK->RAS matrix as a 4x4 array.

    With ``world`` (the default) a linear parent transform is composed in, so the
    matrix maps voxels to where Slicer shows them; a non-linear one raises a
    :class:`bonekit.BoneKitError` (it cannot be expressed as a matrix).
    """
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijkToRAS = arrayFromVTKMatrix(matrix)
    transform = node.GetParentTransformNode() if world else None
    if transform is None:
        return ijkToRAS
    if not transform.IsTransformToWorldLinear():
        raise BoneKitError(
            f"The volume '{node.GetName()}' is under the non-linear transform '{transform.GetName()}'. "
            "Harden the transform (Data module, right-click the volume, 'Harden transform') first.")
    transform.GetMatrixTransformToWorld(matrix)
    return arrayFromVTKMatrix(matrix) @ ijkToRAS


def volumeToNode(volume: Volume, sceneOrNode, name: str | None = None, labelmap: bool = False):
    """Write a :class:`bonekit.Volume` into a new or an existing MRML volume node.

    Parameters
    ----------
    volume : bonekit.Volume
        Voxels and geometry to write. Never modified.
    sceneOrNode : vtkMRMLScene or vtkMRMLScalarVolumeNode
        A scene to add a new node to, or a node to overwrite (its class and
        parent transform are kept, so ``labelmap`` only matters for new nodes).
    name : str, optional
        Node name; a new node defaults to "Volume" (or "Label map").
    labelmap : bool
        Create a ``vtkMRMLLabelMapVolumeNode`` (integer labels) instead of a scalar volume.

    Returns
    -------
    vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        The node, with default display nodes. Its ``GetIJKToRASMatrix`` equals
        ``volume.ijk_to_ras`` bit for bit; modality, units and metadata are kept
        in node attributes so that :func:`volumeFromNode` gives them back.
    """
    if isinstance(sceneOrNode, slicer.vtkMRMLScene):
        className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = sceneOrNode.AddNewNodeByClass(className, name or ("Label map" if labelmap else "Volume"))
    elif _isScalarVolume(sceneOrNode):
        node = sceneOrNode
        if name:
            node.SetName(name)
    else:
        raise BoneKitError(f"Cannot write a volume into {type(sceneOrNode).__name__}: "
                           "give a scene or a scalar volume node.")
    array = vtkCompatibleArray(volume.array, labelmap=node.IsA("vtkMRMLLabelMapVolumeNode"))
    wasModifying = node.StartModify()
    updateVolumeFromArray(node, array)
    setIJKToRASMatrix(node, volume.ijk_to_ras)
    _setOptionalAttribute(node, MODALITY_ATTRIBUTE, volume.modality)
    _setOptionalAttribute(node, UNITS_ATTRIBUTE, volume.units)
    _setOptionalAttribute(node, METADATA_ATTRIBUTE, json.dumps(volume.metadata) if volume.metadata else None)
    node.EndModify(wasModifying)
    if node.GetDisplayNode() is None and node.GetScene() is not None:
        node.CreateDefaultDisplayNodes()
    return node


def volumeFromNode(node) -> Volume:
    """A :class:`bonekit.Volume` from a scalar or label map volume node (a copy; the node is untouched).

    The geometry is the node's IJK->RAS matrix, composed with its parent
    transform when that transform is linear, converted to LPS.

    Raises
    ------
    BoneKitError
        No node, not a scalar volume, no image data, or a non-linear parent transform.
    """
    if node is None:
        raise BoneKitError("No volume selected. Choose an input volume.")
    if not _isScalarVolume(node):
        raise BoneKitError(f"'{node.GetName()}' is a {node.GetClassName()}, not a scalar volume "
                           "(grey-level image or label map).")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise BoneKitError(f"The volume '{node.GetName()}' is empty: it has no image data. "
                           "Load the image or run the step that creates it first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise BoneKitError(f"The volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components "
                           "per voxel (a colour or vector image); a grey-level image is needed.")
    ijkToRAS = ijkToRASMatrix(node)
    metadata = node.GetAttribute(METADATA_ATTRIBUTE)
    labelmap = node.IsA("vtkMRMLLabelMapVolumeNode")
    return Volume(
        np.array(arrayFromVolume(node), copy=True),
        LPS_TO_RAS @ ijkToRAS,
        modality=node.GetAttribute(MODALITY_ATTRIBUTE) or ("SEG" if labelmap else None),
        units=node.GetAttribute(UNITS_ATTRIBUTE) or ("label" if labelmap else None),
        metadata=json.loads(metadata) if metadata else {"source": f"Slicer node '{node.GetName()}'"},
    )


def _isScalarVolume(node) -> bool:
    """A grey-level or label map volume node (vector and tensor volumes derive from scalar ones in MRML)."""
    return (isinstance(node, slicer.vtkMRMLScalarVolumeNode) and not node.IsA("vtkMRMLVectorVolumeNode")
            and not node.IsA("vtkMRMLTensorVolumeNode"))


def _setOptionalAttribute(node, key: str, value: Any) -> None:
    if value is None:
        node.RemoveAttribute(key)
    else:
        node.SetAttribute(key, str(value))


def setNodeAttributes(node, attributes: dict) -> None:
    """Set each attribute as text; a value of None removes the attribute (a re-used output node keeps no
    stale provenance)."""
    for key, value in attributes.items():
        if value is None:
            node.RemoveAttribute(key)
        else:
            node.SetAttribute(key, str(value))

"""GrowCut with Slicer's own implementation, ``vtkImageGrowCutSegment``.

:func:`vtkGrowCut` has the signature of :data:`bonekit.segment.GrowCutFunction`, so the
core's :func:`bonekit.segment.segment_vertebrae` runs on it inside Slicer (where the pip
package ``itk-growcut`` may be missing) with the same results as its default
``itk.FastGrowCut``: both are the same FastGrowCut code (Zhu et al. 2014; ITKGrowCut is
a port of Slicer's filter), and ``Testing/test_slicer_growcut.py`` checks that their labels
are identical.

Mask semantics (``vtkImageGrowCutSegment::SetMaskVolume``, as ``itk::FastGrowCut``'s mask
image): a non-zero mask voxel takes no part in the growing -- it is never labelled, and
no label passes through it -- and comes out 0, even where a seed lies on it.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from bonekit import BoneKitError

__all__ = ["vtkGrowCut"]


def _imageData(array: np.ndarray, spacing) -> vtk.vtkImageData:
    """A vtkImageData sharing the memory of a C-contiguous (k, j, i) array (i varies fastest, as in VTK)."""
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.SetSpacing(*(float(s) for s in spacing))
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=False)  # keeps a reference to the array
    image.GetPointData().SetScalars(scalars)
    return image


def vtkGrowCut(intensity: np.ndarray, seeds: np.ndarray, spacing, exclude: np.ndarray | None = None,
               distancePenalty: float = 0.0) -> np.ndarray:
    """FastGrowCut with ``slicer.vtkImageGrowCutSegment`` (Segment Editor's "Grow from seeds").

    Parameters
    ----------
    intensity : ndarray (k, j, i)
        Image to grow on (converted to float32, the type the core passes).
    seeds : ndarray (k, j, i) of uint8
        Seed labels; 0 = unlabelled.
    spacing : (i, j, k) mm
        Voxel size (matters only with a distance penalty; set anyway).
    exclude : ndarray (k, j, i), optional
        Non-zero voxels take no part in the growing and come out 0.
    distancePenalty : float
        Slicer's "Seed locality": intensity difference added per mm of path (0 = none).

    Returns
    -------
    ndarray (k, j, i) of uint8
        The label grown into every voxel (0 where excluded or unreachable).
    """
    intensity = np.ascontiguousarray(intensity, dtype=np.float32)
    seeds = np.ascontiguousarray(seeds, dtype=np.uint8)
    if seeds.shape != intensity.shape or intensity.ndim != 3:
        raise BoneKitError(f"GrowCut needs a 3D intensity image and seeds of the same shape, got "
                           f"{intensity.shape} and {seeds.shape}.")
    if min(intensity.shape) < 3:
        raise BoneKitError(f"GrowCut needs at least 3 voxels along each axis, got {intensity.shape}.")
    growCut = slicer.vtkImageGrowCutSegment()
    growCut.SetIntensityVolume(_imageData(intensity, spacing))
    growCut.SetSeedLabelVolume(_imageData(seeds, spacing))
    if exclude is not None:
        exclude = np.ascontiguousarray(exclude, dtype=np.uint8)
        if exclude.shape != intensity.shape:
            raise BoneKitError(f"The GrowCut exclusion mask has shape {exclude.shape}, the image {intensity.shape}.")
        growCut.SetMaskVolume(_imageData(exclude, spacing))
    growCut.SetDistancePenalty(float(distancePenalty))
    growCut.Update()
    output = growCut.GetOutput()
    scalars = output.GetPointData().GetScalars() if output is not None else None
    if scalars is None or scalars.GetNumberOfTuples() != seeds.size:
        raise BoneKitError("Slicer's GrowCut (vtkImageGrowCutSegment) produced no result; see the log for why.")
    return np.array(numpy_support.vtk_to_numpy(scalars), dtype=np.uint8).reshape(seeds.shape)

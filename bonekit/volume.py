"""`Volume`: the one geometry type of BoneKit.

A `Volume` is a voxel array in k, j, i order (slowest to fastest axis, as both
``SimpleITK.GetArrayFromImage`` and ``slicer.util.arrayFromVolume`` give it) plus
the full 4x4 matrix that maps voxel indices (i, j, k) to physical LPS
coordinates in millimetres (the DICOM / ITK patient coordinate system).
Slicer's RAS world differs only by the sign of the first two axes; see
:attr:`Volume.ijk_to_ras`.

Everything else (spacing, origin, direction) is derived from the matrix, so a
volume can never hold inconsistent geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import BoneKitError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def make_affine(spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0),
                direction: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
    """IJK -> LPS matrix from spacing (mm, i/j/k order), origin (mm) and a direction matrix.

    ``direction`` is 3x3 with the unit axis directions as columns (ITK's convention);
    a flat sequence of 9 numbers is read row by row, as ``SimpleITK.Image.GetDirection``.
    """
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise BoneKitError(f"Voxel spacing must be three positive numbers in mm, got {tuple(spacing)}.")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = d * spacing[np.newaxis, :]
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass(eq=False)
class Volume:
    """A 3D image with exact geometry.

    Attributes
    ----------
    array : numpy.ndarray
        Voxel values, shape (nk, nj, ni).
    affine : numpy.ndarray
        4x4 matrix from voxel index (i, j, k, 1) to LPS millimetres.
    modality : str or None
        DICOM-style modality ("CT", "MR", "SEG", ...), when known.
    units : str or None
        Units of the voxel values: "HU", "mg HA/cm3", "mm", "label", "1", ... when known.
    metadata : dict
        Free-form provenance (source file, series UID, ...). JSON-serialisable values only.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str | None = None
    units: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise BoneKitError(
                f"A 3D image is needed, but this one has {self.array.ndim} dimension(s) "
                f"(shape {self.array.shape}). Load the whole series or volume, not a single slice.")
        if 0 in self.array.shape:
            raise BoneKitError(f"The image is empty (shape {self.array.shape}).")
        affine = np.array(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise BoneKitError("The voxel-to-physical matrix must be a finite 4x4 matrix.")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise BoneKitError("The voxel-to-physical matrix is singular (zero spacing or degenerate axes).")
        self.affine = affine

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_geometry(cls, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      origin: Sequence[float] = (0.0, 0.0, 0.0), direction=None, **kwargs) -> "Volume":
        """A volume from spacing (mm, i/j/k), origin (LPS mm) and direction cosines (columns)."""
        return cls(array, make_affine(spacing, origin, direction), **kwargs)

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """A new volume on the same grid holding ``array`` (must have the same shape)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise BoneKitError(f"Array shape {array.shape} does not match the volume grid {self.array.shape}.")
        fields = dict(modality=self.modality, units=self.units, metadata=dict(self.metadata))
        fields.update(changes)
        return Volume(array, self.affine.copy(), **fields)

    def with_spacing(self, spacing: Sequence[float]) -> "Volume":
        """Same array, origin and direction, new spacing: for files whose header spacing is wrong."""
        return Volume(self.array, make_affine(spacing, self.origin, self.direction), self.modality,
                      self.units, dict(self.metadata, spacing_overridden=[float(s) for s in spacing]))

    def crop(self, box: Sequence[slice]) -> "Volume":
        """The sub-volume ``array[box]`` (k, j, i slices with steps of 1) with its exact geometry."""
        starts = [0 if b.start is None else int(b.start) for b in box]
        corner = self.affine @ np.array([starts[2], starts[1], starts[0], 1.0])
        affine = self.affine.copy()
        affine[:, 3] = corner
        return Volume(self.array[tuple(box)], affine, self.modality, self.units, dict(self.metadata))

    def bounding_box(self, margin_mm: float = 0.0) -> tuple[slice, slice, slice]:
        """(k, j, i) slices around the non-zero voxels, grown by ``margin_mm`` and clipped to the grid."""
        nonzero = np.argwhere(self.array)
        if nonzero.size == 0:
            raise BoneKitError("The volume has no non-zero voxel to put a box around.")
        margin = np.ceil(margin_mm / self.spacing_kji - 1e-9).astype(int)
        lo = np.maximum(nonzero.min(axis=0) - margin, 0)
        hi = np.minimum(nonzero.max(axis=0) + margin + 1, self.array.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def box_of(self, part: "Volume") -> tuple[slice, slice, slice]:
        """Where a volume cropped from this one (:meth:`crop`) lies: its (k, j, i) slices here."""
        k, j, i = np.rint(self.physical_to_index(part.origin)[::-1]).astype(int)
        return slice(k, k + part.shape[0]), slice(j, j + part.shape[1]), slice(i, i + part.shape[2])

    def copy(self) -> "Volume":
        return Volume(self.array.copy(), self.affine.copy(), self.modality, self.units, dict(self.metadata))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (nk, nj, ni)."""
        return tuple(self.array.shape)

    @property
    def size(self) -> tuple[int, int, int]:
        """Grid size in ITK order (ni, nj, nk)."""
        return tuple(self.array.shape[::-1])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def spacing_kji(self) -> np.ndarray:
        """Voxel size in mm along the array axes (k, j, i): what array algorithms take."""
        return self.spacing[::-1].copy()

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 direction cosines, one column per voxel axis i, j, k."""
        return self.affine[:3, :3] / self.spacing[np.newaxis, :]

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix, as Slicer's ``GetIJKToRASMatrix``."""
        return LPS_TO_RAS @ self.affine

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def index_to_physical(self, ijk) -> np.ndarray:
        """LPS mm of continuous voxel indices (i, j, k); shape (..., 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def physical_to_index(self, lps) -> np.ndarray:
        """Continuous voxel indices (i, j, k) of LPS mm points; shape (..., 3)."""
        lps = np.asarray(lps, dtype=float)
        return (lps - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def contains_index(self, ijk, margin: float = 0.5) -> np.ndarray:
        """Whether continuous indices lie inside the image (voxel extent, half a voxel past centres)."""
        ijk = np.asarray(ijk, dtype=float)
        hi = np.asarray(self.size, dtype=float) - 1 + margin
        return np.all((ijk >= -margin) & (ijk <= hi), axis=-1)

    def labels_on(self, grid: "Volume") -> "Volume":
        """This mask or label map on ``grid``'s voxels: itself when already there, else resampled by
        nearest neighbour (0 outside this volume's extent). Values and dtype are kept."""
        if grid.same_grid(self):
            return self
        import SimpleITK as sitk

        resampler = sitk.ResampleImageFilter()
        resampler.SetReferenceImage(grid.to_sitk())
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetDefaultPixelValue(0)
        return grid.with_array(sitk.GetArrayFromImage(resampler.Execute(self.to_sitk())),
                               modality=self.modality, units=self.units, metadata=dict(self.metadata))

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when ``other`` has the same shape and voxel-to-physical matrix (to ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, rtol=0, atol=atol)

    def require_same_grid(self, other: "Volume", what: str = "mask") -> None:
        """Raise a BoneKitError unless ``other`` lies on this volume's grid."""
        if not self.same_grid(other):
            raise BoneKitError(
                f"The {what} does not lie on the image grid (image {self.size} voxels, spacing "
                f"{np.round(self.spacing, 4).tolist()} mm; {what} {other.size} voxels, spacing "
                f"{np.round(other.spacing, 4).tolist()} mm, or a different origin/direction). "
                f"Resample the {what} onto the image first.")

    # ------------------------------------------------------------------ interop
    def to_sitk(self):
        """A SimpleITK image with the same values and geometry (the array is copied)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing([float(s) for s in self.spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in self.direction.ravel()])
        return image

    @classmethod
    def from_sitk(cls, image, **kwargs) -> "Volume":
        """A volume from a 3D scalar SimpleITK image."""
        if image.GetDimension() != 3:
            raise BoneKitError(
                f"A 3D image is needed, but this one is {image.GetDimension()}D "
                f"(size {image.GetSize()}).")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise BoneKitError(
                f"A scalar (grey-level) image is needed, but this one has "
                f"{image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image).")
        import SimpleITK as sitk

        return cls.from_geometry(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                                 image.GetDirection(), **kwargs)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary: geometry, modality, units and value range."""
        a = self.array
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        corners = np.array([[i, j, k] for i in (0, self.size[0] - 1) for j in (0, self.size[1] - 1)
                            for k in (0, self.size[2] - 1)], dtype=float)
        pts = self.index_to_physical(corners)
        return {
            "size_ijk": list(self.size),
            "spacing_mm": [float(s) for s in self.spacing],
            "origin_lps_mm": [float(o) for o in self.origin],
            "direction": [[float(x) for x in row] for row in self.direction],
            "orientation": orientation_code(self.direction),
            "extent_lps_mm": [[float(v) for v in pts.min(0)], [float(v) for v in pts.max(0)]],
            "dtype": str(a.dtype),
            "modality": self.modality,
            "units": self.units,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None,
            "nonfinite_voxels": int(a.size - finite.size),
        }

    def __repr__(self) -> str:
        return (f"Volume(size={self.size}, spacing={np.round(self.spacing, 4).tolist()} mm, "
                f"orientation={orientation_code(self.direction)}, dtype={self.array.dtype}, "
                f"modality={self.modality}, units={self.units})")


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code of the anatomical direction each voxel axis points to (ITK/DICOM style).

    ``LPS`` means i increases towards the patient's left, j towards posterior and
    k towards superior (the usual axial DICOM series). Oblique axes get the
    closest letter.
    """
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code = ""
    for col in np.asarray(direction).T:
        axis = int(np.argmax(np.abs(col)))
        code += letters[axis][0] if col[axis] > 0 else letters[axis][1]
    return code

"""Real radiographs as the input of a synthetic-CT network trained on DRRs.

:func:`read_radiograph` reads a DICOM CR/DX radiograph (any extension, JPEG-LS and other compressed
transfer syntaxes through SimpleITK's GDCM) or a PNG/TIFF/JPEG image with a pixel size given by the user,
and returns a :class:`Radiograph` laid out as BoneKit's DRRs (:mod:`bonekit.sct.drr`):

* grey values with bone BRIGHT (DICOM MONOCHROME2 sense): MONOCHROME1 files are inverted as
  ``(2**BitsStored - 1) - value``;
* rows run superior -> inferior; for ``ap``/``pa`` views columns run towards the patient's LEFT, for
  ``lat``/``rlat`` views towards POSTERIOR. DICOM files are brought there from their PatientOrientation
  (0020,0020) by flips and/or a transpose; files without it, and PNG/TIFF/JPEG images, are taken as
  they are (their ``info`` says so).

:func:`normalise` maps grey values robustly to [0, 1]; :func:`resample_to_detector` rescales a radiograph
so that its pixels at the isocentre match a model detector's (:class:`~bonekit.sct.drr.DetectorGeometry`),
centred on a chosen point and cropped or padded to the detector's rows x columns.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BoneKitError
from ..volume import Volume
from .drr import VIEWS, DetectorGeometry, View

#: Modalities read as radiographs: computed radiography, digital radiography, radiographic imaging.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")

#: File types read with PIL (their pixel size must be given).
PLAIN_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: One-slice volume files (e.g. ``bonekit drr`` output, or a radiograph node saved from Slicer).
VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")

#: DICOM ViewPosition (0018,5101) -> BoneKit view. "LL" is a left lateral (the left side against the
#: detector, the beam running from right to left: BoneKit's ``lat``), "RL" a right lateral.
VIEW_POSITIONS = {"AP": "ap", "PA": "pa", "LL": "lat", "LAT": "lat", "LATERAL": "lat", "RL": "rlat"}

#: PatientOrientation letters as (LPS axis, sign).
_DIRECTIONS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "H": (2, 1), "F": (2, -1)}
_LETTERS = {value: key for key, value in _DIRECTIONS.items()}

_TAGS = {
    "modality": "0008|0060",
    "photometric": "0028|0004",
    "pixel_spacing": "0028|0030",
    "imager_pixel_spacing": "0018|1164",
    "bits_stored": "0028|0101",
    "pixel_representation": "0028|0103",
    "patient_orientation": "0020|0020",
    "view_position": "0018|5101",
    "frames": "0028|0008",
    "samples": "0028|0002",
}

#: Geometry tags copied into ``Radiograph.info`` (as numbers) when present.
GEOMETRY_TAGS = {"DistanceSourceToDetector": "0018|1110", "DistanceSourceToPatient": "0018|1111",
                 "EstimatedRadiographicMagnificationFactor": "0018|1114"}


@dataclass
class Radiograph:
    """One projection radiograph in BoneKit's layout.

    Attributes
    ----------
    image : numpy.ndarray
        Grey values, float32, shape (rows, columns), bone bright (MONOCHROME2 sense), in the file's units.
    pixel : tuple of float
        (row, column) pixel spacing in mm, in the plane the file gives it (usually the detector).
    view : str or None
        ``"ap"``, ``"pa"``, ``"lat"``, ``"rlat"``, or None when unknown.
    info : dict
        JSON-serialisable provenance: source file, format, modality, photometric interpretation as stored,
        whether the values were inverted, the flips applied, PatientOrientation as stored, where the pixel
        spacing came from, and the DICOM source/detector distances and magnification when present.
    """

    image: np.ndarray
    pixel: tuple[float, float]
    view: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim != 2 or 0 in self.image.shape:
            raise BoneKitError(f"A radiograph is one 2D image; got an array of shape {self.image.shape}.")
        self.pixel = _pixel_pair(self.pixel, "The radiograph's pixel size")
        self.view = _view_name(self.view)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return tuple(self.image.shape)

    def to_volume(self) -> Volume:
        """The radiograph as a one-slice volume (array shape (1, rows, columns)), as Slicer shows it.

        Spacing is (column, row, 1) mm. With a known view the image lies in the plane through the LPS
        origin perpendicular to the beam, its centre at the origin, columns and rows along the view's
        directions (those of :data:`bonekit.sct.drr.VIEWS`), so an AP view shows as a coronal slice
        and a lateral one as a sagittal slice. With no view the axes are LPS's (identity directions).
        """
        rows, columns = self.shape
        if self.view is None:
            column, row, normal = np.eye(3)
        else:
            v = VIEWS[self.view]
            column, row, normal = (np.asarray(d, float) for d in (v.column, v.row, v.beam))
        affine = np.eye(4)
        affine[:3, 0] = column * self.pixel[1]
        affine[:3, 1] = row * self.pixel[0]
        affine[:3, 2] = normal
        affine[:3, 3] = -(affine[:3, 0] * (columns - 1) + affine[:3, 1] * (rows - 1)) / 2
        metadata = {"radiograph": dict(self.info, view=self.view, pixel_mm=list(self.pixel))}
        return Volume(self.image[None].copy(), affine, modality=self.info.get("modality") or "DX",
                      units=None, metadata=metadata)


@dataclass
class DetectorImage:
    """A radiograph resampled onto a model detector (:func:`resample_to_detector`)."""

    image: np.ndarray                 #: (geometry.rows, geometry.columns) float32
    magnification: float              #: the radiograph's magnification that was used (SID / source-object)
    magnification_source: str         #: where it came from
    step: tuple[float, float]         #: radiograph pixels per model pixel, (row, column)
    centre: tuple[float, float]       #: radiograph (row, column) at the model image's centre, pixels


# ---------------------------------------------------------------------------------------------- reading
def read_radiograph(path, *, pixel_mm: float | Sequence[float] | None = None,
                    view: str | View | None = None) -> Radiograph:
    """Read a radiograph: DICOM CR/DX/RG, or a greyscale PNG, TIFF or JPEG image.

    Parameters
    ----------
    path : str or Path
        The file. DICOM is recognised by its content, whatever the extension.
    pixel_mm : float or (float, float), optional
        Pixel size in mm, one value or (row, column). Required for PNG/TIFF/JPEG and for DICOM files
        without a usable PixelSpacing / ImagerPixelSpacing; overrides the header when given.
    view : str, optional
        ``"ap"``, ``"pa"``, ``"lat"`` or ``"rlat"``. Wins over the DICOM ViewPosition; it sets how the
        image is oriented (see the module docstring).

    Returns
    -------
    Radiograph
        Float32 grey values, bone bright, in BoneKit's orientation where the file says how it is
        oriented. PNG/TIFF/JPEG images are assumed to be in BoneKit's orientation already, and to hold
        bone bright.

    Raises
    ------
    BoneKitError
        Missing or unreadable file; not a radiograph (CT, MR, ... modality, several frames, a 3D image);
        a colour image; no pixel size; an unknown view.
    """
    path = Path(path)
    if not path.is_file():
        raise BoneKitError(f"{path}: no such file. Give the path of a radiograph (DICOM, PNG, TIFF or JPEG).")
    override = None if pixel_mm is None else _pixel_pair(pixel_mm, "pixel_mm")
    wanted = None if view is None else _view_name(view)
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        return _read_volume_file(path, override, wanted)
    kind = _sniff(path)
    if kind == "dicom" or (kind is None and path.suffix.lower() not in PLAIN_IMAGE_SUFFIXES):
        try:
            return _read_dicom(path, override, wanted)
        except _NotDicom as exc:
            if kind == "dicom":
                raise BoneKitError(f"{path}: cannot read this DICOM file ({exc}).") from None
            reason = str(exc)
    else:
        reason = ""
    try:
        return _read_plain(path, override, wanted)
    except _NotPlain as exc:
        raise BoneKitError(f"{path}: cannot read it as a radiograph ({reason or exc}). BoneKit reads DICOM "
                           "CR/DX files and greyscale PNG, TIFF and JPEG images.") from None


class _NotDicom(Exception):
    pass


class _NotPlain(Exception):
    pass


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG", b"II*\x00", b"MM\x00*", b"\xff\xd8\xff")):
        return "plain"
    return None


def _read_dicom(path: Path, override, wanted) -> Radiograph:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _NotDicom(_first_line(exc)) from None
    meta = {name: (reader.GetMetaData(tag) if reader.HasMetaDataKey(tag) else None) for name, tag in _TAGS.items()}
    text = {name: (value.strip() if value is not None else "") for name, value in meta.items()}
    name = path.name

    modality = text["modality"].upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise BoneKitError(f"{name} is a {modality} image, not a radiograph; BoneKit reads projection "
                           f"radiographs (modality {', '.join(RADIOGRAPH_MODALITIES)}). Read volumes with "
                           "bonekit.io.read_volume.")
    frames = _int(text["frames"])
    size = reader.GetSize()
    if (frames or 1) > 1 or (len(size) > 2 and size[2] > 1):
        raise BoneKitError(f"{name} holds {frames or size[2]} frames (a cine, multi-frame or 3D image); "
                           "a radiograph is one image. Export the single frame you want.")
    photometric = text["photometric"].upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or reader.GetNumberOfComponents() != 1:
        raise BoneKitError(f"{name} has the wrong photometric interpretation for a radiograph: "
                           f"'{photometric or 'missing'}' ({reader.GetNumberOfComponents()} component(s) per "
                           "pixel). A greyscale (MONOCHROME1 or MONOCHROME2) radiograph is needed.")
    try:
        image = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        raise BoneKitError(f"{name}: cannot decode the pixel data ({_first_line(exc)}).") from None
    raw = image.reshape(image.shape[-2:]).astype(np.float64)

    info: dict[str, Any] = {"source": str(path), "format": "DICOM", "modality": modality or None,
                            "photometric_interpretation": text["photometric"] or None}
    bits = _int(text["bits_stored"])
    info["BitsStored"] = bits
    # Grey values: bone bright.
    inverted_by = None
    if photometric == "MONOCHROME1":
        if _reader_inverts_monochrome1():
            inverted_by = "SimpleITK (GDCMImageIO) while reading"
        else:
            raw = _invert(raw, bits, _int(text["pixel_representation"]) == 1)
            inverted_by = ("(2**BitsStored - 1) - value" if bits else "image max + min - value")
    info["inverted"] = inverted_by is not None
    info["inversion"] = inverted_by

    # Pixel spacing.
    spacing = _spacing(text["pixel_spacing"])
    imager = _spacing(text["imager_pixel_spacing"])
    info["PixelSpacing"] = _stored(meta["pixel_spacing"])
    info["ImagerPixelSpacing"] = _stored(meta["imager_pixel_spacing"])
    plane = "detector"
    if spacing is not None:
        header, source = spacing, "PixelSpacing"
        if imager is not None and not np.allclose(spacing, imager, rtol=0.01):
            plane = "patient"   # calibrated: PixelSpacing = ImagerPixelSpacing / magnification
    elif imager is not None:
        header, source = imager, "ImagerPixelSpacing"
    else:
        header, source = None, None
    if override is not None:
        pixel, source, plane = override, "pixel_mm argument", "detector"
    elif header is None:
        raise BoneKitError(f"{name} has no pixel spacing (PixelSpacing and ImagerPixelSpacing are missing or "
                           "zero). Give the detector pixel size in mm: pixel_mm= in Python, --pixel MM on "
                           "the command line.")
    else:
        pixel = header
    info["spacing_source"] = source
    info["spacing_plane"] = plane
    info["header_spacing_mm"] = None if header is None else list(header)
    for key, tag in GEOMETRY_TAGS.items():
        value = _float(reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else "")
        if value is not None and value > 0:
            info[key] = value

    # View and orientation.
    info["ViewPosition"] = _stored(meta["view_position"])
    info["PatientOrientation"] = _stored(meta["patient_orientation"])
    from_tag = VIEW_POSITIONS.get(text["view_position"].upper())
    view, view_source = (wanted, "argument") if wanted else ((from_tag, "ViewPosition") if from_tag else (None, None))
    codes = _orientation_codes(text["patient_orientation"])
    flips: list[str] = []
    if codes is None:
        info["orientation"] = ("unknown: no PatientOrientation in the file; the image is kept as stored"
                               if not text["patient_orientation"] else
                               f"unknown: PatientOrientation '{text['patient_orientation']}' is not two codes "
                               "of L, R, A, P, H, F; the image is kept as stored")
        info["orientation_known"] = False
    else:
        if view is not None and not _fits(codes, view):
            if view_source == "argument":
                raise BoneKitError(
                    f"{name}: PatientOrientation '{text['patient_orientation']}' says the image axes run towards "
                    f"{_LETTERS[codes[0]]} (columns) and {_LETTERS[codes[1]]} (rows), which is not a "
                    f"{view} view. Check the view you gave.")
            info["view_note"] = (f"ViewPosition '{text['view_position']}' ignored: PatientOrientation "
                                 f"'{text['patient_orientation']}' does not fit it")
            view, view_source = None, None
        raw, flips, pixel = _orient(raw, codes, view, pixel)
        info["orientation"] = "from PatientOrientation"
        info["orientation_known"] = True
    info["flips"] = flips
    info["view_source"] = view_source
    return Radiograph(raw.astype(np.float32), pixel, view, info)


def _read_plain(path: Path, override, wanted) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            mode, fmt = im.mode, im.format
            if frames > 1:
                raise BoneKitError(f"{path.name} holds {frames} images; a radiograph is one image. Save the one "
                                   "you want on its own.")
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            array = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _NotPlain(str(exc)) from None
    if array.ndim == 3:
        colours = array[..., :3] if array.shape[-1] in (3, 4) else array[..., :1]
        if not np.all(colours == colours[..., :1]):
            raise BoneKitError(f"{path.name} is a colour image (mode {mode}); a greyscale radiograph is needed. "
                               "Save it as a greyscale (8- or 16-bit) image.")
        array = colours[..., 0]
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise BoneKitError(f"{path.name}: image mode {mode} is not a greyscale image; a greyscale radiograph "
                           "is needed.")
    if override is None:
        raise BoneKitError(f"{path.name} has no pixel spacing ({fmt} images do not carry one). Give the detector "
                           "pixel size in mm: pixel_mm= in Python, --pixel MM on the command line.")
    info = {"source": str(path), "format": fmt, "modality": None, "mode": mode, "photometric_interpretation": None,
            "inverted": False, "inversion": None, "flips": [], "PatientOrientation": None,
            "orientation": "assumed: the image is taken to be in BoneKit's orientation already "
                           "(superior at the top; AP/PA: patient's left to the right, lateral: posterior "
                           "to the right) with bone bright",
            "orientation_known": False, "spacing_source": "pixel_mm argument", "spacing_plane": "detector",
            "view_source": "argument" if wanted else None}
    return Radiograph(array.astype(np.float32), override, wanted, info)


def _read_volume_file(path: Path, override, wanted) -> Radiograph:
    """A one-slice volume: its two long axes are (rows, columns) in array order; pixel size from the header."""
    from ..io import read_volume

    volume = read_volume(path)
    plane = [axis for axis, n in enumerate(volume.shape) if n > 1]            # array axes k, j, i
    if len(plane) != 2:
        raise BoneKitError(f"{path.name} has {' x '.join(map(str, volume.size))} voxels; a radiograph is one "
                           "image (a single slice), not a CT volume.")
    spacing = volume.spacing_kji[plane]
    info = {"source": str(path), "format": "volume", "modality": volume.modality, "inverted": False,
            "inversion": None, "flips": [], "PatientOrientation": None,
            "orientation": "assumed: the slice is taken to be in BoneKit's orientation already (rows = the slower "
                           "axis, superior at the top) with bone bright",
            "orientation_known": False,
            "spacing_source": "pixel_mm argument" if override else "volume header", "spacing_plane": "detector",
            "view_source": "argument" if wanted else None}
    pixel = override or (float(spacing[0]), float(spacing[1]))
    return Radiograph(np.asarray(volume.array, np.float32).reshape([volume.shape[a] for a in plane]), pixel,
                      wanted, info)


# ---------------------------------------------------------------------------------------------- helpers
def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "Exception" not in line and ".cxx" not in line]
    return (useful or lines or ["unknown error"])[-1][:200]


def _stored(value: str | None) -> str | None:
    """A header value as stored, less the DICOM padding (trailing spaces / NULs); None when absent."""
    if value is None:
        return None
    return value.rstrip(" \x00") or None


def _int(text: str) -> int | None:
    try:
        return int(float(text.split("\\")[0]))
    except (ValueError, IndexError):
        return None


def _float(text: str) -> float | None:
    try:
        value = float(text.split("\\")[0])
    except (ValueError, IndexError):
        return None
    return value if math.isfinite(value) else None


def _spacing(text: str) -> tuple[float, float] | None:
    """A (row, column) DICOM spacing, or None when missing, malformed or not positive."""
    try:
        values = [float(v) for v in text.split("\\") if v.strip()]
    except ValueError:
        return None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values[0], values[1]


def _pixel_pair(value, what: str) -> tuple[float, float]:
    try:
        values = [float(value)] * 2 if np.ndim(value) == 0 else [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise BoneKitError(f"{what} must be one positive size or a (row, column) pair in mm, got {value!r}.")
    return values[0], values[1]


def _view_name(view) -> str | None:
    if view is None:
        return None
    name = view.name if isinstance(view, View) else str(view).strip().lower()
    if name not in VIEWS:
        raise BoneKitError(f"Unknown view '{view}': use one of {', '.join(VIEWS)}.")
    return name


def _invert(raw: np.ndarray, bits: int | None, signed: bool) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2: ``(2**bits - 1) - v`` (``-1 - v`` when signed), else ``max + min - v``."""
    if bits:
        return (-1.0 if signed else float(2 ** bits - 1)) - raw
    return (raw.max() + raw.min()) - raw


@functools.lru_cache(maxsize=1)
def _reader_inverts_monochrome1() -> bool:
    """Whether this SimpleITK's GDCMImageIO already turns MONOCHROME1 into MONOCHROME2 (ITK >= 5.4 does).

    Found out once by reading a 1 x 2 MONOCHROME1 file written here byte by byte.
    """
    import SimpleITK as sitk

    def element(group, elem, vr, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00" if vr in (b"UI", b"OB") else b" "
        if vr in (b"OB", b"OW"):
            return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    us = functools.partial(struct.pack, "<H")
    sop_class, sop_instance = b"1.2.840.10008.5.1.4.1.1.1.1", b"1.2.826.0.1.3680043.2.1143.1"
    meta = (element(2, 1, b"OB", b"\x00\x01") + element(2, 2, b"UI", sop_class) + element(2, 3, b"UI", sop_instance)
            + element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1"))
    data = (element(8, 0x16, b"UI", sop_class) + element(8, 0x18, b"UI", sop_instance)
            + element(8, 0x60, b"CS", b"DX") + element(0x28, 2, b"US", us(1))
            + element(0x28, 4, b"CS", b"MONOCHROME1") + element(0x28, 0x10, b"US", us(1))
            + element(0x28, 0x11, b"US", us(2)) + element(0x28, 0x100, b"US", us(16))
            + element(0x28, 0x101, b"US", us(12)) + element(0x28, 0x102, b"US", us(11))
            + element(0x28, 0x103, b"US", us(0)) + element(0x7FE0, 0x10, b"OW", struct.pack("<HH", 0, 100)))
    blob = (b"\x00" * 128 + b"DICM" + element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta + data)
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe.dcm")
        with open(probe, "wb") as f:
            f.write(blob)
        values = sitk.GetArrayFromImage(sitk.ReadImage(probe, imageIO="GDCMImageIO")).ravel().tolist()
    return values == [4095, 3995]


def _orientation_codes(text: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """PatientOrientation -> ((axis, sign) of increasing column, (axis, sign) of increasing row), or None.

    The first letter of each code is its dominant direction ("FL" -> F).
    """
    parts = [p.strip().upper() for p in text.split("\\")]
    if len(parts) != 2 or not all(p and p[0] in _DIRECTIONS for p in parts):
        return None
    column, row = _DIRECTIONS[parts[0][0]], _DIRECTIONS[parts[1][0]]
    return None if column[0] == row[0] else (column, row)


def _target(view: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(axis, sign) wanted for columns and rows: AP/PA -> L, F; lateral -> P, F."""
    return ((0, 1) if view in ("ap", "pa") else (1, 1)), (2, -1)


def _fits(codes, view: str) -> bool:
    wanted = {axis for axis, _ in _target(view)}
    return {axis for axis, _ in codes} == wanted


def _orient(image: np.ndarray, codes, view: str | None, pixel):
    """Transpose and/or flip ``image`` so that its axes run as BoneKit wants; returns (image, steps, pixel).

    With a view, columns -> L (AP/PA) or P (lateral) and rows -> F. Without one, only what the codes
    allow: the head-foot axis down the rows (F), and columns towards L or P.
    """
    (column, row), steps = codes, []
    transpose = column[0] != _target(view)[0][0] if view is not None else column[0] == 2
    if transpose:
        image, column, row = image.T, row, column
        pixel = (pixel[1], pixel[0])
        steps.append("transpose")
    if view is not None:
        want_column, want_row = _target(view)
    else:
        want_column, want_row = (column[0], 1), ((2, -1) if row[0] == 2 else row)
    if row[1] != want_row[1]:
        image = image[::-1, :]
        steps.append("rows")
    if column[1] != want_column[1]:
        image = image[:, ::-1]
        steps.append("columns")
    return np.ascontiguousarray(image), steps, pixel


# ---------------------------------------------------------------------------------------------- values
def normalise(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Robust min-max scaling to [0, 1].

    Parameters
    ----------
    image : numpy.ndarray
        Grey values (any units), finite.
    low_percentile, high_percentile : float
        Percentiles (0-100) mapped to 0 and 1; values beyond them are clipped.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], the shape of ``image``.
    """
    if not 0 <= low_percentile < high_percentile <= 100:
        raise BoneKitError(f"Need 0 <= low < high <= 100 percentiles, got {low_percentile} and {high_percentile}.")
    a = np.asarray(image, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise BoneKitError("The image must be non-empty and hold finite grey values to be normalised.")
    lo, hi = np.percentile(a, [low_percentile, high_percentile])
    if not hi > lo:
        raise BoneKitError(f"The image is flat between its {low_percentile} and {high_percentile} percentiles "
                           f"(value {lo:g}); there is nothing to normalise. Is it a blank image?")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------- geometry
def resample_to_detector(radiograph: Radiograph, geometry: DetectorGeometry, *, magnification: float | None = None,
                         centre: Sequence[float] | None = None) -> DetectorImage:
    """The radiograph on a model's detector: same pixel size at the isocentre, ``geometry.rows x columns``.

    A radiograph pixel of size ``p`` at the detector covers ``p / M`` at the isocentre, ``M`` being the
    radiograph's magnification (source-to-detector / source-to-object distance); the model's pixel covers
    ``geometry.pixel / geometry.magnification``. The image is resampled with bilinear interpolation, after a
    Gaussian blur of ``0.4 x step`` radiograph pixels along each axis that shrinks (step > 1), so that fine
    detail does not alias; outside the radiograph the value is its 0.5th percentile (its background).

    Parameters
    ----------
    radiograph : Radiograph
        The input (see :func:`read_radiograph`).
    geometry : DetectorGeometry
        The model's DRR geometry.
    magnification : float, optional
        The radiograph's magnification. Default: ``DistanceSourceToDetector / DistanceSourceToPatient`` when
        both are in ``radiograph.info``, else ``EstimatedRadiographicMagnificationFactor``, else 1 when the
        PixelSpacing is already calibrated to the patient (``info["spacing_plane"] == "patient"``), else the
        model's own ``geometry.magnification``.
    centre : (float, float), optional
        Radiograph (row, column), in pixels, put at the centre of the model image. Default: its centre.

    Returns
    -------
    DetectorImage
        The (rows, columns) float32 image and the magnification used, with where it came from.
    """
    info = radiograph.info
    if magnification is not None:
        used, how = float(magnification), "argument"
    elif "DistanceSourceToDetector" in info and "DistanceSourceToPatient" in info:
        used = info["DistanceSourceToDetector"] / info["DistanceSourceToPatient"]
        how = "DistanceSourceToDetector / DistanceSourceToPatient"
    elif "EstimatedRadiographicMagnificationFactor" in info:
        used, how = float(info["EstimatedRadiographicMagnificationFactor"]), "EstimatedRadiographicMagnificationFactor"
    elif info.get("spacing_plane") == "patient":
        used, how = 1.0, "1: PixelSpacing is calibrated to the patient"
    else:
        used, how = geometry.magnification, "assumed the model's (no distances in the file)"
    if not (math.isfinite(used) and used > 0):
        raise BoneKitError(f"The radiograph's magnification must be a positive number, got {used} ({how}).")
    rows, columns = radiograph.shape
    if centre is None:
        centre = ((rows - 1) / 2, (columns - 1) / 2)
    try:
        centre = tuple(float(c) for c in centre)
    except (TypeError, ValueError):
        centre = ()
    if len(centre) != 2 or not all(math.isfinite(c) for c in centre):
        raise BoneKitError("centre must be a (row, column) position in the radiograph's pixels.")

    model_iso = np.asarray(geometry.pixel, float) / geometry.magnification
    own_iso = np.asarray(radiograph.pixel, float) / used
    step = model_iso / own_iso                      # radiograph pixels per model pixel
    out_shape = (int(geometry.rows), int(geometry.columns))
    start = np.asarray(centre) - (np.asarray(out_shape) - 1) / 2 * step
    image = radiograph.image
    low = float(np.percentile(image, 0.5))

    # Only the part of the radiograph that is sampled (plus the blur's reach) is blurred.
    sigma = np.where(step > 1, 0.4 * step, 0.0)
    reach = np.ceil(4 * sigma) + 2
    first = np.floor(start - reach).astype(int)
    last = np.ceil(start + (np.asarray(out_shape) - 1) * step + reach).astype(int)
    lo = np.clip(first, 0, np.asarray(image.shape))
    hi = np.clip(last + 1, 0, np.asarray(image.shape))
    if np.any(hi <= lo):
        out = np.full(out_shape, low, np.float32)
    else:
        from scipy import ndimage

        part = image[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
        if np.any(sigma > 0):
            part = ndimage.gaussian_filter(part, sigma=tuple(sigma), mode="nearest")
        out = ndimage.affine_transform(part, step, offset=start - lo, output_shape=out_shape, order=1,
                                       mode="constant", cval=low, prefilter=False).astype(np.float32)
    return DetectorImage(out, float(used), how, (float(step[0]), float(step[1])), (centre[0], centre[1]))

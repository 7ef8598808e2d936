"""Reading and writing volumes (NIfTI, NRRD, MetaImage, DICOM series) with exact geometry.

All readers go through SimpleITK/ITK, the same library Slicer uses, so a file
opens with the same physical positions here and in Slicer. DICOM series are
sorted by slice position and the modality LUT (Rescale Slope/Intercept) is
applied, so CT comes out in Hounsfield units.

Writers are atomic: the data go to a temporary file in the destination folder
that is renamed over the destination only once complete, so a crash never
leaves a half-written file and never destroys an existing one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import BoneKitError
from .volume import Volume

#: Single-file formats BoneKit writes (ITK picks the format from the extension).
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")
READABLE_HINT = ("NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series "
                 "(a folder, or one file of the series)")


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in (".seg.nrrd", ".nii.gz"):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def read_volume(path, *, spacing: Sequence[float] | None = None, series_uid: str | None = None,
                modality: str | None = None, units: str | None = None) -> Volume:
    """Read a 3D image file or DICOM series into a :class:`Volume`.

    Parameters
    ----------
    path : str or Path
        An image file, a DICOM folder, or one file of a DICOM series (the whole series is read).
    spacing : three floats, optional
        Voxel size in mm (i, j, k) that replaces the header's, for files whose header is wrong.
        Origin and direction are kept.
    series_uid : str, optional
        SeriesInstanceUID to read when a DICOM folder holds several series.
    modality, units : str, optional
        Override what the file says (or does not say) about its contents.

    Returns
    -------
    Volume
        Values as stored (after the DICOM rescale to HU); geometry in LPS mm.

    Raises
    ------
    BoneKitError
        Missing or unreadable path, not an image, not 3D, several DICOM series without a UID.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise BoneKitError(f"{path}: no such file or folder.")
    if path.is_dir():
        volume = _read_dicom_series(path, series_uid)
    else:
        volume = _read_file(path, series_uid)
    if spacing is not None:
        volume = volume.with_spacing(spacing)
    if modality is not None:
        volume.modality = modality
    if units is not None:
        volume.units = units
    return volume


def _read_file(path: Path, series_uid: str | None) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise BoneKitError(f"{path}: not a readable image. BoneKit reads {READABLE_HINT}.") from None
    if _is_dicom(path, reader):
        uid = series_uid or _meta(reader, "0020|000e")
        return _read_dicom_series(path.parent, uid or None, single_file=path)
    if reader.GetDimension() != 3:
        raise BoneKitError(
            f"{path}: a 3D image is needed, but this file is {reader.GetDimension()}D "
            f"(size {reader.GetSize()}).")
    _check_nifti_length(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise BoneKitError(f"{path}: the file is damaged or truncated ({_first_line(exc)}).") from None
    volume = Volume.from_sitk(image, metadata={"source": str(path)})
    volume.modality = _meta(reader, "modality") or None
    return volume


def _check_nifti_length(path: Path) -> None:
    """Refuse a NIfTI file shorter than its header says: ITK's reader fills the missing voxels with
    zeros without a word, and a truncated scan (an interrupted copy) would be measured as if whole."""
    import gzip
    import struct
    import zlib

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(352)
            if len(header) < 348:
                raise BoneKitError(f"{path}: the file is truncated (its NIfTI header is incomplete).")
            for order in "<>":
                if struct.unpack(order + "i", header[:4])[0] in (348, 540):
                    break
            else:
                return   # not NIfTI-1 or -2 after all: let ITK judge
            if struct.unpack(order + "i", header[:4])[0] != 348:
                return   # NIfTI-2: ITK reads it whole or fails
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            voxels = int(np.prod([max(1, d) for d in dims[1:1 + max(1, min(dims[0], 7))]], dtype=np.int64))
            expected = max(offset, 352) + voxels * max(bitpix, 8) // 8
            length = len(header)
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                length += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise BoneKitError(f"{path}: the file is damaged or truncated ({exc}).") from None
    if length < expected:
        raise BoneKitError(f"{path}: the file is truncated: its header describes {expected} bytes of image but it "
                           f"holds {length}. Copy or export it again.")


def _read_dicom_series(folder: Path, series_uid: str | None, single_file: Path | None = None) -> Volume:
    import SimpleITK as sitk

    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # our own message replaces ITK's
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if not series:
        raise BoneKitError(f"{folder}: no DICOM image series found in this folder. "
                           f"Point to the folder that holds the .dcm slices, or to an image file.")
    if series_uid is None and single_file is None and len(series) > 1:
        listing = "; ".join(f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
                            for uid in series)
        raise BoneKitError(f"{folder}: holds {len(series)} DICOM series; choose one with its "
                           f"SeriesInstanceUID (--series UID): {listing}")
    if series_uid is not None and series_uid not in series:
        if single_file is None:
            raise BoneKitError(f"{folder}: no series with UID {series_uid}; present: {', '.join(series)}")
        files = [str(single_file)]
    else:
        uid = series_uid if series_uid is not None else series[0]
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if single_file is not None and str(single_file) not in files and \
                str(single_file.resolve()) not in [str(Path(f).resolve()) for f in files]:
            files = [str(single_file)]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise BoneKitError(f"{folder}: the DICOM series could not be read ({_first_line(exc)}).") from None
    if image.GetDimension() != 3:
        raise BoneKitError(f"{folder}: the DICOM series is not a 3D image.")
    _check_slice_positions(reader, image, folder)
    tags = {name: reader.GetMetaData(0, tag).strip() if reader.HasMetaDataKey(0, tag) else ""
            for name, tag in (("modality", "0008|0060"), ("series_uid", "0020|000e"),
                              ("series_description", "0008|103e"), ("kvp", "0018|0060"),
                              ("kernel", "0018|1210"), ("manufacturer", "0008|0070"),
                              ("slice_thickness", "0018|0050"))}
    modality = tags.pop("modality") or None
    units = "HU" if modality == "CT" else None
    metadata = {"source": str(folder if single_file is None or len(files) > 1 else single_file),
                "dicom_files": len(files), **{k: v for k, v in tags.items() if v}}
    return Volume.from_sitk(image, modality=modality, units=units, metadata=metadata)


def _check_slice_positions(reader, image, folder: Path) -> None:
    """Refuse series whose slices are not evenly spaced along the slice normal (gaps, tilt)."""
    n = image.GetSize()[2]
    if n < 3:
        return
    positions = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return
        positions.append([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])
    positions = np.asarray(positions)
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    along = positions @ normal
    steps = np.diff(along)
    if np.ptp(steps) > 0.01 * max(abs(np.median(steps)), 1e-6) + 1e-3:
        raise BoneKitError(
            f"{folder}: the slices are not evenly spaced (steps from {steps.min():.3f} to "
            f"{steps.max():.3f} mm: missing slices or a mixed series). Export a complete series.")
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    if np.abs(offsets).max() > 0.01 * image.GetSpacing()[0] + 1e-3:
        raise BoneKitError(f"{folder}: the series has a gantry tilt or sheared slices, which BoneKit "
                           f"does not read; resample it in Slicer (Volumes > 'Harden transform') first.")


def _is_dicom(path: Path, reader) -> bool:
    with open(path, "rb") as f:
        if f.read(132)[128:132] == b"DICM":
            return True
    return reader.HasMetaDataKey("0008|0016") or reader.HasMetaDataKey("0020|000d")


def _meta(reader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "Exception" not in line and ".cxx" not in line]
    return (useful or lines or ["unknown error"])[-1][:200]


#: the process's file-creation mask (it can only be read by setting it)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BoneKitError(f"{parent}: the output folder does not exist.")
    suffix = suffix if suffix is not None else _extension(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():   # mkstemp makes the file private (0600): give it the mode any new file gets
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_volume(volume: Volume, path, *, compress: bool = True) -> Path:
    """Write a volume atomically to ``.nii.gz``, ``.nii``, ``.nrrd``/``.seg.nrrd`` or ``.mha``.

    The array is written with its dtype and the full geometry. NRRD and MetaImage keep
    the matrix in double precision; NIfTI stores it in single precision (format limit).
    """
    path = Path(path).expanduser()
    ext = _extension(path)
    if ext not in WRITABLE_EXTENSIONS:
        raise BoneKitError(f"{path}: cannot write '{ext or 'no extension'}'; use one of "
                           f"{', '.join(WRITABLE_EXTENSIONS)}.")
    import SimpleITK as sitk

    array = volume.array
    if array.dtype == bool:
        volume = volume.with_array(array.astype(np.uint8))
    if array.dtype.kind not in "biuf":
        raise BoneKitError(f"Cannot write voxels of type {array.dtype}.")
    image = volume.to_sitk()
    with atomic_path(path, ".nrrd" if ext == ".seg.nrrd" else ext) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def write_json(data: Any, path) -> Path:
    """Write JSON atomically (numpy scalars and arrays are converted; NaN becomes null)."""
    path = Path(path).expanduser()
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n"
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(text)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return obj

"""Reading real radiographs for the synthetic-CT network: values, pixel size, orientation, resampling.

Truths: the real NEMA WG04 CR files against their independently decoded pixels (a PNG decode of the
JPEG-LS chest, pydicom's decode of the uncompressed hip); small DICOMs written here with an asymmetric
pattern whose flips are known; squares of known physical size at known magnification.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.sct import radiograph as rg
from bonekit.sct.drr import DetectorGeometry
from bonekit.sct.radiograph import Radiograph, normalise, read_radiograph, resample_to_detector

XRAY = Path(os.environ.get("BONEKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "xray"
CHEST = "WG04_RG1_JLSN_chest_PA_CR.dcm"
CHEST_PNG = "WG04_RG1_chest_PA_CR_uint16.png"
HIP = "WG04_RG2_UNC_hip_CR.dcm"

PATTERN = (np.arange(5 * 7, dtype=np.uint16).reshape(5, 7) * 37 + 11)   # 5 rows x 7 columns, no symmetry


def _xray(name: str) -> Path:
    path = XRAY / name
    if not path.is_file():
        pytest.skip(f"real radiograph {name} not found in {XRAY} (the shared test data is absent)")
    return path


@pytest.fixture(scope="module")
def chest():
    return read_radiograph(_xray(CHEST), pixel_mm=0.175)


def _dicom(path: Path, pixels: np.ndarray = PATTERN, **tags) -> Path:
    """A small single-frame DICOM radiograph (DX, MONOCHROME2, 0.5 x 0.25 mm unless ``tags`` say otherwise)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"   # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = pixels.shape[-2:] if pixels.ndim < 4 else pixels.shape[-3:-1]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.25]
    for key, value in tags.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover (pydicom 2.4)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


# ---------------------------------------------------------------------------------------------- real files
def test_real_chest_without_pixel_size_says_how_to_give_it():
    with pytest.raises(BoneKitError, match="pixel spacing") as err:
        read_radiograph(_xray(CHEST))
    assert "pixel_mm=" in str(err.value) and "--pixel MM" in str(err.value)


def test_real_chest_decodes_jpeg_ls_and_inverts_monochrome1(chest):
    from PIL import Image

    raw = np.array(Image.open(_xray(CHEST_PNG)))
    assert raw.dtype == np.uint16
    assert chest.image.shape == raw.shape == (1955, 1841)    # rows x columns (Rows 1955, Columns 1841)
    assert chest.image.dtype == np.float32
    np.testing.assert_array_equal(chest.image, (2 ** 15 - 1) - raw.astype(np.float32))
    assert chest.pixel == (0.175, 0.175)
    assert chest.view == "pa"
    info = chest.info
    assert info["photometric_interpretation"] == "MONOCHROME1" and info["inverted"] is True
    assert info["flips"] == [] and info["PatientOrientation"] == "L\\F" and info["orientation_known"]
    assert info["view_source"] == "ViewPosition" and info["spacing_source"] == "pixel_mm argument"
    assert info["DistanceSourceToDetector"] == 1996.0
    json.dumps(info)


def test_real_chest_as_a_one_slice_volume(chest):
    volume = chest.to_volume()
    assert volume.shape == (1, 1955, 1841)
    np.testing.assert_allclose(volume.spacing, [0.175, 0.175, 1.0])
    assert np.array_equal(volume.array[0], chest.image)
    # PA: columns towards the patient's left, rows towards the feet, the beam anterior (DRR convention).
    np.testing.assert_allclose(volume.direction, [[1, 0, 0], [0, 0, -1], [0, -1, 0]], atol=1e-12)


def test_real_hip_uncompressed_monochrome2_without_orientation():
    pydicom = pytest.importorskip("pydicom")
    path = _xray(HIP)
    hip = read_radiograph(path)
    raw = pydicom.dcmread(path).pixel_array
    assert hip.image.shape == raw.shape == (2140, 1760)
    np.testing.assert_array_equal(hip.image, raw.astype(np.float32))
    assert hip.pixel == (0.2, 0.2) and hip.info["spacing_source"] == "PixelSpacing"
    assert hip.info["inverted"] is False and hip.info["flips"] == []
    assert hip.info["orientation_known"] is False and "unknown" in hip.info["orientation"]
    assert hip.info["PatientOrientation"] is None and hip.view is None


def test_real_png_needs_and_takes_a_pixel_size():
    path = _xray(CHEST_PNG)
    with pytest.raises(BoneKitError, match="no pixel spacing"):
        read_radiograph(path)
    image = read_radiograph(path, pixel_mm=(0.175, 0.2), view="PA")
    from PIL import Image

    raw = np.array(Image.open(path))
    assert raw.max() > 255                                # 16-bit values survive
    np.testing.assert_array_equal(image.image, raw.astype(np.float32))
    assert image.pixel == (0.175, 0.2) and image.view == "pa" and image.info["format"] == "PNG"
    assert image.info["flips"] == [] and "assumed" in image.info["orientation"]


# ---------------------------------------------------------------------------------------------- synthetic DICOM
def test_monochrome1_is_inverted_with_bits_stored(tmp_path):
    path = _dicom(tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1", BitsStored=12, HighBit=11)
    image = read_radiograph(path)
    np.testing.assert_array_equal(image.image, 4095.0 - PATTERN)
    assert image.info["inverted"] is True and image.info["photometric_interpretation"] == "MONOCHROME1"


def test_inversion_formula():
    a = PATTERN.astype(np.float64)
    np.testing.assert_array_equal(rg._invert(a, 12, False), 4095 - a)
    np.testing.assert_array_equal(rg._invert(a, None, False), a.max() + a.min() - a)
    np.testing.assert_array_equal(rg._invert(a, 12, True), -1 - a)


def test_monochrome2_values_and_spacing_unchanged(tmp_path):
    image = read_radiograph(_dicom(tmp_path / "m2.dcm"))
    np.testing.assert_array_equal(image.image, PATTERN)
    assert image.pixel == (0.5, 0.25) and image.info["inverted"] is False
    assert image.info["orientation_known"] is False


def test_dicom_is_recognised_by_content_not_extension(tmp_path):
    for name in ("radiograph.png", "radiograph"):
        image = read_radiograph(_dicom(tmp_path / name))
        assert image.info["format"] == "DICOM"
        np.testing.assert_array_equal(image.image, PATTERN)


def test_rgb_dicom_is_refused(tmp_path):
    rgb = np.stack([PATTERN.astype(np.uint8)] * 3, axis=-1)[None]
    path = _dicom(tmp_path / "rgb.dcm", rgb, PhotometricInterpretation="RGB", SamplesPerPixel=3,
                  PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7)
    with pytest.raises(BoneKitError, match="photometric interpretation") as err:
        read_radiograph(path)
    assert "RGB" in str(err.value) and "greyscale" in str(err.value)


def test_ct_modality_is_refused(tmp_path):
    with pytest.raises(BoneKitError, match="is a CT image, not a radiograph"):
        read_radiograph(_dicom(tmp_path / "ct.dcm", Modality="CT"))


def test_multi_frame_is_refused(tmp_path):
    path = _dicom(tmp_path / "cine.dcm", np.stack([PATTERN, PATTERN]), NumberOfFrames=2)
    with pytest.raises(BoneKitError, match="2 frames"):
        read_radiograph(path)


@pytest.mark.parametrize("orientation, view_position, view, expected, flips", [
    ("L\\F", "AP", None, PATTERN, []),
    ("R\\F", "AP", None, np.fliplr(PATTERN), ["columns"]),
    ("L\\H", "AP", None, np.flipud(PATTERN), ["rows"]),
    ("R\\H", "PA", None, PATTERN[::-1, ::-1], ["rows", "columns"]),
    ("A\\F", "LL", None, np.fliplr(PATTERN), ["columns"]),
    ("P\\FA", "RL", None, PATTERN, []),
    ("A\\F", None, "lat", np.fliplr(PATTERN), ["columns"]),
    ("F\\L", "AP", None, PATTERN.T, ["transpose"]),
    ("H\\R", None, "ap", PATTERN.T[::-1, ::-1], ["transpose", "rows", "columns"]),
    # no view: rows to F, columns to L (for L/R) or P (for A/P)
    ("R\\F", None, None, np.fliplr(PATTERN), ["columns"]),
    ("A\\H", None, None, PATTERN[::-1, ::-1], ["rows", "columns"]),
])
def test_patient_orientation_brings_the_image_to_bonekit_layout(tmp_path, orientation, view_position, view,
                                                                 expected, flips):
    path = _dicom(tmp_path / "o.dcm", PatientOrientation=orientation, ViewPosition=view_position)
    image = read_radiograph(path, view=view)
    np.testing.assert_array_equal(image.image, expected)
    assert image.info["flips"] == flips and image.info["orientation_known"] is True
    assert image.info["PatientOrientation"] == orientation
    wanted = view or {"AP": "ap", "PA": "pa", "LL": "lat", "RL": "rlat", None: None}[view_position]
    assert image.view == wanted
    # a transpose swaps the (row, column) pixel size (0.5, 0.25)
    assert image.pixel == ((0.25, 0.5) if "transpose" in flips else (0.5, 0.25))


def test_view_argument_wins_over_view_position(tmp_path):
    path = _dicom(tmp_path / "v.dcm", PatientOrientation="L\\F", ViewPosition="PA")
    image = read_radiograph(path, view="ap")
    assert image.view == "ap" and image.info["view_source"] == "argument"


def test_view_contradicting_patient_orientation(tmp_path):
    path = _dicom(tmp_path / "v.dcm", PatientOrientation="A\\F", ViewPosition="AP")
    with pytest.raises(BoneKitError, match="not a ap view"):
        read_radiograph(path, view="ap")
    image = read_radiograph(path)            # a wrong ViewPosition is ignored, the codes still apply
    assert image.view is None and "ignored" in image.info["view_note"]
    np.testing.assert_array_equal(image.image, np.fliplr(PATTERN))


def test_unknown_view_is_refused(tmp_path):
    with pytest.raises(BoneKitError, match="Unknown view"):
        read_radiograph(_dicom(tmp_path / "v.dcm"), view="oblique")


def test_imager_pixel_spacing_used_when_pixel_spacing_missing_or_zero(tmp_path):
    image = read_radiograph(_dicom(tmp_path / "a.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.143, 0.15]))
    assert image.pixel == (0.143, 0.15) and image.info["spacing_source"] == "ImagerPixelSpacing"
    image = read_radiograph(_dicom(tmp_path / "b.dcm", PixelSpacing=[0, 0], ImagerPixelSpacing=[0.1, 0.1]))
    assert image.pixel == (0.1, 0.1) and image.info["spacing_source"] == "ImagerPixelSpacing"
    with pytest.raises(BoneKitError, match="no pixel spacing"):
        read_radiograph(_dicom(tmp_path / "c.dcm", PixelSpacing=None))


def test_explicit_pixel_size_overrides_the_header(tmp_path):
    path = _dicom(tmp_path / "p.dcm")
    image = read_radiograph(path, pixel_mm=0.3)
    assert image.pixel == (0.3, 0.3) and image.info["spacing_source"] == "pixel_mm argument"
    assert image.info["header_spacing_mm"] == [0.5, 0.25]
    assert read_radiograph(path, pixel_mm=(0.1, 0.2)).pixel == (0.1, 0.2)
    with pytest.raises(BoneKitError, match="positive"):
        read_radiograph(path, pixel_mm=-1)


def test_geometry_tags_are_recorded(tmp_path):
    path = _dicom(tmp_path / "g.dcm", DistanceSourceToDetector="1000", DistanceSourceToPatient="800",
                  EstimatedRadiographicMagnificationFactor="1.25")
    info = read_radiograph(path).info
    assert info["DistanceSourceToDetector"] == 1000.0 and info["DistanceSourceToPatient"] == 800.0
    assert info["EstimatedRadiographicMagnificationFactor"] == 1.25


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(BoneKitError, match="no such file"):
        read_radiograph(tmp_path / "absent.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not an image at all" * 50)
    with pytest.raises(BoneKitError, match="cannot read"):
        read_radiograph(junk)


# ---------------------------------------------------------------------------------------------- plain images
def test_png_greyscale_and_grey_rgb_accepted_colour_refused(tmp_path):
    from PIL import Image

    grey = PATTERN.astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_radiograph(tmp_path / "g.png", pixel_mm=0.2).image, grey)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb_grey.tif")
    np.testing.assert_array_equal(read_radiograph(tmp_path / "rgb_grey.tif", pixel_mm=0.2).image, grey)
    colour = np.stack([grey, grey, grey // 2], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(BoneKitError, match="colour image"):
        read_radiograph(tmp_path / "colour.png", pixel_mm=0.2)


def test_png_is_not_modified_and_to_volume_spacing():
    image = Radiograph(PATTERN, (0.5, 0.25))
    volume = image.to_volume()
    assert volume.shape == (1, 5, 7)
    np.testing.assert_allclose(volume.spacing, [0.25, 0.5, 1.0])     # (column, row, 1)
    np.testing.assert_allclose(volume.direction, np.eye(3))          # no view: identity directions


# ---------------------------------------------------------------------------------------------- normalise
def test_normalise_maps_percentiles_to_0_and_1():
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 300, (64, 80))
    before = image.copy()
    out = normalise(image, 1, 99)
    lo, hi = np.percentile(image, [1, 99])
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    np.testing.assert_allclose(out, np.clip((image - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert np.mean(out == 0) == pytest.approx(0.01, abs=0.002)
    assert np.array_equal(image, before)


def test_normalise_refuses_a_flat_image():
    with pytest.raises(BoneKitError, match="flat"):
        normalise(np.full((10, 10), 7.0))


# ---------------------------------------------------------------------------------------------- resampling
GEOMETRY = DetectorGeometry(sad=541.0, sid=949.0, rows=128, columns=96, pixel=(1.75, 1.75))
ISO = 1.75 / (949.0 / 541.0)          # model pixel at the isocentre, mm


def _square(shape, centre, side_px, pixel=(0.2, 0.2), info=None) -> Radiograph:
    image = np.zeros(shape, np.float32)
    r0, c0 = (int(round(c - side_px / 2)) for c in centre)
    image[r0:r0 + side_px, c0:c0 + side_px] = 1.0
    return Radiograph(image, pixel, "ap", dict(info or {}))


def _measure(image):
    mask = image > 0.5
    rows, cols = np.nonzero(mask)
    return mask.any(axis=1).sum(), mask.any(axis=0).sum(), rows.mean(), cols.mean()


def test_square_of_known_size_at_known_magnification():
    # a 50 mm square at magnification 1.5: 75 mm = 375 pixels of 0.2 mm on the detector, off-centre
    radiograph = _square((1000, 1200), (400, 700), 375)
    out = resample_to_detector(radiograph, GEOMETRY, magnification=1.5, centre=(399.5, 699.5))
    assert out.image.shape == (128, 96) and out.image.dtype == np.float32
    assert out.magnification == 1.5 and out.magnification_source == "argument"
    height, width, row, col = _measure(out.image)
    assert abs(height - 50 / ISO) <= 1 and abs(width - 50 / ISO) <= 1
    assert row == pytest.approx(63.5, abs=0.5) and col == pytest.approx(47.5, abs=0.5)


def test_same_magnification_as_the_model_when_the_file_says_nothing():
    radiograph = _square((800, 800), (400, 400), 300)              # 60 mm on the detector
    out = resample_to_detector(radiograph, GEOMETRY)
    assert out.magnification == pytest.approx(949.0 / 541.0) and "assumed" in out.magnification_source
    height, width, _, _ = _measure(out.image)
    assert abs(height - 60 / 1.75) <= 1 and abs(width - 60 / 1.75) <= 1


def test_magnification_from_source_distances():
    info = {"DistanceSourceToDetector": 1000.0, "DistanceSourceToPatient": 800.0,
            "EstimatedRadiographicMagnificationFactor": 9.0}      # the distances win
    radiograph = _square((800, 800), (400, 400), 375, info=info)   # 75 mm on the detector, 60 mm in the patient
    out = resample_to_detector(radiograph, GEOMETRY)
    assert out.magnification == pytest.approx(1.25)
    assert out.magnification_source == "DistanceSourceToDetector / DistanceSourceToPatient"
    height, width, _, _ = _measure(out.image)
    assert abs(height - 60 / ISO) <= 1 and abs(width - 60 / ISO) <= 1
    info = {"EstimatedRadiographicMagnificationFactor": 1.25}
    out = resample_to_detector(_square((800, 800), (400, 400), 375, info=info), GEOMETRY)
    assert out.magnification == 1.25 and abs(_measure(out.image)[0] - 60 / ISO) <= 1


def test_calibrated_pixel_spacing_means_no_further_magnification(tmp_path):
    path = _dicom(tmp_path / "cal.dcm", PixelSpacing=[0.4, 0.4], ImagerPixelSpacing=[0.5, 0.5])
    radiograph = read_radiograph(path)
    assert radiograph.info["spacing_plane"] == "patient"
    assert resample_to_detector(radiograph, GEOMETRY).magnification == 1.0


def test_padding_uses_the_low_value_and_downsampling_does_not_alias():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1000, (400, 400)).astype(np.float32)
    radiograph = Radiograph(image, (0.2, 0.2))
    out = resample_to_detector(radiograph, GEOMETRY, magnification=1.0, centre=(0, 0))
    low = np.float32(np.percentile(image, 0.5))
    assert np.all(out.image[:50, :30] == low)             # far outside the radiograph
    # a 1-pixel checkerboard shrunk ~5x: without the blur, bilinear sampling would return 0s and 1s
    board = Radiograph((np.indices((600, 600)).sum(0) % 2).astype(np.float32), (0.2, 0.2))
    out = resample_to_detector(board, GEOMETRY, magnification=1.0)
    assert out.step[0] == pytest.approx(ISO / 0.2)
    inside = out.image[10:-10, 10:-10]                     # the board is 600 x 600, 128 x 96 pixels cover ~640
    assert abs(inside.mean() - 0.5) < 0.02 and inside.std() < 0.05


def test_one_slice_volume_files_are_radiographs(tmp_path):
    """A DRR written by `bonekit drr` (one-slice NRRD) reads back with its pixel size; a CT is refused."""
    from bonekit.io import write_volume
    from bonekit.sct.drr import DRR, DetectorGeometry, VIEWS
    from bonekit.volume import Volume

    image = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    g = DetectorGeometry(rows=12, columns=10, pixel=(1.5, 1.25))
    write_volume(DRR(image, VIEWS["ap"], g, np.zeros(3)).to_volume(), tmp_path / "drr_ap.nrrd")
    r = read_radiograph(tmp_path / "drr_ap.nrrd", view="ap")
    np.testing.assert_array_equal(r.image, image)
    assert r.pixel == pytest.approx((1.5, 1.25)) and r.view == "ap"
    assert read_radiograph(tmp_path / "drr_ap.nrrd", pixel_mm=0.5).pixel == (0.5, 0.5)
    write_volume(Volume(np.zeros((3, 4, 5), np.float32)), tmp_path / "ct.nrrd")
    with pytest.raises(BoneKitError, match="not a CT volume"):
        read_radiograph(tmp_path / "ct.nrrd")

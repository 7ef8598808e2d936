"""Slicer's GrowCut (BoneKitLib.vtkGrowCut on vtkImageGrowCutSegment) against the core's itk.FastGrowCut.

Both are FastGrowCut; the module segments with the first, the core's own tests and the command
line with the second, so they must agree voxel for voxel, with and without the exclusion mask.
"""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("itk")

from slicer_harness import REPOSITORY  # noqa: E402,F401  (puts BoneKitLib on sys.path)

from BoneKitLib import vtkGrowCut  # noqa: E402
from bonekit import BoneKitError  # noqa: E402
from bonekit.segment import SegmentationParameters, itk_growcut, spine_seeds, vertebra_seeds  # noqa: E402


@pytest.fixture(scope="module")
def spineCrop():
    """The first pass of segment_vertebrae on a three-vertebra phantom: smoothed crop, seeds, points."""
    from bonekit.phantom import spine_phantom

    phantom = spine_phantom(vertebrae=("L1", "L2", "L3"), bvtv=(0.12,), spacing_mm=(0.75, 0.75, 1.25),
                            truth_morphometry=False)
    ct = phantom.ct
    points = {v["label"]: ct.physical_to_index(np.asarray(v["centre_lps_mm"]))[::-1]
              for v in phantom.truth["vertebrae"]}
    # a crop around the middle vertebra, as segment_vertebrae crops around the points
    centre = np.rint(points[21]).astype(int)
    box = tuple(slice(max(c - h, 0), c + h) for c, h in zip(centre, (40, 60, 60)))
    origin = np.array([s.start for s in box])
    intensity = ct.array[box].astype(np.float32)
    pointsInCrop = {v: p - origin for v, p in points.items() if np.all(p - origin >= 0)
                    and np.all(p - origin < intensity.shape)}
    params = SegmentationParameters()
    seeds = spine_seeds(intensity, ct.spacing_kji, pointsInCrop, params)
    return intensity, seeds, tuple(ct.spacing), pointsInCrop, params, ct.spacing_kji


def test_both_passes_give_identical_labels(spineCrop):
    intensity, seeds, spacing, points, params, spacingKji = spineCrop
    assert set(np.unique(seeds)) == {0, 1, 2} and len(points) >= 2
    first = itk_growcut(intensity, seeds, spacing)
    assert np.array_equal(vtkGrowCut(intensity, seeds, spacing), first)
    assert set(np.unique(first)) == {1, 2}  # every voxel reached: spine or background
    spine = first == 1
    secondSeeds = vertebra_seeds(spine, spacingKji, points, params, {v: n + 1 for n, v in enumerate(sorted(points))})
    exclude = (~spine).astype(np.uint8)
    second = itk_growcut(intensity, secondSeeds, spacing, exclude)
    assert np.array_equal(vtkGrowCut(intensity, secondSeeds, spacing, exclude), second)
    assert not second[~spine].any()  # excluded voxels come out 0
    assert len(np.unique(second[spine])) >= len(points)  # each vertebra grew


def test_exclusion_mask_blocks_growth_and_erases_seeds():
    """A wall of excluded voxels: nothing passes it, excluded voxels (seeds included) come out 0."""
    rng = np.random.default_rng(1)
    intensity = rng.normal(0.0, 10.0, (12, 16, 20)).astype(np.float32)
    seeds = np.zeros(intensity.shape, np.uint8)
    seeds[6, 8, 3] = 1
    seeds[6, 8, 16] = 2
    exclude = np.zeros(intensity.shape, np.uint8)
    exclude[:, :, 9:11] = 1
    exclude[6, 8, 16] = 1  # the only seed beyond the wall is excluded too
    for grow in (itk_growcut, vtkGrowCut):
        labels = grow(intensity, seeds, (0.5, 0.5, 1.0), exclude)
        assert not labels[exclude > 0].any()
        assert (labels[:, :, :9] == 1).all()  # in front of the wall: seed 1 everywhere
        assert not labels[:, :, 11:].any()  # behind it: unreachable, 0
        unmasked = grow(intensity, seeds, (0.5, 0.5, 1.0))
        assert set(np.unique(unmasked)) == {1, 2}


def test_too_small_an_image_is_refused():
    with pytest.raises(BoneKitError, match="at least 3 voxels"):
        vtkGrowCut(np.zeros((2, 5, 5), np.float32), np.ones((2, 5, 5), np.uint8), (1.0, 1.0, 1.0))

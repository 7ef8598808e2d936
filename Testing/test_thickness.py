"""Local thickness against analytic shapes and a brute-force evaluation of its definition."""

import numpy as np
import pytest
from scipy import ndimage

from bonekit import BoneKitError
from bonekit.thickness import local_thickness, thickness_stats


def brute_force(binary):
    """max over all centres c with |x - c|^2 <= d2(c) of 2 sqrt(d2(c)): the definition, evaluated literally."""
    d2 = np.rint(ndimage.distance_transform_edt(binary) ** 2)
    centres = np.argwhere(binary)
    r2 = d2[binary]
    out = np.full(binary.shape, np.nan)
    for x in np.argwhere(binary):
        inside = ((centres - x) ** 2).sum(axis=1) <= r2
        out[tuple(x)] = 2 * np.sqrt(r2[inside].max())
    return out


@pytest.mark.parametrize("t, expected", [(2, 2), (3, 4), (4, 4), (5, 6), (8, 8)])
def test_plates_follow_bonej_discretisation(t, expected):
    # BoneJ: even plates come out t voxels thick, odd plates t + 1
    plate = np.zeros((24, 24, 30), bool)
    plate[:, :, 10:10 + t] = True
    mean, sd = thickness_stats(local_thickness(plate, voxel_size=0.5))
    assert mean == pytest.approx(expected * 0.5) and sd == pytest.approx(0, abs=1e-12)


def test_sphere_diameter():
    z, y, x = np.mgrid[-12:13, -12:13, -12:13]
    sphere = x ** 2 + y ** 2 + z ** 2 <= 100
    th = local_thickness(sphere)
    # the deepest centre is sqrt(101) voxels from the nearest background voxel centre
    assert np.nanmax(th) == pytest.approx(2 * np.sqrt(101))
    assert np.isnan(th[~sphere]).all()


def test_matches_the_definition_on_a_random_structure():
    rng = np.random.default_rng(5)
    structure = ndimage.gaussian_filter(rng.standard_normal((18, 18, 18)), 1.5) > 0.05
    np.testing.assert_allclose(local_thickness(structure), brute_force(structure), equal_nan=True)


def test_periodic_tile_equals_the_middle_of_a_tiled_block():
    rng = np.random.default_rng(6)
    tile = ndimage.gaussian_filter(rng.standard_normal((16, 16, 16)), 1.5, mode="wrap") > 0.1
    periodic = local_thickness(tile, periodic=True)
    tiled = local_thickness(np.tile(tile, (3, 3, 3)))
    np.testing.assert_allclose(periodic, tiled[16:32, 16:32, 16:32], equal_nan=True)


def test_refuses_empty_and_full_structures():
    with pytest.raises(BoneKitError, match="empty"):
        local_thickness(np.zeros((5, 5, 5), bool))
    with pytest.raises(BoneKitError, match="no background"):
        local_thickness(np.ones((5, 5, 5), bool))

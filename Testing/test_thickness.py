"""Local thickness against analytic shapes and a brute-force evaluation of its definition."""

import numpy as np
import pytest
from scipy import ndimage

from bonekit import BoneKitError
from bonekit.thickness import local_thickness, thickness_stats


def brute_force(binary, spacing=(1.0, 1.0, 1.0)):
    """max over all centres c with |x - c|^2 <= d2(c) of 2 sqrt(d2(c)), d2(c) the squared distance
    (mm) from c to the nearest background voxel centre: the definition, evaluated literally."""
    s = np.asarray(spacing, float)
    fg, bg = np.argwhere(binary) * s, np.argwhere(~binary) * s
    d2 = np.array([((bg - c) ** 2).sum(axis=1).min() for c in fg])
    out = np.full(binary.shape, np.nan)
    for i, x in zip(np.argwhere(binary), fg):
        inside = ((fg - x) ** 2).sum(axis=1) <= d2 * (1 + 1e-12)
        out[tuple(i)] = 2 * np.sqrt(d2[inside].max())
    return out


def bonej_map(binary):
    """The whole of BoneJ's map, literally: every structure voxel's ball writes its r^2 into every
    voxel it covers, background included (max); diameters 2 sqrt(r^2); a voxel of the structure
    with an in-image 26-neighbour of value 0 takes the mean diameter of its interior 26-neighbours
    (non-zero, no zero 26-neighbour) if it has any; NaN off the structure."""
    d2 = np.rint(ndimage.distance_transform_edt(binary) ** 2)  # integer squared distances
    r2 = np.zeros(binary.shape)
    for c in np.argwhere(binary):
        v, r = d2[tuple(c)], int(np.sqrt(d2[tuple(c)]))
        box = tuple(slice(max(a - r, 0), min(a + r + 1, n)) for a, n in zip(c, binary.shape))
        grid = np.ogrid[box]
        inside = sum((g - a) ** 2 for g, a in zip(grid, c)) <= v
        r2[box] = np.where(inside, np.maximum(r2[box], v), r2[box])
    diameter = 2 * np.sqrt(r2)
    cube = np.ones((3, 3, 3))
    near_zero = ndimage.convolve((diameter == 0).astype(float), cube, mode="constant") > 0
    interior = (diameter != 0) & ~near_zero
    total = ndimage.convolve(np.where(interior, diameter, 0.0), cube, mode="constant")
    count = ndimage.convolve(interior.astype(float), cube, mode="constant")
    cleaned = np.where(near_zero & (count > 0), total / np.maximum(count, 1), diameter)
    return np.where(binary, cleaned, np.nan)


def blobs(shape, sigma, level, seed, ball=None):
    """A smooth random structure, with a ball of radius ``ball`` voxels at its centre if given."""
    rng = np.random.default_rng(seed)
    structure = ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > level
    if ball:
        grid = np.indices(shape) - (np.array(shape) // 2)[:, None, None, None]
        structure |= (grid ** 2).sum(axis=0) <= ball ** 2
    return structure


@pytest.mark.parametrize("t, expected", [(2, 2), (3, 4), (4, 4), (5, 6), (8, 8)])
def test_plates_follow_bonej_discretisation(t, expected):
    # BoneJ: even plates come out t voxels thick, odd plates t + 1
    plate = np.zeros((24, 24, 30), bool)
    plate[:, :, 10:10 + t] = True
    mean, sd = thickness_stats(local_thickness(plate, spacing=0.5))
    assert mean == pytest.approx(expected * 0.5) and sd == pytest.approx(0, abs=1e-12)


def test_sphere_diameter():
    z, y, x = np.mgrid[-12:13, -12:13, -12:13]
    sphere = x ** 2 + y ** 2 + z ** 2 <= 100
    th = local_thickness(sphere)
    # the deepest centre is sqrt(101) voxels from the nearest background voxel centre
    assert np.nanmax(th) == pytest.approx(2 * np.sqrt(101))
    assert np.isnan(th[~sphere]).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.3, 0.45)])
@pytest.mark.parametrize("ball", [None, 8])
def test_matches_the_definition_on_a_random_structure(spacing, ball):
    """Thin parts (balls painted voxel by voxel) and, with the ball, radii of 6 voxels and more
    (painted row by row in descending size), on isotropic and anisotropic voxels."""
    structure = blobs((22, 22, 22), 1.5, 0.05, 5, ball)
    got = local_thickness(structure, spacing, clean_up=False)
    np.testing.assert_allclose(got, brute_force(structure, spacing), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("n, sigma, spacing", [(16, 1.5, 1.0), (24, 4.0, (0.5, 0.4, 0.6))])
def test_periodic_tile_equals_the_middle_of_a_tiled_block(n, sigma, spacing):
    """Thin and thick (balls over 6 voxels wide) tiles; the clean-up wraps too."""
    rng = np.random.default_rng(6)
    tile = ndimage.gaussian_filter(rng.standard_normal((n, n, n)), sigma, mode="wrap") > 0.02
    periodic = local_thickness(tile, spacing, periodic=True)
    tiled = local_thickness(np.tile(tile, (3, 3, 3)), spacing)
    np.testing.assert_allclose(periodic, tiled[n:2 * n, n:2 * n, n:2 * n], rtol=1e-12, equal_nan=True)


def test_refuses_empty_and_full_structures():
    with pytest.raises(BoneKitError, match="empty"):
        local_thickness(np.zeros((5, 5, 5), bool))
    with pytest.raises(BoneKitError, match="no background"):
        local_thickness(np.ones((5, 5, 5), bool))


def test_a_box_region_equals_the_cropped_image():
    """BoneJ measures a cropped box with its border not background; a box region does the same."""
    rng = np.random.default_rng(8)
    structure = ndimage.gaussian_filter(rng.standard_normal((30, 30, 30)), 1.5) > 0.0
    region = np.zeros_like(structure)
    region[5:25, 7:27, 4:22] = True
    inside = local_thickness(structure, 0.5, region=region)[5:25, 7:27, 4:22]
    cropped = local_thickness(structure[5:25, 7:27, 4:22], 0.5)
    np.testing.assert_allclose(inside, cropped, equal_nan=True)
    marrow = local_thickness(~structure, 0.5, region=region)[5:25, 7:27, 4:22]
    np.testing.assert_allclose(marrow, local_thickness(~structure[5:25, 7:27, 4:22], 0.5), equal_nan=True)


@pytest.mark.parametrize("spacing", [(1.0, 0.5, 0.5), (0.4, 0.4, 1.2)])
def test_anisotropic_voxels_measure_in_millimetres(spacing):
    """A plate 2 mm thick along each axis in turn: every axis gives the same thickness in mm as an
    isotropic grid that samples the plate the same way (the plate spans a whole number of voxels)."""
    for axis in range(3):
        n = [24, 24, 24]
        s = spacing[axis]
        t = int(round(2.0 / s))
        plate = np.zeros(n, bool)
        sl = [slice(None)] * 3
        sl[axis] = slice(8, 8 + t)
        plate[tuple(sl)] = True
        mean, _ = thickness_stats(local_thickness(plate, spacing))
        iso = np.zeros((24, 24, 24), bool)
        iso[:, :, 8:8 + t] = True
        expected, _ = thickness_stats(local_thickness(iso, s))
        assert mean == pytest.approx(expected, rel=1e-9), (axis, spacing)


def test_anisotropic_sphere_matches_the_isotropic_one():
    """A 6 mm ball sampled at 0.25 x 0.5 x 0.5 mm and at 0.25 mm isotropic: the same maximum
    thickness (the diameter) to within one coarse voxel, and the same mean within 5 %."""
    def ball(spacing):
        n = [int(np.ceil(8 / s)) for s in spacing]
        grids = np.meshgrid(*[(np.arange(m) - (m - 1) / 2) * s for m, s in zip(n, spacing)], indexing="ij")
        return sum(g ** 2 for g in grids) <= 9.0
    aniso = local_thickness(ball((0.25, 0.5, 0.5)), (0.25, 0.5, 0.5))
    iso = local_thickness(ball((0.25, 0.25, 0.25)), 0.25)
    assert abs(np.nanmax(aniso) - np.nanmax(iso)) <= 0.5
    assert np.nanmean(aniso) == pytest.approx(np.nanmean(iso), rel=0.05)


def test_region_errors():
    structure = np.zeros((6, 6, 6), bool)
    structure[2:4] = True
    with pytest.raises(BoneKitError, match="shape"):
        local_thickness(structure, region=np.ones((5, 5, 5), bool))
    region = np.zeros_like(structure)
    region[0:2] = True
    with pytest.raises(BoneKitError, match="empty inside the region"):
        local_thickness(structure, region=region)
    with pytest.raises(BoneKitError, match="fills the region"):
        local_thickness(structure, region=structure)


@pytest.fixture
def prune_always(monkeypatch):
    """Leave out redundant large balls whatever it saves, and count the balls left out."""
    import bonekit.thickness as thickness

    left_out = []
    test = thickness._redundant_balls

    def spy(*args):
        redundant = test(*args)
        left_out.append(int(redundant.sum()))
        return redundant
    monkeypatch.setattr(thickness, "_PRUNE_ROWS_PER_VOXEL", -1.0)
    monkeypatch.setattr(thickness, "_redundant_balls", spy)
    return left_out


@pytest.mark.parametrize("shape, sigma, level, seed, ball, invert", [
    ((25, 25, 25), 1.5, 9.0, 0, 10, False),  # a ball alone
    ((24, 24, 24), 1.0, 0.4, 3, 9, False),  # a ball among thin struts
    ((28, 28, 28), 4.0, 0.0, 1, None, True),  # pores
])
def test_leaving_out_balls_inside_larger_ones_keeps_bonej_map(shape, sigma, level, seed, ball, invert, prune_always):
    """BoneJ's worst case, a large ball, is fast because ridge balls whose structure voxels all lie
    in a larger ball are not painted and the voxels off the structure (which a ball reaches only
    with its surface) are set by a separate exact pass, which the clean-up needs: without it the
    last two structures differ from BoneJ's map by up to 4.9 and 3.1 voxels."""
    structure = blobs(shape, sigma, level, seed, ball)
    structure = ~structure if invert else structure
    got = local_thickness(structure)
    np.testing.assert_allclose(got, bonej_map(structure), rtol=1e-12, equal_nan=True)
    assert prune_always and prune_always[-1] > 0


def test_leaving_out_balls_keeps_periodic_and_region_maps(prune_always):
    rng = np.random.default_rng(6)
    tile = ndimage.gaussian_filter(rng.standard_normal((24, 24, 24)), 4.0, mode="wrap") > 0.02
    tiled = local_thickness(np.tile(tile, (3, 3, 3)))
    np.testing.assert_allclose(local_thickness(tile, periodic=True), tiled[24:48, 24:48, 24:48], rtol=1e-12,
                               equal_nan=True)
    structure = blobs((30, 30, 30), 1.5, 0.3, 3, 11)
    region = np.zeros_like(structure)
    region[4:27, 3:25, 5:28] = True
    inside = local_thickness(structure, region=region)[4:27, 3:25, 5:28]
    np.testing.assert_allclose(inside, local_thickness(structure[4:27, 3:25, 5:28]), equal_nan=True)
    assert len(prune_always) >= 3 and min(prune_always) > 0


@pytest.mark.parametrize("v", [4, 9, 20])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rods_give_bonej_digital_diameter(v, axis):
    """A rod |p|^2 + |q|^2 <= v (voxels) across the image: BoneJ's value is the diameter of the
    ball reaching the nearest background voxel centre, 2 sqrt(m) with m the least sum of two
    squares above v, everywhere on the rod (the clean-up averages equal values); in mm on voxels
    that are longer along the rod, since no background lies along it. The continuous rod's
    radius sqrt(v) is less than a voxel smaller (BoneJ's digital bias: 12 % on the diameter at v = 20)."""
    m = min(a * a + b * b for a in range(6) for b in range(6) if a * a + b * b > v)
    shape = [24, 24, 24]
    grid = np.indices(shape) - 12
    others = [g for k, g in enumerate(grid) if k != axis]
    rod = others[0] ** 2 + others[1] ** 2 <= v
    for spacing in (0.5, tuple(0.8 if k == axis else 0.5 for k in range(3))):
        th = local_thickness(rod, spacing)
        np.testing.assert_allclose(th[rod], 2 * 0.5 * np.sqrt(m), rtol=1e-12)
    assert 0 < np.sqrt(m) - np.sqrt(v) < 1

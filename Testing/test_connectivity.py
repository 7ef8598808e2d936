"""Euler characteristic and connectivity against shapes of known topology and a brute-force cell count."""

from itertools import product

import numpy as np
import pytest
from scipy import ndimage

from bonekit import BoneKitError
from bonekit.connectivity import connectivity, euler_characteristic


def lattice_cells(binary):
    """Every lattice cell of the union of closed voxel cubes, counted literally.

    Yields (dim, occupied, on_planes) for the 8 cell types: a cell is flat along some axes
    (it sits on a lattice plane there, n + 1 positions) and runs along the others (n positions);
    it lies in the union when any of the 2**(flat axes) voxels around it is foreground.
    """
    p = np.pad(np.asarray(binary, bool), 1)
    n = binary.shape
    for flat in product((False, True), repeat=3):
        occupied = np.zeros([ni + 1 if f else ni for ni, f in zip(n, flat)], bool)
        for offsets in product(*[(0, 1) if f else (1,) for f in flat]):
            occupied |= p[tuple(slice(o, o + s) for o, s in zip(offsets, occupied.shape))]
        grids = np.meshgrid(*[np.arange(s) for s in occupied.shape], indexing="ij")
        # how many of the image box's bounding planes the cell lies in (0 inside, 3 at a corner)
        on_planes = sum(((g == 0) | (g == ni)) & f for g, ni, f in zip(grids, n, flat))
        yield 3 - sum(flat), occupied, on_planes


def brute_euler(binary):
    """chi = V - E + F - C of the cubical complex."""
    return sum((-1) ** dim * int(occ.sum()) for dim, occ, _ in lattice_cells(binary))


def bonej_delta_euler(binary):
    """-(chi_2 / 2 + chi_1 / 4 + chi_0 / 8) of Odgaard & Gundersen as BoneJ's EulerCorrection defines it:
    chi of the union's intersection with the box surface, with its 12 edges, with its 8 corners."""
    chi = {1: 0, 2: 0, 3: 0}  # keyed by the least number of bounding planes a cell must lie in
    for dim, occ, on_planes in lattice_cells(binary):
        for k in chi:
            chi[k] += (-1) ** dim * int((occ & (on_planes >= k)).sum())
    return -(chi[1] / 2 + chi[2] / 4 + chi[3] / 8)


def ball(radius, shape=None, centre=None):
    shape = shape or (2 * radius + 3,) * 3
    centre = centre if centre is not None else [(s - 1) / 2 for s in shape]
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def solid_torus(R=8, r=3):
    z, y, x = np.indices((2 * r + 3, 2 * (R + r) + 3, 2 * (R + r) + 3)).astype(float)
    z -= r + 1
    y -= R + r + 1
    x -= R + r + 1
    return (np.hypot(x, y) - R) ** 2 + z ** 2 <= r ** 2


def slab_with_holes(n_holes):
    slab = np.zeros((5, 9, 4 + 5 * n_holes), bool)
    slab[1:4, 1:8, 1:-1] = True
    for h in range(n_holes):
        slab[:, 3:6, 3 + 5 * h:5 + 5 * h] = False  # a 3 x 2 hole through the whole slab
    return slab


def test_single_voxel_cube_and_ball():
    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    cube = np.zeros((8, 9, 10), bool)
    cube[2:6, 2:7, 3:9] = True
    assert euler_characteristic(voxel) == 1
    assert euler_characteristic(cube) == 1
    assert euler_characteristic(ball(6)) == 1


def test_cavity_counts_plus_one():
    shell = ball(7) & ~ball(4, shape=(17,) * 3)
    assert euler_characteristic(shell) == 2
    # two cavities in one block
    block = np.ones((7, 7, 13), bool)
    block[3, 3, 3] = block[3, 3, 9] = False
    assert euler_characteristic(block) == 3


@pytest.mark.parametrize("shape, expected", [(solid_torus(), 0), (slab_with_holes(1), 0),
                                             (slab_with_holes(2), -1), (slab_with_holes(3), -2)])
def test_each_tunnel_counts_minus_one(shape, expected):
    assert euler_characteristic(shape) == expected


def test_separate_objects_add_up():
    image = np.zeros((20, 20, 20), bool)
    image[1:4, 1:4, 1:4] = True
    image[10:18, 2:5, 2:5] = True
    image |= ball(3, shape=image.shape, centre=(12, 13, 13))
    image[1, 18, 18] = True
    assert euler_characteristic(image) == 4
    # a 1-voxel gap separates (6-connected background in between); a 3 x 3 x 3 grid of voxels
    grid = np.zeros((9, 9, 9), bool)
    grid[1::3, 1::3, 1::3] = True
    assert euler_characteristic(grid) == 27


def test_corner_contact_is_one_object_26_connectivity():
    two = np.zeros((4, 4, 4), bool)
    two[0:2, 0:2, 0:2] = True
    two[2:4, 2:4, 2:4] = True  # touches the first cube at one corner only
    assert euler_characteristic(two) == 1
    edge = np.zeros((3, 3, 3), bool)
    edge[1, 0, 0] = edge[1, 1, 1] = True  # share an edge only
    assert euler_characteristic(edge) == 1


def test_diagonal_ring_encloses_a_6_connected_tunnel():
    # four voxels meeting edge to edge around an empty voxel: one object, and the empty voxel
    # opens to the background above and below, so it is a tunnel (chi = 1 - 1)
    ring = np.zeros((3, 5, 5), bool)
    for y, x in [(1, 2), (2, 1), (2, 3), (3, 2)]:
        ring[1, y, x] = True
    assert euler_characteristic(ring) == 0
    # the same with the centre filled is a disc
    ring[1, 2, 2] = True
    assert euler_characteristic(ring) == 1


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_brute_force_cell_count(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 11, size=3))
    if seed % 2:
        image = rng.random(shape) < (0.2 + 0.1 * seed)  # salt and pepper: every octant pattern
    else:
        image = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) > 0.1
    assert euler_characteristic(image) == brute_euler(image)
    result = connectivity(image)
    assert result["euler"] == brute_euler(image)
    assert result["delta_euler"] == pytest.approx(bonej_delta_euler(image), abs=1e-12)


def test_every_octant_pattern_matches_the_brute_force_count():
    # all 256 patterns of a 2 x 2 x 2 image, each touching the image border
    for pattern in range(256):
        image = np.array([(pattern >> b) & 1 for b in range(8)], bool).reshape(2, 2, 2)
        assert euler_characteristic(image) == brute_euler(image), pattern
        assert connectivity(image)["delta_euler"] == pytest.approx(bonej_delta_euler(image)), pattern


def test_bonej_conventions_on_single_voxels_and_empty_images():
    # BoneJ2's ConnectivityWrapper test: 3^3 stack, 0.9 mm voxels, empty or one central voxel
    spacing = (0.9, 0.9, 0.9)
    empty = np.zeros((3, 3, 3), bool)
    voxel = empty.copy()
    voxel[1, 1, 1] = True
    r = connectivity(empty, spacing)
    assert (r["euler"], r["delta_euler"], r["connectivity"]) == (0, 0.0, 1.0)
    assert r["Conn.D"] == pytest.approx(1 / (27 * 0.9 ** 3))
    r = connectivity(voxel, spacing)
    assert (r["euler"], r["corrected_euler"], r["connectivity"], r["Conn.D"]) == (1, 1.0, 0.0, 0.0)
    assert euler_characteristic(np.zeros((0, 4, 4))) == 0


def test_edge_correction_of_boxes():
    # a full box is a piece of solid space, which has no connectivity: chi + delta_chi = 0
    r = connectivity(np.ones((4, 5, 6), bool))
    assert (r["euler"], r["delta_euler"], r["corrected_euler"], r["connectivity"]) == (1, -1.0, 0.0, 1.0)
    # a voxel in a corner touches 3 box faces, 3 box edges and 1 corner: -3/2 + 3/4 - 1/8 = -7/8
    corner = np.zeros((4, 4, 4), bool)
    corner[0, 0, 0] = True
    assert connectivity(corner)["delta_euler"] == -7 / 8
    # a rod across the box: its two ends lie on opposite faces; per face -1/2
    rod = np.zeros((6, 7, 7), bool)
    rod[:, 3, 3] = True
    assert connectivity(rod)["corrected_euler"] == 0.0


def rod_lattice(period, thickness, shape, offset=(0, 0, 0)):
    """Square rods along z, y and x through every lattice node (rod i occupies [0, thickness) mod period)."""
    z, y, x = (np.indices(shape) + np.reshape(offset, (3, 1, 1, 1))) % period < thickness
    return (y & x) | (z & x) | (z & y)


@pytest.mark.parametrize("offset", [(3, 3, 3), (1, 4, 5), (5, 1, 4)])
def test_rod_lattice_reaches_its_analytic_connectivity_density(offset):
    # The infinite cubic rod lattice is a graph with one node and three rods (edges) per period
    # cell p^3, so chi = V - E = -2 per cell, and the connectivity b1 = 2 per cell (twice the node
    # density: every node has 6 rods, each shared by 2 nodes, and a tree would need only 1 per node).
    # A box of n^3 whole periods is one tile of a tiling of the lattice by identical boxes; when its
    # faces cross the rods (rods occupy [0, t) mod p, so the faces must not lie at 0 or t mod p)
    # each box's contribution chi + delta_chi is exactly -2 n^3, and BoneJ's
    # Conn.D = (1 + 2 n^3) / (n p s)^3 -> 2 / (p s)^3 for large n.
    p, t, n, s = 6, 2, 3, 0.05
    image = rod_lattice(p, t, (n * p,) * 3, offset)
    r = connectivity(image, spacing=(s, s, s))
    assert r["corrected_euler"] == -2 * n ** 3
    assert r["Conn.D"] == pytest.approx((1 + 2 * n ** 3) / (n * p * s) ** 3)
    assert r["Conn.D"] == pytest.approx(2 / (p * s) ** 3, rel=0.02)
    if offset == (3, 3, 3):
        # uncorrected, the box is a free-floating piece: n^3 nodes, 3 n^2 lines of n - 1 rods
        # between nodes (the stubs out to the faces are trees and add nothing), chi = -27, not -54
        assert r["euler"] == n ** 3 - 3 * n ** 2 * (n - 1)


def test_flush_faces_bias_the_box_correction_but_not_a_mask_in_a_larger_image():
    # faces at 0 mod p lie flush on the rods of the next tile: the box alone cannot see those
    # rods (BoneJ has the same blind spot) and the contribution comes out too high
    p, t, n = 6, 2, 3
    assert connectivity(rod_lattice(p, t, (n * p,) * 3))["corrected_euler"] > -2 * n ** 3 + 10
    # a mask inside a larger image sees its surroundings and is exact wherever it is placed
    big = rod_lattice(p, t, (n * p + 8,) * 3)
    for shift in range(p):
        mask = np.zeros(big.shape, bool)
        mask[shift:shift + n * p, 1:1 + n * p, shift + 2:shift + 2 + n * p] = True
        assert connectivity(big, mask=mask)["corrected_euler"] == -2 * n ** 3


def test_rod_lattice_in_a_box_of_incomplete_periods():
    # a box that is not whole periods is no tile of a periodic tiling: the corrected value is
    # close to the density times the volume, up to a surface term
    p, t = 6, 2
    shape = (40, 37, 35)
    r = connectivity(rod_lattice(p, t, shape, (1, 3, 5)))
    expected = -2 * np.prod(shape) / p ** 3
    assert r["corrected_euler"] == pytest.approx(expected, rel=0.05)


def test_contributions_of_a_partition_add_up():
    # masks that partition the image share the boundary cells between them, so the pieces'
    # chi + delta_chi sum to the whole image's (the tiling property that defines delta_chi);
    # blocks, and voxels drawn at random
    rng = np.random.default_rng(11)
    image = ndimage.gaussian_filter(rng.standard_normal((14, 12, 16)), 1.2) > 0
    whole = connectivity(image)["corrected_euler"]
    blocks = np.zeros(image.shape, int)
    blocks[5:, :, :] += 1
    blocks[:, 7:, :] += 2
    blocks[:, :, 9:] += 4
    for labels in (blocks, rng.integers(0, 3, image.shape)):
        parts = [connectivity(image, mask=labels == k)["corrected_euler"] for k in np.unique(labels)]
        assert sum(parts) == pytest.approx(whole, abs=1e-9)


def test_mask_restricts_the_structure_and_sets_the_volume():
    image = rod_lattice(6, 2, (18, 18, 18))
    mask = np.zeros(image.shape, bool)
    mask[3:15] = True  # a box mask whose faces cross the rods: the same as cropping to it
    masked = connectivity(image, spacing=(0.5, 0.4, 0.3), mask=mask)
    cropped = connectivity(image[3:15], spacing=(0.5, 0.4, 0.3))
    assert masked == pytest.approx(cropped)
    assert masked["Conn.D"] == pytest.approx(masked["connectivity"] / (12 * 18 * 18 * 0.5 * 0.4 * 0.3))


def test_bad_input():
    with pytest.raises(BoneKitError, match="3D"):
        euler_characteristic(np.ones((4, 4)))
    with pytest.raises(BoneKitError, match="3D"):
        connectivity(np.ones((2, 4, 4, 4)))
    with pytest.raises(BoneKitError, match="shape"):
        connectivity(np.ones((4, 4, 4)), mask=np.ones((4, 4, 5)))
    with pytest.raises(BoneKitError, match="mask is empty"):
        connectivity(np.ones((4, 4, 4)), mask=np.zeros((4, 4, 4)))
    with pytest.raises(BoneKitError, match="spacing"):
        connectivity(np.ones((4, 4, 4)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(BoneKitError, match="spacing"):
        connectivity(np.ones((4, 4, 4)), spacing=(1.0, 1.0))

"""Degree of anisotropy (mean intercept length, BoneJ2 conventions) against structures of known fabric."""

import numpy as np
import pytest
from scipy import ndimage

from bonekit import BoneKitError
from bonekit.anisotropy import degree_of_anisotropy, fibonacci_hemisphere, mean_intercept_lengths


def random_structure(sigma_voxels, size=128, seed=0):
    """Gaussian-smoothed white noise > 0, periodic: half bone, with correlation lengths ``sigma_voxels``
    (k, j, i). sigma (2s, s, s) is the structure of sigma (s, s, s) stretched 2x along k: along any
    direction n its mean intercept length is pi / sqrt(sum n_a^2 / (2 sigma_a^2)) (Rice), so its
    MIL ellipsoid has radii exactly proportional to sigma."""
    noise = np.random.default_rng(seed).standard_normal((size,) * 3).astype(np.float32)
    return ndimage.gaussian_filter(noise, sigma_voxels, mode="wrap") > 0


@pytest.fixture(scope="module")
def stretched():
    return random_structure((4, 2, 2))


def test_isotropic_random_structure():
    result = degree_of_anisotropy(random_structure((2, 2, 2), size=96))
    assert result["DA"] < 0.1
    a, b, c = result["radii"]
    assert a <= b <= c and c / a < 1.05
    # the MIL of this structure is pi * sqrt(2) * sigma = 8.9 voxels; the digital image's is a little
    # shorter (the voxel staircase adds intercepts on oblique lines)
    assert 7.5 < a <= c < 9.5


def test_parallel_plates_normal_to_an_axis():
    """Plates normal to i: no intercept along the plates (infinite MIL there, DA = 1) and a MIL of half
    the period (6) across them; the shortest axis is the plates' normal, the longest lies in them."""
    plates = np.zeros((60, 60, 60), bool)
    for p in range(0, 60, 12):
        plates[:, :, p + 4:p + 8] = True
    result = degree_of_anisotropy(plates)
    assert result["DA"] > 0.9
    axes = np.array(result["axes"])
    assert abs(axes[0, 2]) > 0.999 and abs(axes[2, 2]) < 0.01
    assert result["radii"][0] == pytest.approx(6.0, rel=0.03)  # 10 faces crossed on 58-60 voxels of line


def test_tilted_plates():
    """Digital plates at an oblique angle (voxel staircases on their faces): DA > 0.9, the shortest axis
    along the plates' normal within 1 degree, the longest in their plane."""
    normal = np.array([0.3, 0.5, 0.81])
    normal /= np.linalg.norm(normal)
    k, j, i = np.meshgrid(*[np.arange(80)] * 3, indexing="ij")
    plates = (k * normal[0] + j * normal[1] + i * normal[2]) % 12 < 4
    result = degree_of_anisotropy(plates)
    axes = np.array(result["axes"])
    assert result["DA"] > 0.9
    assert abs(axes[0] @ normal) > np.cos(np.radians(1)) and abs(axes[2] @ normal) < 0.03
    assert result["radii"][0] == pytest.approx(6.0, rel=0.03)


def test_mil_along_the_axes_is_the_exact_digital_count(stretched):
    """Lines along an image axis read every voxel of a column with a step of one voxel: their MIL is the
    digital image's own (length / changes of phase between neighbours) -- also 2:1 between k and j, i."""
    b = stretched[:96, :96, :96]
    directions = np.vstack([np.eye(3), np.random.default_rng(1).normal(size=(9, 3))])
    mil = mean_intercept_lengths(b, None, (1.0, 1.0, 1.0), directions, step_mm=1.0)["MIL"][:3]
    pairs = [b.size // b.shape[a] * (b.shape[a] - 1) for a in range(3)]  # neighbour pairs, 1 voxel each
    exact = [pairs[a] / np.count_nonzero(np.diff(b, axis=a)) for a in range(3)]
    assert mil == pytest.approx(exact, rel=0.01)
    assert mil[0] / mil[1] == pytest.approx(2.0, rel=0.06) and mil[0] / mil[2] == pytest.approx(2.0, rel=0.06)


def test_structure_stretched_twice_along_k(stretched):
    """sigma (4, 2, 2): the MIL ellipsoid of the structure has radii 2:1:1, long axis k, so DA = 1 - 1/4
    = 0.75 (BoneJ2's 1 - lambda_min/lambda_max; 0.5 with the radii, 1 - a/c, of BoneJ2 before 2019).

    The digital image gives 1.70:1:1 (DA 0.65): oblique lines cross the voxel staircase of a surface
    they meet at a shallow angle more than once, which shortens the oblique MILs -- most of all near
    the long axis, where most lines are shallow to the elongated surfaces. This is the voxel image,
    not the sampling: along the axes the MIL is exact (test above), the ratio moves by < 0.002 with
    2x finer lines, 4000 directions, another seed or another realisation, and a tracer that reads
    the smooth field the structure is thresholded from (interpolated) gives 1.97. BoneJ shares the
    bias (Doube 2019: increments below about 2 px let the pixel grid interfere). Tolerance: the
    ratio between 1.6 (the bias at this resolution, 1.70, less a margin) and 2.0 (the structure's
    own)."""
    result = degree_of_anisotropy(stretched)
    a, b, c = result["radii"]
    axes = np.array(result["axes"])
    assert abs(axes[2, 0]) > np.cos(np.radians(3))  # the long axis is k
    assert b / a == pytest.approx(1.0, abs=0.03)  # isotropic across it
    assert 1.6 < c / a < 2.0
    assert result["DA"] == pytest.approx(1 - (a / c) ** 2, abs=1e-12)
    assert 0.6 < result["DA"] < 0.75


def test_anisotropic_voxels_measure_the_same_structure(stretched):
    """The same structure on voxels twice as long along k (every second slice, spacing 2, 1, 1 mm): the
    lines are traced in mm, so the DA is the isotropic image's. Read in voxels (spacing ignored) the
    structure is isotropic (sigma 2, 2, 2 voxels). Tolerance 0.05: the coarser voxels along k and the
    longer default increment (the voxel diagonal, 2.45 instead of 1.73 mm) change the staircase bias
    (measured: 0.682 against 0.655; 0.652 with the same increment)."""
    iso = degree_of_anisotropy(stretched)
    thin = np.ascontiguousarray(stretched[::2])
    aniso = degree_of_anisotropy(thin, None, (2.0, 1.0, 1.0))
    assert aniso["DA"] == pytest.approx(iso["DA"], abs=0.05)
    assert abs(aniso["axes"][2][0]) > np.cos(np.radians(3))
    assert aniso["step_mm"] == pytest.approx(np.sqrt(6))
    assert degree_of_anisotropy(thin, None, (1.0, 1.0, 1.0))["DA"] < 0.1


def test_only_the_region_counts(stretched):
    """Intercepts are counted only inside the region: what lies outside it changes nothing, and a ball
    inside the structure measures about the fabric of the whole."""
    b = stretched[:96, :96, :96]
    k, j, i = np.ogrid[:96, :96, :96]
    ball = (k - 48) ** 2 + (j - 48) ** 2 + (i - 48) ** 2 <= 45 ** 2
    inside = degree_of_anisotropy(b, ball)
    assert degree_of_anisotropy(b & ball, ball) == inside == degree_of_anisotropy(b | ~ball, ball)
    whole = degree_of_anisotropy(b)
    assert inside["DA"] == pytest.approx(whole["DA"], abs=0.05)
    assert abs(inside["axes"][2][0]) > np.cos(np.radians(5))


def test_deterministic(stretched):
    b = stretched[:64, :64, :64]
    first = degree_of_anisotropy(b, seed=0)
    assert degree_of_anisotropy(b, seed=0) == first
    other = degree_of_anisotropy(b, seed=1)
    assert other != first and other["DA"] == pytest.approx(first["DA"], abs=0.03)


def test_directions_cover_the_half_sphere_evenly():
    d = fibonacci_hemisphere(1000)
    assert np.allclose(np.linalg.norm(d, axis=1), 1) and np.all(d[:, 0] > 0)
    # an isotropic direction set: its second moment is I/3
    assert d.T @ d / len(d) == pytest.approx(np.eye(3) / 3, abs=2e-3)


def test_bad_input():
    b = random_structure((2, 2, 2), size=32)
    with pytest.raises(BoneKitError, match="empty"):
        degree_of_anisotropy(b, np.zeros(b.shape, bool))
    with pytest.raises(BoneKitError, match="No bone"):
        degree_of_anisotropy(np.zeros(b.shape, bool))
    with pytest.raises(BoneKitError, match="No bone"):
        degree_of_anisotropy(b, ~b)  # only marrow inside the region
    with pytest.raises(BoneKitError, match="Everything inside the region is bone"):
        degree_of_anisotropy(b, b)
    with pytest.raises(BoneKitError, match="9 directions"):
        degree_of_anisotropy(b, directions=4)
    with pytest.raises(BoneKitError, match="shape"):
        degree_of_anisotropy(b, np.ones((4, 4, 4), bool))
    with pytest.raises(BoneKitError, match="spacing"):
        degree_of_anisotropy(b, spacing_kji=(1.0, 0.0, 1.0))

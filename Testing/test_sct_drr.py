"""DRRs against analytic line integrals (a cube, a sphere), geometry invariances, and Plastimatch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.sct.drr import VIEWS, DetectorGeometry, View, compute_drr, hu_to_mu
from bonekit.volume import Volume, make_affine

MU = 0.022


def _box_chords(src, pixels, lo, hi):
    """Exact length of each ray (src -> pixel) inside the axis-aligned box [lo, hi] (slab method)."""
    d = pixels - src
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - src) / d
        t2 = (hi - src) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=-1).clip(0, 1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=-1).clip(0, 1)
    return np.maximum(tmax - tmin, 0) * np.linalg.norm(d, axis=-1)


def _sphere_chords(src, pixels, centre, radius):
    u = pixels - src
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    w = centre - src
    dist2 = w @ w - (u @ w) ** 2
    return 2 * np.sqrt(np.maximum(radius ** 2 - dist2, 0))


@pytest.fixture(scope="module")
def cube():
    """A water cube of 24 x 30 x 20 voxels (1.0 x 1.2 x 0.8 mm) in air, off-centre in a larger grid."""
    spacing = np.array([1.0, 1.2, 0.8])
    shape_ijk = np.array([48, 40, 50])
    hu = np.full(shape_ijk[::-1], -1000.0, np.float32)
    first = np.array([10, 6, 14])
    size = np.array([24, 30, 20])
    hu[first[2]:first[2] + size[2], first[1]:first[1] + size[1], first[0]:first[0] + size[0]] = 0.0
    origin = -(shape_ijk - 1) / 2 * spacing
    vol = Volume(hu, make_affine(spacing, origin))
    lo = origin + (first - 0.5) * spacing                 # voxel extents, not centres
    hi = lo + size * spacing
    return vol, lo, hi


@pytest.mark.parametrize("name", ["ap", "lat", "pa", "rlat"])
def test_cube_line_integrals_are_exact_through_front_and_back_faces(cube, name):
    vol, lo, hi = cube
    g = DetectorGeometry(sad=300, sid=500, rows=64, columns=64, pixel=(1.1, 1.1))
    view = VIEWS[name]
    drr = compute_drr(vol, [name], geometry=g, isocenter=(0, 0, 0), device="cpu")[0]
    src, pix = g.source(np.zeros(3), view), g.pixel_centres(np.zeros(3), view)
    truth = MU * _box_chords(src, pix, lo, hi)
    # rays that enter and leave through the two faces normal to the beam, a voxel clear of the edges
    axis = int(np.argmax(np.abs(view.beam)))
    inner_lo, inner_hi = lo + 1.5 * vol.spacing, hi - 1.5 * vol.spacing
    inner_lo[axis], inner_hi[axis] = lo[axis] - 1, hi[axis] + 1
    u = (pix - src) / np.linalg.norm(pix - src, axis=-1, keepdims=True)
    full = (inner_hi[axis] - inner_lo[axis]) / np.abs(u[..., axis])
    through = _box_chords(src, pix, inner_lo, inner_hi) > full - 1e-9
    assert through.sum() > 200
    np.testing.assert_allclose(drr.image[through], truth[through], rtol=1e-5)
    # rays that pass more than a voxel outside the cube see nothing; the total is conserved
    outside = _box_chords(src, pix, lo - vol.spacing, hi + vol.spacing) == 0
    assert outside.sum() > 200 and np.all(drr.image[outside] == 0)
    assert drr.image.sum() == pytest.approx(truth.sum(), rel=0.01)


@pytest.fixture(scope="module")
def sphere():
    """A water sphere of radius 14 mm, off-centre, partial-volume sampled on anisotropic voxels."""
    spacing = np.array([0.9, 1.1, 0.8])
    n = np.array([44, 40, 48])
    origin = -(n - 1) / 2 * spacing
    centre, radius = np.array([4.0, -3.0, 2.5]), 14.0
    k, j, i = np.indices(n[::-1])
    pts = np.stack([i, j, k], -1) * spacing + origin
    occ = np.zeros(n[::-1])
    for d in product((-0.375, -0.125, 0.125, 0.375), repeat=3):
        occ += np.linalg.norm(pts + np.array(d) * spacing - centre, axis=-1) <= radius
    hu = (-1000 + occ / 64 * 1000).astype(np.float32)
    return Volume(hu, make_affine(spacing, origin)), centre, radius


def test_sphere_matches_analytic_chords(sphere):
    vol, centre, radius = sphere
    g = DetectorGeometry(sad=541, sid=949, rows=72, columns=72, pixel=(1.4, 1.4))
    for drr in compute_drr(vol, ["ap", "lat"], geometry=g, isocenter=(0, 0, 0), device="cpu"):
        src, pix = g.source(np.zeros(3), drr.view), g.pixel_centres(np.zeros(3), drr.view)
        truth = MU * _sphere_chords(src, pix, centre, radius)
        inner = truth > 0.5 * truth.max()
        err = np.abs(drr.image - truth)[inner] / truth.max()
        assert err.mean() < 0.003 and err.max() < 0.015
        assert drr.image.sum() == pytest.approx(truth.sum(), rel=0.002)
        # the sphere's image sits where perspective puts it (centroid within a tenth of a pixel)
        r, c = np.indices(truth.shape)
        for a in (r, c):
            assert (drr.image * a).sum() / drr.image.sum() == pytest.approx((truth * a).sum() / truth.sum(), abs=0.1)


def test_same_object_in_a_reoriented_grid_gives_the_same_drr(sphere):
    """Flipping and permuting the voxel axes (a different direction matrix) changes nothing physical."""
    vol, _, _ = sphere
    a = vol.affine
    # new array axes: (i, k, j) with i reversed; the affine follows so every voxel keeps its position
    arr = np.transpose(vol.array, (1, 0, 2))[:, :, ::-1]            # (j, k, i) -> index order (i', k', j')
    ni = vol.shape[2]
    aff = np.eye(4)
    aff[:3, 0] = -a[:3, 0]                                           # i' = ni - 1 - i
    aff[:3, 1] = a[:3, 2]                                            # j' = k
    aff[:3, 2] = a[:3, 1]                                            # k' = j
    aff[:3, 3] = a[:3, 3] + (ni - 1) * a[:3, 0]
    other = Volume(np.ascontiguousarray(arr), aff)
    np.testing.assert_allclose(other.index_to_physical([3, 5, 7]),
                               vol.index_to_physical([ni - 1 - 3, 7, 5]))
    g = DetectorGeometry(sad=400, sid=700, rows=48, columns=48, pixel=(1.5, 1.5))
    for x, y in zip(compute_drr(vol, ["ap", "lat"], geometry=g, device="cpu"),
                    compute_drr(other, ["ap", "lat"], geometry=g, device="cpu")):
        np.testing.assert_allclose(x.image, y.image, atol=1e-5)


def test_cpu_and_torch_projectors_agree(sphere):
    """The compiled CPU loop and the grid_sample path (used on GPUs) take the same samples."""
    from bonekit.sct.drr import hu_to_mu, project

    vol, _, _ = sphere
    g = DetectorGeometry(sad=300, sid=520, rows=40, columns=56, pixel=(1.6, 1.3))
    mu = hu_to_mu(vol.array)
    for view in (VIEWS["ap"], VIEWS["lat"], View("oblique", (0.28, 0.96, 0), (0.96, -0.28, 0), (0, 0, -1))):
        args = (mu, vol.affine, g.source((1, -2, 3), view), g.pixel_centres((1, -2, 3), view))
        a = project(*args, engine="numba")
        b = project(*args, engine="torch", chunk=7)
        assert a.max() > 0.3
        np.testing.assert_allclose(a, b, atol=2e-5 * a.max())


def test_transmission_units_and_orientation():
    """exp(-integral); a dense block at the patient's left and superior shows at image right and top."""
    spacing = (1.0, 1.0, 1.0)
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[28:36, 16:24, 28:36] = 1000.0                 # high k (superior), high i (patient's left)
    vol = Volume(hu, make_affine(spacing, (-19.5, -19.5, -19.5)))
    g = DetectorGeometry(sad=300, sid=450, rows=40, columns=40, pixel=(1.5, 1.5))
    ap, lat = compute_drr(vol, ["ap", "lat"], geometry=g, device="cpu")
    tr = compute_drr(vol, ["ap"], geometry=g, output="transmission", device="cpu")[0]
    np.testing.assert_allclose(tr.image, np.exp(-ap.image), rtol=1e-6)
    r, c = np.unravel_index(np.argmax(ap.image), ap.image.shape)
    assert r < 20 and c > 20                        # superior at the top, patient's left (+x) to the right
    r, c = np.unravel_index(np.argmax(lat.image), lat.image.shape)
    assert r < 20 and abs(c - 19.5) < 3             # block centred front-back: middle columns
    # the block's line integral: 8 mm of bone (mu = 2 mu_water)
    assert ap.image.max() == pytest.approx(8 * 2 * MU, rel=0.01)


def test_drr_volume_geometry_lies_on_the_detector(sphere):
    vol, _, _ = sphere
    g = DetectorGeometry(sad=500, sid=800, rows=10, columns=12, pixel=(2.0, 2.5))
    drr = compute_drr(vol, ["lat"], geometry=g, isocenter=(1, 2, 3), device="cpu")[0]
    out = drr.to_volume()
    assert out.shape == (1, 10, 12)
    np.testing.assert_allclose(out.spacing[:2], (2.5, 2.0))
    pix = g.pixel_centres(np.array([1.0, 2, 3]), VIEWS["lat"])
    np.testing.assert_allclose(out.index_to_physical([11, 9, 0]), pix[9, 11])
    assert out.metadata["drr"]["source_lps_mm"] == pytest.approx([1 - 500, 2, 3])


def test_hu_to_mu():
    mu = hu_to_mu(np.array([-1000.0, -1200.0, 0.0, 1000.0, -850.0]))
    np.testing.assert_allclose(mu, [0, 0, MU, 2 * MU, 0.15 * MU], rtol=1e-6)
    assert hu_to_mu(np.array([-850.0]), air_below_hu=-800)[0] == 0
    with pytest.raises(BoneKitError, match="water"):
        hu_to_mu(np.zeros(2), mu_water=0)


def test_bad_geometry_is_refused(sphere):
    vol, _, _ = sphere
    with pytest.raises(BoneKitError, match="SAD < SID"):
        DetectorGeometry(sad=900, sid=800)
    with pytest.raises(BoneKitError, match="Unknown view"):
        compute_drr(vol, ["oblique"], device="cpu")
    with pytest.raises(BoneKitError, match="inside the CT"):
        compute_drr(vol, ["ap"], geometry=DetectorGeometry(sad=10, sid=100), device="cpu")
    with pytest.raises(BoneKitError, match="45 degrees"):
        compute_drr(vol, ["ap"], geometry=DetectorGeometry(sad=60, sid=100, rows=8, columns=400), device="cpu")
    with pytest.raises(BoneKitError, match="orthogonal"):
        View("bad", (1, 0, 0), (1, 0, 0), (0, 0, 1))
    with pytest.raises(BoneKitError, match="output"):
        compute_drr(vol, ["ap"], output="film", device="cpu")


def _read_pfm(path):
    with open(path, "rb") as fh:
        fh.readline()
        w, h = map(int, fh.readline().split())
        scale = float(fh.readline())
        # Plastimatch writes row 0 (the detector's top row) first
        return np.fromfile(fh, "<f4" if scale < 0 else ">f4").reshape(h, w)


PLASTIMATCH = shutil.which("plastimatch", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(PLASTIMATCH is None, reason="plastimatch (pip install plastimatch) not installed")
def test_agrees_with_plastimatch(sphere, tmp_path):
    """Same volume and geometry: Plastimatch's exact (Siddon) DRR x 10 is our line integral.

    Plastimatch reports sum(mu * mm) / 10 and its ``--nrm`` points from the detector to the source.
    """
    import SimpleITK as sitk

    vol, centre, radius = sphere
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "sphere.mha"))
    g = DetectorGeometry(sad=541, sid=949, rows=80, columns=80, pixel=(1.5, 1.5))
    for name, nrm in (("ap", "0 -1 0"), ("lat", "-1 0 0")):
        subprocess.run([PLASTIMATCH, "drr", "-t", "pfm", "-i", "exact", "--nrm", nrm, "--sad", "541",
                        "--sid", "949", "-r", "80 80", "-z", "120 120", "-o", "0 0 0",
                        "-I", str(tmp_path / "sphere.mha"), "-O", str(tmp_path / f"{name}_")],
                       check=True, capture_output=True)
        theirs = _read_pfm(tmp_path / f"{name}_0000.pfm") * 10
        if name == "lat":
            theirs = theirs[:, ::-1]                  # Plastimatch's columns run along vup x nrm = anterior
        ours = compute_drr(vol, [name], geometry=g, isocenter=(0, 0, 0), air_below_hu=-800, device="cpu")[0].image
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
        assert ours.sum() == pytest.approx(theirs.sum(), rel=0.005)
        # inside the silhouette they agree closely; at it, Siddon's sharp voxel edges differ from trilinear
        inner = theirs > 0.5 * theirs.max()
        assert (np.abs(ours - theirs)[inner] / theirs[inner]).mean() < 0.02
        # and ours is the closer of the two to the analytic chords of the sphere
        src, pix = g.source(np.zeros(3), VIEWS[name]), g.pixel_centres(np.zeros(3), VIEWS[name])
        truth = MU * _sphere_chords(src, pix, centre, radius)
        assert np.abs(ours - truth)[inner].mean() < np.abs(theirs - truth)[inner].mean()

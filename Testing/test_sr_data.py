"""Paired super-resolution data: simulated MDCT (bonekit.sr.degrade) and real-pair matching
(bonekit.sr.pairing). Every test checks against a known truth: analytic blur widths and noise
statistics, exact geometry, a known rigid motion, a known slice correspondence, scipy /
SimpleITK as peer tools."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bonekit.errors import BoneKitError
from bonekit.volume import Volume, make_affine
from bonekit.sr.degrade import (FWHM_PER_SIGMA, MDCTModel, _gaussian_kernel, fwhm_from_mtf10, make_pairs,
                                micro_ct_to_hu, refined_grid, simulate_mdct, upsample_to)
from bonekit.sr.pairing import (SpecimenPair, align_slice, apply_alignment, load_lumbarsr, match_slices,
                                pair_volumes, register_rigid)

LHDL = "microct/lhdl_3155_D_4_bc_19.5um.nii.gz"
FDA = "microct/fda_vertebra_roi_51um/Segmentation-grayscale-9_67960.nrrd"
FDA_SPACING = 0.0512998


def rotation(ax, ay, az):
    """Rotation matrix from angles (degrees) about x, y, z (z * y * x)."""
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_points(volume):
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    return volume.index_to_physical(np.stack([i, j, k], -1).astype(float))


def texture(shape, sigma, seed):
    return ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)


def ncc(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


# ============================================================================ MDCTModel
def test_model_round_trip_and_defaults():
    m = MDCTModel()
    assert m.scale == 4 and m.psf_fwhm_mm == (0.5, 0.3) and m.slice_thickness_mm == 0.6
    assert MDCTModel.from_dict(m.to_dict()) == m
    assert MDCTModel(noise_fwhm_mm=0.3).noise_fwhm_mm == (0.3, 0.3)
    assert MDCTModel(scale=2.0).scale == 2
    assert m.with_(noise_hu=0).noise_hu == 0.0
    import json
    assert MDCTModel.from_dict(json.loads(json.dumps(m.to_dict()))) == m


@pytest.mark.parametrize("bad", [dict(scale=2.5), dict(scale=0), dict(scale=-1), dict(scale="4"),
                                 dict(psf_fwhm_mm=(-0.1, 0.3)), dict(psf_fwhm_mm=(0.1, 0.2, 0.3)),
                                 dict(slice_thickness_mm=0), dict(noise_hu=-1), dict(noise_hu=float("nan")),
                                 dict(noise_fwhm_mm="x"), dict(seed=-3), dict(seed=1.5)])
def test_model_rejects_bad_values(bad):
    with pytest.raises(BoneKitError):
        MDCTModel(**bad)


def test_model_from_dict_rejects_unknown_keys():
    with pytest.raises(BoneKitError, match="noise_sd"):
        MDCTModel.from_dict({"noise_sd": 10})
    with pytest.raises(BoneKitError):
        MDCTModel.from_dict([1, 2])


def test_fwhm_from_mtf10_is_the_gaussian_mtf():
    f10 = 1.5                                   # lp/mm
    sigma = fwhm_from_mtf10(f10) / FWHM_PER_SIGMA
    assert math.exp(-2 * math.pi ** 2 * sigma ** 2 * f10 ** 2) == pytest.approx(0.1, rel=1e-12)
    assert fwhm_from_mtf10(2.0) == pytest.approx(0.40, abs=0.01)
    with pytest.raises(BoneKitError):
        fwhm_from_mtf10(0)


# ============================================================================ simulate_mdct
def _profile_fwhm(profile, spacing):
    """FWHM of a Gaussian-shaped profile from its second moment."""
    p = profile / profile.sum()
    x = np.arange(p.size) * spacing
    mu = (p * x).sum()
    return FWHM_PER_SIGMA * math.sqrt((p * (x - mu) ** 2).sum())


def test_psf_widens_a_gaussian_blob_in_quadrature():
    sp, n = 0.05, 64
    c = (n - 1) / 2 * sp
    z, y, x = np.meshgrid(*[np.arange(n) * sp - c] * 3, indexing="ij")
    f_obj = 0.3
    s_obj = f_obj / FWHM_PER_SIGMA
    blob = 1000 * np.exp(-(x ** 2 + y ** 2 + z ** 2) / (2 * s_obj ** 2))
    hr = Volume.from_geometry(blob.astype(np.float32), (sp,) * 3)
    model = MDCTModel(scale=1, psf_fwhm_mm=(0.4, 0.8), slice_thickness_mm=None, noise_hu=0)
    out = simulate_mdct(hr, model).array
    m = n // 2
    line_x = out[m - 1:m + 1, m - 1:m + 1, :].mean((0, 1))
    line_y = out[m - 1:m + 1, :, m - 1:m + 1].mean((0, 2))
    line_z = out[:, m - 1:m + 1, m - 1:m + 1].mean((1, 2))
    assert _profile_fwhm(line_x, sp) == pytest.approx(math.hypot(f_obj, 0.4), rel=0.05)
    assert _profile_fwhm(line_y, sp) == pytest.approx(math.hypot(f_obj, 0.4), rel=0.05)
    assert _profile_fwhm(line_z, sp) == pytest.approx(math.hypot(f_obj, 0.8), rel=0.05)
    assert out.sum() == pytest.approx(blob.sum(), rel=1e-4)          # blur keeps the integral


def test_slice_profile_is_a_box_of_the_slice_thickness():
    sp, n = 0.05, 40
    a = np.zeros((n, 4, 4), np.float32)
    a[20] = 1000.0                                                   # a thin sheet at z index 20
    hr = Volume.from_geometry(a, (sp,) * 3)
    out = simulate_mdct(hr, MDCTModel(scale=1, psf_fwhm_mm=0, slice_thickness_mm=0.5, noise_hu=0)).array
    profile = out[:, 0, 0]
    # a 0.5 mm box = 10 voxels: full weight 1/10 on 16..24, half weight on 15 and 25
    expected = np.zeros(n)
    expected[16:25] = 100.0
    expected[[15, 25]] = 50.0
    np.testing.assert_allclose(profile, expected, atol=1e-3)
    # with scale 2 the slices (every 0.1 mm) overlap: LR slice o is centred on HR index 2o + 0.5
    out2 = simulate_mdct(hr, MDCTModel(scale=2, psf_fwhm_mm=0, slice_thickness_mm=0.5, noise_hu=0)).array
    centres = 2 * np.arange(n // 2) + 0.5
    overlap = np.clip(np.minimum(20.5, centres + 5) - np.maximum(19.5, centres - 5), 0, None)
    np.testing.assert_allclose(out2[:, 0, 0], 1000 * overlap / 10, atol=1e-3)


def test_area_averaging_preserves_the_mean():
    tex = (texture((24, 40, 40), 2.0, 1) * 500 + 300).astype(np.float32)
    hr = Volume.from_geometry(tex, (0.05, 0.05, 0.05))
    lr = simulate_mdct(hr, MDCTModel(scale=4, psf_fwhm_mm=0, slice_thickness_mm=None, noise_hu=0))
    assert lr.shape == (6, 10, 10)
    # pure block averaging: every LR voxel is the mean of its 4x4x4 block
    blocks = tex.reshape(6, 4, 10, 4, 10, 4).mean((1, 3, 5))
    np.testing.assert_allclose(lr.array, blocks, rtol=1e-5, atol=1e-3)
    blurred = simulate_mdct(hr, MDCTModel(scale=4, noise_hu=0))
    assert blurred.array.mean() == pytest.approx(tex.mean(), rel=0.01)


def test_noise_sd_matches_noise_hu_white_and_correlated():
    flat = Volume.from_geometry(np.full((64, 256, 256), 50.0, np.float32), (0.05,) * 3)
    white = simulate_mdct(flat, MDCTModel(scale=2, psf_fwhm_mm=0, noise_hu=30, noise_fwhm_mm=0))
    assert white.array.mean() == pytest.approx(50.0, abs=0.5)
    assert white.array.std() == pytest.approx(30.0, rel=0.05)
    lag1 = np.corrcoef(white.array[:, :, :-1].ravel(), white.array[:, :, 1:].ravel())[0, 1]
    assert abs(lag1) < 0.01
    model = MDCTModel(scale=2, psf_fwhm_mm=0, noise_hu=30, noise_fwhm_mm=(0.4, 0.6))
    corr = simulate_mdct(flat, model)
    assert corr.array.std() == pytest.approx(30.0, rel=0.05)
    # in-plane lag-1 correlation of Gaussian-filtered white noise: sum(w_k w_k+1) / sum(w_k^2)
    sigma = 0.4 / FWHM_PER_SIGMA / 0.1
    w = _gaussian_kernel(sigma)
    expected = (w[:-1] * w[1:]).sum() / (w * w).sum()
    assert expected == pytest.approx(math.exp(-1 / (4 * sigma ** 2)), rel=1e-3)   # continuous limit
    lag1 = np.corrcoef(corr.array[:, :, :-1].ravel(), corr.array[:, :, 1:].ravel())[0, 1]
    assert lag1 == pytest.approx(expected, abs=0.01)


def test_noise_is_deterministic_with_a_seed():
    hr = Volume.from_geometry(np.zeros((16, 32, 32), np.float32), (0.05,) * 3)
    a = simulate_mdct(hr, MDCTModel(scale=2, seed=5)).array
    b = simulate_mdct(hr, MDCTModel(scale=2, seed=5)).array
    c = simulate_mdct(hr, MDCTModel(scale=2, seed=6)).array
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(simulate_mdct(hr, MDCTModel(scale=2, seed=6), seed=5).array, a)


def test_lr_geometry_centres_are_the_means_of_their_hr_blocks():
    d = rotation(10, -20, 30)
    hr = Volume(np.random.default_rng(0).random((10, 13, 14)).astype(np.float32),
                make_affine((0.05, 0.06, 0.07), (1.0, 2.0, 3.0), d))
    s = 3
    lr = simulate_mdct(hr, MDCTModel(scale=s, noise_hu=0))
    assert lr.shape == (3, 4, 4)                                      # trailing partial blocks dropped
    np.testing.assert_allclose(lr.spacing, hr.spacing * s)
    np.testing.assert_allclose(lr.direction, hr.direction, atol=1e-12)
    k, j, i = np.meshgrid(*[np.arange(n) for n in lr.shape], indexing="ij")
    ijk = np.stack([i, j, k], -1).reshape(-1, 3)
    covered = np.mean([hr.index_to_physical(ijk * s + np.array([a, b, c]))
                       for a in range(s) for b in range(s) for c in range(s)], axis=0)
    np.testing.assert_allclose(lr.index_to_physical(ijk), covered, atol=1e-12)
    assert lr.units == "HU" and lr.metadata["mdct_model"]["scale"] == s
    # refined_grid is the inverse: the fine grid of the LR volume is the (cropped) HR grid
    fine = refined_grid(lr, s)
    assert fine.shape == (9, 12, 12)
    np.testing.assert_allclose(fine.affine, hr.affine, atol=1e-12)


@pytest.mark.parametrize("shape,scale", [((3, 10, 10), 4), ((10, 2, 10), 3)])
def test_volume_smaller_than_one_lr_voxel_is_refused(shape, scale):
    hr = Volume.from_geometry(np.zeros(shape, np.float32), (0.05,) * 3)
    with pytest.raises(BoneKitError, match="smaller than one LR voxel"):
        simulate_mdct(hr, MDCTModel(scale=scale))


def test_simulate_rejects_bad_inputs():
    hr = Volume.from_geometry(np.zeros((8, 8, 8), np.float32), (0.05,) * 3)
    with pytest.raises(BoneKitError):
        simulate_mdct(hr, {"scale": 2.5})
    with pytest.raises(BoneKitError):
        simulate_mdct(np.zeros((8, 8, 8)), MDCTModel(scale=2))
    bad = hr.with_array(np.full((8, 8, 8), np.nan, np.float32))
    with pytest.raises(BoneKitError, match="NaN"):
        simulate_mdct(bad, MDCTModel(scale=2))


# ============================================================================ upsample_to
def test_upsample_reproduces_a_linear_ramp_in_physical_space():
    d = rotation(10, -20, 30)
    lr = Volume(np.zeros((20, 21, 22), np.float32), make_affine((0.2, 0.3, 0.4), (1, 2, 3), d))
    coef = np.array([1.0, -2.0, 0.5])
    lr = lr.with_array((grid_points(lr) @ coef).astype(np.float32))
    fine = refined_grid(lr, 3)
    up = upsample_to(lr, fine)
    assert up.same_grid(fine)
    inner = (slice(18, -18),) * 3                                     # away from the edge extension
    np.testing.assert_allclose(up.array[inner], (grid_points(fine) @ coef)[inner], atol=2e-4)
    # an oblique target grid inside the LR volume
    centre = lr.index_to_physical([10.5, 10, 9.5])
    like = Volume(np.zeros((16, 16, 16), np.float32),
                  make_affine((0.1,) * 3, centre - rotation(0, 0, 40) @ np.full(3, 0.75), rotation(0, 0, 40)))
    up = upsample_to(lr, like)
    np.testing.assert_allclose(up.array, grid_points(like) @ coef, atol=2e-3)


def test_upsample_matches_scipy_and_simpleitk_cubic_bspline():
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    lr = Volume(rng.standard_normal((20, 21, 22)).astype(np.float32),
                make_affine((0.2, 0.3, 0.4), (1, 2, 3), rotation(5, 10, -15)))
    fine = refined_grid(lr, 3)
    up = upsample_to(lr, fine).array
    # scipy's own interpolating cubic B-spline at the fine centres' LR indices
    axes = [(np.arange(n) + 0.5) / 3 - 0.5 for n in fine.shape]
    ref = ndimage.map_coordinates(lr.array.astype(np.float64), np.meshgrid(*axes, indexing="ij"), order=3,
                                  mode="nearest")
    np.testing.assert_allclose(up, ref, atol=1e-4)
    # SimpleITK's B-spline interpolator (other edge handling: compare the interior)
    reference = sitk.Image([int(v) for v in fine.size], sitk.sitkFloat32)
    reference.SetSpacing(fine.spacing.tolist())
    reference.SetOrigin(fine.origin.tolist())
    reference.SetDirection(fine.direction.ravel().tolist())
    s = sitk.GetArrayFromImage(sitk.Resample(lr.to_sitk(), reference, sitk.Transform(), sitk.sitkBSpline))
    inner = (slice(21, -21),) * 3
    np.testing.assert_allclose(up[inner], s[inner], atol=1e-3)


def test_upsample_rejects_bad_order():
    lr = Volume.from_geometry(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(BoneKitError):
        upsample_to(lr, lr, order=7)


# ============================================================================ micro_ct_to_hu
def test_binary_micro_ct_maps_to_two_levels():
    a = np.zeros((8, 8, 8), np.uint8)
    a[2:5] = 255
    v = micro_ct_to_hu(Volume.from_geometry(a, (0.05,) * 3))
    assert set(np.unique(v.array)) == {0.0, 1800.0}
    assert v.units == "HU" and v.metadata["micro_ct_to_hu"]["binary"]
    soft = micro_ct_to_hu(Volume.from_geometry(a, (0.05,) * 3), partial_volume_sigma_vox=0.7)
    assert soft.array.mean() == pytest.approx(v.array.mean(), rel=1e-3)
    assert 0 < soft.array[5, 0, 0] < 1800


def test_grey_micro_ct_maps_phase_levels_to_hu():
    rng = np.random.default_rng(3)
    phase = texture((24, 32, 32), 1.5, 4) > 0.03
    grey = np.where(phase, 150.0, 20.0) + rng.normal(0, 6, phase.shape)
    v = micro_ct_to_hu(Volume.from_geometry(np.clip(grey, 0, 255).astype(np.uint8), (0.02,) * 3),
                       bone_hu=1500, marrow_hu=-50)
    info = v.metadata["micro_ct_to_hu"]
    assert info["grey_marrow"] == pytest.approx(20, abs=1) and info["grey_bone"] == pytest.approx(150, abs=1)
    assert np.median(v.array[phase]) == pytest.approx(1500, abs=15)
    assert np.median(v.array[~phase]) == pytest.approx(-50, abs=15)
    explicit = micro_ct_to_hu(Volume.from_geometry(grey.astype(np.float32)), levels=(20, 150), bone_hu=1300)
    np.testing.assert_allclose(explicit.array, (grey - 20) / 130 * 1300, rtol=1e-5, atol=1e-2)


def test_real_lhdl_grey_levels(shared_data):
    from bonekit.io import read_volume

    g = read_volume(shared_data / LHDL)
    v = micro_ct_to_hu(g)
    info = v.metadata["micro_ct_to_hu"]
    assert info["grey_marrow"] < info["threshold"] < info["grey_bone"]
    below = g.array <= info["threshold"]
    assert np.median(v.array[below]) == pytest.approx(0.0, abs=1e-3)
    assert np.median(v.array[~below]) == pytest.approx(1800.0, abs=1e-3)


def test_real_fda_roi_mean_is_bvtv_times_bone_hu(shared_data):
    """A binary ROI with its true 51.3 µm spacing: the MDCT image keeps mean HU = BV/TV x 1800."""
    from bonekit.io import read_volume

    roi = read_volume(shared_data / FDA, spacing=(FDA_SPACING,) * 3).crop((slice(0, 120),) * 3)
    hu = micro_ct_to_hu(roi)
    lr = simulate_mdct(hu, MDCTModel(noise_hu=0))
    np.testing.assert_allclose(lr.spacing, 4 * FDA_SPACING)
    bvtv = float(np.mean(roi.array > 0))
    assert lr.array.mean() == pytest.approx(1800 * bvtv, rel=0.01)
    assert lr.array.max() < 1800 * 0.9                       # trabeculae are far below the MDCT resolution


# ============================================================================ make_pairs
def test_make_pairs_are_colocated_patches():
    tex = texture((16, 48, 48), 2.0, 7)
    hr = Volume.from_geometry(((tex > 0) * 1800).astype(np.float32), (0.05,) * 3)
    model = MDCTModel(scale=2, psf_fwhm_mm=(0.15, 0.15), slice_thickness_mm=None, noise_hu=0)
    lr_p, hr_p = make_pairs(hr, model, patch=16, stride=16, min_bone_fraction=0)
    assert lr_p.shape == hr_p.shape == (16 * 9, 16, 16) and lr_p.dtype == np.float32
    np.testing.assert_array_equal(hr_p[0], hr.array[0, :16, :16])
    lr = simulate_mdct(hr, model)
    up = upsample_to(lr, refined_grid(lr, 2)).array
    np.testing.assert_allclose(lr_p[9 + 4], up[1, 16:32, 16:32], atol=1e-5)   # slice 1, patch row 1, col 1
    assert np.mean([ncc(a, b) for a, b in zip(lr_p, hr_p)]) > 0.7
    # empty patches are skipped
    empty = hr.with_array(np.zeros(hr.shape, np.float32))
    lr_e, hr_e = make_pairs([hr, empty], model, patch=16)
    assert len(lr_e) == len(lr_p) - np.sum([np.mean(h > 400) < 0.02 for h in hr_p])
    with pytest.raises(BoneKitError):
        make_pairs(hr, model, patch=0)


# ============================================================================ register_rigid
def _textured_volume(n=40, seed=0, spacing=1.0):
    tex = texture((n, n, n), 2.0, seed)
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    body = ((x / (0.35 * n)) ** 2 + (y / (0.28 * n)) ** 2 + (z / (0.23 * n)) ** 2) < 1
    return Volume.from_geometry((body * 100 + tex * 300).astype(np.float32), (spacing,) * 3, (5.0, -3.0, 2.0))


def test_register_rigid_recovers_a_known_motion():
    import SimpleITK as sitk

    fixed = _textured_volume()
    n = fixed.shape[0]
    truth = sitk.Euler3DTransform()
    truth.SetCenter(fixed.index_to_physical([(n - 1) / 2] * 3).tolist())
    truth.SetRotation(*np.radians([3.0, -2.0, 4.0]))
    truth.SetTranslation((2.0, -1.5, 3.0))
    moving = Volume.from_sitk(sitk.Resample(fixed.to_sitk(), fixed.to_sitk(), truth, sitk.sitkLinear, 0.0))
    result = register_rigid(fixed, moving)
    # moving(x) = fixed(truth(x)) and moving(result(x)) ~ fixed(x): truth o result = identity
    r = np.array(truth.GetMatrix()).reshape(3, 3)
    c = np.array(truth.GetCenter())
    t4 = np.eye(4)
    t4[:3, :3], t4[:3, 3] = r, c + np.array(truth.GetTranslation()) - r @ c
    comp = t4 @ result.matrix
    angle = math.degrees(math.acos(np.clip((np.trace(comp[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 0.5
    pts = fixed.index_to_physical(np.array([[i, j, k] for i in (5, n - 6) for j in (5, n - 6)
                                            for k in (5, n - 6)], float))
    assert np.linalg.norm(pts @ comp[:3, :3].T + comp[:3, 3] - pts, axis=1).max() < 0.5   # 0.5 voxel = 0.5 mm
    assert result.resampled.same_grid(fixed)
    inner = (slice(8, -8),) * 3
    assert ncc(result.resampled.array[inner], fixed.array[inner]) > 0.95
    d = result.to_dict()
    assert len(d["rotation_deg"]) == 3 and "resampled" not in d


def test_register_rigid_rejects_bad_options():
    v = _textured_volume(16)
    for kwargs in (dict(metric="ssd"), dict(initial="magic"), dict(sampling=0), dict(shrink=(2, 1),
                                                                                      smoothing_vox=(1,))):
        with pytest.raises(BoneKitError):
            register_rigid(v, v, **kwargs)


# ============================================================================ match_slices (DTW)
def test_dtw_recovers_a_known_monotone_mapping():
    rng = np.random.default_rng(1)
    hr = texture((80, 48, 48), 1.5, 1).astype(np.float32)
    truth = np.array([3, 6, 9, 9, 12, 15, 21, 24, 27, 30, 31, 35, 40, 44, 50, 55, 60, 66, 70, 74])  # a repeat, a gap
    lr = hr[truth].reshape(len(truth), 24, 2, 24, 2).mean((2, 4)) + rng.normal(0, 0.02, (len(truth), 24, 24))
    for metric in ("ncc", "nmi"):
        match = match_slices(lr, hr, metric=metric)
        np.testing.assert_array_equal(match.hr_index, truth)
        assert match.similarity.shape == (20, 80)
    np.testing.assert_array_equal(match_slices(lr, hr, max_step=6).hr_index, truth)
    strict = match_slices(lr, hr, strict=True).hr_index
    assert np.all(np.diff(strict) > 0)
    assert np.sum(strict != truth) == 1                          # only the repeated slice moves
    assert np.diff(match_slices(lr, hr, max_step=2).hr_index).max() <= 2
    with pytest.raises(BoneKitError, match="strictly"):
        match_slices(hr[:10], hr[:5], strict=True)
    with pytest.raises(BoneKitError):
        match_slices(lr[0], hr)


# ============================================================================ align_slice
def _rotate_shift(image, angle_deg, shift_xy):
    from skimage.transform import EuclideanTransform, warp

    a = EuclideanTransform(rotation=math.radians(angle_deg), translation=shift_xy)
    return warp(image, a, order=1, preserve_range=True), np.linalg.inv(a.params)   # fixed -> moving map


def _check_alignment(result, truth, tol_px=1.0, tol_deg=1.0):
    assert result.method == "sift"
    assert abs(result.rotation_deg - math.degrees(math.atan2(truth[1, 0], truth[0, 0]))) < tol_deg
    np.testing.assert_allclose(result.translation_px, truth[:2, 2], atol=tol_px)


def test_align_slice_recovers_rotation_and_shift_synthetic():
    image = texture((128, 128), 2.0, 2)
    moving, truth = _rotate_shift(image, 5.0, (3.0, -2.0))
    result = align_slice(image, moving)
    _check_alignment(result, truth)
    inner = (slice(20, -20),) * 2
    assert ncc(result.warped[inner], image[inner]) > 0.99
    np.testing.assert_allclose(apply_alignment(moving, result.matrix), result.warped, atol=1e-4)


def test_align_slice_real_lhdl_slice(shared_data):
    from bonekit.io import read_volume

    image = read_volume(shared_data / LHDL).array[100].astype(float)
    moving, truth = _rotate_shift(image, 7.0, (4.5, -3.2))
    _check_alignment(align_slice(image, moving), truth)


def test_phase_correlation_fallback_recovers_a_shift():
    big = texture((200, 200), 2.0, 3)
    shifted = ndimage.shift(big, (2.3, -1.7), order=3, mode="nearest")
    fixed, moving = big[30:-30, 30:-30], shifted[30:-30, 30:-30]
    result = align_slice(fixed, moving, method="phase")
    assert result.method == "phase" and result.rotation_deg == 0
    np.testing.assert_allclose(result.translation_px, (-1.7, 2.3), atol=0.15)   # (x, y) = (col, row)
    # too few features for SIFT -> the same answer through the automatic fallback
    auto = align_slice(fixed, moving, min_inliers=10 ** 6)
    assert auto.method == "phase"
    np.testing.assert_allclose(auto.translation_px, result.translation_px)
    with pytest.raises(BoneKitError, match="SIFT"):
        align_slice(fixed, moving, method="sift", min_inliers=10 ** 6)


# ============================================================================ pair_volumes
def _specimen(seed=2, shape=(32, 64, 64), body=False):
    """Binary trabecular-like texture (1500 HU in 0 HU), optionally inside an ellipsoidal specimen in air."""
    tex = texture(shape, 1.5, seed)
    hu = (tex > 0.02) * 1500.0
    if body:
        z, y, x = [(g - (n - 1) / 2) / n for g, n in zip(np.mgrid[:shape[0], :shape[1], :shape[2]], shape)]
        hu = np.where((x / 0.42) ** 2 + (y / 0.36) ** 2 + (z / 0.6) ** 2 < 1, hu, -1000.0)
    return Volume.from_geometry(hu.astype(np.float32), (0.1,) * 3, (1.0, 2.0, 3.0))


def test_pair_volumes_register_undoes_a_misregistration():
    hr = _specimen(body=True)
    model = MDCTModel(scale=2, psf_fwhm_mm=(0.25, 0.25), slice_thickness_mm=None, noise_hu=10)
    lr = simulate_mdct(hr, model)
    moved = Volume(lr.array, lr.affine.copy())
    moved.affine[:3, 3] += (0.33, -0.27, 0.41)                 # the clinical CT's geometry is off
    aligned = pair_volumes(lr, hr, 2, "none", min_coverage=0)
    off = pair_volumes(moved, hr, 2, "none", min_coverage=0)
    fixed, info = pair_volumes(moved, hr, 2, "register", min_coverage=0, return_info=True)
    assert len(fixed) == 32 and fixed[0][0].shape == (64, 64)
    np.testing.assert_allclose(info["registration"].translation_mm, (-0.33, 0.27, -0.41), atol=0.05)

    def score(pairs):
        return np.mean([ncc(a, b) for a, b in pairs[4:-4]])
    assert score(fixed) > score(off) + 0.1
    assert score(fixed) == pytest.approx(score(aligned), abs=0.03)
    # slices that leave the micro-CT are dropped by min_coverage
    part = hr.crop((slice(6, 26), slice(None), slice(None)))       # a micro-CT of 20 of the 32 slices
    kept = pair_volumes(moved, part, 2, "register", return_info=True)[1]["slice_index"]
    np.testing.assert_array_equal(kept, np.arange(6, 26))


def test_pair_volumes_dtw_matches_slices():
    hr = _specimen(shape=(24, 64, 64))
    lr = simulate_mdct(hr, MDCTModel(scale=2, psf_fwhm_mm=(0.25, 0.25), slice_thickness_mm=None, noise_hu=10))
    pairs, info = pair_volumes(lr, hr, 2, "dtw", return_info=True)
    assert len(pairs) == 12 and pairs[0][0].shape == pairs[0][1].shape == (64, 64)
    offset = info["match"].hr_index - 2 * np.arange(12)                # LR slice i covers HR slices 2i, 2i+1
    assert set(offset) <= {0, 1}
    for a in info["alignments"]:                                      # nothing to correct in-plane
        assert np.all(np.abs(a.translation_px) < 0.5) and abs(a.rotation_deg) < 0.5
    assert np.mean([ncc(a, b) for a, b in pairs]) > 0.75
    with pytest.raises(BoneKitError):
        pair_volumes(lr, hr, 2, "magic")


# ============================================================================ load_lumbarsr
def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_load_lumbarsr_official_layout(tmp_path):
    root = tmp_path / "LumbarSR"
    for n in (1, 2):
        sid, short = f"Lumbar_{n:02d}", f"Lumbar{n:02d}"
        for seq in ("195X_195Y_500Z_S", "586X_586Y_1000Z_S", "195X_195Y_500Z_B"):
            _touch(root / "RegisteredData" / sid / f"{short}_ClinicalCT_{seq}_registered.nii.gz")
            _touch(root / "BoneMask" / sid / f"{short}_ClinicalCT_{seq}_registered_BoneMask.nii.gz")
        _touch(root / "RegisteredData" / sid / f"{short}_MicroPCCT_105um.nii.gz")
        _touch(root / "BoneMask" / sid / f"{short}_MicroPCCT_105um_BoneMask.nii.gz")
    pairs = load_lumbarsr(root)
    assert [p.id for p in pairs] == ["Lumbar_01", "Lumbar_02"]
    p = pairs[0]
    assert isinstance(p, SpecimenPair) and p.registered
    assert p.sequence == "195X_195Y_500Z_S"
    assert p.clinical_ct.name == "Lumbar01_ClinicalCT_195X_195Y_500Z_S_registered.nii.gz"
    assert p.micro_ct.name == "Lumbar01_MicroPCCT_105um.nii.gz"
    assert p.micro_mask.name == "Lumbar01_MicroPCCT_105um_BoneMask.nii.gz"
    assert p.clinical_mask.name == "Lumbar01_ClinicalCT_195X_195Y_500Z_S_registered_BoneMask.nii.gz"
    assert set(p.sequences) == {"195X_195Y_500Z_S", "586X_586Y_1000Z_S", "195X_195Y_500Z_B"}
    large = load_lumbarsr(root / "RegisteredData", sequence="586x_586y_1000z_s")
    assert large[1].clinical_ct.name == "Lumbar02_ClinicalCT_586X_586Y_1000Z_S_registered.nii.gz"
    assert large[1].clinical_mask is not None
    assert load_lumbarsr(root, masks=False)[0].micro_mask is None
    with pytest.raises(BoneKitError, match="several clinical series"):
        load_lumbarsr(root, sequence=None)
    with pytest.raises(BoneKitError, match="no clinical series"):
        load_lumbarsr(root, sequence="195X_195Y_1000Z_S")


def test_load_lumbarsr_generic_and_dicom_layouts(tmp_path):
    flat = tmp_path / "flat"
    for sid in ("S1", "S2"):
        _touch(flat / f"{sid}_CT.nii.gz")
        _touch(flat / f"{sid}_microCT.nii.gz")
    _touch(flat / "S1_microCT_mask.nii.gz")
    pairs = load_lumbarsr(flat)
    assert [(p.id, p.clinical_ct.name, p.micro_ct.name) for p in pairs] == [
        ("S1", "S1_CT.nii.gz", "S1_microCT.nii.gz"), ("S2", "S2_CT.nii.gz", "S2_microCT.nii.gz")]
    assert pairs[0].micro_mask.name == "S1_microCT_mask.nii.gz" and not pairs[0].registered
    dicom = tmp_path / "LumbarSR" / "original_dicom" / "Lumbar_07"
    _touch(dicom / "clinical_ct" / "195X_195Y_500Z_S" / "1.dcm")
    _touch(dicom / "micro_ct" / "1.dcm")
    (p,) = load_lumbarsr(tmp_path / "LumbarSR")
    assert p.id == "Lumbar_07" and p.clinical_ct.is_dir() and p.micro_ct.name == "micro_ct"


def test_load_lumbarsr_missing_or_empty_says_what_is_expected(tmp_path):
    with pytest.raises(BoneKitError, match="RegisteredData"):
        load_lumbarsr(tmp_path / "nowhere")
    with pytest.raises(BoneKitError, match="MicroPCCT"):
        load_lumbarsr(tmp_path)
    _touch(tmp_path / "Lumbar_01" / "Lumbar01_ClinicalCT_195X_195Y_500Z_S_registered.nii.gz")
    with pytest.raises(BoneKitError, match="Lumbar_01: no micro-CT"):
        load_lumbarsr(tmp_path)


def test_specimen_pair_loads_volumes(tmp_path):
    from bonekit.io import write_volume

    ct = Volume.from_geometry(np.zeros((4, 5, 6), np.int16), (0.2, 0.2, 0.5))
    micro = Volume.from_geometry(np.ones((8, 10, 12), np.int16), (0.1, 0.1, 0.1))
    write_volume(ct, tmp_path / "A_CT.nii.gz")
    write_volume(micro, tmp_path / "A_microCT.nii.gz")
    (pair,) = load_lumbarsr(tmp_path)
    lr, hr = pair.load()
    assert lr.shape == (4, 5, 6) and hr.shape == (8, 10, 12) and lr.units == "HU"

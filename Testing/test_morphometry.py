"""Trabecular morphometry against analytic structures, BoneJ's conventions and the real micro-CT."""

from pathlib import Path

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.morphometry import morphometry
from bonekit.volume import Volume, make_affine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "microct"


def volume(array, spacing=(1.0, 1.0, 1.0)):
    """A volume from a (k, j, i) array with voxel size (sx, sy, sz)."""
    return Volume(np.asarray(array), make_affine(spacing))


def plates(thickness, gap, n_plates=4, size=40):
    """Plates normal to i, ``thickness`` voxels each, ``gap`` voxels apart (marrow between)."""
    period = thickness + gap
    a = np.zeros((size, size, n_plates * period), np.uint8)
    for p in range(n_plates):
        a[:, :, p * period + gap // 2: p * period + gap // 2 + thickness] = 1
    return a


@pytest.mark.parametrize("t, gap, spacing", [(4, 8, 0.05), (5, 9, 0.1), (6, 10, 0.02)])
def test_parallel_plates(t, gap, spacing):
    """BV/TV exact; Tb.Th/Tb.Sp as BoneJ (even widths exact, odd ones one voxel more); BS/BV = 2/thickness
    (each plate has two faces, the cut faces are not bone surface)."""
    a = plates(t, gap)
    result, _ = morphometry(volume(a, (spacing,) * 3), binary=True)
    bonej = lambda w: (w if w % 2 == 0 else w + 1) * spacing  # noqa: E731
    assert result.BV_TV == pytest.approx(t / (t + gap))
    assert result.Tb_Th == pytest.approx(bonej(t)) and result.Tb_Th_SD == pytest.approx(0, abs=1e-12)
    # the first and last marrow slabs (gap//2 and the rest) lie against the image border, which is
    # not background: a slab w wide there measures 2w; the 3 inner gaps measure as BoneJ's plates
    g0, g1 = gap // 2, gap - gap // 2
    sp = (3 * gap * bonej(gap) + g0 * 2 * g0 * spacing + g1 * 2 * g1 * spacing) / (3 * gap + g0 + g1)
    assert result.Tb_Sp == pytest.approx(sp)
    assert result.Tb_N == pytest.approx(1 / (bonej(t) + sp))
    assert result.BS_BV == pytest.approx(2 / (t * spacing), rel=1e-6)
    assert result.method == "binary" and result.threshold is None
    # no intercept along the plates: the MIL ellipsoid is unbounded in their plane (DA 1); every
    # slice k cuts the plates across, so BA/TA is BV/TV in each
    assert result.DA == pytest.approx(1.0)
    assert result.BA_TA == pytest.approx(t / (t + gap)) and result.BA_TA_slices == pytest.approx([t / (t + gap)] * 40)


def test_anisotropic_plates_equal_isotropic_ones():
    """The same physical plates sampled twice as finely across them: the same thickness in mm."""
    coarse, _ = morphometry(volume(plates(4, 8), (0.1, 0.1, 0.1)), binary=True)
    fine, _ = morphometry(volume(plates(8, 16), (0.05, 0.1, 0.1)), binary=True)
    assert fine.Tb_Th == pytest.approx(coarse.Tb_Th) and fine.Tb_Sp == pytest.approx(coarse.Tb_Sp)
    assert fine.BV_TV == pytest.approx(coarse.BV_TV) and fine.BS_BV == pytest.approx(coarse.BS_BV, rel=1e-6)


def test_itk_option_gives_the_plate_model_values():
    """ITKBoneMorphometry on plates normal to an axis: P_L = 2/(3p) per mm, so Tb.Th = 1.5 t,
    Tb.Sp = 1.5 (p - t), Tb.N = 2/(3p), BS/BV = 4/(3t) (its documented plate-model bias)."""
    itk = pytest.importorskip("itk")
    if not hasattr(itk, "BoneMorphometryFeaturesFilter"):
        pytest.skip("itk-bonemorphometry is not installed")
    t, gap, s = 4, 8, 0.05
    result, _ = morphometry(volume(plates(t, gap), (s,) * 3), binary=True, itk=True)
    p = t + gap
    got = result.itk
    assert got["BV/TV"] == pytest.approx(t / p)
    assert got["Tb.Th"] == pytest.approx(1.5 * t * s) and got["Tb.Sp"] == pytest.approx(1.5 * gap * s)
    assert got["Tb.N"] == pytest.approx(2 / (3 * p * s)) and got["BS/BV"] == pytest.approx(4 / (3 * t * s))
    assert morphometry(volume(plates(t, gap), (s,) * 3), binary=True)[0].itk is None
    with pytest.raises(BoneKitError, match="isotropic"):
        morphometry(volume(plates(t, gap), (0.05, 0.05, 0.1)), binary=True, itk=True)


def test_box_mask_equals_the_cropped_image():
    rng = np.random.default_rng(2)
    from scipy import ndimage

    grey = ndimage.gaussian_filter(rng.standard_normal((40, 40, 40)), 2.0) * 400 + 300
    image = volume(grey.astype(np.float32), (0.05, 0.05, 0.05))
    mask = np.zeros(grey.shape, np.uint8)
    mask[6:34, 4:30, 8:38] = 1
    masked, maps = morphometry(image, image.with_array(mask), threshold=300.0, maps=True)
    cropped, _ = morphometry(volume(grey[6:34, 4:30, 8:38].astype(np.float32), (0.05, 0.05, 0.05)), threshold=300.0)
    for key in ("BV/TV", "BA/TA", "Tb.Th", "Tb.Th.SD", "Tb.Sp", "Tb.Sp.SD", "Tb.N", "Conn.D", "Euler", "DA"):
        assert masked.to_dict()[key] == pytest.approx(cropped.to_dict()[key], rel=1e-9), key
    th = maps["Tb.Th"]  # on the mask's bounding box, with its geometry
    assert th.shape == (28, 26, 30) and np.allclose(th.origin, image.index_to_physical([8, 4, 6]))
    assert np.nanmean(th.array) == pytest.approx(masked.Tb_Th)
    bone = grey[6:34, 4:30, 8:38] > 300.0
    assert np.array_equal(np.isfinite(th.array), bone)


def test_blur_inside_a_small_mask_equals_blurring_the_whole_image():
    """Only the mask's box (and the blur's reach) is read: the same voxels as blurring everything."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    grey = (ndimage.gaussian_filter(rng.standard_normal((50, 50, 50)), 2.0) * 400 + 300).astype(np.float32)
    image = volume(grey, (0.1, 0.1, 0.1))
    mask = np.zeros(grey.shape, np.uint8)
    z, y, x = np.ogrid[:50, :50, :50]
    mask[(z - 20) ** 2 + (y - 25) ** 2 + (x - 27) ** 2 <= 100] = 1
    result, _ = morphometry(image, image.with_array(mask), threshold="default", blur_mm=0.25)
    blurred = ndimage.gaussian_filter(grey, 2.5, mode="nearest")
    assert result.BV_TV == pytest.approx((blurred > result.threshold)[mask == 1].mean(), abs=1e-12)


def test_slice_wise_bone_area_fraction():
    """BA/TA (David et al.): bone / mask voxels in each slice k, averaged over the slices holding mask
    voxels -- unweighted, so not BV/TV when the slices' mask areas differ. Slice k of the mask has
    k + 1 rows of 20 voxels, the bone one row: fractions 1/(k + 1). The list runs from the mask's first
    slice (k = 2) to its last (k = 8); slice 5, without mask voxels, is null."""
    mask = np.zeros((10, 20, 20), np.uint8)
    bone = np.zeros_like(mask)
    for k in (2, 3, 4, 6, 7, 8):
        mask[k, :k + 1] = 1
        bone[k, 0] = 1
    image = volume(bone, (0.1, 0.1, 0.1))
    result, _ = morphometry(image, image.with_array(mask), binary=True)
    fractions = [1 / (k + 1) for k in (2, 3, 4, 6, 7, 8)]
    assert result.BA_TA_slices[3] is None
    assert [f for f in result.BA_TA_slices if f is not None] == pytest.approx(fractions)
    assert len(result.BA_TA_slices) == 7
    assert result.BA_TA == pytest.approx(np.mean(fractions))
    assert result.BV_TV == pytest.approx(6 * 20 / mask.sum()) and result.BV_TV != pytest.approx(result.BA_TA)
    values = result.to_dict()
    assert values["BA/TA"] == result.BA_TA and values["BA/TA.slices"] == result.BA_TA_slices
    assert list(values)[-1] == "BA/TA.slices"  # the long list last, after the scalars


def test_degree_of_anisotropy_is_the_cores():
    """Morphometry's DA is :func:`bonekit.anisotropy.degree_of_anisotropy` on the thresholded bone inside
    the mask, in mm: a random structure stretched 2x along k (smoothing sigma 4, 2, 2 voxels) gives
    about 0.65 (BoneJ2's 1 - lambda_min/lambda_max of a 1.7:1:1 digital MIL ellipsoid; see
    test_anisotropy)."""
    from scipy import ndimage

    from bonekit.anisotropy import degree_of_anisotropy

    rng = np.random.default_rng(3)
    grey = ndimage.gaussian_filter(rng.standard_normal((48, 48, 48)), (4, 2, 2), mode="wrap").astype(np.float32)
    image = volume(grey, (0.05, 0.05, 0.05))
    mask = np.zeros(grey.shape, np.uint8)
    mask[4:44, 6:42, 2:46] = 1
    result, _ = morphometry(image, image.with_array(mask), threshold=0.0)
    box = (slice(4, 44), slice(6, 42), slice(2, 46))
    assert result.DA == degree_of_anisotropy(grey[box] > 0, None, (0.05, 0.05, 0.05))["DA"]
    assert 0.5 < result.DA < 0.8


def test_threshold_methods_and_blur():
    """A two-level image: every automatic method finds a level between the two, bone > level."""
    a = plates(4, 8).astype(np.float32) * 1000 + 100
    for method in ("default", "isodata", "otsu"):
        result, _ = morphometry(volume(a, (0.05,) * 3), threshold=method)
        assert 100 <= result.threshold < 1100 and result.BV_TV == pytest.approx(4 / 12), method
    fixed, _ = morphometry(volume(a, (0.05,) * 3), threshold="600")
    assert fixed.threshold == 600 and fixed.method == "fixed"
    blurred, _ = morphometry(volume(a, (0.05,) * 3), threshold=600.0, blur_mm=0.05)
    assert blurred.BV_TV == pytest.approx(4 / 12)  # a symmetric blur keeps the half-way edge


def test_bad_input():
    a = plates(4, 8)
    image = volume(a, (0.05,) * 3)
    with pytest.raises(BoneKitError, match="mask is empty"):
        morphometry(image, image.with_array(np.zeros_like(a)), binary=True)
    with pytest.raises(BoneKitError, match="grid|shape|differ"):
        morphometry(image, volume(np.ones((5, 5, 5), np.uint8)), binary=True)
    with pytest.raises(BoneKitError, match="No bone"):
        morphometry(volume(np.zeros_like(a), (0.05,) * 3), binary=True)
    with pytest.raises(BoneKitError, match="Everything inside the mask is bone"):
        morphometry(volume(np.ones_like(a), (0.05,) * 3), binary=True)
    with pytest.raises(BoneKitError, match="binary"):
        morphometry(volume(a * np.arange(a.shape[2]), (0.05,) * 3), binary=True)
    with pytest.raises(BoneKitError):
        morphometry(image, threshold="magic")


needs_data = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data (the real micro-CT)")


@needs_data
def test_lhdl_full_resolution_bv_tv():
    """Gaussian sigma = 1 voxel and threshold > 63 at full resolution: BV/TV 23.37 % (data README)."""
    from bonekit.io import read_volume
    from bonekit.morphometry import binarise

    image = read_volume(DATA / "lhdl_3155_D_4_bc_19.5um.nii.gz")
    level, _, bone = binarise(image, 63, blur_mm=0.0195)
    assert level == 63 and round(100 * bone.mean(), 2) == 23.37


@needs_data
def test_lhdl_ciclope_pipeline_bv_tv():
    """ciclope's LHDL 3155 example (blur 1 voxel, resample 2 with a spline of order 2, threshold
    > 63, closing by a ball of 3 voxels, largest component) published 247 062 bone voxels of 100^3:
    BV/TV 24.71 %."""
    from bonekit.io import read_volume
    from bonekit.morphometry import clean_binary

    image = read_volume(DATA / "lhdl_3155_D_4_bc_19.5um.nii.gz")
    voxel = float(image.spacing[0]) * 199 / 99  # the first and last voxel centres stay
    binary, level, _ = clean_binary(image, 63, blur_mm=float(image.spacing[0]), resample=2, close_mm=3 * voxel,
                                    largest=True)
    assert binary.array.shape == (100, 100, 100) and binary.spacing == pytest.approx([voxel] * 3)
    assert int(binary.array.sum()) == 247062
    result, _ = morphometry(binary, binary=True)
    assert round(100 * result.BV_TV, 2) == 24.71


def _fda(name):
    from bonekit.io import read_volume

    files = sorted((DATA / "fda_vertebra_roi_51um").glob(f"*{name}*"))
    assert files, name
    return read_volume(files[0], spacing=(0.0512998,) * 3)  # the header's 1.0 is wrong


@needs_data
@pytest.mark.parametrize("name, bvtv", [("10_07131", 0.2290), ("1_67976", 0.2649), ("5_06219", 0.2214),
                                        ("9_04216", 0.2376), ("9_67960", 0.1670)])
def test_fda_roi_bv_tv(name, bvtv):
    from bonekit.morphometry import binarise

    image = _fda(name)
    _, method, bone = binarise(image, binary=True)
    assert method == "binary" and round(bone.mean(), 4) == bvtv


@needs_data
def test_fda_roi_full_morphometry():
    """One ROI through the whole pipeline in mm: BV/TV as listed, TV from the corrected spacing, and
    the direct Tb.Th between the plate-model thickness 2/(BS/BV) (exact for plates) and twice it
    (rods: Hildebrand & Rüegsegger 1997)."""
    image = _fda("9_67960")
    result, _ = morphometry(image, binary=True)
    assert round(result.BV_TV, 4) == 0.1670
    assert result.TV == pytest.approx(np.prod(image.array.shape) * 0.0512998 ** 3)
    assert 1.0 <= result.Tb_Th * result.BS_BV / 2 <= 2.2 and result.Tb_Sp > result.Tb_Th and result.Conn_D > 0


@pytest.mark.parametrize("shape, expected", [("plate", 0.0), ("rod", 3.0), ("sphere", 4.0)])
def test_structure_model_index_of_ideal_shapes(shape, expected):
    """SMI is 0 for plates, 3 for rods, 4 for spheres (Hildebrand & Rüegsegger 1997), also with
    anisotropic voxels (the shapes drawn in mm)."""
    for spacing in ((0.1, 0.1, 0.1), (0.1, 0.1, 0.2)):  # x, y, z
        n = [61, 61, 61 if spacing[2] == 0.1 else 31]
        k, j, i = np.meshgrid(*[(np.arange(m) - (m - 1) / 2) * s for m, s in zip(n[::-1], spacing[::-1])],
                              indexing="ij")
        bone = {"plate": np.abs(i) <= 0.5, "rod": i ** 2 + j ** 2 <= 1.0, "sphere": i ** 2 + j ** 2 + k ** 2 <= 4.0}[shape]
        result, _ = morphometry(volume(bone.astype(np.uint8), spacing), binary=True)
        assert result.SMI == pytest.approx(expected, abs=0.15), spacing


def test_smi_of_a_speck_that_smoothing_dissolves_is_none():
    """A two-voxel speck has a surface but none after SMI's one-voxel smoothing: no crash, SMI None."""
    image = np.zeros((12, 12, 12), np.uint8)
    image[5, 5, 5:7] = 1
    result, _ = morphometry(Volume.from_geometry(image, spacing=(0.05,) * 3), binary=True)
    assert result.BV_TV == pytest.approx(2 / 12 ** 3)
    assert result.SMI is None


def test_clean_binary_resamples_closes_and_keeps_the_largest_part():
    """A plate with a one-voxel crack and a loose speck: the closing mends the crack, the largest
    component drops the speck, resampling keeps the first voxel centre and scales the spacing by
    (n_in - 1) / (n_out - 1); bad factors and radii are refused."""
    from bonekit.morphometry import clean_binary

    a = np.zeros((21, 21, 21), np.float32)
    a[:, :, 6:12] = 100.0
    a[:, :, 9] = 0.0  # the crack
    a[2, 2, 18] = 100.0  # the speck
    image = Volume.from_geometry(a, spacing=(0.1, 0.2, 0.3), origin=(5.0, -3.0, 1.0))
    raw, level, method = clean_binary(image, 50)
    assert level == 50 and method == "fixed" and raw.array.sum() == 5 * 21 * 21 + 1
    mended, _, _ = clean_binary(image, 50, close_mm=0.1, largest=True)
    assert mended.array.sum() == 6 * 21 * 21 and mended.array[2, 2, 18] == 0
    assert mended.same_grid(image)
    half, _, _ = clean_binary(image, 50, resample=2.0)
    assert half.array.shape == (10, 10, 10)  # scipy's zoom: round(21 / 2)
    np.testing.assert_allclose(half.spacing, np.array([0.1, 0.2, 0.3]) * 20 / 9)  # (21 - 1) / (10 - 1)
    np.testing.assert_allclose(half.origin, image.origin)
    for bad in (dict(resample=0.0), dict(close_mm=-1.0), dict(blur_mm=-0.1), dict(resample=50.0)):
        with pytest.raises(BoneKitError):
            clean_binary(image, 50, **bad)
    with pytest.raises(BoneKitError, match="No bone"):
        clean_binary(image, 500)

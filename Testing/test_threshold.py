"""ImageJ-compatible thresholds (bonekit.threshold) against hand-worked and known answers.

Every expected level below was worked by hand (shown in the comments) and also confirmed by
running the real ImageJ classes (AutoThresholder, IJ.setAutoThreshold "... dark stack") of
ImageJ 1.52i and 1.54u on the same histograms and images.
"""

import numpy as np
import pytest

from bonekit.errors import BoneKitError
from bonekit.threshold import (image_histogram, imagej_default, imagej_ij_isodata, imagej_isodata,
                               otsu, threshold_image)


def hist(**bins):
    """A 256-bin histogram from keywords b<bin>=<count>, e.g. hist(b20=30, b200=10)."""
    h = np.zeros(256, np.int64)
    for name, count in bins.items():
        h[int(name[1:])] = count
    return h


def gauss_hist(air_bin=None, air=0):
    """Toy CT: marrow N(70, 20) x 70000 and bone N(150, 20) x 30000 (rounded pdf counts),
    plus optionally `air` counts in one bin (43000 = 30 % of the total)."""
    i = np.arange(256)
    pdf = lambda mu: np.exp(-0.5 * ((i - mu) / 20.0) ** 2) / (20.0 * np.sqrt(2 * np.pi))
    h = np.round(70000 * pdf(70) + 30000 * pdf(150)).astype(np.int64)
    if air_bin is not None:
        h[air_bin] += air
    return h


def skimage_like_isodata(h):
    """The reference's description of skimage.filters.threshold_isodata on unit-width bins:
    the smallest t with 0 <= (mean(<= t) + mean(> t)) / 2 - t < 1. No bins dropped, no capping."""
    i = np.arange(h.size)
    for t in range(h.size - 1):
        lo, hi = h[:t + 1], h[t + 1:]
        if lo.sum() and hi.sum():
            mid = (np.dot(i[:t + 1], lo) / lo.sum() + np.dot(i[t + 1:], hi) / hi.sum()) / 2
            if 0 <= mid - t < 1:
                return t
    raise AssertionError("no isodata level")


# --- histogram methods, worked by hand ----------------------------------------------------

# A: two counts in each of bins 50, 60 | 200, 210. No capping (max 2 = second 2).
# Default / IJ_IsoData, split m from lo=50:
#   m = 50..59: low mean 50, high mean (120+400+420)/6 = 156.67 -> result 103.33; continue while m+2 <= 103.33
#   m = 60..: low mean (100+120)/4 = 55, high (400+420)/4 = 205 -> result 130; continue while m+2 <= 130
#   m = 129: 131 > 130 -> stop, level round(130) = 130.
# IsoData: g starts at 51; L=50, H=156.67 -> 103 != g ...; g=60: L=50, H=205 -> 128 != 60;
#   g=61..199: L=220//4=55, H=205 -> round(130)=130 -> g=130 fits -> 130.
A = hist(b50=2, b60=2, b200=2, b210=2)


def test_symmetric_two_cluster_histogram():
    assert imagej_default(A) == 130
    assert imagej_ij_isodata(A) == 130
    assert imagej_isodata(A) == 130
    # Otsu: all splits between 60 and 200 have the same (maximal) between-class variance; the
    # current ImageJ Otsu takes the first one, the top of the lower cluster.
    assert otsu(A) == 60


# B: 30 counts in bin 20, 10 in bin 40, 10 in bin 200.
# IJ_IsoData: m=20..39: low 20, high (400+2000)/20 = 120 -> 70, go on while m+2 <= 70;
#   m=40..: low (600+400)/40 = 25, high 200 -> 112.5; stop at m=111 (113 > 112.5);
#   level = Java round(112.5) = 113 (halves up; Python's round would give 112).
# Default: the mode (bin 20: 30) is more than 2x the second (10), so it is capped to 15:
#   m=40..: low (300+400)/25 = 28, high 200 -> 114; stop at m=113 -> 114.
# IsoData: g from 21; g=21..39: L=20, H=120 -> 70; g=40: L=20, H=200 -> 110;
#   g=41..: L=1000//40=25, H=200 -> round(112.5)=113 -> g=113 fits -> 113.
B = hist(b20=30, b40=10, b200=10)


def test_mode_capping_and_java_rounding():
    assert imagej_ij_isodata(B) == 113
    assert imagej_default(B) == 114
    assert imagej_isodata(B) == 113


def test_mode_is_searched_over_all_bins_including_bin_0():
    # Air in bin 0 (dropped by IsoData) still takes part in the capping test, as in ImageJ:
    # with 50 counts in bin 0, the mode is bin 0 and 50 < 2*30, so nothing is capped -> 113.
    assert imagej_default(B + hist(b0=50)) == 113
    # with 1000 counts, bin 0 is capped (to no effect, it is dropped) and bin 20 is not -> 113.
    assert imagej_default(B + hist(b0=1000)) == 113
    # IsoData counts bin 0 in L (integer division): g=41..: L = 1000//90 = 11, H = 200
    #   -> round(105.5) = 106; with 1000 air counts L = 1000//1040 = 0 -> round(100) = 100.
    assert imagej_isodata(B + hist(b0=50)) == 106
    assert imagej_isodata(B + hist(b0=1000)) == 100


def test_stop_rule_is_imagej_loop_not_literal_reading():
    # C: one count in bins 1, 3 and 9. ImageJ's loop: m=1: low 1, high (3+9)/2 = 6 -> 3.5,
    #   3 <= 3.5 so go on; m=2: same 3.5, 4 > 3.5 -> stop -> round(3.5) = 4.
    # (Testing "m+1 > result" at the split m would go on to m=5 and give round(5.5) = 6.)
    C = hist(b1=1, b3=1, b9=1)
    assert imagej_ij_isodata(C) == 4
    assert imagej_default(C) == 4
    # IsoData: g=2: L=1, H=6 -> 4; g=3: L=1, H=9 -> 5; g=4: L=4//2=2, H=9 -> 6; ...; g=6 fits.
    assert imagej_isodata(C) == 6


def test_otsu_hand_worked():
    # counts 2, 1, 1 in bins 1, 2, 3. Between-class variance w0*w1*(mu0-mu1)^2:
    #   k=1: .5*.5*(1-2.5)^2 = 0.5625; k=2: .75*.25*(4/3-3)^2 = 0.5208 -> k=1.
    assert otsu(np.array([0, 2, 1, 1, 0])) == 1


def test_default_ignores_bins_0_and_255():
    # A huge air peak in bin 0 or a saturated bin 255 does not move Default; IsoData moves.
    # IsoData with 10000 air: L = 220//10004 = 0, H = 205 -> round(102.5) = 103.
    for extra in (hist(b0=10000), hist(b255=10000)):
        assert imagej_default(A + extra) == 130
        assert imagej_ij_isodata(A + extra) == 130
    assert imagej_isodata(A + hist(b0=10000)) == 103


def test_reference_toy_ct_air_facts():
    # The reference's observations on an 8-bit toy CT, on a deterministic two-Gaussian histogram:
    clean = gauss_hist()
    assert [imagej_default(clean), imagej_ij_isodata(clean), imagej_isodata(clean)] == [109, 109, 108]
    # 30 % air at 0: Default and IJ_IsoData do not move, IsoData and the skimage rule collapse.
    air0 = gauss_hist(0, 43000)
    assert imagej_default(air0) == imagej_ij_isodata(air0) == 109
    assert imagej_isodata(air0) == 63
    assert skimage_like_isodata(air0) < 80
    # 30 % air at 10: mode capping keeps Default near the clean level; without capping it falls.
    air10 = gauss_hist(10, 43000)
    assert imagej_default(air10) == 107
    assert imagej_ij_isodata(air10) == 80
    assert imagej_isodata(air10) == 83


def test_default_and_skimage_rule_differ_by_design():
    # Same intermeans idea, different bookkeeping: on A the skimage rule agrees (t=130), but it
    # keeps bin 0, so an air peak there moves it and not Default.
    assert skimage_like_isodata(A) == 130
    assert skimage_like_isodata(A + hist(b0=10000)) != imagej_default(A + hist(b0=10000))


def test_degenerate_histograms_follow_imagej():
    # At most one non-empty bin once bins 0 and 255 are dropped: ImageJ answers len // 2.
    assert imagej_default(hist(b100=5)) == 128
    assert imagej_default(hist(b0=5, b255=5)) == 128
    # IsoData finds no level: ImageJ returns 0.
    assert imagej_isodata(hist(b100=5)) == 0


# --- images -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bimodal():
    """uint8 32^3: 30 % bone N(160, 8), marrow N(80, 8); the classes are 5 sd from 120."""
    rng = np.random.default_rng(0)
    shape = (32, 32, 32)
    truth = rng.random(shape) < 0.3
    img = np.where(truth, rng.normal(160, 8, shape), rng.normal(80, 8, shape))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("method", ["default", "ij_isodata", "isodata", "otsu"])
def test_bimodal_image_gives_the_truth(bimodal, method):
    img, truth = bimodal
    level, binary = threshold_image(img, method)
    assert 100 <= level <= 140
    assert np.array_equal(binary, truth)


def test_uint8_level_is_the_bin(bimodal):
    img, _ = bimodal
    h = np.bincount(img.ravel(), minlength=256)
    for method, fn in (("default", imagej_default), ("isodata", imagej_isodata), ("otsu", otsu)):
        level, binary = threshold_image(img, method)
        assert level == fn(h) and isinstance(level, int)
        assert np.array_equal(binary, img > level)


def test_float_and_uint16_with_full_range_match_uint8(bimodal):
    # A float image holding the integers 0..255 (with 0 and 255 present) bins exactly like the
    # uint8 one (floor(256 v / 255) = v for v < 255), and ImageJ's lower = (t+1)/255 * 255 = t+1;
    # so does uint16 = 257 * uint8 (lower = 257 (t+1)). Same foreground, levels just below lower.
    img, _ = bimodal
    img = img.copy()
    img.flat[0], img.flat[1] = 0, 255
    t, ref = threshold_image(img)
    level, binary = threshold_image(img.astype(np.float32))
    assert np.array_equal(binary, ref)
    assert level == float(np.nextafter(np.float32(t + 1), np.float32(-np.inf)))
    level, binary = threshold_image(img.astype(np.uint16) * 257)
    assert np.array_equal(binary, ref) and level == 257 * (t + 1) - 1


def test_hu_image_maps_the_bin_level_back_like_imagej():
    # HU range -1000..1550 (2550 = 255 * 10): v = -1000 + 10 k falls in bin k (k < 255).
    # Interior voxels in bins 50, 60, 200, 210 (histogram A) plus one voxel at each end
    # (bins 0 and 255, ignored by Default) -> t = 130.
    # ImageJ: lower = -1000 + (131 / 255) * 2550 = 309.9999999999998, foreground = v >= lower.
    img = np.array([-1000, 1550, -500, -500, -400, -400, 1000, 1000, 1100, 1100], np.float32)
    counts, lo, hi = image_histogram(img)
    assert (lo, hi) == (-1000.0, 1550.0)
    assert np.array_equal(counts, A + hist(b0=1, b255=1))
    level, binary = threshold_image(img)
    assert level == float(np.nextafter(np.float32(310.0), np.float32(-np.inf)))   # 309.99997
    assert binary.tolist() == [False, True, False, False, False, False, True, True, True, True]
    # the same values as int16: level = ceil(lower) - 1 = 309, so 310 HU would be bone
    level16, binary16 = threshold_image(img.astype(np.int16))
    assert level16 == 309 and np.array_equal(binary16, binary)
    assert threshold_image(np.append(img, 310).astype(np.int16), 309.5)[1][-1]


def test_float_binary_is_imagej_selection(bimodal):
    # For any float image: binary == (value >= lower) with ImageJ's lower, computed here from an
    # independent histogram; level is the float32 just below lower.
    img, _ = bimodal
    hu = (img.astype(np.float32) * 7.3 - 1024.0 + np.float32(0.37) * (img % 3)).astype(np.float32)
    v = hu.astype(np.float64)
    lo, hi = v.min(), v.max()
    h = np.bincount(np.minimum(np.floor(256 / (hi - lo) * (v - lo)).astype(int), 255).ravel(), minlength=256)
    lower = lo + ((imagej_default(h) + 1) / 255) * (hi - lo)
    level, binary = threshold_image(hu)
    assert np.array_equal(binary, v >= lower)
    assert level < lower <= float(np.nextafter(np.float32(level), np.float32(np.inf)))


def test_mask_restricts_histogram_range_and_output(bimodal):
    img, truth = bimodal
    hu = img.astype(np.float32) * 10 - 1000
    mask = np.zeros(img.shape, bool)
    mask[4:28, 4:28, 4:28] = True
    outside = ~mask
    hu[outside] = -3000                  # extreme values outside the mask must not matter
    hu[0, 0, 0] = 5000
    level, binary = threshold_image(hu, mask=mask)
    level_inside, binary_inside = threshold_image(hu[mask])
    assert level == level_inside
    assert np.array_equal(binary[mask], binary_inside)
    assert not binary[outside].any()
    assert np.array_equal(binary, truth & mask)
    # fixed levels respect the mask too
    assert not threshold_image(hu, -5000, mask=mask)[1][outside].any()


def test_nan_voxels_are_ignored(bimodal):
    img, _ = bimodal
    hu = img.astype(np.float32)
    with_nan = hu.copy()
    with_nan[0] = np.nan
    level, binary = threshold_image(with_nan)
    assert level == threshold_image(hu[1:])[0]
    assert not binary[0].any()


def test_fixed_level_is_strictly_greater():
    img = np.array([149, 150, 151], np.int16)
    level, binary = threshold_image(img, 150)
    assert level == 150.0 and binary.tolist() == [False, False, True]
    assert threshold_image(img, 149.5)[1].tolist() == [False, True, True]
    # compared as real numbers, not after rounding the level to float32:
    # float32(0.1) = 0.100000001 > 0.1, float32(0.7) = 0.699999988 is not > 0.7
    assert threshold_image(np.array([0.1], np.float32), 0.1)[1].tolist() == [True]
    assert threshold_image(np.array([0.7], np.float32), 0.7)[1].tolist() == [False]
    # levels beyond the type's range
    u8 = np.array([0, 255], np.uint8)
    assert threshold_image(u8, -5)[1].all() and not threshold_image(u8, 300)[1].any()
    # a constant image is fine with a fixed level
    assert threshold_image(np.full(4, 7.0), 6)[1].all()


def test_method_names_are_case_insensitive(bimodal):
    img, _ = bimodal
    assert threshold_image(img, "Default")[0] == threshold_image(img, "default")[0]


def test_other_bin_counts(bimodal):
    img, truth = bimodal
    level, binary = threshold_image(img.astype(np.float32), bins=128)
    assert np.array_equal(binary, truth)


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: threshold_image(np.arange(8.0), mask=np.zeros(8, bool)), "selects no voxels"),
    (lambda: threshold_image(np.arange(8.0), mask=np.ones(7, bool)), "shape"),
    (lambda: threshold_image(np.full((3, 3), 5.0)), "constant"),
    (lambda: threshold_image(np.array([1.0, 5.0, 9.0]), mask=np.array([False, True, True]) & [1, 1, 0]),
     "constant"),
    (lambda: threshold_image(np.full(4, np.nan)), "no voxels"),
    (lambda: threshold_image(np.arange(8.0), "triangle"), "Unknown threshold method"),
    (lambda: threshold_image(np.arange(8.0), float("nan")), "NaN"),
    (lambda: threshold_image(np.arange(8, dtype=np.uint8), bins=128), "bins=256"),
    (lambda: threshold_image(np.arange(8.0), bins=2), "bins"),
    (lambda: threshold_image(np.ones(4, bool)), "type"),
    (lambda: imagej_default(np.zeros(256)), "empty"),
    (lambda: imagej_isodata(np.zeros((16, 16))), "1-D"),
    (lambda: imagej_ij_isodata([1, -2, 3]), "non-negative"),
    (lambda: otsu(hist(b100=5)), "two non-empty"),
])
def test_errors(call, message):
    with pytest.raises(BoneKitError, match=message):
        call()

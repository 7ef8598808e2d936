"""Super-resolution metrics against scikit-image, SciPy and closed forms."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage, stats

from bonekit import BoneKitError
from bonekit.sr import metrics
from bonekit.sr.metrics import (compare_morphometry, cosine_similarity, extract_features, fid, frechet_distance,
                                FeatureExtractor, mae, morphometry_agreement, psnr, rmse, ssim, ssim_8bit,
                                window_to_uint8)

skm = pytest.importorskip("skimage.metrics")


def textured(shape, seed, scale=300.0, offset=200.0):
    """Smooth random 'CT-like' texture in HU (float64)."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 1.0) * scale * 4 + offset


def reference_ssim(a, b, r, full=False):
    return skm.structural_similarity(a, b, data_range=r, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, full=full)


# ------------------------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("shape, r", [((40, 37), 1300.0), ((11, 11), 1.0), ((64, 50), 4095.0)])
def test_ssim_equals_skimage_wang_settings(shape, r):
    a = textured(shape, 1)
    b = a + textured(shape, 2, scale=80, offset=-30)
    assert ssim(a, b, r) == pytest.approx(reference_ssim(a, b, r), abs=1e-6)
    assert ssim(a, a, r) == pytest.approx(1.0, abs=1e-12)


def test_ssim_volume_is_slice_mean_and_mask_averages_the_map():
    a = textured((4, 24, 30), 3)
    b = 0.8 * a + textured((4, 24, 30), 4, scale=60, offset=10)
    r = 1300.0
    assert ssim(a, b, r) == pytest.approx(np.mean([reference_ssim(x, y, r) for x, y in zip(a, b)]), abs=1e-6)
    # mask: the mean of skimage's SSIM map over the masked interior pixels
    mask = np.zeros(a.shape, bool)
    mask[1:3, 3:20, 8:30] = True
    expected_sum, count = 0.0, 0
    for k in range(a.shape[0]):
        _, smap = reference_ssim(a[k], b[k], r, full=True)
        keep = mask[k].copy()
        keep[:5], keep[-5:], keep[:, :5], keep[:, -5:] = False, False, False, False
        expected_sum += smap[keep].sum()
        count += keep.sum()
    assert ssim(a, b, r, mask=mask) == pytest.approx(expected_sum / count, abs=1e-6)
    assert ssim(a[2], b[2], r, mask=mask[2]) == pytest.approx(
        reference_ssim(a[2], b[2], r, full=True)[1][5:-5, 5:-5][mask[2][5:-5, 5:-5]].mean(), abs=1e-6)


def test_ssim_leaves_inputs_alone_and_rejects_bad_input():
    a = textured((20, 20), 5).astype(np.float32)
    b = (a + 5).astype(np.float32)
    a0, b0 = a.copy(), b.copy()
    ssim(a, b, 1300.0)
    ssim_8bit(a, b, (-250, 1050))
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    with pytest.raises(BoneKitError, match="different shapes"):
        ssim(a, b[:-1], 1300.0)
    bad = a.copy()
    bad[3, 3] = np.nan
    with pytest.raises(BoneKitError, match="NaN"):
        ssim(bad, b, 1300.0)
    with pytest.raises(BoneKitError, match="11 x 11"):
        ssim(a[:10], b[:10], 1300.0)
    with pytest.raises(BoneKitError, match="data_range"):
        ssim(a, b, 0)
    with pytest.raises(BoneKitError, match="mask"):
        ssim(a, b, 1300.0, mask=np.zeros((20, 20), bool))
    with pytest.raises(BoneKitError, match="border"):     # only border pixels selected
        ssim(a, b, 1300.0, mask=np.pad(np.zeros((18, 18), bool), 1, constant_values=True))


def test_window_to_uint8():
    x = np.array([[-1000.0, -250.0, 400.0], [1050.0, 3000.0, -250 + 1300 * 100.4 / 255]])
    np.testing.assert_array_equal(window_to_uint8(x, (-250, 1050)), [[0, 0, 128], [255, 255, 100]])
    assert window_to_uint8(x, (-250, 1050)).dtype == np.uint8
    with pytest.raises(BoneKitError, match="lo < hi"):
        window_to_uint8(x, (100, 100))


def test_ssim_8bit_closed_forms():
    """Identical -> 1; b = a + d (no clipping) has equal variances and cov = var, so the SSIM is
    the luminance term (2 mu (mu + d) + C1) / (mu^2 + (mu + d)^2 + C1) alone."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, size=(30, 20)).astype(float)
    assert ssim_8bit(a, a, (0, 255)) == pytest.approx(1.0)
    d = 37.0
    mu, c1 = a.mean(), (0.01 * 255) ** 2
    expected = (2 * mu * (mu + d) + c1) / (mu ** 2 + (mu + d) ** 2 + c1)
    assert ssim_8bit(a, a + d, (0, 255)) == pytest.approx(expected, rel=1e-12)
    # inverted grey levels b = 255 - a: mean 255 - mu, the same variance, cov = -var
    b = 255 - a
    va, c2 = a.var(), (0.03 * 255) ** 2
    mb = b.mean()
    expected = (2 * mu * mb + c1) * (-2 * va + c2) / ((mu ** 2 + mb ** 2 + c1) * (2 * va + c2))
    assert ssim_8bit(a, b, (0, 255)) == pytest.approx(expected, rel=1e-9)
    # a volume: the mean over axial slices; and it differs from the windowed SSIM
    vol_a = np.stack([a, a + 10])
    vol_b = np.stack([a + d, a + 10])
    assert ssim_8bit(vol_a, vol_b, (0, 255)) == pytest.approx((ssim_8bit(a, a + d, (0, 255)) + 1) / 2)
    # two halves swapped: one global window sees cov = -var, (C2 - 2 var) / (C2 + 2 var) = -0.99;
    # the 11 x 11 windows mostly see flat areas, and only the luminance term (about 0.47) lowers them
    half = np.full((16, 96), 50.0)
    half[:, 48:] = 200.0
    swapped = half[:, ::-1]
    var = 75.0 ** 2
    assert ssim_8bit(half, swapped, (0, 255)) == pytest.approx((c2 - 2 * var) / (c2 + 2 * var), rel=1e-12)
    assert ssim(half, swapped, 255.0) > 0.3                       # 0.36


# ------------------------------------------------------------------------------------------- pixel metrics
def test_psnr_mae_rmse():
    a = textured((16, 16), 7)
    b = a + textured((16, 16), 8, scale=50, offset=3)
    assert psnr(a, b, 1300.0) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=1300.0), rel=1e-12)
    assert psnr(a, a, 1300.0) == math.inf
    d = 13.0
    assert psnr(a, a + d, 1300.0) == pytest.approx(10 * math.log10(1300.0 ** 2 / d ** 2))
    assert mae(a, a - d) == pytest.approx(d) and rmse(a, a - d) == pytest.approx(d)
    e = np.zeros((4, 4))
    f = e.copy()
    f[0, :2] = [3.0, -4.0]                 # |diff| = 3, 4 on 2 of 16 pixels
    assert mae(e, f) == pytest.approx(7 / 16) and rmse(e, f) == pytest.approx(math.sqrt(25 / 16))
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True
    assert mae(e, f, mask=mask) == pytest.approx(3.5) and rmse(e, f, mask=mask) == pytest.approx(math.sqrt(12.5))
    assert psnr(e, f, 10.0, mask=mask) == pytest.approx(10 * math.log10(100 / 12.5))
    with pytest.raises(BoneKitError, match="different shapes"):
        mae(e, f[:3])


def test_cosine_similarity():
    assert cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity([[1.0, 2.0], [3.0, 4.0]], [[2.0, 4.0], [6.0, 8.0]]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 2.0], [-2.0, 1.0]) == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 6)), rng.random((5, 6))
    assert cosine_similarity(a, b) == pytest.approx(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
    with pytest.raises(BoneKitError, match="all-zero"):
        cosine_similarity(np.zeros(3), np.ones(3))


# ------------------------------------------------------------------------------------------- FID
def symmetric_trace_sqrt(s1, s2):
    """tr (s1 s2)^(1/2) = sum of sqrt of the eigenvalues of s1^(1/2) s2 s1^(1/2) (symmetric PSD)."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()


def test_frechet_distance_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-10)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    m1, m2 = x.mean(0), y.mean(0)
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * symmetric_trace_sqrt(s1, s2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    # rank-deficient covariances (3 samples in 6-D): finite, and close to the exact value
    x, y = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)) + 1
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    value = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * symmetric_trace_sqrt(s1, s2)
    assert math.isfinite(value) and value == pytest.approx(expected, abs=1e-3)
    with pytest.raises(BoneKitError, match="same length"):
        frechet_distance(mu1, np.diag(v1), mu2[:2], np.diag(v2))
    with pytest.raises(BoneKitError, match="3 x 3"):
        frechet_distance(mu1, np.eye(2), mu2, np.diag(v2))
    with pytest.raises(BoneKitError, match="NaN"):
        frechet_distance(mu1 * np.nan, np.diag(v1), mu2, np.diag(v2))


torch = pytest.importorskip("torch")


class PooledLinear(torch.nn.Module):
    """A tiny 'feature network': 2 x 2 average pooling of each channel, then a fixed linear map."""

    def __init__(self, dim: int = 4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(dim, 12, generator=g, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, (2, 2)).flatten(1)
        return pooled @ self.weight.t()


class FirstChannel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].flatten(1)


class Unflattened(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :2, :2]


def save_script(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # torch >= 2.10 deprecates TorchScript
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def pooled_file(tmp_path):
    torch.set_num_threads(1)
    return save_script(PooledLinear(), tmp_path / "features.pt")


def test_fid_end_to_end(pooled_file):
    extractor = FeatureExtractor.from_file(pooled_file, size=32, device="cpu")
    a = textured((7, 32, 32), 10)
    a[:, :16] += np.linspace(-300, 300, 7)[:, None, None]          # slices differ in their quadrants
    window = (-400, 1200)
    assert fid(a, a.copy(), extractor, window_hu=window, batch_size=3) == pytest.approx(0.0, abs=1e-6)
    shifted = a + 200.0
    value = fid(a, shifted, extractor, window_hu=window, batch_size=4)
    # the same by hand: window -> [0, 1], 16 x 16 block means per quadrant, 3 channels, fixed linear map
    w = extractor.module.weight.numpy().astype(np.float64)

    def features(images):
        unit = ((np.clip(images, *window) - window[0]) / (window[1] - window[0])).astype(np.float32)
        q = unit.reshape(len(images), 2, 16, 2, 16).mean(axis=(2, 4)).reshape(len(images), 4)
        return np.concatenate([q, q, q], axis=1) @ w.T

    fa, fb = features(a), features(shifted)
    expected = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert value > 0.01 and value == pytest.approx(expected, rel=1e-4)
    # different slice sizes and counts are resized onto the network's input
    assert fid(a, a[:5, ::2, ::2], extractor, window_hu=window) > 0


def test_extract_features_windows_resizes_and_maps_the_range(tmp_path):
    from skimage.transform import resize

    path = save_script(FirstChannel(), tmp_path / "first.pt")
    extractor = FeatureExtractor.from_file(path, input_range=(-1.0, 1.0), size=24, device="cpu")
    images = textured((3, 12, 10), 11)
    before = images.copy()
    got = extract_features(images, extractor, window_hu=(-200, 800), batch_size=2)
    np.testing.assert_array_equal(images, before)
    unit = (np.clip(images, -200, 800) + 200) / 1000
    expected = np.stack([resize(u, (24, 24), order=1, mode="edge", anti_aliasing=False) for u in unit])
    np.testing.assert_allclose(got, (2 * expected - 1).reshape(3, -1), atol=1e-5)
    assert extractor.feature_dim == 24 * 24


def test_feature_extractor_refuses_bad_files(tmp_path):
    with pytest.raises(BoneKitError, match="pt_inception-2015-12-05"):
        FeatureExtractor.from_file(tmp_path / "missing.pt")
    state = tmp_path / "weights.pth"
    torch.save(PooledLinear().state_dict(), state)              # a state dict, not TorchScript
    with pytest.raises(BoneKitError, match="not a TorchScript"):
        FeatureExtractor.from_file(state, device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(BoneKitError, match="not a TorchScript"):
        FeatureExtractor.from_file(junk, device="cpu")
    wrong = save_script(Unflattened(), tmp_path / "wrong.pt")
    with pytest.raises(BoneKitError, match=r"shape \(2, 3, 2, 2\)"):
        FeatureExtractor.from_file(wrong, size=8, device="cpu")


# ------------------------------------------------------------------------------------------- morphometry
def test_morphometry_agreement_matches_scipy():
    hr = {"BV/TV": [0.12, 0.18, 0.25, 0.31, 0.22, 0.15], "Tb.Th": [0.11, 0.14, 0.19, 0.21, 0.17, 0.12]}
    sr = {"BV/TV": [0.15, 0.19, 0.29, 0.30, 0.27, 0.16], "Tb.Th": [0.16, 0.18, 0.22, 0.27, 0.20, 0.18]}
    out = morphometry_agreement(sr, hr)
    for name in hr:
        x, y = np.array(sr[name]), np.array(hr[name])
        a = out[name]
        r, p = stats.pearsonr(x, y)
        d = x - y
        assert a.n == 6 and a.parameter == name
        assert a.pearson_r == pytest.approx(r, rel=1e-12) and a.pearson_p == pytest.approx(p, rel=1e-9)
        assert a.t_test_p == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-9)
        assert a.mean_difference == pytest.approx(d.mean()) and a.sd_difference == pytest.approx(d.std(ddof=1))
        assert a.loa_lower == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
        assert a.loa_upper == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
        assert a.mean_relative_difference_percent == pytest.approx(100 * np.mean(d / y))
        assert a.mean_sr == pytest.approx(x.mean()) and a.mean_hr == pytest.approx(y.mean())
        for v in a.to_dict().values():
            assert v is None or type(v) in (int, float, str)
    json.dumps({k: v.to_dict() for k, v in out.items()}, allow_nan=False)
    same = morphometry_agreement(hr, hr)["Tb.Th"]
    assert same.pearson_r == pytest.approx(1.0) and same.mean_difference == 0 and same.sd_difference == 0
    assert same.t_test_p is None                                  # 0 / 0: undefined, not NaN
    two = morphometry_agreement({"x": [1.0, 2.0]}, {"x": [1.5, 2.0]})["x"]
    assert two.pearson_r is None and two.n == 2                   # no correlation from 2 points
    with pytest.raises(BoneKitError, match="paired"):
        morphometry_agreement({"x": [1.0, 2.0, 3.0]}, {"x": [1.0, 2.0]})
    with pytest.raises(BoneKitError, match="missing from the HR"):
        morphometry_agreement(sr, {"BV/TV": hr["BV/TV"]})
    with pytest.raises(BoneKitError, match="NaN"):
        morphometry_agreement({"x": [1.0, np.nan, 3.0]}, {"x": [1.0, 2.0, 3.0]})
    with pytest.raises(BoneKitError, match="at least 2"):
        morphometry_agreement({"x": [1.0]}, {"x": [1.0]})


def plates_hu(thickness, period, n_plates=3, size=12):
    """Grey plates normal to the last axis (1000 HU bone, 100 HU marrow), ``thickness`` voxels each."""
    a = np.full((size, size, n_plates * period), 100.0, np.float32)
    gap = period - thickness
    for p in range(n_plates):
        a[:, :, p * period + gap // 2: p * period + gap // 2 + thickness] = 1000.0
    return a


def test_compare_morphometry_on_plates():
    """Plates 2, 4, 6 voxels thick, period 12. SR == HR: zero differences, r = 1. SR plates 2 voxels
    thicker at the same period: BV/TV + 2/12, Tb.Th + 2 voxels exactly (even widths, BoneJ) in every
    block, so r = 1 and the SD of the differences is 0."""
    s = 0.05
    hr = [plates_hu(t, 12) for t in (2, 4, 6)]
    same = compare_morphometry([h.copy() for h in hr], hr, s, threshold=500.0)
    for name in ("BV/TV", "Tb.Th", "Tb.Sp"):
        a = same.agreement[name]
        assert a.n == 3 and a.mean_difference == 0 and a.sd_difference == 0
        assert a.pearson_r == pytest.approx(1.0)
    assert same.hr["BV/TV"] == pytest.approx([2 / 12, 4 / 12, 6 / 12])
    assert same.hr["Tb.Th"] == pytest.approx([2 * s, 4 * s, 6 * s])
    assert same.thresholds == {"sr": [500.0] * 3, "hr": [500.0] * 3} and same.method["sr"] == "fixed"
    json.dumps(same.to_dict(), allow_nan=False)

    thicker = compare_morphometry([plates_hu(t + 2, 12) for t in (2, 4, 6)], hr, (s, s, s), threshold="default")
    assert thicker.agreement["BV/TV"].mean_difference == pytest.approx(2 / 12)
    assert thicker.agreement["Tb.Th"].mean_difference == pytest.approx(2 * s)
    assert thicker.agreement["Tb.Th"].sd_difference == pytest.approx(0, abs=1e-12)
    assert thicker.agreement["Tb.Th"].pearson_r == pytest.approx(1.0)
    assert thicker.agreement["Tb.Sp"].mean_difference < 0                # thicker plates, narrower marrow
    assert all(100 < level < 1000 for level in thicker.thresholds["sr"] + thicker.thresholds["hr"])
    assert thicker.method == {"sr": "default", "hr": "default"}


def test_compare_morphometry_checks_its_input():
    hr = [plates_hu(t, 12) for t in (2, 4)]
    with pytest.raises(TypeError):
        compare_morphometry(hr, hr, 0.05)                            # the threshold must be chosen
    with pytest.raises(BoneKitError, match="paired"):
        compare_morphometry(hr, hr[:1], 0.05, threshold=500.0)
    with pytest.raises(BoneKitError, match="method name|one of"):
        compare_morphometry(hr, hr, 0.05, threshold="mean")
    with pytest.raises(BoneKitError, match="spacing_mm"):
        compare_morphometry(hr, hr, threshold=500.0)
    with pytest.raises(BoneKitError, match="Unknown morphometric parameter"):
        compare_morphometry(hr, hr, 0.05, threshold=500.0, parameters=("BV/TV", "Tb.Foo"))
    bad = [h.copy() for h in hr]
    bad[1][0, 0, 0] = np.nan
    with pytest.raises(BoneKitError, match="NaN"):
        compare_morphometry(bad, hr, 0.05, threshold=500.0)
    with pytest.raises(BoneKitError, match="No bone"):
        compare_morphometry(hr, hr, 0.05, threshold=5000.0)


def test_public_names_exist():
    for name in metrics.__all__:
        assert hasattr(metrics, name), name

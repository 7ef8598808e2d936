"""Paired training data from real clinical CT / micro-CT volume pairs.

Two ways to put a clinical (LR) and a micro-CT (HR) scan of the same specimen into
correspondence:

* ``"register"``: 3-D rigid registration (:func:`register_rigid`, SimpleITK Euler3D,
  Mattes mutual information, multi-resolution), then both are resampled onto the grid
  ``scale`` times finer than the LR one, the grid the super-resolution pipeline works on.
* ``"dtw"``: Jin et al. (2021)'s slice matching, for stacks whose 3-D geometry cannot be
  trusted: a monotone slice correspondence by dynamic time warping over a slice-similarity
  matrix (:func:`match_slices`), then in-plane alignment of each matched pair with SIFT
  features and RANSAC (:func:`align_slice`), phase correlation when features are too few.

:func:`pair_volumes` runs either and returns co-located 2-D slices (LR interpolated onto the
fine grid, HR). :func:`load_lumbarsr` finds the pairs of the LumbarSR challenge data set.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import BoneKitError
from ..volume import Volume
from .degrade import refined_grid, upsample_to

__all__ = ["RigidResult", "register_rigid", "SliceMatch", "match_slices", "SliceAlignment", "align_slice",
           "apply_alignment", "pair_volumes", "SpecimenPair", "load_lumbarsr", "LUMBARSR_SEQUENCES"]


# ====================================================================== 3-D rigid registration
@dataclass
class RigidResult:
    """A rigid registration of ``moving`` onto ``fixed`` (:func:`register_rigid`).

    The transform maps points of the fixed image (LPS mm) to points of the moving image, as
    every ITK registration transform does: ``moving_point = R (p - c) + c + t``.

    Attributes
    ----------
    rotation_deg : (3,) float
        ``Euler3DTransform`` angles about the LPS x, y and z axes (degrees); the rotation matrix
        is ``Rz @ Rx @ Ry`` (ITK's default, ``ComputeZYX`` off).
    translation_mm : (3,) float
    center_mm : (3,) float
        Centre of rotation (LPS mm).
    matrix : (4, 4) float
        The same transform as a homogeneous matrix, fixed LPS -> moving LPS.
    metric : float
        Final metric value (Mattes MI is negated mutual information: lower is better).
    iterations : int
        Optimizer iterations at the last (finest) level.
    stop_condition : str
    resampled : Volume
        ``moving`` resampled onto the fixed grid.
    transform : SimpleITK.Euler3DTransform
    """

    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    center_mm: np.ndarray
    matrix: np.ndarray
    metric: float
    iterations: int
    stop_condition: str
    resampled: Volume | None = None
    transform: object | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no images)."""
        return {"rotation_deg": [float(v) for v in self.rotation_deg],
                "translation_mm": [float(v) for v in self.translation_mm],
                "center_mm": [float(v) for v in self.center_mm],
                "matrix": [[float(v) for v in row] for row in self.matrix],
                "metric": float(self.metric), "iterations": int(self.iterations),
                "stop_condition": self.stop_condition}

    def apply(self, moving: Volume, like: Volume, *, interpolation: str = "linear",
              default_value: float | None = None) -> Volume:
        """Resample any image in the moving image's space (the micro-CT, its mask) onto ``like``'s grid."""
        return _resample(moving, like, self.transform, interpolation, default_value)


_INTERPOLATORS = {"linear": "sitkLinear", "nearest": "sitkNearestNeighbor", "bspline": "sitkBSpline",
                  "label": "sitkLabelGaussian"}


def _resample(moving: Volume, like: Volume, transform, interpolation: str, default_value) -> Volume:
    import SimpleITK as sitk

    if interpolation not in _INTERPOLATORS:
        raise BoneKitError(f"Unknown interpolation {interpolation!r}; use one of {sorted(_INTERPOLATORS)}.")
    image = moving.to_sitk()
    if interpolation != "nearest" and interpolation != "label":
        image = sitk.Cast(image, sitk.sitkFloat32)
    reference = sitk.Image([int(v) for v in like.size], image.GetPixelID())
    reference.SetSpacing([float(v) for v in like.spacing])
    reference.SetOrigin([float(v) for v in like.origin])
    reference.SetDirection([float(v) for v in like.direction.ravel()])
    if default_value is None:
        default_value = float(np.min(moving.array))
    out = sitk.Resample(image, reference, transform if transform is not None else sitk.Transform(),
                        getattr(sitk, _INTERPOLATORS[interpolation]), float(default_value), image.GetPixelID())
    return Volume(sitk.GetArrayFromImage(out), like.affine.copy(), moving.modality, moving.units,
                  dict(moving.metadata))


def register_rigid(fixed: Volume, moving: Volume, *, initial: str = "moments", metric: str = "mattes",
                   bins: int = 50, sampling: float = 0.25, shrink: Sequence[int] | None = None,
                   smoothing_vox: Sequence[float] | None = None, iterations: int = 200,
                   fixed_mask: Volume | None = None, interpolation: str = "linear",
                   default_value: float | None = None, seed: int = 0) -> RigidResult:
    """Rigidly register ``moving`` onto ``fixed`` (SimpleITK, Euler3D, multi-resolution).

    Parameters
    ----------
    fixed, moving : Volume
        Any grids, spacings and intensity scales (with ``metric="mattes"`` the two may be
        different modalities, e.g. clinical CT and micro-CT).
    initial : {"moments", "geometry", "identity"}
        Starting transform: align the intensity centres of mass (``"moments"``; good for a
        specimen in air or water), the image centres (``"geometry"``), or start from the
        identity with the centre of rotation at the fixed image's centre.
    metric : {"mattes", "correlation", "meansquares"}
        Mattes mutual information (``bins`` histogram bins), normalised correlation, or mean
        squared difference (same modality and HU scale only).
    sampling : float
        Fraction of fixed voxels (random, seeded by ``seed``) that make the metric; 1 = all.
    shrink, smoothing_vox : sequences of equal length, optional
        Pyramid: shrink factors and Gaussian smoothing sigmas (fixed voxels), coarse to fine.
        Default: factors 4, 2, 1 with sigmas 2, 1, 0, dropping the levels that would leave
        fewer than 16 voxels along the fixed image's shortest side.
    iterations : int
        Maximum gradient-descent iterations per level.
    fixed_mask : Volume, optional
        Only fixed voxels inside this mask (on the fixed grid) count.
    interpolation, default_value
        How ``moving`` is resampled onto the fixed grid for :attr:`RigidResult.resampled`
        (default value: the moving image's minimum).

    Returns
    -------
    RigidResult
    """
    import SimpleITK as sitk

    if not (isinstance(fixed, Volume) and isinstance(moving, Volume)):
        raise BoneKitError("register_rigid needs two bonekit Volumes.")
    if shrink is None:
        shrink = [f for f in (4, 2) if min(fixed.size) // f >= 16] + [1]
    if smoothing_vox is None:
        smoothing_vox = [f / 2.0 if f > 1 else 0.0 for f in shrink]
    if len(shrink) != len(smoothing_vox) or not shrink:
        raise BoneKitError("shrink and smoothing_vox must be non-empty sequences of the same length.")
    if not 0 < sampling <= 1:
        raise BoneKitError(f"sampling must be a fraction in (0, 1], got {sampling!r}.")
    f_img = sitk.Cast(fixed.to_sitk(), sitk.sitkFloat32)
    m_img = sitk.Cast(moving.to_sitk(), sitk.sitkFloat32)

    modes = {"moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
             "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY}
    if initial in modes:
        transform = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(), modes[initial])
    elif initial == "identity":
        transform = sitk.Euler3DTransform()
        centre = fixed.index_to_physical((np.asarray(fixed.size, float) - 1) / 2)
        transform.SetCenter([float(v) for v in centre])
    else:
        raise BoneKitError(f"Unknown initial transform {initial!r}; use 'moments', 'geometry' or 'identity'.")

    reg = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    elif metric == "correlation":
        reg.SetMetricAsCorrelation()
    elif metric == "meansquares":
        reg.SetMetricAsMeanSquares()
    else:
        raise BoneKitError(f"Unknown metric {metric!r}; use 'mattes', 'correlation' or 'meansquares'.")
    if sampling < 1:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    if fixed_mask is not None:
        fixed.require_same_grid(fixed_mask, "fixed mask")
        reg.SetMetricFixedMask(sitk.Cast(fixed_mask.to_sitk() > 0, sitk.sitkUInt8))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([int(s) for s in shrink])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_vox])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(transform, inPlace=True)
    # Steps are scaled so that one unit moves a voxel by about 1 mm (physical shift); the first
    # step is two fixed voxels long and halves whenever the gradient turns back.
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=float(2 * max(fixed.spacing)),
                                                 minStep=float(1e-3 * min(fixed.spacing)),
                                                 numberOfIterations=int(iterations), relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise BoneKitError(f"Rigid registration failed: {str(exc).strip().splitlines()[-1]} "
                           "(check that the two images overlap, or try initial='geometry').") from None

    params = np.array(transform.GetParameters(), float)
    centre = np.array(transform.GetCenter(), float)
    rot = np.array(transform.GetMatrix(), float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = rot
    matrix[:3, 3] = centre + params[3:] - rot @ centre
    result = RigidResult(rotation_deg=np.degrees(params[:3]), translation_mm=params[3:].copy(),
                         center_mm=centre, matrix=matrix, metric=float(reg.GetMetricValue()),
                         iterations=int(reg.GetOptimizerIteration()),
                         stop_condition=reg.GetOptimizerStopConditionDescription(), transform=transform)
    result.resampled = _resample(moving, fixed, transform, interpolation, default_value)
    return result


# ====================================================================== slice matching (DTW)
@dataclass
class SliceMatch:
    """A monotone correspondence from LR slices to HR slices (:func:`match_slices`).

    Attributes
    ----------
    hr_index : (n_lr,) int array
        The HR slice matched to each LR slice; non-decreasing.
    similarity : (n_lr, n_hr) float array
        The slice-similarity matrix the path was found in (NCC in [-1, 1], or NMI in [1, 2]).
    score : float
        Mean similarity along the path.
    """

    hr_index: np.ndarray
    similarity: np.ndarray
    score: float


def _as_stack(slices, name: str) -> np.ndarray:
    a = np.asarray(slices, dtype=np.float32)
    if a.ndim != 3 or 0 in a.shape:
        raise BoneKitError(f"{name} must be a stack of 2-D slices (n, rows, cols), got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise BoneKitError(f"{name} has NaN or infinite values.")
    return a


def _resize_stack(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each slice resized to ``shape`` with anti-aliasing (area-like averaging when shrinking)."""
    if stack.shape[1:] == tuple(shape):
        return stack
    from skimage.transform import resize

    return np.stack([resize(s, shape, order=1, anti_aliasing=True, preserve_range=True) for s in stack]
                    ).astype(np.float32)


def _ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def unit(x):
        x = x.reshape(len(x), -1).astype(np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    return unit(a) @ unit(b).T


def _nmi_matrix(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    """Normalised mutual information (H(A) + H(B)) / H(A, B), in [1, 2], for every slice pair."""
    def quantise(x):
        lo, hi = np.percentile(x, [0.5, 99.5])
        q = np.floor((x - lo) / max(hi - lo, 1e-12) * bins)
        return np.clip(q, 0, bins - 1).astype(np.int64).reshape(len(x), -1)

    qa, qb = quantise(a), quantise(b)
    n_pix = qa.shape[1]

    def entropy(p):
        p = p[p > 0]
        return -np.sum(p * np.log(p))

    def row_entropy(counts):
        p = counts / n_pix
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)

    hb = row_entropy(np.stack([np.bincount(r, minlength=bins) for r in qb]))
    offsets = (np.arange(len(qb)) * bins * bins)[:, None]
    out = np.empty((len(qa), len(qb)))
    for i, row in enumerate(qa):
        ha = entropy(np.bincount(row, minlength=bins) / n_pix)
        joint = np.bincount((offsets + row[None, :] * bins + qb).ravel(),
                            minlength=len(qb) * bins * bins).reshape(len(qb), -1)
        hab = row_entropy(joint)
        out[i] = (ha + hb) / np.maximum(hab, 1e-12)
    return out


def _monotone_path(sim: np.ndarray, strict: bool, max_step: int | None) -> np.ndarray:
    """argmax over non-decreasing (or increasing) j(0..n-1) of sum_i sim[i, j(i)], with jumps <= max_step."""
    n, m = sim.shape
    if strict and n > m:
        raise BoneKitError(f"A strictly increasing match needs at least as many HR slices ({m}) as LR slices ({n}).")
    score = sim[0].astype(np.float64).copy()
    back = np.zeros((n, m), np.int64)
    cols = np.arange(m)
    lo_step = 1 if strict else 0
    for i in range(1, n):
        if max_step is None:
            prev = score
            best = np.maximum.accumulate(prev)
            arg = np.maximum.accumulate(np.where(prev == best, cols, 0))
            if strict:
                best = np.concatenate([[-np.inf], best[:-1]])
                arg = np.concatenate([[0], arg[:-1]])
        else:
            cand = np.full((max_step + 1 - lo_step, m), -np.inf)
            for r, d in enumerate(range(lo_step, max_step + 1)):
                cand[r, d:] = score[: m - d] if d else score
            r = np.argmax(cand, axis=0)
            best = cand[r, cols]
            arg = cols - (r + lo_step)
        score = best + sim[i]
        back[i] = arg
    path = np.empty(n, np.int64)
    path[-1] = int(np.argmax(score))
    if not np.isfinite(score[path[-1]]):
        raise BoneKitError("No monotone slice correspondence satisfies max_step; increase it.")
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def match_slices(lr_slices, hr_slices, *, metric: str = "ncc", bins: int = 32, strict: bool = False,
                 max_step: int | None = None) -> SliceMatch:
    """Match each LR slice to an HR slice: dynamic time warping over slice similarities (Jin et al.).

    The HR slices are first resized (anti-aliased) to the LR slice size, so both stacks must
    show the same in-plane field of view. The similarity of every (LR, HR) pair, NCC
    (normalised cross-correlation) or NMI (normalised mutual information, ``bins`` grey
    levels; use it when the two intensity scales are not linearly related), makes a matrix in
    which the path of greatest total similarity is found by dynamic programming. The path is
    DTW's with an asymmetric step pattern and open ends: every LR slice advances by one, the
    HR index never goes back (it may repeat unless ``strict``, and may skip HR slices, at most
    ``max_step`` at a time), and the path may start and end anywhere in the HR stack (the
    micro-CT usually covers more, or less, than the clinical stack).

    Parameters
    ----------
    lr_slices : (n, h, w) array
    hr_slices : (m, H, W) array
    metric : {"ncc", "nmi"}
    strict : bool
        Require a strictly increasing HR index (no two LR slices on one HR slice).
    max_step : int, optional
        Largest HR index jump between consecutive LR slices.

    Returns
    -------
    SliceMatch
    """
    lr = _as_stack(lr_slices, "lr_slices")
    hr = _resize_stack(_as_stack(hr_slices, "hr_slices"), lr.shape[1:])
    if metric == "ncc":
        sim = _ncc_matrix(lr, hr)
    elif metric in ("nmi", "mi"):
        sim = _nmi_matrix(lr, hr, int(bins))
    else:
        raise BoneKitError(f"Unknown slice similarity {metric!r}; use 'ncc' or 'nmi'.")
    if max_step is not None and (int(max_step) != max_step or max_step < (1 if strict else 0)):
        raise BoneKitError(f"max_step must be a whole number >= {1 if strict else 0}, got {max_step!r}.")
    path = _monotone_path(sim, strict, None if max_step is None else int(max_step))
    return SliceMatch(path, sim, float(np.mean(sim[np.arange(len(path)), path])))


# ====================================================================== in-plane alignment (SIFT)
@dataclass
class SliceAlignment:
    """An in-plane alignment of a moving slice onto a fixed slice (:func:`align_slice`).

    ``matrix`` (3x3) maps fixed-slice pixel coordinates (x = column, y = row, scikit-image's
    convention) to moving-slice coordinates, so ``warped = warp(moving, matrix)`` lies on the
    fixed slice (:func:`apply_alignment`).
    """

    matrix: np.ndarray
    rotation_deg: float
    translation_px: np.ndarray   # (x, y) = (column, row) shift of the fixed -> moving map
    scale: float
    method: str                  # "sift" or "phase"
    n_matches: int
    n_inliers: int
    warped: np.ndarray | None = None


def _unit_range(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    return np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float64)


def apply_alignment(image: np.ndarray, matrix: np.ndarray, *, output_shape=None, order: int = 1,
                    cval: float | None = None) -> np.ndarray:
    """Warp a slice in the moving frame onto the fixed frame with an alignment's ``matrix`` (float32)."""
    from skimage.transform import ProjectiveTransform, warp

    image = np.asarray(image, dtype=np.float64)
    cval = float(image.min()) if cval is None else float(cval)
    return warp(image, ProjectiveTransform(matrix=np.asarray(matrix, float)), output_shape=output_shape,
                order=order, mode="constant", cval=cval, preserve_range=True).astype(np.float32)


def align_slice(fixed2d, moving2d, *, transform: str = "euclidean", method: str = "auto",
                min_inliers: int = 8, max_ratio: float = 0.8, residual_threshold: float = 1.5,
                upsample_factor: int = 10, seed: int = 0, upsampling: int = 2) -> SliceAlignment:
    """Align ``moving2d`` onto ``fixed2d`` in-plane: SIFT + RANSAC, phase correlation as fallback.

    SIFT keypoints (:class:`skimage.feature.SIFT`, on each image scaled to [0, 1] by its 1st and
    99th percentiles) are matched (:func:`skimage.feature.match_descriptors`, Lowe's ratio test
    ``max_ratio`` and cross-check), and a Euclidean (rotation + shift) or similarity (+ scale)
    transform is fitted with RANSAC (inliers within ``residual_threshold`` pixels). When fewer
    than ``min_inliers`` inliers remain (low texture, very different resolutions), or with
    ``method="phase"``, the shift alone is found by cross-correlation in Fourier space
    (:func:`skimage.registration.phase_cross_correlation` on Hann-windowed images, without the
    phase normalisation, which fails on smooth images; 1/``upsample_factor`` pixel).

    Both images must have the same pixel size; resample first if they do not.

    Returns
    -------
    SliceAlignment
        The transform and ``warped``: the moving slice on the fixed slice's grid (bilinear).
    """
    from skimage.transform import EuclideanTransform, SimilarityTransform

    fixed = np.asarray(fixed2d, dtype=np.float64)
    moving = np.asarray(moving2d, dtype=np.float64)
    if fixed.ndim != 2 or moving.ndim != 2:
        raise BoneKitError(f"align_slice needs two 2-D images, got shapes {fixed.shape} and {moving.shape}.")
    if not (np.all(np.isfinite(fixed)) and np.all(np.isfinite(moving))):
        raise BoneKitError("align_slice: the images have NaN or infinite values.")
    models = {"euclidean": EuclideanTransform, "similarity": SimilarityTransform}
    if transform not in models:
        raise BoneKitError(f"Unknown transform {transform!r}; use 'euclidean' or 'similarity'.")
    if method not in ("auto", "sift", "phase"):
        raise BoneKitError(f"Unknown alignment method {method!r}; use 'auto', 'sift' or 'phase'.")

    matrix, n_matches, n_inliers, used = None, 0, 0, "phase"
    if method in ("auto", "sift"):
        matrix, n_matches, n_inliers = _sift_ransac(fixed, moving, models[transform], min_inliers, max_ratio,
                                                    residual_threshold, seed, upsampling)
        used = "sift"
        if matrix is None and method == "sift":
            raise BoneKitError(f"SIFT found only {n_inliers} consistent matches (need {min_inliers}); the slices "
                               "have too little texture in common. Use method='auto' to fall back to phase "
                               "correlation.")
    if matrix is None:
        from skimage.filters import window
        from skimage.registration import phase_cross_correlation

        if fixed.shape != moving.shape:
            raise BoneKitError("Phase correlation needs two slices of the same shape; resample first.")
        # Hann-windowed, unnormalised cross-correlation: the whitened (phase) form locks onto
        # noise and image edges for smooth images such as CT slices.
        hann = window("hann", fixed.shape)
        with warnings.catch_warnings():      # its RMS-error estimate (unused) warns on flat slices
            warnings.simplefilter("ignore", UserWarning)
            shift, _, _ = phase_cross_correlation(_unit_range(fixed) * hann, _unit_range(moving) * hann,
                                                  upsample_factor=int(upsample_factor), normalization=None)
        matrix = np.eye(3)
        matrix[0, 2], matrix[1, 2] = -shift[1], -shift[0]
        used = "phase"
    a = matrix[:2, :2]
    scale = float(math.sqrt(abs(np.linalg.det(a))))
    rotation = float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
    warped = apply_alignment(moving, matrix, output_shape=fixed.shape)
    return SliceAlignment(matrix, rotation, matrix[:2, 2].copy(), scale, used, n_matches, n_inliers, warped)


def _sift_ransac(fixed, moving, model_class, min_inliers, max_ratio, residual_threshold, seed, upsampling):
    from skimage.feature import SIFT, match_descriptors
    from skimage.measure import ransac

    keys, descs = [], []
    for image in (fixed, moving):
        sift = SIFT(upsampling=int(upsampling))
        try:
            sift.detect_and_extract(_unit_range(image))
        except RuntimeError:            # skimage raises when no keypoint survives
            return None, 0, 0
        keys.append(sift.keypoints)
        descs.append(sift.descriptors)
    if min(len(k) for k in keys) < 2:
        return None, 0, 0
    matches = match_descriptors(descs[0], descs[1], max_ratio=max_ratio, cross_check=True)
    if len(matches) < max(min_inliers, 3):
        return None, len(matches), 0
    src = keys[0][matches[:, 0]][:, ::-1].astype(float)      # (row, col) -> (x, y)
    dst = keys[1][matches[:, 1]][:, ::-1].astype(float)
    with warnings.catch_warnings():          # "no inliers found" is answered by the fallback
        warnings.simplefilter("ignore", UserWarning)
        model, inliers = ransac((src, dst), model_class, min_samples=2,
                                residual_threshold=residual_threshold, max_trials=1000, rng=seed)
    if model is None or inliers is None or not model or int(inliers.sum()) < min_inliers:
        return None, len(matches), 0 if inliers is None else int(inliers.sum())
    return np.asarray(model.params, float), len(matches), int(inliers.sum())


# ====================================================================== pairs of slices
def _axis_slices(a: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(a, dtype=np.float32), axis, 0))


def _anti_alias(volume: Volume, target_spacing_kji) -> Volume:
    """Gaussian pre-smoothing before resampling onto a coarser grid (scikit-image's rule,
    sigma = max(0, (factor - 1) / 2) voxels per axis)."""
    factor = np.asarray(target_spacing_kji, float) / volume.spacing_kji
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    if not np.any(sigma > 0):
        return volume
    return volume.with_array(ndimage.gaussian_filter(np.asarray(volume.array, np.float32), sigma, mode="nearest"))


def pair_volumes(lr: Volume, hr: Volume, scale, method: str = "register", *, axis: int = 0, order: int = 3,
                 min_coverage: float = 0.99, register_options: dict | None = None,
                 align_options: dict | None = None, return_info: bool = False):
    """Co-located 2-D training slices from one clinical (LR) / micro-CT (HR) pair.

    Parameters
    ----------
    lr, hr : Volume
        The clinical CT and the micro-CT of the same specimen, in HU (see
        :func:`bonekit.sr.degrade.micro_ct_to_hu` for a micro-CT in grey levels).
    scale : int or three ints (i, j, k)
        The super-resolution factor: pairs live on the grid ``scale`` times finer than the LR
        one (:func:`bonekit.sr.degrade.refined_grid`), the grid the SR pipeline works on.
    method : {"register", "none", "dtw"}
        ``"register"``: :func:`register_rigid` (HR moving onto LR fixed, HR pre-smoothed to
        the LR voxel size); ``"none"``: the two are already co-registered in physical space
        (e.g. LumbarSR's RegisteredData, with ``scale=1`` since its clinical CT already lies
        on the micro-CT grid); ``"dtw"``: Jin et al.'s slice matching, for stacks whose
        geometry is not trustworthy; it assumes both stacks show the same in-plane field of
        view (crop them to the same specimen box), matches slices along ``axis`` with
        :func:`match_slices`, resizes each matched HR slice to the fine in-plane size and
        aligns it to the LR slice with :func:`align_slice` (features found on the HR slice
        blurred to the LR resolution; the sharp slice is warped).
    axis : int
        Array axis normal to the slices (0 = k, axial).
    order : int
        B-spline order of the LR interpolation (3 = cubic, as at inference).
    min_coverage : float
        ``"register"``/``"none"``: keep only slices whose fine grid lies inside the HR volume
        for at least this fraction of pixels.
    register_options, align_options : dict, optional
        Keyword arguments for :func:`register_rigid` / :func:`align_slice`.
    return_info : bool
        Also return a dict: ``slice_index`` (fine-grid or LR slice indices kept), and
        ``registration`` (:class:`RigidResult`) or ``match`` (:class:`SliceMatch`) and
        ``alignments``.

    Returns
    -------
    list of (lr_slice, hr_slice) float32 arrays, each pair the same shape (and the info dict).
    """
    if not (isinstance(lr, Volume) and isinstance(hr, Volume)):
        raise BoneKitError("pair_volumes needs two bonekit Volumes (clinical CT, micro-CT).")
    if axis not in (0, 1, 2):
        raise BoneKitError(f"axis must be 0, 1 or 2 (array axis k, j or i), got {axis!r}.")
    s_ijk = np.broadcast_to(np.asarray(scale), (3,))
    if np.any(s_ijk < 1) or np.any(s_ijk != np.round(s_ijk)):
        raise BoneKitError(f"scale must be whole numbers >= 1, got {scale!r}.")
    info: dict = {}
    if method in ("register", "none"):
        grid = refined_grid(lr, s_ijk.astype(int))
        lr_up = upsample_to(lr, grid, order=order).array
        hr_aa = _anti_alias(hr, grid.spacing_kji)
        transform = None
        if method == "register":
            opts = dict(register_options or {})
            result = register_rigid(lr, _anti_alias(hr, lr.spacing_kji), **opts)
            transform = result.transform
            info["registration"] = result
        hr_on = _resample(hr_aa, grid, transform, "linear", None).array
        inside = _resample(hr.with_array(np.ones(hr.shape, np.uint8)), grid, transform, "nearest", 0).array
        coverage = np.moveaxis(inside, axis, 0).reshape(inside.shape[axis], -1).mean(axis=1)
        keep = np.flatnonzero(coverage >= min_coverage)
        lr_s, hr_s = _axis_slices(lr_up, axis), _axis_slices(hr_on, axis)
        pairs = [(lr_s[k], hr_s[k]) for k in keep]
        info["slice_index"] = keep
    elif method == "dtw":
        s_kji = s_ijk[::-1].astype(int)
        in_plane = [a for a in range(3) if a != axis]
        fine = [1, 1, 1]
        for a in in_plane:
            fine[2 - a] = int(s_kji[a])            # refined_grid takes (i, j, k)
        grid = refined_grid(lr, fine)
        lr_up = _axis_slices(upsample_to(lr, grid, order=order).array, axis)
        lr_slices = _axis_slices(lr.array, axis)
        hr_slices = _axis_slices(hr.array, axis)
        match = match_slices(lr_slices, hr_slices)
        info["match"] = match
        blur = [max(0.0, (s_kji[a] - 1) / 2.0) for a in in_plane]
        opts = dict(align_options or {})
        alignments, pairs = [], []
        for i, j in enumerate(match.hr_index):
            target = _resize_stack(hr_slices[j:j + 1], lr_up.shape[1:])[0]
            alignment = align_slice(lr_up[i], ndimage.gaussian_filter(target, blur), **opts)
            alignments.append(alignment)
            pairs.append((lr_up[i], apply_alignment(target, alignment.matrix, output_shape=lr_up.shape[1:])))
        info["alignments"] = alignments
        info["slice_index"] = np.arange(len(pairs))
    else:
        raise BoneKitError(f"Unknown pairing method {method!r}; use 'register', 'none' or 'dtw'.")
    return (pairs, info) if return_info else pairs


# ====================================================================== the LumbarSR data set
#: The clinical CT series of LumbarSR (in-plane µm X, Y, slice thickness µm Z, kernel: S soft,
#: B bone). The challenge's task inputs are the four soft-kernel series; bone-kernel series
#: appear in the released registered data and masks.
LUMBARSR_SEQUENCES = ("195X_195Y_500Z_S", "195X_195Y_1000Z_S", "586X_586Y_500Z_S", "586X_586Y_1000Z_S",
                      "195X_195Y_500Z_B", "195X_195Y_1000Z_B", "586X_586Y_500Z_B", "586X_586Y_1000Z_B")

_NIFTI = re.compile(r"\.(nii(\.gz)?|nrrd|nhdr|mha|mhd)$", re.IGNORECASE)


@dataclass
class SpecimenPair:
    """One specimen of a paired clinical CT / micro-CT data set (:func:`load_lumbarsr`).

    Attributes
    ----------
    id : str
        Specimen id, e.g. ``"Lumbar_01"``.
    clinical_ct : Path
        The clinical CT of the chosen ``sequence`` (file or DICOM folder).
    micro_ct : Path
        The micro-CT (LumbarSR: Micro-PCCT, 105 µm, int16 HU).
    sequence : str or None
        The clinical series name (e.g. ``"195X_195Y_500Z_S"``), when the layout names one.
    clinical_mask, micro_mask : Path or None
        Bone ROI masks aligned with each image, when present.
    sequences : dict
        Every clinical series found for this specimen, name -> path.
    registered : bool
        True when the clinical CT is already resampled into the micro-CT's space (LumbarSR's
        ``RegisteredData``): pair it with ``pair_volumes(..., scale=1, method="none")``.
    """

    id: str
    clinical_ct: Path
    micro_ct: Path
    sequence: str | None = None
    clinical_mask: Path | None = None
    micro_mask: Path | None = None
    sequences: dict = field(default_factory=dict)
    registered: bool = False

    def load(self) -> tuple[Volume, Volume]:
        """Read (clinical CT, micro-CT) as Volumes with :func:`bonekit.read_volume`."""
        from ..io import read_volume

        return (read_volume(self.clinical_ct, modality="CT", units="HU"),
                read_volume(self.micro_ct, modality="CT", units="HU"))


_LAYOUT_HELP = """Expected one of these layouts (LumbarSR challenge, CC BY-NC-SA 4.0):
  <root>/RegisteredData/Lumbar_01/Lumbar01_ClinicalCT_195X_195Y_500Z_S_registered.nii.gz
                                  Lumbar01_MicroPCCT_105um.nii.gz
         (also registered_nifti/ instead of RegisteredData/, or <root> being that folder itself)
  <root>/BoneMask/Lumbar_01/Lumbar01_MicroPCCT_105um_BoneMask.nii.gz,
                            Lumbar01_ClinicalCT_<sequence>_registered_BoneMask.nii.gz   (optional)
  <root>/original_dicom/Lumbar_01/clinical_ct/<sequence>/*.dcm and .../micro_ct/*.dcm
or a generic one: per-specimen folders or one flat folder with <id>_CT.nii.gz / <id>_microCT.nii.gz
(optional <id>_CT_mask.nii.gz / <id>_microCT_mask.nii.gz)."""


_MICRO = r"(micro|mu|u|\u00b5)[-_ ]?(pc)?ct"
_CLINICAL = r"(clinical[-_ ]?ct|mdct|ct)"


def _kind(name: str) -> str | None:
    """'micro', 'clinical', or None, from a file name (masks are recognised separately)."""
    n = name.lower()
    if re.search(r"(^|[-_ .])" + _MICRO, n) or re.search(r"micro[-_ ]?(pc)?ct", n):
        return "micro"
    if re.search(r"(^|[-_ .])" + _CLINICAL + r"([-_ .]|$)", n) or "clinicalct" in n:
        return "clinical"
    return None


def _is_mask(name: str) -> bool:
    return bool(re.search(r"mask|seg(mentation)?([-_.]|$)|label", name.lower()))


def _sequence_of(name: str) -> str | None:
    m = re.search(r"(\d+X_\d+Y_\d+Z_[A-Z])", name, re.IGNORECASE)
    return m.group(1).upper() if m else None


def _specimen_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and _NIFTI.search(p.name) and not p.name.startswith("."))


def _strip_ext(name: str) -> str:
    return _NIFTI.sub("", name)


def load_lumbarsr(root, *, sequence: str | None = "195X_195Y_500Z_S", masks: bool = True) -> list[SpecimenPair]:
    """Find the specimen pairs of the LumbarSR challenge data (or a similar paired set).

    LumbarSR ("Lumbar Vertebral Super-Resolution Structure Reconstruction Challenge",
    github.com/frankzhangrp/LumbarSR-Challenge; data CC BY-NC-SA 4.0) has 30 human lumbar
    vertebrae (Lumbar_01 ... Lumbar_30; suggested split 01-25 train, 26-30 test), each with
    clinical CT series (in-plane 195 or 586 µm, 0.5 or 1 mm slices, soft ``S`` or bone ``B``
    kernel) and a 105 µm isotropic photon-counting micro-CT (Micro-PCCT, int16 HU). Its
    archive ``LumbarSR_Dataset.tar.gz`` extracts to::

        LumbarSR/
          RegisteredData/Lumbar_01/Lumbar01_ClinicalCT_195X_195Y_500Z_S_registered.nii.gz
                                   Lumbar01_ClinicalCT_<other sequences>_registered.nii.gz
                                   Lumbar01_MicroPCCT_105um.nii.gz             (ground truth)
          BoneMask/Lumbar_01/Lumbar01_MicroPCCT_105um_BoneMask.nii.gz
                             Lumbar01_ClinicalCT_<sequence>_registered_BoneMask.nii.gz
          original_dicom/Lumbar_01/clinical_ct/<sequence>/*.dcm, micro_ct/*.dcm

    (early releases named ``RegisteredData`` ``registered_nifti``). The registered clinical
    series are rigidly registered into the Micro-PCCT space (resampled onto its 105 µm grid);
    such pairs are marked ``registered=True``.

    Also accepted, for other paired sets: per-specimen folders or one flat folder holding
    ``<id>_CT.nii.gz`` and ``<id>_microCT.nii.gz`` (any of .nii, .nii.gz, .nrrd, .mha; "micro",
    "microCT", "MicroPCCT", "uCT" name the micro-CT; "CT", "ClinicalCT", "MDCT" the clinical
    one; names containing "mask", "seg" or "label" are masks of the image they otherwise name).

    Parameters
    ----------
    root : path
        The extracted ``LumbarSR`` folder, its ``RegisteredData`` folder, or a generic root.
    sequence : str or None
        Which clinical series to pair (default the small-FOV, 0.5 mm, soft-kernel one). None:
        the only one, or an error listing the choices when a specimen has several.
    masks : bool
        Look for the bone masks.

    Returns
    -------
    list of SpecimenPair, sorted by id.

    Raises
    ------
    BoneKitError
        Missing folder, no specimen found (the message shows the expected layout), or a
        specimen that lacks the requested series.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BoneKitError(f"{root}: no such folder.\n{_LAYOUT_HELP}")
    seq = None if sequence is None else str(sequence).upper()

    data_dir = next((root / d for d in ("RegisteredData", "registered_nifti") if (root / d).is_dir()), None)
    mask_dir = root / "BoneMask" if (root / "BoneMask").is_dir() else None
    if data_dir is None and root.name in ("RegisteredData", "registered_nifti"):
        data_dir = root
        if (root.parent / "BoneMask").is_dir():
            mask_dir = root.parent / "BoneMask"
    registered = data_dir is not None
    if data_dir is None and (root / "original_dicom").is_dir():
        return _load_dicom_layout(root / "original_dicom", seq)
    if data_dir is None:
        data_dir = root

    # Group files by specimen: sub-folders are specimens; files in the root are grouped by id.
    groups: dict[str, list[Path]] = {}
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        files = _specimen_files(sub)
        if files:
            groups[sub.name] = files
    for path in _specimen_files(data_dir):
        groups.setdefault(_flat_id(path.name), []).append(path)

    pairs: list[SpecimenPair] = []
    problems: list[str] = []
    for sid, files in sorted(groups.items()):
        if mask_dir is not None and (mask_dir / sid).is_dir() and masks:
            files = files + _specimen_files(mask_dir / sid)
        pair = _pair_from_files(sid, files, seq, masks, problems)
        if pair is not None:
            pair.registered = registered and "registered" in pair.clinical_ct.name.lower()
            pairs.append(pair)
    if problems:
        raise BoneKitError("Some specimens are incomplete:\n  " + "\n  ".join(problems))
    if not pairs:
        raise BoneKitError(f"No clinical CT / micro-CT pairs found under {root}.\n{_LAYOUT_HELP}")
    return pairs


def _flat_id(name: str) -> str:
    """Specimen id of a file in a flat folder: the name before its kind word."""
    stem = _strip_ext(name)
    m = re.match(r"(.+?)[-_ ]+(" + _MICRO + "|" + _CLINICAL + r")([-_ ].*)?$", stem, re.IGNORECASE)
    return m.group(1) if m else stem


def _pair_from_files(sid: str, files: list[Path], seq: str | None, masks: bool,
                     problems: list[str]) -> SpecimenPair | None:
    micro, micro_mask = [], []
    clinical: dict[str, Path] = {}
    clinical_masks: dict[str, Path] = {}
    for p in files:
        kind = _kind(p.name)
        if kind is None:
            continue
        is_mask = _is_mask(p.name)
        if kind == "micro":
            (micro_mask if is_mask else micro).append(p)
        else:
            key = _sequence_of(p.name) or ""
            (clinical_masks if is_mask else clinical)[key] = p
    if not micro and not clinical:
        return None
    if not micro or not clinical:
        problems.append(f"{sid}: {'no micro-CT' if not micro else 'no clinical CT'} among "
                        f"{[p.name for p in files]}")
        return None
    if len(micro) > 1:
        problems.append(f"{sid}: several micro-CT files {[p.name for p in micro]}; keep one.")
        return None
    if seq is not None and seq in clinical:
        key = seq
    elif len(clinical) == 1 and (seq is None or "" in clinical):
        key = next(iter(clinical))
    elif seq is None:
        problems.append(f"{sid}: several clinical series {sorted(clinical)}; choose one with sequence=.")
        return None
    else:
        problems.append(f"{sid}: no clinical series {seq!r}; found {sorted(k or '(unnamed)' for k in clinical)}.")
        return None
    return SpecimenPair(id=sid, clinical_ct=clinical[key], micro_ct=micro[0], sequence=key or None,
                        clinical_mask=clinical_masks.get(key) if masks else None,
                        micro_mask=(micro_mask[0] if micro_mask else None) if masks else None,
                        sequences={k or "": v for k, v in sorted(clinical.items())})


def _load_dicom_layout(folder: Path, seq: str | None) -> list[SpecimenPair]:
    pairs, problems = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        cdir, mdir = sub / "clinical_ct", sub / "micro_ct"
        if not (cdir.is_dir() and mdir.is_dir()):
            problems.append(f"{sub.name}: expected clinical_ct/ and micro_ct/ folders")
            continue
        series = {d.name.upper(): d for d in sorted(cdir.iterdir()) if d.is_dir() and not d.name.startswith(".")}
        key = seq if seq is not None else (next(iter(series)) if len(series) == 1 else None)
        if key not in series:
            problems.append(f"{sub.name}: no clinical series {seq!r}; found {sorted(series)}")
            continue
        pairs.append(SpecimenPair(id=sub.name, clinical_ct=series[key], micro_ct=mdir, sequence=key,
                                  sequences=series))
    if problems:
        raise BoneKitError("Some specimens are incomplete:\n  " + "\n  ".join(problems))
    if not pairs:
        raise BoneKitError(f"No specimens found under {folder}.\n{_LAYOUT_HELP}")
    return pairs

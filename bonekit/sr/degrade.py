"""Paired training data from high-resolution volumes alone: simulated clinical MDCT.

David et al. trained their super-resolution network on pairs whose low-resolution (LR) half was
made from the high-resolution (HR) half by blurring, down-sampling and noise; Jin et al. used
real MDCT / micro-CT pairs (see :mod:`bonekit.sr.pairing`). This module makes the first kind,
in physical units, so the same model describes a scanner whatever the micro-CT voxel size:

1. :func:`micro_ct_to_hu` turns a micro-CT (grey or binary) into an HU-like HR target;
2. :func:`simulate_mdct` images it with a clinical scanner (:class:`MDCTModel`): Gaussian
   point-spread function (PSF), slice profile, detector-pixel averaging, correlated noise;
3. :func:`upsample_to` interpolates the LR volume back onto the HR grid (cubic B-spline,
   the "bicubic" baseline and the generator's input);
4. :func:`make_pairs` cuts co-located 2-D patches (LR-upsampled, HR) for training.

Geometry convention (shared with :func:`bonekit.sr.infer.upsample`): an LR voxel is the
average of a ``scale x scale x scale`` block of HR voxels, and its centre is the centre of
that block, so the LR and HR grids cover the same physical box. Array axis 0 (k) is "z", the
slice axis of the scanner; axes 1 and 2 (j, i) are in-plane.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import BoneKitError
from ..volume import Volume

__all__ = ["MDCTModel", "fwhm_from_mtf10", "micro_ct_to_hu", "simulate_mdct", "refined_grid",
           "upsample_to", "make_pairs", "FWHM_PER_SIGMA"]

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def fwhm_from_mtf10(f10_lp_per_mm: float) -> float:
    """FWHM (mm) of the Gaussian PSF whose MTF falls to 10 % at ``f10_lp_per_mm`` (line pairs/mm).

    A Gaussian PSF of standard deviation sigma has MTF(f) = exp(-2 pi^2 sigma^2 f^2), so
    sigma = sqrt(ln(10) / 2) / (pi f10). Scanner data sheets quote MTF10 in lp/cm: divide by 10.
    Example: 15 lp/cm (1.5 lp/mm, a sharp bone kernel) gives 0.54 mm; 20 lp/cm gives 0.40 mm.
    """
    f10 = float(f10_lp_per_mm)
    if not math.isfinite(f10) or f10 <= 0:
        raise BoneKitError(f"MTF10 must be a positive frequency in line pairs per mm, got {f10_lp_per_mm!r}.")
    return FWHM_PER_SIGMA * math.sqrt(math.log(10.0) / 2.0) / (math.pi * f10)


def _pair(value, name: str, allow_zero: bool = True) -> tuple[float, float]:
    """A float or (in-plane, z) pair of non-negative millimetres, as a tuple of two floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise BoneKitError(f"{name} must be a number or an (in-plane, z) pair in mm, got {value!r}.") from None
    if len(pair) != 2 or not all(math.isfinite(v) and (v >= 0 if allow_zero else v > 0) for v in pair):
        raise BoneKitError(f"{name} must be a non-negative number or an (in-plane, z) pair of them in mm, "
                           f"got {value!r}.")
    return pair


@dataclass(frozen=True)
class MDCTModel:
    """A clinical multi-detector CT (MDCT) scanner, in physical units, for :func:`simulate_mdct`.

    The defaults describe a high-resolution clinical MDCT of the lumbar spine (thin slices,
    sharp bone kernel, small field of view) relative to micro-CT of about 50 µm:

    * ``scale = 4``: 51.3 µm micro-CT voxels (the FDA vertebra ROIs) become 0.205 mm MDCT
      pixels, the pixel size of a small-FOV (about 100 mm) 512-matrix reconstruction and of the
      LumbarSR challenge's small-FOV series (195 µm). From 19.5 µm micro-CT, use scale 8-10.
    * ``psf_fwhm_mm = (0.5, 0.3)``: in-plane resolution of MDCT with a sharp bone kernel is
      about 0.3-0.5 mm FWHM in the bone-microstructure literature (e.g. Link & Kazakia 2020,
      Burghardt et al. 2011: MDCT "in-plane resolution 250-500 µm, slice thickness >= 500 µm");
      for a Gaussian PSF, FWHM 0.5 mm is an MTF10 of about 15-16 lp/cm (:func:`fwhm_from_mtf10`),
      that of typical sharp bone kernels; 0.5 mm is the conservative end. The z value (0.3 mm)
      is the extra blur (focal spot, detector row, helical interpolation) that rounds the box
      slice profile below; it is not the slice thickness.
    * ``slice_thickness_mm = 0.6``: the thinnest helical reconstruction of common 64-row
      scanners (0.6 / 0.625 mm). With the 0.3 mm Gaussian the slice-sensitivity profile has a
      FWHM of about 0.6 mm, and the slices (every 0.205 mm) overlap, as an overlapping
      reconstruction does. ``None`` makes contiguous slices as thick as the LR slice spacing.
    * ``noise_hu = 30``: noise SD of clinical spine CT is about 20-40 HU at routine dose in
      soft tissue (higher with the sharpest kernels or at low dose); measure it as the SD in a
      uniform region (muscle, fat, water phantom) of your own scans and set it here.
    * ``noise_fwhm_mm = (0.4, 0.6)``: CT noise is correlated over about the kernel's
      resolution in-plane and the slice thickness along z; modelled as white noise filtered by
      a Gaussian of this FWHM (0 = white noise). Real CT noise has a band-pass power spectrum
      (ramp x kernel); a Gaussian is the usual simple approximation.
    * ``seed = 0``: noise is deterministic by default; ``None`` draws fresh noise each call.

    Attributes
    ----------
    scale : int
        LR voxel = HR voxel x ``scale`` along every axis (so the LR grid is as isotropic as the
        HR grid). >= 1.
    psf_fwhm_mm : (float, float)
        FWHM (mm) of the Gaussian PSF, (in-plane, z). 0 = no blur along those axes.
    slice_thickness_mm : float or None
        Width (mm) of the box slice profile along z, or None for the LR slice spacing.
    noise_hu : float
        Standard deviation (HU) of the noise added at the LR grid. >= 0.
    noise_fwhm_mm : (float, float)
        FWHM (mm) of the Gaussian that correlates the noise, (in-plane, z); 0 = white.
    seed : int or None
        Seed of the noise generator.
    """

    scale: int = 4
    psf_fwhm_mm: tuple[float, float] = (0.5, 0.3)
    slice_thickness_mm: float | None = 0.6
    noise_hu: float = 30.0
    noise_fwhm_mm: tuple[float, float] = (0.4, 0.6)
    seed: int | None = 0

    def __post_init__(self) -> None:
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not float(scale).is_integer():
            raise BoneKitError(f"scale must be a whole number (LR voxel = HR voxel x scale), got {scale!r}.")
        if int(scale) < 1:
            raise BoneKitError(f"scale must be at least 1, got {scale!r}.")
        object.__setattr__(self, "scale", int(scale))
        object.__setattr__(self, "psf_fwhm_mm", _pair(self.psf_fwhm_mm, "psf_fwhm_mm"))
        object.__setattr__(self, "noise_fwhm_mm", _pair(self.noise_fwhm_mm, "noise_fwhm_mm"))
        if self.slice_thickness_mm is not None:
            t = self.slice_thickness_mm
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
                raise BoneKitError(f"slice_thickness_mm must be a positive number of mm or None, got {t!r}.")
            object.__setattr__(self, "slice_thickness_mm", float(t))
        n = self.noise_hu
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 0:
            raise BoneKitError(f"noise_hu must be a non-negative number of HU, got {n!r}.")
        object.__setattr__(self, "noise_hu", float(n))
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
                raise BoneKitError(f"seed must be a non-negative whole number or None, got {self.seed!r}.")
            object.__setattr__(self, "seed", int(self.seed))

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists for the pairs); :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["psf_fwhm_mm"] = list(self.psf_fwhm_mm)
        d["noise_fwhm_mm"] = list(self.noise_fwhm_mm)
        return d

    @classmethod
    def from_dict(cls, data) -> "MDCTModel":
        """A model from :meth:`to_dict`'s form; missing keys take the defaults, unknown keys are an error."""
        if not isinstance(data, dict):
            raise BoneKitError(f"An MDCT model must be a dictionary of settings, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BoneKitError(f"Unknown MDCT model setting(s) {unknown}; the settings are {sorted(known)}.")
        return cls(**data)

    def with_(self, **changes) -> "MDCTModel":
        """A copy with some settings changed (validated again)."""
        d = self.to_dict()
        d.update(changes)
        return MDCTModel.from_dict(d)


# ------------------------------------------------------------------ HR target
def micro_ct_to_hu(volume: Volume, *, binary: bool | None = None, bone_hu: float = 1800.0,
                   marrow_hu: float = 0.0, method: str = "isodata", levels: Sequence[float] | None = None,
                   mask=None, partial_volume_sigma_vox: float = 0.0) -> Volume:
    """A micro-CT as an HU-like high-resolution target (float32, units "HU").

    Parameters
    ----------
    volume : Volume
        Micro-CT: binary (0/1, 0/255, bool: bone > 0) or grey (any numeric type).
        Check its spacing first (the FDA ROIs' headers say 1.0 mm; the true voxel is 51.2998 µm:
        ``read_volume(path, spacing=(0.0512998,) * 3)``).
    binary : bool or None
        Treat the volume as a segmentation. None: decide from the data (at most two distinct
        values, one of them 0, or a bool array).
    bone_hu, marrow_hu : float
        HU given to bone and to marrow. 1800 HU is about the CT number of fully mineralised
        bone tissue (about 1.2 g HA/cm^3) at clinical energies; 0 HU is about that of red
        marrow (water-like). Choose values matching the intensity range your model normalises.
    method : {"isodata", "otsu", "default"}
        Grey volumes: the ImageJ threshold (:func:`bonekit.threshold.threshold_image`) that
        separates marrow from bone.
    levels : (marrow_grey, bone_grey), optional
        Grey volumes: the grey levels of marrow and bone, instead of estimating them.
    mask : bool array, optional
        Grey volumes: the voxels that make the estimate (e.g. excluding the zero padding
        around a specimen).
    partial_volume_sigma_vox : float
        Binary volumes: Gaussian smoothing (standard deviation in HR voxels) that softens the
        staircase edges of a segmentation as the micro-CT's own partial volume does
        (0.5-1 is slight; 0 = exact two-level image).

    Returns
    -------
    Volume
        Same grid; float32 HU.

    Notes
    -----
    Grey volumes are mapped linearly, ``HU = marrow_hu + (g - g_marrow) / (g_bone - g_marrow)
    * (bone_hu - marrow_hu)``, where ``g_marrow`` and ``g_bone`` are the medians of the voxels
    below and above the automatic threshold: the typical grey level of each phase lands on
    its HU value (medians, not histogram peaks, because the bone phase of a micro-CT has no
    sharp peak). Values are not clipped.
    """
    from ..threshold import threshold_image

    if not isinstance(volume, Volume):
        raise BoneKitError("micro_ct_to_hu needs a bonekit Volume (read it with bonekit.read_volume).")
    a = volume.array
    if binary is None:
        vmax = a.max()
        binary = bool(a.min() == 0 and vmax > 0 and not np.any((a != 0) & (a != vmax)))
    if binary:
        bone = np.asarray(a) > 0
        out = np.where(bone, np.float32(bone_hu), np.float32(marrow_hu)).astype(np.float32)
        if partial_volume_sigma_vox < 0 or not math.isfinite(partial_volume_sigma_vox):
            raise BoneKitError("partial_volume_sigma_vox must be a non-negative number of voxels.")
        if partial_volume_sigma_vox > 0:
            out = ndimage.gaussian_filter(out, partial_volume_sigma_vox, mode="reflect")
        info = {"binary": True}
    else:
        if levels is not None:
            g_marrow, g_bone = (float(v) for v in levels)
            level = None
        else:
            level, fg = threshold_image(a, method, mask=mask)
            sel = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
            lo, hi = a[sel & ~fg], a[fg]
            if lo.size == 0 or hi.size == 0:
                raise BoneKitError("The threshold put every voxel in one phase; give levels=(marrow, bone) "
                                   "grey values yourself.")
            g_marrow, g_bone = float(np.median(lo)), float(np.median(hi))
        if not (math.isfinite(g_marrow) and math.isfinite(g_bone)) or g_bone == g_marrow:
            raise BoneKitError(f"Bone and marrow grey levels must differ (got {g_marrow:g} and {g_bone:g}).")
        gain = (bone_hu - marrow_hu) / (g_bone - g_marrow)
        out = ((np.asarray(a, dtype=np.float32) - np.float32(g_marrow)) * np.float32(gain)
               + np.float32(marrow_hu)).astype(np.float32)
        info = {"binary": False, "grey_marrow": g_marrow, "grey_bone": g_bone,
                "threshold": None if level is None else float(level), "method": method}
    info.update(bone_hu=float(bone_hu), marrow_hu=float(marrow_hu))
    return volume.with_array(out, modality="CT", units="HU",
                             metadata=dict(volume.metadata, micro_ct_to_hu=info))


# ------------------------------------------------------------------ the scanner
def _box_matrix(n_in: int, n_out: int, scale: int, width: float):
    """Sparse (n_out, n_in) weights: output ``o`` integrates the piecewise-constant input over a
    box of ``width`` input voxels centred on ``o * scale + (scale - 1) / 2``; rows sum to 1
    (boxes cut by the volume's edge are renormalised)."""
    from scipy import sparse

    centres = np.arange(n_out) * scale + (scale - 1) / 2.0
    first = np.floor(centres - width / 2.0 + 0.5).astype(np.int64)
    k = first[:, None] + np.arange(int(math.ceil(width)) + 2)[None, :]
    lo = np.maximum(k - 0.5, centres[:, None] - width / 2.0)
    hi = np.minimum(k + 0.5, centres[:, None] + width / 2.0)
    w = np.where((k >= 0) & (k < n_in), np.clip(hi - lo, 0.0, None), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(n_out), k.shape[1])
    matrix = sparse.csr_matrix((w.ravel(), (rows, np.clip(k, 0, n_in - 1).ravel())), shape=(n_out, n_in))
    matrix.sum_duplicates()
    return matrix


def _apply_along(a: np.ndarray, matrix, axis: int) -> np.ndarray:
    moved = np.moveaxis(a, axis, 0)
    out = matrix.astype(a.dtype) @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(np.asarray(out).reshape((matrix.shape[0],) + moved.shape[1:]), 0, axis)


def _block_mean(a: np.ndarray, scale: int, axis: int) -> np.ndarray:
    n = a.shape[axis] // scale
    a = np.take(a, np.arange(n * scale), axis=axis) if a.shape[axis] != n * scale else a
    shape = a.shape[:axis] + (n, scale) + a.shape[axis + 1:]
    return a.reshape(shape).mean(axis=axis + 1, dtype=np.float64).astype(np.float32)


def _gaussian_noise(shape, sigma_vox, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stationary Gaussian noise, correlated by a Gaussian of ``sigma_vox`` per axis.

    Filtering is circular (``mode="wrap"``), so the variance of the filtered field is exactly
    ``prod_axes(sum(w ** 2))`` of the discrete kernels ``w``; dividing by its square root (a
    property of the kernel, not of this draw) gives unit variance.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    var = 1.0
    for axis, s in enumerate(sigma_vox):
        if s > 0:
            noise = ndimage.gaussian_filter1d(noise, s, axis=axis, mode="wrap")
            var *= float(np.sum(_gaussian_kernel(s) ** 2))
    return noise / np.float32(math.sqrt(var))


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The discrete kernel scipy's ``gaussian_filter1d`` uses (normalised, radius ``truncate*sigma``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _check_hr(hr: Volume, scale: int) -> None:
    if not isinstance(hr, Volume):
        raise BoneKitError("simulate_mdct needs a bonekit Volume (the HR image in HU).")
    if any(n < scale for n in hr.shape):
        raise BoneKitError(f"The HR volume ({hr.shape[::-1]} voxels, i/j/k) is smaller than one LR voxel "
                           f"({scale} HR voxels per axis); give a larger volume or a smaller scale.")


def simulate_mdct(hr: Volume, model: MDCTModel | None = None, *, seed: int | None = ...) -> Volume:
    """Image an HR volume (HU) with the clinical scanner ``model``: the LR volume.

    Steps, all in physical units (the HR spacing converts mm to voxels per axis):

    1. Gaussian PSF, FWHM ``model.psf_fwhm_mm`` in-plane (j, i) and along z (k), on the HR grid
       (``mode="reflect"``: voxels beyond the edge mirror those inside);
    2. in-plane: each LR pixel is the mean of its ``scale x scale`` HR pixels (detector / pixel
       aperture; exact area averaging);
    3. along z: each LR slice integrates the HR volume over a box of ``slice_thickness_mm``
       centred on the slice (partial HR voxels weighted by overlap; with ``None`` this is the
       mean of its ``scale`` HR slices, like in-plane);
    4. noise of SD ``noise_hu``, correlated by a Gaussian of FWHM ``noise_fwhm_mm``, drawn on
       the LR grid from ``seed`` (deterministic).

    The LR grid keeps the HR direction, has spacing HR spacing x ``scale`` on every axis (z
    included, so an isotropic micro-CT gives an isotropic LR volume; the slice profile, not the
    spacing, carries the clinical slice thickness) and its voxel centres are the centres of their
    HR blocks. HR voxels beyond the last whole block (``shape % scale``) are dropped.

    Parameters
    ----------
    hr : Volume
        The HR image in HU (see :func:`micro_ct_to_hu`).
    model : MDCTModel, optional
        The scanner (default :class:`MDCTModel`'s defaults).
    seed : int or None, optional
        Overrides ``model.seed`` for this call.

    Returns
    -------
    Volume
        float32 HU on the LR grid; ``metadata["mdct_model"]`` records the model.
    """
    model = MDCTModel() if model is None else model
    if isinstance(model, dict):
        model = MDCTModel.from_dict(model)
    s = model.scale
    _check_hr(hr, s)
    seed = model.seed if seed is ... else seed
    a = np.asarray(hr.array, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise BoneKitError("The HR volume has NaN or infinite voxels; fill them first.")
    dz, dy, dx = hr.spacing_kji
    n_out = [n // s for n in a.shape]
    a = a[: n_out[0] * s, : n_out[1] * s, : n_out[2] * s]

    fwhm_xy, fwhm_z = model.psf_fwhm_mm
    sigma = [fwhm_z / FWHM_PER_SIGMA / dz, fwhm_xy / FWHM_PER_SIGMA / dy, fwhm_xy / FWHM_PER_SIGMA / dx]
    if any(v > 0 for v in sigma):
        a = ndimage.gaussian_filter(a, sigma, mode="reflect", output=np.float32)
    if s > 1:
        a = _block_mean(_block_mean(a, s, 2), s, 1)
    width = s if model.slice_thickness_mm is None else model.slice_thickness_mm / dz
    if s > 1 or width != 1:
        if width == s:
            a = _block_mean(a, s, 0) if s > 1 else a
        else:
            a = _apply_along(a, _box_matrix(a.shape[0], n_out[0], s, width), 0).astype(np.float32)

    if model.noise_hu > 0:
        lr_spacing = np.array([dz, dy, dx]) * s
        nf_xy, nf_z = model.noise_fwhm_mm
        nsig = [nf_z / FWHM_PER_SIGMA / lr_spacing[0], nf_xy / FWHM_PER_SIGMA / lr_spacing[1],
                nf_xy / FWHM_PER_SIGMA / lr_spacing[2]]
        rng = np.random.default_rng(seed)
        a = a + _gaussian_noise(a.shape, nsig, rng) * np.float32(model.noise_hu)

    affine = hr.affine.copy()
    affine[:3, :3] = hr.affine[:3, :3] * s
    affine[:3, 3] = hr.index_to_physical(np.full(3, (s - 1) / 2.0))
    meta = dict(hr.metadata, mdct_model=dict(model.to_dict(), seed=seed))
    return Volume(np.ascontiguousarray(a, dtype=np.float32), affine, modality="CT", units="HU", metadata=meta)


# ------------------------------------------------------------------ back onto the HR grid
def refined_grid(lr: Volume, scale) -> Volume:
    """A template volume (zeros, no memory) on the grid ``scale`` times finer than ``lr``.

    Each LR voxel is split into ``scale`` fine voxels per axis whose centres average to the LR
    centre (the inverse of :func:`simulate_mdct`'s geometry; the grid of
    :func:`bonekit.sr.infer.upsample`). ``scale`` is an int or three ints (i, j, k).
    """
    s = np.broadcast_to(np.asarray(scale), (3,)).astype(float)
    if np.any(s < 1) or np.any(s != np.round(s)):
        raise BoneKitError(f"scale must be whole numbers >= 1, got {scale!r}.")
    affine = lr.affine.copy()
    affine[:3, :3] = lr.affine[:3, :3] / s[None, :]
    affine[:3, 3] = lr.index_to_physical(-(s - 1) / (2.0 * s))
    shape = tuple(int(n * f) for n, f in zip(lr.shape, s[::-1]))
    return Volume(np.broadcast_to(np.float32(0), shape), affine, lr.modality, lr.units)


def upsample_to(lr: Volume, like: Volume, order: int = 3, *, mode: str = "nearest") -> Volume:
    """Interpolate ``lr`` onto the grid of ``like`` in physical space (float32).

    Each output voxel centre is mapped to LR voxel coordinates through both volumes' full
    IJK->LPS matrices (any spacing, origin, direction), and ``lr`` is sampled there with a
    B-spline of ``order`` (3 = cubic B-spline interpolation, the usual "bicubic" baseline;
    1 = (tri)linear; 0 = nearest). Points beyond the outermost LR voxel centres take the
    edge value (``mode="nearest"``, as :func:`bonekit.sr.infer.upsample`).

    Returns a Volume on ``like``'s grid with ``lr``'s modality and units.
    """
    if not (isinstance(lr, Volume) and isinstance(like, Volume)):
        raise BoneKitError("upsample_to needs two bonekit Volumes (the LR image and the target grid).")
    if order not in (0, 1, 2, 3, 4, 5):
        raise BoneKitError(f"order must be a B-spline order 0-5, got {order!r}.")
    # LR ijk = M @ like ijk + t; scipy works in (k, j, i): reverse both sides.
    m = np.linalg.inv(lr.affine) @ like.affine
    matrix = m[:3, :3][::-1, ::-1]
    offset = m[:3, 3][::-1]
    src = np.asarray(lr.array, dtype=np.float32)
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-12):
        matrix = np.diag(matrix)          # scipy's fast path for axis-aligned grids
    out = ndimage.affine_transform(src, matrix, offset=offset, output_shape=like.shape, order=order,
                                   mode=mode, output=np.float32)
    return Volume(out, like.affine.copy(), lr.modality, lr.units,
                  dict(lr.metadata, interpolated=f"B-spline order {order}"))


# ------------------------------------------------------------------ training pairs
def _patches(slice2d: np.ndarray, patch: int, stride: int) -> Iterable[tuple[int, int]]:
    h, w = slice2d.shape
    for y in range(0, h - patch + 1, stride):
        for x in range(0, w - patch + 1, stride):
            yield y, x


def make_pairs(hr_volumes, model: MDCTModel | None = None, *, patch: int = 64, stride: int | None = None,
               axis: int = 0, min_bone_fraction: float = 0.02, bone_threshold_hu: float = 400.0,
               order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Co-located 2-D training patches (LR interpolated onto the HR grid, HR) from HR volumes.

    Each HR volume (HU, see :func:`micro_ct_to_hu`) is imaged with :func:`simulate_mdct`
    (volume ``n`` gets noise seed ``model.seed + n``, so volumes differ but runs repeat),
    interpolated back with :func:`upsample_to` onto the HR grid (the whole LR blocks, see
    :func:`simulate_mdct`), and both are cut into slices along ``axis`` (0 = axial) and then
    ``patch x patch`` squares every ``stride`` pixels.

    Parameters
    ----------
    hr_volumes : Volume or sequence of Volume
    model : MDCTModel, optional
    patch : int
        Patch side in HR pixels.
    stride : int, optional
        Step between patches (default ``patch``: no overlap).
    axis : int
        Array axis the slices are normal to (0 = k, axial for an axial acquisition).
    min_bone_fraction : float
        Skip patches where less than this fraction of HR pixels exceeds ``bone_threshold_hu``
        (empty background); 0 keeps all.
    bone_threshold_hu : float
    order : int
        B-spline order of the interpolation of the LR volume (3 = cubic).

    Returns
    -------
    lr, hr : float32 arrays of shape (N, patch, patch), in HU.
    """
    model = MDCTModel() if model is None else model
    if isinstance(hr_volumes, Volume):
        hr_volumes = [hr_volumes]
    if isinstance(patch, bool) or not isinstance(patch, numbers.Integral) or patch < 1:
        raise BoneKitError(f"patch must be a positive whole number of pixels, got {patch!r}.")
    stride = patch if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise BoneKitError(f"stride must be a positive whole number of pixels, got {stride!r}.")
    if axis not in (0, 1, 2):
        raise BoneKitError(f"axis must be 0, 1 or 2 (array axis k, j or i), got {axis!r}.")
    lr_out, hr_out = [], []
    for n, hr in enumerate(hr_volumes):
        seed = None if model.seed is None else model.seed + n
        lr = simulate_mdct(hr, model, seed=seed)
        grid = refined_grid(lr, model.scale)
        up = upsample_to(lr, grid, order=order).array
        target = np.asarray(hr.array[: grid.shape[0], : grid.shape[1], : grid.shape[2]], dtype=np.float32)
        a, b = cut_patches(up, target, patch, stride, axis=axis, min_bone_fraction=min_bone_fraction,
                           bone_threshold_hu=bone_threshold_hu)
        lr_out.append(a)
        hr_out.append(b)
    return np.concatenate(lr_out), np.concatenate(hr_out)


def cut_patches(inputs: np.ndarray, targets: np.ndarray, patch: int, stride: int, *, axis: int = 0,
                min_bone_fraction: float = 0.02, bone_threshold_hu: float = 400.0) -> tuple[np.ndarray, np.ndarray]:
    """Co-located ``patch x patch`` squares every ``stride`` pixels of the slices along ``axis`` of two
    arrays on one grid (input interpolated onto the HR grid, HR target), keeping those whose target
    has at least ``min_bone_fraction`` of pixels above ``bone_threshold_hu``. float32 (N, patch, patch)."""
    if inputs.shape != targets.shape:
        raise BoneKitError(f"Input {inputs.shape} and target {targets.shape} must be on one grid to cut patches.")
    lr_out, hr_out = [], []
    for index in range(targets.shape[axis]):
        u2, h2 = np.take(inputs, index, axis=axis), np.take(targets, index, axis=axis)
        for y, x in _patches(h2, patch, stride):
            hp = h2[y:y + patch, x:x + patch]
            if min_bone_fraction > 0 and np.mean(hp > bone_threshold_hu) < min_bone_fraction:
                continue
            lr_out.append(u2[y:y + patch, x:x + patch])
            hr_out.append(hp)
    if not hr_out:
        return (np.zeros((0, patch, patch), np.float32),) * 2
    return np.stack(lr_out).astype(np.float32), np.stack(hr_out).astype(np.float32)

"""Global automatic thresholds that reproduce ImageJ / BoneJ, voxel for voxel.

BoneJ users segment bone with ImageJ's *Image > Adjust > Threshold* ("Default", dark
background, stack histogram). Matching their BV/TV needs ImageJ's own variants, which are not
the textbook ones: scikit-image's ``threshold_isodata`` is a different algorithm (it drops no
bins and caps no mode), and ImageJ's 16/32-bit images are thresholded on a 256-bin histogram
of their range and the bin level is mapped back with ImageJ's own formula.

Histogram functions take a histogram (counts per bin, ImageJ uses 256 bins) and return the
bin level ``t``: bins ``<= t`` are background, bins ``> t`` foreground.

* :func:`imagej_default` - ImageJ "Default" (``AutoThresholder.defaultIsoData``).
* :func:`imagej_ij_isodata` - ImageJ "IJ_IsoData": Default without the mode capping.
* :func:`imagej_isodata` - ImageJ "IsoData" (Ridler & Calvard 1978, G. Landini's port).
* :func:`otsu` - ImageJ "Otsu".

:func:`threshold_image` applies one of them (or a fixed level) to an image and returns the
level in image units together with the binary image, with ``foreground = image > level``.

These are clean-room numpy implementations written from the algorithm descriptions in
``shared/reference/morphometry-references.md`` and ImageJ's ``ij/process/AutoThresholder.java``,
``ij/IJ.java`` (``setStackThreshold``) and ``ij/process/StackStatistics.java``, and checked
against the compiled ImageJ classes (1.52i and 1.54u7) on random histograms and images.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import BoneKitError

__all__ = ["imagej_default", "imagej_ij_isodata", "imagej_isodata", "otsu", "threshold_image",
           "image_histogram", "METHODS"]


def _java_round(x: float) -> int:
    """Java's ``Math.round``: halves go up (112.5 -> 113), unlike Python's ``round``."""
    return int(math.floor(x + 0.5))


def _as_histogram(hist) -> np.ndarray:
    """Validate a histogram and return it as a fresh int64 array."""
    h = np.asarray(hist)
    if h.ndim != 1 or h.size < 3:
        raise BoneKitError(f"A histogram must be 1-D with at least 3 bins (got shape {h.shape}).")
    if not (np.issubdtype(h.dtype, np.integer) or np.issubdtype(h.dtype, np.floating)) \
            or not np.all(np.isfinite(h)) or np.any(h < 0) or np.any(h != np.floor(h)):
        raise BoneKitError("A histogram must hold non-negative whole counts.")
    h = h.astype(np.int64)
    if h.sum() == 0:
        raise BoneKitError("The histogram is empty (all counts are 0); there is nothing to threshold.")
    return h


def imagej_ij_isodata(hist) -> int:
    """ImageJ "IJ_IsoData": the original ImageJ iterative intermeans, without mode capping.

    Convention (bin indices, foreground = bins ``> level``):

    1. The first and the last bin (0 and 255 for ImageJ's 256 bins) are set to 0, so that
       erased / saturated pixels do not count.
    2. ``lo``, ``hi`` = lowest and highest non-empty bin left. If ``lo >= hi`` (at most one
       non-empty bin) the level is ``len(hist) // 2`` (128), as in ImageJ.
    3. For ``m = lo, lo+1, ...``: ``result = (mean of bins lo..m + mean of bins m+1..hi) / 2``
       (count-weighted bin indices). Stop at the first ``m`` with ``m + 2 > result``, or at
       ``m = hi - 2`` at the latest.
    4. ``level = round(result)`` with halves rounded up (Java ``Math.round``).

    The stop test in step 3 is ImageJ's, written for the split index ``m``. ImageJ's loop
    increments its index before testing ``index + 1 <= result``, so the test reads
    ``i + 1 > result`` in terms of the incremented index ``i = m + 1`` (as the reference text
    has it) but ``m + 2 > result`` in terms of the split the means were taken at; we follow the
    Java code, because the point of this function is to give ImageJ's number.
    """
    h = _as_histogram(hist)
    h[0] = h[-1] = 0
    filled = np.flatnonzero(h)
    if filled.size == 0 or filled[0] >= filled[-1]:
        return h.size // 2
    lo, hi = int(filled[0]), int(filled[-1])
    idx = np.arange(h.size)
    m = lo
    while True:
        below, above = slice(lo, m + 1), slice(m + 1, hi + 1)
        result = (np.dot(idx[below], h[below]) / h[below].sum()
                  + np.dot(idx[above], h[above]) / h[above].sum()) / 2.0
        if m + 2 > result or m + 1 >= hi - 1:
            return _java_round(result)
        m += 1


def imagej_default(hist) -> int:
    """ImageJ "Default" (``AutoThresholder.defaultIsoData``), the method BoneJ users threshold with.

    It is :func:`imagej_ij_isodata` after capping the mode: if the highest bin holds more than
    twice the counts of the second-highest bin (and that one is not empty), its count is
    replaced by ``int(1.5 * second highest)``. Foreground = bins ``> level``.

    Decision where the reference text is silent: as in ImageJ, the mode and the second-highest
    bin are searched over *all* bins, including the first and last bins that the IsoData step
    then ignores; the mode is the lowest bin among equal maxima, and a tie for the maximum means
    no capping. So a huge air peak in bin 0 takes the "mode" role (its capping has no effect
    because bin 0 is dropped) and the tissue peak is then not capped.

    ImageJ 1.54a and later answer histograms with at most two non-empty bins before any method
    runs ("bilevel": last non-empty bin - 1); that shortcut is not reproduced here. It selects
    the same bins whenever both are interior, and in :func:`threshold_image` for any two-valued
    non-uint8 image, but a uint8 image holding only 0 and k gets 128 here (nothing foreground
    when k <= 128) and k - 1 in ImageJ 1.54a+.
    """
    h = _as_histogram(hist)
    mode = int(np.argmax(h))
    second = int(np.delete(h, mode).max())
    if second != 0 and h[mode] > 2 * second:
        h[mode] = int(second * 1.5)
    return imagej_ij_isodata(h)


def imagej_isodata(hist) -> int:
    """ImageJ "IsoData" (Ridler & Calvard 1978, the intermeans rule in G. Landini's port).

    Convention (bin indices, foreground = bins ``> level``):

    * ``g`` starts one above the first non-empty bin among bins ``1..``; bin 0 is skipped
      only for this start, it counts in ``L``.
    * ``L`` = mean bin of the counts in bins ``< g``, *integer* (truncating) division;
      ``H`` = mean bin of the counts in bins ``> g`` (bin ``g`` itself is in neither), float.
    * The level is the first ``g`` (with both sides non-empty) where
      ``g == round((L + H) / 2)`` (halves up). ImageJ gives 0 when no ``g <= len - 2`` fits,
      and so does this function.

    This is the text of ImageJ 1.45m-1.54f (the reference measured 1.52i). ImageJ 1.54g and
    later also truncate ``H``; that never changes the level, because for an integer ``L`` the
    halves-up rounding of ``(L + H) / 2`` only depends on ``floor(H)``.
    """
    h = _as_histogram(hist)
    idx = np.arange(h.size)
    filled = np.flatnonzero(h[1:])
    g = int(filled[0]) + 2 if filled.size else 0
    while True:
        n_low, n_high = h[:g].sum(), h[g + 1:].sum()
        if n_low > 0 and n_high > 0:
            low = int(np.dot(idx[:g], h[:g])) // int(n_low)
            high = np.dot(idx[g + 1:], h[g + 1:]) / n_high
            if g == _java_round((low + high) / 2.0):
                return g
        g += 1
        if g > h.size - 2:
            return 0


def otsu(hist) -> int:
    """ImageJ "Otsu" (M. E. Celebi's implementation, ImageJ 1.54g and later).

    Returns the *smallest* bin ``k`` that maximises the between-class variance of the split
    background = bins ``<= k``, foreground = bins ``> k``. Ties happen over runs of empty bins
    between two peaks; then the level is the top of the lower peak. (ImageJ up to 1.54f used
    another port that returned the *largest* maximising ``k`` among ``1..254``, i.e. the bottom
    of the gap: the same bins are foreground, but :func:`threshold_image` maps the level back
    to image units, so a few voxels can differ between those ImageJ versions.)
    Raises BoneKitError when fewer than two bins are non-empty.
    """
    h = _as_histogram(hist)
    if np.count_nonzero(h) < 2:
        raise BoneKitError("Otsu needs at least two non-empty histogram bins.")
    p = (1.0 / h.sum()) * h
    below = np.cumsum(p)                       # fraction of counts in bins <= k
    mean_below = np.cumsum(np.arange(h.size) * p)   # first moment of bins <= k
    with np.errstate(divide="ignore", invalid="ignore"):
        bcv = mean_below[-1] * below - mean_below
        bcv = bcv * (bcv / (below * (1.0 - below)))
    bcv = np.where(np.isfinite(bcv), bcv, -np.inf)
    return int(np.argmax(bcv))                 # argmax returns the first maximum


#: histogram methods :func:`threshold_image` accepts by name (case-insensitive)
METHODS = {"default": imagej_default, "ij_isodata": imagej_ij_isodata,
           "isodata": imagej_isodata, "otsu": otsu}


def _check_image(image, mask):
    """Validate; return ``(image array, bool mask or None, selected values)``, the selected
    values being the (finite) voxel values inside the mask."""
    image = np.asarray(image)
    if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer)
                                       or np.issubdtype(image.dtype, np.floating)):
        raise BoneKitError(f"Cannot threshold an image of type {image.dtype}; give integer or float voxels.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise BoneKitError(f"The mask has shape {mask.shape} but the image has shape {image.shape}; "
                               "resample the mask onto the image grid first.")
        mask = mask.astype(bool, copy=False)
    values = image[mask] if mask is not None else image.ravel()
    if np.issubdtype(image.dtype, np.floating):
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise BoneKitError("The mask selects no voxels (or none with a finite value); there is nothing to threshold.")
    return image, mask, values


def image_histogram(values: np.ndarray, bins: int = 256, dtype=None) -> tuple[np.ndarray, float, float]:
    """The histogram ImageJ thresholds, and the value range it spans: ``(counts, lo, hi)``.

    * ``uint8`` (ImageJ 8-bit): one bin per grey value 0..255 (``bins`` must be 256),
      ``lo, hi = 0, 255``; bin = value.
    * any other integer or float type (ImageJ 32-bit images and "stack" histograms,
      ``StackStatistics``): ``lo, hi`` = min and max of ``values``, and
      ``bin = floor(bins * (v - lo) / (hi - lo))`` in float64, the maximum going into the last
      bin. (For uncalibrated 16-bit stacks ImageJ 1.54m and later use bins
      ``(hi - lo + 1) / 256`` wide instead; not reproduced.)

    ``values`` are the voxel values that count (already masked, finite). ``dtype`` is the image's
    type (default ``values.dtype``). Raises BoneKitError when all values are equal.
    """
    dtype = np.dtype(dtype or values.dtype)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        raise BoneKitError(f"Every selected voxel has the value {lo:g}; no threshold can split a "
                           "constant image (check the mask or give a fixed level).")
    if dtype == np.uint8:
        if bins != 256:
            raise BoneKitError("8-bit (uint8) images are histogrammed by grey value; use bins=256.")
        return np.bincount(values.ravel(), minlength=256).astype(np.int64), 0.0, 255.0
    counts = np.zeros(bins, np.int64)
    scale = bins / (hi - lo)
    flat = values.ravel()
    for start in range(0, flat.size, 1 << 22):        # float64 in slabs keeps memory bounded
        part = flat[start:start + (1 << 22)].astype(np.float64)
        index = np.minimum((scale * (part - lo)).astype(np.int64), bins - 1)
        counts += np.bincount(index, minlength=bins)
    return counts, lo, hi


def _largest_below(x: float, dtype: np.dtype):
    """The largest value of ``dtype`` strictly below ``x`` (so ``v > it`` iff ``v >= x``)."""
    if np.issubdtype(dtype, np.integer):
        return int(math.ceil(x)) - 1
    c = dtype.type(x)
    if float(c) >= x:
        c = np.nextafter(c, dtype.type(-np.inf))
    return c


def _greater(image: np.ndarray, level: float) -> np.ndarray:
    """``image > level`` with ``level`` taken as an exact real number (no rounding of level
    into the image's type, no float64 copy of the image)."""
    dtype = image.dtype
    if np.issubdtype(dtype, np.integer):
        cut, info = math.floor(level), np.iinfo(dtype)
        if cut < info.min:
            return np.ones(image.shape, bool)
        if cut >= info.max:
            return np.zeros(image.shape, bool)
        return image > dtype.type(cut)
    c = dtype.type(level)                       # largest value of dtype <= level
    if float(c) > level:
        c = np.nextafter(c, dtype.type(-np.inf))
    return image > c


def threshold_image(image, method="default", mask=None, bins: int = 256):
    """Threshold an image as ImageJ does; return ``(level, binary)``, ``binary = image > level``.

    Parameters
    ----------
    image : ndarray of integers or floats (e.g. HU as float32 / int16, uint16, uint8)
    method : "default" | "ij_isodata" | "isodata" | "otsu" (ImageJ names, case-insensitive),
        or a number: a fixed level in image units, foreground = ``image > number``
        (so a ">= T" rule on integer data is ``T - 1``).
    mask : bool array of the image's shape, optional. Only voxels inside it make the
        histogram (and its min/max), and voxels outside it are False in ``binary``.
    bins : histogram bins for non-uint8 images (ImageJ: 256).

    Returns
    -------
    level : float or int, in image units. Foreground is exactly ``image > level`` (inside the
        mask); NaN voxels are never foreground and never counted.
    binary : bool ndarray, the image's shape.

    Conventions of the automatic methods (those of ImageJ's Threshold dialog with "Dark
    background" and "Stack histogram", i.e. ``IJ.setAutoThreshold(imp, "Default dark stack")``):
    the histogram is :func:`image_histogram`; the method gives bin level ``t``; ImageJ then keeps
    ``value >= lower`` with ``lower = lo + ((t + 1) / (bins - 1)) * (hi - lo)`` (its
    ``setStackThreshold`` mapping, note the ``bins - 1`` = 255: this is ImageJ's formula, not
    the upper edge of bin ``t``). The returned ``level`` is the largest value of the image's
    type below ``lower`` (``ceil(lower) - 1`` for integer types, the float just below
    ``lower`` for float types), so ``image > level`` is ImageJ's selection voxel for voxel.
    For uint8 images ``lower = t + 1`` and ``level == t``: the 8-bit level is the bin.
    """
    image, mask, values = _check_image(image, mask)
    if isinstance(method, numbers.Real) and not isinstance(method, bool):
        level = float(method)
        if math.isnan(level):
            raise BoneKitError("The fixed threshold is NaN; give a number in image units.")
    else:
        name = str(method).lower()
        if name not in METHODS:
            raise BoneKitError(f"Unknown threshold method {method!r}; use one of "
                               f"{', '.join(METHODS)} or a number in image units.")
        if int(bins) != bins or bins < 3:
            raise BoneKitError(f"bins must be a whole number >= 3 (got {bins}).")
        counts, lo, hi = image_histogram(values, int(bins), image.dtype)
        t = METHODS[name](counts)
        first = min(t + 1, counts.size - 1)        # ImageJ's "lower" in bins: first foreground bin
        lower = first if image.dtype == np.uint8 else lo + (first / (counts.size - 1)) * (hi - lo)
        level = _largest_below(lower, image.dtype)
        level = int(level) if np.issubdtype(image.dtype, np.integer) else float(level)
    binary = _greater(image, level)
    if mask is not None:
        binary &= mask
    return level, binary

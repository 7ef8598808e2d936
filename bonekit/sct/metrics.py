"""Synthetic-CT metrics as X2CT-GAN and TomoRay report them, on [0, 1] volumes (the HU window).

* ``psnr``: 3D PSNR over the whole volume, ``data_range`` 1 (the window's width). X2CT-GAN instead
  maps back to [0, 2500] and divides by 4095, which inflates its PSNR; we do not.
* ``ssim``: mean over the three axes of the SSIM of the volume's slices along that axis (skimage's
  default 7 x 7 uniform window, slices as channels: X2CT's ``compare_ssim(..., multichannel=True)``).
* ``cosine``: cosine similarity of the flattened volumes (X2CT's), on [0, 1] data.
* ``mae``: mean absolute difference in [0, 1] units (x window width = HU).
"""

from __future__ import annotations

import numpy as np

from ..errors import BoneKitError
from ..sr.metrics import cosine_similarity, mae, psnr


def ssim_axes(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean over the 3 axes of skimage's SSIM with the slices along that axis as channels."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise BoneKitError(f"SSIM needs two volumes of the same shape, got {a.shape} and {b.shape}.")
    return float(np.mean([structural_similarity(a, b, data_range=data_range, channel_axis=axis)
                          for axis in range(3)]))


def volume_metrics(truth: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    """PSNR (dB, data range 1), SSIM (per axis averaged), cosine similarity and MAE on [0, 1] volumes."""
    truth = np.asarray(truth, np.float32)
    synthetic = np.asarray(synthetic, np.float32)
    if truth.shape != synthetic.shape:
        raise BoneKitError(f"The volumes differ in shape: {truth.shape} and {synthetic.shape}.")
    return {"psnr_db": psnr(truth, synthetic, 1.0), "ssim": ssim_axes(truth, synthetic, 1.0),
            "cosine": cosine_similarity(truth, synthetic), "mae": mae(truth, synthetic)}

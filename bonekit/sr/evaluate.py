"""Evaluation of a super-resolved volume against its high-resolution truth (Jin et al. 2021).

:func:`evaluate_volumes` gives, for the SR volume and optionally for the bicubic baseline of
the same clinical input, the image metrics (SSIM in Wang's windowed form and the 8-bit
simplified form, PSNR, cosine similarity, MAE, RMSE, FID with a local feature extractor) and
the morphometry comparison of Jin et al. Table 4: BV/TV, Tb.Th and Tb.Sp on cubic blocks of
the SR and high-res volumes, with Pearson R and paired differences.
"""

from __future__ import annotations

import numpy as np

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..volume import Volume


def blocks(shape, spacing_mm, block_mm: float) -> list[tuple[slice, slice, slice]]:
    """Non-overlapping cubic blocks of edge ``block_mm`` tiling a (k, j, i) array (remainders dropped)."""
    n = [int(block_mm / s) for s in spacing_mm]
    if min(n) < 4:
        raise BoneKitError(f"Blocks of {block_mm} mm are under 4 voxels: use larger --blocks.")
    counts = [shape[a] // n[a] for a in range(3)]
    if min(counts) < 1:
        raise BoneKitError(f"The volume ({shape} voxels) is smaller than one block of {block_mm} mm.")
    return [tuple(slice(c[a] * n[a], (c[a] + 1) * n[a]) for a in range(3))
            for c in np.ndindex(*counts)]


def evaluate_volumes(sr: Volume, hr: Volume, *, baseline: Volume | None = None, mask: Volume | None = None,
                     window_hu=(-200.0, 1800.0), threshold="isodata", block_mm: float = 2.5,
                     extractor=None, progress: ProgressCallback | None = None) -> dict:
    """Image and morphometry metrics of ``sr`` (and ``baseline``) against ``hr`` on the same grid.

    Parameters
    ----------
    sr, hr : Volume
        Super-resolved and high-resolution volumes in HU on one grid.
    baseline : Volume, optional
        The clinical input interpolated onto the same grid (e.g. :func:`bonekit.sr.infer.upsample`).
    mask : Volume, optional
        Evaluate inside it (non-zero voxels) only; blocks must lie fully inside.
    window_hu : (lo, hi)
        Data range of SSIM/PSNR (hi - lo) and the window of the 8-bit SSIM and of FID.
    threshold : float or str
        Bone threshold for morphometry: a level in HU, or a per-image method ("isodata", "otsu").
    block_mm : float
        Edge of the cubic blocks on which BV/TV, Tb.Th, Tb.Sp are compared.
    extractor : bonekit.sr.metrics.FeatureExtractor, optional
        Local FID feature network; FID is left out without one.

    Returns
    -------
    dict
        {"images": {"sr": {...}, "baseline": {...}}, "morphometry": {"sr": {...}, "baseline": {...}},
        "settings": {...}} with units in the keys' documentation (README).
    """
    from . import metrics

    report = progress or (lambda f, m: None)
    hr.require_same_grid(sr, "super-resolved volume")
    candidates = {"sr": sr}
    if baseline is not None:
        hr.require_same_grid(baseline, "baseline volume")
        candidates["baseline"] = baseline
    lo, hi = map(float, window_hu)
    m = None if mask is None else np.asarray(mask.array) != 0
    if mask is not None:
        hr.require_same_grid(mask, "mask")
    truth = np.asarray(hr.array, np.float32)
    images, morph, hr_results = {}, {}, None
    cubes = [b for b in blocks(truth.shape, hr.spacing_kji, block_mm) if m is None or m[b].all()]
    total = len(cubes)
    if not isinstance(threshold, str):
        # at a fixed level a block with no bone on one side has no Tb.Th: leave it out, and say how many
        arrays = [truth] + [np.asarray(v.array) for v in candidates.values()]
        cubes = [b for b in cubes if all((a[b] > threshold).any() and (a[b] <= threshold).any() for a in arrays)]
    if len(cubes) < 3:
        raise BoneKitError(f"Only {len(cubes)} blocks of {block_mm} mm fit (inside the mask): use smaller --blocks "
                           "or a larger volume; the correlation needs at least 3.")
    for n, (name, vol) in enumerate(candidates.items()):
        a = np.asarray(vol.array, np.float32)
        report(n / len(candidates), f"image metrics ({name})")
        images[name] = {"SSIM": metrics.ssim(a, truth, hi - lo, mask=m),
                        "SSIM_8bit": metrics.ssim_8bit(a, truth, (lo, hi)),
                        "PSNR": metrics.psnr(a, truth, hi - lo, mask=m),
                        "cosine": metrics.cosine_similarity(a, truth, mask=m),
                        "MAE": metrics.mae(a, truth, mask=m), "RMSE": metrics.rmse(a, truth, mask=m)}
        if extractor is not None:
            images[name]["FID"] = metrics.fid(a, truth, extractor, window_hu=(lo, hi))
        report((n + 0.5) / len(candidates), f"morphometry on {len(cubes)} blocks ({name})")
        comparison = metrics.compare_morphometry([a[b] for b in cubes], [truth[b] for b in cubes],
                                                 hr.spacing_kji, threshold=threshold, hr_results=hr_results)
        hr_results = comparison.results["hr"]   # the truth's blocks are measured once for all candidates
        morph[name] = comparison.to_dict()
    report(1.0, "done")
    return {"images": images, "morphometry": morph,
            "settings": {"window_hu": [lo, hi], "threshold": threshold, "block_mm": block_mm,
                         "blocks": len(cubes), "blocks_left_out": total - len(cubes), "masked": mask is not None,
                         "spacing_mm": [float(s) for s in hr.spacing]}}

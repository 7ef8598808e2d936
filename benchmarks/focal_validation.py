"""Focal bone-loss maps: scan-rescan reproducibility on phantoms and agreement with real micro-CT.

    python benchmarks/focal_validation.py [--rescan] [--microct] [--min-depth MG]

1. Rescan (Li et al. 2022 Table 1): lumbar phantoms (two seeds x five levels, BV/TV 0.08-0.20,
   some with planted voids) rendered without noise, then "scanned" twice: each scan moves the
   phantom by a small rigid transform (rotation up to 1.5 deg about each axis, shift up to
   0.5 mm; windowed-sinc interpolation, which adds no blur -- see
   ``bonekit.phantom.repositioned``; the ROI moved with it) and adds new 15 HU noise (white, or
   with ``--correlated-noise`` filtered by the PSF like reconstructed CT noise);
   ``--motion-seeds 0,1,2,3,4`` repeats it with other moves and noise. Per
   vertebra, the ROI means of the three maps in the 6 mm ROI (calibrated BMD). Printed: ICC(2,1)
   (two-way random effects, absolute agreement, single measurement; Shrout & Fleiss), the
   precision RMSSD = sqrt(mean over subjects of the per-subject variance) and LSC = 2.77 RMSSD
   (ISCD), and the between-subject SD.
2. Micro-CT (shared/data/microct/fda_vertebra_roi_51um: five binary trabecular ROIs of human
   lumbar vertebrae, 300^3 at 51.2998 um): each is degraded to clinical CT (bone tissue 1200 mg
   HA/cm3, marrow 0; HU = -2 + 1.22 BMD; Gaussian PSF FWHM 0.7 x 0.7 x 1.2 mm; 0.5 x 0.5 x 1 mm
   voxels; 15 HU noise), cut into 2 x 2 x 2 sub-ROIs (7.7 mm cubes less 0.75 mm at the block's
   faces), and the sub-ROI focal BMC loss is correlated (Pearson r) with the micro-CT BV/TV and
   Tb.Sp (BoneJ local thickness of the marrow) of the same sub-ROI. Li et al.: r = 0.79 and 0.76.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from bonekit.calibration import Calibration
from bonekit.cohort.stats import icc
from bonekit.focal import FocalParameters, focal_maps
from bonekit.volume import Volume, make_affine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "microct" / "fda_vertebra_roi_51um"
HU_SLOPE, HU_INTERCEPT, NOISE_HU = 1.22, -2.0, 15.0
CALIBRATION = Calibration(1 / HU_SLOPE, -HU_INTERCEPT / HU_SLOPE)
KEYS = ("IncptWidth", "FocalBMDLoss", "FocalBMCLoss")


def noise(rng, shape, spacing_kji, correlated: bool) -> np.ndarray:
    """15 HU noise: white, or with the texture of reconstructed CT noise (white noise filtered by the
    phantom's PSF, FWHM 0.7 x 0.7 x 1.2 mm, and scaled back to 15 HU SD)."""
    white = rng.normal(0, 1, shape)
    if correlated:
        white = ndimage.gaussian_filter(white, np.array([1.2, 0.7, 0.7]) / 2.3548 / np.asarray(spacing_kji))
    return white * (NOISE_HU / white.std())


def rescan(params: FocalParameters, correlated: bool, motion_seeds=(0,)) -> None:
    from bonekit.phantom import PhantomConfig, Void, repositioned, spine_phantom
    from bonekit.points import VERSE_NAMES
    from bonekit.vertebra import analyse_vertebrae

    rows = []
    for seed, bvtv, voids in ((1, (0.08, 0.11, 0.14, 0.17, 0.20), (Void("L2", 5.0), Void("L4", 8.0, (4, -3, 0)))),
                              (2, (0.19, 0.16, 0.13, 0.10, 0.09), (Void("L1", 6.0), Void("L3", 4.0)))):
        phantom = spine_phantom(PhantomConfig(seed=seed, bvtv=bvtv, voids=voids, noise_hu=0.0,
                                              truth_morphometry=False))
        _, masks = analyse_vertebrae(phantom.ct, phantom.labels, CALIBRATION)
        box = masks.roi.bounding_box(10.0)  # the ROIs and 10 mm around them (moved about their centre)
        ct0, roi0 = phantom.ct.crop(box), masks.roi.crop(box)
        for motion_seed in motion_seeds:
            rng = np.random.default_rng(seed if motion_seed == 0 else [seed, motion_seed])
            for scan in range(2):
                angles, shift = rng.uniform(-1.5, 1.5, 3), rng.uniform(-0.5, 0.5, 3)
                ct = repositioned(ct0, angles, shift).array
                ct = np.rint(ct + noise(rng, ct.shape, ct0.spacing_kji, correlated)).astype(np.int16)
                roi = repositioned(roi0, angles, shift, label=True).array
                for label in sorted(set(np.unique(roi).tolist()) - {0}):
                    result, _ = focal_maps(ct0.with_array(ct), roi0.with_array((roi == label).astype(np.uint8)),
                                           CALIBRATION, params=params)
                    rows.append({"motion": motion_seed, "vertebra": f"seed{seed} {VERSE_NAMES[label]}", "scan": scan,
                                 **{k: getattr(result, k) for k in KEYS}})
    everything = pd.DataFrame(rows)
    kind = "PSF-correlated" if correlated else "white"
    iccs = {key: [] for key in KEYS}
    for motion_seed, table in everything.groupby("motion"):
        print(f"Rescan reproducibility, {table.vertebra.nunique()} phantom vertebrae x 2 scans (new {kind} noise, "
              f"rigid move; motion seed {motion_seed}; min depth {params.min_depth:g}):")
        print(f"  {'measure':<13} {'ICC(2,1)':>8} {'RMSSD':>8} {'LSC':>8} {'between-subject SD':>19} {'mean':>7}")
        for key in KEYS:
            icc21 = next(r["icc"] for r in icc(table, "vertebra", "scan", key) if r["shrout_fleiss"] == "ICC(2,1)")
            iccs[key].append(icc21)
            scores = table.pivot(index="vertebra", columns="scan", values=key).to_numpy()
            rmssd = float(np.sqrt(np.mean(scores.var(axis=1, ddof=1))))
            print(f"  {key:<13} {icc21:8.3f} {rmssd:8.4f} {2.77 * rmssd:8.4f} "
                  f"{scores.mean(axis=1).std(ddof=1):19.4f} {scores.mean():7.3f}")
    if len(motion_seeds) > 1:
        print(f"ICC(2,1) over motion seeds {', '.join(map(str, motion_seeds))} (min / median / max):")
        for key, values in iccs.items():
            print(f"  {key:<13} {min(values):.3f} / {np.median(values):.3f} / {max(values):.3f}")


def microct(params: FocalParameters) -> None:
    from bonekit.io import read_volume
    from bonekit.morphometry import morphometry

    voxel = 0.0512998
    rows = []
    rng = np.random.default_rng(0)
    for path in sorted(DATA.glob("*.nrrd")):
        binary = read_volume(path).array != 0
        n = binary.shape[0]
        # clinical CT of the block: BMD -> HU, PSF, 0.5 x 0.5 x 1 mm voxels (area-weighted), noise
        pad = int(round(3.0 / voxel))
        density = np.pad(binary.astype(np.float32) * 1200.0, pad, mode="constant",
                         constant_values=float(binary.mean() * 1200.0))
        hu = HU_INTERCEPT + HU_SLOPE * density
        fwhm = np.array([1.2, 0.7, 0.7])  # k, j, i
        hu = ndimage.gaussian_filter(hu, fwhm / 2.3548 / voxel, mode="nearest")
        coarse_mm = np.array([1.0, 0.5, 0.5])
        zoom = voxel / coarse_mm
        hu = ndimage.zoom(hu, zoom, order=1, grid_mode=True, mode="grid-constant")
        hu = np.rint(hu + rng.normal(0, NOISE_HU, hu.shape)).astype(np.int16)
        origin = -pad * voxel + (coarse_mm / 2 - voxel / 2)[::-1]
        ct = Volume(hu, make_affine(coarse_mm[::-1], origin), modality="CT", units="HU")
        half, margin = n // 2, int(round(0.75 / voxel))
        for corner in np.ndindex(2, 2, 2):
            box = tuple(slice(c * half + (margin if c == 0 else 0), (c + 1) * half - (margin if c == 1 else 0))
                        for c in corner)
            sub = binary[box]
            # the sub-ROI on the clinical grid: clinical voxel centres inside the micro-CT box
            centres = [(np.arange(hu.shape[a]) * coarse_mm[a] + origin[::-1][a]) / voxel for a in range(3)]
            inside = [(c >= b.start - 0.5) & (c <= b.stop - 0.5) for c, b in zip(centres, box)]
            roi = np.zeros(hu.shape, np.uint8)
            roi[np.ix_(*inside)] = 1
            result, _ = focal_maps(ct, ct.with_array(roi), CALIBRATION, params=params)
            morph, _ = morphometry(Volume(sub.astype(np.uint8), make_affine((voxel,) * 3)), binary=True)
            rows.append((path.stem, corner, morph.BV_TV, morph.Tb_Sp, result.FocalBMCLoss, result.IncptWidth,
                         int(roi.sum())))
            print(f"  {path.stem:<12} {corner} BV/TV {morph.BV_TV:.3f} Tb.Sp {morph.Tb_Sp:.3f} mm  "
                  f"FocalBMCLoss {result.FocalBMCLoss:.3f} mm  IncptWidth {result.IncptWidth:.3f} mm  "
                  f"({int(roi.sum())} CT voxels)", flush=True)
    data = np.array([r[2:6] for r in rows])
    for q, name in ((0, "BV/TV"), (1, "Tb.Sp")):
        r, p = stats.pearsonr(data[:, 2], data[:, q])
        r_w, _ = stats.pearsonr(data[:, 3], data[:, q])
        print(f"FocalBMCLoss vs micro-CT {name}: r = {r:+.2f} (p = {p:.2g}, n = {len(rows)}); "
              f"IncptWidth vs {name}: r = {r_w:+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rescan", action="store_true")
    parser.add_argument("--microct", action="store_true")
    parser.add_argument("--min-depth", type=float, default=0.0, help="FocalParameters.min_depth (mg HA/cm3)")
    parser.add_argument("--correlated-noise", action="store_true",
                        help="rescans with noise of CT texture (PSF-filtered) instead of white noise")
    parser.add_argument("--motion-seeds", default="0",
                        help="comma-separated seeds of the moves and noise (0: the first reported draw)")
    args = parser.parse_args()
    params = FocalParameters(min_depth=args.min_depth)
    everything = not (args.rescan or args.microct)
    if args.rescan or everything:
        rescan(params, args.correlated_noise, [int(v) for v in args.motion_seeds.split(",")])
    if args.microct or everything:
        if DATA.is_dir():
            microct(params)
        else:
            print(f"micro-CT part skipped: {DATA} not found")


if __name__ == "__main__":
    main()

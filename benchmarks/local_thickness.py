"""Local thickness (Tb.Th) speed and values: BoneKit against porespy and ITKBoneMorphometry in the
same run, and against BoneJ/Fiji's timings measured on this 2-core machine (shared/reference).

    python benchmarks/local_thickness.py [--size 300] [--skip-sphere]

Peers are used when importable (``pip install "bonekit[bench]"`` in a separate venv: porespy pulls
a vtk that conflicts with slicer-core). Structures, all on an N^3 grid of 1-voxel spacing:

- random: a Gaussian-filtered noise field (sigma 3 voxels) thresholded at 0.02, the "random
  trabecular structure" of the BoneJ reference timing (13 s at 300^3);
- sphere: a ball of radius N/2 - 10 (BoneJ: 130 s at 300^3; porespy takes about 13 minutes on it,
  ``--skip-sphere`` leaves it out).

Printed: seconds (steady state: each tool runs once on a small block first to compile/load, then
the median of 3 runs; one run for the sphere),
the mean thickness in voxels and the ratio of times. porespy's default ``method='bf'`` floors
radii to integers (biased); ITKBoneMorphometry's Tb.Th is the plate-model 2 BV/BS, not a local
thickness (shown for users comparing with studies that used it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from bonekit.thickness import local_thickness

BONEJ_SECONDS = {"random": 13.0, "sphere": 130.0}  # Fiji LocalThickness, 300^3, this machine (reference)


def structures(n: int, sphere: bool):
    rng = np.random.default_rng(1)
    yield "random", ndimage.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 3) > 0.02
    if sphere:
        z, y, x = np.ogrid[:n, :n, :n]
        c = n // 2
        yield "sphere", (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= (c - 10) ** 2


def timed(fn, repeats=3):
    """Median wall time of ``repeats`` runs (the same for every tool), and the value."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds)), value


def bonekit_tbth(b):
    return float(np.nanmean(local_thickness(b)))


def porespy_tbth(b):
    import porespy

    lt = porespy.filters.local_thickness(b)
    return float(2 * lt[b].mean())


def itk_tbth(b):
    import itk

    image = itk.image_from_array(np.pad(b, 1).astype(np.uint8))
    f = itk.BoneMorphometryFeaturesFilter.New(image)
    f.SetThreshold(1)
    f.Update()
    return float(f.GetTbTh())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--skip-sphere", action="store_true")
    args = parser.parse_args()
    tools = {"BoneKit": bonekit_tbth, "porespy": porespy_tbth, "ITKBoneMorphometry": itk_tbth}
    warm = np.zeros((40, 40, 40), bool)  # thin and thick parts, and a ball (whose ridge balls are
    warm[4:36, 4:36, 4:34] = True  # left out): every kernel compiles before timing
    warm[10:30, 10:30, 36:39] = True
    z, y, x = np.ogrid[:48, :48, :48]
    ball = (z - 24) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 20 ** 2
    for name, fn in list(tools.items()):
        try:
            fn(warm)
            fn(ball)
        except Exception as exc:  # not installed, or failed: leave it out of the table
            print(f"{name}: not run ({type(exc).__name__}: {exc})")
            del tools[name]
    print(f"\n{'structure':<9} {'tool':<19} {'seconds':>8} {'Tb.Th (voxels)':>15} {'BoneJ s / tool s':>17}")
    for label, b in structures(args.size, not args.skip_sphere):
        bonej = BONEJ_SECONDS[label] if args.size == 300 else None
        for name, fn in tools.items():
            seconds, value = timed(lambda: fn(b), 1 if label == "sphere" else 3)
            ratio = f"{bonej / seconds:17.1f}" if bonej else f"{'':>17}"
            print(f"{label:<9} {name:<19} {seconds:8.2f} {value:15.3f} {ratio}", flush=True)
        if bonej:
            print(f"{label:<9} {'BoneJ (reference)':<19} {bonej:8.1f} {'':>15} {1.0:17.1f}")


if __name__ == "__main__":
    main()

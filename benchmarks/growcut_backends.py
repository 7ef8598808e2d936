"""GrowCut backends side by side: ITK's FastGrowCut (pip itk-growcut, the core's default) and
Slicer's vtkImageGrowCutSegment (pip slicer-core, what the BoneMorphometry module uses).

Both run on exactly the inputs that ``bonekit.segment.segment_vertebrae`` gives its GrowCut in
its two passes on the default spine phantom (L1-L5, 0.5 x 0.5 x 1 mm), with one point per
vertebra from the phantom's truth: pass 1 grows spine against background in the crop around
the points, pass 2 splits the spine between the vertebrae with everything else excluded
(the mask). The inputs are recorded from one real segmentation run, then each backend grows
each pass three times; the best time is reported. ITK's first-use cost (import and wrapping
load) is measured separately, before anything else touches ITK.

Run: python benchmarks/growcut_backends.py   (needs itk-growcut and slicer-core)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "BoneKitLib"))

REPEATS = 3


def best_of(function, *args) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    start = time.perf_counter()
    import itk
    itk.FastGrowCut  # ITK loads its wrappings lazily, on first attribute access
    itkImport = time.perf_counter() - start
    from bonekit.segment import itk_growcut
    tiny = np.zeros((3, 3, 3), np.float32)
    start = time.perf_counter()
    itk_growcut(tiny, np.ones((3, 3, 3), np.uint8), (1.0, 1.0, 1.0))
    itkFirstCall = time.perf_counter() - start

    start = time.perf_counter()
    from BoneKitLib.growcut import vtkGrowCut
    vtkImport = time.perf_counter() - start

    from bonekit.phantom import spine_phantom
    from bonekit.segment import segment_vertebrae

    print("building the default spine phantom ...", flush=True)
    phantom = spine_phantom()
    points = {v["label"]: np.asarray(v["centre_lps_mm"], float) for v in phantom.truth["vertebrae"]}

    calls = []

    def recordingGrowCut(intensity, seeds, spacing, exclude=None):
        calls.append((intensity.copy(), seeds.copy(), tuple(spacing), None if exclude is None else exclude.copy()))
        return itk_growcut(intensity, seeds, spacing, exclude)

    labels = segment_vertebrae(phantom.ct, points, growcut=recordingGrowCut)
    dice = {}
    for vid in points:
        a, b = labels.array == vid, phantom.labels.array == vid
        dice[vid] = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))

    crop = "x".join(str(s) for s in calls[0][0].shape[::-1])
    spacing = " x ".join(f"{s:g}" for s in phantom.ct.spacing)
    print(f"\nphantom CT {'x'.join(str(s) for s in phantom.ct.shape[::-1])} voxels (i x j x k), {spacing} mm, "
          f"{len(points)} vertebrae; GrowCut crop {crop}; segmentation Dice vs truth "
          f"{min(dice.values()):.3f}-{max(dice.values()):.3f}")
    print(f"first use: import itk + load FastGrowCut wrapping {itkImport:.2f} s, first FastGrowCut call "
          f"(3x3x3) {itkFirstCall:.3f} s; import BoneKitLib.growcut (slicer, vtk) {vtkImport:.2f} s")
    print(f"\n{'pass':<32}{'voxels':>12}{'itk (s)':>10}{'vtk (s)':>10}{'vtk/itk':>9}  identical")
    totals = [0.0, 0.0]
    allSame = True
    for n, (intensity, seeds, spacing, exclude) in enumerate(calls, 1):
        what = "spine vs background" if exclude is None else "vertebrae in the spine (mask)"
        tItk, outItk = best_of(itk_growcut, intensity, seeds, spacing, exclude)
        tVtk, outVtk = best_of(vtkGrowCut, intensity, seeds, spacing, exclude)
        same = bool(np.array_equal(outItk, outVtk))
        allSame &= same
        totals[0] += tItk
        totals[1] += tVtk
        shape = "x".join(str(s) for s in intensity.shape[::-1])
        print(f"{n}: {what:<29}{shape:>12}{tItk:>10.2f}{tVtk:>10.2f}{tVtk / tItk:>9.2f}  {same}")
    print(f"{'both passes':<32}{'':>12}{totals[0]:>10.2f}{totals[1]:>10.2f}{totals[1] / totals[0]:>9.2f}  {allSame}")
    print(f"(best of {REPEATS}, wall clock; each call includes its numpy <-> image conversions, not imports)")


if __name__ == "__main__":
    main()

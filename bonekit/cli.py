"""The ``bonekit`` command line.

Every bad input ends in one line on stderr (``bonekit: error: ...``) and exit status 2,
with nothing written. Long steps show a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import BoneKitError

EXIT_BAD_INPUT = 2


# ----------------------------------------------------------------------------- helpers
def _floats(text: str, n: int | None = None, what: str = "values") -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise BoneKitError(f"{what} must be comma-separated numbers, got '{text}'.") from None
    if n is not None and len(values) != n:
        raise BoneKitError(f"{what} needs {n} comma-separated numbers, got '{text}'.")
    return values


def _spacing(text: str | None):
    return None if text is None else _floats(text, 3, "--spacing")


class _Progress:
    """A tqdm bar driven by (fraction, message) callbacks; silent when stderr is not a terminal."""

    def __init__(self, title: str):
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=title, unit="%", disable=None, leave=False, file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(round(100 * max(0.0, min(1.0, fraction))))
        self.bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_lines(fraction: float, message: str) -> None:
    """Machine-readable progress for a parent process (the Slicer module): one line per update."""
    print(f"PROGRESS {fraction:.4f} {message}", file=sys.stderr, flush=True)


def progress_for(args, title: str):
    """The progress callback of a command: PROGRESS lines with --progress-lines, else a bar."""
    if getattr(args, "progress_lines", False):
        class _Lines:
            def __enter__(self):
                return progress_lines

            def __exit__(self, *exc):
                return None

        return _Lines()
    return _Progress(title)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_training_commands(sub, cmd_train, cmd_example_config, what: str) -> None:
    """``train`` and ``example-config`` of a deep-learning command group (``bonekit sr``, ``bonekit sct``)."""
    p = sub.add_parser("train", help=f"train {what} from a JSON configuration (see example-config)")
    p.add_argument("config", help="training configuration (JSON)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--out", help="output folder (overrides the configuration's)")
    p.add_argument("--device", help="auto, cuda, cpu (overrides the configuration's)")
    p.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("example-config", help="print (or write) a complete training configuration")
    p.add_argument("--out", help="write it to this JSON file")
    p.set_defaults(func=cmd_example_config)


def print_or_write_config(config: dict, out: str | None) -> int:
    from .io import write_json

    if out:
        write_json(config, out)
        print(f"example configuration -> {out}")
    else:
        print(json.dumps(config, indent=2))
    return 0


def print_models(kind: str, as_json: bool, describe) -> int:
    """``bonekit sr|sct models``: the catalogue's models of ``kind``, as JSON or one ``describe(entry)`` line each."""
    from .models import catalogue

    entries = catalogue(kind)
    print(json.dumps(entries, indent=2) if as_json else "\n".join(describe(e) for e in entries))
    return 0


def _output_dir(path: str) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise BoneKitError(f"{out}: exists and is not a folder; choose another --out.")
    if not out.parent.exists():
        raise BoneKitError(f"{out.parent}: the parent folder does not exist.")
    return out


# ----------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    from .io import read_volume

    volume = read_volume(args.file, spacing=_spacing(args.spacing), series_uid=args.series)
    d = volume.describe()
    if args.json:
        print(json.dumps({"file": str(args.file), **d, "metadata": volume.metadata}, indent=2))
        return 0
    print(f"{args.file}")
    print(f"  size (i, j, k)     {d['size_ijk'][0]} x {d['size_ijk'][1]} x {d['size_ijk'][2]} voxels")
    print(f"  spacing            {' x '.join(f'{s:.4g}' for s in d['spacing_mm'])} mm"
          + ("  (overridden)" if args.spacing else ""))
    print(f"  origin (LPS)       {', '.join(f'{o:.3f}' for o in d['origin_lps_mm'])} mm")
    print(f"  orientation        {d['orientation']} (axes i, j, k point towards these directions)")
    for row, name in zip(d["direction"], ("x", "y", "z")):
        print(f"  direction {name}        {'  '.join(f'{v:+.6f}' for v in row)}")
    lo, hi = d["extent_lps_mm"]
    print(f"  extent (LPS)       x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, z {lo[2]:.1f}..{hi[2]:.1f} mm")
    print(f"  modality / units   {d['modality'] or 'unknown'} / {d['units'] or 'unknown'}")
    print(f"  values             {d['dtype']}, min {d['min']:.6g}, max {d['max']:.6g}, mean {d['mean']:.6g}"
          + (f", {d['nonfinite_voxels']} non-finite" if d["nonfinite_voxels"] else ""))
    for key in ("series_description", "manufacturer", "kernel", "kvp", "slice_thickness", "dicom_files"):
        if key in volume.metadata:
            print(f"  {key.replace('_', ' '):<18} {volume.metadata[key]}")
    return 0


# ----------------------------------------------------------------------------- phantom
def _phantom_config(args):
    from .phantom import Fracture, PhantomConfig, Void

    fractures = []
    for spec in args.fracture or []:
        parts = spec.split(":")
        if len(parts) != 3:
            raise BoneKitError(f"--fracture takes VERTEBRA:TYPE:LOSS (e.g. L2:wedge:0.3), got '{spec}'.")
        fractures.append(Fracture(parts[0], parts[1], _floats(parts[2], 1, "fracture height loss")[0]))
    voids = []
    for spec in args.void or []:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise BoneKitError(f"--void takes VERTEBRA:DIAMETER_MM[:X,Y,Z] (e.g. L3:5), got '{spec}'.")
        offset = _floats(parts[2], 3, "void offset") if len(parts) == 3 else (0.0, 0.0, 0.0)
        voids.append(Void(parts[0], _floats(parts[1], 1, "void diameter")[0], offset))
    fields = dict(seed=args.seed, fractures=tuple(fractures), voids=tuple(voids),
                  truth_morphometry=not args.no_truth_morphometry)
    if args.spacing:
        fields["spacing_mm"] = _floats(args.spacing, 3, "--spacing")
    if args.rods:
        fields["calibration_rods"] = _floats(args.rods, None, "--rods")
    if args.noise is not None:
        fields["noise_hu"] = args.noise
    return PhantomConfig(**fields)


def cmd_phantom(args) -> int:
    from .io import write_json, write_volume
    from .phantom import microct_phantom, spine_phantom

    out = _output_dir(args.out)
    if args.microct is not None:
        block = microct_phantom(voxel_mm=args.microct, bvtv=args.bvtv, seed=args.seed)
        out.mkdir(exist_ok=True)
        write_volume(block.image, out / "microct.nii.gz")
        write_volume(block.binary, out / "microct_binary.nii.gz")
        write_json(block.truth, out / "microct_truth.json")
        t = block.truth
        print(f"micro-CT block {block.image.size} at {t['voxel_mm'] * 1000:.1f} um: BV/TV {t['BV/TV']:.4f}, "
              f"Tb.Th {t['Tb.Th']:.4f} mm, Tb.Sp {t['Tb.Sp']:.4f} mm -> {out}")
        return 0
    config = _phantom_config(args)
    with _Progress("phantom") as progress:
        phantom = spine_phantom(config, progress=progress)
    out.mkdir(exist_ok=True)
    paths = phantom.save(out)
    print(f"spine phantom {phantom.ct.size} voxels, {', '.join(phantom.config.vertebrae)} -> {out}")
    for name, path in paths.items():
        print(f"  {name:<11} {path.name}")
    return 0


# ----------------------------------------------------------------------------- segment / vertebra / calibrate
def _not_an_input(out: Path, *inputs) -> None:
    """Refuse an output path that would overwrite one of the inputs."""
    for item in inputs:
        if item and Path(item).expanduser().resolve() == out.expanduser().resolve():
            raise BoneKitError(f"{out} is also an input; choose another output path (inputs are never overwritten).")


def cmd_segment(args) -> int:
    from .io import read_volume, write_volume
    from .points import VERSE_NAMES, read_points
    from .segment import SegmentationParameters, segment_vertebrae

    out = Path(args.out)
    _not_an_input(out, args.ct, args.points, args.centroids, args.seeds)
    ct = read_volume(args.ct, spacing=_spacing(args.spacing))
    params = SegmentationParameters(bone_hu=args.bone_hu, seed_hu=args.seed_hu)
    points = seeds = None
    if args.seeds:
        seeds = read_volume(args.seeds, spacing=_spacing(args.spacing))
    else:
        points = read_points(args.points or args.centroids, image=ct)
    started = time.perf_counter()
    with _Progress("segment") as progress:
        labels = segment_vertebrae(ct, points, seeds=seeds, params=params, progress=progress)
    write_volume(labels, out)
    vox = ct.voxel_volume
    counts = {int(v): int((labels.array == v).sum()) for v in sorted(set(labels.array.ravel().tolist()) - {0})}
    print(f"segmented {len(counts)} vertebrae in {time.perf_counter() - started:.1f} s -> {out}")
    for vid, n in counts.items():
        print(f"  {VERSE_NAMES[vid]:<4} label {vid:>2}  {n * vox / 1000:8.1f} cm3")
    return 0


def _load_calibration(args):
    from .calibration import Calibration, parse_pairs

    if args.calibration and args.calibration_pairs:
        raise BoneKitError("Give --calibration FILE or --calibration-pairs, not both.")
    if args.calibration:
        return Calibration.load(args.calibration)
    if args.calibration_pairs:
        return Calibration.fit(*parse_pairs(args.calibration_pairs))
    return None


def cmd_vertebra(args) -> int:
    from .io import read_volume, write_json, write_volume
    from .vertebra import VertebraParameters, VertebraResult, analyse_vertebrae

    out = _output_dir(args.out)
    _not_an_input(Path(args.json), args.ct, args.labels)
    ct = read_volume(args.ct, spacing=_spacing(args.spacing))
    labels = read_volume(args.labels, spacing=_spacing(args.spacing))
    calibration = _load_calibration(args)
    params = VertebraParameters(erosion_mm=args.erosion, voi_diameter_mm=args.voi_diameter,
                                voi_half_height_mm=args.voi_half_height)
    rows, masks = analyse_vertebrae(ct, labels, calibration, params)
    out.mkdir(exist_ok=True)
    files = {name: write_volume(getattr(masks, name), out / f"{name}.nii.gz").name for name in ("body", "roi", "voi")}
    result = {"ct": str(args.ct), "labels": str(args.labels),
              "calibration": calibration.to_dict() if calibration else None,
              "bmd_calibrated": calibration is not None,
              "note": None if calibration else "BMD is uncalibrated: mean HU is reported; give --calibration for BMD.",
              "parameters": vars(params), "units": VertebraResult.units(), "masks": files,
              "vertebrae": [r.to_dict() for r in rows]}
    write_json(result, args.json)
    value = "BMD mg/cm3" if calibration else "HU (uncalibrated)"
    print(f"  {'level':<5} {value:>18} {'Ha':>5} {'Hm':>5} {'Hp':>5}  Genant")
    for r in rows:
        shown = r.BMD if calibration else r.HU
        grade = f"grade {r.grade} {r.fracture_type or ''}".rstrip() if r.grade is not None else "n/a"
        cells = " ".join(f"{v:{w}.1f}" if v is not None else f"{'-':>{w}}" for v, w in
                         ((shown, 18), (r.Ha, 5), (r.Hm, 5), (r.Hp, 5)))
        print(f"  {r.vertebra:<5} {cells}  {grade}" + (f"  ({r.note})" if r.note else ""))
    print(f"masks ({', '.join(files.values())}) -> {out}; results -> {args.json}")
    return 0


def cmd_calibrate(args) -> int:
    from .calibration import Calibration, parse_pairs

    cal = Calibration.fit(*parse_pairs(args.pairs), scanner=args.scanner or "", protocol=args.protocol or "")
    cal.save(args.out)
    print(f"BMD = {cal.slope:.6g} x HU + {cal.intercept:.6g} mg HA/cm3 (R2 {cal.r2:.6f}, {len(cal.pairs)} inserts) "
          f"-> {args.out}")
    return 0


def cmd_morphometry(args) -> int:
    from .io import read_volume, write_json, write_volume
    from .morphometry import MorphometryResult, morphometry

    _not_an_input(Path(args.json), args.image, args.mask)
    maps_dir = _output_dir(args.maps) if args.maps else None
    image = read_volume(args.image, spacing=_spacing(args.spacing))
    mask = read_volume(args.mask, spacing=_spacing(args.spacing)) if args.mask else None
    started = time.perf_counter()
    with _Progress("morphometry") as progress:
        result, maps = morphometry(image, mask, threshold=args.threshold, blur_mm=args.blur, binary=args.binary,
                                   maps=maps_dir is not None, itk=args.itk, progress=progress)
    values = result.to_dict()
    written = {}
    if maps_dir:
        maps_dir.mkdir(exist_ok=True)
        written = {name: write_volume(vol, maps_dir / f"{name.replace('.', '_')}.nii.gz").name
                   for name, vol in maps.items()}
    write_json({**values, "units": MorphometryResult.units(), "image": str(args.image), "mask": args.mask,
                "spacing_mm": list(image.spacing), "blur_mm": args.blur, "maps": written}, args.json)
    shown = ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "BS/BV", "Conn.D")
    units = MorphometryResult.units()
    print(f"threshold {result.method}" + (f" = {result.threshold:g}" if result.threshold is not None else "")
          + f" ({time.perf_counter() - started:.1f} s)")
    for key in shown:
        print(f"  {key:<7} {values[key]:.4g} {units[key] if units[key] != '1' else ''}".rstrip())
    if result.itk:
        print("  ITKBoneMorphometry (plate model): " + "  ".join(f"{k} {v:.4g}" for k, v in result.itk.items()))
    print(f"results -> {args.json}" + (f"; maps -> {maps_dir}" if maps_dir else ""))
    return 0


def cmd_binarise(args) -> int:
    from .io import read_volume, write_volume
    from .morphometry import clean_binary

    _not_an_input(Path(args.out), args.image)
    image = read_volume(args.image, spacing=_spacing(args.spacing))
    binary, level, method = clean_binary(image, args.threshold, blur_mm=args.blur, resample=args.resample,
                                         close_mm=args.close, largest=args.largest)
    write_volume(binary, args.out)
    fraction = float(binary.array.mean())
    print(f"threshold {method} = {level:g}; {'x'.join(map(str, binary.size))} voxels of "
          f"{' x '.join(f'{s:.6g}' for s in binary.spacing)} mm; BV/TV {fraction:.4%} -> {args.out}")
    return 0


def cmd_focal(args) -> int:
    from .focal import MAP_NAMES, FocalParameters, FocalResult, focal_regions, pooled
    from .io import read_volume, write_json, write_volume
    from .points import VERSE_NAMES

    _not_an_input(Path(args.json), args.ct, args.mask)
    out = _output_dir(args.out) if args.out else None
    ct = read_volume(args.ct, spacing=_spacing(args.spacing))
    mask = read_volume(args.mask, spacing=_spacing(args.spacing))
    calibration = _load_calibration(args)
    params = FocalParameters(spacing_mm=args.grid, sigma_mm=args.sigma, sharpen=args.sharpen,
                             angle_step_deg=args.angle_step, reference_bmd=args.reference, level=args.level,
                             flank=args.flank, star=args.star, no_void=args.no_void, min_depth=args.min_depth)
    started = time.perf_counter()
    with _Progress("focal") as progress:
        runs = focal_regions(ct, mask, calibration, args.units, params, progress)
    regions, written = [], {}
    for value, result, maps in runs:
        name = VERSE_NAMES.get(value, f"label{value}")
        regions.append({"label": value, "name": name, **result.to_dict()})
        if out:
            out.mkdir(exist_ok=True)
            for key in MAP_NAMES:
                written.setdefault(name, {})[key] = write_volume(maps[key], out / f"{name}_{key}.nii.gz").name
    first = runs[0][1]
    units = FocalResult.units()
    density = "BMD" if first.BMD is not None else "HU"
    whole = pooled([r for _, r, _ in runs])
    whole[density] = float(sum(getattr(r, density) * r.voxels for _, r, _ in runs) / sum(r.voxels for _, r, _ in runs))
    write_json({**whole, "density": first.density, "units": units, "ct": str(args.ct), "mask": str(args.mask),
                "calibration": calibration.to_dict() if calibration else None,
                "note": None if calibration else "uncalibrated: profiles and loss on HU (reference read as HU); "
                                                 "give --calibration for BMD",
                "parameters": first.parameters, "regions": regions, "maps": written}, args.json)
    print(f"focal maps on {params.spacing_mm:g} mm, {first.orientations} star lines, {first.density} "
          f"({time.perf_counter() - started:.1f} s)")
    print(f"  {'region':<8} {'voxels':>8} {'IncptWidth mm':>14} {'BMD loss':>9} {'BMC loss mm':>12}")
    for r in regions:
        print(f"  {r['name']:<8} {r['voxels']:>8} {r['IncptWidth']:8.3f}±{r['IncptWidth.SD']:<5.2f} "
              f"{r['FocalBMDLoss']:9.3f} {r['FocalBMCLoss']:7.3f}±{r['FocalBMCLoss.SD']:.2f}")
    print(f"results -> {args.json}" + (f"; maps -> {out}" if out else ""))
    return 0


# ----------------------------------------------------------------------------- demo
def _truth_table(truth: dict) -> list[str]:
    lines = [f"  {'level':<5} {'BMD':>7} {'BV/TV':>6} {'Tb.Th':>6} {'Tb.Sp':>6} {'Ha':>5} {'Hm':>5} {'Hp':>5}  fracture",
             f"  {'':<5} {'mg/cm3':>7} {'':>6} {'mm':>6} {'mm':>6} {'mm':>5} {'mm':>5} {'mm':>5}"]
    for v in truth["vertebrae"]:
        fs = v.get("fine_structure", {})
        h = v["heights_mm"]
        frac = v["fracture"]
        fx = f"{frac['type']} grade {frac['grade']} ({100 * frac['height_loss']:.0f} %)" if frac["type"] else "-"
        lines.append(f"  {v['name']:<5} {v['BMD']:7.1f} {v['BV/TV']:6.3f} {fs.get('Tb.Th', float('nan')):6.3f} "
                     f"{fs.get('Tb.Sp', float('nan')):6.3f} {h['anterior']:5.1f} {h['middle']:5.1f} "
                     f"{h['posterior']:5.1f}  {fx}")
    return lines


def _demo_vertebrae(phantom, out: Path, steps: dict) -> tuple[list[str], object, object]:
    """Calibration from the rods, segmentation from one point per vertebra, per-vertebra analysis."""
    import numpy as np

    from .calibration import Calibration, rod_mean_hu
    from .io import write_json, write_volume
    from .points import read_points, write_csv_points
    from .segment import segment_vertebrae
    from .vertebra import VertebraResult, analyse_vertebrae

    started = time.perf_counter()
    rods = phantom.truth["calibration"]["rods"]
    hu = [rod_mean_hu(phantom.ct, r["centre_lps_mm"], r["diameter_mm"]) for r in rods]
    calibration = Calibration.fit(hu, [r["density_mg_cm3"] for r in rods], scanner="bonekit phantom")
    calibration.save(out / "calibration.json")
    write_csv_points({v["label"]: np.array(v["centre_lps_mm"]) for v in phantom.truth["vertebrae"]},
                     out / "points.csv")
    with _Progress("demo: segmentation") as progress:
        labels = segment_vertebrae(phantom.ct, read_points(out / "points.csv"), progress=progress)
    write_volume(labels, out / "segmentation.nii.gz")
    rows, masks = analyse_vertebrae(phantom.ct, labels, calibration)
    for name in ("body", "roi", "voi"):
        write_volume(getattr(masks, name), out / f"{name}.nii.gz")
    write_json({"calibration": calibration.to_dict(), "units": VertebraResult.units(),
                "vertebrae": [r.to_dict() for r in rows]}, out / "vertebrae.json")
    truth = {v["label"]: v for v in phantom.truth["vertebrae"]}
    lines = [f"Calibration from the rods: BMD = {calibration.slope:.4f} x HU + {calibration.intercept:.2f} "
             f"(R2 {calibration.r2:.5f}; truth {1 / phantom.config.hu_slope:.4f} x HU + "
             f"{-phantom.config.hu_intercept / phantom.config.hu_slope:.2f})",
             "Segmentation from one point per vertebra, then body, 6 mm ROI, VOI, BMD, heights, grade "
             "(measured / truth):",
             f"  {'level':<5} {'Dice':>6} {'BMD mg/cm3':>13} {'Ha mm':>11} {'Hm mm':>11} {'Hp mm':>11}  Genant"]
    dice = {}
    for r in rows:
        t = truth[r.label]
        a, b = labels.array == r.label, phantom.labels.array == r.label
        dice[r.vertebra] = float(2 * (a & b).sum() / (a.sum() + b.sum()))
        h = t["heights_mm"]
        grade = f"{r.grade} {r.fracture_type or ''}".rstrip()
        tgrade = f"{t['fracture']['grade']} {t['fracture']['type'] or ''}".rstrip()
        lines.append(f"  {r.vertebra:<5} {dice[r.vertebra]:6.3f} {r.BMD:6.1f}/{t['BMD']:6.1f} "
                     f"{r.Ha:5.1f}/{h['anterior']:5.1f} {r.Hm:5.1f}/{h['middle']:5.1f} {r.Hp:5.1f}/{h['posterior']:5.1f}"
                     f"  {grade} / {tgrade}")
    steps["vertebrae"] = {"seconds": round(time.perf_counter() - started, 2), "dice": dice,
                          "calibration": calibration.to_dict(), "results": [r.to_dict() for r in rows]}
    return lines, masks, calibration


def _demo_morphometry(phantom, voi, out: Path, steps: dict, seed: int) -> list[str]:
    """Morphometry on a micro-CT block phantom (against its truth) and inside each vertebra's VOI."""
    import numpy as np

    from .io import write_volume
    from .morphometry import morphometry
    from .phantom import microct_phantom
    from .points import VERSE_NAMES

    started = time.perf_counter()
    block = microct_phantom(0.03, 0.15, seed=seed)
    write_volume(block.image, out / "microct.nii.gz")
    result, _ = morphometry(block.image, threshold="default")
    t = block.truth
    keys = ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N")
    got = result.to_dict()
    lines = [f"Morphometry of a micro-CT block phantom ({block.image.size[0]}^3, {t['voxel_mm'] * 1000:.0f} um; "
             f"ImageJ Default threshold {result.threshold:g}), measured / truth:",
             "  " + "  ".join(f"{k} {got[k]:.4g}/{t[k]:.4g}" for k in keys)]
    steps["morphometry_microct"] = {"measured": got, "truth": {k: t[k] for k in keys}}
    lines.append("Apparent morphometry inside each vertebra's VOI (0.5 mm CT voxels: apparent, not true "
                 "trabecular values):")
    per_level = {}
    for vid in sorted(set(np.unique(voi.array).tolist()) - {0}):
        mask = voi.with_array((voi.array == vid).astype(np.uint8))
        r, _ = morphometry(phantom.ct, mask, threshold="default")
        per_level[vid] = r.to_dict()
        lines.append(f"  {VERSE_NAMES[vid]:<4} app.BV/TV {r.BV_TV:.3f}  app.Tb.Th {r.Tb_Th:.2f} mm  app.Tb.Sp {r.Tb_Sp:.2f} mm"
                     f"  (threshold {r.threshold:.0f} HU)")
    steps["morphometry_voi"] = per_level
    steps["morphometry_seconds"] = round(time.perf_counter() - started, 2)
    return lines


def _demo_focal(phantom, roi, calibration, out: Path, steps: dict) -> list[str]:
    """Focal bone-loss maps in each vertebra's 6 mm ROI, and the planted void against the rest."""
    import numpy as np

    from .focal import focal_regions
    from .io import write_volume
    from .points import VERSE_NAMES

    started = time.perf_counter()
    runs = focal_regions(phantom.ct, roi, calibration)
    lines = ["Focal bone-loss maps (Li et al. 2022) in each 6 mm ROI, calibrated BMD, paper defaults "
             "(ROI mean +- SD):",
             f"  {'level':<5} {'IncptWidth mm':>14} {'BMD loss':>9} {'BMC loss mm':>12}   planted void: BMC loss inside / rest"]
    voids = {v["label"]: v["voids"] for v in phantom.truth["vertebrae"] if v.get("voids")}
    per_level = {}
    for label, r, maps in runs:
        name = VERSE_NAMES[label]
        write_volume(maps["FocalBMCLoss"], out / f"focal_{name}_FocalBMCLoss.nii.gz")
        note = ""
        for void in voids.get(label, []):
            grid = maps["ROI"]
            idx = np.argwhere(grid.array > 0)
            inside = np.linalg.norm(grid.index_to_physical(idx[:, ::-1]) - np.array(void["centre_lps_mm"]),
                                    axis=1) < void["diameter_mm"] / 2
            values = maps["FocalBMCLoss"].array[tuple(idx.T)]
            if inside.any():
                note = f"   {values[inside].mean():.3f} / {values[~inside].mean():.3f} mm ({void['diameter_mm']:g} mm void)"
        per_level[name] = r.to_dict()
        lines.append(f"  {name:<5} {r.IncptWidth:7.3f}+-{r.IncptWidth_SD:<5.3f} {r.FocalBMDLoss:9.3f} "
                     f"{r.FocalBMCLoss:6.3f}+-{r.FocalBMCLoss_SD:<5.3f}{note}")
    steps["focal"] = {"seconds": round(time.perf_counter() - started, 2), "results": per_level}
    return lines


def cmd_demo(args) -> int:
    """Run every capability that exists on the embedded phantom; write results and a summary."""
    from .io import read_volume, write_json
    from .phantom import Fracture, PhantomConfig, Void, spine_phantom

    out = _output_dir(args.out)
    started = time.perf_counter()
    config = PhantomConfig(seed=args.seed, fractures=(Fracture("L2", "wedge", 0.30),),
                           voids=(Void("L3", 5.0, (0.0, -4.0, 0.0)),),
                           calibration_rods=(0.0, 50.0, 100.0, 150.0, 200.0))
    with _Progress("demo: phantom") as progress:
        phantom = spine_phantom(config, progress=progress)
    out.mkdir(exist_ok=True)
    paths = phantom.save(out)
    steps = {"phantom": {"seconds": round(time.perf_counter() - started, 2),
                         "files": {k: p.name for k, p in paths.items()}}}

    # I/O check: what was written reads back with the same voxels and geometry
    reread = read_volume(paths["ct"])
    io_ok = bool((reread.array == phantom.ct.array).all() and reread.same_grid(phantom.ct, atol=1e-5))
    steps["io_roundtrip"] = {"ok": io_ok}

    vertebra_lines, masks, calibration = _demo_vertebrae(phantom, out, steps)
    with _Progress("demo: morphometry"):
        morphometry_lines = _demo_morphometry(phantom, masks.voi, out, steps, args.seed)
    focal_lines = _demo_focal(phantom, masks.roi, calibration, out, steps)

    results = {"bonekit_version": __version__, "input": "embedded spine phantom (seed %d)" % args.seed,
               "ct": phantom.ct.describe(), "steps": steps, "truth": phantom.truth}
    write_json(results, out / "demo_results.json")
    lines = [f"BoneKit {__version__} demo on the embedded spine phantom (seed {args.seed})",
             f"  CT {phantom.ct.size[0]} x {phantom.ct.size[1]} x {phantom.ct.size[2]} voxels, "
             f"{' x '.join(f'{s:g}' for s in phantom.ct.spacing)} mm, HU {phantom.ct.array.min()}..{phantom.ct.array.max()}",
             f"  calibration law HU = {config.hu_intercept:g} + {config.hu_slope:g} x BMD; rods "
             f"{', '.join(f'{r:g}' for r in config.calibration_rods)} mg HA/cm3",
             "Ground truth per vertebra (BMD in the trabecular compartment; Tb.Th/Tb.Sp of the fine structure):",
             *_truth_table(phantom.truth),
             *vertebra_lines,
             *morphometry_lines,
             *focal_lines,
             f"Files written in {out}: " + ", ".join(p.name for p in paths.values()) +
             ", calibration.json, points.csv, segmentation.nii.gz, body/roi/voi.nii.gz, vertebrae.json, "
             "microct.nii.gz, focal_*_FocalBMCLoss.nii.gz, demo_results.json",
             f"Round trip of the written CT: {'identical voxels and geometry' if io_ok else 'MISMATCH'}",
             f"Done in {time.perf_counter() - started:.1f} s."]
    summary = "\n".join(lines)
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    return 0 if io_ok else 1


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonekit", description="Vertebral bone quality from CT (BoneKit core).",
        epilog="Every command prints one clear line and exits with status 2 on bad input.")
    parser.add_argument("--version", action="version", version=f"bonekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="geometry, modality and value range of an image or DICOM series")
    p.add_argument("file", help="image file (.nii.gz, .nrrd, .mha, ...), DICOM folder or one DICOM file")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--series", metavar="UID", help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("phantom", help="generate the synthetic lumbar spine CT (or a micro-CT block) with truth")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="CT voxel size in mm (default 0.5,0.5,1.0)")
    p.add_argument("--noise", type=float, metavar="HU", help="noise standard deviation in HU (default 15)")
    p.add_argument("--fracture", action="append", metavar="V:TYPE:LOSS",
                   help="plant a Genant fracture, e.g. L2:wedge:0.3 (types wedge, biconcave, crush); repeatable")
    p.add_argument("--void", action="append", metavar="V:DIAM[:X,Y,Z]",
                   help="plant a focal void of DIAM mm, offset in the vertebra's frame; repeatable")
    p.add_argument("--rods", metavar="MG1,MG2,...", help="calibration rods in mg HA/cm3, e.g. 0,50,100,150,200")
    p.add_argument("--no-truth-morphometry", action="store_true", help="skip Tb.Th/Tb.Sp truth (faster)")
    p.add_argument("--microct", type=float, metavar="VOXEL_MM",
                   help="instead of the spine, write a trabecular micro-CT block at this voxel size")
    p.add_argument("--bvtv", type=float, default=0.15, help="BV/TV of the micro-CT block (default 0.15)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("segment", help="vertebra label map (VerSe ids) by GrowCut from one point per vertebra")
    p.add_argument("ct", help="CT image or DICOM series (HU)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--points", metavar="FILE",
                     help="Slicer markups (.mrk.json, labels L1, T12 ...) or CSV label,x,y,z in LPS mm: "
                          "one point inside each vertebral body")
    src.add_argument("--centroids", metavar="CTD.json", help="VerSe centroid JSON (voxel coordinates)")
    src.add_argument("--seeds", metavar="LABELS",
                     help="explicit seed label map: VerSe ids seed vertebrae, other values background")
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz", help="output label map")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--bone-hu", type=float, default=150.0, help="bone threshold for seed placement (default 150)")
    p.add_argument("--seed-hu", type=float, default=400.0, help="HU above which bone seeds the spine (default 400)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("vertebra", help="body, 6 mm ROI, cylindrical VOI, BMD or HU, heights and Genant grade")
    p.add_argument("ct", help="CT image (HU)")
    p.add_argument("--labels", required=True, help="vertebra label map (VerSe ids), e.g. from bonekit segment")
    p.add_argument("--out", required=True, help="folder for body.nii.gz, roi.nii.gz, voi.nii.gz")
    p.add_argument("--json", required=True, metavar="OUT.json", help="per-vertebra results with units")
    p.add_argument("--calibration", metavar="FILE", help="calibration JSON (bonekit calibrate)")
    p.add_argument("--calibration-pairs", metavar="HU:MG,...", help="calibration inserts as HU:mg HA/cm3 pairs")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--erosion", type=float, default=6.0, help="ROI erosion inside the body, mm (default 6)")
    p.add_argument("--voi-diameter", type=float, default=15.0, help="cylindrical VOI diameter, mm (default 15)")
    p.add_argument("--voi-half-height", type=float, default=5.0,
                   help="VOI extent above and below the central slice, mm (default 5)")
    p.set_defaults(func=cmd_vertebra)

    p = sub.add_parser("calibrate", help="fit and save a HU -> mg HA/cm3 calibration from phantom inserts")
    p.add_argument("--pairs", required=True, metavar="HU:MG,...",
                   help="measured HU and known density per insert; write --pairs=-3.1:0,... when the first HU "
                        "is negative")
    p.add_argument("--scanner", help="scanner name, stored with the calibration")
    p.add_argument("--protocol", help="protocol (kVp, kernel ...), stored with the calibration")
    p.add_argument("--out", required=True, metavar="CAL.json")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("morphometry", help="trabecular morphometry (BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV, Conn.D) "
                                          "with BoneJ's conventions")
    p.add_argument("image", help="micro-CT or CT image (grey levels, HU, or binary with --binary)")
    p.add_argument("--mask", help="measure inside this mask (non-zero voxels), e.g. the VOI of bonekit vertebra")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--threshold", default="default", metavar="default|isodata|otsu|VALUE",
                   help="ImageJ 'Default' IsoData (default), ImageJ IsoData, Otsu, or a value in image units "
                        "(HU, or mg HA/cm3 on a calibrated image); bone is value > threshold")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA_MM", help="Gaussian blur before thresholding")
    p.add_argument("--binary", action="store_true", help="the image is already binary: non-zero is bone")
    p.add_argument("--maps", metavar="DIR", help="write the thickness and separation maps (mm) here")
    p.add_argument("--itk", action="store_true",
                   help="also report ITKBoneMorphometry's plate-model values (isotropic voxels only)")
    p.add_argument("--json", required=True, metavar="OUT.json", help="results with units")
    p.set_defaults(func=cmd_morphometry)

    p = sub.add_parser("binarise", help="a cleaned binary bone image (blur, resample, threshold, closing, largest "
                                       "component), as micro-FE pipelines such as ciclope prepare one")
    p.add_argument("image", help="micro-CT image (grey levels)")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--threshold", default="default", metavar="default|isodata|otsu|VALUE",
                   help="as for morphometry, on the resampled image; bone is value > threshold")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA_MM", help="Gaussian blur first")
    p.add_argument("--resample", type=float, default=1.0, metavar="FACTOR",
                   help="voxels FACTOR times larger (spline of order 2, as scipy.ndimage.zoom)")
    p.add_argument("--close", type=float, default=0.0, metavar="RADIUS_MM",
                   help="closing by a ball of this radius (on the resampled grid)")
    p.add_argument("--largest", action="store_true", help="keep the largest 6-connected component")
    p.add_argument("--out", required=True, metavar="BINARY.nii.gz",
                   help="binary image (1 = bone); measure it with bonekit morphometry --binary")
    p.set_defaults(func=cmd_binarise)

    p = sub.add_parser("focal", help="focal bone-loss maps (IncptWidth, focal BMD and BMC loss; Li et al. 2022)")
    p.add_argument("ct", help="CT image (HU)")
    p.add_argument("--mask", required=True,
                   help="ROI mask or label map on the CT's grid (e.g. roi.nii.gz of bonekit vertebra); one result "
                        "per non-zero label")
    p.add_argument("--calibration", metavar="FILE", help="calibration JSON (bonekit calibrate): profiles in BMD")
    p.add_argument("--calibration-pairs", metavar="HU:MG,...", help="calibration inserts as HU:mg HA/cm3 pairs")
    p.add_argument("--units", choices=("auto", "bmd", "hu"), default="auto",
                   help="BMD (needs a calibration), HU, or auto: BMD when a calibration is given")
    p.add_argument("--out", metavar="DIR", help="write the three maps per region here (NIfTI, 0.3 mm grid)")
    p.add_argument("--json", required=True, metavar="OUT.json", help="ROI means and SDs with units")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    g = p.add_argument_group("method parameters (defaults: Li et al. 2022)")
    g.add_argument("--grid", type=float, default=0.3, metavar="MM", help="isotropic resampling grid (0.3)")
    g.add_argument("--sigma", type=float, default=0.3, metavar="MM", help="unsharp-mask Gaussian sigma (0.3)")
    g.add_argument("--sharpen", type=float, default=1.0, help="unsharp-mask amount (1)")
    g.add_argument("--angle-step", type=float, default=12.0, metavar="DEG", help="between star lines (12)")
    g.add_argument("--reference", type=float, default=1200.0, metavar="MG",
                   help="reference density of the loss, mg HA/cm3 (1200)")
    g.add_argument("--level", type=float, default=0.5, help="void = valley below min + LEVEL (max - min) (0.5)")
    g.add_argument("--flank", choices=("lower", "each"), default="lower",
                   help="the valley's level from the lower flanking maximum, or each side its own (lower)")
    g.add_argument("--star", choices=("2d", "3d"), default="2d", help="star lines in the axial plane or 3D (2d)")
    g.add_argument("--no-void", choices=("zero", "skip"), default="zero",
                   help="an orientation without a void at the voxel counts as 0, or is left out (zero)")
    g.add_argument("--min-depth", type=float, default=0.0, metavar="VALUE",
                   help="extrema must rise and fall by more than this, in image units (0 = every extremum)")
    p.set_defaults(func=cmd_focal)

    p = sub.add_parser("demo", help="run every capability on the embedded phantom and print a summary")
    p.add_argument("--out", default="bonekit-demo", help="output folder (default ./bonekit-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    from .sr.cli import add_parser as add_sr_parser

    add_sr_parser(sub)
    from .sct.cli import add_drr_parser
    from .sct.cli import add_parser as add_sct_parser

    add_drr_parser(sub)
    add_sct_parser(sub)
    from .cohort.cli import add_batch_parser, add_report_parser, add_stats_parser

    add_batch_parser(sub)
    add_report_parser(sub)
    add_stats_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BoneKitError as exc:
        print(f"bonekit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # permissions, full disk: still one line, nothing half-written (writes are atomic)
        print(f"bonekit: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bonekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

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
    progress = _Progress("phantom")
    try:
        phantom = spine_phantom(config, progress=progress)
    finally:
        progress.close()
    out.mkdir(exist_ok=True)
    paths = phantom.save(out)
    print(f"spine phantom {phantom.ct.size} voxels, {', '.join(phantom.config.vertebrae)} -> {out}")
    for name, path in paths.items():
        print(f"  {name:<11} {path.name}")
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


def cmd_demo(args) -> int:
    """Run every capability that exists on the embedded phantom; write results and a summary."""
    from .io import read_volume, write_json
    from .phantom import Fracture, PhantomConfig, Void, spine_phantom

    out = _output_dir(args.out)
    started = time.perf_counter()
    config = PhantomConfig(seed=args.seed, fractures=(Fracture("L2", "wedge", 0.30),),
                           voids=(Void("L3", 5.0, (0.0, -4.0, 0.0)),),
                           calibration_rods=(0.0, 50.0, 100.0, 150.0, 200.0))
    progress = _Progress("demo: phantom")
    try:
        phantom = spine_phantom(config, progress=progress)
    finally:
        progress.close()
    out.mkdir(exist_ok=True)
    paths = phantom.save(out)
    steps = {"phantom": {"seconds": round(time.perf_counter() - started, 2),
                         "files": {k: p.name for k, p in paths.items()}}}

    # I/O check: what was written reads back with the same voxels and geometry
    reread = read_volume(paths["ct"])
    io_ok = bool((reread.array == phantom.ct.array).all() and reread.same_grid(phantom.ct, atol=1e-5))
    steps["io_roundtrip"] = {"ok": io_ok}

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
             f"Files written in {out}: " + ", ".join(p.name for p in paths.values()) + ", demo_results.json",
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

    p = sub.add_parser("demo", help="run every capability on the embedded phantom and print a summary")
    p.add_argument("--out", default="bonekit-demo", help="output folder (default ./bonekit-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
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

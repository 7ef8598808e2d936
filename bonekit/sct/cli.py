"""``bonekit drr`` and ``bonekit sct ...``: DRRs and synthetic CT commands."""

from __future__ import annotations

import time
from pathlib import Path

from ..cli import _floats, _not_an_input, _output_dir, _spacing
from ..cli import progress_for as _progress
from ..errors import BoneKitError


def _detector(text: str) -> tuple[int, int]:
    """'WxH' (columns x rows) or one number for a square detector."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise BoneKitError(f"--detector must be WIDTHxHEIGHT in pixels, e.g. 256x256, got '{text}'.") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise BoneKitError(f"--detector must be WIDTHxHEIGHT in pixels, e.g. 256x256, got '{text}'.")
    return values[0], values[1]


def geometry_from_args(args):
    from .drr import DetectorGeometry

    columns, rows = _detector(args.detector)
    pixel = _floats(args.pixel, None, "--pixel")
    if len(pixel) not in (1, 2):
        raise BoneKitError(f"--pixel takes one size or ROW,COLUMN sizes in mm, got '{args.pixel}'.")
    return DetectorGeometry(sad=args.sad, sid=args.sid, rows=rows, columns=columns,
                            pixel=(pixel[0], pixel[-1]))


def add_geometry_arguments(p, defaults=None) -> None:
    from .drr import DetectorGeometry

    g = defaults or DetectorGeometry()
    p.add_argument("--sad", type=float, default=g.sad, help=f"source-isocentre distance, mm ({g.sad:g})")
    p.add_argument("--sid", type=float, default=g.sid, help=f"source-detector distance, mm ({g.sid:g})")
    p.add_argument("--detector", default=f"{g.columns}x{g.rows}", metavar="WxH",
                   help=f"detector size in pixels, columns x rows ({g.columns}x{g.rows})")
    p.add_argument("--pixel", default=f"{g.pixel[0]:g}", metavar="MM",
                   help=f"detector pixel size at the detector, mm; one value or ROW,COLUMN ({g.pixel[0]:g})")


def cmd_drr(args) -> int:
    import numpy as np

    from ..io import read_volume, write_json, write_volume
    from .drr import compute_drr, isocenter_of
    from .prepare import PrepareConfig, bone_mask, extract_bones

    out = _output_dir(args.out)
    _not_an_input(out, args.ct, args.mask)
    geometry = geometry_from_args(args)
    ct = read_volume(args.ct, spacing=_spacing(args.spacing))
    if ct.units not in (None, "HU"):
        raise BoneKitError(f"{args.ct}: a DRR needs a CT in HU, but the values are in {ct.units}.")
    iso = None if args.isocenter is None else _floats(args.isocenter, 3, "--isocenter")
    if args.mask:
        config = PrepareConfig(labels=tuple(int(v) for v in _floats(args.labels, None, "--labels"))
                               if args.labels else ())
        labels = read_volume(args.mask, spacing=_spacing(args.spacing)).labels_on(ct)
        ct = extract_bones(ct, labels, config)
        if iso is None:
            iso = isocenter_of(ct, bone_mask(labels, config))
    views = [v for v in args.views.replace(" ", "").split(",") if v]
    start = time.perf_counter()
    with _progress(args, "drr") as progress:
        drrs = compute_drr(ct, views, geometry=geometry, isocenter=iso, air_below_hu=args.air_below,
                           mu_water=args.mu_water, output=args.output, device=args.device, progress=progress)
    seconds = time.perf_counter() - start
    out.mkdir(exist_ok=True)
    record = {"input": str(args.ct), "mask": args.mask, "seconds": round(seconds, 3), "views": {}}
    for drr in drrs:
        path = out / f"drr_{drr.view.name}.{args.format}"
        write_volume(drr.to_volume(), path)
        record["views"][drr.view.name] = {"file": path.name, **drr.describe(),
                                         "minimum": float(drr.image.min()), "maximum": float(drr.image.max())}
        if args.png:
            _write_png(drr.image, out / f"drr_{drr.view.name}.png", invert=drr.output == "transmission")
        print(f"{path}: {drr.view.name} {drr.geometry.columns} x {drr.geometry.rows} pixels of "
              f"{drr.geometry.pixel[1]:g} x {drr.geometry.pixel[0]:g} mm, {drr.output} "
              f"{float(np.min(drr.image)):.3g} .. {float(np.max(drr.image)):.3g}")
    write_json(record, out / "drr.json")
    print(f"{len(drrs)} view(s) in {seconds:.2f} s; geometry in {out / 'drr.json'}")
    return 0


def _write_png(image, path: Path, invert: bool = False) -> None:
    """8-bit preview, bone white (the line integral scaled by its maximum)."""
    import numpy as np
    from PIL import Image

    from ..io import atomic_path

    x = 1 - image if invert else image
    top = float(x.max()) or 1.0
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(np.clip(np.round(x / top * 255), 0, 255).astype(np.uint8)).save(tmp, format="PNG")


def add_drr_parser(sub) -> None:
    p = sub.add_parser("drr", help="digitally reconstructed radiographs (perspective projection) of a CT")
    p.add_argument("ct", help="CT volume or DICOM folder (HU)")
    p.add_argument("--out", required=True, help="output folder: drr_<view>.nrrd, drr.json (geometry), PNGs")
    p.add_argument("--views", default="ap,lat", help="comma-separated: ap, pa, lat (left lateral), rlat (ap,lat)")
    add_geometry_arguments(p)
    p.add_argument("--isocenter", metavar="X,Y,Z", help="LPS mm (default: the centre of the mask's bones, "
                                                        "else of the CT)")
    p.add_argument("--mask", metavar="LABELS", help="vertebra label map: keep only the bones (air elsewhere)")
    p.add_argument("--labels", metavar="IDS", help="label values that count as bone (default: every non-zero)")
    p.add_argument("--output", choices=("integral", "transmission"), default="integral",
                   help="pixel value: line integral of attenuation (default) or exp(-integral)")
    p.add_argument("--mu-water", type=float, default=0.022, help="attenuation of water, 1/mm (0.022)")
    p.add_argument("--air-below", type=float, metavar="HU",
                   help="treat voxels at or below this HU as air (Plastimatch uses -800; default: none)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cuda, cuda:N or cpu")
    p.add_argument("--format", choices=("nrrd", "nii.gz", "mha"), default="nrrd", help="image format (nrrd)")
    p.add_argument("--png", action="store_true", help="also write 8-bit PNG previews")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--progress-lines", action="store_true", help="print 'PROGRESS fraction message' lines on "
                                                                 "stderr (for a parent process)")
    p.set_defaults(func=cmd_drr)


# ----------------------------------------------------------------------------- bonekit sct ...
def cmd_sct_train(args) -> int:
    from ..cli import log
    from .train import SCTTrainConfig, train

    config = SCTTrainConfig.read(args.config)
    if args.out:
        config.out = args.out
    with _progress(args, "sct train") as progress:
        summary = train(config, resume=args.resume, device=args.device, progress=progress, log=log)
    last = summary["history"][-1] if summary["history"] else {}
    print(f"trained {len(summary['history'])} epochs -> {summary.get('model', config.out)}"
          + (f"; held-out PSNR {last['val_psnr_db']:.2f} dB, SSIM {last['val_ssim']:.3f} (mean training CT: "
             f"{last['val_psnr_db_mean']:.2f} dB, {last['val_ssim_mean']:.3f})" if "val_psnr_db" in last else ""))
    return 0


def cmd_sct_example_config(args) -> int:
    from ..cli import print_or_write_config
    from .train import example_config

    return print_or_write_config(example_config(), args.out)

def _load(args):
    from .model import load_model

    return load_model(_model_path(args.model), "cpu")


def _model_path(name):
    from ..models import resolve_model

    return resolve_model(name, "sct")


def cmd_sct_models(args) -> int:
    from ..cli import print_models

    return print_models("sct", args.json, lambda e: f"{e['name']:<28} {e['size']}^3 voxels of "
                                                     f"{e['spacing_mm']:g} mm  {e['description']}")


def cmd_sct_infer(args) -> int:
    from ..io import read_volume, write_json, write_volume
    from .infer import from_ct, from_radiographs
    from .radiograph import read_radiograph

    out = Path(args.out)
    inputs = [x for x in (args.ct, args.mask, args.ap, args.lateral) if x]
    _not_an_input(out, *inputs)
    if args.ct and (args.ap or args.lateral):
        raise BoneKitError("Give either a CT (--ct, to make DRRs from) or two radiographs (--ap and --lateral), "
                           "not both.")
    if args.ct and not args.mask:
        raise BoneKitError("--ct needs --mask, the vertebra label map (the model saw bones only).")
    model = _load(args)
    with _progress(args, "sct infer") as progress:
        if args.ct:
            result, _ = from_ct(read_volume(args.ct, spacing=_spacing(args.spacing)),
                                read_volume(args.mask, spacing=_spacing(args.spacing)), model,
                                device=args.device, progress=progress)
        elif args.ap or args.lateral:
            if not (args.ap and args.lateral):
                missing = "--ap" if not args.ap else "--lateral"
                raise BoneKitError(f"{missing} is missing: a synthetic CT needs both an AP (or PA) and a "
                                   "lateral radiograph.")
            pixel = _floats(args.pixel, None, "--pixel") if args.pixel else None
            views = [read_radiograph(path, pixel_mm=(pixel[0], pixel[-1]) if pixel else None)
                     for path in (args.ap, args.lateral)]
            result = from_radiographs(*views, model, magnification=args.magnification, device=args.device,
                                      progress=progress)
        else:
            raise BoneKitError("Give a CT (--ct with --mask) or two radiographs (--ap and --lateral).")
    write_volume(result.volume, out)
    if args.json:
        write_json({"model": str(_model_path(args.model)), "output": str(out), **result.summary()}, args.json)
    print(f"{out}: synthetic CT {' x '.join(str(n) for n in result.volume.size)} voxels of "
          f"{result.volume.spacing[0]:.2f} mm, HU {result.volume.array.min():.0f} .. {result.volume.array.max():.0f}, "
          f"on {result.device} in {result.seconds:.1f} s")
    return 0


def cmd_sct_evaluate(args) -> int:
    import numpy as np

    from ..io import read_volume, write_json
    from .infer import from_ct
    from .metrics import volume_metrics

    model = _load(args)
    rows = []
    if len(args.ct) != len(args.mask):
        raise BoneKitError(f"Give one --mask per CT ({len(args.ct)} CTs, {len(args.mask)} masks).")
    with _progress(args, "sct evaluate") as progress:
        for n, (ct, mask) in enumerate(zip(args.ct, args.mask)):
            result, truth = from_ct(read_volume(ct), read_volume(mask), model, device=args.device)
            rows.append({"ct": ct, **volume_metrics(truth, result.normalized)})
            progress((n + 1) / len(args.ct), f"{Path(ct).name}")
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_db", "ssim", "cosine", "mae")}
    record = {"model": str(_model_path(args.model)), "cases": rows, "mean": summary,
              "data_range": "HU window mapped to [0, 1]"}
    if args.json:
        write_json(record, args.json)
    for r in rows:
        print(f"{r['ct']}: PSNR {r['psnr_db']:.2f} dB  SSIM {r['ssim']:.3f}  cosine {r['cosine']:.3f}  "
              f"MAE {r['mae']:.4f}")
    print(f"mean of {len(rows)}: PSNR {summary['psnr_db']:.2f} dB  SSIM {summary['ssim']:.3f}  "
          f"cosine {summary['cosine']:.3f}  MAE {summary['mae']:.4f} (on the [0, 1] HU window)")
    return 0


def add_parser(sub) -> None:
    """Register ``bonekit sct`` and its commands."""
    import argparse

    sct = sub.add_parser("sct", help="synthetic CT from an AP + lateral pair (SyntheticCT): train, infer, evaluate")
    ssub = sct.add_subparsers(dest="sct_command", metavar="SCT_COMMAND")
    ssub.required = True

    p = ssub.add_parser("models", help="list the SyntheticCT models that ship with BoneKit")
    p.add_argument("--json", action="store_true", help="print the catalogue entries as JSON")
    p.set_defaults(func=cmd_sct_models)

    p = ssub.add_parser("infer", help="synthetic CT from a CT's DRRs or from two radiographs")
    p.add_argument("--model", default="demo", help="model file (.pt) or catalogue name (bonekit sct models); "
                                                   "default: the demonstration model")
    p.add_argument("--ct", help="CT (HU): the AP and lateral DRRs are made from it (needs --mask)")
    p.add_argument("--mask", help="vertebra label map of --ct (bones are extracted, as in training)")
    p.add_argument("--ap", help="AP (or PA) radiograph: DICOM CR/DX, or PNG/TIFF with --pixel")
    p.add_argument("--lateral", help="lateral radiograph: DICOM CR/DX, or PNG/TIFF with --pixel")
    p.add_argument("--pixel", metavar="MM", help="radiograph pixel size (one value or ROW,COLUMN), when the "
                                                  "file has none")
    p.add_argument("--magnification", type=float, help="radiograph magnification SID/SOD (default: from the "
                                                       "DICOM header, else the model's)")
    p.add_argument("--out", required=True, help="synthetic CT volume (.nrrd, .nii.gz, .mha)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cuda, cuda:N or cpu")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="CT voxel size in mm replacing the header's")
    p.add_argument("--json", metavar="OUT.json", help="write the run's summary")
    p.add_argument("--progress-lines", action="store_true", help="print 'PROGRESS fraction message' lines on "
                                                                 "stderr (for a parent process)")
    p.set_defaults(func=cmd_sct_infer)

    from ..cli import add_training_commands

    add_training_commands(ssub, cmd_sct_train, cmd_sct_example_config, "the synthetic-CT network")

    p = ssub.add_parser("evaluate", help="PSNR, SSIM, cosine, MAE of a model on CTs with vertebra masks")
    p.add_argument("--model", default="demo", help="model file (.pt) or catalogue name (default: the "
                                                   "demonstration model)")
    p.add_argument("--ct", nargs="+", required=True, help="CT volumes (HU)")
    p.add_argument("--mask", nargs="+", required=True, help="their vertebra label maps, in the same order")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="OUT.json", help="per-case and mean metrics")
    p.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sct_evaluate)

"""``bonekit sr ...``: super-resolution commands (train, infer, evaluate, simulate, export, models)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import log as _log
from ..cli import progress_for as _progress
from ..errors import BoneKitError


def cmd_sr_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig.read(args.config)
    if args.out:
        config.out = args.out
    with _progress(args, "sr train") as progress:
        summary = train(config, resume=args.resume, progress=progress, log=_log, device=args.device)
    last = summary["history"][-1] if summary["history"] else {}
    print(f"trained {len(summary['history'])} epochs -> {summary.get('model', config.out)}"
          + (f"; validation SSIM {last['val_ssim']:.3f} (interpolated input {last['val_ssim_input']:.3f})"
             if "val_ssim" in last else ""))
    return 0


def cmd_sr_example_config(args) -> int:
    from ..cli import print_or_write_config
    from .train import example_config

    return print_or_write_config(example_config(), args.out)

def cmd_sr_export(args) -> int:
    from .train import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out)
    print(f"model -> {path}")
    return 0


def cmd_sr_models(args) -> int:
    from ..cli import print_models

    return print_models("sr", args.json, lambda e: f"{e['name']:<24} x{e['scale']}  {e['lr_spacing_mm']:.3f} mm -> "
                                                   f"{e['lr_spacing_mm'] / e['scale']:.4f} mm  {e['description']}")


def cmd_sr_infer(args) -> int:
    from ..cli import _not_an_input, _spacing
    from ..io import read_volume, write_json, write_volume
    from .infer import super_resolve
    from ..models import resolve_model
    from .model import load_model

    _not_an_input(Path(args.out), args.ct, *([args.roi] if args.roi else []))
    model_path = resolve_model(args.model, "sr")
    ct = read_volume(args.ct, spacing=_spacing(args.spacing))
    roi = read_volume(args.roi, spacing=_spacing(args.spacing)) if args.roi else None
    model = load_model(model_path, "cpu")
    with _progress(args, "sr infer") as progress:
        result = super_resolve(ct, model, roi=roi, device=args.device, precision=args.precision, tile=args.tile,
                               overlap=args.overlap, batch_size=args.batch, allow_spacing=args.allow_spacing,
                               progress=progress, log=_log)
    write_volume(result.volume, args.out)
    summary = {"model": str(model_path), "input": str(args.ct), "output": str(args.out), **result.summary()}
    if args.json:
        write_json(summary, args.json)
    print(f"{args.out}: {' x '.join(str(n) for n in result.volume.size)} voxels of "
          f"{' x '.join(f'{s:.4f}' for s in result.volume.spacing)} mm on {result.device} ({result.precision}) "
          f"in {result.seconds:.1f} s" + (f"; {'; '.join(result.fallbacks)}" if result.fallbacks else ""))
    return 0


def cmd_sr_simulate(args) -> int:
    from ..cli import _not_an_input
    from ..io import read_volume, write_volume
    from . import degrade

    _not_an_input(Path(args.out), args.hr)
    hr = read_volume(args.hr, spacing=None if args.hr_spacing is None else [args.hr_spacing] * 3)
    if args.microct:
        hr = degrade.micro_ct_to_hu(hr)
        if args.hr_out:
            write_volume(hr, args.hr_out)
    settings = {k: v for k, v in (("scale", args.scale), ("noise_hu", args.noise),
                                  ("psf_fwhm_mm", args.psf), ("slice_thickness_mm", args.thickness)) if v is not None}
    model = degrade.MDCTModel.from_dict(settings)
    lr = degrade.simulate_mdct(hr, model, seed=args.seed)
    write_volume(lr, args.out)
    print(f"{args.out}: simulated MDCT {' x '.join(str(n) for n in lr.size)} voxels of "
          f"{' x '.join(f'{s:.4f}' for s in lr.spacing)} mm ({json.dumps(model.to_dict())})")
    return 0


def cmd_sr_evaluate(args) -> int:
    from ..cli import _floats
    from ..io import read_volume, write_json
    from .evaluate import evaluate_volumes
    from .infer import upsample

    sr, hr = read_volume(args.sr), read_volume(args.hr)
    baseline = None
    if args.input:
        lr = read_volume(args.input)
        scale = round(float(lr.spacing[0] / hr.spacing[0]))
        baseline = upsample(lr, scale)
        if baseline.shape != hr.shape:
            raise BoneKitError(f"The --input interpolated x{scale} gives {baseline.shape} voxels, the high-res "
                               f"{hr.shape}: give the clinical input the SR volume was made from.")
    mask = read_volume(args.mask) if args.mask else None
    extractor = None
    if args.fid_weights:
        from .metrics import FeatureExtractor

        extractor = FeatureExtractor.from_file(args.fid_weights)
    threshold = args.threshold
    try:
        threshold = float(threshold)
    except ValueError:
        pass
    with _progress(args, "sr evaluate") as progress:
        report = evaluate_volumes(sr, hr, baseline=baseline, mask=mask, window_hu=_floats(args.window, 2, "--window"),
                                  threshold=threshold, block_mm=args.blocks, extractor=extractor, progress=progress)
    write_json(report, args.json)
    for name, m in report["images"].items():
        a = report["morphometry"][name]["agreement"]
        print(f"{name:<9} SSIM {m['SSIM']:.3f}  SSIM(8-bit) {m['SSIM_8bit']:.3f}  PSNR {m['PSNR']:.1f} dB  "
              + "  ".join(f"{p} r={a[p]['Pearson.r'] if a[p]['Pearson.r'] is None else round(a[p]['Pearson.r'], 3)}"
                          for p in a))
    print(f"results -> {args.json}")
    return 0


def add_parser(sub) -> None:
    """Register ``bonekit sr`` and its commands on the top-level subparsers."""
    sr = sub.add_parser("sr", help="micro-CT-like super-resolution (BoneSR): train, infer, evaluate, ...")
    srsub = sr.add_subparsers(dest="sr_command", metavar="SR_COMMAND")
    srsub.required = True

    p = srsub.add_parser("infer", help="super-resolve a CT volume with a model")
    p.add_argument("ct", help="clinical CT (HU)")
    p.add_argument("--model", default="demo", help="model file (.pt) or catalogue name (bonekit sr models); "
                                                   "default: the demonstration model")
    p.add_argument("--out", required=True, help="output volume (.nii.gz, .nrrd, .mha)")
    p.add_argument("--roi", metavar="MASK", help="process only the bounding box of this mask (CT grid)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cuda, cuda:N or cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16/fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--tile", type=int, help="tile edge in output pixels (default: whole slices; tiles are "
                                            "used automatically on out-of-memory)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in output pixels (32)")
    p.add_argument("--batch", type=int, help="slices per generator call (4 on CPU, 16 on GPU)")
    p.add_argument("--allow-spacing", action="store_true", help="run even if the CT's voxel size is far from the "
                                                               "model's")
    p.add_argument("--spacing", metavar="SX,SY,SZ", help="voxel size in mm replacing the header's")
    p.add_argument("--json", metavar="OUT.json", help="write the run's summary (device, fallbacks, time)")
    p.add_argument("--progress-lines", action="store_true", help="print 'PROGRESS fraction message' lines on "
                                                                 "stderr (for a parent process)")
    p.set_defaults(func=cmd_sr_infer)

    from ..cli import add_training_commands

    add_training_commands(srsub, cmd_sr_train, cmd_sr_example_config, "a BoneSR generator")

    p = srsub.add_parser("export", help="model file from a training checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="model file to write (.pt)")
    p.set_defaults(func=cmd_sr_export)

    p = srsub.add_parser("models", help="list the models that ship with BoneKit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sr_models)

    p = srsub.add_parser("simulate", help="simulate a clinical MDCT from a high-resolution volume")
    p.add_argument("hr", help="high-resolution volume (HU, or micro-CT with --microct)")
    p.add_argument("--out", required=True, help="simulated clinical CT to write")
    p.add_argument("--microct", action="store_true", help="the input is micro-CT (binary or grey): convert to "
                                                          "HU first (bone 1800, marrow 0)")
    p.add_argument("--hr-out", help="with --microct: also write the HU target")
    p.add_argument("--hr-spacing", type=float, metavar="MM", help="isotropic voxel size replacing the header's")
    p.add_argument("--scale", type=int, help="LR voxel = HR voxel x scale (4)")
    p.add_argument("--noise", type=float, metavar="HU", help="noise SD at the LR grid")
    p.add_argument("--psf", type=float, nargs=2, metavar=("INPLANE", "Z"), help="PSF FWHM in mm")
    p.add_argument("--thickness", type=float, metavar="MM", help="slice thickness")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sr_simulate)

    p = srsub.add_parser("evaluate", help="SSIM, PSNR, cosine, FID and morphometry agreement against high-res")
    p.add_argument("--sr", required=True, help="super-resolved volume")
    p.add_argument("--hr", required=True, help="high-resolution truth on the same grid")
    p.add_argument("--input", help="the clinical input: also evaluate its bicubic interpolation (baseline)")
    p.add_argument("--mask", help="evaluate inside this mask (high-res grid)")
    p.add_argument("--window", default="-200,1800", metavar="LO,HI", help="HU window: SSIM/PSNR range, 8-bit "
                                                                          "SSIM and FID mapping (-200,1800)")
    p.add_argument("--threshold", default="isodata", help="bone threshold for morphometry: HU, or isodata / otsu "
                                                          "per image (isodata)")
    p.add_argument("--blocks", type=float, default=2.5, metavar="MM", help="cubic blocks for morphometry (2.5)")
    p.add_argument("--fid-weights", metavar="FILE", help="TorchScript feature network for FID (local file; "
                                                         "see the README)")
    p.add_argument("--json", required=True, metavar="OUT.json")
    p.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sr_evaluate)


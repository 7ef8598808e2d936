"""BoneSR inference throughput: BoneKit's runner against an fp32 eager reference of the same
generator, on the CPU and (when present) on a CUDA GPU.

    python benchmarks/sr_inference.py [--model demo] [--size 256] [--slices 32] [--repeats 3]

Reference ("fp32 eager"): the generator called slice by slice (batch 1) under ``torch.no_grad``,
float32, contiguous memory: what a straightforward script does. BoneKit: the same weights through
``bonekit.sr.infer._Runner`` (``inference_mode``, batches of slices; on a GPU bf16 or fp16 autocast
and channels_last). Printed per device: slices/s of each, their ratio, and the largest difference
of the outputs in HU (fp32 on the CPU is identical up to summation order; half precision is not).

Also printed: the tiled-vs-whole difference of the demonstration model (instance norm makes tiles an
approximation; see the README) at the default overlap.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bonekit.sr.infer import _Runner
from bonekit.models import resolve_model
from bonekit.sr.model import load_model
from bonekit.sr.networks import size_multiple


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, cuDNN autotuning)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def reference(net, x: np.ndarray, device: str) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in x:
            out.append(net(torch.from_numpy(s[None, None]).to(device)).float().cpu().numpy()[0, 0])
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--size", type=int, default=256, help="slice edge in output pixels")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info, net = load_model(resolve_model(args.model, "sr"))
    multiple = size_multiple(info.generator_config())
    rng = np.random.default_rng(0)
    x = np.tanh(rng.standard_normal((args.slices, args.size, args.size))).astype(np.float32)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"model {args.model}: {info.generator['arch']} ngf {info.generator['ngf']}, {args.slices} slices of "
          f"{args.size}^2, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':<7} {'reference sl/s':>15} {'BoneKit sl/s':>13} {'precision':>9} {'ratio':>6} {'max |diff| HU':>14}")
    hu = 0.5 * (info.normalization.hi_hu - info.normalization.lo_hu)
    for device in devices:
        net.to(device)
        ref_out = reference(net, x, device)
        t_ref = best_of(lambda: reference(net, x, device), args.repeats)
        runner = _Runner(net, multiple, device, "auto", None, 32, 64, lambda m: None)
        batch = 16 if device == "cuda" else 4

        def ours():
            return np.concatenate([runner.slices(x[s:s + batch]) for s in range(0, len(x), batch)])

        out = ours()
        t_ours = best_of(ours, args.repeats)
        print(f"{device:<7} {len(x) / t_ref:15.1f} {len(x) / t_ours:13.1f} {runner.precision_name:>9} "
              f"{t_ref / t_ours:6.2f} {np.abs(out - ref_out).max() * hu:14.3f}")
    runner = _Runner(net.to("cpu"), multiple, "cpu", "fp32", None, 32, 64, lambda m: None)
    whole = runner.slices(x[:4])
    runner.tile = args.size // 2
    tiled = runner.slices(x[:4])
    print(f"tiles of {args.size // 2} px (overlap 32) vs whole {args.size}^2 slices: mean |diff| "
          f"{np.abs(whole - tiled).mean() * hu:.1f} HU, r = {np.corrcoef(whole.ravel(), tiled.ravel())[0, 1]:.4f}")


if __name__ == "__main__":
    main()

"""Super-resolution inference: a clinical CT volume in, a micro-CT-like volume out.

Pipeline (one place for each step):

1. crop to the ROI's bounding box (plus a margin), so CPU runs stay practical;
2. check the voxel size against the one the model was trained for;
3. interpolate onto the fine grid, spacing / scale on every axis (:func:`upsample`, cubic
   B-spline: the same interpolation the model saw in training, and the "bicubic" baseline);
4. run the generator on axial slices in batches, optionally in overlapping tiles blended
   without seams; bf16/fp16 autocast and channels_last on a GPU;
5. on a GPU out-of-memory error: halve the tile, down to ``min_tile``, then move to the CPU,
   and say so in :attr:`SRResult.fallbacks`.

Progress goes to ``progress(fraction, message)``; raising from it cancels the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import BoneKitError
from ..accel import autocast_dtype, is_out_of_memory, resolve_device  # noqa: F401 (re-exported)
from ..progress import ProgressCallback
from ..volume import Volume

#: Largest output BoneKit will allocate without an ROI (bytes of float32).
MAX_OUTPUT_BYTES = 8 * 2**30
#: Relative difference between the CT's voxel size and the model's beyond which we refuse.
SPACING_TOLERANCE = 0.5


# ---------------------------------------------------------------- interpolation
#: Edge padding before the B-spline prefilter: what scipy's map_coordinates does for mode="nearest".
_SPLINE_PAD = 12


def upsample(volume: Volume, scale: int, *, order: int = 3, chunk: int = 32) -> Volume:
    """Interpolate ``volume`` onto the grid ``scale`` times finer on every axis
    (:func:`bonekit.sr.degrade.refined_grid`), with a cubic B-spline by default ("bicubic").

    Fine voxel centre ``f`` lies at coarse index ``(f + 0.5) / scale - 0.5``; beyond the outermost
    coarse centres values extend from the edge. Identical (to float rounding) to
    :func:`bonekit.sr.degrade.upsample_to` onto that grid, which makes the training pairs, but
    computed slab by slab so a large output never needs a second full-size coordinate array.
    """
    from scipy import ndimage

    from .degrade import refined_grid

    scale = int(scale)
    grid = refined_grid(volume, scale)
    pad = _SPLINE_PAD if order > 1 else 0
    src = np.pad(np.asarray(volume.array, dtype=np.float64), pad, mode="edge")
    coeffs = ndimage.spline_filter(src, order=order, mode="mirror") if order > 1 else src
    shape = tuple(n * scale for n in volume.shape)
    out = np.empty(shape, np.float32)
    axes = [(np.arange(n, dtype=np.float64) + 0.5) / scale - 0.5 + pad for n in shape]
    for k0 in range(0, shape[0], chunk):
        k = axes[0][k0:k0 + chunk]
        coords = np.meshgrid(k, axes[1], axes[2], indexing="ij")
        out[k0:k0 + len(k)] = ndimage.map_coordinates(coeffs, coords, order=order, mode="mirror",
                                                      prefilter=False)
    return Volume(out, grid.affine, volume.modality, volume.units, dict(volume.metadata, upsampled=scale))


# ---------------------------------------------------------------- devices
# ---------------------------------------------------------------- tiling
def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering [0, n) with at least ``overlap`` shared."""
    if tile >= n:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((n - tile) / step) + 1
    return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """Blend weight along one tile axis: linear ramps over the overlap, except at image borders."""
    w = np.ones(length, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        n = min(overlap, length)
        if not at_start:
            w[:n] = np.minimum(w[:n], r[:n])
        if not at_end:
            w[length - n:] = np.minimum(w[length - n:], r[:n][::-1])
    return w


# ---------------------------------------------------------------- the run
@dataclass
class SRResult:
    """Output of :func:`super_resolve`.

    Attributes
    ----------
    volume : Volume
        Micro-CT-like image in HU on the fine grid (spacing = input spacing / scale).
    device, precision : str
        Where and in which arithmetic the generator finally ran.
    tile : int or None
        Tile size in fine pixels (None: whole slices).
    fallbacks : list of str
        What was changed on the way (smaller tiles, CPU), in order.
    seconds : float
        Wall time of the whole call.
    """

    volume: Volume
    device: str
    precision: str
    tile: int | None
    fallbacks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"shape_kji": list(self.volume.shape), "spacing_mm": [float(s) for s in self.volume.spacing],
                "device": self.device, "precision": self.precision, "tile": self.tile,
                "fallbacks": list(self.fallbacks), "seconds": round(self.seconds, 3)}


class _Runner:
    """Runs the generator on batches of normalised slices; owns device, precision and tile size."""

    def __init__(self, net, size_multiple: int, device: str, precision: str, tile: int | None,
                 overlap: int, min_tile: int, log: Callable[[str], None]):
        self.net, self.multiple, self.device = net, size_multiple, device
        self.precision, self.tile, self.overlap, self.min_tile = precision, tile, overlap, min_tile
        self.log = log
        self.fallbacks: list[str] = []
        self._place()

    def _place(self) -> None:
        import torch

        self.dtype = autocast_dtype(self.device, self.precision)
        self.channels_last = self.device.startswith("cuda")
        self.net.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @property
    def precision_name(self) -> str:
        import torch

        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Generator on an (n, h, w) float32 batch whose h, w are multiples of the size multiple."""
        import torch

        t = torch.from_numpy(x[:, None]).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device_type=self.device.split(":")[0],
                                                    dtype=self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):
            y = self.net(t)
        return y.float()[:, 0].cpu().numpy()

    def slices(self, x: np.ndarray) -> np.ndarray:
        """(n, h, w) -> (n, h, w), tiled if asked, falling back on out-of-memory errors."""
        while True:
            try:
                return self._tiled(x) if self.tile is not None else self._whole(x)
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink(x.shape[1:], exc)

    def _shrink(self, hw, exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        current = self.tile if self.tile is not None else _round_up(max(hw), self.multiple)
        smaller = max(self.min_tile, _round_up(current // 2, self.multiple))
        if smaller < current:
            self.tile = smaller
            note = f"out of memory on {self.device}: tiles of {smaller} px"
        elif self.device != "cpu":
            self.device, self.tile = "cpu", None
            note = "out of memory with the smallest tiles on the GPU: continuing on the CPU"
            self._place()
        else:
            raise BoneKitError("Out of memory on the CPU even with the smallest tiles: crop the CT to an "
                               "ROI (--roi) or free memory.") from exc
        self.fallbacks.append(note)
        self.log(note)

    def _whole(self, x: np.ndarray) -> np.ndarray:
        padded, crop = _pad_to_multiple(x, self.multiple)
        return self.forward(padded)[crop]

    def _tiled(self, x: np.ndarray) -> np.ndarray:
        n, h, w = x.shape
        tile = _round_up(self.tile, self.multiple)
        th, tw = min(tile, _round_up(h, self.multiple)), min(tile, _round_up(w, self.multiple))
        padded, crop = _pad_to_multiple(x, self.multiple, min_shape=(th, tw))
        H, W = padded.shape[1:]
        out = np.zeros(padded.shape, np.float32)
        weight = np.zeros((H, W), np.float32)
        ys, xs = tile_starts(H, th, self.overlap), tile_starts(W, tw, self.overlap)
        for y0 in ys:
            wy = _ramp(th, self.overlap, y0 == 0, y0 + th >= H)
            for x0 in xs:
                wx = _ramp(tw, self.overlap, x0 == 0, x0 + tw >= W)
                wgt = wy[:, None] * wx[None, :]
                out[:, y0:y0 + th, x0:x0 + tw] += self.forward(padded[:, y0:y0 + th, x0:x0 + tw]) * wgt
                weight[y0:y0 + th, x0:x0 + tw] += wgt
        return (out / weight)[crop]


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _pad_to_multiple(x: np.ndarray, multiple: int, min_shape=(0, 0)):
    """Reflect-pad (n, h, w) so h, w are multiples of ``multiple``; return it and the crop back."""
    _, h, w = x.shape
    H, W = max(_round_up(h, multiple), min_shape[0]), max(_round_up(w, multiple), min_shape[1])
    if (H, W) == (h, w):
        return x, (slice(None), slice(None), slice(None))
    mode = "reflect" if min(h, w) > 1 and H - h < h and W - w < w else "edge"
    padded = np.pad(x, ((0, 0), (0, H - h), (0, W - w)), mode=mode)
    return padded, (slice(None), slice(0, h), slice(0, w))


def roi_box(roi: Volume, ct: Volume, margin_mm: float) -> tuple[slice, slice, slice]:
    """(k, j, i) bounding box of the non-zero ROI voxels, grown by ``margin_mm``, clipped to the CT."""
    ct.require_same_grid(roi, "ROI")
    nz = np.nonzero(np.asarray(roi.array))
    if not nz[0].size:
        raise BoneKitError("The ROI is empty: give a mask with at least one non-zero voxel, or no ROI.")
    grow = np.ceil(margin_mm / ct.spacing_kji).astype(int)
    return tuple(slice(max(0, int(a.min()) - g), min(n, int(a.max()) + 1 + g))
                 for a, g, n in zip(nz, grow, ct.shape))


def check_spacing(ct: Volume, lr_spacing_mm: float, allow: bool = False) -> None:
    """Refuse a CT whose in-plane voxel size is far from the model's (a clear, actionable error)."""
    si, sj = ct.spacing[:2]
    if abs(si - sj) > 0.1 * max(si, sj):
        raise BoneKitError(f"In-plane voxels are not square ({si:.3f} x {sj:.3f} mm): resample the CT to square "
                           "pixels first (e.g. in Slicer's Resample Scalar Volume).")
    ratio = float(si) / lr_spacing_mm
    if not allow and not (1 - SPACING_TOLERANCE <= ratio <= 1 + SPACING_TOLERANCE):
        raise BoneKitError(f"The CT has {si:.3f} mm pixels but the model was trained on {lr_spacing_mm:.3f} mm "
                           f"(ratio {ratio:.2f}). Its output would not be trustworthy: resample the CT to "
                           f"{lr_spacing_mm:.3f} mm, use a model trained at this resolution, or pass "
                           "--allow-spacing (allow_spacing=True) to run anyway.")


def super_resolve(ct: Volume, model, *, roi: Volume | None = None, margin_mm: float = 1.0,
                  device: str = "auto", precision: str = "auto", tile: int | None = None, overlap: int = 32,
                  batch_size: int | None = None, min_tile: int = 64, allow_spacing: bool = False,
                  progress: ProgressCallback | None = None, log: Callable[[str], None] | None = None) -> SRResult:
    """Micro-CT-like super-resolution of a CT volume.

    Parameters
    ----------
    ct : Volume
        Clinical CT in HU (never modified). Slices are its k axis (axial for an axial series).
    model : path or (ModelInfo, torch.nn.Module)
        A BoneSR model file (:func:`bonekit.sr.model.load_model`) or what it returns.
    roi : Volume, optional
        Mask on the CT's grid; only its bounding box (plus ``margin_mm``) is processed.
    device : "auto", "cuda", "cuda:N" or "cpu"
    precision : "auto" (bf16 or fp16 on a GPU, fp32 on the CPU), "fp32", "bf16" or "fp16"
    tile : int, optional
        Tile edge in fine pixels; None processes whole slices (tiles appear only on OOM).
    overlap : int
        Overlap between tiles in fine pixels, blended with linear ramps.
    batch_size : int, optional
        Slices per generator call (default 4 on the CPU, 16 on a GPU).
    allow_spacing : bool
        Run even if the CT's voxel size is far from the model's.

    Returns
    -------
    SRResult
    """
    from .model import ModelInfo, load_model

    t0 = time.perf_counter()
    log = log or (lambda message: None)
    report = progress or (lambda fraction, message: None)
    dev = resolve_device(device)
    info, net = load_model(model, "cpu") if not isinstance(model, tuple) else model
    if not isinstance(info, ModelInfo):
        raise BoneKitError("model must be a BoneSR model file or (ModelInfo, generator).")
    if not np.issubdtype(np.asarray(ct.array).dtype, np.number):
        raise BoneKitError(f"The CT holds {np.asarray(ct.array).dtype} values: give a scalar HU volume.")
    config = info.generator_config()
    if config.in_channels != 1 or config.out_channels != 1:
        raise BoneKitError(f"The model takes {config.in_channels} input and gives {config.out_channels} output "
                           "channels; BoneSR needs 1 input channel (a CT slice in HU) and 1 output channel.")
    if roi is not None:
        ct = ct.crop(roi_box(roi, ct, margin_mm))
    check_spacing(ct, info.lr_spacing_mm, allow_spacing)
    scale = info.scale
    out_bytes = 4 * int(np.prod(ct.shape)) * scale ** 3
    if out_bytes > MAX_OUTPUT_BYTES:
        raise BoneKitError(f"The output would take {out_bytes / 2**30:.1f} GiB ({scale}x finer on each axis): "
                           "give an ROI (--roi MASK) around the vertebra.")
    report(0.0, "interpolating onto the fine grid")
    fine = upsample(ct, scale)
    from .networks import size_multiple

    runner = _Runner(net, size_multiple(config), dev, precision, tile, overlap, min_tile, log)
    norm = info.normalization
    x = norm.forward(fine.array.astype(np.float32)).astype(np.float32)
    out = np.empty_like(x)
    batch = batch_size or (16 if dev.startswith("cuda") else 4)
    n = x.shape[0]
    for s in range(0, n, batch):
        out[s:s + batch] = runner.slices(x[s:s + batch])
        report(min(1.0, (s + batch) / n), f"slices {min(n, s + batch)}/{n} on {runner.device}")
    hu = norm.inverse(out).astype(np.float32)
    volume = fine.with_array(hu, units=ct.units or "HU",
                             metadata=dict(ct.metadata, bonesr_scale=scale, bonesr_card=info.card.get("name", "")))
    return SRResult(volume, runner.device, runner.precision_name, runner.tile, runner.fallbacks,
                    time.perf_counter() - t0)

"""Training of BoneSR generators: pix2pixHD (Jin et al. 2021), pix2pix and U-Net baselines.

Driven by one JSON configuration (:class:`TrainConfig`, see :func:`example_config`):

- **data**: paired slices from micro-CT with simulated MDCT inputs (``kind="simulated"``),
  from co-registered clinical CT / micro-CT pairs (``"pairs"``), or from a LumbarSR
  challenge folder (``"lumbarsr"``); cut into patches and cached in ``OUT/pairs.npz``.
- **schedule**: for the pix2pixHD local enhancer, the global generator is trained first at
  half resolution (``global_epochs``), then the local enhancer at full resolution, with only
  the enhancer's own weights trained for ``fix_global_epochs`` (pix2pixHD's
  ``niter_fix_global``); each phase keeps its learning rate for its first epochs and decays it
  linearly to zero over its last ``decay_epochs`` (pix2pixHD's ``niter`` / ``niter_decay``).
- **losses**: LSGAN over multiscale PatchGAN discriminators, discriminator feature matching
  (λ = 10), optional L1 and optional VGG19 perceptual loss (weights from a local file only).
- **checkpoints**: ``OUT/checkpoint.pt`` is written atomically every ``checkpoint_every``
  iterations and at the end of every epoch, with both networks, both optimisers, the loss
  scaler, the torch RNG state and the position in the epoch. The batch order and the
  augmentations are pure functions of (seed, phase, epoch, batch), so a run killed at any point
  and resumed with ``resume=True`` ends with bit-identical weights on the same machine.
- **devices**: CUDA when present (bf16 or fp16 autocast), else CPU; several GPUs with
  ``torchrun --nproc_per_node N -m bonekit sr train CONFIG`` (DistributedDataParallel; each
  rank takes its share of every batch order; rank 0 writes the files).
- **outputs**: ``OUT/history.json`` (losses and validation SSIM/PSNR per epoch, with the
  bicubic baseline), ``OUT/model.pt`` (the generator with its normalisation and voxel sizes).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..training import (SectionedConfig, batch_order, distributed, linear_decay, read_json,  # noqa: F401
                        relative_to, step)

CHECKPOINT_FORMAT = "bonekit-sr-checkpoint"


# ---------------------------------------------------------------- configuration
@dataclass
class DataConfig:
    """Where training pairs come from.

    kind : "simulated" | "pairs" | "lumbarsr" | "arrays"
    hr : list of {"path", "spacing_mm" (override, optional), "binary" (optional)} for "simulated"
    pairs : list of {"lr", "hr"} co-registered volume paths for "pairs"
    root : LumbarSR folder for "lumbarsr"
    arrays : an .npz with ``inputs`` / ``targets`` (N, H, W) in HU, already paired on the fine grid
    validation : held out, same structure as the training entries: hr / pairs entries, LumbarSR
        specimen ids, or .npz paths for "arrays"
    degradation : ``MDCTModel`` settings for "simulated"
    scale : fine voxels per coarse voxel along each axis
    patch, stride : patch edge and step in fine pixels
    min_bone_fraction : drop patches whose target has less bone than this (above the HU midpoint)
    pairing : "register" | "dtw" for "pairs" / "lumbarsr"
    """

    kind: str = "simulated"
    hr: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    root: str | None = None
    arrays: str | None = None
    validation: list = field(default_factory=list)
    degradation: dict = field(default_factory=dict)
    scale: int = 4
    patch: int = 128
    stride: int = 96
    min_bone_fraction: float = 0.02
    pairing: str = "register"


@dataclass
class ModelConfig:
    generator: dict | str = "light"
    discriminator: dict | str = "light"
    normalization: dict = field(default_factory=lambda: {"lo_hu": -200.0, "hi_hu": 1800.0})


@dataclass
class OptimConfig:
    epochs: int = 20
    global_epochs: int = 0
    fix_global_epochs: int = 0
    decay_epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_feat: float = 10.0
    lambda_l1: float = 0.0
    vgg_weights: str | None = None
    lambda_vgg: float = 10.0
    amp: str = "auto"
    checkpoint_every: int = 200
    augment: bool = True
    device: str = "auto"
    max_batches_per_epoch: int | None = None


@dataclass
class TrainConfig(SectionedConfig):
    SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": OptimConfig}

    out: str = "bonesr-run"
    seed: int = 0
    name: str = "bonesr"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)

    @classmethod
    def read(cls, path) -> "TrainConfig":
        path = Path(path).expanduser()
        config = cls.from_dict(read_json(path, "training configuration", "see `bonekit sr example-config`"))
        # relative paths in the file are relative to the file
        base = path.parent
        config.out = str(relative_to(base, config.out))
        for entry in config.data.hr + config.data.validation + config.data.pairs:
            for key in ("path", "lr", "hr"):
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    entry[key] = str(relative_to(base, entry[key]))
        for key in ("root", "arrays"):
            if getattr(config.data, key):
                setattr(config.data, key, str(relative_to(base, getattr(config.data, key))))
        if config.train.vgg_weights:
            config.train.vgg_weights = str(relative_to(base, config.train.vgg_weights))
        return config

    def validate(self) -> None:
        t, d = self.train, self.data
        if d.kind not in ("simulated", "pairs", "lumbarsr", "arrays"):
            raise BoneKitError(f"data.kind '{d.kind}': use simulated, pairs, lumbarsr or arrays.")
        if int(d.scale) != d.scale or d.scale < 1:
            raise BoneKitError(f"data.scale {d.scale}: must be a whole number >= 1.")
        if t.epochs < 0 or t.global_epochs < 0 or t.fix_global_epochs < 0 or t.decay_epochs < 0:
            raise BoneKitError("Epoch counts must be >= 0.")
        if t.batch_size < 1 or t.lr <= 0 or t.checkpoint_every < 1:
            raise BoneKitError("train.batch_size and train.checkpoint_every must be >= 1 and train.lr > 0.")
        if t.amp not in ("auto", "off", "bf16", "fp16"):
            raise BoneKitError(f"train.amp '{t.amp}': use auto, off, bf16 or fp16.")

    def generator_config(self):
        from .networks import GeneratorConfig

        g = self.model.generator
        return _preset(GeneratorConfig, g, "generator")

    def discriminator_config(self):
        from .networks import DiscriminatorConfig

        return _preset(DiscriminatorConfig, self.model.discriminator, "discriminator")


def _preset(cls, value, what):
    if isinstance(value, str):
        if value not in ("light", "paper"):
            raise BoneKitError(f"model.{what} '{value}': use 'light', 'paper' or a dictionary of settings.")
        return getattr(cls, value)()
    return cls.from_dict(value)


def _known(d: Any, cls, what: str) -> dict:
    from .model import _known as known

    return known(d, cls, what)


def example_config() -> dict:
    """A complete configuration: the demonstration model's, with the micro-CT of this workplace."""
    root = "/path/to/microct/fda_vertebra_roi_51um"
    spec = lambda name: {"path": f"{root}/Segmentation-grayscale-{name}.nrrd", "spacing_mm": 0.0512998,
                         "binary": True}
    return TrainConfig(
        out="bonesr-demo", name="bonesr-demo-x4",
        data=DataConfig(hr=[spec("10_07131"), spec("1_67976"), spec("5_06219")],
                        validation=[spec("9_04216")]),
    ).to_dict()


# ---------------------------------------------------------------- paired data
def prepare_pairs(config: TrainConfig, entries: list, progress: ProgressCallback | None = None):
    """Paired (input, target) patches in HU on the fine grid: two float32 arrays (N, P, P)."""
    d = config.data
    report = progress or (lambda f, m: None)
    inputs, targets = [], []
    for n, entry in enumerate(entries):
        report(n / max(1, len(entries)), f"pairing {n + 1}/{len(entries)}")
        if d.kind == "arrays":
            x, y = _read_arrays(entry)
        else:
            lr_fine, hr = _pair_entry(config, entry)
            x, y = _patches(lr_fine, hr, d.patch, d.stride, d.min_bone_fraction, config.model.normalization)
        inputs.append(x)
        targets.append(y)
    if not inputs or sum(len(x) for x in inputs) == 0:
        raise BoneKitError("No training patches: check the data paths, the patch size against the volume "
                           "size, and min_bone_fraction.")
    return np.concatenate(inputs), np.concatenate(targets)


def _read_arrays(path):
    with np.load(path) as z:
        if "inputs" not in z or "targets" not in z:
            raise BoneKitError(f"{path}: expected arrays 'inputs' and 'targets' (N, H, W) in HU.")
        x, y = z["inputs"].astype(np.float32), z["targets"].astype(np.float32)
    if x.shape != y.shape or x.ndim != 3:
        raise BoneKitError(f"{path}: inputs {x.shape} and targets {y.shape} must both be (N, H, W).")
    return x, y


def _pair_entry(config: TrainConfig, entry):
    """One training entry -> (LR interpolated onto the fine grid, HR target): two float32 arrays in HU."""
    from ..io import read_volume
    from . import degrade, pairing
    from .infer import upsample

    d = config.data
    if d.kind == "simulated":
        if not isinstance(entry, dict) or "path" not in entry:
            raise BoneKitError(f"data.hr entries need a 'path' (and optionally 'spacing_mm', 'binary'): {entry!r}")
        s = entry.get("spacing_mm")
        hr = read_volume(entry["path"], spacing=None if s is None else [s] * 3)
        hr = degrade.micro_ct_to_hu(hr, binary=entry.get("binary"))
        model = degrade.MDCTModel.from_dict(dict(d.degradation, scale=d.scale))
        lr = degrade.simulate_mdct(hr, model, seed=config.seed + _stable_hash(entry["path"]))
        fine = upsample(lr, d.scale).array
        # the simulated LR covers whole blocks only: crop the target to the same box
        return fine, hr.array[:fine.shape[0], :fine.shape[1], :fine.shape[2]].astype(np.float32)
    if isinstance(entry, dict):
        lr, hr = read_volume(entry["lr"]), read_volume(entry["hr"])
    else:  # a LumbarSR SpecimenPair
        lr, hr = read_volume(entry.clinical_ct), read_volume(entry.micro_ct)
    pairs = pairing.pair_volumes(lr, hr, d.scale, method=d.pairing)
    return (np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs]).astype(np.float32))


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(str(text).encode()) % 100_000


def _patches(x: np.ndarray, y: np.ndarray, patch: int, stride: int, min_bone: float, norm: dict):
    """Co-located axial patches, keeping those with some bone (above the window's midpoint)."""
    from .degrade import cut_patches

    if min(y.shape[1:]) < patch:
        raise BoneKitError(f"Slices of {y.shape[1]}x{y.shape[2]} fine pixels are smaller than the patch size "
                           f"{patch}: lower data.patch.")
    mid = 0.5 * (norm.get("lo_hu", -200.0) + norm.get("hi_hu", 1800.0))
    return cut_patches(x, y, patch, stride, min_bone_fraction=min_bone, bone_threshold_hu=mid)


# ---------------------------------------------------------------- the schedule
@dataclass(frozen=True)
class Phase:
    name: str          # "global" (half resolution), "local" or "main"
    epochs: int
    half_resolution: bool
    fix_epochs: int    # epochs at the start where only the outermost enhancer trains


def schedule(config: TrainConfig) -> list[Phase]:
    g = config.generator_config()
    t = config.train
    if g.arch == "pix2pixhd_local":
        phases = [Phase("global", t.global_epochs, True, 0)] if t.global_epochs else []
        return phases + [Phase("local", t.epochs, False, t.fix_global_epochs if t.global_epochs else 0)]
    return [Phase("main", t.epochs, False, 0)]


def learning_rate(config: TrainConfig, phase: Phase, epoch: int) -> float:
    """pix2pixHD: constant, then linear decay to 0 over the last ``decay_epochs`` of the phase."""
    return linear_decay(config.train.lr, phase.epochs, config.train.decay_epochs, epoch)


def augment(x: np.ndarray, y: np.ndarray, seed: int, phase: int, epoch: int, batch: int):
    """Random flips and 90° rotations, the same for input and target, from (seed, phase, epoch, batch)."""
    rng = np.random.default_rng([seed, phase, epoch, batch, 1])
    ops = rng.integers(0, 8, size=len(x))
    xs, ys = np.empty_like(x), np.empty_like(y)
    for i, op in enumerate(ops):
        a, b = x[i], y[i]
        if op & 4:
            a, b = a[:, ::-1], b[:, ::-1]
        xs[i], ys[i] = np.rot90(a, op & 3), np.rot90(b, op & 3)
    return xs, ys


# ---------------------------------------------------------------- the trainer
class Trainer:
    """One training run; :meth:`run` does (or resumes) it. Most users call :func:`train`."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: ProgressCallback | None = None,
                 log: Callable[[str], None] | None = None, device: str | None = None):
        import torch

        from ..accel import resolve_device

        self.config = config
        self.out = Path(config.out).expanduser()
        self.progress = progress or (lambda f, m: None)
        self.log = log or (lambda m: None)
        self.rank, self.world, local = distributed()
        dev = device or config.train.device
        if self.world > 1 and torch.cuda.is_available():
            dev = f"cuda:{local}"
            torch.cuda.set_device(local)
        self.device = resolve_device(dev)
        self.checkpoint_path = self.out / "checkpoint.pt"
        if self.checkpoint_path.exists() and not resume:
            raise BoneKitError(f"{self.checkpoint_path} exists: pass --resume to continue that run, or choose "
                               "another output folder (data are never overwritten).")
        if resume and not self.checkpoint_path.exists():
            raise BoneKitError(f"Nothing to resume: {self.checkpoint_path} does not exist.")
        self.resume = resume
        self.history: list[dict] = []

    # -- data
    def _data(self):
        cache = self.out / "pairs.npz"
        if cache.exists():
            with np.load(cache) as z:
                return z["x"], z["y"], z["vx"], z["vy"]
        c = self.config
        entries = {"simulated": c.data.hr, "pairs": c.data.pairs, "arrays": [c.data.arrays]}.get(c.data.kind)
        if c.data.kind == "lumbarsr":
            from .pairing import load_lumbarsr

            specimens = load_lumbarsr(c.data.root)
            held = {str(v) for v in c.data.validation}
            entries = [s for s in specimens if str(s.id) not in held]
            val_entries = [s for s in specimens if str(s.id) in held]
        else:
            val_entries = c.data.validation
        x, y = prepare_pairs(c, entries, self.progress)
        if val_entries:
            vx, vy = prepare_pairs(c, val_entries)
        else:
            vx = vy = np.zeros((0,) + x.shape[1:], np.float32)
        if self.rank == 0:
            from ..io import atomic_path

            with atomic_path(cache, ".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, x=x, y=y, vx=vx, vy=vy)
        return x, y, vx, vy

    # -- networks
    def _build(self, phase: Phase):
        import torch

        from .networks import (GANLoss, build_discriminator, build_generator, init_weights)

        g_config = self.config.generator_config()
        if phase.name == "global":
            g_config = _global_part(g_config)
        torch.manual_seed(self.config.seed)
        G = build_generator(g_config)
        init_weights(G, self.config.seed)
        D = build_discriminator(self.config.discriminator_config())
        init_weights(D, self.config.seed + 1)
        return g_config, G.to(self.device), D.to(self.device), GANLoss().to(self.device)

    def run(self) -> dict:
        """Train (or resume); returns the summary written to ``history.json``."""
        import torch

        from ..io import write_json

        c = self.config
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        x, y, vx, vy = self._data()
        norm = _norm(c)
        x, y, vx, vy = (norm.forward(a).astype(np.float32) for a in (x, y, vx, vy))
        state = _read_checkpoint(self.checkpoint_path, c) if self.resume else None
        phases = schedule(c)
        start_phase = state["phase"] if state else 0
        global_weights = state.get("global_weights") if state else None
        if state:
            self.history = list(state["history"])
        G = None
        for p_index in range(start_phase, len(phases)):
            phase = phases[p_index]
            g_config, G, D, gan = self._build(phase)
            if phase.name == "local" and global_weights is not None:
                from .networks import load_global_weights

                load_global_weights(G, global_weights)
            optG, optD, scaler = self._optimizers(G, D, phase, fixed=phase.fix_epochs > 0)
            epoch0, batch0, sums0 = 0, 0, {}
            if state and p_index == state["phase"] and state.get("G") is not None:
                G.load_state_dict(state["G"])
                D.load_state_dict(state["D"])
                epoch0, batch0, sums0 = state["epoch"], state["batch"], dict(state.get("sums") or {})
                if phase.fix_epochs and (epoch0, batch0) > (phase.fix_epochs, 0):  # past the switch to all weights
                    optG, optD, scaler = self._optimizers(G, D, phase, fixed=False)
                optG.load_state_dict(state["optG"])
                optD.load_state_dict(state["optD"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                torch.set_rng_state(state["rng"])
                self.log(f"resumed {phase.name} phase at epoch {epoch0 + 1}, batch {batch0}")
            state = None
            Gp, Dp = self._parallel(G), self._parallel(D)
            px, py, pvx, pvy = (_half(a) for a in (x, y, vx, vy)) if phase.half_resolution else (x, y, vx, vy)
            for epoch in range(epoch0, phase.epochs):
                if phase.fix_epochs and epoch == phase.fix_epochs and batch0 == 0:
                    optG, optD, scaler = self._optimizers(G, D, phase, fixed=False)
                    self.log("training all generator weights from now on")
                for opt in (optG, optD):
                    for group in opt.param_groups:
                        group["lr"] = learning_rate(c, phase, epoch)
                losses = self._epoch(p_index, phase, epoch, batch0, Gp, Dp, G, D, gan, optG, optD, scaler,
                                     px, py, global_weights, sums0)
                batch0, sums0 = 0, {}
                record = {"phase": phase.name, "epoch": epoch + 1, "lr": learning_rate(c, phase, epoch), **losses,
                          **_validate(G, pvx, pvy, self.device)}
                self.history.append(record)
                self.log(json.dumps(record))
                self._save(p_index, epoch + 1, 0, G, D, optG, optD, scaler, global_weights)
                if self.rank == 0:
                    write_json({"config": c.to_dict(), "history": self.history}, self.out / "history.json")
            if phase.name == "global":
                global_weights = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
                self._save(p_index + 1, 0, 0, None, None, None, None, None, global_weights)
        summary = {"config": c.to_dict(), "history": self.history}
        if self.rank == 0 and G is not None:
            self.export(G, self.out / "model.pt")
            summary["model"] = str(self.out / "model.pt")
            write_json(summary, self.out / "history.json")
        if self.world > 1:
            torch.distributed.barrier()
        return summary

    def _parallel(self, net):
        if self.world <= 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[self.device] if self.device.startswith("cuda") else None)

    def _optimizers(self, G, D, phase: Phase, fixed: bool):
        import torch

        from .networks import enhancer_parameters

        t = self.config.train
        params = list(enhancer_parameters(G)) if fixed else list(G.parameters())
        optG = torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, 0.999))
        optD = torch.optim.Adam(D.parameters(), lr=t.lr, betas=(t.beta1, 0.999))
        scaler = torch.amp.GradScaler("cuda") if self._amp_dtype() == torch.float16 else None
        return optG, optD, scaler

    def _amp_dtype(self):
        import torch

        amp = self.config.train.amp
        if not self.device.startswith("cuda") or amp == "off":
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def _epoch(self, p_index, phase, epoch, batch0, Gp, Dp, G, D, gan, optG, optD, scaler, x, y, global_weights,
               sums):
        import torch

        from .networks import feature_matching_loss

        c, t = self.config, self.config.train
        order = batch_order(c.seed, p_index, epoch, len(x))
        n_batches = len(order) // t.batch_size
        if t.max_batches_per_epoch:
            n_batches = min(n_batches, t.max_batches_per_epoch)
        if n_batches == 0:
            raise BoneKitError(f"{len(x)} training patches are fewer than one batch of {t.batch_size}: "
                               "lower train.batch_size or add data.")
        vgg = self._vgg()
        dtype = self._amp_dtype()
        G.train()
        D.train()
        for b in range(batch0, n_batches):
            idx = order[b * t.batch_size:(b + 1) * t.batch_size]
            xb, yb = x[idx], y[idx]
            if t.augment:  # the whole batch, then each rank's share: a patch's flip never depends on the ranks
                xb, yb = augment(xb, yb, c.seed, p_index, epoch, b)
            xb, yb = xb[self.rank::self.world], yb[self.rank::self.world]
            xb = torch.from_numpy(np.ascontiguousarray(xb[:, None])).to(self.device)
            yb = torch.from_numpy(np.ascontiguousarray(yb[:, None])).to(self.device)
            with torch.autocast(self.device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                fake = Gp(xb)
                pred_fake = Dp(torch.cat([xb, fake], 1))
                pred_real = Dp(torch.cat([xb, yb], 1))
                loss_gan = gan(pred_fake, True)
                zero = fake.new_zeros(())
                loss_fm = feature_matching_loss(pred_fake, pred_real, t.lambda_feat) if t.lambda_feat else zero
                loss_l1 = torch.nn.functional.l1_loss(fake, yb) * t.lambda_l1 if t.lambda_l1 else zero
                loss_vgg = vgg(fake.float(), yb) * t.lambda_vgg if vgg is not None else zero
                loss_g = loss_gan + loss_fm + loss_l1 + loss_vgg
            optG.zero_grad(set_to_none=True)
            step(loss_g, optG, scaler)
            with torch.autocast(self.device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                d_fake = gan(Dp(torch.cat([xb, fake.detach()], 1)), False)
                d_real = gan(Dp(torch.cat([xb, yb], 1)), True)
                loss_d = 0.5 * (d_fake + d_real)
            optD.zero_grad(set_to_none=True)
            step(loss_d, optD, scaler)
            if scaler is not None:
                scaler.update()
            for k, v in (("G_GAN", loss_gan), ("G_FM", loss_fm), ("G_L1", loss_l1), ("G_VGG", loss_vgg),
                         ("D_fake", d_fake), ("D_real", d_real)):
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            done = b + 1
            self.progress((epoch + done / n_batches) / max(1, phase.epochs),
                          f"{phase.name} epoch {epoch + 1}/{phase.epochs} batch {done}/{n_batches}")
            if done % t.checkpoint_every == 0 and done < n_batches:
                self._save(p_index, epoch, done, G, D, optG, optD, scaler, global_weights, sums=sums)
        return {k: v / n_batches for k, v in sums.items()}

    def _vgg(self):
        """The perceptual loss network, read from its file once per run (None without one)."""
        from .networks import VGGLoss

        path = self.config.train.vgg_weights
        if path and getattr(self, "_vgg_loss", None) is None:
            self._vgg_loss = VGGLoss.from_file(path).to(self.device)
        return getattr(self, "_vgg_loss", None) if path else None

    def _save(self, phase, epoch, batch, G, D, optG, optD, scaler, global_weights, sums=None) -> None:
        import torch

        if self.rank != 0:
            return
        from ..training import save_checkpoint

        payload = {"format": CHECKPOINT_FORMAT, "version": 1, "config": self.config.to_dict(),
                   "phase": phase, "epoch": epoch, "batch": batch, "history": self.history,
                   "rng": torch.get_rng_state(), "global_weights": global_weights,
                   "G": G.state_dict() if G is not None else None, "D": D.state_dict() if D is not None else None,
                   "optG": optG.state_dict() if optG is not None else None,
                   "optD": optD.state_dict() if optD is not None else None,
                   "scaler": scaler.state_dict() if scaler is not None else None, "sums": dict(sums or {})}
        save_checkpoint(self.checkpoint_path, payload)

    def export(self, G, path) -> Path:
        """Write the generator as a model file (:mod:`bonekit.sr.model`)."""
        return export_model(self.config, G, path, self.history)


def _global_part(local_config):
    """The generator config of a local enhancer's inner global generator (its first, half-resolution phase)."""
    from .networks import GeneratorConfig

    d = local_config.to_dict()
    d.update(arch="pix2pixhd_global", ngf=local_config.ngf * 2 ** local_config.n_local_enhancers)
    return GeneratorConfig.from_dict(d)


def _half(a: np.ndarray) -> np.ndarray:
    """2x2 mean pooling of (N, H, W): pix2pixHD's half-resolution global phase."""
    n, h, w = a.shape
    a = a[:, :h - h % 2, :w - w % 2]
    return a.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).astype(np.float32)


def _norm(config: TrainConfig):
    from .model import Normalization

    return Normalization.from_dict(config.model.normalization)


def _validate(G, x: np.ndarray, y: np.ndarray, device: str) -> dict:
    """SSIM and PSNR of the generator and of the interpolated input on held-out patches ([-1, 1] scale)."""
    if len(x) == 0:
        return {}
    import torch

    from .metrics import psnr, ssim

    G.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), 16):
            out.append(G(torch.from_numpy(x[s:s + 16, None]).to(device)).float()[:, 0].cpu().numpy())
    G.train()
    fake = np.concatenate(out)
    return {"val_ssim": float(np.mean([ssim(f, t, data_range=2.0) for f, t in zip(fake, y)])),
            "val_psnr": float(np.mean([psnr(f, t, data_range=2.0) for f, t in zip(fake, y)])),
            "val_ssim_input": float(np.mean([ssim(f, t, data_range=2.0) for f, t in zip(x, y)])),
            "val_psnr_input": float(np.mean([psnr(f, t, data_range=2.0) for f, t in zip(x, y)]))}


def _read_checkpoint(path: Path, config: TrainConfig) -> dict:
    from .model import read_torch_file

    state = read_torch_file(path, "training checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise BoneKitError(f"{path}: not a BoneSR training checkpoint.")
    saved = state["config"]
    now = config.to_dict()
    # only the number of epochs and the checkpoint interval may change on resume
    for part in ("data", "model"):
        if saved[part] != now[part]:
            raise BoneKitError(f"{path}: the checkpoint was trained with other '{part}' settings than this "
                               "configuration; resume with the original configuration or start a new run.")
    if saved["seed"] != now["seed"]:
        raise BoneKitError(f"{path}: the checkpoint used seed {saved['seed']}, the configuration {now['seed']}.")
    return state


def export_model(config: TrainConfig, G, path, history: list | None = None) -> Path:
    """Save generator ``G`` of a run as a BoneSR model file with its card."""
    from .degrade import MDCTModel
    from .model import ModelInfo, save_model

    d = config.data
    degradation = (MDCTModel.from_dict(dict(d.degradation, scale=d.scale)).to_dict()
                   if d.kind == "simulated" else None)
    hr_spacing = _hr_spacing(config)
    last = {k: v for k, v in (history or [{}])[-1].items() if k.startswith("val_")} if history else {}
    info = ModelInfo(generator=config.generator_config().to_dict(), normalization=_norm(config),
                     scale=d.scale, hr_spacing_mm=hr_spacing, lr_spacing_mm=hr_spacing * d.scale,
                     degradation=degradation,
                     card={"name": config.name, "trained": time.strftime("%Y-%m-%d"),
                           "data": d.kind, "validation": last, "epochs": config.train.epochs})
    return save_model(path, info, G)


def _hr_spacing(config: TrainConfig) -> float:
    d = config.data
    for entry in d.hr:
        if isinstance(entry, dict) and entry.get("spacing_mm"):
            return float(entry["spacing_mm"])
        if isinstance(entry, dict) and entry.get("path"):
            from ..io import read_volume

            return float(read_volume(entry["path"]).spacing[0])
    return float(d.degradation.get("hr_spacing_mm", 0.05)) if d.degradation else 0.05


def export_checkpoint(checkpoint, out) -> Path:
    """Model file from a training checkpoint (the generator as it was at that point)."""
    from .model import build_and_load, read_torch_file

    state = read_torch_file(checkpoint, "training checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise BoneKitError(f"{checkpoint}: not a BoneSR training checkpoint.")
    config = TrainConfig.from_dict(copy.deepcopy(state["config"]))
    if state.get("G") is None:
        raise BoneKitError(f"{checkpoint}: saved between phases, it holds no generator yet; train further.")
    phases = schedule(config)
    g_config = config.generator_config()
    if phases[min(state["phase"], len(phases) - 1)].name == "global":
        g_config = _global_part(g_config)
        config.model.generator = g_config.to_dict()
    G = build_and_load(g_config, state["G"], str(checkpoint))
    return export_model(config, G, out, state.get("history"))


def train(config: TrainConfig | dict | str, *, resume: bool = False, progress: ProgressCallback | None = None,
          log: Callable[[str], None] | None = None, device: str | None = None) -> dict:
    """Train a BoneSR generator from a configuration (object, dict or JSON path); see the module doc."""
    if isinstance(config, (str, Path)):
        config = TrainConfig.read(config)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    return Trainer(config, resume=resume, progress=progress, log=log, device=device).run()

"""Training of the synthetic-CT network (X2CT-GAN / TomoRay) from CTs with vertebra masks.

One JSON configuration (:class:`SCTTrainConfig`; ``bonekit sct example-config``):

- **data**: generated spine phantoms with varied anatomy (``kind="phantom"``), or a folder in the VerSe
  or CTSpine1K layout (``"verse"``, ``"ctspine1k"``), or a list of {ct, labels} files (``"cases"``);
  each case is prepared as TomoRay (:mod:`bonekit.sct.prepare`), its AP and lateral DRRs made once
  and cached in ``OUT/cases.npz`` (:mod:`bonekit.sct.data`).
- **losses**: X2CT-GAN's: LSGAN (0.1), voxel MSE (10), L1 of the three mean projections (10), with
  a conditional 3D PatchGAN; Adam (beta 0.5, 0.99); the learning rate constant, then decaying linearly
  to 0 over the last ``decay_epochs`` (X2CT: 50 + 50 epochs; TomoRay: 100 epochs at 5e-5).
- **checkpoints**: ``OUT/checkpoint.pt``, written atomically every ``checkpoint_every`` batches and
  after every epoch, holds both networks, both optimisers, the loss scaler and the position. Batch
  order and dropout are pure functions of (seed, epoch, batch), so a killed run resumed with
  ``resume=True`` ends with the same weights.
- **devices**: CUDA when present (bf16, or fp16 with a loss scaler), else the CPU; several GPUs
  with ``torchrun --nproc_per_node N -m bonekit sct train CONFIG`` (DistributedDataParallel; each
  rank takes its share of every batch; rank 0 writes).
- **outputs**: ``OUT/history.json`` (losses and held-out PSNR/SSIM/cosine per epoch, next to the
  "mean training CT" baseline), ``OUT/model.pt``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..training import (SectionedConfig, batch_order, distributed, linear_decay, read_json, read_torch_file,
                        relative_to, save_checkpoint, step)

CHECKPOINT_FORMAT = "bonekit-sct-checkpoint"
KINDS = ("phantom", "verse", "ctspine1k", "cases")


@dataclass
class SCTDataConfig:
    """kind: phantom | verse | ctspine1k | cases. ``validation``: phantoms -> the number of held-out
    phantoms; folders and lists -> a fraction of the cases (the last ones by name) or a list of names."""

    kind: str = "phantom"
    phantoms: int = 24
    root: str | None = None
    cases: list = field(default_factory=list)
    validation: float | int | list = 4
    prepare: dict = field(default_factory=dict)
    sad: float = 541.0
    sid: float = 949.0


@dataclass
class SCTModelConfig:
    generator: dict | str = "light"
    size: int | None = None
    discriminator: dict | str = "light"


@dataclass
class SCTOptimConfig:
    epochs: int = 100
    decay_epochs: int = 50
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.99
    gan: float = 0.1
    reconstruction: float = 10.0
    projection: float = 10.0
    auxiliary: float = 0.0
    checkpoint_every: int = 0
    amp: str = "auto"
    device: str = "auto"


@dataclass
class SCTTrainConfig(SectionedConfig):
    SECTIONS = {"data": SCTDataConfig, "model": SCTModelConfig, "train": SCTOptimConfig}

    out: str = "sct-run"
    seed: int = 0
    name: str = "bonekit-sct"
    data: SCTDataConfig = field(default_factory=SCTDataConfig)
    model: SCTModelConfig = field(default_factory=SCTModelConfig)
    train: SCTOptimConfig = field(default_factory=SCTOptimConfig)

    @classmethod
    def read(cls, path) -> "SCTTrainConfig":
        path = Path(path).expanduser()
        config = cls.from_dict(read_json(path, "training configuration", "see `bonekit sct example-config`"))
        base = path.parent
        config.out = str(relative_to(base, config.out))
        if config.data.root:
            config.data.root = str(relative_to(base, config.data.root))
        for entry in config.data.cases:
            for key in ("ct", "labels"):
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    entry[key] = str(relative_to(base, entry[key]))
        return config

    def validate(self) -> None:
        d, t = self.data, self.train
        if d.kind not in KINDS:
            raise BoneKitError(f"data.kind '{d.kind}': use {', '.join(KINDS)}.")
        if d.kind in ("verse", "ctspine1k") and not d.root:
            raise BoneKitError(f"data.kind '{d.kind}' needs data.root, the dataset folder.")
        if d.kind == "cases" and not d.cases:
            raise BoneKitError("data.kind 'cases' needs data.cases: a list of {\"ct\": ..., \"labels\": ...}.")
        if t.epochs < 0 or t.decay_epochs < 0 or t.batch_size < 1 or t.lr <= 0 or t.checkpoint_every < 0:
            raise BoneKitError("train: epochs, decay_epochs, checkpoint_every >= 0; batch_size >= 1; lr > 0.")
        if t.amp not in ("auto", "off", "bf16", "fp16"):
            raise BoneKitError(f"train.amp '{t.amp}': use auto, off, bf16 or fp16.")
        self.prepare_config()
        self.generator_config()
        self.discriminator_config()

    def prepare_config(self):
        from .prepare import PrepareConfig

        return PrepareConfig.from_dict(self.data.prepare)

    def generator_config(self):
        from .networks import X2CTConfig

        g = self.model.generator
        if isinstance(g, str):
            if g not in ("light", "paper"):
                raise BoneKitError(f"model.generator '{g}': use 'light', 'paper' or a dictionary of settings.")
            return getattr(X2CTConfig, g)(**({"size": self.model.size} if self.model.size else {}))
        return X2CTConfig.from_dict({**g, **({"size": self.model.size} if self.model.size else {})})

    def discriminator_config(self):
        from .networks import DiscriminatorConfig3D

        d = self.model.discriminator
        if isinstance(d, str):
            if d not in ("light", "paper"):
                raise BoneKitError(f"model.discriminator '{d}': use 'light', 'paper' or a dictionary.")
            return DiscriminatorConfig3D() if d == "paper" else DiscriminatorConfig3D.light()
        return DiscriminatorConfig3D.from_dict(d)


def example_config() -> dict:
    """The demonstration model's configuration (phantoms, 64^3 light model, about an hour on 2 CPU cores)."""
    return {"out": "sct-run", "seed": 0, "name": "bonekit-sct-demo-phantom",
            "data": {"kind": "phantom", "phantoms": 40, "validation": 6,
                     "prepare": {"spacing_mm": 2.0, "size": 128}},
            "model": {"generator": "light", "size": 64, "discriminator": "light"},
            "train": {"epochs": 16, "decay_epochs": 8, "batch_size": 4, "lr": 5e-4, "checkpoint_every": 2}}


# ---------------------------------------------------------------- data
def _data_key(config: SCTTrainConfig) -> str:
    d = dict(config.data.__dict__, size=config.generator_config().size)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cases(config: SCTTrainConfig, out: Path | None = None, progress: ProgressCallback | None = None):
    """(training arrays, validation arrays) as :func:`bonekit.sct.data.stack` dicts; cached in ``out``."""
    from .data import discover_cases, file_cases, phantom_cases, stack

    key = _data_key(config)
    cache = out / "cases.npz" if out is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return ({k[6:]: z[k] for k in z.files if k.startswith("train_")},
                        {k[4:]: z[k] for k in z.files if k.startswith("val_")})
    d = config.data
    prepare = config.prepare_config()
    size = config.generator_config().size
    if d.kind == "phantom":
        n_val = int(d.validation) if not isinstance(d.validation, list) else len(d.validation)
        train = phantom_cases(range(d.phantoms), prepare, size, progress)
        val = phantom_cases(range(10_000, 10_000 + n_val), prepare, size)
    else:
        entries = discover_cases(d.root, d.kind) if d.kind != "cases" else list(d.cases)
        if isinstance(d.validation, list):
            names = set(d.validation)
            held = [e for e in entries if e.get("name") in names]
        else:
            n = int(round(len(entries) * float(d.validation))) if float(d.validation) < 1 else int(d.validation)
            held = entries[len(entries) - n:] if n else []
        rest = [e for e in entries if e not in held]
        if not rest:
            raise BoneKitError("No training cases are left after holding out the validation cases.")
        train, val = file_cases(rest, prepare, size, progress), file_cases(held, prepare, size)
    train, val = stack(train), stack(val)
    if cache is not None:
        from ..io import atomic_path

        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, ".npz") as tmp:
            np.savez(tmp, key=key, **{f"train_{k}": v for k, v in train.items()},
                     **{f"val_{k}": v for k, v in val.items()})
    return train, val


# ---------------------------------------------------------------- training
class SCTTrainer:
    """One run; :meth:`run` does (or resumes) it. Most users call :func:`train`."""

    def __init__(self, config: SCTTrainConfig, *, resume: bool = False, device: str | None = None,
                 progress: ProgressCallback | None = None, log: Callable[[str], None] | None = None):
        from ..accel import resolve_device

        self.config = config
        self.out = Path(config.out).expanduser()
        self.resume = resume
        self.progress = progress
        self.log = log or (lambda message: None)
        self.rank, self.world, local = distributed()
        dev = device or config.train.device
        if self.world > 1 and resolve_device(dev).startswith("cuda"):
            dev = f"cuda:{local}"
        self.device = resolve_device(dev)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.history: list[dict] = []

    def _amp(self):
        from ..accel import autocast_dtype

        amp = self.config.train.amp
        return None if amp == "off" else autocast_dtype(self.device, "auto" if amp == "auto" else amp)

    def run(self) -> dict:
        import torch

        from .networks import X2CTLoss, build_discriminator, build_generator

        c, t = self.config, self.config.train
        if self.resume and not self.checkpoint_path.is_file():
            raise BoneKitError(f"{self.checkpoint_path}: nothing to resume; start without --resume.")
        if not self.resume and self.checkpoint_path.is_file():
            raise BoneKitError(f"{self.checkpoint_path} exists: resume it (--resume) or choose another --out.")
        self.out.mkdir(parents=True, exist_ok=True)
        train, val = load_cases(c, self.out, self.progress)
        n = len(train["ct"])
        if n == 0:
            raise BoneKitError("No training cases.")
        mean_ct = train["ct"].mean(axis=0)
        G = build_generator(c.generator_config(), seed=c.seed).to(self.device)
        D = build_discriminator(c.discriminator_config(), seed=c.seed + 1).to(self.device)
        optG = torch.optim.Adam(G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        optD = torch.optim.Adam(D.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        dtype = self._amp()
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        loss = X2CTLoss(t.gan, t.reconstruction, t.projection, t.auxiliary)
        epoch0, batch0, sums = 0, 0, {}
        if self.resume:
            state = _read_checkpoint(self.checkpoint_path, c)
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            optG.load_state_dict(state["optG"])
            optD.load_state_dict(state["optD"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            epoch0, batch0, sums, self.history = state["epoch"], state["batch"], state["sums"], state["history"]
        Gp, Dp = G, D
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device] if self.device.startswith("cuda") else None
            Gp, Dp = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
        batches = -(-n // t.batch_size)
        start = time.perf_counter()
        for epoch in range(epoch0, t.epochs):
            lr = linear_decay(t.lr, t.epochs, t.decay_epochs, epoch)
            for opt in (optG, optD):
                for group in opt.param_groups:
                    group["lr"] = lr
            order = batch_order(c.seed, 0, epoch, n)
            G.train()
            D.train()
            for b in range(batch0 if epoch == epoch0 else 0, batches):
                idx = np.sort(order[b * t.batch_size:(b + 1) * t.batch_size])[self.rank::self.world]
                torch.manual_seed(int(np.random.default_rng([c.seed, epoch, b]).integers(2 ** 62)))
                ap, lat, ct = (torch.from_numpy(train[k][idx]).to(self.device).unsqueeze(1)
                               for k in ("ap", "lateral", "ct"))
                with torch.autocast(self.device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                    out = Gp(ap, lat)
                    fake, views = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
                    terms = loss.generator(fake.float(), ct, Dp(ap, lat, fake).float(), [v.float() for v in views])
                optG.zero_grad(set_to_none=True)
                step(terms["total"], optG, scaler)
                with torch.autocast(self.device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                    loss_d = loss.discriminator(Dp(ap, lat, ct).float(), Dp(ap, lat, fake.detach()).float())
                optD.zero_grad(set_to_none=True)
                step(loss_d, optD, scaler)
                if scaler is not None:
                    scaler.update()
                for k, v in {**{f"G_{k}": v for k, v in terms.items()}, "D": loss_d}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["batches"] = sums.get("batches", 0) + 1
                if self.progress is not None:
                    self.progress((epoch + (b + 1) / batches) / max(1, t.epochs),
                                  f"epoch {epoch + 1}/{t.epochs}, G {float(terms['total'].detach()):.4f}")
                if t.checkpoint_every and (b + 1) % t.checkpoint_every == 0 and b + 1 < batches:
                    self._save(epoch, b + 1, G, D, optG, optD, scaler, sums)
            record = {"epoch": epoch + 1, "lr": lr, **{k: v / sums["batches"] for k, v in sums.items()
                                                       if k != "batches"}}
            record.update(validate(G, val, self.device, mean_ct))
            record["seconds"] = round(time.perf_counter() - start, 1)
            self.history.append(record)
            self.log(_describe(record))
            sums = {}
            self._save(epoch + 1, 0, G, D, optG, optD, scaler, sums)
        summary = {"epochs": t.epochs, "history": self.history, "device": self.device,
                   "train_cases": int(n), "validation_cases": int(len(val["ct"]))}
        if self.rank == 0:
            from ..io import write_json

            write_json(self.history, self.out / "history.json")
            summary["model"] = str(export_model(c, G, self.out / "model.pt", self.history))
        return summary

    def _save(self, epoch, batch, G, D, optG, optD, scaler, sums) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "version": 1, "config": self.config.to_dict(), "epoch": epoch,
            "batch": batch, "history": self.history, "G": G.state_dict(), "D": D.state_dict(),
            "optG": optG.state_dict(), "optD": optD.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "sums": dict(sums)})


def _describe(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"G {record.get('G_total', float('nan')):.4f}",
             f"D {record.get('D', float('nan')):.4f}"]
    if "val_psnr_db" in record:
        parts.append(f"held-out PSNR {record['val_psnr_db']:.2f} dB (mean CT {record['val_psnr_db_mean']:.2f}), "
                     f"SSIM {record['val_ssim']:.3f} ({record['val_ssim_mean']:.3f})")
    return ", ".join(parts)


def validate(G, val: dict, device: str, mean_ct: np.ndarray | None = None) -> dict:
    """Held-out PSNR/SSIM/cosine/MAE of the generator, and of the mean training CT (a baseline)."""
    if len(val.get("ct", ())) == 0:
        return {}
    import torch

    from .metrics import volume_metrics

    G.eval()
    rows, base = [], []
    with torch.inference_mode():
        for i in range(len(val["ct"])):
            ap, lat = (torch.from_numpy(val[k][i:i + 1]).to(device).unsqueeze(1) for k in ("ap", "lateral"))
            out = G(ap, lat)
            out = out[0] if isinstance(out, tuple) else out
            fake = out[0, 0].float().clamp(0, 1).cpu().numpy()
            rows.append(volume_metrics(val["ct"][i], fake))
            if mean_ct is not None:
                base.append(volume_metrics(val["ct"][i], mean_ct))
    G.train()
    result = {f"val_{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}
    if base:
        result.update({f"val_{k}_mean": float(np.mean([r[k] for r in base])) for k in base[0]})
    return result


def _read_checkpoint(path: Path, config: SCTTrainConfig) -> dict:
    state = read_torch_file(path, "training checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise BoneKitError(f"{path}: not a SyntheticCT training checkpoint.")
    saved, now = state["config"], config.to_dict()
    for part in ("data", "model"):
        if saved[part] != now[part]:
            raise BoneKitError(f"{path}: the checkpoint was trained with other '{part}' settings than this "
                               "configuration; resume with the original configuration or start a new run.")
    if saved["seed"] != now["seed"]:
        raise BoneKitError(f"{path}: the checkpoint used seed {saved['seed']}, the configuration {now['seed']}.")
    return state


def export_model(config: SCTTrainConfig, G, path, history: list | None = None) -> Path:
    from .data import training_geometry
    from .model import SCTModelInfo, save_model

    prepare = config.prepare_config()
    last = {k: v for k, v in (history or [{}])[-1].items() if k.startswith("val_")} if history else {}
    info = SCTModelInfo(config.generator_config(), prepare,
                        training_geometry(prepare, config.data.sad, config.data.sid),
                        card={"name": config.name, "trained": time.strftime("%Y-%m-%d"), "data": config.data.kind,
                              "epochs": config.train.epochs, "validation": last})
    return save_model(path, info, G)


def train(config, *, resume: bool = False, device: str | None = None, progress: ProgressCallback | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) from a :class:`SCTTrainConfig`, a dict, or a JSON file path."""
    if isinstance(config, (str, Path)):
        config = SCTTrainConfig.read(config)
    elif isinstance(config, dict):
        config = SCTTrainConfig.from_dict(config)
    return SCTTrainer(config, resume=resume, device=device, progress=progress, log=log).run()

"""What every BoneKit training run shares: deterministic batch orders, the learning-rate schedule,
optimiser steps with or without a loss scaler, torchrun/DDP set-up, and weights-only torch files.

Used by BoneSR (:mod:`bonekit.sr.train`) and SyntheticCT (:mod:`bonekit.sct.train`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BoneKitError


def batch_order(seed: int, phase: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled sample order of one epoch: a pure function of its arguments."""
    return np.random.default_rng([seed, phase, epoch]).permutation(n)


def linear_decay(lr: float, epochs: int, decay_epochs: int, epoch: int) -> float:
    """pix2pixHD / X2CT-GAN: ``lr`` for the first epochs, then linear decay towards 0 over the last
    ``decay_epochs`` of ``epochs`` (epoch counted from 0)."""
    decay = min(decay_epochs, epochs)
    steady = epochs - decay
    if epoch < steady or decay == 0:
        return lr
    return lr * (1.0 - (epoch - steady + 1) / (decay + 1))


def step(loss, opt, scaler) -> None:
    """Backward and optimiser step, through the fp16 loss scaler when there is one."""
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def save_weights(path, header: dict, module) -> Path:
    """Write ``header`` plus the module's weights (float32, CPU) as a weights-only torch file, atomically."""
    import torch

    from .io import atomic_path

    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in module.state_dict().items()}
    path = Path(path).expanduser()
    with atomic_path(path, ".pt") as tmp:
        torch.save({**header, "state_dict": state}, tmp)
    return path


def save_checkpoint(path, payload: dict) -> Path:
    """Write a training checkpoint atomically: a killed run never leaves a half-written file."""
    import torch

    from .io import atomic_path

    path = Path(path).expanduser()
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)
    return path


def read_torch_file(path, what: str) -> dict:
    """``torch.load(weights_only=True)`` with errors a user can act on."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise BoneKitError(f"{path}: no such {what} file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on a damaged file (EOF, zip, pickle, KeyError)
        raise BoneKitError(f"{path}: not a readable {what} file (truncated or corrupt? {str(exc)[:120]}). "
                           f"Use an intact copy, or the previous file.") from exc
    if not isinstance(payload, dict):
        raise BoneKitError(f"{path}: not a BoneKit {what} file.")
    return payload


def known_fields(d: Any, cls, what: str) -> dict:
    """``d`` after checking that it is a dictionary of ``cls``'s fields only."""
    if not isinstance(d, dict):
        raise BoneKitError(f"The {what} settings must be a dictionary, not {type(d).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise BoneKitError(f"Unknown {what} setting(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(names))}.")
    return d


def read_json(path, what: str, hint: str = "") -> dict:
    """A JSON configuration file, with errors that say what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BoneKitError(f"{path}: no such {what} file (JSON{'; ' + hint if hint else ''}).")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BoneKitError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(d, dict):
        raise BoneKitError(f"{path}: the {what} must be a JSON object.")
    return d


def relative_to(base: Path, p) -> Path:
    """``p`` as written in a file in ``base``: relative paths are relative to that file."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else base / p


class SectionedConfig:
    """Mixin for a training configuration dataclass made of dataclass sections (``SECTIONS``):
    strict ``from_dict`` (unknown keys are errors), ``to_dict``, and ``validate`` (override)."""

    SECTIONS: dict = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(known_fields(d, cls, "training"))
        for name, sub in cls.SECTIONS.items():
            d[name] = sub(**known_fields(d.get(name, {}), sub, name))
        config = cls(**d)
        config.validate()
        return config

    def validate(self) -> None:
        pass

"""BoneSR model files: a trained generator with everything needed to use it correctly.

A model file is a ``torch.save`` dictionary made only of tensors and plain Python values,
so it loads with ``torch.load(weights_only=True)`` (no code is executed on load)::

    {"format": "bonekit-sr-model", "version": 1,
     "generator": GeneratorConfig.to_dict(),
     "normalization": {"lo_hu": ..., "hi_hu": ...},
     "scale": 4, "lr_spacing_mm": 0.205, "hr_spacing_mm": 0.0513,
     "degradation": MDCTModel.to_dict() or None,
     "card": {...free text and metrics...},
     "state_dict": {...}}

The intensity normalisation and the voxel sizes the model was trained for travel with
the weights, so inference cannot silently use another window or resolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BoneKitError
from ..training import known_fields as _known
from ..training import read_torch_file  # noqa: F401 (re-exported)

FORMAT = "bonekit-sr-model"
VERSION = 1


@dataclass(frozen=True)
class Normalization:
    """Linear HU window mapped onto the generator's [-1, 1] (its tanh output range).

    ``x_norm = clip(2 (x - lo_hu) / (hi_hu - lo_hu) - 1, -1, 1)``; the inverse maps
    [-1, 1] back to HU, so outputs can never leave [lo_hu, hi_hu].
    """

    lo_hu: float = -200.0
    hi_hu: float = 1800.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo_hu) and np.isfinite(self.hi_hu) and self.hi_hu > self.lo_hu):
            raise BoneKitError(f"Normalization window [{self.lo_hu}, {self.hi_hu}] HU: "
                               "give finite values with hi_hu > lo_hu.")

    def forward(self, hu):
        """HU (numpy array or tensor) -> [-1, 1]."""
        y = (hu - self.lo_hu) * (2.0 / (self.hi_hu - self.lo_hu)) - 1.0
        return y.clip(-1.0, 1.0)

    def inverse(self, y):
        """[-1, 1] -> HU."""
        return (y + 1.0) * (0.5 * (self.hi_hu - self.lo_hu)) + self.lo_hu

    def to_dict(self) -> dict:
        return {"lo_hu": float(self.lo_hu), "hi_hu": float(self.hi_hu)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(**_known(d, cls, "normalization"))


@dataclass
class ModelInfo:
    """Everything about a trained generator except its weights.

    Attributes
    ----------
    generator : dict
        ``GeneratorConfig.to_dict()`` of the network.
    normalization : Normalization
    scale : int
        Upsampling factor per axis: output spacing = input spacing / scale.
    lr_spacing_mm : float
        In-plane voxel size of the clinical CT the model was trained on (mm).
    hr_spacing_mm : float
        Voxel size of its micro-CT targets (mm), lr_spacing_mm / scale.
    degradation : dict or None
        The simulated-MDCT model of the training inputs (``MDCTModel.to_dict()``), if any.
    card : dict
        Model card: data, metrics, limits, free text.
    """

    generator: dict
    normalization: Normalization = field(default_factory=Normalization)
    scale: int = 4
    lr_spacing_mm: float = 0.2
    hr_spacing_mm: float = 0.05
    degradation: dict | None = None
    card: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.scale) != self.scale or self.scale < 1:
            raise BoneKitError(f"Model scale {self.scale}: must be a whole number >= 1.")
        self.scale = int(self.scale)
        if not (self.lr_spacing_mm > 0 and self.hr_spacing_mm > 0):
            raise BoneKitError("Model voxel sizes must be positive.")

    def generator_config(self):
        from .networks import GeneratorConfig

        return GeneratorConfig.from_dict(self.generator)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        d = dict(_known(d, cls, "model"))
        d["normalization"] = Normalization.from_dict(d.get("normalization", {}))
        return cls(**d)


def save_model(path, info: ModelInfo, generator) -> Path:
    """Write a model file atomically (weights as float32 on the CPU)."""
    from ..training import save_weights

    return save_weights(path, {"format": FORMAT, "version": VERSION, **info.to_dict()}, generator)


def load_model(path, device: str = "cpu"):
    """Read a model file and build its generator.

    Returns
    -------
    (ModelInfo, torch.nn.Module)
        The generator is in eval mode on ``device``.

    Raises
    ------
    BoneKitError
        Missing, truncated or foreign file; weights that do not fit the recorded architecture.
    """
    path = Path(path).expanduser()
    payload = read_torch_file(path, "BoneSR model")
    if payload.get("format") != FORMAT:
        hint = (" It looks like a training checkpoint: export a model from it with "
                "`bonekit sr export CHECKPOINT --out MODEL.pt`." if payload.get("format") == "bonekit-sr-checkpoint"
                else "")
        raise BoneKitError(f"{path}: not a BoneSR model file (format {payload.get('format')!r}).{hint}")
    if payload.get("version", 0) > VERSION:
        raise BoneKitError(f"{path}: model format version {payload['version']} is newer than this BoneKit "
                           f"reads ({VERSION}); update BoneKit.")
    state = payload.pop("state_dict", None)
    if not isinstance(state, dict):
        raise BoneKitError(f"{path}: the model file has no weights.")
    info = ModelInfo.from_dict({k: v for k, v in payload.items() if k not in ("format", "version")})
    net = build_and_load(info.generator_config(), state, str(path))
    return info, net.to(device).eval()


def build_and_load(config, state: dict, source: str):
    """Build the generator of ``config`` and load ``state`` into it strictly, explaining any mismatch."""
    from .networks import build_generator

    net = build_generator(config)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else "") if part)
        raise BoneKitError(f"{source}: the weights do not fit the recorded generator "
                           f"({config.arch}, ngf {config.ngf}): {detail}. The file's configuration and "
                           "weights disagree; re-export the model from its training checkpoint.")
    net.load_state_dict(state, strict=True)
    return net

"""SyntheticCT model files: the generator's weights with everything inference needs.

A model file (weights-only torch file, format ``bonekit-sct-model``) records the generator
configuration, the TomoRay preprocessing it was trained with (cube size, voxel size, HU window), the
detector geometry of its training DRRs, the input normalisation, and a card (data, epochs, held-out
metrics). Loading never runs code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BoneKitError
from ..training import read_torch_file, save_weights
from .data import INPUT_PERCENTILES
from .drr import DetectorGeometry
from .networks import X2CTConfig, X2CTGenerator
from .prepare import PrepareConfig

FORMAT = "bonekit-sct-model"
VERSION = 1


@dataclass
class SCTModelInfo:
    generator: X2CTConfig
    prepare: PrepareConfig
    geometry: DetectorGeometry
    input_percentiles: tuple[float, float] = INPUT_PERCENTILES
    card: dict = field(default_factory=dict)

    @property
    def voxel_mm(self) -> float:
        """Voxel size of the network's output cube (the prepared field over the output size)."""
        return self.prepare.size * self.prepare.spacing_mm / self.generator.size

    def to_dict(self) -> dict:
        g = self.geometry
        return {"generator": self.generator.to_dict(), "prepare": self.prepare.to_dict(),
                "geometry": {"sad": g.sad, "sid": g.sid, "rows": g.rows, "columns": g.columns,
                             "pixel": list(g.pixel)},
                "input_percentiles": list(self.input_percentiles), "card": dict(self.card)}

    @classmethod
    def from_dict(cls, d: dict) -> "SCTModelInfo":
        try:
            g = dict(d["geometry"])
            g["pixel"] = tuple(g["pixel"])
            return cls(X2CTConfig.from_dict(d["generator"]), PrepareConfig.from_dict(d["prepare"]),
                       DetectorGeometry(**g), tuple(d.get("input_percentiles", INPUT_PERCENTILES)),
                       dict(d.get("card", {})))
        except (KeyError, TypeError) as exc:
            raise BoneKitError(f"The model's description is incomplete ({exc}); re-export the model.") from exc


def save_model(path, info: SCTModelInfo, generator) -> Path:
    return save_weights(path, {"format": FORMAT, "version": VERSION, **info.to_dict()}, generator)


def load_model(path, device: str = "cpu") -> tuple[X2CTGenerator, SCTModelInfo]:
    """The generator (eval mode, on ``device``) and its description."""
    payload = read_torch_file(path, "SyntheticCT model")
    if payload.get("format") != FORMAT:
        raise BoneKitError(f"{path}: not a SyntheticCT model (format {payload.get('format')!r}); "
                           "BoneSR models are used with 'bonekit sr infer'.")
    if payload.get("version", 0) > VERSION:
        raise BoneKitError(f"{path}: written by a newer BoneKit (model version {payload['version']}); update BoneKit.")
    info = SCTModelInfo.from_dict(payload)
    G = X2CTGenerator(info.generator)
    try:
        G.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise BoneKitError(f"{path}: the weights do not fit the recorded network ({str(exc)[:160]}).") from exc
    return G.to(device).eval(), info

"""Asynchronous HU -> BMD calibration (mg HA/cm3).

Asynchronous calibration (Li et al. 2022; Löffler et al. 2020) fits one linear equation per
scanner and protocol from phantom inserts scanned separately from the patient:

    BMD [mg HA/cm3] = slope [mg HA/cm3 per HU] * HU + intercept [mg HA/cm3]

A calibration is saved as JSON (scanner, protocol, the (HU, density) pairs, slope, intercept,
R^2) and applied to any scan of that protocol. Without a calibration BoneKit reports HU and
says BMD is uncalibrated; it never assumes an equation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BoneKitError
from .io import write_json
from .volume import Volume


@dataclass
class Calibration:
    """A linear HU -> mg HA/cm3 equation with the pairs it was fitted from."""

    slope: float                      # mg HA/cm3 per HU
    intercept: float                  # mg HA/cm3
    r2: float | None = None
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (HU, mg HA/cm3)
    scanner: str = ""
    protocol: str = ""

    @classmethod
    def fit(cls, hu: Sequence[float], density: Sequence[float], scanner: str = "", protocol: str = "") -> "Calibration":
        """Least-squares line through (HU, density) pairs (at least two distinct HU values)."""
        hu = np.asarray(hu, dtype=float).ravel()
        density = np.asarray(density, dtype=float).ravel()
        if hu.size != density.size:
            raise BoneKitError(f"Calibration needs as many HU values ({hu.size}) as densities ({density.size}).")
        if hu.size < 2 or np.ptp(hu) == 0:
            raise BoneKitError("Calibration needs at least two inserts with different HU values.")
        if not (np.all(np.isfinite(hu)) and np.all(np.isfinite(density))):
            raise BoneKitError("Calibration values must be finite numbers.")
        slope, intercept = np.polyfit(hu, density, 1)
        if slope <= 0:
            raise BoneKitError(f"The fitted calibration slope is {slope:.4g} mg/cm3 per HU (must be positive): "
                               f"check that each HU value is paired with its insert's density.")
        residual = density - (slope * hu + intercept)
        total = np.sum((density - density.mean()) ** 2)
        r2 = float(1 - np.sum(residual ** 2) / total) if total > 0 else 1.0
        return cls(float(slope), float(intercept), r2, [(float(a), float(b)) for a, b in zip(hu, density)],
                   scanner, protocol)

    def bmd(self, hu):
        """mg HA/cm3 from HU (array or scalar)."""
        return self.slope * np.asarray(hu, dtype=float) + self.intercept

    def to_dict(self) -> dict:
        return {"kind": "BoneKit HU->BMD calibration", "scanner": self.scanner, "protocol": self.protocol,
                "equation": "BMD = slope * HU + intercept", "slope_mg_cm3_per_HU": self.slope,
                "intercept_mg_cm3": self.intercept, "r2": self.r2,
                "pairs": [{"HU": h, "density_mg_cm3": d} for h, d in self.pairs]}

    def save(self, path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a calibration file: fitted values, or only pairs (then fitted here)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BoneKitError(f"Cannot read the calibration file {path}: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data, source: str = "the calibration") -> "Calibration":
        """A calibration from its :meth:`to_dict` form: fitted values, or only pairs (then fitted here)."""
        if not isinstance(data, dict):
            raise BoneKitError(f"{source} is not a BoneKit calibration.")
        pairs = [(float(p["HU"]), float(p["density_mg_cm3"])) for p in data.get("pairs", [])]
        if "slope_mg_cm3_per_HU" in data and "intercept_mg_cm3" in data:
            return cls(float(data["slope_mg_cm3_per_HU"]), float(data["intercept_mg_cm3"]), data.get("r2"), pairs,
                       data.get("scanner", ""), data.get("protocol", ""))
        if pairs:
            return cls.fit(*zip(*pairs), scanner=data.get("scanner", ""), protocol=data.get("protocol", ""))
        raise BoneKitError(f"{source} has neither a fitted equation nor calibration pairs.")


def parse_pairs(text: str) -> tuple[list[float], list[float]]:
    """'HU:density,HU:density,...' -> (HU list, density list)."""
    hu, den = [], []
    for item in text.split(","):
        try:
            a, b = item.split(":")
            hu.append(float(a))
            den.append(float(b))
        except ValueError:
            raise BoneKitError(f"Calibration pair '{item}' is not HU:density (e.g. 250.3:200).") from None
    return hu, den


def rod_mean_hu(ct: Volume, centre_lps: Sequence[float], diameter_mm: float, fraction: float = 0.6) -> float:
    """Mean HU in a calibration rod along the image's slice axis: a disc of ``fraction`` of its
    diameter (away from the partial-volume rim) around ``centre_lps`` (x, y) in every slice."""
    k = np.arange(ct.size[2])
    # rod axis assumed along k: project the (x, y) centre at every slice
    ii, jj = np.meshgrid(np.arange(ct.size[0]), np.arange(ct.size[1]), indexing="xy")
    plane = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1)
    xyz = plane @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    r2 = (xyz[:, 0] - centre_lps[0]) ** 2 + (xyz[:, 1] - centre_lps[1]) ** 2
    disc = (r2 <= (fraction * diameter_mm / 2) ** 2).reshape(ii.shape)
    if not disc.any():
        raise BoneKitError(f"No voxel lies inside the rod at {list(centre_lps)} (diameter {diameter_mm} mm).")
    return float(ct.array[k][:, disc].mean())

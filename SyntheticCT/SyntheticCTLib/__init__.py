"""Qt-free logic of the SyntheticCT module."""

from .Logic import BONE_OPACITY_HU, DEVICES, RadiographSummary, SyntheticCTLibLogic, SyntheticCTOutputs

__all__ = ["SyntheticCTLibLogic", "SyntheticCTOutputs", "RadiographSummary", "DEVICES", "BONE_OPACITY_HU"]

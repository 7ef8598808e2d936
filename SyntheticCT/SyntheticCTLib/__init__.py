"""Qt-free logic of the SyntheticCT module."""

from .Logic import BONE_OPACITY_HU, DEVICES, FROM_FILE, SyntheticCTLibLogic, SyntheticCTOutputs

__all__ = ["SyntheticCTLibLogic", "SyntheticCTOutputs", "DEVICES", "FROM_FILE", "BONE_OPACITY_HU"]

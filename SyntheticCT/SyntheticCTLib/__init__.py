"""Qt-free logic of the SyntheticCT module."""

from .Logic import RadiographSummary, SyntheticCTLibLogic

__all__ = ["SyntheticCTLibLogic", "RadiographSummary"]

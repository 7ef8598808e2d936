"""Qt-free logic of the FocalDefect module."""

from .Logic import FocalDefectLibLogic, FocalDefectOutputs, FocalRegion, ProcessingCancelled
from .Samples import FocalPhantom, focalVoidPhantom

__all__ = ["FocalDefectLibLogic", "FocalDefectOutputs", "FocalRegion", "ProcessingCancelled", "FocalPhantom",
           "focalVoidPhantom"]

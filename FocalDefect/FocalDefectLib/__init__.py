"""Qt-free logic of the FocalDefect module."""

from .Logic import FocalDefectLibLogic

__all__ = ["FocalDefectLibLogic"]

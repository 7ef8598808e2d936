"""Qt-free logic of the BoneSR module."""

from .Logic import BoneSRLibLogic

__all__ = ["BoneSRLibLogic"]

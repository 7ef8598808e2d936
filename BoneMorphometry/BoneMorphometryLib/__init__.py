"""Qt-free logic of the BoneMorphometry module."""

from .Logic import BoneMorphometryLibLogic, BoneMorphometryOutputs
from .Trabecular import TrabecularMorphometryOutputs

__all__ = ["BoneMorphometryLibLogic", "BoneMorphometryOutputs", "TrabecularMorphometryOutputs"]

"""Qt-free logic of the BoneMorphometry module."""

from .Logic import BoneMorphometryLibLogic, BoneMorphometryOutputs

__all__ = ["BoneMorphometryLibLogic", "BoneMorphometryOutputs"]

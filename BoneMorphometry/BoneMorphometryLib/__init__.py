"""Qt-free logic of the BoneMorphometry module."""

from .Logic import BoneMorphometryLibLogic, VertebraSummary

__all__ = ["BoneMorphometryLibLogic", "VertebraSummary"]

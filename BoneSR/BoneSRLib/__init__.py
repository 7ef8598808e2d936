"""Qt-free logic of the BoneSR module."""

from .Logic import DEVICES, FROM_FILE, PRECISIONS, BoneSRLibLogic, BoneSROutputs, ProcessingCancelled

__all__ = ["BoneSRLibLogic", "BoneSROutputs", "ProcessingCancelled", "DEVICES", "PRECISIONS", "FROM_FILE"]

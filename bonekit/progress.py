"""Progress reporting shared by the core, the command line and the Slicer modules."""

from __future__ import annotations

from typing import Callable

#: ``callback(fraction, message)``: fraction of the work done in [0, 1] and what is happening.
ProgressCallback = Callable[[float, str], None]

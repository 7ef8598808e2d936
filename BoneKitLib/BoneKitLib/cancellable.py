"""Apply / Cancel for module widgets whose logic can be cancelled (FocalDefect, BoneSR).

The panel's .ui needs a ``cancelButton`` besides ``applyButton`` and ``progressBar``. No qt
imports: the Slicer application is reached at call time only.
"""

from __future__ import annotations

import contextlib

import slicer

from .gui import ParameterNodeWidgetMixin
from .inputs import ProcessingCancelled

__all__ = ["CancellableRunMixin"]


class CancellableRunMixin(ParameterNodeWidgetMixin):
    """:class:`ParameterNodeWidgetMixin` plus a Cancel button that stops the logic's run."""

    def setupModuleUi(self, logic) -> None:
        super().setupModuleUi(logic)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)

    def onCancelButton(self) -> None:
        """Ask the logic to stop (the click is handled while the progress bar updates)."""
        self.logic.cancel()
        self.ui.cancelButton.enabled = False

    @contextlib.contextmanager
    def cancellableRun(self, errorMessage: str, cancelledMessage: str):
        """Around one run of the logic: Apply off and Cancel on while it runs, errors in a dialog
        (``errorMessage``), and the logic's ``ProcessingCancelled`` ending the block quietly with
        ``cancelledMessage`` in the progress bar (the rest of the block is skipped)."""
        self._running = True
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.enabled = True
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                try:
                    yield
                except ProcessingCancelled:
                    self.ui.progressBar.setFormat(cancelledMessage)
        finally:
            self._running = False
            self.ui.cancelButton.enabled = False
            self.updateApplyButton()

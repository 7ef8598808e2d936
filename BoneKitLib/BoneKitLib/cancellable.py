"""Apply / Cancel for module widgets whose logic can be cancelled (FocalDefect, BoneSR).

The panel's .ui needs a ``cancelButton`` besides ``applyButton`` and ``progressBar``. No qt
imports: the Slicer application is reached at call time only.
"""

from __future__ import annotations

import contextlib

import slicer

from .gui import ParameterNodeWidgetMixin
from .inputs import ProcessingCancelled

__all__ = ["CancellableRunMixin", "ModelRunMixin"]


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


class ModelRunMixin(CancellableRunMixin):
    """:class:`CancellableRunMixin` for a network module: the model is a catalogue model or a file.

    The parameter node has ``model`` (a catalogue name, or :data:`~BoneKitLib.coreprocess.FROM_FILE`) and
    ``modelFile``; the .ui has ``modelFileLabel``, ``modelFilePathLineEdit`` (shown for "From file...") and
    ``modelDescriptionLabel``. The logic is a :class:`~BoneKitLib.coreprocess.CoreProcessLogic`.
    """

    #: Shown under the model list when "From file..." is chosen (the widget sets it, translated).
    modelFileHint = ""

    def chosenModel(self):
        """The model to run: the catalogue name, or the file when "From file..." is chosen (None if unset)."""
        from .coreprocess import FROM_FILE

        parameters = self._parameterNode
        if parameters is None:
            return None
        if parameters.model != FROM_FILE:
            return parameters.model
        path = str(parameters.modelFile or "").strip()
        return path if path not in ("", ".") else None

    def updateApplyButton(self, caller=None, event=None) -> None:
        """Apply also needs a model; the model file row and the model's description follow the choice."""
        from .coreprocess import FROM_FILE

        super().updateApplyButton(caller, event)
        if self._parameterNode is not None:
            fromFile = self._parameterNode.model == FROM_FILE
            self.ui.modelFileLabel.visible = self.ui.modelFilePathLineEdit.visible = fromFile
            entry = next((e for e in self.logic.models() if e.get("name") == self._parameterNode.model), None)
            self.ui.modelDescriptionLabel.text = (
                f"{self.logic.modelLabel(entry)}. {entry.get('description', '')}".strip() if entry
                else self.modelFileHint if fromFile else "")
        if self.chosenModel() is None:
            self.ui.applyButton.enabled = False

"""What the four module widgets share: Slicer's parameter-node lifecycle, written once.

Nothing here imports qt, ctk or ``slicer.ScriptedLoadableModule``: the Slicer
application is only reached at call time, so the package still imports under
pip slicer-core. The widgets themselves (``<M>.py``) keep their parameters, the
translated texts and the Apply action.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Iterable

import slicer
import vtk
from slicer.util import VTKObservationMixin

__all__ = ["ParameterNodeWidgetMixin", "reloadPackages"]


def reloadPackages(prefixes: Iterable[str]) -> list[str]:
    """Re-import every loaded module named ``prefix`` or ``prefix.*`` from its source.

    The modules are dropped from ``sys.modules`` and each prefix is imported
    afresh, in the order given (core first), so that imports run in dependency
    order. ``importlib.reload`` of each module in turn would not: a module
    reloaded before one it imports keeps the old classes, and ``isinstance``
    checks between old and new objects then fail. Returns the dropped names.
    """
    prefixes = list(prefixes)
    dropped = [name for name in sys.modules if any(name == p or name.startswith(p + ".") for p in prefixes)]
    for name in dropped:
        del sys.modules[name]
    for prefix in prefixes:
        importlib.import_module(prefix)
    return dropped


class ParameterNodeWidgetMixin(VTKObservationMixin):
    """Parameter-node binding, scene-close handling, Apply enabling, progress and reload.

    Put it before ``ScriptedLoadableModuleWidget`` in the bases; ``setup()`` calls
    :meth:`setupModuleUi` with the module's logic, whose ``getParameterNode()`` returns
    the module's parameter node wrapper, and the module defines ``onApplyButton``.

    Class attributes:

    ``requiredParameters``
        Parameter names that must be set before Apply is enabled.
    ``defaultNodeClasses``
        ``{parameter: MRML class}`` filled with the scene's first node of that class
        when the module is entered with the parameter unset.
    """

    requiredParameters: tuple[str, ...] = ()
    defaultNodeClasses: dict[str, str] = {}

    def __init__(self) -> None:
        VTKObservationMixin.__init__(self)
        self._running = False
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    # ------------------------------------------------------------------ lifecycle
    def setupModuleUi(self, logic) -> None:
        """Load ``Resources/UI/<module>.ui`` into the panel and bind it to the scene and the parameter node.

        The .ui needs an ``applyButton`` (connected to ``self.onApplyButton``) and a ``progressBar``.
        """
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.progressBar.visible = False
        # Drop the parameter node while the scene closes, take the new one after.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the core, the shared library and this module's Lib, then the module itself."""
        logging.info("Reloading %s", ", ".join(reloadPackages(("bonekit", "BoneKitLib", f"{self.moduleName}Lib"))))
        super().onReload()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        """Bind the module's parameter node, filling unset inputs with the scene's first candidates."""
        self.setParameterNode(self.logic.getParameterNode())
        for parameter, className in self.defaultNodeClasses.items():
            if getattr(self._parameterNode, parameter) is None:
                node = slicer.mrmlScene.GetFirstNodeByClass(className)
                if node is not None:
                    setattr(self._parameterNode, parameter, node)

    def setParameterNode(self, parameterNode) -> None:
        """Disconnect the GUI from the current parameter node and connect it to ``parameterNode``."""
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
        self.updateApplyButton()

    def missingParameters(self) -> list[str]:
        """Required parameters that are not set yet."""
        if self._parameterNode is None:
            return list(self.requiredParameters)
        return [p for p in self.requiredParameters if getattr(self._parameterNode, p) is None]

    def updateApplyButton(self, caller=None, event=None) -> None:
        """Enable Apply only when every required parameter is set and no run is in progress
        (:class:`BoneKitLib.cancellable.CancellableRunMixin`)."""
        self.ui.applyButton.enabled = not self.missingParameters() and not self._running

    # ------------------------------------------------------------------ progress
    def reportProgress(self, fraction: float, message: str) -> None:
        """Progress callback for the logic: update the progress bar and keep the GUI alive."""
        self.ui.progressBar.value = round(100 * max(0.0, min(1.0, fraction)))
        self.ui.progressBar.setFormat(f"{message} (%p%)")
        self.ui.progressBar.visible = True
        slicer.app.processEvents()

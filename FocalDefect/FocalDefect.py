"""FocalDefect: maps of focal bone loss in the vertebral body from clinical CT.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`FocalDefectLib.FocalDefectLibLogic` on top of BoneKitLib and the core
package :mod:`bonekit`.
"""

import numpy as np
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from BoneKitLib import CTSummary, ParameterNodeWidgetMixin, resultsFromTable, showTable, smallSpinePhantom
from FocalDefectLib import FocalDefectLibLogic


class FocalDefect(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FocalDefect")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Maps focal bone mineral content (BMC) loss inside the vertebral body: star lines through "
            "each voxel of a 0.3 mm isotropic CT find trabecular voids, whose width and density deficit "
            "give focal BMD and BMC loss, shown as a colour overlay on the CT. Method: Li et al. 2022, "
            "JOR Spine. This version checks the input CT, summarises it and displays loss maps.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Li et al., focal bone loss mapping of the vertebral "
            "body from clinical CT, JOR Spine 2022.")


@parameterNodeWrapper
class FocalDefectParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU (thin slices).
    outputTable - input summary (and, later, mean focal losses per region).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode


class FocalDefectWidget(ParameterNodeWidgetMixin, ScriptedLoadableModuleWidget):
    """Module panel: input CT, output table, Apply."""

    requiredParameters = ("inputVolume",)
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode"}

    def __init__(self, parent=None) -> None:
        ParameterNodeWidgetMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/FocalDefect.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(FocalDefectLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog."""
        with slicer.util.tryWithErrorDisplay(_("Failed to process the CT."), waitCursor=True):
            table = self.logic.process(self._parameterNode.inputVolume, self._parameterNode.outputTable,
                                       progressCallback=self.reportProgress)
            self._parameterNode.outputTable = table
            showTable(table)


class FocalDefectLogic(ScriptedLoadableModuleLogic, FocalDefectLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`FocalDefectLib.FocalDefectLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        table = FocalDefectLogic().process(slicer.util.getNode("CT"))
    """

    def getParameterNode(self) -> FocalDefectParameterNode:
        return FocalDefectParameterNode(super().getParameterNode())


class FocalDefectTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic CT (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_FocalDefectSummary()

    def test_FocalDefectSummary(self) -> None:
        self.delayDisplay("Starting the test")
        ct = smallSpinePhantom().ct
        ctNode = slicer.util.addVolumeFromArray(ct.array, ct.ijk_to_ras, "CT")
        logic = FocalDefectLogic()
        [summary] = resultsFromTable(logic.process(ctNode), CTSummary)
        self.assertEqual((summary.size_i, summary.size_j, summary.size_k), ct.size)
        lossMap = np.linspace(0.0, 1.0, ct.array.size, dtype=np.float32).reshape(ct.shape)
        mapNode = slicer.util.addVolumeFromArray(lossMap, ct.ijk_to_ras, "Focal BMC loss")
        displayNode = logic.showLossMap(mapNode, ctNode)
        self.assertEqual((displayNode.GetWindowLevelMin(), displayNode.GetWindowLevelMax()), logic.lossMapRange)
        self.delayDisplay("Test passed")

"""BoneSR: micro-CT-like super-resolution of clinical CT of the spine.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`BoneSRLib.BoneSRLibLogic` on top of BoneKitLib and the core
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
from BoneSRLib import BoneSRLibLogic


class BoneSR(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneSR")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Turns a clinical CT of the spine into a micro-CT-like volume, so that trabecular "
            "morphometry can be measured on it. The generator follows Jin et al. 2021, "
            "Tomography 7(4): pix2pixHD trained on paired clinical CT and micro-CT slices. "
            "This version checks the input CT and summarises it; the generator comes with its trained model.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Jin D. et al., Deep-learning-based super-resolution "
            "of clinical CT for trabecular bone microstructure, Tomography 2021.")


@parameterNodeWrapper
class BoneSRParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU.
    outputTable - input summary (and, later, super-resolution results).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode


class BoneSRWidget(ParameterNodeWidgetMixin, ScriptedLoadableModuleWidget):
    """Module panel: input CT, output table, Apply."""

    requiredParameters = ("inputVolume",)
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode"}

    def __init__(self, parent=None) -> None:
        ParameterNodeWidgetMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/BoneSR.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(BoneSRLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog."""
        with slicer.util.tryWithErrorDisplay(_("Failed to process the CT."), waitCursor=True):
            table = self.logic.process(self._parameterNode.inputVolume, self._parameterNode.outputTable,
                                       progressCallback=self.reportProgress)
            self._parameterNode.outputTable = table
            showTable(table)


class BoneSRLogic(ScriptedLoadableModuleLogic, BoneSRLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`BoneSRLib.BoneSRLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        table = BoneSRLogic().process(slicer.util.getNode("CT"))
    """

    def getParameterNode(self) -> BoneSRParameterNode:
        return BoneSRParameterNode(super().getParameterNode())


class BoneSRTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic CT (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BoneSRSummary()

    def test_BoneSRSummary(self) -> None:
        self.delayDisplay("Starting the test")
        ct = smallSpinePhantom().ct
        ctNode = slicer.util.addVolumeFromArray(ct.array, ct.ijk_to_ras, "CT")
        table = BoneSRLogic().process(ctNode)
        [summary] = resultsFromTable(table, CTSummary)
        self.assertEqual((summary.size_i, summary.size_j, summary.size_k), ct.size)
        self.assertAlmostEqual(summary.mean, float(np.mean(ct.array)), places=3)
        self.delayDisplay("Test passed")

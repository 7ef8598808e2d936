"""SyntheticCT: a synthetic spine CT from two radiographs (AP and lateral).

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`SyntheticCTLib.SyntheticCTLibLogic` on top of BoneKitLib and the core
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

from BoneKitLib import ParameterNodeWidgetMixin, resultsFromTable, showTable
from SyntheticCTLib import RadiographSummary, SyntheticCTLibLogic


class SyntheticCT(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SyntheticCT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Reconstructs a synthetic CT of the lumbar spine from an anteroposterior and a lateral "
            "radiograph (or digitally reconstructed radiographs), with the 2D-to-3D generative network "
            "of Zanier et al. 2024 (TomoRay, X2CT-GAN style). This version checks the two views and "
            "summarises them; the network comes with its trained model.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Zanier et al., TomoRay: synthetic CT of the spine "
            "from biplanar radiographs, 2024 (after X2CT-GAN, Ying et al. 2019).")


@parameterNodeWrapper
class SyntheticCTParameterNode:
    """Parameters of the module, saved with the scene.

    apRadiograph - anteroposterior view, a single-slice volume.
    lateralRadiograph - lateral view, same pixel grid.
    outputTable - one row per view.
    """

    apRadiograph: vtkMRMLScalarVolumeNode
    lateralRadiograph: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode


class SyntheticCTWidget(ParameterNodeWidgetMixin, ScriptedLoadableModuleWidget):
    """Module panel: the two radiographs, output table, Apply."""

    requiredParameters = ("apRadiograph", "lateralRadiograph")

    def __init__(self, parent=None) -> None:
        ParameterNodeWidgetMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/SyntheticCT.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(SyntheticCTLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog."""
        with slicer.util.tryWithErrorDisplay(_("Failed to process the radiographs."), waitCursor=True):
            parameters = self._parameterNode
            table = self.logic.process(parameters.apRadiograph, parameters.lateralRadiograph,
                                       parameters.outputTable, progressCallback=self.reportProgress)
            self._parameterNode.outputTable = table
            showTable(table)


class SyntheticCTLogic(ScriptedLoadableModuleLogic, SyntheticCTLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`SyntheticCTLib.SyntheticCTLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        table = SyntheticCTLogic().process(slicer.util.getNode("AP"), slicer.util.getNode("Lateral"))
    """

    def getParameterNode(self) -> SyntheticCTParameterNode:
        return SyntheticCTParameterNode(super().getParameterNode())


class SyntheticCTTest(ScriptedLoadableModuleTest):
    """Self-test on synthetic radiographs (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SyntheticCTRadiographSummary()

    def test_SyntheticCTRadiographSummary(self) -> None:
        self.delayDisplay("Starting the test")
        image = np.outer(np.hanning(48), np.hanning(40)).astype(np.float32)[np.newaxis]
        apNode = slicer.util.addVolumeFromArray(image, np.diag([0.5, 0.5, 1.0, 1.0]), "AP")
        lateralNode = slicer.util.addVolumeFromArray(2 * image, np.diag([0.5, 0.5, 1.0, 1.0]), "Lateral")
        ap, lateral = resultsFromTable(SyntheticCTLogic().process(apNode, lateralNode), RadiographSummary)
        self.assertEqual((ap.height, ap.width), (48, 40))
        self.assertAlmostEqual(lateral.maximum, 2 * ap.maximum, places=5)
        self.delayDisplay("Test passed")

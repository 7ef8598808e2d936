"""BoneMorphometry: vertebral bone quality from clinical CT, vertebra by vertebra.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`BoneMorphometryLib.BoneMorphometryLibLogic` on top of BoneKitLib and the core
package :mod:`bonekit`.
"""

import numpy as np
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from BoneKitLib import (ParameterNodeWidgetMixin, labelmapToSegmentation, resultsFromTable, showTable,
                        smallSpinePhantom)
from BoneMorphometryLib import BoneMorphometryLibLogic, VertebraSummary


class BoneMorphometry(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneMorphometry")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Measures each segmented vertebra of a spine CT: trabecular BMD from an asynchronous "
            "calibration and a ROI eroded 6 mm inside the vertebral body (Li et al. 2022, JOR Spine), "
            "trabecular morphometry (BV/TV, Tb.Th, Tb.Sp, Tb.N) in a cylindrical VOI (Jin et al. 2021, "
            "Tomography) and the Genant fracture grade, with vertebrae labelled as in VerSe "
            "(Löffler et al. 2020). This version checks the CT and the vertebra segmentation and "
            "tabulates each vertebra's size and mean HU.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Methods: Jin et al., Tomography 2021; Löffler et al., "
            "VerSe, Radiology: Artificial Intelligence 2020; Li et al., JOR Spine 2022.")


@parameterNodeWrapper
class BoneMorphometryParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU.
    vertebraSegmentation - one segment per vertebra (VerSe label values in the segment tags).
    outputTable - one row per vertebra.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    vertebraSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode


class BoneMorphometryWidget(ParameterNodeWidgetMixin, ScriptedLoadableModuleWidget):
    """Module panel: input CT and vertebra segmentation, output table, Apply."""

    requiredParameters = ("inputVolume", "vertebraSegmentation")
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode",
                          "vertebraSegmentation": "vtkMRMLSegmentationNode"}

    def __init__(self, parent=None) -> None:
        ParameterNodeWidgetMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/BoneMorphometry.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(BoneMorphometryLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog."""
        with slicer.util.tryWithErrorDisplay(_("Failed to measure the vertebrae."), waitCursor=True):
            parameters = self._parameterNode
            table = self.logic.process(parameters.inputVolume, parameters.vertebraSegmentation,
                                       parameters.outputTable, progressCallback=self.reportProgress)
            self._parameterNode.outputTable = table
            showTable(table)


class BoneMorphometryLogic(ScriptedLoadableModuleLogic, BoneMorphometryLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`BoneMorphometryLib.BoneMorphometryLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        table = BoneMorphometryLogic().process(slicer.util.getNode("CT"), slicer.util.getNode("Vertebrae"))
    """

    def getParameterNode(self) -> BoneMorphometryParameterNode:
        return BoneMorphometryParameterNode(super().getParameterNode())


class BoneMorphometryTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic CT (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BoneMorphometryVertebraSummary()

    def test_BoneMorphometryVertebraSummary(self) -> None:
        from bonekit.phantom import VERSE_NAMES

        self.delayDisplay("Starting the test")
        phantom = smallSpinePhantom()
        ct, labels = phantom.ct, phantom.labels
        ctNode = slicer.util.addVolumeFromArray(ct.array, ct.ijk_to_ras, "CT")
        segmentationNode = labelmapToSegmentation(labels, slicer.mrmlScene, names=VERSE_NAMES,
                                                  referenceNode=ctNode, name="Vertebrae")
        rows = resultsFromTable(BoneMorphometryLogic().process(ctNode, segmentationNode), VertebraSummary)
        present = [int(v) for v in np.unique(labels.array) if v]
        self.assertEqual([(r.label, r.name) for r in rows], [(v, VERSE_NAMES[v]) for v in present])
        for row in rows:
            self.assertEqual(row.voxels, int(np.count_nonzero(labels.array == row.label)))
        self.delayDisplay("Test passed")

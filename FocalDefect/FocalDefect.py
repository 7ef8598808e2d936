"""FocalDefect: maps of focal bone loss in the vertebral body from clinical CT.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`FocalDefectLib.FocalDefectLibLogic` on top of BoneKitLib and the core
package :mod:`bonekit`.
"""

import pathlib
from typing import Union

import numpy as np
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from BoneKitLib import CancellableRunMixin, ijkToRASMatrix, labelmapToSegmentation, resultsFromTable, showTable
from FocalDefectLib import FocalDefectLibLogic, FocalRegion, focalVoidPhantom


class FocalDefect(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FocalDefect")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Maps focal bone loss inside the vertebral body (Li et al. 2022, JOR Spine). Choose a thin-slice CT "
            "in HU and its regions of interest: a segmentation (BoneMorphometry's 'Vertebra regions', whose "
            "trabecular 'L1 ROI' ... segments are used, or any segments) or a label map (each non-zero label). "
            "For each region the CT is resampled to 0.3 mm, star lines every 12 degrees through each voxel find "
            "the trabecular voids, and three maps are made: IncptWidth (void width, mm), focal BMD loss "
            "((1200 - BMD) / 1200 over the void) and focal BMC loss (their product, mm). With a BoneKit "
            "calibration file the profiles are in mg HA/cm3, otherwise in HU. Results: three map volumes per "
            "region ('<CT> L1 ROI FocalBMCLoss' ...), shown over the CT with fixed colour ranges and a colour "
            "legend (voxels in no void transparent), and a table with one row per region: the ROI means and SDs "
            "of the three maps, with units. Cancel stops a run without writing anything.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Li et al., focal bone loss mapping of the vertebral "
            "body from clinical CT, JOR Spine 2022.")


@parameterNodeWrapper
class FocalDefectParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU (thin slices).
    roiNode - the regions: a segmentation (one run per segment, BoneMorphometry's ROIs by default) or a
        label map (one run per label).
    calibrationFile - BoneKit HU->BMD calibration (.json); none: HU.
    outputTable - one row per region: mean focal losses with units.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    roiNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    calibrationFile: pathlib.Path
    outputTable: vtkMRMLTableNode


class FocalDefectWidget(CancellableRunMixin, ScriptedLoadableModuleWidget):
    """Module panel: CT, ROI, calibration, output table; Apply, Cancel and a progress bar."""

    requiredParameters = ("inputVolume", "roiNode")
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode", "roiNode": "vtkMRMLSegmentationNode"}

    def __init__(self, parent=None) -> None:
        CancellableRunMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/FocalDefect.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(FocalDefectLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog, a cancel in the progress bar."""
        parameters = self._parameterNode
        with self.cancellableRun(_("Failed to map focal bone loss."), _("Cancelled: nothing was written")):
            outputs = self.logic.process(parameters.inputVolume, parameters.roiNode,
                                         calibration=parameters.calibrationFile,
                                         outputTableNode=parameters.outputTable,
                                         progressCallback=self.reportProgress)
            parameters.outputTable = outputs.table
            showTable(outputs.table)


class FocalDefectLogic(ScriptedLoadableModuleLogic, FocalDefectLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`FocalDefectLib.FocalDefectLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        outputs = FocalDefectLogic().process(getNode("CT"), getNode("Vertebra regions"),
                                             calibration="/path/to/calibration.json")
        outputs.table, outputs.maps["L1 ROI"]["FocalBMCLoss"], outputs.results["L1 ROI"].FocalBMCLoss
    """

    def getParameterNode(self) -> FocalDefectParameterNode:
        return FocalDefectParameterNode(super().getParameterNode())


class FocalDefectTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic CT with known voids (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_FocalDefectMaps()

    def test_FocalDefectMaps(self) -> None:
        from bonekit.focal import FocalResult

        self.delayDisplay("Starting the test")
        phantom = focalVoidPhantom()
        ctNode = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.ijk_to_ras, "CT")
        rois = labelmapToSegmentation(phantom.labels, slicer.mrmlScene, names=phantom.names, referenceNode=ctNode,
                                      name="ROIs")
        outputs = FocalDefectLogic().process(ctNode, rois)
        self.delayDisplay("Mapped")

        self.assertEqual([r.segment for r in resultsFromTable(outputs.table, FocalRegion)], ["L1", "L2"])
        self.assertEqual(resultsFromTable(outputs.table, FocalResult), list(outputs.results.values()))
        self.assertEqual(outputs.table.GetColumnUnitLabel("FocalBMCLoss"), "mm")
        for void in phantom.voids:  # IncptWidth at the centre of a void is about its diameter
            mapNode = outputs.maps[phantom.names[void["label"]]]["IncptWidth"]
            rasToIJK = np.linalg.inv(ijkToRASMatrix(mapNode))
            ras = np.asarray(void["centre_lps_mm"]) * [-1.0, -1.0, 1.0]
            i, j, k = np.rint(rasToIJK @ [*ras, 1.0])[:3].astype(int)
            width = slicer.util.arrayFromVolume(mapNode)[k, j, i]
            self.assertLess(abs(width - void["diameter_mm"]), 0.3)
        displayNode = outputs.maps["L1"]["FocalBMDLoss"].GetDisplayNode()
        self.assertEqual((displayNode.GetWindowLevelMin(), displayNode.GetWindowLevelMax()), (0.0, 1.0))
        self.delayDisplay("Test passed")


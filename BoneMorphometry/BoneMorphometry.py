"""BoneMorphometry: vertebral bone quality from clinical CT, vertebra by vertebra.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`BoneMorphometryLib.BoneMorphometryLibLogic` on top of BoneKitLib and the core
package :mod:`bonekit`.
"""

import pathlib

import numpy as np
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from BoneKitLib import (ParameterNodeWidgetMixin, labelmapToSegmentation, resultsFromTable, segmentationToLabelmap,
                        showTable, smallSpinePhantom)
from BoneMorphometryLib import BoneMorphometryLibLogic


class BoneMorphometry(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneMorphometry")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Measures each vertebra of a spine CT. Place one point inside each vertebral body and name it "
            "after its vertebra (L1, L2 ..., T12): GrowCut ('Grow from seeds') segments the vertebrae, "
            "labelled as in VerSe (Löffler et al. 2020). Each vertebral body is separated from the posterior "
            "elements and eroded 6 mm into a trabecular ROI for HU and, with an asynchronous calibration file, "
            "BMD (Li et al. 2022, JOR Spine); a cylindrical VOI 15 mm wide and 10 mm high is placed 5 mm behind "
            "the anterior cortex (Jin et al. 2021, Tomography); body heights give the Genant grade. Results: a "
            "table (one row per vertebra, units in the column headers), the body, ROI and VOI segments, and "
            "one 'VOI centres' point per vertebra: move a point and click Apply to move that VOI. Optionally, "
            "trabecular morphometry in each VOI (BV/TV, Tb.Th, Tb.Sp, Tb.N, BS/BV, Conn.D as BoneJ defines them) "
            "adds columns to the table and shows a Tb.Th map over the CT; on clinical CT these are apparent "
            "values, comparable between scans of one protocol only.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Methods: Jin et al., Tomography 2021; Löffler et al., "
            "VerSe, Radiology: Artificial Intelligence 2020; Li et al., JOR Spine 2022. GrowCut: "
            "Zhu et al. 2014 (Slicer's vtkImageGrowCutSegment).")


@parameterNodeWrapper
class BoneMorphometryParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU.
    vertebraPoints - one point per vertebral body, labelled L1, T12 ...
    vertebraSegmentation - one segment per vertebra: segmented from the points when unset or empty,
        analysed as it is otherwise (so edits are kept).
    calibrationFile - BoneKit HU->BMD calibration (.json); none: HU only.
    outputRegions - "L1 body", "L1 ROI", "L1 VOI" ... segments.
    outputTable - one row per vertebra.
    voiPoints - one point per vertebra at its VOI centre; a moved point moves its VOI.
    trabecularMorphometry - also measure BV/TV, Tb.Th ... in each VOI (apparent values on clinical CT).
    morphometryThreshold - "default" (ImageJ IsoData), "isodata", "ij_isodata", "otsu" or a number in HU.
    morphometryBlur - Gaussian sigma in mm before thresholding (0: none).
    outputThicknessMap - Tb.Th map (mm, 0 outside bone), shown over the CT.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    vertebraPoints: vtkMRMLMarkupsFiducialNode
    vertebraSegmentation: vtkMRMLSegmentationNode
    calibrationFile: pathlib.Path
    outputRegions: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode
    voiPoints: vtkMRMLMarkupsFiducialNode
    trabecularMorphometry: bool = False
    morphometryThreshold: str = "default"
    morphometryBlur: float = 0.0
    outputThicknessMap: vtkMRMLScalarVolumeNode


class BoneMorphometryWidget(ParameterNodeWidgetMixin, ScriptedLoadableModuleWidget):
    """Module panel: CT, vertebra points or segmentation, calibration; Segment and Apply."""

    requiredParameters = ("inputVolume",)
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode"}

    def __init__(self, parent=None) -> None:
        ParameterNodeWidgetMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/BoneMorphometry.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(BoneMorphometryLogic())
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        placeWidget = self.ui.vertebraPointsPlaceWidget
        placeWidget.setMRMLScene(slicer.mrmlScene)
        placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.vertebraPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", placeWidget.setCurrentNode)
        placeWidget.setCurrentNode(self.ui.vertebraPointsSelector.currentNode())

    def missingParameters(self) -> list[str]:
        """The CT, and either vertebra points or a vertebra segmentation."""
        missing = super().missingParameters()
        parameters = self._parameterNode
        if parameters is not None and parameters.vertebraPoints is None and parameters.vertebraSegmentation is None:
            missing.append("vertebraPoints")
        return missing

    def updateApplyButton(self, caller=None, event=None) -> None:
        """Apply needs the CT and points or a segmentation; Segment needs the CT and points."""
        super().updateApplyButton(caller, event)
        parameters = self._parameterNode
        self.ui.segmentButton.enabled = (parameters is not None and parameters.inputVolume is not None
                                         and parameters.vertebraPoints is not None)

    def calibrationPath(self):
        path = self._parameterNode.calibrationFile
        return None if path is None or str(path) in ("", ".") else path

    def onSegmentButton(self) -> None:
        """Segment (again) from the points into the selected segmentation, or a new one."""
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the vertebrae."), waitCursor=True):
            parameters = self._parameterNode
            node = self.logic.segment(parameters.inputVolume, parameters.vertebraPoints,
                                      parameters.vertebraSegmentation, progressCallback=self.reportProgress)
            parameters.vertebraSegmentation = node

    def onApplyButton(self) -> None:
        """Segment if needed, then measure; errors are shown in a dialog."""
        with slicer.util.tryWithErrorDisplay(_("Failed to measure the vertebrae."), waitCursor=True):
            parameters = self._parameterNode
            outputs = self.logic.process(parameters.inputVolume, parameters.vertebraSegmentation,
                                         parameters.vertebraPoints, calibrationPath=self.calibrationPath(),
                                         voiPointsNode=parameters.voiPoints, outputTableNode=parameters.outputTable,
                                         outputRegionsNode=parameters.outputRegions,
                                         trabecularMorphometry=parameters.trabecularMorphometry,
                                         morphometryThreshold=parameters.morphometryThreshold,
                                         morphometryBlurMm=parameters.morphometryBlur,
                                         outputThicknessMapNode=parameters.outputThicknessMap,
                                         progressCallback=self.reportProgress)
            parameters.vertebraSegmentation = outputs.vertebrae
            parameters.outputRegions = outputs.regions
            parameters.outputTable = outputs.table
            parameters.voiPoints = outputs.voiPoints
            if outputs.thicknessMap is not None:
                parameters.outputThicknessMap = outputs.thicknessMap
            showTable(outputs.table)


class BoneMorphometryLogic(ScriptedLoadableModuleLogic, BoneMorphometryLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`BoneMorphometryLib.BoneMorphometryLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        outputs = BoneMorphometryLogic().process(getNode("CT"), pointsNode=getNode("Vertebra points"))
        outputs.table, outputs.vertebrae, outputs.regions, outputs.voiPoints
        outputs = BoneMorphometryLogic().process(getNode("CT"), outputs.vertebrae, trabecularMorphometry=True,
                                                 morphometryThreshold="default", morphometryBlurMm=0.0)
        outputs.morphometry, outputs.thicknessMap   # BV/TV, Tb.Th ... of each VOI (apparent on clinical CT)
        BoneMorphometryLogic().segmentMorphometry(getNode("CT"), outputs.regions, ["L1 ROI"])  # any segment
    """

    def getParameterNode(self) -> BoneMorphometryParameterNode:
        return BoneMorphometryParameterNode(super().getParameterNode())


class BoneMorphometryTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic CT (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BoneMorphometrySegmentAndMeasure()
        self.setUp()
        self.test_BoneMorphometryTrabecularMorphometry()

    def test_BoneMorphometrySegmentAndMeasure(self) -> None:
        from bonekit.vertebra import VertebraResult

        self.delayDisplay("Starting the test")
        phantom = smallSpinePhantom(vertebrae=("L1", "L2", "L3"))  # coarse 1.5 x 1.5 x 2 mm voxels
        ct = phantom.ct
        ctNode = slicer.util.addVolumeFromArray(ct.array, ct.ijk_to_ras, "CT")
        pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Vertebra points")
        for vertebra in phantom.truth["vertebrae"]:  # body centres, LPS -> RAS
            pointsNode.AddControlPoint(*(np.asarray(vertebra["centre_lps_mm"]) * [-1.0, -1.0, 1.0]), vertebra["name"])
        outputs = BoneMorphometryLogic().process(ctNode, pointsNode=pointsNode)
        self.delayDisplay("Segmented and measured")

        labels, _names = segmentationToLabelmap(outputs.vertebrae, ctNode)
        for value in (20, 21, 22):
            segmented, truth = labels.array == value, phantom.labels.array == value
            dice = 2 * np.count_nonzero(segmented & truth) / (np.count_nonzero(segmented) + np.count_nonzero(truth))
            self.assertGreaterEqual(dice, 0.93)  # 0.955-0.982 on this coarse grid
        rows = resultsFromTable(outputs.table, VertebraResult)
        self.assertEqual([r.vertebra for r in rows], ["L1", "L2", "L3"])
        self.assertEqual(outputs.regions.GetSegmentation().GetNumberOfSegments(), 9)  # body, ROI, VOI each
        for index, row in enumerate(rows):
            ras = outputs.voiPoints.GetNthControlPointPosition(index)
            self.assertEqual(outputs.voiPoints.GetNthControlPointLabel(index), row.vertebra)
            np.testing.assert_allclose(ras, [-row.voi_x, -row.voi_y, row.voi_z], atol=1e-9)
        self.delayDisplay("Test passed")

    def test_BoneMorphometryTrabecularMorphometry(self) -> None:
        from bonekit.morphometry import MorphometryResult
        from bonekit.vertebra import VertebraResult

        self.delayDisplay("Starting the trabecular morphometry test")
        phantom = smallSpinePhantom()
        ctNode = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.ijk_to_ras, "CT")
        vertebrae = labelmapToSegmentation(phantom.labels, slicer.mrmlScene, names={20: "L1", 21: "L2"},
                                           referenceNode=ctNode, name="Vertebrae")
        outputs = BoneMorphometryLogic().process(ctNode, vertebrae, trabecularMorphometry=True)
        self.delayDisplay("Measured the VOIs")

        self.assertEqual([r.vertebra for r in resultsFromTable(outputs.table, VertebraResult)], ["L1", "L2"])
        morphometry = resultsFromTable(outputs.table, MorphometryResult)
        self.assertEqual(morphometry, outputs.morphometry)
        self.assertEqual(outputs.table.GetColumnUnitLabel("Tb.Th"), "mm")
        for result in morphometry:
            self.assertTrue(0.0 < result.BV_TV < 1.0 and result.Tb_Th > 0.0 and result.method == "default")
        thickness = slicer.util.arrayFromVolume(outputs.thicknessMap)
        self.assertEqual(thickness.shape, phantom.ct.shape)
        self.assertTrue(np.all(np.isfinite(thickness)) and thickness.max() > 0.0 and thickness.min() == 0.0)
        self.assertEqual(outputs.thicknessMap.GetDisplayNode().GetApplyThreshold(), 1)
        self.delayDisplay("Test passed")

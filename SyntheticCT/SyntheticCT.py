"""SyntheticCT: a synthetic spine CT from two radiographs (AP and lateral), or from a CT's DRRs.

Thin Slicer module: metadata, widget and self-test. The work is done by the Qt-free
:class:`SyntheticCTLib.SyntheticCTLibLogic`, which runs the core package's ``bonekit sct infer``
in a separate PythonSlicer process.
"""

import pathlib
import tempfile
from typing import Annotated, Union

import numpy as np
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from BoneKitLib import ModelRunMixin, ijkToRASMatrix, smallSpinePhantom, volumeToNode
from SyntheticCTLib import DEVICES, FROM_FILE, SyntheticCTLibLogic

#: The model list of the module: the catalogue's SyntheticCT models (the first is the default), then a file.
MODEL_CHOICES = [entry["name"] for entry in SyntheticCTLibLogic().models()] + [FROM_FILE]
#: What the synthetic CT is made from.
FROM_RADIOGRAPHS, FROM_CT = "Two radiographs", "A CT (its DRRs)"


class SyntheticCT(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SyntheticCT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Reconstructs a synthetic CT of the lumbar spine from an anteroposterior and a lateral radiograph "
            "with the 2D-to-3D generative network of Zanier et al. 2024 (TomoRay, X2CT-GAN style). Input: two "
            "radiograph volumes (one slice each, e.g. DICOM CR/DX loaded with Add Data; superior at the top, the "
            "AP columns towards the patient's left, the lateral columns towards posterior), or a CT with its "
            "vertebra labels, whose AP and lateral DRRs are made first (to compare the synthetic CT with the "
            "real one). The model comes from the BoneKit catalogue or from a file made by 'bonekit sct train'. "
            "The run happens in a separate PythonSlicer process, so Slicer stays responsive and Cancel stops it "
            "without writing anything. Output: a float volume in HU named '<input> sCT', shown as a bone volume "
            "rendering, whose attributes record the model, the device and the time. A research tool, not for "
            "clinical use: the network invents a plausible spine from two projections; the shipped "
            "demonstration model was trained on phantom spines only.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Zanier et al., TomoRay: synthetic CT of the spine "
            "from biplanar radiographs, 2024 (after X2CT-GAN, Ying et al. 2019).")


@parameterNodeWrapper
class SyntheticCTParameterNode:
    """Parameters of the module, saved with the scene.

    source - "Two radiographs" or "A CT (its DRRs)".
    apRadiograph - anteroposterior view, a single-slice volume.
    lateralRadiograph - lateral view.
    pixelSpacing - radiograph pixel size in mm replacing the images' own; 0: theirs.
    magnification - SID/SOD of the radiographs; 0: the model's.
    inputVolume - a CT in HU (source "A CT").
    labelsNode - its vertebrae (segmentation or label map).
    model - a catalogue model, or "From file..." for modelFile.
    modelFile - a SyntheticCT model file (.pt).
    device - auto (GPU if present), cuda or cpu.
    outputVolume - the synthetic CT; none: a new one.
    """

    source: Annotated[str, Choice([FROM_RADIOGRAPHS, FROM_CT])] = FROM_RADIOGRAPHS
    apRadiograph: vtkMRMLScalarVolumeNode
    lateralRadiograph: vtkMRMLScalarVolumeNode
    pixelSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    magnification: Annotated[float, WithinRange(0.0, 5.0)] = 0.0
    inputVolume: vtkMRMLScalarVolumeNode
    labelsNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    model: Annotated[str, Choice(MODEL_CHOICES)] = MODEL_CHOICES[0]
    modelFile: pathlib.Path
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    outputVolume: vtkMRMLScalarVolumeNode


class SyntheticCTWidget(ModelRunMixin, ScriptedLoadableModuleWidget):
    """Module panel: radiographs or CT, model, device, output volume; Apply, Cancel and a progress bar."""

    modelFileHint = _("A SyntheticCT model file (.pt), made by 'bonekit sct train'.")

    def __init__(self, parent=None) -> None:
        ModelRunMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/SyntheticCT.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(SyntheticCTLogic())

    def fromCT(self) -> bool:
        return self._parameterNode is not None and self._parameterNode.source == FROM_CT

    @property
    def requiredParameters(self) -> tuple:
        """The two radiographs, or the CT and its labels, as the source says."""
        return ("inputVolume", "labelsNode") if self.fromCT() else ("apRadiograph", "lateralRadiograph")

    def updateApplyButton(self, caller=None, event=None) -> None:
        """Apply needs the chosen source's inputs and a model; only that source's rows show."""
        super().updateApplyButton(caller, event)
        self.ui.ctWidget.visible = self.fromCT()
        self.ui.radiographsWidget.visible = not self.fromCT()

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog, a cancel in the progress bar."""
        p = self._parameterNode
        with self.cancellableRun(_("Failed to make the synthetic CT."), _("Cancelled: nothing was written")):
            common = dict(model=self.chosenModel(), device=p.device, outputVolumeNode=p.outputVolume,
                          progressCallback=self.reportProgress)
            if self.fromCT():
                outputs = self.logic.synthesizeFromCT(p.inputVolume, p.labelsNode, **common)
            else:
                outputs = self.logic.synthesize(p.apRadiograph, p.lateralRadiograph,
                                                pixelSpacing=p.pixelSpacing or None,
                                                magnification=p.magnification or None, **common)
            p.outputVolume = outputs.volume
            slicer.util.setSliceViewerLayers(background=outputs.volume, fit=True)


class SyntheticCTLogic(ScriptedLoadableModuleLogic, SyntheticCTLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`SyntheticCTLib.SyntheticCTLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        outputs = SyntheticCTLogic().synthesize(getNode("AP"), getNode("Lateral"), model="demo")
        outputs = SyntheticCTLogic().synthesizeFromCT(getNode("CT"), getNode("Vertebrae"), model="demo")
        outputs.volume, outputs.summary["seconds"]
    """

    def getParameterNode(self) -> SyntheticCTParameterNode:
        return SyntheticCTParameterNode(super().getParameterNode())


class SyntheticCTTest(ScriptedLoadableModuleTest):
    """Self-test: the real child process on a small phantom CT with a tiny random model (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SyntheticCTTinyModel()

    def test_SyntheticCTTinyModel(self) -> None:
        import importlib.util

        from bonekit.volume import LPS_TO_RAS

        self.delayDisplay("Starting the test")
        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("PyTorch is not installed (install the PyTorch extension): synthetic CT not tested")
            return
        from bonekit.sct.data import training_geometry
        from bonekit.sct.drr import compute_drr
        from bonekit.sct.model import SCTModelInfo, save_model
        from bonekit.sct.networks import X2CTConfig, build_generator
        from bonekit.sct.prepare import PrepareConfig, extract_bones

        phantom = smallSpinePhantom()
        ctNode = volumeToNode(phantom.ct, slicer.mrmlScene, name="CT")
        labelsNode = volumeToNode(phantom.labels, slicer.mrmlScene, name="Vertebrae", labelmap=True)
        prepare = PrepareConfig(spacing_mm=4.0, size=64)
        geometry = training_geometry(prepare)
        config = X2CTConfig(size=32, stem_channels=8, growth=4, dense_layers=(2, 2, 2, 2),
                            decoder_channels=(4, 4, 8, 8, 16), view_blocks=(1, 1, 1, 1, 0),
                            fusion_blocks=(1, 1, 1, 1, 0), view_heads=False)
        ap, lateral = compute_drr(extract_bones(phantom.ct, phantom.labels), ["ap", "lat"], geometry=geometry,
                                  device="cpu")
        matrix = np.diag([geometry.pixel[1], geometry.pixel[0], 1.0, 1.0])
        apNode = slicer.util.addVolumeFromArray(ap.image[np.newaxis], matrix, "AP")
        lateralNode = slicer.util.addVolumeFromArray(lateral.image[np.newaxis], matrix, "Lateral")
        with tempfile.TemporaryDirectory() as folder:
            model = save_model(pathlib.Path(folder) / "tiny.pt", SCTModelInfo(config, prepare, geometry,
                                                                             card={"name": "self-test"}),
                               build_generator(config, seed=5))
            fractions = []
            fromCT = SyntheticCTLogic().synthesizeFromCT(ctNode, labelsNode, str(model), device="cpu",
                                                         progressCallback=lambda f, m: fractions.append(f))
            self.delayDisplay("Synthetic CT from the CT's DRRs")
            fromRadiographs = SyntheticCTLogic().synthesize(apNode, lateralNode, str(model), device="cpu")
            self.delayDisplay("Synthetic CT from two radiograph volumes")

        for outputs, name in ((fromCT, "CT sCT"), (fromRadiographs, "AP sCT")):
            node = outputs.volume
            self.assertEqual(node.GetName(), name)
            self.assertEqual(slicer.util.arrayFromVolume(node).shape, (32, 32, 32))
            self.assertEqual(node.GetAttribute("SyntheticCT.device"), "cpu")
            spacing = np.linalg.norm((LPS_TO_RAS @ ijkToRASMatrix(node))[:3, :3], axis=0)
            self.assertTrue(np.allclose(spacing, 4.0 * 64 / 32))     # the prepared cube, at the network's size
        self.assertEqual((fractions[0], fractions[-1]), (0.0, 1.0))
        self.assertTrue(all(b >= a for a, b in zip(fractions, fractions[1:])))
        self.delayDisplay("Test passed")

"""BoneSR: micro-CT-like super-resolution of clinical CT of the spine.

Thin Slicer module: metadata, widget and self-test. The work is done by the
Qt-free :class:`BoneSRLib.BoneSRLibLogic`, which runs the core package's
``bonekit sr infer`` in a separate PythonSlicer process.
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

from BoneKitLib import ModelRunMixin, ijkToRASMatrix, labelmapToSegmentation, volumeToNode
from BoneSRLib import DEVICES, FROM_FILE, PRECISIONS, BoneSRLibLogic

#: The model list of the module: the catalogue of shipped models (the first is the default), then a file.
MODEL_CHOICES = [entry["name"] for entry in BoneSRLibLogic().models()] + [FROM_FILE]


class BoneSR(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneSR")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "BoneKit")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneKit developers"]
        self.parent.helpText = _(
            "Turns a clinical CT of the spine into a micro-CT-like volume, so that trabecular morphometry can be "
            "measured on it (Jin et al. 2021, Tomography: a pix2pixHD generator trained on paired clinical CT and "
            "micro-CT slices). The CT (HU, axial slices) is interpolated onto a grid 'scale' times finer on each "
            "axis (cubic B-spline) and the generator sharpens it slice by slice. Choose an ROI (a segmentation or "
            "a label map, e.g. the vertebral body) to process only its bounding box: a whole CT at micro-CT "
            "resolution is very large. The model comes from the BoneKit catalogue or from a BoneSR model file "
            "(.pt); its voxel size must match the CT's. Device: auto uses a CUDA GPU when there is one (falling "
            "back to smaller tiles, then to the CPU, on out-of-memory), else the CPU. The run happens in a "
            "separate PythonSlicer process, so Slicer stays responsive and Cancel stops it without writing "
            "anything. Output: a float volume in HU named '<CT> SR x<scale>' whose attributes record the model, "
            "the device and the time. A research tool, not for clinical use: the generator invents plausible "
            "micro-structure and its output is not a measurement of the patient's bone.")
        self.parent.acknowledgementText = _(
            "Part of the BoneKit extension. Method: Jin D. et al., Deep-learning-based super-resolution "
            "of clinical CT for trabecular bone microstructure, Tomography 2021.")


@parameterNodeWrapper
class BoneSRParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume - clinical CT in HU, axial slices.
    roiNode - optional region (segmentation: all its segments; label map: its non-zero voxels): only its
        bounding box is super-resolved.
    model - a catalogue model, or "From file..." for modelFile.
    modelFile - a BoneSR model file (.pt).
    device - auto (GPU if present), cuda or cpu.
    precision - auto (bf16/fp16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16.
    tile - tile edge in output pixels; 0: whole slices.
    allowSpacing - run even if the CT's voxel size is far from the model's.
    outputVolume - the micro-CT-like volume; none: a new one.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    roiNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    model: Annotated[str, Choice(MODEL_CHOICES)] = MODEL_CHOICES[0]
    modelFile: pathlib.Path
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    precision: Annotated[str, Choice(list(PRECISIONS))] = "auto"
    tile: Annotated[int, WithinRange(0, 4096)] = 0
    allowSpacing: bool = False
    outputVolume: vtkMRMLScalarVolumeNode


class BoneSRWidget(ModelRunMixin, ScriptedLoadableModuleWidget):
    """Module panel: CT, ROI, model, device, output volume; Apply, Cancel and a progress bar."""

    requiredParameters = ("inputVolume",)
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode"}
    modelFileHint = _("A BoneSR model file (.pt), e.g. exported with 'bonekit sr export'.")

    def __init__(self, parent=None) -> None:
        ModelRunMixin.__init__(self)  # first: without a parent, the base __init__ runs setup()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Load Resources/UI/BoneSR.ui (slicer.util.loadUI, childWidgetVariables, setMRMLScene) and bind it."""
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUi(BoneSRLogic())

    def onApplyButton(self) -> None:
        """Run the logic on the selected nodes; errors are shown in a dialog, a cancel in the progress bar."""
        parameters = self._parameterNode
        with self.cancellableRun(_("Failed to super-resolve the CT."), _("Cancelled: nothing was written")):
            outputs = self.logic.process(parameters.inputVolume, parameters.roiNode,
                                         model=self.chosenModel(), device=parameters.device,
                                         precision=parameters.precision, tile=parameters.tile or None,
                                         allowSpacing=parameters.allowSpacing,
                                         outputVolumeNode=parameters.outputVolume,
                                         progressCallback=self.reportProgress)
            parameters.outputVolume = outputs.volume
            slicer.util.setSliceViewerLayers(background=outputs.volume, fit=True)


class BoneSRLogic(ScriptedLoadableModuleLogic, BoneSRLibLogic):
    """Slicer-side logic: the module's parameter node on top of the Qt-free base class that does the work,
    :class:`BoneSRLib.BoneSRLibLogic`.

    Usable without the widget, e.g. from the Python console or a batch script::

        outputs = BoneSRLogic().process(getNode("CT"), roiNode=getNode("Vertebra regions"),
                                        model="/path/to/model.pt", device="cuda")
        outputs.volume, outputs.summary["seconds"]
    """

    def getParameterNode(self) -> BoneSRParameterNode:
        return BoneSRParameterNode(super().getParameterNode())


class BoneSRTest(ScriptedLoadableModuleTest):
    """Self-test: the real child process on a small synthetic CT with a tiny random model (no download)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BoneSRTinyModel()

    def test_BoneSRTinyModel(self) -> None:
        import importlib.util

        from bonekit import Volume, make_affine
        from bonekit.volume import LPS_TO_RAS

        self.delayDisplay("Starting the test")
        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("PyTorch is not installed (install the PyTorch extension): super-resolution not tested")
            return
        from bonekit.sr.degrade import refined_grid
        from bonekit.sr.model import ModelInfo, save_model
        from bonekit.sr.networks import GeneratorConfig, build_generator, init_weights

        # a 300 HU block with a marrow channel, in air; axial, 0.5 x 0.5 x 0.7 mm, rotated 15 degrees
        values = np.full((6, 20, 18), -1000, np.int16)
        values[1:5, 3:17, 3:15] = 300
        values[1:5, 8:12, 7:11] = 0
        angle = np.radians(15.0)
        direction = [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
        ct = Volume(values, make_affine((0.5, 0.5, 0.7), (10.0, -4.0, 3.0), direction), modality="CT", units="HU")
        ctNode = volumeToNode(ct, slicer.mrmlScene, name="CT")
        roi = ct.with_array((values == 0).astype(np.uint8))
        roiNode = labelmapToSegmentation(roi, slicer.mrmlScene, names={1: "Channel"}, referenceNode=ctNode)

        config = GeneratorConfig.from_dict({"arch": "pix2pixhd_global", "ngf": 4, "n_downsample": 2, "n_blocks": 1})
        info = ModelInfo(generator=config.to_dict(), scale=2, lr_spacing_mm=0.5, hr_spacing_mm=0.25,
                         card={"name": "self-test"})
        with tempfile.TemporaryDirectory() as folder:
            model = save_model(pathlib.Path(folder) / "tiny.pt", info, init_weights(build_generator(config), 0))
            fractions = []
            outputs = BoneSRLogic().process(ctNode, model=str(model), device="cpu",
                                            progressCallback=lambda f, m: fractions.append(f))
            self.delayDisplay("Super-resolved the whole CT")
            cropped = BoneSRLogic().process(ctNode, roiNode, model=str(model), device="cpu")
            self.delayDisplay("Super-resolved the ROI")

        node = outputs.volume
        self.assertEqual(node.GetName(), "CT SR x2")
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (12, 40, 36))
        self.assertTrue(np.allclose(ijkToRASMatrix(node), LPS_TO_RAS @ refined_grid(ct, 2).affine))
        self.assertEqual((node.GetAttribute("BoneSR.device"), node.GetAttribute("BoneSR.scale")), ("cpu", "2"))
        self.assertEqual((fractions[0], fractions[-1]), (0.0, 1.0))
        self.assertTrue(all(b >= a for a, b in zip(fractions, fractions[1:])))
        # the ROI (the channel, 4 x 4 x 4 voxels, plus 1 mm) gives its bounding box only
        shape = slicer.util.arrayFromVolume(cropped.volume).shape
        self.assertTrue(shape[1] < 40 and shape[2] < 36 and shape[0] <= 12)
        self.delayDisplay("Test passed")

"""SyntheticCT logic (SyntheticCTLib) on a scene built with pip slicer-core: the real child process.

Model: a tiny random X2CT generator (32^3 output over a 64 x 4 mm prepared cube). Truths: the core run
in this process on the same inputs (:func:`bonekit.sct.infer.from_ct`, :func:`from_radiographs`), and
LPS <-> RAS (x and y negated). Each run starts a Python that imports torch, so the runs are few.
"""

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from slicer_harness import phantom, slicer_app  # noqa: E402,F401  (pytest fixtures)
from test_slicer_module_selftests import (FakeProgressBar, cancellableRunStandIns,  # noqa: E402,F401
                                          loadModuleFile, slicerStandIns)  # Qt stand-ins

from BoneKitLib import ijkToRASMatrix, volumeToNode  # noqa: E402
from SyntheticCTLib import BONE_OPACITY_HU, FROM_FILE, SyntheticCTLibLogic  # noqa: E402
from bonekit import BoneKitError  # noqa: E402
from bonekit.sct.data import training_geometry  # noqa: E402
from bonekit.sct.drr import compute_drr  # noqa: E402
from bonekit.sct.infer import from_ct, from_radiographs  # noqa: E402
from bonekit.sct.model import SCTModelInfo, load_model, save_model  # noqa: E402
from bonekit.sct.networks import X2CTConfig, build_generator  # noqa: E402
from bonekit.sct.prepare import PrepareConfig, extract_bones  # noqa: E402
from bonekit.sct.radiograph import Radiograph  # noqa: E402
from bonekit.volume import LPS_TO_RAS  # noqa: E402

TINY = X2CTConfig(size=32, stem_channels=8, growth=4, dense_layers=(2, 2, 2, 2), decoder_channels=(4, 4, 8, 8, 16),
                  view_blocks=(1, 1, 1, 1, 0), fusion_blocks=(1, 1, 1, 1, 0), view_heads=False)


@pytest.fixture(scope="module")
def modelFile(tmp_path_factory) -> Path:
    prepare = PrepareConfig(spacing_mm=4.0, size=64)
    info = SCTModelInfo(TINY, prepare, training_geometry(prepare), card={"name": "tiny"})
    return save_model(tmp_path_factory.mktemp("model") / "tiny-sct.pt", info, build_generator(TINY, seed=5))


@pytest.fixture
def logic(tmp_path):
    logic = SyntheticCTLibLogic()
    logic.temporaryDirectory = str(tmp_path)
    return logic


def test_from_a_ct_equals_the_core_with_its_geometry(slicer_app, phantom, modelFile, logic, tmp_path):
    ctNode = volumeToNode(phantom.ct, slicer_app.scene, name="CT")
    labelsNode = volumeToNode(phantom.labels, slicer_app.scene, name="Vertebrae", labelmap=True)
    calls = []
    outputs = logic.synthesizeFromCT(ctNode, labelsNode, str(modelFile), device="cpu",
                                     progressCallback=lambda f, m: calls.append(f))
    truth, _ = from_ct(phantom.ct, phantom.labels, load_model(modelFile), device="cpu")
    node = outputs.volume
    values = slicer.util.arrayFromVolume(node)
    assert values.shape == (32, 32, 32) and node.GetName() == "CT sCT"
    assert np.abs(values - truth.volume.array).max() < 0.1          # HU; another process, another thread count
    assert np.allclose(ijkToRASMatrix(node), LPS_TO_RAS @ truth.volume.affine, atol=1e-6)
    assert node.GetAttribute("SyntheticCT.device") == "cpu" and outputs.summary["size"] == [32, 32, 32]
    assert calls == sorted(calls) and calls[-1] == 1.0
    assert list(tmp_path.iterdir()) == []                          # temporary files are gone


def test_from_two_radiograph_nodes_equals_the_core(slicer_app, phantom, modelFile, logic):
    bones = extract_bones(phantom.ct, phantom.labels)
    g = training_geometry(PrepareConfig(spacing_mm=4.0, size=64))
    ap, lat = compute_drr(bones, ["ap", "lat"], geometry=g, device="cpu")
    apNode = slicer.util.addVolumeFromArray(ap.image[np.newaxis], np.diag([g.pixel[1], g.pixel[0], 1, 1]), "AP")
    latNode = slicer.util.addVolumeFromArray(lat.image[np.newaxis], np.diag([g.pixel[1], g.pixel[0], 1, 1]), "LAT")
    outputs = logic.synthesize(apNode, latNode, str(modelFile), device="cpu")
    truth = from_radiographs(Radiograph(ap.image, g.pixel, "ap"), Radiograph(lat.image, g.pixel, "lat"),
                             load_model(modelFile), device="cpu")
    values = slicer.util.arrayFromVolume(outputs.volume)
    assert np.abs(values - truth.volume.array).max() < 0.1
    assert np.allclose(ijkToRASMatrix(outputs.volume), LPS_TO_RAS @ truth.volume.affine, atol=1e-6)


def test_bad_input_writes_nothing(slicer_app, phantom, modelFile, logic):
    ctNode = volumeToNode(phantom.ct, slicer_app.scene, name="CT")
    image = np.ones((1, 40, 40), np.float32)
    apNode = slicer.util.addVolumeFromArray(image, np.eye(4), "AP")
    before = slicer_app.scene.GetNumberOfNodes()
    with pytest.raises(BoneKitError, match="No lateral radiograph"):
        logic.synthesize(apNode, None, str(modelFile))
    with pytest.raises(BoneKitError, match="vertebra labels"):
        logic.synthesizeFromCT(ctNode, None, str(modelFile))
    with pytest.raises(BoneKitError, match="No model"):
        logic.synthesize(apNode, apNode, "")
    with pytest.raises(BoneKitError, match="Unknown device"):
        logic.synthesize(apNode, apNode, str(modelFile), device="tpu")
    with pytest.raises(BoneKitError, match="single slice"):
        logic.synthesize(apNode, ctNode, str(modelFile))
    # the core's own refusal comes back as its message: a BoneSR-like file is not a SyntheticCT model
    with pytest.raises(BoneKitError, match="SyntheticCT model"):
        logic.synthesize(apNode, apNode, str(Path(__file__)), device="cpu")
    assert slicer_app.scene.GetNumberOfNodes() == before


def test_bone_volume_rendering(slicer_app, phantom):
    node = volumeToNode(phantom.ct, slicer_app.scene, name="sCT")
    vr = slicer.vtkSlicerVolumeRenderingLogic()
    vr.SetMRMLScene(slicer_app.scene)
    display = SyntheticCTLibLogic.showBoneRendering(node, vr)
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(0.0) == 0 and opacity.GetValue(100.0) == 0          # soft tissue hidden
    assert opacity.GetValue(700.0) > 0.6 and display.GetVisibility()
    assert opacity.GetSize() == len(BONE_OPACITY_HU)


def test_models_come_from_the_catalogue(monkeypatch, modelFile, logic):
    import hashlib

    import bonekit.models as catalogue

    assert logic.models() == catalogue.catalogue("sct")
    entry = {"name": "sct-test", "kind": "sct", "file": modelFile.name, "size": 32, "spacing_mm": 8.0,
             "sha256": hashlib.sha256(modelFile.read_bytes()).hexdigest(), "description": "tiny"}
    monkeypatch.setattr(catalogue, "catalogue", lambda kind=None: [entry] if kind in (None, "sct") else [])
    monkeypatch.setattr(catalogue, "models_dir", lambda: modelFile.parent)
    assert logic.models() == [entry] and logic.modelLabel(entry) == "sct-test (32^3 voxels of 8 mm)"
    assert logic.resolveModel("demo") == modelFile and logic.resolveModel("sct-test") == modelFile
    with pytest.raises(BoneKitError, match="No model chosen: pick a model of the catalogue, or a SyntheticCT"):
        logic.resolveModel(FROM_FILE)


# ----------------------------------------------------------------------------- widget (Qt stood in for)
def test_widget_follows_the_source_applies_and_cancels(slicer_app, slicerStandIns, monkeypatch, phantom, modelFile):
    """The thin widget of SyntheticCT.py with the Qt parts stood in for: the source chooses the rows shown and
    the inputs Apply needs; Apply runs the logic with the chosen model file and device; Cancel writes nothing."""
    import pathlib
    from types import SimpleNamespace

    module = loadModuleFile("SyntheticCT")
    assert module.MODEL_CHOICES[-1] == FROM_FILE
    widget = module.SyntheticCTWidget()
    shown = lambda: SimpleNamespace(visible=False)  # noqa: E731
    widget.ui = SimpleNamespace(applyButton=SimpleNamespace(enabled=True), cancelButton=SimpleNamespace(enabled=False),
                                progressBar=FakeProgressBar(), modelFileLabel=shown(), modelFilePathLineEdit=shown(),
                                modelDescriptionLabel=SimpleNamespace(text=""), ctWidget=shown(),
                                radiographsWidget=shown())
    widget.logic = module.SyntheticCTLogic()
    ctNode = volumeToNode(phantom.ct, slicer_app.scene, name="CT")
    parameters = SimpleNamespace(source=module.FROM_RADIOGRAPHS, apRadiograph=None, lateralRadiograph=None,
                                 pixelSpacing=0.0, magnification=0.0, inputVolume=ctNode, labelsNode=None,
                                 model=FROM_FILE, modelFile=pathlib.Path(str(modelFile)), device="cpu",
                                 outputVolume=None)
    widget._parameterNode = parameters
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is False and widget.ui.radiographsWidget.visible
    assert not widget.ui.ctWidget.visible and widget.ui.modelFilePathLineEdit.visible
    parameters.source = module.FROM_CT
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is False and widget.ui.ctWidget.visible  # no labels yet
    parameters.labelsNode = volumeToNode(phantom.labels, slicer_app.scene, name="Vertebrae", labelmap=True)
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is True
    states, errors, cancelAt = cancellableRunStandIns(monkeypatch, widget)

    widget.onApplyButton()
    output = parameters.outputVolume
    assert output is not None and output.GetName() == "CT sCT" and output.GetAttribute("SyntheticCT.device") == "cpu"
    assert states and all(state == (False, True) for state in states)
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False) and not errors

    before = slicer_app.scene.GetNumberOfNodes()
    cancelAt[0] = 0
    widget.onApplyButton()
    assert widget.ui.progressBar.format == "Cancelled: nothing was written"
    assert slicer_app.scene.GetNumberOfNodes() == before and parameters.outputVolume is output and not errors

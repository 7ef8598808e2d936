"""BoneSR logic (BoneSRLib) on a scene built with pip slicer-core: the real child process.

CT: a small random axial CT (int16 HU, 6 x 20 x 18 voxels of 0.5 x 0.5 x 0.7 mm, rotated 20 degrees
about the slice axis, away from the origin), written with its exact geometry. Model: a tiny random
pix2pixHD global generator (scale 2, trained "at" 0.5 mm). Truths: the core itself,
:func:`bonekit.sr.infer.super_resolve` run in this process on the same Volume (voxels, geometry),
:func:`bonekit.sr.degrade.refined_grid` (the fine grid), and LPS <-> RAS (x and y negated).
Each run starts a Python that imports torch, so the runs are few and the volumes tiny.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from slicer_harness import REPOSITORY, slicer_app  # noqa: E402,F401  (pytest fixture)
from test_slicer_module_selftests import (FakeProgressBar, cancellableRunStandIns,  # noqa: E402,F401
                                          loadModuleFile, slicerStandIns)  # Qt stand-ins

from BoneKitLib import ijkToRASMatrix, labelmapToSegmentation, volumeFromNode, volumeToNode  # noqa: E402
from BoneSRLib import FROM_FILE, BoneSRLibLogic, ProcessingCancelled  # noqa: E402
from bonekit import BoneKitError, Volume, make_affine  # noqa: E402
from bonekit.sr.degrade import refined_grid  # noqa: E402
from bonekit.sr.infer import super_resolve  # noqa: E402
from bonekit.sr.model import ModelInfo, load_model, save_model  # noqa: E402
from bonekit.sr.networks import GeneratorConfig, build_generator, init_weights  # noqa: E402
from bonekit.volume import LPS_TO_RAS  # noqa: E402

ARCH = {"arch": "pix2pixhd_global", "ngf": 4, "n_downsample": 2, "n_blocks": 1}


@pytest.fixture(scope="module")
def ct() -> Volume:
    rng = np.random.default_rng(0)
    values = np.clip(rng.normal(300, 400, (6, 20, 18)), -1000, 1500).astype(np.int16)
    angle = np.radians(20.0)
    direction = [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    return Volume(values, make_affine((0.5, 0.5, 0.7), (10.0, -4.0, 3.0), direction), modality="CT", units="HU")


@pytest.fixture(scope="module")
def modelFile(tmp_path_factory) -> Path:
    config = GeneratorConfig.from_dict(ARCH)
    info = ModelInfo(generator=config.to_dict(), scale=2, lr_spacing_mm=0.5, hr_spacing_mm=0.25, card={"name": "tiny"})
    return save_model(tmp_path_factory.mktemp("model") / "tiny.pt", info, init_weights(build_generator(config), 0))


@pytest.fixture
def ctNode(slicer_app, ct):
    return volumeToNode(ct, slicer_app.scene, name="CT")


@pytest.fixture
def logic(tmp_path):
    """A logic whose temporary folders go to their own folder, so that the tests see them go."""
    logic = BoneSRLibLogic()
    logic.temporaryDirectory = str(tmp_path / "temporary")
    os.mkdir(logic.temporaryDirectory)
    return logic


def nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def leftovers(logic) -> list[str]:
    return os.listdir(logic.temporaryDirectory)


# ----------------------------------------------------------------------------- the command line
def test_command_line_and_python(logic, modelFile, tmp_path, monkeypatch):
    assert logic.pythonExecutable() == sys.executable  # outside the Slicer application
    assert logic.command("in.nrrd", "out.nrrd", "demo") == [
        sys.executable, "-m", "bonekit", "sr", "infer", "in.nrrd", "--model", "demo", "--out", "out.nrrd",
        "--device", "auto", "--precision", "auto", "--progress-lines"]
    relative = os.path.relpath(modelFile)
    assert logic.command(Path("a/ct.nrrd"), Path("a/sr.nrrd"), relative, roiPath=Path("a/roi.nrrd"), device="CUDA",
                         precision="bf16", tile=256, allowSpacing=True, summaryPath=Path("a/s.json"))[1:] == [
        "-m", "bonekit", "sr", "infer", "a/ct.nrrd", "--model", str(modelFile.resolve()), "--out", "a/sr.nrrd",
        "--roi", "a/roi.nrrd", "--device", "cuda", "--precision", "bf16", "--tile", "256", "--allow-spacing",
        "--json", "a/s.json", "--progress-lines"]
    assert "--device" in logic.command("i", "o", "demo", device="cuda:1")
    for arguments, message in ((dict(device="tpu"), "Unknown device 'tpu'"),
                               (dict(precision="int8"), "Unknown precision 'int8'"),
                               (dict(model=""), "No model chosen"), (dict(model=FROM_FILE), "No model chosen")):
        with pytest.raises(BoneKitError, match=message):
            logic.command("i", "o", **{"model": "demo", **arguments})
    # the child finds the core package first on its path, and writes unbuffered UTF-8
    env = logic.environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPOSITORY)
    assert (REPOSITORY / "bonekit" / "__init__.py").is_file()
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    # inside the Slicer application: its PythonSlicer launcher, next to Slicer's Python
    bin = tmp_path / "Slicer" / "bin"
    bin.mkdir(parents=True)
    launcher = bin / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin / "python-real"))
    monkeypatch.setattr(slicer, "app", type("App", (), {"slicerHome": str(tmp_path / "Slicer")})(), raising=False)
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: {"PATH": "/usr/bin", "PYTHONPATH": "/user/lib"})
    assert logic.insideSlicerApplication() and logic.pythonExecutable() == str(launcher)
    env = logic.environment()
    assert env["PATH"] == "/usr/bin" and env["PYTHONPATH"] == os.pathsep.join([str(REPOSITORY), "/user/lib"])
    launcher.unlink()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BoneKitError, match="PythonSlicer program was not found"):
        logic.pythonExecutable()


# ----------------------------------------------------------------------------- runs
def test_output_is_the_core_result_with_its_geometry_and_provenance(slicer_app, ct, ctNode, modelFile, logic):
    calls = []
    before = nodeIds(slicer_app.scene)
    outputs = logic.process(ctNode, model=str(modelFile), device="cpu",
                            progressCallback=lambda f, m: calls.append((f, m)))
    truth = super_resolve(volumeFromNode(ctNode), load_model(modelFile), device="cpu").volume

    node = outputs.volume
    assert nodeIds(slicer_app.scene) - before >= {node.GetID()}
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    assert node.GetName() == "CT SR x2" and node.IsA("vtkMRMLScalarVolumeNode")
    assert not node.IsA("vtkMRMLLabelMapVolumeNode")
    values = slicer.util.arrayFromVolume(node)
    assert values.dtype == np.float32 and values.shape == truth.shape == (12, 40, 36)
    # another process: the same numbers up to float summation order, which depends on the number of
    # threads each process runs (the test session pins torch to 1 thread; the child uses every core)
    assert np.abs(values - truth.array).max() < 0.1                     # HU: far below any CT noise
    assert np.ptp(values) > 10  # not a constant image
    # geometry: the core's fine grid (spacing / 2, same direction, fine voxel centres around the coarse ones)
    fine = refined_grid(ct, 2)
    assert np.allclose(ijkToRASMatrix(node), LPS_TO_RAS @ fine.affine, rtol=0, atol=1e-9)
    assert np.allclose(ijkToRASMatrix(node), LPS_TO_RAS @ truth.affine, rtol=0, atol=1e-9)
    assert np.allclose(node.GetSpacing(), np.asarray(ct.spacing) / 2)
    directions = ijkToRASMatrix(node)[:3, :3] / np.asarray(node.GetSpacing())
    assert np.allclose(directions, LPS_TO_RAS[:3, :3] @ ct.direction)
    assert np.allclose(node.GetOrigin(), (LPS_TO_RAS @ [*ct.index_to_physical([-0.25, -0.25, -0.25]), 1.0])[:3])
    # provenance
    assert node.GetAttribute("BoneSR.model") == str(modelFile)
    assert node.GetAttribute("BoneSR.modelFile") == str(modelFile.resolve())
    assert (node.GetAttribute("BoneSR.device"), node.GetAttribute("BoneSR.precision")) == ("cpu", "fp32")
    assert node.GetAttribute("BoneSR.scale") == "2" and node.GetAttribute("BoneSR.input") == ctNode.GetID()
    assert float(node.GetAttribute("BoneSR.seconds")) > 0 and node.GetAttribute("BoneSR.created")
    assert json.loads(node.GetAttribute("BoneSR.fallbacks")) == []
    assert volumeFromNode(node).units == "HU"
    assert outputs.summary["device"] == "cpu" and outputs.summary["shape_kji"] == [12, 40, 36]
    # progress: from 0 to 1, never back, the child's slice reports in between
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and calls[-1][1] == "Done"
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert any(m == "slices 12/12 on cpu" for _, m in calls)
    assert any(m == "interpolating onto the fine grid" for _, m in calls)
    assert not leftovers(logic) and not logic.running
    assert ctNode.GetImageData() is not None and np.array_equal(slicer.util.arrayFromVolume(ctNode), ct.array)


def test_roi_crops_the_output_and_an_output_node_is_overwritten(slicer_app, ct, ctNode, modelFile, logic):
    mask = np.zeros(ct.shape, np.uint8)
    mask[2:4, 5:9, 6:10] = 1
    roiNode = labelmapToSegmentation(ct.with_array(mask), slicer_app.scene, names={1: "Body"}, referenceNode=ctNode)
    output = slicer_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "My SR")
    count = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    outputs = logic.process(ctNode, roiNode, segmentId="Body", model=str(modelFile), device="cpu",
                            outputVolumeNode=output)
    truth = super_resolve(ct, load_model(modelFile), roi=ct.with_array(mask), device="cpu").volume
    assert outputs.volume is output and output.GetName() == "My SR"
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    values = slicer.util.arrayFromVolume(output)
    # the ROI's 4 x 4 voxels in-plane and 1 mm (2 voxels) around them; its 2 slices and 2 above and below
    assert values.shape == truth.shape == (12, 16, 16)
    assert np.allclose(values, truth.array, rtol=0, atol=1e-3)
    assert np.allclose(ijkToRASMatrix(output), LPS_TO_RAS @ truth.affine, rtol=0, atol=1e-9)
    assert not leftovers(logic)


def test_roi_masks_from_segments_and_label_maps_on_or_off_the_ct_grid(slicer_app, ct, ctNode):
    logic = BoneSRLibLogic()
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:4, 5:9, 6:10] = 1
    labels[1:3, 12:15, 3:5] = 2
    segmentation = labelmapToSegmentation(ct.with_array(labels), slicer_app.scene, names={1: "L1", 2: "L2"},
                                          referenceNode=ctNode)
    assert np.array_equal(logic.roiMask(segmentation, ct).array, labels > 0)  # all segments
    assert np.array_equal(logic.roiMask(segmentation, ct, "L2").array, labels == 2)  # by name
    l1 = segmentation.GetSegmentation().GetSegmentIdBySegmentName("L1")
    mask = logic.roiMask(segmentation, ct, l1)  # by ID
    assert np.array_equal(mask.array, labels == 1) and mask.array.dtype == np.uint8 and mask.same_grid(ct)
    labelNode = volumeToNode(ct.with_array(labels), slicer_app.scene, labelmap=True, name="labels")
    assert np.array_equal(logic.roiMask(labelNode, ct).array, labels > 0)
    # a label map cropped to its labels' box lies on another grid: resampled back exactly
    cropped = ct.with_array(labels).crop((slice(1, 4), slice(5, 15), slice(3, 10)))
    assert not cropped.same_grid(ct)
    croppedNode = volumeToNode(cropped, slicer_app.scene, labelmap=True, name="cropped")
    assert np.array_equal(logic.roiMask(croppedNode, ct).array, labels > 0)
    with pytest.raises(BoneKitError, match="has no segment 'L7'"):
        logic.roiMask(segmentation, ct, "L7")
    with pytest.raises(BoneKitError, match="holds no voxel of the CT"):
        logic.roiMask(volumeToNode(ct.with_array(0 * labels), slicer_app.scene, labelmap=True, name="zero"), ct)
    with pytest.raises(BoneKitError, match="both as the CT and as the ROI"):
        logic.roiMask(ctNode, ct, ctNode=ctNode)
    with pytest.raises(BoneKitError, match="'Nothing' is empty"):
        logic.roiMask(slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing"), ct)
    with pytest.raises(BoneKitError, match="must be a segmentation or a label map"):
        logic.roiMask(slicer_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "table"), ct)


def test_a_bad_model_gives_the_child_message_and_writes_nothing(slicer_app, ctNode, logic, tmp_path):
    before = nodeIds(slicer_app.scene)
    with pytest.raises(BoneKitError, match=r"^'/no/such/model.pt' is neither a model file nor a catalogue model"):
        logic.process(ctNode, model="/no/such/model.pt", device="cpu")
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_text("not a model")
    with pytest.raises(BoneKitError, match="not a readable BoneSR model file"):
        logic.process(ctNode, model=str(not_a_model), device="cpu")
    assert nodeIds(slicer_app.scene) == before and not leftovers(logic) and not logic.running


def test_a_crash_without_a_message_is_reported_with_the_last_output_line(slicer_app, ctNode, logic):
    class Crashing(BoneSRLibLogic):
        def command(self, *args, **kwargs):
            arguments = super().command(*args, **kwargs)
            if "--json" not in arguments:  # the early check of the arguments
                return arguments
            return [sys.executable, "-c", "import sys; print('Segmentation fault in libtorch'); sys.exit(139)"]

    crashing = Crashing()
    crashing.temporaryDirectory = logic.temporaryDirectory
    before = nodeIds(slicer_app.scene)
    with pytest.raises(BoneKitError, match=r"failed \(exit code 139\): Segmentation fault in libtorch"):
        crashing.process(ctNode, model="demo")
    assert nodeIds(slicer_app.scene) == before and not leftovers(logic)


def test_cancel_stops_the_child_and_writes_nothing(slicer_app, ctNode, modelFile, logic):
    scene = slicer_app.scene
    before = nodeIds(scene)
    seen, children = [], []

    def progress(fraction, message):
        seen.append(message)
        if logic.running:
            children.append(logic._process)
        if message == "interpolating onto the fine grid":  # the child's first PROGRESS line
            logic.cancel()

    with pytest.raises(ProcessingCancelled, match="nothing was written"):
        logic.process(ctNode, model=str(modelFile), device="cpu", progressCallback=progress)
    assert seen[-1] == "interpolating onto the fine grid"  # no report after the cancel
    assert nodeIds(scene) == before and not leftovers(logic)
    assert children and children[-1].returncode is not None and not logic.running  # ended and reaped
    assert logic.cancelRequested
    # a cancel before the child starts starts none
    seen.clear()
    with pytest.raises(ProcessingCancelled):
        logic.process(ctNode, model=str(modelFile), progressCallback=lambda f, m: (seen.append(m), logic.cancel()))
    assert seen == ["Checking the inputs"] and nodeIds(scene) == before and not leftovers(logic)


def test_bad_input_is_refused_before_anything_runs(slicer_app, ct, ctNode, logic):
    sagittal = ct.with_array(ct.array)
    sagittal.affine[:3, :3] = sagittal.affine[:3, [2, 1, 0]]  # k axis along left-right
    sagittalNode = volumeToNode(sagittal, slicer_app.scene, name="sagittal")
    labels = volumeToNode(ct.with_array((ct.array > 0).astype(np.uint8)), slicer_app.scene, labelmap=True,
                          name="labels")
    nothing = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
    before = nodeIds(slicer_app.scene)
    cases = [
        (dict(inputVolumeNode=sagittalNode), "slices of 'sagittal' are sagittal"),
        (dict(inputVolumeNode=None), "No volume selected"),
        (dict(inputVolumeNode=labels), "is a label map"),
        (dict(model=""), "No model chosen"),
        (dict(device="tpu"), "Unknown device"),
        (dict(outputVolumeNode=ctNode), "both as the input and as the output"),
        (dict(outputVolumeNode=labels), "the output must be a scalar volume"),
        (dict(roiNode=nothing), "'Nothing' is empty"),
    ]
    for arguments, message in cases:
        with pytest.raises(BoneKitError, match=message):
            logic.process(**{"inputVolumeNode": ctNode, "model": "demo", **arguments})
    assert nodeIds(slicer_app.scene) == before and not leftovers(logic)


def test_models_come_from_the_catalogue(monkeypatch, modelFile):
    import hashlib

    import bonekit.models as catalogue

    logic = BoneSRLibLogic()
    assert logic.models() == catalogue.catalogue("sr")
    entry = {"name": "bonesr-test-x2", "file": modelFile.name, "sha256": hashlib.sha256(modelFile.read_bytes())
             .hexdigest(), "scale": 2, "lr_spacing_mm": 0.5, "hr_spacing_mm": 0.25, "description": "tiny"}
    monkeypatch.setattr(catalogue, "catalogue", lambda kind=None: [entry])
    monkeypatch.setattr(catalogue, "models_dir", lambda: modelFile.parent)
    assert logic.models() == [entry] and logic.models()[0] is not entry
    assert logic.modelLabel(entry) == "bonesr-test-x2 (x2: 0.5 mm -> 0.25 mm)"
    assert logic.resolveModel("demo") == modelFile and logic.resolveModel("bonesr-test-x2") == modelFile
    assert logic.resolveModel(str(modelFile)) == modelFile
    with pytest.raises(BoneKitError, match="neither a model file nor a catalogue model"):
        logic.resolveModel("nothing")
    with pytest.raises(BoneKitError, match="No model chosen"):
        logic.resolveModel(FROM_FILE)


# ----------------------------------------------------------------------------- widget (Qt stood in for)
def test_widget_applies_cancels_and_reports_errors(slicer_app, slicerStandIns, monkeypatch, ctNode, modelFile):
    """The thin widget of BoneSR.py with the Qt parts stood in for: Apply runs the logic with the chosen model
    file and device, Cancel stops it, errors go to the error display, and the buttons follow the run."""
    import pathlib
    from types import SimpleNamespace

    module = loadModuleFile("BoneSR")
    assert module.MODEL_CHOICES[-1] == FROM_FILE
    widget = module.BoneSRWidget()
    text = SimpleNamespace(visible=False)
    widget.ui = SimpleNamespace(applyButton=SimpleNamespace(enabled=True), cancelButton=SimpleNamespace(enabled=False),
                                progressBar=FakeProgressBar(), modelFileLabel=SimpleNamespace(visible=False),
                                modelFilePathLineEdit=text, modelDescriptionLabel=SimpleNamespace(text=""))
    widget.logic = module.BoneSRLogic()
    parameters = SimpleNamespace(inputVolume=ctNode, roiNode=None, model=FROM_FILE, modelFile=pathlib.Path(""),
                                 device="cpu", precision="auto", tile=0, allowSpacing=False, outputVolume=None)
    widget._parameterNode = parameters
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is False and text.visible  # no model file yet
    parameters.modelFile = modelFile
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is True
    states, errors, cancelAt = cancellableRunStandIns(monkeypatch, widget)

    widget.onApplyButton()
    output = parameters.outputVolume
    assert output is not None and output.GetName() == "CT SR x2" and output.GetAttribute("BoneSR.device") == "cpu"
    assert states and all(state == (False, True) for state in states)  # Apply off, Cancel on while running
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)
    assert widget.ui.progressBar.value == 100 and not errors

    before = nodeIds(slicer_app.scene)
    cancelAt[0] = 0
    widget.onApplyButton()  # no exception: a cancel is not an error
    assert widget.ui.progressBar.format == "Cancelled: nothing was written"
    assert nodeIds(slicer_app.scene) == before and parameters.outputVolume is output and not errors
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)

    cancelAt[0] = None
    parameters.modelFile = pathlib.Path("/no/such/model.pt")
    with pytest.raises(BoneKitError):
        widget.onApplyButton()
    [error] = errors
    assert error.startswith("Failed to super-resolve the CT. '/no/such/model.pt' is neither a model file nor a "
                            "catalogue model")
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)

"""The Qt-free logic of each module (<M>Lib) on a scene built with pip slicer-core."""

import subprocess
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import MODULE_FOLDERS, REPOSITORY, ctNode, phantom, slicer_app  # noqa: E402,F401  (fixtures)

from BoneKitLib import CTInputLogic, CTSummary, resultsFromTable, volumeToNode  # noqa: E402
from BoneMorphometryLib import BoneMorphometryLibLogic  # noqa: E402
from BoneSRLib import BoneSRLibLogic  # noqa: E402
from FocalDefectLib import FocalDefectLibLogic  # noqa: E402
from SyntheticCTLib import SyntheticCTLibLogic  # noqa: E402
from bonekit import BoneKitError, Volume  # noqa: E402


def test_ct_summary_of_the_single_ct_base_logic(slicer_app, phantom, ctNode):
    """CTInputLogic.process: the CT's summary table (BoneSR's super-resolution is tested in
    test_slicer_bone_sr.py)."""
    output = slicer_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "summary")
    assert CTInputLogic().process(ctNode, output) is output
    [summary] = resultsFromTable(output, CTSummary)
    ct = phantom.ct
    assert (summary.name, summary.orientation) == ("CT", "LPS")
    assert (summary.size_i, summary.size_j, summary.size_k) == ct.size
    assert (summary.spacing_i, summary.spacing_j, summary.spacing_k) == pytest.approx(tuple(ct.spacing))
    assert (summary.minimum, summary.maximum) == (ct.array.min(), ct.array.max())
    assert summary.mean == pytest.approx(ct.array.mean())


@pytest.mark.parametrize("logicClass", [BoneSRLibLogic, FocalDefectLibLogic, BoneMorphometryLibLogic])
def test_inputs_that_are_not_ct_in_hu_are_refused(slicer_app, phantom, logicClass):
    eightBit = volumeToNode(Volume(np.clip(phantom.ct.array // 8 + 128, 0, 255).astype(np.uint8)),
                            slicer_app.scene, name="export")
    with pytest.raises(BoneKitError, match="lowest value is 0"):
        logicClass().inputVolume(eightBit)
    labels = volumeToNode(phantom.labels, slicer_app.scene, labelmap=True, name="labels")
    with pytest.raises(BoneKitError, match="is a label map"):
        logicClass().inputVolume(labels)
    oneSlice = volumeToNode(Volume(phantom.ct.array[:1]), slicer_app.scene, name="slice")
    with pytest.raises(BoneKitError, match="single slice"):
        logicClass().inputVolume(oneSlice)


def test_bone_sr_needs_axial_slices(slicer_app, phantom):
    sagittal = phantom.ct.with_array(phantom.ct.array)
    sagittal.affine[:3, :3] = sagittal.affine[:3, [2, 1, 0]]  # k axis along left-right
    with pytest.raises(BoneKitError, match="sagittal"):
        BoneSRLibLogic().inputVolume(volumeToNode(sagittal, slicer_app.scene))


def test_focal_defect_refuses_thick_slices_and_shows_loss_maps(slicer_app, phantom, ctNode):
    logic = FocalDefectLibLogic()
    thick = volumeToNode(Volume.from_geometry(phantom.ct.array, (0.7, 0.7, 5.0)), slicer_app.scene)
    with pytest.raises(BoneKitError, match="at most 3 mm"):
        logic.inputVolume(thick)
    compositeNodes = slicer_app.addSliceViews()
    lossMap = volumeToNode(phantom.ct.with_array(np.zeros(phantom.ct.shape, np.float32)), slicer_app.scene)
    displayNode = logic.showLossMap(lossMap, ctNode)
    assert displayNode.GetColorNode().GetName() == "BoneKit ColdToHot"
    assert displayNode.GetLowerThreshold() == pytest.approx(logic.lossMapThreshold)
    assert all(c.GetForegroundVolumeID() == lossMap.GetID() and c.GetBackgroundVolumeID() == ctNode.GetID()
               for c in compositeNodes)


def radiographNode(image, name, spacing=(0.5, 0.5)):
    return slicer.util.addVolumeFromArray(image[np.newaxis], np.diag([spacing[1], spacing[0], 1.0, 1.0]), name)


def test_synthetic_ct_reads_a_radiograph_node_as_an_image(slicer_app, ctNode):
    image = np.outer(np.hanning(48), np.hanning(40)).astype(np.float32)
    pixels, spacing = SyntheticCTLibLogic().radiograph(radiographNode(3 * image, "Lateral", (0.5, 0.25)), "lateral")
    assert pixels.shape == (48, 40) and spacing == (0.5, 0.25)
    assert np.array_equal(pixels, 3 * image)
    with pytest.raises(BoneKitError, match="single slice"):
        SyntheticCTLibLogic().radiograph(ctNode, "AP")
    with pytest.raises(BoneKitError, match="No lateral radiograph"):
        SyntheticCTLibLogic().radiograph(None, "lateral")


def test_loading_the_libs_stays_light():
    """Slicer imports BoneKitLib and every <M>Lib when the modules load: SciPy, Numba and torch must wait."""
    paths = [str(REPOSITORY / folder) for folder in MODULE_FOLDERS]
    libs = ", ".join(f"{folder}Lib" if folder != "BoneKitLib" else folder for folder in MODULE_FOLDERS)
    probe = (f"import sys; sys.path[:0] = {paths!r}; import {libs}; "
             "print(sorted(m for m in ('scipy', 'numba', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

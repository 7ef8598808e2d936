"""Colour tables and foreground overlays of scalar maps (BoneKitLib.display)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)

from BoneKitLib import COLORMAPS, colorTableNode, showOverlay, volumeToNode  # noqa: E402
from bonekit import BoneKitError, Volume  # noqa: E402


def mapAndCT(scene):
    values = np.linspace(0.0, 1.0, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    lossMap = volumeToNode(Volume(values), scene, name="loss")
    ct = volumeToNode(Volume(np.zeros((4, 5, 6), np.int16)), scene, name="CT")
    return lossMap, ct


def rgb(hexColor):
    return tuple(int(hexColor[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_color_table_node_is_built_once_per_scene(slicer_app, name):
    node = colorTableNode(slicer_app.scene, name)
    assert node.GetName() == f"BoneKit {name}"
    assert node.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    node.GetColor(0, first)
    node.GetColor(255, last)
    assert np.allclose(first[:3], rgb(COLORMAPS[name][0]))
    assert np.allclose(last[:3], rgb(COLORMAPS[name][-1]))
    assert colorTableNode(slicer_app.scene, name) is node
    with pytest.raises(BoneKitError, match="Unknown colour map"):
        colorTableNode(slicer_app.scene, "Jet")


def test_overlay_sets_foreground_colour_window_and_threshold(slicer_app):
    compositeNodes = slicer_app.addSliceViews()
    lossMap, ct = mapAndCT(slicer_app.scene)
    displayNode = showOverlay(lossMap, (0.1, 0.9), threshold=0.05, colormap="ColdToHot", opacity=0.4,
                              backgroundNode=ct)
    assert displayNode is lossMap.GetDisplayNode()
    assert displayNode.GetColorNode().GetName() == "BoneKit ColdToHot"
    assert not displayNode.GetAutoWindowLevel()
    assert (displayNode.GetWindowLevelMin(), displayNode.GetWindowLevelMax()) == pytest.approx((0.1, 0.9))
    assert displayNode.GetApplyThreshold()
    assert displayNode.GetLowerThreshold() == pytest.approx(0.05)
    assert displayNode.GetUpperThreshold() > 1e30
    for compositeNode in compositeNodes:
        assert compositeNode.GetForegroundVolumeID() == lossMap.GetID()
        assert compositeNode.GetBackgroundVolumeID() == ct.GetID()
        assert compositeNode.GetForegroundOpacity() == pytest.approx(0.4)


def test_overlay_without_views_or_threshold(slicer_app):
    lossMap, _ = mapAndCT(slicer_app.scene)
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 0
    displayNode = showOverlay(lossMap, (0.0, 1.0))
    assert displayNode.GetColorNode().GetName() == "BoneKit Viridis"
    assert not displayNode.GetApplyThreshold()
    with pytest.raises(BoneKitError, match="increasing"):
        showOverlay(lossMap, (1.0, 1.0))
    with pytest.raises(BoneKitError, match="opacity"):
        showOverlay(lossMap, (0.0, 1.0), opacity=1.5)

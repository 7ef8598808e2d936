"""Widget plumbing shared by the modules (BoneKitLib.gui), with stand-ins for the Qt parts."""

import sys
from types import SimpleNamespace

import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)

from BoneKitLib import ParameterNodeWidgetMixin, reloadPackages  # noqa: E402


def test_reload_packages_reimports_in_dependency_order(tmp_path, monkeypatch):
    package = tmp_path / "reloadprobe"
    package.mkdir()
    (package / "__init__.py").write_text("from .uses import make\n")
    (package / "uses.py").write_text("from .shapes import Shape\n\ndef make():\n    return Shape()\n")
    (package / "shapes.py").write_text("class Shape:\n    sides = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import reloadprobe

    assert reloadprobe.make().sides == 3
    (package / "shapes.py").write_text("class Shape:\n    sides = 4\n")
    dropped = reloadPackages(["reloadprobe"])
    assert sorted(dropped) == ["reloadprobe", "reloadprobe.shapes", "reloadprobe.uses"]
    fresh = sys.modules["reloadprobe"]
    assert fresh is not reloadprobe
    assert fresh.make().sides == 4
    assert isinstance(fresh.make(), sys.modules["reloadprobe.shapes"].Shape)
    for name in dropped:
        sys.modules.pop(name, None)


class FakeParameterNode:
    """Just enough of a parameterNodeWrapper: attributes, GUI connection, VTK observers."""

    def __init__(self, scene):
        self.node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
        self.inputVolume = None
        self.outputTable = None
        self.connected = None

    def connectGui(self, ui):
        self.connected = ui
        return "tag"

    def disconnectGui(self, tag):
        assert tag == "tag"
        self.connected = None

    def AddObserver(self, *args):
        return self.node.AddObserver(*args)

    def RemoveObserver(self, tag):
        self.node.RemoveObserver(tag)


class Widget(ParameterNodeWidgetMixin):
    requiredParameters = ("inputVolume",)
    defaultNodeClasses = {"inputVolume": "vtkMRMLScalarVolumeNode"}

    def __init__(self, scene):
        super().__init__()
        self.ui = SimpleNamespace(applyButton=SimpleNamespace(enabled=True), progressBar=None)
        parameterNode = FakeParameterNode(scene)
        self.logic = SimpleNamespace(getParameterNode=lambda: parameterNode)


def test_apply_is_enabled_once_required_inputs_are_set(slicer_app):
    widget = Widget(slicer_app.scene)
    widget.initializeParameterNode()
    assert widget.ui.applyButton.enabled is False
    assert widget.missingParameters() == ["inputVolume"]
    volume = slicer_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    widget.initializeParameterNode()  # entering the module picks the scene's first volume
    assert widget._parameterNode.inputVolume is volume
    widget.updateApplyButton()
    assert widget.ui.applyButton.enabled is True
    widget._parameterNode.inputVolume = None
    widget._parameterNode.node.Modified()  # what a parameter change does: the observer updates Apply
    assert widget.ui.applyButton.enabled is False


def test_closing_the_scene_disconnects_the_gui(slicer_app):
    widget = Widget(slicer_app.scene)
    widget.initializeParameterNode()
    parameterNode = widget._parameterNode
    assert parameterNode.connected is widget.ui
    widget.onSceneStartClose(None, None)
    assert widget._parameterNode is None and parameterNode.connected is None
    assert widget.ui.applyButton.enabled is False
    parameterNode.node.Modified()  # observer removed: no call into the widget any more
    widget.cleanup()

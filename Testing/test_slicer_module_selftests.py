"""Import each module file (<M>.py) and run its Slicer self-test under pip slicer-core.

slicer-core lacks the Qt-bound parts of Slicer's Python package, so minimal stand-ins
are installed for the test: ``slicer.i18n`` (identity translation),
``slicer.parameterNodeWrapper`` (the decorated class just keeps the node, as ``.parameterNode``) and
``slicer.ScriptedLoadableModule`` (plain base classes; the test base is a
``unittest.TestCase`` whose ``delayDisplay`` does nothing). Everything the module
code itself calls (MRML, ``slicer.util``, BoneKitLib, the Lib logic) is real.
The widgets are not exercised: they need Qt.
"""

import importlib.util
import sys
import types
import unittest

import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import MODULE_FOLDERS, REPOSITORY, slicer_app  # noqa: E402,F401  (pytest fixture)

MODULES = [m for m in MODULE_FOLDERS if m != "BoneKitLib"]


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")


def parameterNodeWrapper(cls):
    def __init__(self, parameterNode):
        self.parameterNode = parameterNode

    cls.__init__ = __init__
    return cls


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass


@pytest.fixture
def slicerStandIns(monkeypatch):
    stubs = {
        "slicer.i18n": {"tr": lambda text: text, "translate": lambda context, text: text},
        "slicer.parameterNodeWrapper": {"parameterNodeWrapper": parameterNodeWrapper, "Choice": Choice,
                                        "WithinRange": WithinRange},
        "slicer.ScriptedLoadableModule": {c.__name__: c for c in (
            ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest)},
    }
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


class FakeProgressBar:
    """A QProgressBar's value, visibility and format."""

    def __init__(self):
        self.value, self.visible, self.format = 0, False, ""

    def setFormat(self, text):
        self.format = text


def cancellableRunStandIns(monkeypatch, widget):
    """Qt's part of a widget's Apply/Cancel run (BoneKitLib.CancellableRunMixin), simulated.

    While the run reports progress, ``slicer.app.processEvents`` records (Apply enabled, Cancel enabled)
    in ``states`` and clicks Cancel once the progress bar reaches ``cancelAt[0]`` (None: never); the error
    dialog records its messages in ``errors``. Returns ``(states, errors, cancelAt)``.
    """
    import contextlib

    import slicer

    states, errors, cancelAt = [], [], [None]

    def processEvents():  # what Qt does while the progress bar updates: handle the clicks and events
        widget.updateApplyButton()  # as a parameter-node change (another selection) would
        states.append((widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled))
        if cancelAt[0] is not None and widget.ui.progressBar.value >= cancelAt[0]:
            widget.onCancelButton()

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as error:
            errors.append(f"{message} {error}")
            raise

    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=processEvents, layoutManager=lambda: None),
                        raising=False)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", tryWithErrorDisplay)
    return states, errors, cancelAt


def loadModuleFile(name: str):
    spec = importlib.util.spec_from_file_location(f"bonekit_selftest_{name}", REPOSITORY / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", MODULES)
def test_module_self_test_passes(slicer_app, slicerStandIns, name):
    module = loadModuleFile(name)
    parent = types.SimpleNamespace()
    getattr(module, name)(parent)
    assert parent.title == name and parent.categories == ["BoneKit"]
    test = getattr(module, f"{name}Test")()
    test.runTest()
    if name == "BoneSR":  # a super-resolved volume (two runs: whole CT and ROI), no table
        torch = pytest.importorskip("torch")  # noqa: F841  (the self-test skips its run without it)
        names = [n.GetName() for n in slicer_app.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")]
        assert names.count("CT SR x2") == 2
    elif name == "SyntheticCT":  # two synthetic CTs: from the CT's DRRs and from the two radiograph nodes
        torch = pytest.importorskip("torch")  # noqa: F841
        names = [n.GetName() for n in slicer_app.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")]
        assert names.count("CT sCT") == 1 and names.count("AP sCT") == 1
    else:
        assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


@pytest.mark.parametrize("name", MODULES)
def test_module_logic_wraps_the_lib_logic_and_its_parameter_node(slicer_app, slicerStandIns, name):
    module = loadModuleFile(name)
    logic = getattr(module, f"{name}Logic")()
    assert isinstance(logic, getattr(module, f"{name}LibLogic"))
    parameterNode = logic.getParameterNode()
    assert type(parameterNode).__name__ == f"{name}ParameterNode"
    assert parameterNode.parameterNode.IsA("vtkMRMLScriptedModuleNode")

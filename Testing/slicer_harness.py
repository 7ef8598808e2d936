"""A Slicer "application" for pytest, built from the pip ``slicer-core`` MRML libraries.

No Qt and no ``slicer.app``: a scene, an application logic and the module logics
the adapters reach by name (reference: trame-slicer's ``SlicerApp``). The
fixture also shims ``slicer.mrmlScene`` and ``slicer.modules`` (undone after
each test), which ``slicer.util`` helpers such as ``addVolumeFromArray`` need.

Use from a test module (this file is not a conftest, so that it cannot collide
with the core suite's ``Testing/conftest.py``)::

    slicer = pytest.importorskip("slicer")
    from slicer_harness import slicer_app  # noqa: F401  (pytest fixture)

``phantom`` (BoneKitLib's ``smallSpinePhantom``) and ``ctNode`` (its CT in the scene, named
"CT") are fixtures too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
#: Folders that Slicer puts on sys.path (qt-scripted-modules): the shared Lib and the modules.
MODULE_FOLDERS = ("BoneKitLib", "BoneMorphometry", "FocalDefect", "BoneSR", "SyntheticCT")

for _folder in MODULE_FOLDERS:
    if str(REPOSITORY / _folder) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / _folder))


class SlicerApp:
    """Scene, application logic and module logics registered under their Slicer names."""

    LOGICS = {
        "Volumes": "vtkSlicerVolumesLogic",
        "Segmentations": "vtkSlicerSegmentationsModuleLogic",
        "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
        "Tables": "vtkSlicerTablesLogic",
        "Markups": "vtkSlicerMarkupsLogic",
    }

    def __init__(self) -> None:
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection

        self.scene = slicer.vtkMRMLScene()
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.appLogic.SetSliceLogics(vtkCollection())
        self.appLogic.SetViewLogics(vtkCollection())
        colorLogic = self.appLogic.GetColorLogic()
        colorLogic.SetMRMLScene(self.scene)
        colorLogic.AddDefaultColorNodes()
        self.appLogic.SetModuleLogic("Colors", colorLogic)
        self.logics = {"Colors": colorLogic}
        for name, className in self.LOGICS.items():
            logic = getattr(slicer, className)()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.appLogic)
            self.appLogic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    def modulesShim(self) -> SimpleNamespace:
        """Stand-in for ``slicer.modules``: ``slicer.modules.segmentations.logic()`` and so on."""
        return SimpleNamespace(**{name.lower(): SimpleNamespace(logic=lambda logic=logic: logic)
                                  for name, logic in self.logics.items()})

    def addSliceViews(self, names=("Red", "Yellow", "Green")) -> list:
        """One slice composite node per view name, as Slicer's layout would create."""
        nodes = []
        for name in names:
            node = self.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
            node.SetLayoutName(name)
            nodes.append(node)
        return nodes

    def close(self) -> None:
        """Empty the scene; the logics go with this object (unsetting their scene only logs warnings)."""
        self.scene.Clear(True)


@pytest.fixture
def slicer_app(monkeypatch) -> SlicerApp:
    """A fresh :class:`SlicerApp`, set as ``slicer.mrmlScene`` / ``slicer.modules`` for the test."""
    import slicer

    app = SlicerApp()
    monkeypatch.setattr(slicer, "mrmlScene", app.scene, raising=False)
    monkeypatch.setattr(slicer, "modules", app.modulesShim(), raising=False)
    yield app
    app.close()


@pytest.fixture
def phantom():
    """BoneKitLib's ``smallSpinePhantom()``: L1 and L2 on a coarse 1.5 x 1.5 x 2 mm grid."""
    from BoneKitLib import smallSpinePhantom

    return smallSpinePhantom()


@pytest.fixture
def ctNode(slicer_app, phantom):
    """The phantom's CT as a scalar volume node "CT" in the test's scene."""
    import slicer

    return slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.ijk_to_ras, "CT")

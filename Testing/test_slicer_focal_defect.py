"""FocalDefect logic (FocalDefectLib) on a scene built with pip slicer-core.

Phantom: ``focalVoidPhantom()``, a 300 HU block in air on an oblique, anisotropic grid
(0.5 x 0.5 x 0.7 mm, rotated 10 degrees), with two ROIs "L1" (one void, 3 mm) and "L2" (two voids,
2 and 2.5 mm) of 0 HU. Truths: the core, :func:`bonekit.focal.focal_maps`, run directly on the same
arrays and masks (the logic must give the same numbers, maps and geometry), the voids' known
centres and diameters, and the LPS <-> RAS relation (x and y negated).
"""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)
from test_slicer_module_selftests import (FakeProgressBar, cancellableRunStandIns,  # noqa: E402,F401
                                          loadModuleFile, slicerStandIns)  # Qt stand-ins

from BoneKitLib import (ensureConverterRules, ijkToRASMatrix, labelmapToSegmentation, resultsFromTable,  # noqa: E402
                        volumeFromNode, volumeToNode)
from FocalDefectLib import FocalDefectLibLogic, FocalRegion, ProcessingCancelled, focalVoidPhantom  # noqa: E402
from FocalDefectLib.Logic import MAP_DISPLAY, REGION_TAG  # noqa: E402
from bonekit import BoneKitError, Volume  # noqa: E402
from bonekit.calibration import Calibration  # noqa: E402
from bonekit.focal import MAP_NAMES, FocalParameters, FocalResult, focal_maps  # noqa: E402
from bonekit.volume import LPS_TO_RAS  # noqa: E402

NAMES = {1: "L1", 2: "L2"}


@pytest.fixture(scope="module")
def focal():
    return focalVoidPhantom()


@pytest.fixture(scope="module")
def core(focal):
    """The core's own answer for each ROI: {label: (FocalResult, maps)}."""
    return {label: focal_maps(focal.ct, focal.labels.with_array((focal.labels.array == label).astype(np.uint8)))
            for label in NAMES}


@pytest.fixture
def ctNode(slicer_app, focal):
    """The CT as node "CT", geometry bit for bit the phantom's (volumeToNode, not addVolumeFromArray)."""
    return volumeToNode(focal.ct, slicer_app.scene, name="CT")


@pytest.fixture
def roisNode(slicer_app, focal, ctNode):
    """The two ROIs as segments "L1" and "L2" of a segmentation "ROIs"."""
    return labelmapToSegmentation(focal.labels, slicer_app.scene, names=focal.names, referenceNode=ctNode,
                                  name="ROIs")


def nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def tableValues(table) -> list[list]:
    t = table.GetTable()
    return [[t.GetValue(r, c).ToString() for c in range(t.GetNumberOfColumns())] for r in range(t.GetNumberOfRows())]


# ----------------------------------------------------------------------------- results
def test_one_table_row_per_segment_with_the_core_values_and_units(slicer_app, ctNode, roisNode, core):
    outputs = FocalDefectLibLogic().process(ctNode, roisNode)
    table = outputs.table
    assert table.GetName() == "Focal bone loss"
    assert [r.segment for r in resultsFromTable(table, FocalRegion)] == ["L1", "L2"]
    rows = resultsFromTable(table, FocalResult)
    assert rows == [core[1][0], core[2][0]]  # every column, the parameters (JSON) included
    assert outputs.results == {"L1": core[1][0], "L2": core[2][0]}
    for row in rows:  # uncalibrated: HU, no BMD; voids were found
        assert row.BMD is None and row.HU == pytest.approx(300, abs=30) and row.density == "HU (uncalibrated)"
        assert row.IncptWidth > 0 and 0 < row.FocalBMDLoss < 1 and row.FocalBMCLoss > 0
    for column in FocalResult.columns():
        assert table.GetColumnUnitLabel(column["name"]) == (column["unit"] or "")
    assert table.GetColumnUnitLabel("IncptWidth") == "mm" and table.GetColumnUnitLabel("FocalBMDLoss") == "1"
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


def test_map_nodes_are_the_core_maps_with_the_core_geometry(slicer_app, ctNode, roisNode, core):
    outputs = FocalDefectLibLogic().process(ctNode, roisNode)
    assert set(outputs.maps) == {"L1", "L2"}
    for label, name in NAMES.items():
        assert set(outputs.maps[name]) == set(MAP_NAMES)
        for mapName in MAP_NAMES:
            node, truth = outputs.maps[name][mapName], core[label][1][mapName]
            assert node.GetName() == f"CT {name} {mapName}"
            assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
            values = slicer.util.arrayFromVolume(node)
            assert values.dtype == np.float32 and np.array_equal(values, truth.array)
            assert np.array_equal(ijkToRASMatrix(node), LPS_TO_RAS @ truth.affine)  # bit for bit
            assert np.allclose(np.linalg.norm(truth.affine[:3, :3], axis=0), 0.3)  # the 0.3 mm isotropic grid
            assert np.array_equal(volumeFromNode(node).affine, truth.affine)
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1 + 2 * 3  # CT + maps


def test_maps_find_the_voids_and_are_zero_far_from_them(slicer_app, focal, ctNode, roisNode, core):
    outputs = FocalDefectLibLogic().process(ctNode, roisNode)
    for label, name in NAMES.items():
        voids = [v for v in focal.voids if v["label"] == label]
        maps = {m: volumeFromNode(outputs.maps[name][m]) for m in MAP_NAMES}
        for void in voids:
            i, j, k = np.rint(maps["IncptWidth"].physical_to_index(void["centre_lps_mm"])).astype(int)
            width, bmdLoss, bmcLoss = (maps[m].array[k, j, i] for m in MAP_NAMES)
            assert abs(width - void["diameter_mm"]) < 0.3  # every line through the centre crosses the whole void
            assert 0.875 < bmdLoss <= 1.0  # (1200 - HU) / 1200 with HU between 0 and 150 (half the bone level)
            assert 0.8 * width * bmdLoss < bmcLoss <= width
        # voids are cylinders along the slice axis (LPS z): distance in the axial plane
        grid = maps["IncptWidth"]
        kk, jj, ii = np.indices(grid.shape)
        lps = grid.index_to_physical(np.stack([ii, jj, kk], axis=-1).reshape(-1, 3)).reshape(*grid.shape, 3)
        distance = np.min([np.hypot(*(lps[..., :2] - np.asarray(v["centre_lps_mm"][:2])).transpose(3, 0, 1, 2))
                           for v in voids], axis=0)
        far = distance > 6.0  # the halo of blur and sharpening reaches 4.5-5 mm from a void's centre
        roi = core[label][1]["ROI"].array > 0  # the resampled ROI, on the maps' grid
        assert np.count_nonzero(far & roi) > 1000  # far ROI voxels exist ...
        for mapName in MAP_NAMES:
            assert np.all(maps[mapName].array[far] == 0.0)  # ... and lie in no void
            assert np.any(maps[mapName].array > 0)


# ----------------------------------------------------------------------------- display
def test_maps_are_shown_with_fixed_ranges_colour_tables_and_legends(slicer_app, ctNode, roisNode):
    views = slicer_app.addSliceViews()
    logic = FocalDefectLibLogic()
    outputs = logic.process(ctNode, roisNode)
    colourNodes = set()
    for name in NAMES.values():
        for mapName, display in MAP_DISPLAY.items():
            node = outputs.maps[name][mapName]
            displayNode = node.GetDisplayNode()
            assert displayNode.GetColorNode().GetName() == f"BoneKit {display.colormap}"
            colourNodes.add(displayNode.GetColorNodeID())
            assert not displayNode.GetAutoWindowLevel()
            assert (displayNode.GetWindowLevelMin(), displayNode.GetWindowLevelMax()) == display.valueRange
            values = slicer.util.arrayFromVolume(node)
            # zero (no void) hidden, every void voxel drawn
            assert displayNode.GetApplyThreshold() == 1
            assert 0.0 < displayNode.GetLowerThreshold() < values[values > 0].min()
            legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
            assert legend is not None and legend.GetVisibility() and legend.GetTitleText() == display.title
    assert MAP_DISPLAY["IncptWidth"].valueRange == (0.0, 3.0) and MAP_DISPLAY["FocalBMCLoss"].valueRange == (0.0, 3.0)
    assert MAP_DISPLAY["FocalBMDLoss"].valueRange == (0.0, 1.0)
    assert len(colourNodes) == 3  # one colour table per kind of map, shared by the regions
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 6
    shown = outputs.maps["L1"]["FocalBMCLoss"]
    for view in views:
        assert (view.GetForegroundVolumeID(), view.GetBackgroundVolumeID()) == (shown.GetID(), ctNode.GetID())
        assert view.GetForegroundOpacity() == pytest.approx(logic.mapOpacity)
    # showLossMap knows which map a node holds
    width = outputs.maps["L2"]["IncptWidth"]
    displayNode = logic.showLossMap(width)
    assert displayNode.GetColorNode().GetName() == "BoneKit Viridis"
    assert (displayNode.GetWindowLevelMin(), displayNode.GetWindowLevelMax()) == (0.0, 3.0)
    assert all(view.GetForegroundVolumeID() == width.GetID() for view in views)


def test_maps_can_be_left_undisplayed(slicer_app, ctNode, roisNode):
    views = slicer_app.addSliceViews()
    outputs = FocalDefectLibLogic().process(ctNode, roisNode, showMaps=False)
    assert all(view.GetForegroundVolumeID() is None for view in views)
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 0
    assert len(outputs.maps) == 2


# ----------------------------------------------------------------------------- inputs
def test_label_map_gives_one_run_per_label_on_or_off_the_ct_grid(slicer_app, focal, ctNode, core):
    logic = FocalDefectLibLogic()
    labelNode = volumeToNode(focal.labels, slicer_app.scene, labelmap=True, name="ROI labels")
    outputs = logic.process(ctNode, labelNode)
    assert [r.segment for r in resultsFromTable(outputs.table, FocalRegion)] == ["Label 1", "Label 2"]
    assert resultsFromTable(outputs.table, FocalResult) == [core[1][0], core[2][0]]
    assert outputs.maps["Label 2"]["IncptWidth"].GetName() == "CT Label 2 IncptWidth"
    # cropped to the labels' box: another grid, resampled (nearest neighbour) back exactly
    nz = np.nonzero(focal.labels.array)
    cropped = focal.labels.crop(tuple(slice(a.min(), a.max() + 1) for a in nz))
    assert not cropped.same_grid(focal.ct)
    croppedNode = volumeToNode(cropped, slicer_app.scene, labelmap=True, name="Cropped labels")
    only2 = logic.process(ctNode, croppedNode, segments=[2])
    assert list(only2.results) == ["Label 2"] and only2.results["Label 2"] == core[2][0]


def test_segments_are_chosen_by_id_or_name_in_the_order_given(slicer_app, ctNode, roisNode, core):
    logic = FocalDefectLibLogic()
    segmentation = roisNode.GetSegmentation()
    outputs = logic.process(ctNode, roisNode, segments=["L2", segmentation.GetSegmentIdBySegmentName("L1")])
    assert [r.segment for r in resultsFromTable(outputs.table, FocalRegion)] == ["L2", "L1"]
    assert list(outputs.results.values()) == [core[2][0], core[1][0]]


def test_bone_morphometry_roi_segments_are_the_default(slicer_app, focal, ctNode, core):
    from BoneMorphometryLib.Logic import REGION_TAG as BONE_MORPHOMETRY_REGION_TAG

    assert REGION_TAG == BONE_MORPHOMETRY_REGION_TAG
    labels = focal.labels.array.copy()
    labels[1:3, 7:-7, 7:-7] = 3  # a "body" below both ROIs
    regions = labelmapToSegmentation(focal.labels.with_array(labels), slicer_app.scene,
                                     names={1: "L1 ROI", 2: "L2 ROI", 3: "L1 body"}, referenceNode=ctNode,
                                     name="Vertebra regions")
    segmentation = regions.GetSegmentation()
    for segmentId in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segmentId)
        segment.SetTag(REGION_TAG, segment.GetName().split()[1])
    outputs = FocalDefectLibLogic().process(ctNode, regions)
    assert list(outputs.results) == ["L1 ROI", "L2 ROI"]
    assert list(outputs.results.values()) == [core[1][0], core[2][0]]
    assert outputs.maps["L1 ROI"]["FocalBMCLoss"].GetName() == "CT L1 ROI FocalBMCLoss"


def test_a_calibration_gives_bmd_values_from_a_file_or_an_object(slicer_app, focal, ctNode, roisNode, tmp_path):
    calibration = Calibration.fit([0.0, 300.0], [10.0, 250.0])
    path = calibration.save(tmp_path / "calibration.json")
    mask = focal.labels.with_array((focal.labels.array == 1).astype(np.uint8))
    truth, truthMaps = focal_maps(focal.ct, mask, calibration)
    logic = FocalDefectLibLogic()
    fromFile = logic.process(ctNode, roisNode, segments=["L1"], calibration=str(path))
    assert fromFile.results["L1"] == truth
    assert truth.BMD == pytest.approx(250, abs=25) and truth.HU is None and truth.density == "BMD (mg HA/cm3)"
    [row] = resultsFromTable(fromFile.table, FocalResult)
    assert row.BMD == truth.BMD and row.HU is None
    assert np.array_equal(slicer.util.arrayFromVolume(fromFile.maps["L1"]["FocalBMDLoss"]),
                          truthMaps["FocalBMDLoss"].array)
    assert logic.process(ctNode, roisNode, segments=["L1"], calibration=calibration).results["L1"] == truth
    hu = logic.process(ctNode, roisNode, segments=["L1"], calibration=path, units="hu").results["L1"]
    assert hu.BMD is None and hu.HU is not None


def test_parameters_reach_the_core(slicer_app, focal, ctNode, roisNode):
    params = FocalParameters(angle_step_deg=30.0)
    outputs = FocalDefectLibLogic().process(ctNode, roisNode, segments=["L2"], params=params)
    truth, _ = focal_maps(focal.ct, focal.labels.with_array((focal.labels.array == 2).astype(np.uint8)),
                          params=FocalParameters(angle_step_deg=30.0))
    assert outputs.results["L2"] == truth and truth.orientations == 6


# ----------------------------------------------------------------------------- progress and cancel
def test_progress_runs_from_0_to_1_and_names_each_region(slicer_app, ctNode, roisNode):
    calls = []
    FocalDefectLibLogic().process(ctNode, roisNode, progressCallback=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert any(m.startswith("L1: star line") for _, m in calls) and any(m.startswith("L2: ") for _, m in calls)
    assert max(f for f, m in calls if m.startswith("L1: ")) <= min(f for f, m in calls if m.startswith("L2: "))


def test_cancel_stops_the_run_and_writes_nothing(slicer_app, ctNode, roisNode):
    scene = slicer_app.scene
    logic = FocalDefectLibLogic()
    before = nodeIds(scene)
    messages = []

    def progress(fraction, message):
        messages.append(message)
        if message.startswith("L2: "):  # L1 is done: its results must not be written either
            logic.cancel()

    with pytest.raises(ProcessingCancelled, match="nothing was written"):
        logic.process(ctNode, roisNode, progressCallback=progress)
    assert any(m.startswith("L1: focal maps done") for m in messages)
    assert sum(m.startswith("L2: ") for m in messages) == 1  # stopped at the first report after the cancel
    assert nodeIds(scene) == before
    assert logic.cancelRequested
    # an earlier run's outputs are left as they were, and the next run starts afresh
    outputs = logic.process(ctNode, roisNode)
    assert not logic.cancelRequested
    table, kept = outputs.table, tableValues(outputs.table)
    after = nodeIds(scene)
    with pytest.raises(ProcessingCancelled):
        logic.process(ctNode, roisNode, outputTableNode=table,
                      progressCallback=lambda f, m: logic.cancel() if f > 0.5 else None)
    assert nodeIds(scene) == after and tableValues(table) == kept


def test_a_second_run_overwrites_its_own_maps_and_table(slicer_app, ctNode, roisNode):
    logic = FocalDefectLibLogic()
    first = logic.process(ctNode, roisNode)
    count = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    second = logic.process(ctNode, roisNode, segments=["L2"], outputTableNode=first.table)
    assert second.table is first.table and first.table.GetNumberOfRows() == 1
    assert {m: n.GetID() for m, n in second.maps["L2"].items()} == {m: n.GetID() for m, n in first.maps["L2"].items()}
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    # another CT's maps are its own nodes
    otherCT = volumeToNode(volumeFromNode(ctNode), slicer_app.scene, name="CT2")
    third = logic.process(otherCT, roisNode, segments=["L2"])
    assert third.maps["L2"]["IncptWidth"].GetName() == "CT2 L2 IncptWidth"
    assert third.maps["L2"]["IncptWidth"].GetID() != first.maps["L2"]["IncptWidth"].GetID()


# ----------------------------------------------------------------------------- bad input
def emptySegment(node, name="Empty"):
    ensureConverterRules(node.GetScene())
    node.GetSegmentation().AddEmptySegment(name, name)
    return node


def thinSegment(slicer_app, focal, ctNode):
    dot = np.zeros(focal.ct.shape, np.uint8)
    dot[5, 20, 20] = 1
    return labelmapToSegmentation(focal.ct.with_array(dot), slicer_app.scene, names={1: "Dot"},
                                  referenceNode=ctNode, name="Dot")


BAD_INPUTS = {
    "no CT": (lambda app, f, ct, rois: dict(inputVolumeNode=None, roiNode=rois), "No volume selected"),
    "no ROI": (lambda app, f, ct, rois: dict(roiNode=None), "No ROI selected"),
    "empty segment": (lambda app, f, ct, rois: dict(roiNode=emptySegment(rois), segments=["L1", "Empty"]),
                      "segment 'Empty' of 'ROIs' is empty on the CT grid"),
    "no segments": (lambda app, f, ct, rois: dict(
        roiNode=app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")), "'Nothing' is empty"),
    "unknown segment": (lambda app, f, ct, rois: dict(segments=["L7"]), "has no segment 'L7'"),
    "CT as ROI": (lambda app, f, ct, rois: dict(roiNode=ct), "both as the CT and as the ROI"),
    "grey-level ROI": (lambda app, f, ct, rois: dict(roiNode=volumeToNode(f.ct, app.scene, name="grey")),
                       "must be a segmentation or a label map. A grey-level volume"),
    "empty label map": (lambda app, f, ct, rois: dict(roiNode=volumeToNode(
        f.labels.with_array(np.zeros(f.labels.shape, np.uint8)), app.scene, labelmap=True, name="zeros")),
        "'zeros' has no label"),
    "unknown label": (lambda app, f, ct, rois: dict(roiNode=volumeToNode(f.labels, app.scene, labelmap=True,
                                                                        name="labels"), segments=[5]),
                      "has no label 5"),
    "thick slices": (lambda app, f, ct, rois: dict(inputVolumeNode=volumeToNode(
        Volume.from_geometry(f.ct.array, (0.5, 0.5, 4.0)), app.scene, name="thick")), "at most 3 mm"),
    "ROI thinner than a profile": (lambda app, f, ct, rois: dict(roiNode=thinSegment(app, f, ct)),
                                   "Focal bone loss of 'Dot': The ROI is thinner than one profile"),
    "bad parameters": (lambda app, f, ct, rois: dict(params=FocalParameters(level=2.0)), "level must lie in"),
    "missing calibration": (lambda app, f, ct, rois: dict(calibration="/no/such/calibration.json"),
                            "calibration file /no/such/calibration.json does not exist"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_clearly_and_writes_nothing(slicer_app, focal, ctNode, roisNode, case):
    make, message = BAD_INPUTS[case]
    arguments = dict(inputVolumeNode=ctNode, roiNode=roisNode)
    arguments.update(make(slicer_app, focal, ctNode, roisNode))
    before = nodeIds(slicer_app.scene)
    with pytest.raises(BoneKitError, match=message):
        FocalDefectLibLogic().process(**arguments)
    assert nodeIds(slicer_app.scene) == before
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


def test_the_sample_phantom_is_what_its_docstring_says(focal):
    ct = focal.ct
    assert ct.array.dtype == np.int16 and ct.array.min() == -1000 and ct.array.max() == 300
    assert np.allclose(ct.spacing, (0.5, 0.5, 0.7)) and not np.allclose(ct.direction, np.eye(3))
    assert sorted(np.unique(focal.labels.array).tolist()) == [0, 1, 2] and focal.labels.same_grid(ct)
    for void in focal.voids:  # the void centres are far below half the bone level, and inside their ROI
        i, j, k = np.rint(ct.physical_to_index(void["centre_lps_mm"])).astype(int)
        assert 0 <= ct.array[k, j, i] < 100 and focal.labels.array[k, j, i] == void["label"]
    inside = focal.labels.array > 0  # the ROIs keep 2 mm of bone to the block's edge
    assert np.all(ct.array[inside] >= 0)


# ----------------------------------------------------------------------------- widget (Qt stood in for)
def test_widget_applies_cancels_and_reports_errors(slicer_app, slicerStandIns, monkeypatch, ctNode, roisNode):
    """The thin widget of FocalDefect.py with the Qt parts stood in for: Apply runs the logic with the
    parameters (the calibration path as the path widget gives it when empty), Cancel stops it cleanly,
    errors go to the error display, and the buttons follow the run."""
    import pathlib
    from types import SimpleNamespace

    module = loadModuleFile("FocalDefect")
    widget = module.FocalDefectWidget()
    widget.ui = SimpleNamespace(applyButton=SimpleNamespace(enabled=True), cancelButton=SimpleNamespace(enabled=False),
                                progressBar=FakeProgressBar())
    widget.logic = module.FocalDefectLogic()
    parameters = SimpleNamespace(inputVolume=ctNode, roiNode=roisNode, calibrationFile=pathlib.Path(""),
                                 outputTable=None)
    widget._parameterNode = parameters
    states, errors, cancelAt = cancellableRunStandIns(monkeypatch, widget)

    widget.onApplyButton()
    table = parameters.outputTable
    assert table is not None and [r.segment for r in resultsFromTable(table, FocalRegion)] == ["L1", "L2"]
    assert states and all(state == (False, True) for state in states)  # Apply off, Cancel on while running
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)
    assert widget.ui.progressBar.value == 100 and not errors

    before, kept = nodeIds(slicer_app.scene), tableValues(table)
    cancelAt[0] = 50
    widget.onApplyButton()  # no exception: a cancel is not an error
    assert widget.ui.progressBar.format == "Cancelled: nothing was written" and widget.ui.progressBar.value < 100
    assert nodeIds(slicer_app.scene) == before and tableValues(table) == kept and parameters.outputTable is table
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False) and not errors

    cancelAt[0] = None
    parameters.roiNode = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
    with pytest.raises(BoneKitError):
        widget.onApplyButton()
    assert errors == ["Failed to map focal bone loss. The segmentation 'Nothing' is empty: it has no segments. "
                      "Run BoneMorphometry first, or draw the ROI in the Segment Editor."]
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)

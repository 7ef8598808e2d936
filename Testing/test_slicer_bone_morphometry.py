"""BoneMorphometry logic (BoneMorphometryLib) on a scene built with pip slicer-core.

Truths: the phantoms' own label maps and body centres, the core's analyse_vertebrae run
directly on the same CT and labels, the core's morphometry run on the whole CT with the VOI
segments read back from MRML as masks, and the LPS <-> RAS relation (x and y negated).
Phantoms: ``smallSpinePhantom(vertebrae=("L1", "L2", "L3"))`` (1.5 x 1.5 x 2 mm, coarse:
GrowCut Dice 0.955-0.982) and the same three vertebrae at 0.75 x 0.75 x 1.25 mm (Dice 0.977-0.986).
"""

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import ctNode, slicer_app  # noqa: E402,F401  (pytest fixtures; ctNode uses phantom below)

import vtk  # noqa: E402
from BoneKitLib import (LABEL_VALUE_TAG, addResultColumns, ijkToRASMatrix, labelmapToSegmentation,  # noqa: E402
                        resultsFromTable, segmentationToLabelmap, segmentLabelValues, smallSpinePhantom)
from BoneMorphometryLib import BoneMorphometryLibLogic  # noqa: E402
from BoneMorphometryLib.Logic import AUTOMATIC_VOI_ATTRIBUTE, REGION_TAG  # noqa: E402
from BoneMorphometryLib.Trabecular import parseMorphometryBlur, parseMorphometryThreshold  # noqa: E402
from bonekit import BoneKitError  # noqa: E402
from bonekit.points import VERSE_NAMES, write_csv_points  # noqa: E402

RAS = np.array([-1.0, -1.0, 1.0])  # LPS -> RAS and back
NAMES = ["L1", "L2", "L3"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def truthPoints(phantom) -> dict[int, np.ndarray]:
    """VerSe id -> body centre (LPS mm) from the phantom's truth."""
    return {v["label"]: np.asarray(v["centre_lps_mm"], float) for v in phantom.truth["vertebrae"]}


def addPoints(scene, points: dict[int, np.ndarray], name="Vertebra points", labels=None):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for vid, lps in points.items():
        node.AddControlPoint(*(lps * RAS), labels(vid) if labels else VERSE_NAMES[vid])
    return node


def segmentArray(segmentationNode, name: str, ct) -> np.ndarray:
    """One segment, found by name, as a boolean array on the CT grid."""
    segmentation = segmentationNode.GetSegmentation()
    [segmentId] = [i for i in segmentation.GetSegmentIDs() if segmentation.GetSegment(i).GetName() == name]
    labels, _ = segmentationToLabelmap(segmentationNode, ct, [segmentId])
    return labels.array > 0


def segmentNames(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()]


@pytest.fixture
def phantom():
    """Three vertebrae (L1-L3), coarse 1.5 x 1.5 x 2 mm voxels; overrides slicer_harness's two-vertebra phantom."""
    return smallSpinePhantom(vertebrae=("L1", "L2", "L3"))


@pytest.fixture
def pointsNode(slicer_app, phantom):
    return addPoints(slicer_app.scene, truthPoints(phantom))


@pytest.fixture
def vertebraeNode(slicer_app, phantom, ctNode):
    """The phantom's true vertebra labels as a segmentation (as a user's finished segmentation)."""
    return labelmapToSegmentation(phantom.labels, slicer_app.scene, names=VERSE_NAMES, referenceNode=ctNode,
                                  name="Vertebrae")


# ----------------------------------------------------------------------------- segmentation
def test_segment_from_points_matches_the_phantom(slicer_app, phantom, ctNode, pointsNode):
    progress = []
    node = BoneMorphometryLibLogic().segment(ctNode, pointsNode, progressCallback=lambda f, m: progress.append(f))
    assert segmentNames(node) == NAMES
    segmentation = node.GetSegmentation()
    assert list(segmentLabelValues(node).values()) == [20, 21, 22]
    labels, _ = segmentationToLabelmap(node, ctNode)
    for vid in (20, 21, 22):
        assert dice(labels.array == vid, phantom.labels.array == vid) >= 0.93  # measured 0.955, 0.982, 0.955
    assert segmentation.ContainsRepresentation("Closed surface")  # shown in 3D
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)


def test_segment_two_vertebrae(slicer_app):
    phantom = smallSpinePhantom()  # L1, L2 only
    ctNode = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.ijk_to_ras, "CT")
    node = BoneMorphometryLibLogic().segment(ctNode, addPoints(slicer_app.scene, truthPoints(phantom)))
    labels, _ = segmentationToLabelmap(node, ctNode)
    for vid in (20, 21):  # 1.5 x 1.5 x 2 mm voxels: a one-voxel shell is ~20 % of a vertebra; measured 0.876
        assert dice(labels.array == vid, phantom.labels.array == vid) >= 0.85


def test_segment_a_finer_phantom_closely(slicer_app):
    from bonekit.phantom import spine_phantom

    phantom = spine_phantom(vertebrae=("L1", "L2", "L3"), bvtv=(0.12,), spacing_mm=(0.75, 0.75, 1.25),
                            truth_morphometry=False)
    ctNode = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.ijk_to_ras, "CT")
    node = BoneMorphometryLibLogic().segment(ctNode, addPoints(slicer_app.scene, truthPoints(phantom)))
    labels, _ = segmentationToLabelmap(node, ctNode)
    for vid in (20, 21, 22):
        assert dice(labels.array == vid, phantom.labels.array == vid) >= 0.97  # measured 0.976-0.985


def test_point_files_give_the_same_segmentation(slicer_app, phantom, ctNode, pointsNode, tmp_path):
    logic = BoneMorphometryLibLogic()
    fromNode, _ = segmentationToLabelmap(logic.segment(ctNode, pointsNode), ctNode)
    csv = write_csv_points(truthPoints(phantom), tmp_path / "points.csv")
    fromCsv, _ = segmentationToLabelmap(logic.segment(ctNode, str(csv)), ctNode)
    assert np.array_equal(fromCsv.array, fromNode.array)
    ctd = tmp_path / "ct_seg-subreg_ctd.json"  # VerSe centroids, voxel indices of the LPS-oriented CT
    ijk = {vid: phantom.ct.physical_to_index(lps) for vid, lps in truthPoints(phantom).items()}
    ctd.write_text(json.dumps([{"direction": ["L", "P", "S"]}]
                              + [{"label": vid, "X": i, "Y": j, "Z": k} for vid, (i, j, k) in ijk.items()]))
    fromCtd, _ = segmentationToLabelmap(logic.segment(ctNode, ctd), ctNode)
    assert np.array_equal(fromCtd.array, fromNode.array)


def test_segmenting_again_replaces_the_segments(slicer_app, ctNode, pointsNode):
    logic = BoneMorphometryLibLogic()
    node = logic.segment(ctNode, pointsNode)
    pointsNode.RemoveNthControlPoint(1)  # L2 gone: L1 and L3 with a gap
    assert logic.segment(ctNode, pointsNode, node) is node
    assert segmentNames(node) == ["L1", "L3"]


# ----------------------------------------------------------------------------- analysis
def test_table_rows_match_the_core_analysis(slicer_app, phantom, ctNode, vertebraeNode, tmp_path):
    from bonekit.calibration import Calibration
    from bonekit.vertebra import VertebraResult, analyse_vertebrae

    calibration = Calibration.fit([-2.0, 120.0, 242.0], [0.0, 100.0, 200.0])
    path = calibration.save(tmp_path / "calibration.json")
    logic = BoneMorphometryLibLogic()
    outputs = logic.analyse(ctNode, vertebraeNode, calibrationPath=str(path))
    labels, _ = logic.vertebraLabels(vertebraeNode, logic.inputVolume(ctNode))
    assert np.array_equal(labels.array, phantom.labels.array)
    expected, _ = analyse_vertebrae(logic.inputVolume(ctNode), phantom.labels, calibration)
    rows = resultsFromTable(outputs.table, VertebraResult)
    assert [r.vertebra for r in rows] == NAMES
    assert rows == expected  # every column, exactly (doubles in the table; None as NaN)
    for row in rows:
        assert row.calibrated and row.BMD == pytest.approx(calibration.bmd(row.HU))
    assert outputs.table.GetName() == "Vertebra measurements"
    for column, unit in (("BMD", "mg HA/cm3"), ("HU", "HU"), ("Ha", "mm"), ("VOI.x", "mm"), ("Body.V", "mm3")):
        assert outputs.table.GetColumnUnitLabel(column) == unit


def test_regions_are_the_core_masks(slicer_app, phantom, ctNode, vertebraeNode):
    from bonekit.vertebra import analyse_vertebrae

    logic = BoneMorphometryLibLogic()
    outputs = logic.analyse(ctNode, vertebraeNode)
    ct = logic.inputVolume(ctNode)
    _, masks = analyse_vertebrae(ct, phantom.labels)
    assert outputs.regions is not vertebraeNode and segmentNames(vertebraeNode) == NAMES
    assert sorted(segmentNames(outputs.regions)) == sorted(f"{n} {r}" for n in NAMES for r in ("body", "ROI", "VOI"))
    for kind, suffix in (("body", "body"), ("roi", "ROI"), ("voi", "VOI")):
        for vid, name in zip((20, 21, 22), NAMES):
            expected = getattr(masks, kind).array == vid
            assert expected.any()
            assert np.array_equal(segmentArray(outputs.regions, f"{name} {suffix}", ct), expected)
    segmentation = outputs.regions.GetSegmentation()
    display = outputs.regions.GetDisplayNode()
    assert segmentation.ContainsRepresentation("Closed surface")
    for segmentId in segmentation.GetSegmentIDs():
        tag = vtk.reference("")
        segmentation.GetSegment(segmentId).GetTag(REGION_TAG, tag)
        isVoi = str(tag) == "VOI"
        assert display.GetSegmentVisibility3D(segmentId) == isVoi
        assert display.GetSegmentVisibility2DFill(segmentId) == isVoi


def test_voi_points_sit_at_the_voi_columns(slicer_app, ctNode, vertebraeNode):
    from bonekit.vertebra import VertebraResult

    outputs = BoneMorphometryLibLogic().analyse(ctNode, vertebraeNode)
    node = outputs.voiPoints
    assert node.GetName() == "VOI centres" and node.GetNumberOfControlPoints() == 3
    for index, row in enumerate(resultsFromTable(outputs.table, VertebraResult)):
        assert node.GetNthControlPointLabel(index) == row.vertebra
        ras = np.array(node.GetNthControlPointPosition(index))
        assert ras == pytest.approx([-row.voi_x, -row.voi_y, row.voi_z], abs=1e-9)  # table is LPS, points RAS
        assert ras[2] == pytest.approx(row.voi_z) and abs(ras[0] + row.voi_x) < 1e-9


def test_moving_a_voi_point_moves_only_that_voi(slicer_app, phantom, ctNode, vertebraeNode):
    from bonekit.vertebra import VertebraResult, analyse_vertebrae

    logic = BoneMorphometryLibLogic()
    first = logic.analyse(ctNode, vertebraeNode)
    ct = logic.inputVolume(ctNode)
    before = {name: segmentArray(first.regions, name, ct) for name in segmentNames(first.regions)}
    rowsBefore = resultsFromTable(first.table, VertebraResult)
    # the user drags L1's point 3 mm to the patient's right (RAS x - 3) and 2 mm up
    ras = np.array(first.voiPoints.GetNthControlPointPosition(0)) + [-3.0, 0.0, 2.0]
    first.voiPoints.SetNthControlPointPosition(0, *ras)
    second = logic.analyse(ctNode, vertebraeNode, voiPointsNode=first.voiPoints, outputTableNode=first.table,
                           outputRegionsNode=first.regions)
    assert (second.table, second.regions, second.voiPoints) == (first.table, first.regions, first.voiPoints)
    moved = ras * RAS
    _, masks = analyse_vertebrae(ct, phantom.labels, voi_centres={20: moved})
    after = {name: segmentArray(second.regions, name, ct) for name in segmentNames(second.regions)}
    assert np.array_equal(after["L1 VOI"], masks.voi.array == 20)
    assert not np.array_equal(after["L1 VOI"], before["L1 VOI"])
    assert all(np.array_equal(after[name], before[name]) for name in before if name != "L1 VOI")
    rowsAfter = resultsFromTable(second.table, VertebraResult)
    assert (rowsAfter[0].voi_x, rowsAfter[0].voi_y, rowsAfter[0].voi_z) == pytest.approx(tuple(moved))
    voiColumns = {"voi_x", "voi_y", "voi_z", "VOI_HU", "VOI_BMD"}
    for old, new in zip(rowsBefore, rowsAfter):
        for attribute in VertebraResult.__dataclass_fields__:
            if attribute not in voiColumns or new.label != 20:
                assert getattr(new, attribute) == getattr(old, attribute), attribute
    assert rowsAfter[0].VOI_HU != rowsBefore[0].VOI_HU
    assert np.array(second.voiPoints.GetNthControlPointPosition(0)) == pytest.approx(ras)
    # the moved point stays put when analysing again; deleting it gives the automatic centre back
    third = logic.analyse(ctNode, vertebraeNode, voiPointsNode=second.voiPoints)
    assert (third.rows[0].voi_x, third.rows[0].voi_z) == pytest.approx((moved[0], moved[2]))
    third.voiPoints.RemoveNthControlPoint(0)
    fourth = logic.analyse(ctNode, vertebraeNode, voiPointsNode=third.voiPoints)
    automatic = json.loads(fourth.voiPoints.GetAttribute(AUTOMATIC_VOI_ATTRIBUTE))
    assert (fourth.rows[0].voi_x, fourth.rows[0].voi_y, fourth.rows[0].voi_z) == pytest.approx(
        (rowsBefore[0].voi_x, rowsBefore[0].voi_y, rowsBefore[0].voi_z))
    assert automatic["L1"] == pytest.approx([rowsBefore[0].voi_x, rowsBefore[0].voi_y, rowsBefore[0].voi_z])
    assert fourth.voiPoints.GetNumberOfControlPoints() == 3


def test_segments_are_found_by_vertebra_name(slicer_app, phantom, ctNode):
    """A segmentation made elsewhere: no BoneKit tags, names such as 'vertebrae L2'."""
    node = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Other tool")
    node.CreateDefaultDisplayNodes()
    for vid, name in ((21, "vertebrae L2"), (20, "l1")):
        single = phantom.labels.with_array((phantom.labels.array == vid).astype(np.uint8))
        labelmapToSegmentation(single, slicer_app.scene, names={1: name}, segmentationNode=node)
    for segmentId in node.GetSegmentation().GetSegmentIDs():
        node.GetSegmentation().GetSegment(segmentId).RemoveTag(LABEL_VALUE_TAG)
    labels, names = BoneMorphometryLibLogic().vertebraLabels(node, phantom.ct)
    assert np.array_equal(labels.array, np.where(phantom.labels.array <= 21, phantom.labels.array, 0))
    assert names == {20: "l1", 21: "vertebrae L2"}


def test_process_segments_once_then_reuses_the_segmentation(slicer_app, phantom, ctNode, pointsNode):
    logic = BoneMorphometryLibLogic()
    progress = []
    outputs = logic.process(ctNode, pointsNode=pointsNode, progressCallback=lambda f, m: progress.append(f))
    assert segmentNames(outputs.vertebrae) == NAMES and len(outputs.rows) == 3
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    # an edit in the Segment Editor: L3 removed; the next run keeps it (no new segmentation)
    segmentation = outputs.vertebrae.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIDs()[2])
    again = logic.process(ctNode, outputs.vertebrae, pointsNode, voiPointsNode=outputs.voiPoints)
    assert again.vertebrae is outputs.vertebrae and [r.vertebra for r in again.rows] == ["L1", "L2"]
    assert again.voiPoints.GetNumberOfControlPoints() == 2
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 3  # vertebrae + 2 x regions


# ----------------------------------------------------------------------------- bad input
def _pointsWith(scene, entries):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Vertebra points")
    for label, ras in entries:
        node.AddControlPoint(*ras, label)
    return node


@pytest.mark.parametrize("entries, message", [
    ([], "has no points"),
    ([("L1", (0.0, 0.0, 0.0)), ("F-2", (0.0, 0.0, 30.0))], "labelled 'F-2', which is not a vertebra"),
    ([("L1", (0.0, 0.0, 0.0)), ("l1", (0.0, 0.0, 30.0))], "two points labelled L1"),
    ([("L1", (400.0, 0.0, 0.0))], "L1 of 'Vertebra points' at RAS \\[400.0, 0.0, 0.0\\] mm lies outside the CT"),
])
def test_bad_points_are_refused(slicer_app, ctNode, entries, message):
    points = _pointsWith(slicer_app.scene, entries)
    nodes = slicer_app.scene.GetNumberOfNodes()
    with pytest.raises(BoneKitError, match=message):
        BoneMorphometryLibLogic().segment(ctNode, points)
    assert slicer_app.scene.GetNumberOfNodes() == nodes  # nothing written


def test_missing_points_and_point_files_are_refused(slicer_app, ctNode, tmp_path):
    logic = BoneMorphometryLibLogic()
    with pytest.raises(BoneKitError, match="No vertebra segmentation and no vertebra points"):
        logic.process(ctNode)
    with pytest.raises(BoneKitError, match="No vertebra points given"):
        logic.segment(ctNode, None)
    with pytest.raises(BoneKitError, match="does not exist"):
        logic.segment(ctNode, tmp_path / "missing.csv")
    outside = write_csv_points({20: np.array([0.0, 0.0, 500.0])}, tmp_path / "outside.csv")
    with pytest.raises(BoneKitError, match="lies outside the image"):
        logic.segment(ctNode, outside)


def test_bad_segmentations_are_refused(slicer_app, phantom, ctNode, vertebraeNode):
    logic = BoneMorphometryLibLogic()
    with pytest.raises(BoneKitError, match="No vertebra segmentation selected"):
        logic.analyse(ctNode, None)
    empty = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Empty")
    with pytest.raises(BoneKitError, match="'Empty' is empty: it has no segments"):
        logic.analyse(ctNode, empty)
    segmentation = vertebraeNode.GetSegmentation()
    segmentation.AddEmptySegment("", "L4")
    with pytest.raises(BoneKitError, match="segment 'L4' of 'Vertebrae' is empty on the CT grid"):
        logic.analyse(ctNode, vertebraeNode)
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("L4"))
    segmentation.AddEmptySegment("", "Spinal canal")
    with pytest.raises(BoneKitError, match="'Spinal canal' of 'Vertebrae' is not named after a vertebra"):
        logic.analyse(ctNode, vertebraeNode)


def test_outputs_cannot_overwrite_the_inputs(slicer_app, ctNode, pointsNode, vertebraeNode):
    logic = BoneMorphometryLibLogic()
    with pytest.raises(BoneKitError, match="both as the vertebra segmentation and as the output regions"):
        logic.analyse(ctNode, vertebraeNode, outputRegionsNode=vertebraeNode)
    with pytest.raises(BoneKitError, match="both as the vertebra points and as the VOI centres"):
        logic.process(ctNode, vertebraeNode, pointsNode, voiPointsNode=pointsNode)
    assert segmentNames(vertebraeNode) == NAMES and pointsNode.GetNumberOfControlPoints() == 3


def test_missing_calibration_file_is_refused_before_anything_is_written(slicer_app, ctNode, vertebraeNode, tmp_path):
    nodes = slicer_app.scene.GetNumberOfNodes()
    with pytest.raises(BoneKitError, match="calibration file .*missing.json does not exist"):
        BoneMorphometryLibLogic().analyse(ctNode, vertebraeNode, calibrationPath=tmp_path / "missing.json")
    assert slicer_app.scene.GetNumberOfNodes() == nodes


# ----------------------------------------------------------------------------- trabecular morphometry
def coreMorphometry(ct, masks: dict, threshold, blurMm):
    """The core on the whole CT, one mask (boolean array on the CT grid) at a time: results and the union map."""
    from bonekit.morphometry import morphometry

    results, union = {}, np.full(ct.shape, np.nan, np.float32)
    for name, mask in masks.items():
        results[name], maps = morphometry(ct, ct.with_array(mask.astype(np.uint8)), threshold=threshold,
                                          blur_mm=blurMm, maps=True)
        part = maps["Tb.Th"]  # on the mask's bounding box
        bone = ~np.isnan(part.array)
        union[ct.box_of(part)][bone] = part.array[bone]
    return results, union


def columnUnits(tableNode) -> dict:
    table = tableNode.GetTable()
    return {table.GetColumnName(i): tableNode.GetColumnUnitLabel(table.GetColumnName(i)) or None
            for i in range(table.GetNumberOfColumns())}


@pytest.mark.parametrize("threshold, blurMm, level", [("default", 0.0, None), ("155", 1.0, 155.0),
                                                      ("Otsu", 0.6, None)])
def test_voi_morphometry_columns_are_the_core_values_on_the_voi_segments(slicer_app, phantom, ctNode, vertebraeNode,
                                                                         threshold, blurMm, level):
    from bonekit.morphometry import MorphometryResult
    from bonekit.vertebra import VertebraResult, analyse_vertebrae

    logic = BoneMorphometryLibLogic()
    progress = []
    outputs = logic.analyse(ctNode, vertebraeNode, trabecularMorphometry=True, morphometryThreshold=threshold,
                            morphometryBlurMm=blurMm, progressCallback=lambda f, m: progress.append(f))
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    ct = logic.inputVolume(ctNode)
    vois = {name: segmentArray(outputs.regions, f"{name} VOI", ct) for name in NAMES}  # read back from MRML
    expected, _ = coreMorphometry(ct, vois, parseMorphometryThreshold(threshold), blurMm)
    rows = resultsFromTable(outputs.table, MorphometryResult)
    assert rows == [expected[name] for name in NAMES] == outputs.morphometry  # every column, exactly
    for row in rows:
        assert row.method == (threshold.lower() if level is None else "fixed") and 0.0 < row.BV_TV < 1.0
        assert level is None or row.threshold == level
    # the vertebra columns are untouched, and the morphometry columns carry the core's names and units
    coreRows, _ = analyse_vertebrae(ct, phantom.labels)
    assert resultsFromTable(outputs.table, VertebraResult) == coreRows == outputs.rows
    units = columnUnits(outputs.table)
    assert list(units) == [c["name"] for c in (*VertebraResult.columns(), *MorphometryResult.columns())]
    for column in MorphometryResult.columns():
        assert units[column["name"]] == column["unit"]
        assert outputs.table.GetColumnDescription(column["name"]) == column["description"]
    assert {"BV/TV", "Tb.Th", "Tb.Th.SD", "Tb.Sp", "Tb.Sp.SD", "Tb.N", "BS/BV", "Conn.D", "threshold"} <= set(units)
    assert units["Tb.Th"] == "mm" and units["Conn.D"] == "1/mm3" and units["BV/TV"] == "1"


def test_thickness_map_has_the_ct_geometry_and_the_core_maximum(slicer_app, phantom, ctNode, vertebraeNode):
    logic = BoneMorphometryLibLogic()
    views = slicer_app.addSliceViews()
    outputs = logic.analyse(ctNode, vertebraeNode, trabecularMorphometry=True)
    mapNode = outputs.thicknessMap
    ct = logic.inputVolume(ctNode)
    _, union = coreMorphometry(ct, {name: segmentArray(outputs.regions, f"{name} VOI", ct) for name in NAMES},
                               "default", 0.0)
    thickness = slicer.util.arrayFromVolume(mapNode)
    assert mapNode.GetName() == "Tb.Th map" and mapNode.IsA("vtkMRMLScalarVolumeNode")
    assert not mapNode.IsA("vtkMRMLLabelMapVolumeNode")
    assert np.array_equal(ijkToRASMatrix(mapNode), ijkToRASMatrix(ctNode))
    assert thickness.shape == ctNode.GetImageData().GetDimensions()[::-1] == phantom.ct.shape
    assert thickness.dtype == np.float32 and np.all(np.isfinite(thickness))
    assert thickness.max() == np.nanmax(union) > 0
    assert np.array_equal(thickness, np.nan_to_num(union, nan=0.0))  # the core's map, 0 (not NaN) outside bone
    assert mapNode.GetAttribute("BoneKit.units") == "mm"
    # shown over the CT: foreground of every slice view, 0 (no bone) not drawn, a colour legend
    display = mapNode.GetDisplayNode()
    assert display.GetColorNode().GetName() == "BoneKit Inferno"
    assert display.GetApplyThreshold() and 0.0 < display.GetLowerThreshold() < thickness[thickness > 0].min()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, thickness.max()))
    assert all(v.GetForegroundVolumeID() == mapNode.GetID() and v.GetBackgroundVolumeID() == ctNode.GetID()
               and v.GetForegroundOpacity() > 0 for v in views)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(mapNode)
    assert legend is not None and legend.GetVisibility() and legend.GetTitleText() == "Tb.Th (mm)"
    # again into the same nodes: overwritten, nothing new; without morphometry the columns go
    volumes = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    again = logic.analyse(ctNode, vertebraeNode, trabecularMorphometry=True, morphometryBlurMm=1.0,
                          outputTableNode=outputs.table, outputThicknessMapNode=mapNode)
    assert (again.table, again.thicknessMap) == (outputs.table, mapNode)
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1
    assert not np.array_equal(slicer.util.arrayFromVolume(mapNode), thickness)
    plain = logic.analyse(ctNode, vertebraeNode, outputTableNode=outputs.table)
    assert plain.thicknessMap is None and plain.morphometry == [] and "Tb.Th" not in columnUnits(outputs.table)


def test_process_passes_the_morphometry_options(slicer_app, ctNode, vertebraeNode):
    from bonekit.morphometry import MorphometryResult

    outputs = BoneMorphometryLibLogic().process(ctNode, vertebraeNode, trabecularMorphometry=True,
                                                morphometryThreshold=155, morphometryBlurMm=0.5)
    assert [r.threshold for r in resultsFromTable(outputs.table, MorphometryResult)] == [155.0] * 3
    assert outputs.thicknessMap is not None and len(outputs.morphometry) == 3


def test_segment_morphometry_in_any_segment(slicer_app, phantom, ctNode, vertebraeNode):
    from bonekit.morphometry import MorphometryResult

    logic = BoneMorphometryLibLogic()
    regions = logic.analyse(ctNode, vertebraeNode).regions
    ct = logic.inputVolume(ctNode)
    chosen = ["L1 ROI", regions.GetSegmentation().GetSegmentIdBySegmentName("L2 VOI")]  # a name and an ID
    outputs = logic.segmentMorphometry(ctNode, regions, chosen, threshold="default", blurMm=0.5)
    masks = {name: segmentArray(regions, name, ct) for name in ("L1 ROI", "L2 VOI")}
    expected, union = coreMorphometry(ct, masks, "default", 0.5)
    assert outputs.table.GetName() == "Trabecular morphometry"
    assert list(columnUnits(outputs.table))[0] == "Segment"
    segmentColumn = outputs.table.GetTable().GetColumnByName("Segment")
    assert [segmentColumn.GetValue(i) for i in range(2)] == ["L1 ROI", "L2 VOI"]
    assert resultsFromTable(outputs.table, MorphometryResult) == list(expected.values())
    assert outputs.results == expected
    thickness = slicer.util.arrayFromVolume(outputs.thicknessMap)
    assert np.array_equal(ijkToRASMatrix(outputs.thicknessMap), ijkToRASMatrix(ctNode))
    assert thickness.max() == np.nanmax(union) and np.array_equal(thickness, np.nan_to_num(union, nan=0.0))
    # every segment by default
    assert len(logic.segmentMorphometry(ctNode, vertebraeNode, showThicknessMap=False).results) == 3


def test_empty_or_missing_segments_are_refused_clearly(slicer_app, ctNode, vertebraeNode):
    logic = BoneMorphometryLibLogic()
    vertebraeNode.GetSegmentation().AddEmptySegment("", "Drawn VOI")
    nodes = slicer_app.scene.GetNumberOfNodes()
    with pytest.raises(BoneKitError, match="The segment 'Drawn VOI' of 'Vertebrae' is empty on the CT grid"):
        logic.segmentMorphometry(ctNode, vertebraeNode, ["L1", "Drawn VOI"])
    with pytest.raises(BoneKitError, match="'Vertebrae' has no segment 'L4'"):
        logic.segmentMorphometry(ctNode, vertebraeNode, ["L4"])
    with pytest.raises(BoneKitError, match="No segmentation selected for the trabecular morphometry"):
        logic.segmentMorphometry(ctNode, None)
    empty = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
    with pytest.raises(BoneKitError, match="'Nothing' is empty: it has no segments"):
        logic.segmentMorphometry(ctNode, empty)
    slicer_app.scene.RemoveNode(empty)
    assert slicer_app.scene.GetNumberOfNodes() == nodes  # nothing written


@pytest.mark.parametrize("options, message", [
    ({"morphometryThreshold": "bone"}, "threshold must be default, ij_isodata, isodata, otsu or a number in HU"),
    ({"morphometryThreshold": float("nan")}, "threshold must be"),
    ({"morphometryBlurMm": -0.5}, "blur must be a Gaussian sigma in mm >= 0"),
    ({"morphometryThreshold": 5000}, "Trabecular morphometry of L1 VOI: No bone inside the mask at threshold 5000"),
    ({"morphometryThreshold": -500}, "L1 VOI: Everything inside the mask is bone"),
])
def test_bad_morphometry_options_are_refused_before_anything_is_written(slicer_app, ctNode, vertebraeNode, options,
                                                                         message):
    nodes = slicer_app.scene.GetNumberOfNodes()
    with pytest.raises(BoneKitError, match=message):
        BoneMorphometryLibLogic().analyse(ctNode, vertebraeNode, trabecularMorphometry=True, **options)
    assert slicer_app.scene.GetNumberOfNodes() == nodes
    BoneMorphometryLibLogic().analyse(ctNode, vertebraeNode, **options)  # ignored without morphometry


def test_the_ct_cannot_be_the_thickness_map(slicer_app, ctNode, vertebraeNode):
    logic = BoneMorphometryLibLogic()
    with pytest.raises(BoneKitError, match="'CT' is chosen both as the input CT and as the Tb.Th map"):
        logic.process(ctNode, vertebraeNode, trabecularMorphometry=True, outputThicknessMapNode=ctNode)
    labelmap = slicer_app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
    with pytest.raises(BoneKitError, match="the Tb.Th map needs a scalar volume"):
        logic.segmentMorphometry(ctNode, vertebraeNode, outputThicknessMapNode=labelmap)


def test_morphometry_options_are_parsed():
    assert parseMorphometryThreshold(None) == parseMorphometryThreshold(" ") == "default"
    assert parseMorphometryThreshold("Default") == "default" and parseMorphometryThreshold("OTSU") == "otsu"
    assert parseMorphometryThreshold(" -50.5 ") == -50.5 and parseMorphometryThreshold(200) == 200.0
    for bad in ("abc", True, float("inf"), [200]):
        with pytest.raises(BoneKitError, match="threshold must be"):
            parseMorphometryThreshold(bad)
    assert parseMorphometryBlur(None) == 0.0 and parseMorphometryBlur("0.6") == 0.6
    for bad in (-1, "x", float("nan"), True):
        with pytest.raises(BoneKitError, match="blur must be"):
            parseMorphometryBlur(bad)


def test_added_columns_need_one_record_per_row(slicer_app, ctNode, vertebraeNode):
    from bonekit.morphometry import MorphometryResult

    table = BoneMorphometryLibLogic().analyse(ctNode, vertebraeNode).table
    with pytest.raises(BoneKitError, match="has 3 rows, but 2 MorphometryResult records"):
        addResultColumns([MorphometryResult(), MorphometryResult()], table)


"""Result dataclasses <-> MRML table nodes with units and descriptions (BoneKitLib.tables)."""

from dataclasses import dataclass

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import slicer_app  # noqa: E402,F401  (pytest fixture)

import vtk  # noqa: E402
from BoneKitLib import resultsFromTable, resultsToTable  # noqa: E402
from bonekit import BoneKitError  # noqa: E402
from bonekit.results import Result, quantity  # noqa: E402


@dataclass
class Morphometry(Result):
    vertebra: str = quantity(None, "vertebra name", name="Vertebra")
    label: int = quantity(None, "VerSe label value", name="Label")
    bvtv: float = quantity("1", "bone volume fraction", name="BV/TV")
    tbth: float = quantity("mm", "trabecular thickness", name="Tb.Th")
    bmd: float | None = quantity("mg HA/cm3", "trabecular BMD, when calibrated", name="BMD")
    fractured: bool = quantity(None, "Genant grade above 0", name="Fractured")
    note: str | None = quantity(None, "", name="Note")
    heights: list = quantity("mm", "anterior, middle, posterior body heights", name="Heights")


ROWS = [
    Morphometry("L1", 20, 0.1234567890123, 0.21, 151.5, False, None, [25.0, 24.5, 26.25]),
    Morphometry("L2", 21, 0.09, 0.1875, None, True, "wedge", [18.0, 22.0, 27.5]),
]


def test_round_trip_equality(slicer_app):
    table = resultsToTable(ROWS, slicer_app.scene, name="Morphometry")
    assert table.GetName() == "Morphometry"
    assert table.GetNumberOfRows() == 2
    assert resultsFromTable(table, Morphometry) == ROWS


def test_columns_carry_names_units_descriptions_and_types(slicer_app):
    table = resultsToTable(ROWS, slicer_app.scene)
    columns = Morphometry.columns()
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == [c["name"] for c in columns]
    assert table.GetColumnUnitLabel("BV/TV") == "1"
    assert table.GetColumnUnitLabel("BMD") == "mg HA/cm3"
    assert table.GetColumnUnitLabel("Vertebra") == ""
    assert table.GetColumnDescription("Tb.Th") == "trabecular thickness"
    vtkTable = table.GetTable()
    assert isinstance(vtkTable.GetColumnByName("Tb.Th"), vtk.vtkDoubleArray)
    assert isinstance(vtkTable.GetColumnByName("Label"), vtk.vtkDoubleArray)
    assert isinstance(vtkTable.GetColumnByName("Vertebra"), vtk.vtkStringArray)
    assert np.isnan(vtkTable.GetColumnByName("BMD").GetValue(1))
    assert slicer.util.arrayFromTableColumn(table, "Tb.Th").tolist() == [0.21, 0.1875]


def test_existing_table_is_overwritten_and_empty_tables_keep_columns(slicer_app):
    table = slicer_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "old")
    table.AddColumn().SetName("stale")
    assert resultsToTable(ROWS[:1], table) is table
    assert table.GetColumnIndex("stale") == -1
    assert resultsFromTable(table, Morphometry) == ROWS[:1]
    resultsToTable([], table, resultType=Morphometry)
    assert table.GetNumberOfRows() == 0 and table.GetNumberOfColumns() == len(Morphometry.columns())


def test_bad_inputs(slicer_app):
    with pytest.raises(BoneKitError, match="no result type"):
        resultsToTable([], slicer_app.scene)

    @dataclass
    class Other(Result):
        value: float = quantity("mm", "a length")

    with pytest.raises(BoneKitError, match="Morphometry records"):
        resultsToTable([ROWS[0], Other(1.0)], slicer_app.scene)
    table = resultsToTable([Other(1.0)], slicer_app.scene)
    with pytest.raises(BoneKitError, match="no column 'Vertebra'"):
        resultsFromTable(table, Morphometry)

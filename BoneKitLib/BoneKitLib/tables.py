"""Result records (:class:`bonekit.results.Result` dataclasses) <-> MRML table nodes.

One row per record, one column per field, named by the field's display name
("BV/TV"), with the unit and description from the field metadata set as the
column's unit label and description, so Slicer shows and saves them with the
numbers. Numeric fields (int, float, bool, optionally None) become
``vtkDoubleArray`` columns, None stored as NaN; text becomes ``vtkStringArray``;
anything else (lists, dicts) is stored as JSON text.
"""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Any, Sequence, TypeVar

import slicer
import vtk

from bonekit import BoneKitError
from bonekit.results import Result

__all__ = ["resultsToTable", "resultsFromTable", "addResultColumns"]

R = TypeVar("R", bound=Result)

RESULT_TYPE_ATTRIBUTE = "BoneKit.resultType"
_NUMBER_TYPES = (bool, int, float)


def _fieldKind(fieldType: Any) -> tuple[str, type | None, bool]:
    """('number' | 'text' | 'json', base type, whether None is allowed) of a field annotation."""
    arguments = typing.get_args(fieldType)
    optional = False
    if typing.get_origin(fieldType) in (typing.Union, types.UnionType):
        optional = type(None) in arguments
        arguments = tuple(a for a in arguments if a is not type(None))
        fieldType = arguments[0] if len(arguments) == 1 else Any
    if fieldType in _NUMBER_TYPES:
        return "number", fieldType, optional
    if fieldType is str:
        return "text", str, optional
    return "json", None, optional


def resultsToTable(results: Sequence[Result], sceneOrNode, *, resultType: type[Result] | None = None,
                   name: str | None = None):
    """Write result records into a new or an existing table node (its columns are replaced).

    Parameters
    ----------
    results : list of Result dataclass instances, all of one type
    sceneOrNode : vtkMRMLScene or vtkMRMLTableNode
    resultType : Result subclass, optional
        Needed only when ``results`` is empty (it defines the columns).
    name : str, optional
        Node name; a new node defaults to the result type's name.

    Returns
    -------
    vtkMRMLTableNode
    """
    resultType = resultType or (type(results[0]) if results else None)
    if resultType is None:
        raise BoneKitError("No results to tabulate, and no result type given for the empty table.")
    if any(type(r) is not resultType for r in results):
        raise BoneKitError(f"All rows of a table must be {resultType.__name__} records.")
    if isinstance(sceneOrNode, slicer.vtkMRMLScene):
        tableNode = sceneOrNode.AddNewNodeByClass("vtkMRMLTableNode", name or resultType.__name__)
    else:
        tableNode = sceneOrNode
        if name:
            tableNode.SetName(name)
    wasModifying = tableNode.StartModify()
    tableNode.RemoveAllColumns()
    for column in resultType.columns():
        kind, _, _ = _fieldKind(column["type"])
        values = [getattr(r, column["attribute"]) for r in results]
        array = vtk.vtkDoubleArray() if kind == "number" else vtk.vtkStringArray()
        array.SetName(column["name"])
        array.SetNumberOfValues(len(values))
        for row, value in enumerate(values):
            array.SetValue(row, _encode(kind, value))
        tableNode.AddColumn(array)
        if column["unit"] is not None:
            tableNode.SetColumnUnitLabel(column["name"], column["unit"])
        if column["description"]:
            tableNode.SetColumnDescription(column["name"], column["description"])
    tableNode.SetAttribute(RESULT_TYPE_ATTRIBUTE, f"{resultType.__module__}.{resultType.__qualname__}")
    tableNode.EndModify(wasModifying)
    return tableNode


def addResultColumns(results: Sequence[Result], tableNode, *, resultType: type[Result] | None = None):
    """Add the columns of a second record type to a table, one record per existing row.

    For tables that put two kinds of result side by side (a vertebra's measurements and its
    VOI's trabecular morphometry): the columns are written as :func:`resultsToTable` writes
    them (display names, unit labels, descriptions, None as NaN or ""). A column already in
    the table under one of these names is replaced; the others, and the table's result-type
    attribute, are kept, so :func:`resultsFromTable` reads either record type back.

    Parameters
    ----------
    results : list of Result dataclass instances, all of one type
        One per row of the table, in row order (any number for a table without columns).
    tableNode : vtkMRMLTableNode
    resultType : Result subclass, optional
        Needed only when ``results`` is empty.

    Returns
    -------
    vtkMRMLTableNode
        ``tableNode``.
    """
    resultType = resultType or (type(results[0]) if results else None)
    if resultType is None:
        raise BoneKitError("No results to add, and no result type given for the columns.")
    if any(type(r) is not resultType for r in results):
        raise BoneKitError(f"All the added rows must be {resultType.__name__} records.")
    if tableNode.GetNumberOfColumns() and len(results) != tableNode.GetNumberOfRows():
        raise BoneKitError(f"The table '{tableNode.GetName()}' has {tableNode.GetNumberOfRows()} rows, but "
                           f"{len(results)} {resultType.__name__} records were given for it.")
    table = tableNode.GetTable()
    wasModifying = tableNode.StartModify()
    for column in resultType.columns():
        for index in range(table.GetNumberOfColumns()):
            if table.GetColumnName(index) == column["name"]:
                tableNode.RemoveColumn(index)
                break
        kind, _, _ = _fieldKind(column["type"])
        array = vtk.vtkDoubleArray() if kind == "number" else vtk.vtkStringArray()
        array.SetName(column["name"])
        array.SetNumberOfValues(len(results))
        for row, record in enumerate(results):
            array.SetValue(row, _encode(kind, getattr(record, column["attribute"])))
        tableNode.AddColumn(array)
        if column["unit"] is not None:
            tableNode.SetColumnUnitLabel(column["name"], column["unit"])
        if column["description"]:
            tableNode.SetColumnDescription(column["name"], column["description"])
    tableNode.EndModify(wasModifying)
    return tableNode


def resultsFromTable(tableNode, resultType: type[R]) -> list[R]:
    """Read the rows of a table node back as ``resultType`` records (columns matched by display name)."""
    table = tableNode.GetTable()
    readers = []
    for column in resultType.columns():
        array = table.GetColumnByName(column["name"])
        if array is None:
            raise BoneKitError(f"The table '{tableNode.GetName()}' has no column '{column['name']}', "
                               f"so it does not hold {resultType.__name__} results.")
        readers.append((column["attribute"], array, *_fieldKind(column["type"])))
    return [resultType(**{attribute: _decode(kind, baseType, optional, array.GetValue(row))
                          for attribute, array, kind, baseType, optional in readers})
            for row in range(tableNode.GetNumberOfRows())]


def _encode(kind: str, value: Any) -> float | str:
    if kind == "number":
        return math.nan if value is None else float(value)
    if kind == "text":
        return "" if value is None else str(value)
    return json.dumps(value)


def _decode(kind: str, baseType: type | None, optional: bool, value: Any) -> Any:
    if kind == "json":
        return json.loads(value)
    if optional and ((kind == "number" and math.isnan(value)) or (kind == "text" and value == "")):
        return None
    return baseType(value)

"""Conventions for result records: small dataclasses whose fields carry units.

Every measurement BoneKit returns is a dataclass. Each field may declare its unit and a
one-line definition through :func:`quantity`; tables (CSV, Slicer table nodes, reports)
take their column units and descriptions from there, so a number is never shown
without its unit.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example(Result):
...     label: str = quantity(None, "vertebra name")
...     BMD: float = quantity("mg HA/cm3", "trabecular bone mineral density")
>>> Example("L1", 120.0).units()["BMD"]
'mg HA/cm3'
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def quantity(unit: str | None, description: str = "", *, name: str | None = None, default: Any = None):
    """A dataclass field with a unit ("mm", "HU", "mg HA/cm3", "1/mm", "1" for ratios, None for text).

    ``name`` is the display name when it cannot be a Python identifier (e.g. "BV/TV").
    """
    metadata = {"unit": unit, "description": description}
    if name is not None:
        metadata["name"] = name
    return dataclasses.field(default=default, metadata=metadata)


class Result:
    """Mixin for result dataclasses: units, descriptions and JSON round trips."""

    @classmethod
    def columns(cls) -> list[dict[str, Any]]:
        """One entry per field: attribute, display name, unit, description, type."""
        hints = typing.get_type_hints(cls)
        return [{"attribute": f.name, "name": f.metadata.get("name", f.name), "unit": f.metadata.get("unit"),
                 "description": f.metadata.get("description", ""), "type": hints.get(f.name, Any)}
                for f in dataclasses.fields(cls)]

    @classmethod
    def units(cls) -> dict[str, str | None]:
        """Display name -> unit."""
        return {c["name"]: c["unit"] for c in cls.columns()}

    def to_dict(self) -> dict[str, Any]:
        """Display name -> value (the JSON form)."""
        return {c["name"]: getattr(self, c["attribute"]) for c in self.columns()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict` (accepts display names or attribute names)."""
        kwargs = {}
        for c in cls.columns():
            for key in (c["name"], c["attribute"]):
                if key in data:
                    kwargs[c["attribute"]] = data[key]
                    break
        return cls(**kwargs)

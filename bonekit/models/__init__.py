"""Models that ship with BoneKit: ``catalogue.json`` lists them (``bonekit sr models``, ``bonekit sct models``).

Each entry has a ``name``, a ``kind`` (``"sr"``: a BoneSR super-resolution generator, ``"sct"``: a
SyntheticCT network), its ``file`` in this folder with the file's ``sha256``, a model ``card`` (Markdown:
training data, held-out results, limits) and a one-line ``description``; SR entries add ``scale`` and
``lr_spacing_mm``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import BoneKitError

__all__ = ["KINDS", "models_dir", "catalogue", "resolve_model"]

#: Kinds of shipped models, and what their files are.
KINDS = {"sr": "BoneSR model", "sct": "SyntheticCT model"}


def models_dir() -> Path:
    """Folder of the models that ship with the package (``bonekit/models``)."""
    return Path(__file__).resolve().parent


def catalogue(kind: str | None = None) -> list[dict]:
    """Entries of ``catalogue.json`` (all, or those of one ``kind``), in catalogue order."""
    if kind is not None and kind not in KINDS:
        raise BoneKitError(f"Unknown model kind '{kind}': use {', '.join(KINDS)}.")
    path = models_dir() / "catalogue.json"
    if not path.is_file():
        return []
    return [e for e in json.loads(path.read_text())["models"] if kind is None or e.get("kind") == kind]


def resolve_model(name_or_path, kind: str | None = None) -> Path:
    """A model file path from a path or a catalogue name ("demo": the first catalogue entry of ``kind``).

    A catalogue model is checked against its recorded SHA-256, so a damaged copy is reported
    instead of producing wrong images.
    """
    path = Path(str(name_or_path)).expanduser()
    if path.is_file():
        return path
    entries = catalogue(kind)
    names = [e["name"] for e in entries]
    wanted = names[0] if str(name_or_path) == "demo" and names else str(name_or_path)
    for e in entries:
        if e["name"] == wanted:
            file = models_dir() / e["file"]
            if not file.is_file():
                raise BoneKitError(f"The catalogue model '{wanted}' is missing its file {file}: reinstall BoneKit.")
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            if digest != e["sha256"]:
                raise BoneKitError(f"{file} is damaged (SHA-256 {digest[:12]}... instead of {e['sha256'][:12]}...): "
                                   "reinstall BoneKit.")
            return file
    raise BoneKitError(f"'{name_or_path}' is neither a model file nor a catalogue model "
                       f"({', '.join(names) or 'the catalogue is empty'}).")

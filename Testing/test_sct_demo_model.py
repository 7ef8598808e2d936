"""The shipped SyntheticCT demonstration model: intact, described, and using its radiographs.

Truths: the catalogue's SHA-256 and sizes; the geometry the model records; and, for quality, that the
synthetic CT of a held-out phantom spine places bone more like that spine than like another one.
"""

import hashlib

import numpy as np
import pytest

from bonekit.cli import main
from bonekit.io import read_volume
from bonekit.models import catalogue, models_dir, resolve_model
from bonekit.phantom import spine_phantom
from bonekit.sct.data import phantom_config
from bonekit.sct.infer import from_ct
from bonekit.sct.model import load_model
from bonekit.sct.prepare import window


@pytest.fixture(scope="module")
def model():
    return load_model(resolve_model("demo", "sct"), "cpu")


def test_catalogue_entry_is_intact_and_described():
    [entry] = catalogue("sct")
    data = (models_dir() / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) < 20 * 2 ** 20
    card = (models_dir() / entry["card"]).read_text()
    assert "not for clinical use" in card and "mean training CT" in card
    _, info = load_model(models_dir() / entry["file"], "cpu")
    assert info.generator.size == entry["size"]
    assert info.prepare.size * info.prepare.spacing_mm / info.generator.size == pytest.approx(entry["spacing_mm"])
    assert resolve_model("demo", "sct") == models_dir() / entry["file"]


def test_synthetic_ct_follows_the_radiographs_of_an_unseen_spine(model):
    """Two held-out spines of different extent: each synthetic CT places bone (>= 250 HU) more like its own
    spine than like the other (the model card: it barely tells apart two spines of similar extent)."""
    level = float(window(np.array([250.0]), model[1].prepare)[0])
    results = {}
    for seed in (20000, 20007):                      # held out: neither training (0-39) nor validation (10000+)
        ph = spine_phantom(phantom_config(seed))
        results[seed] = from_ct(ph.ct, ph.labels, model, device="cpu")
    (a, truth_a), (b, truth_b) = results[20000], results[20007]
    assert bone_dice(truth_a, a.normalized, level) > bone_dice(truth_b, a.normalized, level) + 0.02
    assert bone_dice(truth_b, b.normalized, level) > bone_dice(truth_a, b.normalized, level) + 0.02
    assert a.volume.size == (64, 64, 64) and np.allclose(a.volume.spacing, 4.0)


def bone_dice(truth, other, level):
    a, b = truth >= level, other >= level
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_cli_infer_uses_the_demo_model_by_default(tmp_path, capsys):
    ph = spine_phantom(phantom_config(20001))
    ph.save(tmp_path)
    out = tmp_path / "sct.nrrd"
    assert main(["sct", "infer", "--ct", str(tmp_path / "phantom_ct.nii.gz"), "--mask",
                 str(tmp_path / "phantom_seg-vert_msk.nii.gz"), "--out", str(out), "--device", "cpu"]) == 0
    sct = read_volume(out)
    assert sct.size == (64, 64, 64) and -260 <= sct.array.min() and sct.array.max() <= 1060
    assert main(["sct", "models"]) == 0
    assert catalogue("sct")[0]["name"] in capsys.readouterr().out

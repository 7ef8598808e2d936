"""SyntheticCT training, resume, model files, inference from DRRs and radiographs, and the sct commands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bonekit import BoneKitError
from bonekit.cli import main
from bonekit.io import read_volume, write_volume
from bonekit.sct import train as tr
from bonekit.sct.data import discover_cases, phantom_config, resize, training_geometry
from bonekit.sct.infer import from_ct, from_radiographs, synthesize
from bonekit.sct.model import load_model
from bonekit.sct.prepare import PrepareConfig, spine_centre
from bonekit.sct.radiograph import Radiograph

TINY = {"size": 32, "stem_channels": 8, "growth": 4, "dense_layers": [2, 2, 2, 2], "decoder_channels": [4, 4, 8, 8, 16],
        "view_blocks": [1, 1, 1, 1, 0], "fusion_blocks": [1, 1, 1, 1, 0], "view_heads": False}


def _config(out, epochs=4, **train):
    return {"out": str(out), "seed": 3, "name": "test-sct",
            "data": {"kind": "phantom", "phantoms": 3, "validation": 1, "prepare": {"spacing_mm": 4.0, "size": 64}},
            "model": {"generator": dict(TINY), "discriminator": {"ndf": 8, "n_layers": 2}},
            "train": {"epochs": epochs, "decay_epochs": 2, "batch_size": 2, "lr": 1e-3, "device": "cpu", **train}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sct") / "run"
    summary = tr.train(_config(out, epochs=4))
    return out, summary


def test_training_loss_decreases_and_the_model_is_written(trained):
    out, summary = trained
    history = summary["history"]
    assert len(history) == 4 and summary["train_cases"] == 3 and summary["validation_cases"] == 1
    assert history[-1]["G_reconstruction"] < 0.5 * history[0]["G_reconstruction"]
    assert history[-1]["G_projection"] < history[0]["G_projection"]
    for key in ("val_psnr_db", "val_ssim", "val_cosine", "val_mae", "val_psnr_db_mean"):
        assert np.isfinite(history[-1][key])
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 4
    G, info = load_model(out / "model.pt")
    assert info.generator.size == 32 and info.prepare.size == 64 and info.voxel_mm == 8.0
    assert info.geometry == training_geometry(PrepareConfig(spacing_mm=4.0, size=64))
    assert info.card["validation"]["val_psnr_db"] == history[-1]["val_psnr_db"]


def test_resume_after_a_kill_gives_the_same_weights(trained, tmp_path):
    """Killed mid-epoch (after a checkpoint) and resumed: the same weights as the uninterrupted run."""
    out, _ = trained
    resumed = tmp_path / "run"
    resumed.mkdir()
    shutil.copy(out / "cases.npz", resumed / "cases.npz")         # same data: skip the phantoms
    calls = {"n": 0}

    def killer(fraction, message):
        calls["n"] += 1
        if calls["n"] == 4:                                         # epoch 2, batch 2 of 2 ... mid-run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.train(_config(resumed, epochs=4, checkpoint_every=1), progress=killer)
    state = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 1)
    with pytest.raises(BoneKitError, match="resume"):
        tr.train(_config(resumed, epochs=4, checkpoint_every=1))
    tr.train(_config(resumed, epochs=4, checkpoint_every=1), resume=True)
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    changed = dict(_config(resumed, epochs=4))
    changed["data"] = dict(changed["data"], phantoms=4)
    with pytest.raises(BoneKitError, match="other 'data' settings"):
        tr.train(changed, resume=True)


def test_inference_from_a_ct_has_the_right_geometry(trained):
    from bonekit.phantom import spine_phantom

    out, _ = trained
    model = load_model(out / "model.pt")
    ph = spine_phantom(phantom_config(10_000))                     # the held-out phantom
    result, truth = from_ct(ph.ct, ph.labels, model, device="cpu")
    vol = result.volume
    assert vol.shape == (32, 32, 32) and truth.shape == (32, 32, 32)
    np.testing.assert_allclose(vol.spacing, 8.0)
    np.testing.assert_allclose(vol.index_to_physical([15.5] * 3), spine_centre(ph.labels), atol=1e-6)
    assert vol.units == "HU" and -250 <= vol.array.min() and vol.array.max() <= 1050
    # superior is the network's first slice: the array's last
    np.testing.assert_allclose(vol.array[::-1], result.normalized * 1300 - 250, atol=1e-3)


def test_inference_from_radiographs_and_bad_pairs(trained):
    out, _ = trained
    model = load_model(out / "model.pt")
    g = model[1].geometry
    rng = np.random.default_rng(0)
    img = rng.random((g.rows, g.columns)).astype(np.float32)
    ap = Radiograph(img, g.pixel, "ap")
    lat = Radiograph(img.T.copy(), g.pixel, "lat")
    result = from_radiographs(ap, lat, model, magnification=g.magnification, device="cpu")
    assert result.volume.shape == (32, 32, 32)
    np.testing.assert_allclose(result.volume.index_to_physical([15.5] * 3), 0, atol=1e-9)   # centred on 0
    with pytest.raises(BoneKitError, match="swap"):
        from_radiographs(lat, ap, model, device="cpu")
    with pytest.raises(BoneKitError, match="lateral view is missing"):
        from_radiographs(ap, None, model, device="cpu")
    with pytest.raises(BoneKitError, match="same size"):
        synthesize(img, img[:32, :32], model, device="cpu")
    with pytest.raises(BoneKitError, match="square"):
        synthesize(img[:, :40], img, model, device="cpu")


def test_configuration_errors(tmp_path):
    with pytest.raises(BoneKitError, match="data.kind"):
        tr.SCTTrainConfig.from_dict({"data": {"kind": "mri"}})
    with pytest.raises(BoneKitError, match="needs data.root"):
        tr.SCTTrainConfig.from_dict({"data": {"kind": "verse"}})
    with pytest.raises(BoneKitError, match="Unknown train"):
        tr.SCTTrainConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(BoneKitError, match="amp"):
        tr.SCTTrainConfig.from_dict({"train": {"amp": "int8"}})
    with pytest.raises(BoneKitError, match="no such training configuration"):
        tr.SCTTrainConfig.read(tmp_path / "missing.json")
    example = tr.SCTTrainConfig.from_dict(tr.example_config())
    assert example.generator_config().size == 64 and example.prepare_config().size == 128


def test_dataset_layouts_are_discovered(tmp_path):
    for sub, name in (("rawdata/sub-verse004", "sub-verse004_ct.nii.gz"),
                      ("derivatives/sub-verse004", "sub-verse004_seg-vert_msk.nii.gz"),
                      ("rawdata/sub-verse005", "sub-verse005_ct.nii.gz")):      # 005 has no mask
        (tmp_path / "verse" / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / "verse" / sub / name).write_bytes(b"")
    cases = discover_cases(tmp_path / "verse", "verse")
    assert [c["name"] for c in cases] == ["sub-verse004"]
    assert cases[0]["labels"].endswith("sub-verse004_seg-vert_msk.nii.gz")
    (tmp_path / "ctspine" / "data").mkdir(parents=True)
    (tmp_path / "ctspine" / "label").mkdir()
    (tmp_path / "ctspine" / "data" / "HN_P001.nii.gz").write_bytes(b"")
    (tmp_path / "ctspine" / "label" / "HN_P001_seg.nii.gz").write_bytes(b"")
    assert [c["name"] for c in discover_cases(tmp_path / "ctspine", "ctspine1k")] == ["HN_P001"]
    with pytest.raises(BoneKitError, match="no CT with a matching"):
        discover_cases(tmp_path / "ctspine" / "data", "verse")
    with pytest.raises(BoneKitError, match="layout"):
        discover_cases(tmp_path, "nifti")


def test_resize_keeps_the_mean_and_centres():
    cube = np.zeros((8, 8, 8), np.float32)
    cube[2:6, 2:6, 2:6] = 1
    small = resize(cube, 4)
    assert small.sum() * 8 == cube.sum() and small[1:3, 1:3, 1:3].min() == 1
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    assert resize(img, 4).mean() == pytest.approx(img.mean(), rel=1e-6)


def test_sct_commands(trained, small_phantom, tmp_path, capsys):
    out, _ = trained
    ph = small_phantom
    write_volume(ph.ct, tmp_path / "ct.nii.gz")
    write_volume(ph.labels, tmp_path / "seg.nii.gz")
    model = str(out / "model.pt")
    assert main(["sct", "infer", "--model", model, "--ct", str(tmp_path / "ct.nii.gz"), "--mask",
                 str(tmp_path / "seg.nii.gz"), "--out", str(tmp_path / "sct.nrrd"), "--device", "cpu",
                 "--json", str(tmp_path / "run.json")]) == 0
    sct = read_volume(tmp_path / "sct.nrrd")
    assert sct.shape == (32, 32, 32) and json.loads((tmp_path / "run.json").read_text())["device"] == "cpu"
    assert main(["sct", "evaluate", "--model", model, "--ct", str(tmp_path / "ct.nii.gz"), "--mask",
                 str(tmp_path / "seg.nii.gz"), "--json", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    assert 0 < json.loads((tmp_path / "eval.json").read_text())["mean"]["ssim"] <= 1
    assert "mean of 1" in capsys.readouterr().out
    # bad input: one line, exit 2, nothing written
    assert main(["sct", "infer", "--model", model, "--ap", str(tmp_path / "ct.nii.gz"),
                 "--out", str(tmp_path / "x.nrrd")]) == 2
    assert main(["sct", "infer", "--model", model, "--ct", str(tmp_path / "ct.nii.gz"),
                 "--out", str(tmp_path / "x.nrrd")]) == 2
    assert main(["sct", "infer", "--model", str(tmp_path / "ct.nii.gz"), "--ct", str(tmp_path / "ct.nii.gz"),
                 "--mask", str(tmp_path / "seg.nii.gz"), "--out", str(tmp_path / "x.nrrd")]) == 2
    assert not (tmp_path / "x.nrrd").exists()
    err = capsys.readouterr().err
    assert "--lateral is missing" in err and "--ct needs --mask" in err and "SyntheticCT model" in err


def test_inference_from_real_radiograph_files(trained, shared_data, tmp_path):
    """Real DICOM CR files in (the WG04 chest PA, JPEG-LS, MONOCHROME1, no pixel spacing; the hip CR as a
    stand-in lateral: no AP + lateral spine pair exists here), a volume with the model's geometry out."""
    chest = shared_data / "xray" / "WG04_RG1_JLSN_chest_PA_CR.dcm"
    hip = shared_data / "xray" / "WG04_RG2_UNC_hip_CR.dcm"
    if not (chest.is_file() and hip.is_file()):
        pytest.skip("the WG04 radiographs are not in shared/data/xray")
    out, _ = trained
    model = str(out / "model.pt")
    args = ["sct", "infer", "--model", model, "--ap", str(chest), "--lateral", str(hip), "--out",
            str(tmp_path / "sct.nrrd"), "--device", "cpu"]
    assert main(args) == 2                                   # the chest film has no pixel spacing
    assert main(args + ["--pixel", "0.175"]) == 0            # given: both files are read, rescaled, run
    sct = read_volume(tmp_path / "sct.nrrd")
    assert sct.shape == (32, 32, 32)
    np.testing.assert_allclose(sct.spacing, 8.0, rtol=1e-6)
    np.testing.assert_allclose(sct.index_to_physical([15.5] * 3), 0, atol=1e-6)

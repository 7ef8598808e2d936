"""TomoRay preprocessing and the ``bonekit drr`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.cli import main
from bonekit.io import read_volume, write_volume
from bonekit.sct.prepare import (AIR_HU, PrepareConfig, extract_bones, prepare_case, spine_centre, unwindow,
                                 window)
from bonekit.volume import Volume, make_affine


def test_window_maps_the_tomoray_window_to_100_levels():
    config = PrepareConfig()
    assert config.window == (-250.0, 1050.0)
    x = window(np.array([-1000, -250, 400, 1050, 3000]), PrepareConfig(levels=0))
    np.testing.assert_allclose(x, [0, 0, 0.5, 1, 1], atol=1e-6)
    levels = np.unique(window(np.linspace(-300, 1100, 5000), config))
    assert len(levels) == 100 and np.allclose(np.diff(levels), 1 / 99)
    hu = np.linspace(-250, 1050, 7)
    np.testing.assert_allclose(unwindow(window(hu, PrepareConfig(levels=0)), config), hu, atol=1e-3)
    with pytest.raises(BoneKitError, match="grey levels"):
        PrepareConfig(levels=1)
    with pytest.raises(BoneKitError, match="Unknown preprocessing"):
        PrepareConfig.from_dict({"windw": 3})


def test_prepare_case_on_the_phantom(small_phantom):
    ph = small_phantom
    before = ph.ct.array.copy()
    case = prepare_case(ph.ct, ph.labels, PrepareConfig(size=128))
    np.testing.assert_array_equal(ph.ct.array, before)               # the input is untouched
    assert case.ct.shape == (128, 128, 128) and case.target.shape == (128, 128, 128)
    np.testing.assert_allclose(case.ct.spacing, 1.0)
    np.testing.assert_allclose(case.ct.direction, np.eye(3))
    # centred on the spine: the cube's centre is the labels' physical bounding-box centre
    np.testing.assert_allclose(case.ct.index_to_physical([63.5] * 3), spine_centre(ph.labels), atol=1e-6)
    bone = case.labels.array != 0
    assert np.all(case.ct.array[~bone] == AIR_HU)                    # air everywhere outside the bones
    assert case.ct.array[bone].mean() > 150                         # bone stays bone
    assert case.info["bone_kept_fraction"] == pytest.approx(1.0, abs=0.03)   # 3 vertebrae fit in 128 mm
    levels = np.unique(case.target.array) * 99                        # on the 100-level grid of [0, 1]
    assert 20 < len(levels) <= 100 and np.allclose(levels, np.round(levels), atol=1e-3)
    assert case.target.array[~bone].max() == 0
    # without extraction, soft tissue (about 40 HU) is inside the window
    whole = prepare_case(ph.ct, ph.labels, PrepareConfig(size=64, extract_bones=False))
    assert (whole.target.array > 0).mean() > (case.target.array > 0).mean()


def test_prepare_refuses_bad_input(small_phantom):
    ph = small_phantom
    with pytest.raises(BoneKitError, match="label map"):
        prepare_case(ph.ct, None)
    with pytest.raises(BoneKitError, match="no voxels"):
        prepare_case(ph.ct, ph.labels, PrepareConfig(size=32, labels=(99,)))
    with pytest.raises(BoneKitError, match="HU"):
        prepare_case(ph.density, ph.labels)


def test_extract_bones_on_a_label_map_of_another_grid():
    ct = Volume(np.full((4, 6, 8), 300.0, np.float32), make_affine((1, 1, 1)))
    lab = np.zeros((2, 3, 4), np.uint8)
    lab[1, 1, 2] = 20
    coarse = Volume(lab, make_affine((2, 2, 2), (0.5, 0.5, 0.5)))       # 2 mm voxels over the same box
    out = extract_bones(ct, coarse)
    assert (out.array == 300).sum() == 8 and (out.array == AIR_HU).sum() == 4 * 6 * 8 - 8
    assert np.all(ct.array == 300)


def test_drr_command(small_phantom, tmp_path, capsys):
    ph = small_phantom
    write_volume(ph.ct, tmp_path / "ct.nii.gz")
    write_volume(ph.labels, tmp_path / "seg.nii.gz")
    code = main(["drr", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "seg.nii.gz"), "--out",
                 str(tmp_path / "out"), "--detector", "96x80", "--pixel", "2", "--png", "--device", "cpu"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "drr.json").read_text())
    assert set(record["views"]) == {"ap", "lat"}
    for view in ("ap", "lat"):
        img = read_volume(tmp_path / "out" / f"drr_{view}.nrrd")
        assert img.shape == (1, 80, 96)
        np.testing.assert_allclose(img.spacing[:2], 2.0)
        assert (tmp_path / "out" / f"drr_{view}.png").stat().st_size > 100
        meta = record["views"][view]
        # the isocentre is the bones' centre and the source lies SAD before it along the beam
        np.testing.assert_allclose(meta["isocenter_lps_mm"], spine_centre(ph.labels), atol=1e-4)  # NIfTI: float32
        np.testing.assert_allclose(np.subtract(meta["isocenter_lps_mm"], meta["source_lps_mm"]),
                                   541 * np.array(meta["view"]["beam"]), atol=1e-6)
        assert 0.5 < meta["maximum"] < 5                             # a few cm of bone at mu ~ 0.03 /mm
    assert "2 view(s)" in capsys.readouterr().out
    # bad input: one clear line, exit 2, nothing written
    assert main(["drr", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "bad"), "--detector", "big"]) == 2
    assert main(["drr", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "bad"), "--views", "ap,top"]) == 2
    assert main(["drr", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "bad"), "--sad", "1000"]) == 2
    assert not (tmp_path / "bad").exists()
    err = capsys.readouterr().err
    assert "WIDTHxHEIGHT" in err and "Unknown view" in err and "SAD < SID" in err

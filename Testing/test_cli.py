"""The bonekit command line: outputs, one-line errors with status 2, nothing written on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bonekit import Volume, read_volume, write_volume
from bonekit.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "phantom", "demo", "segment", "vertebra", "calibrate", "binarise", "morphometry"):
        assert command in out


def test_info_reports_geometry(tmp_path, capsys):
    v = Volume.from_geometry(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(0.5, 0.75, 2.0),
                             origin=(1, 2, 3))
    path = write_volume(v, tmp_path / "v.nrrd")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_ijk"] == [4, 3, 2] and info["spacing_mm"] == [0.5, 0.75, 2.0]
    assert info["min"] == 0 and info["max"] == 23 and info["orientation"] == "LPS"
    assert main(["info", str(path), "--spacing", "0.05,0.05,0.05"]) == 0
    assert "0.05 x 0.05 x 0.05 mm  (overridden)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["info", "{tmp}/missing.nii.gz"], "no such file"),
    (["info", "{tmp}/junk.nrrd"], "not a readable image"),
    (["info", "{tmp}"], "no DICOM image series"),
    (["info", "{tmp}/junk.nrrd", "--spacing", "1,2"], "needs 3"),
    (["phantom", "--out", "{tmp}/out", "--fracture", "L2:squash:0.3"], "Fracture type"),
    (["phantom", "--out", "{tmp}/out", "--void", "L9:5"], "not in the phantom"),
    (["phantom", "--out", "{tmp}/junk.nrrd"], "not a folder"),
])
def test_bad_input_is_one_line_status_2_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "junk.nrrd").write_text("not an image")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bonekit: error:") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_phantom_writes_readable_files(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--spacing", "1,1,2", "--no-truth-morphometry",
                 "--fracture", "L3:crush:0.45", "--rods", "0,100"]) == 0
    ct = read_volume(out / "phantom_ct.nii.gz")
    labels = read_volume(out / "phantom_seg-vert_msk.nii.gz")
    assert ct.same_grid(labels, atol=1e-5) and np.allclose(ct.spacing, [1, 1, 2])
    truth = json.loads((out / "phantom_truth.json").read_text())
    l3 = truth["vertebrae"][2]
    assert l3["name"] == "L3" and l3["fracture"] == {"type": "crush", "height_loss": 0.45, "grade": 3}
    assert [r["density_mg_cm3"] for r in truth["calibration"]["rods"]] == [0.0, 100.0]


def test_demo_runs_end_to_end_as_a_subprocess(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "bonekit", "demo", "--out", str(out)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "identical voxels and geometry" in result.stdout
    assert (out / "summary.txt").read_text().strip() == result.stdout.strip()
    results = json.loads((out / "demo_results.json").read_text())
    assert [v["name"] for v in results["truth"]["vertebrae"]] == ["L1", "L2", "L3", "L4", "L5"]
    assert results["steps"]["io_roundtrip"]["ok"] is True
    vertebrae = results["steps"]["vertebrae"]
    assert min(vertebrae["dice"].values()) >= 0.95
    assert [r["Genant.grade"] for r in vertebrae["results"]] == [v["fracture"]["grade"]
                                                                 for v in results["truth"]["vertebrae"]]


@pytest.fixture(scope="module")
def scan(tmp_path_factory, spine_case):
    """The spine case on disk: CT, truth labels, points CSV."""
    from bonekit.points import write_csv_points

    folder = tmp_path_factory.mktemp("scan")
    write_volume(spine_case["phantom"].ct, folder / "ct.nii.gz")
    write_csv_points(spine_case["points"], folder / "points.csv")
    return folder


def test_segment_then_vertebra(scan, tmp_path, capsys, spine_case):
    labels_path = tmp_path / "labels.nii.gz"
    assert main(["segment", str(scan / "ct.nii.gz"), "--points", str(scan / "points.csv"),
                 "--out", str(labels_path)]) == 0
    labels = read_volume(labels_path)
    assert np.array_equal(labels.array, spine_case["labels"].array)
    assert "segmented 5 vertebrae" in capsys.readouterr().out

    pairs = ",".join(f"{h}:{d}" for h, d in spine_case["calibration"].pairs)
    assert pairs.startswith("-")  # a water rod reads below 0 HU: --pairs=... keeps argparse happy
    assert main(["calibrate", f"--pairs={pairs}",
                 "--scanner", "phantom", "--out", str(tmp_path / "cal.json")]) == 0
    assert main(["vertebra", str(scan / "ct.nii.gz"), "--labels", str(labels_path), "--out", str(tmp_path / "m"),
                 "--json", str(tmp_path / "v.json"), "--calibration", str(tmp_path / "cal.json")]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["bmd_calibrated"] is True and result["units"]["BMD"] == "mg HA/cm3"
    for row, expected in zip(result["vertebrae"], spine_case["rows"]):
        assert row["BMD"] == pytest.approx(expected.BMD) and row["Genant.grade"] == expected.grade
    assert np.array_equal(read_volume(tmp_path / "m" / "voi.nii.gz").array, spine_case["masks"].voi.array)

    assert main(["vertebra", str(scan / "ct.nii.gz"), "--labels", str(labels_path), "--out", str(tmp_path / "m"),
                 "--json", str(tmp_path / "u.json")]) == 0
    result = json.loads((tmp_path / "u.json").read_text())
    assert result["bmd_calibrated"] is False and "uncalibrated" in result["note"]
    assert all(r["BMD"] is None and r["HU"] is not None for r in result["vertebrae"])


def test_vertebra_cut_by_the_scan_edge_prints_why_it_is_not_graded(tmp_path, capsys, spine_case):
    """The CT cropped through L1 (the last vertebra along k): its heights print as '-' with the reason."""
    ct, labels = spine_case["phantom"].ct, spine_case["labels"]
    ks = np.nonzero((labels.array == 20).any(axis=(1, 2)))[0]
    box = (slice(None, int(ks.mean())), slice(None), slice(None))
    write_volume(ct.crop(box), tmp_path / "ct.nii.gz")
    write_volume(labels.crop(box), tmp_path / "labels.nii.gz")
    assert ks[-1] > max(np.nonzero((labels.array == v).any(axis=(1, 2)))[0][-1] for v in (21, 22, 23, 24))
    assert main(["vertebra", str(tmp_path / "ct.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"),
                 "--out", str(tmp_path / "m"), "--json", str(tmp_path / "v.json")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("L1 "))
    assert line.split()[2:5] == ["-", "-", "-"] and "n/a" in line and "field of view" in line
    l1 = json.loads((tmp_path / "v.json").read_text())["vertebrae"][0]
    assert l1["vertebra"] == "L1" and l1["Genant.grade"] is None and "field of view" in l1["note"]


@pytest.mark.parametrize("argv, message", [
    (["segment", "{scan}/ct.nii.gz", "--points", "{tmp}/far.csv", "--out", "{tmp}/l.nii.gz"], "outside the image"),
    (["segment", "{scan}/ct.nii.gz", "--points", "{tmp}/missing.csv", "--out", "{tmp}/l.nii.gz"], "does not exist"),
    (["segment", "{scan}/ct.nii.gz", "--points", "{scan}/points.csv", "--out", "{scan}/ct.nii.gz"], "also an input"),
    (["vertebra", "{scan}/ct.nii.gz", "--labels", "{tmp}/empty.nii.gz", "--out", "{tmp}/m", "--json", "{tmp}/v.json"],
     "empty"),
    (["vertebra", "{scan}/ct.nii.gz", "--labels", "{tmp}/empty.nii.gz", "--out", "{tmp}/m", "--json", "{tmp}/v.json",
      "--calibration", "{tmp}/nocal.json"], "Cannot read the calibration"),
    (["calibrate", "--pairs", "100:50", "--out", "{tmp}/c.json"], "at least two"),
])
def test_bad_vertebra_input_status_2_nothing_written(scan, tmp_path, capsys, argv, message):
    (tmp_path / "far.csv").write_text("label,x,y,z\nL1,0,0,9000\n")
    ct = read_volume(scan / "ct.nii.gz")
    write_volume(ct.with_array(np.zeros(ct.array.shape, np.uint8)), tmp_path / "empty.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    scan_before = {p.name: p.stat().st_mtime_ns for p in scan.iterdir()}
    assert main([a.format(tmp=tmp_path, scan=scan) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bonekit: error:") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert {p.name: p.stat().st_mtime_ns for p in scan.iterdir()} == scan_before


def test_morphometry_cli_equals_the_core(tmp_path, capsys):
    """Plates 4 voxels thick, 8 apart, 0.05 mm voxels, written as a file with a wrong header spacing
    that --spacing corrects: the JSON holds the core's values under the issue's exact keys."""
    from bonekit.morphometry import morphometry
    from bonekit.volume import make_affine

    a = np.zeros((30, 30, 48), np.uint8)
    for p in range(4):
        a[:, :, p * 12 + 4:p * 12 + 8] = 1
    path = tmp_path / "plates.nii.gz"
    write_volume(Volume(a, make_affine((1.0, 1.0, 1.0))), path)
    out = tmp_path / "m.json"
    assert main(["morphometry", str(path), "--binary", "--spacing", "0.05,0.05,0.05", "--json", str(out),
                 "--maps", str(tmp_path / "maps")]) == 0
    got = json.loads(out.read_text())
    keys = ["BV/TV", "Tb.Th", "Tb.Th.SD", "Tb.Sp", "Tb.Sp.SD", "Tb.N", "BS/BV", "Conn.D", "DA", "SMI", "threshold"]
    assert all(k in got for k in keys)
    core, _ = morphometry(Volume(a, make_affine((0.05, 0.05, 0.05))), binary=True)
    for k in keys:
        assert got[k] == pytest.approx(core.to_dict()[k]), k
    assert got["Tb.Th"] == pytest.approx(0.2) and got["units"]["Tb.Th"] == "mm"
    th = read_volume(tmp_path / "maps" / "Tb_Th.nii.gz")
    assert np.nanmax(th.array) == pytest.approx(0.2, rel=1e-6)
    # bad input: a threshold that is no method, and the output onto the input
    assert main(["morphometry", str(path), "--threshold", "magic", "--json", str(tmp_path / "x.json")]) == 2
    assert main(["morphometry", str(path), "--binary", "--json", str(path)]) == 2
    assert not (tmp_path / "x.json").exists() and read_volume(path).array.sum() == a.sum()


def test_binarise_cli_equals_the_core(tmp_path, capsys):
    """bonekit binarise writes the core's cleaned binary with its geometry; morphometry --binary reads it."""
    from bonekit.morphometry import clean_binary

    rng = np.random.default_rng(3)
    a = (rng.random((24, 24, 24)) * 200).astype(np.uint8)
    path = write_volume(Volume.from_geometry(a, spacing=(0.05, 0.05, 0.05), origin=(1, 2, 3)), tmp_path / "g.nii.gz")
    out = tmp_path / "b.nii.gz"
    assert main(["binarise", str(path), "--threshold", "105", "--blur", "0.05", "--resample", "2", "--close", "0.11",
                 "--largest", "--out", str(out)]) == 0
    core, _, _ = clean_binary(read_volume(path), 105, blur_mm=0.05, resample=2, close_mm=0.11, largest=True)
    got = read_volume(out)
    assert got.same_grid(core) and np.array_equal(got.array, core.array)
    assert f"BV/TV {core.array.mean():.4%}" in capsys.readouterr().out
    assert main(["morphometry", str(out), "--binary", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["BV/TV"] == pytest.approx(core.array.mean())
    assert main(["binarise", str(path), "--resample", "0", "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert main(["binarise", str(path), "--out", str(path)]) == 2
    assert not (tmp_path / "x.nii.gz").exists() and np.array_equal(read_volume(path).array, a)


def test_focal_cli_per_label_equals_the_core(tmp_path, capsys):
    """Two labelled ROIs in one mask file: one result per label under "regions" equal to the core's,
    the issue's keys pooled over both at the top level, maps written per region; BMD needs a
    calibration (status 2, nothing written)."""
    from scipy import ndimage

    from bonekit.calibration import Calibration
    from bonekit.focal import focal_maps
    from bonekit.volume import make_affine

    rng = np.random.default_rng(5)
    ct = ndimage.gaussian_filter(rng.normal(200, 80, (8, 40, 60)), (0, 1.5, 1.5))
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:6, 5:35, 4:28] = 20
    labels[2:6, 5:35, 32:56] = 21
    ct_path, mask_path = tmp_path / "ct.nii.gz", tmp_path / "roi.nii.gz"
    geometry = make_affine((0.3, 0.3, 0.3))
    write_volume(Volume(ct.astype(np.float32), geometry), ct_path)
    write_volume(Volume(labels, geometry), mask_path)
    Calibration(0.8, 2.0).save(tmp_path / "cal.json")
    out = tmp_path / "focal.json"
    assert main(["focal", str(ct_path), "--mask", str(mask_path), "--calibration", str(tmp_path / "cal.json"),
                 "--out", str(tmp_path / "maps"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    for key in ("IncptWidth", "FocalBMDLoss", "FocalBMCLoss", "IncptWidth.SD", "FocalBMDLoss.SD",
                "FocalBMCLoss.SD", "BMD"):
        assert key in got, key
    assert got["units"]["FocalBMCLoss"] == "mm" and got["density"] == "BMD (mg HA/cm3)"
    ct_read = read_volume(ct_path)
    for region in got["regions"]:
        mask = Volume(labels == region["label"], geometry)
        core, _ = focal_maps(ct_read, mask, calibration=Calibration(0.8, 2.0))
        assert region["FocalBMCLoss"] == pytest.approx(core.FocalBMCLoss)
        assert region["name"] == {20: "L1", 21: "L2"}[region["label"]]
    n = [r["voxels"] for r in got["regions"]]
    assert got["IncptWidth"] == pytest.approx(sum(r["IncptWidth"] * c for r, c in zip(got["regions"], n)) / sum(n))
    assert read_volume(tmp_path / "maps" / "L2_FocalBMCLoss.nii.gz").spacing == pytest.approx([0.3] * 3)
    assert main(["focal", str(ct_path), "--mask", str(mask_path), "--units", "bmd",
                 "--json", str(tmp_path / "x.json")]) == 2
    assert "calibration" in capsys.readouterr().err and not (tmp_path / "x.json").exists()

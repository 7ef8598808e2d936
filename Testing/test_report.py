"""bonekit report: a self-contained per-patient page from a batch case folder, checked in headless Chromium.

Truths: slices sampled in patient space against an analytic volume (anisotropic, axes permuted and
flipped), the case's own results.json (every vertebra and grade in the table), a planted wedge
fracture (Genant grade 2), PNG signatures of the embedded images, and the rendered page in Chromium
(every image decoded, no console error, no sideways scrolling on a phone, the red disclaimer banner
in the screenshot, a multi-page PDF).
"""

import base64
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bonekit import BoneKitError, Volume
from bonekit.calibration import Calibration
from bonekit.cli import main
from bonekit.cohort.batch import BatchSettings, run_batch
from bonekit.cohort.report import (DISCLAIMER, find_chromium, load_case, plane_through, print_pdf, render_report,
                                   sample_plane, write_report)
from bonekit.phantom import Fracture, spine_phantom

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A two-vertebra phantom with a planted L2 wedge fracture, run calibrated and uncalibrated."""
    root = tmp_path_factory.mktemp("report")
    spine_phantom(seed=11, vertebrae=("L1", "L2"), bvtv=(0.12,), spacing_mm=(0.8, 0.8, 1.0), truth_morphometry=False,
                  fractures=(Fracture("L2", "wedge", 0.35),)).save(root / "p")
    Calibration.fit([-2, 120, 242], [0, 100, 200], scanner="phantom").save(root / "cal.json")
    (root / "m.csv").write_text("case,image,points,calibration,age,sex\n"
                                "cal,p/phantom_ct.nii.gz,p/phantom_seg-subreg_ctd.json,cal.json,71,F\n"
                                "raw,p/phantom_ct.nii.gz,p/phantom_seg-subreg_ctd.json,,71,F\n")
    summary = run_batch(root / "m.csv", root / "run", BatchSettings(), workers=1)
    assert not summary.failed
    return root


def test_planes_sample_patient_space_whatever_the_voxel_axes():
    """Value = LPS x + 10 y + 100 z on a grid with permuted, flipped, anisotropic axes: the sampled axial
    and sagittal slices hold exactly that function of the pixels' positions (linear interpolation is exact)."""
    direction = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)   # i -> +y, j -> -z, k -> -x
    spacing = np.array([0.7, 1.3, 2.1])
    shape_kji = (12, 30, 25)
    k, j, i = np.indices(shape_kji)
    origin = np.array([5.0, -8.0, 20.0])
    lps = origin + np.stack([i, j, k], -1) * spacing @ direction.T
    volume = Volume.from_geometry((lps @ [1, 10, 100]).astype(np.float32), spacing, origin, direction)
    for view, right, down in (("axial", [1, 0, 0], [0, 1, 0]), ("sagittal", [0, 1, 0], [0, 0, -1])):
        plane = plane_through(view, [-8.0, 0.0, 0.0], 4.0, 5.0, 0.5)
        assert np.allclose(plane.right, right) and np.allclose(plane.down, down)
        values = sample_plane(volume, plane)
        truth = plane.points() @ [1, 10, 100]
        assert values.shape == plane.shape == (21, 17)
        assert np.allclose(values, truth, atol=1e-2)
        col, row = plane.to_pixel(plane.points()[3, 7])
        assert (round(col), round(row)) == (7, 3)
    outside = sample_plane(volume, plane_through("axial", [500.0, 0, 0], 2, 2, 1.0))
    assert np.isnan(outside).all()
    nearest = sample_plane(volume.with_array(np.ones(shape_kji, np.uint8)), plane_through("axial", [500.0, 0, 0], 2, 2, 1),
                           order=0, fill=0)
    assert not nearest.any()


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src=[\"']data:image/png;base64,([A-Za-z0-9+/=]+)[\"']", page)]


def test_the_page_holds_the_case(batch):
    record = load_case(batch / "run" / "cases" / "cal")
    page = render_report(record, generated="2026-01-01 00:00 UTC")
    rows = json.loads((batch / "run" / "cases" / "cal" / "results.json").read_text())["vertebrae"]
    assert [r["vertebra"] for r in rows] == ["L1", "L2"]
    assert rows[1]["Genant.grade"] >= 1 and rows[1]["Genant.type"] == "wedge"      # the planted 35 % wedge
    # images: the overview and four per vertebra, all PNG, none fetched from anywhere
    images = _images(page)
    assert len(images) == 1 + 4 * len(rows)
    assert all(i.startswith(b"\x89PNG\r\n\x1a\n") and len(i) > 5000 for i in images)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # the table: units in the headers, each vertebra's values as in results.json
    for header in ("BMD (mg HA/cm³)", "Ha (mm)", "Genant grade", "App. Tb.Th (mm)", "Focal BMC loss (mm)"):
        assert f"<th scope='col'>{header}</th>" in page
    assert "ROI mean (HU)" not in page                               # calibrated: BMD, not HU
    for row in rows:
        assert f"<td>{row['vertebra']}</td><td>{row['BMD']:.1f}</td>" in page
    names = {1: "mild", 2: "moderate", 3: "severe"}
    for row in rows:   # every graded fracture shaded in the table and listed with its grade and type
        fractured = row["Genant.grade"] >= 1
        assert (f"<tr class='fracture'><td>{row['vertebra']}</td>" in page) == fractured
        listed = (f"<strong>{row['vertebra']}</strong>: grade {row['Genant.grade']} ({names.get(row['Genant.grade'])}), "
                  f"{row['Genant.type']}, height loss {100 * row['HeightLoss']:.0f} %")
        assert (listed in page) == fractured
    # calibration, version, parameters, methods with citations, the disclaimer (top and bottom), definitions
    slope = 1 / 1.22
    assert f"BMD [mg HA/cm³] = {slope:.4f} × HU" in page and "(phantom)" in page
    assert page.count(DISCLAIMER) == 2 and "Not for diagnosis" in DISCLAIMER
    for text in ("Jin D, et al.", "Li Y, et al.", "Genant HK", "erosion_mm = 6.0", "voi_diameter_mm = 15.0",
                 f"BoneKit {record.version}", "<dt>age</dt><dd>71</dd>", "<dt>Genant.grade</dt>",
                 'name="viewport"', "@media print"):
        assert text in page


def test_uncalibrated_case_says_so(batch):
    page = render_report(load_case(batch / "run" / "cases" / "raw"))
    assert "<strong>Uncalibrated.</strong>" in page
    assert "BMD (mg HA/cm³)" not in page and "<th scope='col'>ROI mean (HU)</th>" in page


def test_bad_case_folders_say_what_to_do(batch, tmp_path):
    with pytest.raises(BoneKitError, match="not a folder"):
        load_case(tmp_path / "nowhere")
    with pytest.raises(BoneKitError, match="no status.json .*run the batch first"):
        load_case(tmp_path)
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"case": "x", "state": "failed", "step": "read",
                                                    "error": "not an image"}))
    with pytest.raises(BoneKitError, match="did not finish .*not an image.*--retry-failed"):
        load_case(failed)
    moved = tmp_path / "moved"
    shutil.copytree(batch / "run" / "cases" / "cal", moved)
    info = json.loads((moved / "case.json").read_text())
    info["case"]["image"] = str(tmp_path / "gone.nii.gz")
    (moved / "case.json").write_text(json.dumps(info))
    with pytest.raises(BoneKitError, match="not there any more; give its new place with --image"):
        load_case(moved)
    other = spine_phantom(seed=1, vertebrae=("L1",), bvtv=(0.12,), spacing_mm=(1.5, 1.5, 2.0), truth_morphometry=False)
    other.save(tmp_path / "other")
    with pytest.raises(BoneKitError, match="not on the grid of"):
        load_case(moved, image=tmp_path / "other" / "phantom_ct.nii.gz")
    assert load_case(moved, image=batch / "p" / "phantom_ct.nii.gz").rows[1]["Genant.type"] == "wedge"
    with pytest.raises(BoneKitError, match="ending in .html"):
        write_report(moved, tmp_path / "r.pdf", image=batch / "p" / "phantom_ct.nii.gz")


def test_cli_writes_one_report_or_one_per_case(batch, tmp_path, capsys):
    assert main(["report", str(batch / "run" / "cases" / "cal"), "--out", str(tmp_path / "one.html")]) == 0
    assert (tmp_path / "one.html").stat().st_mode & 0o044 == 0o044      # readable by others, like any file
    assert main(["report", str(batch / "run"), "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["cal.html", "raw.html"]
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    assert "run the batch first" in capsys.readouterr().err


# ----------------------------------------------------------------------------- in the browser
def _driver(width: int, height: int):
    webdriver = pytest.importorskip("selenium.webdriver")
    browser, driver = find_chromium(), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium and ChromeDriver are not installed (Testing/install-browser.sh installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    # a phone's viewport (headless windows are at least 500 px wide): what a phone browser lays out
    chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})
    return chrome


@pytest.fixture(scope="module")
def report_file(batch):
    return write_report(batch / "run" / "cases" / "cal", batch / "report.html")["html"]


@pytest.mark.parametrize("width", [390, 1200], ids=["phone", "desktop"])
def test_report_renders_in_chromium(report_file, width, tmp_path):
    driver = _driver(width, 900)
    try:
        driver.get(report_file.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(images) == 9
        assert all(done and natural > 100 and 0 < shown <= width for done, natural, shown in images)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0                                  # the table scrolls in its own box, the page does not
        shot = tmp_path / "shot.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[1] == width
    assert pixels.std() > 20                                   # not a blank page
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    banner = (r > 150) & (g < 60) & (b < 70)                 # the banner's red border (#b00020)
    assert banner[: pixels.shape[0] // 2].sum() > 2 * width   # above the fold: a box around the disclaimer


def test_pdf_prints(report_file, tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Testing/install-browser.sh installs it)")
    pdf = print_pdf(report_file, tmp_path / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 2


def test_pdf_without_chromium_says_what_to_do(report_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BoneKitError, match="needs Chromium or Chrome"):
        print_pdf(report_file, tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()
    assert os.environ["PATH"] == str(tmp_path)

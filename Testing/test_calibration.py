"""HU -> BMD calibration: exact fit, file round trip, bad inputs."""

import json

import numpy as np
import pytest

from bonekit import BoneKitError
from bonekit.calibration import Calibration, parse_pairs, rod_mean_hu


def test_fit_recovers_an_exact_line(tmp_path):
    density = np.array([0.0, 50.0, 100.0, 200.0])
    hu = -2.0 + 1.22 * density
    cal = Calibration.fit(hu, density, scanner="S", protocol="120 kVp")
    assert cal.slope == pytest.approx(1 / 1.22) and cal.intercept == pytest.approx(2 / 1.22)
    assert cal.r2 == pytest.approx(1.0)
    assert cal.bmd(-2.0 + 1.22 * 150) == pytest.approx(150.0)
    path = cal.save(tmp_path / "cal.json")
    back = Calibration.load(path)
    assert (back.slope, back.intercept, back.r2, back.pairs, back.scanner) == \
        (cal.slope, cal.intercept, cal.r2, cal.pairs, "S")


def test_r2_of_noisy_pairs_matches_numpy():
    hu, den = [10, 120, 250, 380], [0, 100, 190, 310]
    cal = Calibration.fit(hu, den)
    r = np.corrcoef(hu, den)[0, 1]
    assert cal.r2 == pytest.approx(r ** 2)


def test_pairs_only_file_is_fitted(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"pairs": [{"HU": 0, "density_mg_cm3": 0}, {"HU": 200, "density_mg_cm3": 160}]}))
    assert Calibration.load(path).slope == pytest.approx(0.8)


@pytest.mark.parametrize("hu, den, message", [
    ([100], [50], "at least two"),
    ([100, 100], [50, 60], "at least two"),
    ([0, 100], [200, 0], "must be positive"),
    ([0, 100, 200], [0, 100], "as many"),
])
def test_bad_pairs(hu, den, message):
    with pytest.raises(BoneKitError, match=message):
        Calibration.fit(hu, den)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(BoneKitError, match="Cannot read"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BoneKitError, match="neither"):
        Calibration.load(tmp_path / "x.json")
    with pytest.raises(BoneKitError, match="HU:density"):
        parse_pairs("100:50,abc")


def test_rods_of_the_phantom_follow_its_law(small_phantom):
    law = small_phantom.truth["calibration"]
    for rod in law["rods"]:
        hu = rod_mean_hu(small_phantom.ct, rod["centre_lps_mm"], rod["diameter_mm"])
        assert hu == pytest.approx(law["hu_intercept"] + law["hu_slope_per_mg_cm3"] * rod["density_mg_cm3"], abs=1.5)

"""Shared fixtures for the core tests: the real scans in ../shared/data and a small phantom."""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("BONEKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real scans; tests that need them skip when the folder is absent (a user's clone)."""
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (set BONEKIT_SHARED_DATA)")
    return DATA


@pytest.fixture(scope="session")
def small_phantom():
    """Three vertebrae with a wedge fracture, a void and calibration rods; built once per session."""
    from bonekit.phantom import Fracture, PhantomConfig, Void, spine_phantom

    config = PhantomConfig(vertebrae=("L1", "L2", "L3"), bvtv=(0.10, 0.14, 0.18),
                           fractures=(Fracture("L2", "wedge", 0.30), Fracture("L3", "biconcave", 0.27)),
                           voids=(Void("L1", 6.0, (0.0, -3.0, 0.0)),),
                           calibration_rods=(0.0, 100.0, 200.0), seed=7)
    return spine_phantom(config)


@pytest.fixture(scope="session")
def spine_case():
    """The default-size five-level phantom with one fracture of each Genant type and calibration rods,
    segmented once from one point per vertebra (its truth body centres) and analysed with the
    calibration measured on its rods."""
    import numpy as np

    from bonekit.calibration import Calibration, rod_mean_hu
    from bonekit.phantom import Fracture, PhantomConfig, spine_phantom
    from bonekit.segment import segment_vertebrae
    from bonekit.vertebra import analyse_vertebrae

    config = PhantomConfig(fractures=(Fracture("L2", "wedge", 0.30), Fracture("L3", "biconcave", 0.45),
                                      Fracture("L4", "crush", 0.30)),
                           calibration_rods=(0.0, 100.0, 200.0), truth_morphometry=False, seed=3)
    phantom = spine_phantom(config)
    points = {v["label"]: np.array(v["centre_lps_mm"]) for v in phantom.truth["vertebrae"]}
    labels = segment_vertebrae(phantom.ct, points)
    rods = phantom.truth["calibration"]["rods"]
    calibration = Calibration.fit([rod_mean_hu(phantom.ct, r["centre_lps_mm"], r["diameter_mm"]) for r in rods],
                                  [r["density_mg_cm3"] for r in rods])
    rows, masks = analyse_vertebrae(phantom.ct, labels, calibration)
    return {"phantom": phantom, "points": points, "labels": labels, "calibration": calibration,
            "rows": rows, "masks": masks}

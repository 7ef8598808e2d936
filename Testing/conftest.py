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

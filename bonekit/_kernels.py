"""Numba kernels of the segmentation (kept apart so that importing the core stays light)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _steps_to_bone(bone, dk, dj, di, limit, out_free):
    """Add 1 to ``out_free`` where no bone lies within ``limit`` steps along (dk, dj, di)."""
    nk, nj, ni = bone.shape
    steps = np.empty(bone.shape, dtype=np.int32)
    big = limit + 1
    ks = range(nk - 1, -1, -1) if dk > 0 else range(nk)
    for k in ks:
        js = range(nj - 1, -1, -1) if dj > 0 else range(nj)
        for j in js:
            is_ = range(ni - 1, -1, -1) if di > 0 else range(ni)
            for i in is_:
                if bone[k, j, i]:
                    steps[k, j, i] = 0
                    continue
                k2, j2, i2 = k + dk, j + dj, i + di
                if k2 < 0 or k2 >= nk or j2 < 0 or j2 >= nj or i2 < 0 or i2 >= ni:
                    s = big  # leaves the box without meeting bone: open
                else:
                    s = min(steps[k2, j2, i2] + 1, big)
                steps[k, j, i] = s
                if s > limit:
                    out_free[k, j, i] += 1


def free_direction_count(bone: np.ndarray, spacing_kji: np.ndarray, reach_mm: float,
                         in_plane: bool = False) -> np.ndarray:
    """Number of the 26 grid directions (8 in the i-j plane if ``in_plane``) along which no bone
    voxel lies within ``reach_mm``."""
    free = np.zeros(bone.shape, dtype=np.uint8)
    for dk in ((0,) if in_plane else (-1, 0, 1)):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                if dk == dj == di == 0:
                    continue
                step_mm = float(np.sqrt((dk * spacing_kji[0]) ** 2 + (dj * spacing_kji[1]) ** 2 +
                                        (di * spacing_kji[2]) ** 2))
                _steps_to_bone(bone, dk, dj, di, int(reach_mm / step_mm), free)
    return free

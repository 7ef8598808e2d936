"""Local thickness (Hildebrand & Rüegsegger 1997) with BoneJ's discrete conventions.

The local thickness of a point is the diameter of the largest sphere that contains the
point and fits inside the structure. BoneJ (Fiji LocalThickness) discretises this as

1. squared Euclidean distance from every foreground voxel centre to the nearest
   background voxel centre (the image border is *not* background);
2. ridge: keep only centres whose ball is not contained in a neighbour's ball;
3. every ridge ball ``|x - c|^2 <= r^2`` writes ``max(r^2)`` into the voxels it covers;
   the map value is the diameter ``2 r``;
4. clean-up: a map voxel with a 26-neighbour of value 0 takes the mean of its non-zero
   26-neighbours that have no zero neighbour themselves (BoneJ "Clean_Up_Local_Thickness");
5. mask artefacts: voxels outside the structure are dropped.

This module implements steps 1-3 and 5 exactly, with optional periodic boundaries (for
tileable phantom blocks); lengths come out in voxel units times the spacing (isotropic).
Step 4 and the full BoneJ-exact pipeline belong to :mod:`bonekit.morphometry` (issue 4).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

from .errors import BoneKitError


@numba.njit(cache=True)
def _ridge_points(dt2, pad):
    """Foreground centres whose ball is not contained in a 26-neighbour's ball."""
    nz, ny, nx = dt2.shape
    out = []
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            for x in range(pad, nx - pad):
                v = dt2[z, y, x]
                if v == 0:
                    continue
                r = np.sqrt(v)
                keep = True
                for dz in range(-1, 2):
                    zz = z + dz
                    if zz < 0 or zz >= nz:
                        continue
                    for dy in range(-1, 2):
                        yy = y + dy
                        if yy < 0 or yy >= ny:
                            continue
                        for dx in range(-1, 2):
                            xx = x + dx
                            if xx < 0 or xx >= nx or (dz == 0 and dy == 0 and dx == 0):
                                continue
                            w = dt2[zz, yy, xx]
                            if w > v and r + np.sqrt(dz * dz + dy * dy + dx * dx) <= np.sqrt(w) + 1e-9:
                                keep = False
                                break
                        if not keep:
                            break
                    if not keep:
                        break
                if keep:
                    out.append((z, y, x, v))
    return out


@numba.njit(cache=True, parallel=True)
def _paint_balls(shape, points, periodic, n_slabs):
    """Each ridge ball writes max(r^2) into the voxels it covers (|x-c|^2 <= r^2).

    The z axis is cut into slabs painted in parallel; each slab writes only its own
    voxels, so there is no write race.
    """
    nz, ny, nx = shape
    out = np.zeros(shape, dtype=np.int64)
    bounds = np.linspace(0, nz, n_slabs + 1).astype(np.int64)
    for s in numba.prange(n_slabs):
        z0, z1 = bounds[s], bounds[s + 1]
        for p in range(points.shape[0]):
            cz, cy, cx, v = points[p, 0], points[p, 1], points[p, 2], points[p, 3]
            r = int(np.floor(np.sqrt(v)))
            for dz in range(-r, r + 1):
                z = cz + dz
                if periodic:
                    z = z % nz
                if z < z0 or z >= z1:
                    continue
                for dy in range(-r, r + 1):
                    y = cy + dy
                    if periodic:
                        y = y % ny
                    elif y < 0 or y >= ny:
                        continue
                    rem = v - dz * dz - dy * dy
                    if rem < 0:
                        continue
                    w = int(np.floor(np.sqrt(rem)))
                    for dx in range(-w, w + 1):
                        x = cx + dx
                        if periodic:
                            x = x % nx
                        elif x < 0 or x >= nx:
                            continue
                        if out[z, y, x] < v:
                            out[z, y, x] = v
    return out


def squared_distance(binary: np.ndarray, periodic: bool = False) -> tuple[np.ndarray, int]:
    """Integer squared distance (voxels^2) from each foreground centre to the nearest background centre.

    Returns the map and the padding used (periodic images are wrap-padded so distances see
    across the tile edges; the map is on the padded grid).
    """
    if not periodic:
        # the border is not background: pad with foreground far enough to never matter
        dist = ndimage.distance_transform_edt(binary)
        return np.rint(dist.astype(np.float64) ** 2).astype(np.int64), 0
    # wrap-pad so that distances see across the tile edges; grow the pad until it exceeds
    # the largest distance found (then no nearest background voxel can lie beyond it)
    pad = 8
    while True:
        padded = np.pad(binary, pad, mode="wrap")
        dist = ndimage.distance_transform_edt(padded)
        if dist.max() + 1 < pad or pad >= 2 * max(binary.shape):
            return np.rint(dist.astype(np.float64) ** 2).astype(np.int64), pad
        pad = int(np.ceil(dist.max())) + 2


def local_thickness(binary: np.ndarray, voxel_size: float = 1.0, periodic: bool = False) -> np.ndarray:
    """Local thickness map (diameters, in the units of ``voxel_size``) of a 3D binary structure.

    Parameters
    ----------
    binary : (nz, ny, nx) bool array
        The structure (bone for Tb.Th, marrow for Tb.Sp).
    voxel_size : float
        Isotropic voxel size (e.g. mm).
    periodic : bool
        Treat the block as one tile of an infinite periodic structure.

    Returns
    -------
    numpy.ndarray of float64
        ``2 sqrt(r^2) * voxel_size`` inside the structure, NaN outside.
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 3:
        raise BoneKitError("Local thickness needs a 3D binary image.")
    if not binary.any():
        raise BoneKitError("The structure is empty: no foreground voxel to measure.")
    if binary.all() and not periodic:
        raise BoneKitError("The structure fills the whole image: there is no background to measure thickness against.")
    dt2, pad = squared_distance(binary, periodic)
    points = _ridge_points(dt2, pad)
    points = np.array(points, dtype=np.int64).reshape(-1, 4)
    if pad:
        points[:, :3] -= pad
    # sort by z so each slab's balls are contiguous in memory
    points = points[np.argsort(points[:, 0], kind="stable")]
    painted = _paint_balls(binary.shape, points, periodic, max(1, numba.get_num_threads() * 2))
    out = 2.0 * np.sqrt(painted.astype(np.float64)) * voxel_size
    out[~binary] = np.nan  # BoneJ "mask artefacts": drop the overhang outside the structure
    return out


def thickness_stats(thickness_map: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a thickness map over its finite voxels (BoneJ's Tb.Th/Tb.Sp, SD)."""
    values = thickness_map[np.isfinite(thickness_map)]
    if values.size == 0:
        raise BoneKitError("The thickness map has no finite value.")
    return float(values.mean()), float(values.std())

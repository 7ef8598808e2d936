"""Euler characteristic and connectivity density (Odgaard & Gundersen 1993) with BoneJ's conventions.

Geometry
--------
A binary image is read as the union ``X`` of *closed* unit cubes, one per foreground voxel.
Closed cubes that share only a corner or an edge touch, so the foreground is 26-connected
and the background (the open complement) 6-connected. ``X`` is a cubical complex: its cells
are the lattice vertices, edges, faces and cubes that lie in it (a lower-dimensional cell
lies in ``X`` when any voxel around it is foreground), and its Euler characteristic is

    chi = V - E + F - C  =  b0 - b1 + b2   (objects - tunnels + cavities).

Local computation
-----------------
Every lattice vertex is the centre of a 2x2x2 octant of voxels. The octant holds the whole
vertex, half of each of the 6 edges, a quarter of each of the 12 faces and an eighth of each
of the 8 cubes that meet the vertex, so ``chi`` is the sum over all octants of

    8 * dchi(octant) = sum over those 27 cells, if in X, of (-1)**dim * 2**(3 - dim),

(``2**(3 - dim)`` is the number of voxels around a cell of dimension ``dim``). The 256-entry
table of ``8 * dchi`` is built below from that formula; it is the 26-connectivity table of
Toriwaki & Yonekura (2002) that BoneJ uses. The image is padded with background, so every
octant that touches the foreground is counted.

Edge correction (BoneJ's "Corr. Euler (chi + delta chi)")
---------------------------------------------------------
A box cut from a larger structure should report its *contribution* to the Euler characteristic
of the whole, so that the contributions of boxes tiling the structure add up to its chi.
Cells on the box surface are shared with the neighbouring boxes: a face cell with 2, an edge
cell with 4, a corner vertex with 8. Giving each cell the share ``w`` = (voxels around it that
are inside the box) / (voxels around it) gives the contribution

    chi + delta_chi = sum over cells in X of (-1)**dim * w(cell),

so ``delta_chi = sum of (-1)**dim * (w - 1)`` over the cells on the box surface. Grouped by
the box's closed faces F, edges E and corners v this is

    delta_chi = -1/2 sum_F chi(X & F) + 1/4 sum_E chi(X & E) - 1/8 sum_v chi(X & v)
              = -( chi(X & surface) / 2 + chi(X & 12 edges) / 4 + chi(X & 8 corners) / 8 ),

the second line being Odgaard & Gundersen's correction as BoneJ computes it (BoneJ2
``EulerCorrection``, BoneJ1 ``Connectivity.correctForEdges``: chi_2/2 + chi_1/4 + chi_0/8 of
the voxels' intersections with the stack's faces, edges and corners, *subtracted* from chi).
Nothing is known beyond the image, so X there is the union of the image's own foreground
voxels: the result is exact when the voxel layer just outside each face would equal the one
just inside (the structure crosses the faces), and is off where the structure's surface lies
flush on a face from outside (a voxel-level coincidence BoneJ shares).

A mask generalises the box: ``w`` is the share of a cell's voxels that lie in the mask, and X
is the whole image's foreground, so foreground just outside the mask counts through the cells
it shares with the mask's boundary voxels (chi itself is that of the foreground inside the
mask). Mask contributions are then exactly additive: masks that partition the image sum to
the image's value, and without a mask (the mask being the image) the result is BoneJ's.

BoneJ (2: ``ConnectivityWrapper``; 1: ``Connectivity.java``) then reports
``Connectivity = 1 - (chi + delta_chi)`` (b1 with one object and no cavity assumed) and
``Conn.D = Connectivity / stack volume`` (voxel count x voxel volume).
"""

from __future__ import annotations

from itertools import product

import numba
import numpy as np

from .errors import BoneKitError


def _octant_cells() -> tuple[np.ndarray, np.ndarray]:
    """The 27 lattice cells that meet an octant's centre vertex.

    Octant voxel at offset (dz, dy, dx) in {0, 1}^3 has bit ``4 dz + 2 dy + dx`` (offset 0 lies on
    the negative side of the vertex). Along each axis a cell either stays at the vertex (None) or
    runs to the negative (0) or positive (1) side; its voxels are those whose offsets agree on the
    axes it runs along. Returns each cell's voxel bit set and its sign (-1)**dim.
    """
    voxels, signs = [], []
    for cell in product((None, 0, 1), repeat=3):
        bits = 0
        for offset in product((0, 1), repeat=3):
            if all(c is None or c == o for c, o in zip(cell, offset)):
                bits |= 1 << (4 * offset[0] + 2 * offset[1] + offset[2])
        voxels.append(bits)
        signs.append((-1) ** sum(c is not None for c in cell))
    return np.array(voxels, np.int64), np.array(signs, np.int64)


_CELL_VOXELS, _CELL_SIGN = _octant_cells()
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)
#: 8 * (Euler contribution of an octant), indexed by its foreground bit pattern
EULER_LUT = np.array([sum(s * _POPCOUNT[v] for v, s in zip(_CELL_VOXELS, _CELL_SIGN) if b & v)
                      for b in range(256)], np.int64)


@numba.njit(cache=True, inline="always")
def _pattern(a, z, y, x):
    """Bit pattern of the 2x2x2 octant of ``a`` whose lowest corner voxel is (z, y, x)."""
    bits = 0
    for dz in range(2):
        for dy in range(2):
            for dx in range(2):
                if a[z + dz, y + dy, x + dx]:
                    bits |= 1 << (4 * dz + 2 * dy + dx)
    return bits


@numba.njit(cache=True)
def _octant_sums(fg, inside, lut, cell_voxels, cell_sign, popcount):
    """(8 chi, 8 (chi + delta_chi)) summed over every octant of the padded images.

    ``fg`` is the whole foreground, ``inside`` the box or mask, both padded with one layer of
    zeros; chi is that of the foreground inside, the contribution that of the mask's shares.
    """
    nz, ny, nx = fg.shape
    chi8 = 0
    contribution8 = 0
    for z in range(nz - 1):
        for y in range(ny - 1):
            for x in range(nx - 1):
                b = _pattern(fg, z, y, x)
                if b == 0:
                    continue
                m = _pattern(inside, z, y, x)
                if m == 255:  # every cell of the octant wholly inside: share 1
                    chi8 += lut[b]
                    contribution8 += lut[b]
                    continue
                chi8 += lut[b & m]
                for c in range(cell_voxels.shape[0]):
                    if b & cell_voxels[c]:
                        contribution8 += cell_sign[c] * popcount[m & cell_voxels[c]]
    return chi8, contribution8


def _as_3d_bool(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise BoneKitError(f"The {what} must be a 3D image (got {array.ndim} dimensions).")
    return array.astype(bool, copy=False)


def _sums(binary: np.ndarray, inside: np.ndarray) -> tuple[int, float]:
    fg, box = np.pad(binary, 1).view(np.uint8), np.pad(inside, 1).view(np.uint8)
    chi8, contribution8 = _octant_sums(fg, box, EULER_LUT, _CELL_VOXELS, _CELL_SIGN, _POPCOUNT)
    assert chi8 % 8 == 0, "octant sums of a cubical complex are a multiple of 8"
    return chi8 // 8, (contribution8 - chi8) / 8.0


def euler_characteristic(binary) -> int:
    """Euler characteristic of the foreground of a 3D binary image (26/6-connectivity).

    ``chi = objects - tunnels + cavities`` of the union of closed voxel cubes, with everything
    outside the image taken as background (BoneJ's "Euler char. (chi)"). Non-zero values are
    foreground; an image without foreground gives 0.
    """
    binary = _as_3d_bool(binary, "binary image")
    chi, _ = _sums(binary, np.ones(binary.shape, bool))
    return chi


def connectivity(binary, spacing=(1.0, 1.0, 1.0), mask=None) -> dict:
    """BoneJ's Connectivity measurements of a 3D binary image (array order z, y, x).

    Parameters
    ----------
    binary : (nz, ny, nx) array
        The structure (non-zero is foreground), normally one purified trabecular network.
    spacing : (sz, sy, sx)
        Voxel size in mm.
    mask : (nz, ny, nx) array, optional
        Region to measure (non-zero is inside), e.g. a trabecular volume of interest. chi is
        that of the foreground inside it; foreground outside it enters only delta_chi, through
        the lattice cells it shares with the mask's boundary voxels (see the module doc).

    Returns
    -------
    dict
        ``euler``: chi of the foreground (inside the mask), an int.
        ``delta_euler``: the edge correction delta_chi (a multiple of 1/8; see the module doc):
        without a mask exactly BoneJ's ``-EulerCorrection``, with one the same shares taken
        over the mask's boundary cells.
        ``corrected_euler``: chi + delta_chi, the sample's contribution to the Euler
        characteristic of the structure it was cut from (BoneJ's "Corr. Euler (chi + delta chi)").
        ``connectivity``: 1 - (chi + delta_chi) (BoneJ's "Connectivity").
        ``Conn.D``: connectivity per mm^3. The volume is the mask's voxel count times the voxel
        volume when a mask is given, otherwise that of the whole image (BoneJ's stack volume).

    Raises
    ------
    BoneKitError
        Not 3D, a mask of another shape, a bad spacing, or nothing to take the volume of.
    """
    binary = _as_3d_bool(binary, "binary image")
    try:
        spacing = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        spacing = np.array([np.nan])
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise BoneKitError("The voxel spacing must be three positive numbers in mm (sz, sy, sx).")
    if mask is None:
        inside = np.ones(binary.shape, bool)
    else:
        inside = _as_3d_bool(mask, "mask")
        if inside.shape != binary.shape:
            raise BoneKitError(f"The mask's shape {inside.shape} differs from the image's {binary.shape}.")
    n_voxels = int(np.count_nonzero(inside))
    if n_voxels == 0:
        raise BoneKitError("The mask is empty (or the image has no voxel): there is no volume to measure.")
    chi, delta = _sums(binary, inside)
    corrected = chi + delta
    conn = 1.0 - corrected
    return {"euler": chi, "delta_euler": delta, "corrected_euler": corrected, "connectivity": conn,
            "Conn.D": conn / (n_voxels * float(np.prod(spacing)))}

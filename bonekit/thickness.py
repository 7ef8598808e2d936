"""Local thickness (Hildebrand & Rüegsegger 1997) with BoneJ's discrete conventions, fast.

The local thickness of a point is the diameter of the largest sphere that contains the
point and fits inside the structure. BoneJ (Fiji LocalThickness, which BoneJ2's Thickness
plugin calls) discretises this as

1. squared Euclidean distance from every foreground voxel centre to the nearest
   background voxel centre (the image border is *not* background);
2. ridge: keep only centres whose ball is not contained in a neighbour's ball;
3. every ridge ball ``|x - c|^2 <= r^2`` writes ``max(r^2)`` into the voxels it covers
   (inclusive, so balls overhang one voxel into the background); the map value is the
   diameter ``2 r``;
4. clean-up: a map voxel with an in-image 26-neighbour of value 0 takes the mean of its
   *interior* 26-neighbours (non-zero, with no zero neighbour), or keeps its value if it has
   none (BoneJ ``Clean_Up_Local_Thickness``);
5. mask artefacts (BoneJ's default): voxels outside the structure are dropped (NaN here).

All five steps are implemented here, with three differences that do not change a value:
step 1 is an exact separable transform (Felzenszwalb & Huttenlocher) run in parallel; step 2
prunes by exact continuous-ball containment (a pruned ball is inside a larger one, so it
never sets a maximum); step 3 paints slabs of the image in parallel.

Anisotropic voxels: every distance is physical (mm), so balls are spheres in mm, not in
voxels. BoneJ warns and measures in voxels; for isotropic voxels the two are the same.
Periodic boundaries (for tileable phantom blocks) wrap steps 1, 3 and 4.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

from .errors import BoneKitError

_INF = np.inf
_TEMPLATE_V = 200 * 200
_LARGE_BALL_VOXELS = 6.0  # ball radius (voxels) from which painting by rows pays


@numba.njit(cache=True)
def _envelope_1d(f, w2, out, v, z):
    """out[q] = min_p f[p] + w2 (q - p)^2 (f may hold inf): Felzenszwalb & Huttenlocher."""
    n = f.shape[0]
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -_INF
            z[1] = _INF
            continue
        while True:
            p = v[k]
            s = ((fq + w2 * q * q) - (f[p] + w2 * p * p)) / (2.0 * w2 * (q - p))
            if s <= z[k] and k > 0:
                k -= 1
            else:
                break
        if s <= z[k]:  # k == 0 and the new parabola is lower everywhere
            v[0] = q
            z[0] = -_INF
            z[1] = _INF
            continue
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = _INF
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d = q - v[k]
        out[q] = w2 * d * d + f[v[k]]


@numba.njit(cache=True, parallel=True)
def _edt_lines(a, w2):
    """In place: the 1D envelope along the last axis of a 3D float64 array (any strides)."""
    n0, n1, n = a.shape
    for i in numba.prange(n0):
        f = np.empty(n)
        out = np.empty(n)
        v = np.empty(n, np.int64)
        z = np.empty(n + 1)
        for j in range(n1):
            f[:] = a[i, j, :]
            _envelope_1d(f, w2, out, v, z)
            a[i, j, :] = out


def squared_edt(binary: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Exact squared Euclidean distance (float64, units of ``spacing`` squared) from every
    foreground voxel centre to the nearest background voxel centre; 0 on the background,
    inf where the image holds no background. The image border is not background (BoneJ)."""
    sz, sy, sx = (float(s) for s in spacing)
    a = np.where(np.asarray(binary, dtype=bool), _INF, 0.0)
    for axis, s in ((2, sx), (1, sy), (0, sz)):
        # lines along ``axis``; the outer loop (in parallel) over the axis that is not x
        view = np.moveaxis(a, axis, -1) if axis != 0 else a.transpose(1, 2, 0)
        _edt_lines(view, s * s)
    return a


@numba.njit(cache=True)
def _containment_templates(vmax):
    """For the digital ball ``B(v) = {x in Z^3 : |x|^2 <= v}`` and the offsets o = (1,0,0),
    (1,1,0), (1,1,1): ``t[k, v] = max over x in B(v) of |x - o_k|^2``, the smallest squared
    radius whose digital ball around o contains B(v) (BoneJ's ridge templates)."""
    r = int(np.floor(np.sqrt(vmax)))
    best = np.zeros((3, vmax + 1), np.int64)
    # the maximum lies where every coordinate points away from o: enumerate x <= 0 as -x >= 0
    for a in range(r + 1):
        for b in range(r + 1):
            ab = a * a + b * b
            if ab > vmax:
                break
            for c in range(r + 1):
                key = ab + c * c
                if key > vmax:
                    break
                for k in range(3):
                    val = (a + 1) ** 2 + (b + (1 if k >= 1 else 0)) ** 2 + (c + (1 if k == 2 else 0)) ** 2
                    if val > best[k, key]:
                        best[k, key] = val
    for k in range(3):
        for v in range(1, vmax + 1):
            if best[k, v - 1] > best[k, v]:
                best[k, v] = best[k, v - 1]
    return best


@numba.njit(cache=True, parallel=True)
def _ridge_mask(dt2, spacing, pad, templates):
    """Foreground centres (off the pad) whose ball is not inside a 26-neighbour's ball.

    Isotropic voxels (``templates`` non-empty, squared distances in voxels): containment of
    the digital balls, through the templates; otherwise (and beyond the templates' reach)
    containment of the continuous balls, which implies the digital one."""
    nz, ny, nx = dt2.shape
    keep = np.zeros(dt2.shape, np.bool_)
    vcap = templates.shape[1] - 1
    step = np.empty((3, 3, 3))
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                step[dz, dy, dx] = np.sqrt(((dz - 1) * spacing[0]) ** 2 + ((dy - 1) * spacing[1]) ** 2
                                           + ((dx - 1) * spacing[2]) ** 2)
    for z in numba.prange(pad, nz - pad):
        for y in range(pad, ny - pad):
            for x in range(pad, nx - pad):
                v = dt2[z, y, x]
                if v == 0:
                    continue
                r = np.sqrt(v)
                inside = False
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
                            if xx < 0 or xx >= nx:
                                continue
                            w = dt2[zz, yy, xx]
                            if w <= v:
                                continue
                            if v <= vcap:
                                k = abs(dz) + abs(dy) + abs(dx) - 1
                                inside = w >= templates[k, int(v)]
                            else:
                                inside = r + step[dz + 1, dy + 1, dx + 1] <= np.sqrt(w) * (1 + 1e-12)
                            if inside:
                                break
                        if inside:
                            break
                    if inside:
                        break
                keep[z, y, x] = not inside
    return keep


@numba.njit(cache=True, parallel=True)
def _paint_balls(shape, centres, r2, spacing, periodic, n_slabs):
    """Each ridge ball writes max(r^2) into the voxels it covers (|x-c|^2 <= r^2, in mm).

    The z axis is cut into slabs painted in parallel; each slab writes only its own voxels,
    so there is no write race. Centres are sorted by z, so each slab scans only the centres
    whose ball can reach it.
    """
    nz, ny, nx = shape
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    out = np.zeros(shape)
    bounds = np.linspace(0, nz, n_slabs + 1).astype(np.int64)
    reach = 0
    for p in range(r2.shape[0]):
        reach = max(reach, int(np.floor(np.sqrt(r2[p]) / sz)))
    for s in numba.prange(n_slabs):
        z0, z1 = bounds[s], bounds[s + 1]
        if periodic:
            first, last = 0, r2.shape[0]
        else:
            first = np.searchsorted(centres[:, 0], z0 - reach)
            last = np.searchsorted(centres[:, 0], z1 + reach)
        for p in range(first, last):
            cz, cy, cx, v = centres[p, 0], centres[p, 1], centres[p, 2], r2[p]
            tol = v * 1e-12
            rz = int(np.floor(np.sqrt(v) / sz + 1e-9))
            for dz in range(-rz, rz + 1):
                z = cz + dz
                if periodic:
                    z = z % nz
                if z < z0 or z >= z1:
                    continue
                remz = v - (dz * sz) ** 2
                if remz < -tol:
                    continue
                ry = int(np.floor(np.sqrt(max(remz, 0.0)) / sy + 1e-9))
                for dy in range(-ry, ry + 1):
                    y = cy + dy
                    if periodic:
                        y = y % ny
                    elif y < 0 or y >= ny:
                        continue
                    rem = remz - (dy * sy) ** 2
                    if rem < -tol:
                        continue
                    rx = int(np.floor(np.sqrt(max(rem, 0.0)) / sx + 1e-9))
                    for dx in range(-rx, rx + 1):
                        x = cx + dx
                        if periodic:
                            x = x % nx
                        elif x < 0 or x >= nx:
                            continue
                        if out[z, y, x] < v:
                            out[z, y, x] = v
    return out


@numba.njit(cache=True)
def _find(nxt, x):
    """Next unpainted position >= x in one row (skip pointers with path halving)."""
    while nxt[x] != x:
        nxt[x] = nxt[nxt[x]]
        x = nxt[x]
    return x


@numba.njit(cache=True)
def _paint_interval(row, nxt, a, b, v):
    """Write ``v`` into the not yet painted voxels of ``row[a..b]`` and mark them painted."""
    x = _find(nxt, a)
    while x <= b:
        row[x] = v
        nxt[x] = x + 1
        x = _find(nxt, x + 1)


@numba.njit(cache=True, parallel=True)
def _paint_large_balls(out, centres, r2, spacing):
    """Paint large balls (not periodic) in descending r^2, so the first ball to reach a voxel
    sets its value; each row keeps skip pointers past its painted voxels, so a ball costs a
    step per row it crosses plus the voxels it paints first, not its volume. Voxels already
    non-zero in ``out`` are left alone (call this before painting smaller balls)."""
    nz, ny, nx = out.shape
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    order = np.argsort(-r2, kind="mergesort")
    reach = np.empty(r2.shape[0], np.int64)
    counts = np.zeros(nz + 1, np.int64)
    for p in range(r2.shape[0]):
        reach[p] = int(np.floor(np.sqrt(r2[p]) / sz + 1e-9))
        lo = max(centres[p, 0] - reach[p], 0)
        hi = min(centres[p, 0] + reach[p], nz - 1)
        for z in range(lo, hi + 1):
            counts[z + 1] += 1
    for z in range(nz):
        counts[z + 1] += counts[z]
    members = np.empty(counts[nz], np.int64)
    fill = counts[:nz].copy()
    for q in range(order.shape[0]):  # each slice's list in descending r^2
        p = order[q]
        lo = max(centres[p, 0] - reach[p], 0)
        hi = min(centres[p, 0] + reach[p], nz - 1)
        for z in range(lo, hi + 1):
            members[fill[z]] = p
            fill[z] += 1
    for z in numba.prange(nz):
        nxt = np.empty((ny, nx + 1), np.int64)
        for y in range(ny):
            for x in range(nx + 1):
                nxt[y, x] = x
        for m in range(counts[z], counts[z + 1]):
            p = members[m]
            v = r2[p]
            tol = v * 1e-12
            remz = v - ((z - centres[p, 0]) * sz) ** 2
            if remz < -tol:
                continue
            ry = int(np.floor(np.sqrt(max(remz, 0.0)) / sy + 1e-9))
            for y in range(max(centres[p, 1] - ry, 0), min(centres[p, 1] + ry, ny - 1) + 1):
                rem = remz - ((y - centres[p, 1]) * sy) ** 2
                if rem < -tol:
                    continue
                rx = int(np.floor(np.sqrt(max(rem, 0.0)) / sx + 1e-9))
                _paint_interval(out[z, y], nxt[y], max(centres[p, 2] - rx, 0), min(centres[p, 2] + rx, nx - 1), v)


@numba.njit(cache=True)
def _neighbour(i, n, periodic):
    """Index ``i`` on an axis of length ``n``: wrapped if periodic, else -1 when outside."""
    if periodic:
        return i % n
    return i if 0 <= i < n else -1


@numba.njit(cache=True, parallel=True)
def _average_interior(s, interior, surface_idx, periodic):
    """For each surface voxel, the mean of its interior 26-neighbours (or its own value if none)."""
    nz, ny, nx = s.shape
    values = np.empty(surface_idx.shape[0])
    for m in numba.prange(surface_idx.shape[0]):
        z, y, x = surface_idx[m, 0], surface_idx[m, 1], surface_idx[m, 2]
        total = 0.0
        n = 0
        for dz in range(-1, 2):
            zz = _neighbour(z + dz, nz, periodic)
            for dy in range(-1, 2):
                yy = _neighbour(y + dy, ny, periodic)
                for dx in range(-1, 2):
                    xx = _neighbour(x + dx, nx, periodic)
                    if zz >= 0 and yy >= 0 and xx >= 0 and interior[zz, yy, xx]:
                        total += s[zz, yy, xx]
                        n += 1
        values[m] = total / n if n > 0 else s[z, y, x]
    return values


def _clean_up(thickness: np.ndarray, periodic: bool, region: np.ndarray | None = None) -> np.ndarray:
    """BoneJ's clean-up (step 4): a painted voxel with an in-image 26-neighbour of value 0 (a
    surface voxel) takes the mean of its interior (painted, not surface) 26-neighbours. Outside
    ``region`` is outside the image: neither 0 nor interior."""
    painted = thickness != 0
    near_zero = ~painted if region is None else ~painted & region
    for axis in range(3):  # 3x3x3 dilation of the unpainted voxels, one axis at a time
        near_zero = ndimage.maximum_filter1d(near_zero, 3, axis=axis, mode="wrap" if periodic else "constant")
    surface = painted & near_zero
    interior = painted & ~near_zero
    if region is not None:
        interior &= region
    idx = np.argwhere(surface)
    out = thickness.copy()
    out[surface] = _average_interior(thickness, interior, idx, periodic)
    return out


def _spacing3(spacing) -> np.ndarray:
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise BoneKitError(f"Voxel spacing must be positive, not {sp.tolist()}.")
    return sp


def local_thickness(binary: np.ndarray, spacing=1.0, periodic: bool = False, clean_up: bool = True,
                    region: np.ndarray | None = None) -> np.ndarray:
    """Local thickness map (diameters, in the units of ``spacing``) of a 3D binary structure.

    Parameters
    ----------
    binary : (nz, ny, nx) bool array
        The structure (bone for Tb.Th, marrow for Tb.Sp).
    spacing : float or (sz, sy, sx)
        Voxel size (e.g. mm); anisotropic voxels are measured with spheres in physical units.
    periodic : bool
        Treat the block as one tile of an infinite periodic structure.
    clean_up : bool
        BoneJ's surface clean-up (step 4; BoneJ always applies it).
    region : bool array, optional
        Measure only inside this region (a VOI): voxels outside it are neither structure nor
        background, as the border of a cropped image is to BoneJ, so a box region gives what
        BoneJ gives on the cropped box. Balls centred inside may reach outside.

    Returns
    -------
    numpy.ndarray of float64
        The thickness inside the structure, NaN outside (BoneJ's "mask artefacts").
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 3:
        raise BoneKitError("Local thickness needs a 3D binary image.")
    if not binary.any():
        raise BoneKitError("The structure is empty: no foreground voxel to measure.")
    if binary.all() and not periodic:
        raise BoneKitError("The structure fills the whole image: there is no background to measure thickness against.")
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != binary.shape:
            raise BoneKitError(f"The region's shape {region.shape} differs from the image's {binary.shape}.")
        if periodic:
            raise BoneKitError("A region and periodic boundaries do not go together.")
        binary = binary & region
        if not binary.any():
            raise BoneKitError("The structure is empty inside the region: no foreground voxel to measure.")
        if not (region & ~binary).any():
            raise BoneKitError("The structure fills the region: there is no background to measure thickness against.")
    sp = _spacing3(spacing)
    # isotropic voxels: work in voxel units (integer squared distances, exact) and scale at the end
    unit = float(sp[0]) if np.all(sp == sp[0]) else 1.0
    work = sp / unit
    # outside the region is not background: it counts as foreground for the distance map
    dt2, pad = _squared_distance(binary if region is None else binary | ~region, work, periodic)
    if region is not None:
        dt2[~binary] = 0.0  # centres only inside the structure (and so inside the region)
    if np.all(sp == sp[0]):  # digital-ball templates up to r = 200 voxels
        top = float(dt2.max())  # inf only in a periodic block with no background at all
        vmax = int(min(top if np.isfinite(top) else np.max(dt2[np.isfinite(dt2)], initial=0.0), _TEMPLATE_V))
        templates = _containment_templates(vmax)
    else:
        templates = np.zeros((3, 0), np.int64)
    keep = _ridge_mask(dt2, work, pad, templates)
    idx = np.argwhere(keep)  # sorted by z
    r2 = dt2[keep]
    idx -= pad
    # balls much wider than a voxel: painted by rows in descending size (cost ~ area, not volume);
    # the rest (most balls in trabecular bone) one voxel at a time, keeping the maximum
    large = r2 >= (_LARGE_BALL_VOXELS * work.min()) ** 2 if not periodic else np.zeros(r2.shape, bool)
    painted = _paint_balls(binary.shape, idx[~large], r2[~large], work, periodic, max(1, numba.get_num_threads() * 2))
    if large.any():
        big = np.zeros(binary.shape)
        _paint_large_balls(big, idx[large], r2[large], work)
        np.maximum(painted, big, out=painted)
    out = 2.0 * np.sqrt(painted)
    if clean_up:
        out = _clean_up(out, periodic, region)
    out *= unit
    out[~binary] = np.nan  # BoneJ "mask artefacts": drop the overhang outside the structure
    return out


def _squared_distance(binary: np.ndarray, spacing: np.ndarray, periodic: bool) -> tuple[np.ndarray, int]:
    """Squared distance map and the padding used (periodic images are wrap-padded so that
    distances see across the tile edges; the map is then on the padded grid)."""
    if not periodic:
        return squared_edt(binary, spacing), 0
    # grow the pad until it exceeds the largest distance found (then no nearest background
    # voxel can lie beyond it)
    pad = 8
    while True:
        dt2 = squared_edt(np.pad(binary, pad, mode="wrap"), spacing)
        reach = np.sqrt(dt2.max()) / spacing.min()
        if reach + 1 < pad or pad >= 2 * max(binary.shape):
            return dt2, pad
        pad = int(np.ceil(reach)) + 2


def thickness_stats(thickness_map: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a thickness map over its finite voxels (BoneJ's Tb.Th/Tb.Sp, SD)."""
    values = thickness_map[np.isfinite(thickness_map)]
    if values.size == 0:
        raise BoneKitError("The thickness map has no finite value.")
    return float(values.mean()), float(values.std())

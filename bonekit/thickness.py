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

All five steps are implemented here, with differences that do not change a value:

- step 1 is an exact separable transform (Felzenszwalb & Huttenlocher), run in parallel, that
  treats each run of foreground between two background voxels on a line on its own (short
  runs by brute force);
- step 2 uses BoneJ's digital-ball templates on isotropic voxels (all 26 tests at once) and
  exact continuous-ball containment otherwise (a pruned ball is inside a larger one, so it
  never sets a maximum); it returns the centres in raster order;
- step 3 paints slabs of the image in parallel, small balls row by row from a table of the
  digital balls, large ones in descending size with skip pointers past painted voxels;
- on isotropic voxels, when the large balls would cross many rows and most of them lie in a
  larger ball (a large pore or ball: BoneJ's worst case, where the digital ridge is dense),
  step 3 leaves out every ball whose structure voxels all lie in the ball of the local maximum
  its centre climbs to (an exact test in integers over the small cap where the two balls'
  surfaces part), and sets the voxels off the structure in a separate exact pass: a ball reaches
  them only with its surface, so each takes the largest r^2 among the balls whose surface passes
  through it, for all voxels at once from a separable lower envelope of the key
  (|x - c|^2 - r^2, -r^2);
- steps 4 and 5 are one pass, in the memory of the distance map, so two volumes of float64
  are the peak.

Anisotropic voxels: every distance is physical (mm), so balls are spheres in mm, not in
voxels. BoneJ warns and measures in voxels; for isotropic voxels the two are the same.
Periodic boundaries (for tileable phantom blocks) wrap steps 1 and 4; step 3 paints on the
padded grid of step 1 and folds it back onto the tile.
"""

from __future__ import annotations

import numba
import numpy as np

from .errors import BoneKitError

_INF = np.inf
_TEMPLATE_V = 200 * 200
_SHORT_RUN = 24  # distance-transform runs up to this long: brute force
_LARGE_BALL_VOXELS = 6.0  # ball radius (voxels) from which painting by rows pays
_PRUNE_ROWS_PER_VOXEL = 8.0  # rows of large balls saved per voxel from which leaving balls out pays
_PRUNE_SAMPLE = 2000  # large balls tested to estimate what leaving balls out saves
_CAP_COLUMNS = 4096  # most columns scanned to show that a ball adds nothing


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
def _edt_lines(a, w2, zeros_stay=True):
    """In place: ``a[.., q] = min_p a[.., p] + w2 (q - p)^2`` along the last axis of a 3D float64
    array (any strides; inf for no value). ``zeros_stay``: the values are non-negative and the
    zeros (background) stay zero, so each run between zeros is done on its own."""
    n0, n1, n = a.shape
    for i in numba.prange(n0):
        f = np.empty(n)
        out = np.empty(n)
        v = np.empty(n, np.int64)
        z = np.empty(n + 1)
        for j in range(n1):
            f[:] = a[i, j, :]
            if not zeros_stay:
                _envelope_1d(f, w2, out, v, z)
                a[i, j, :] = out
                continue
            # a zero (background) voxel is nearer to the voxels beyond it than anything further
            # out, so each run of non-zero values needs only itself and the zeros around it
            s = 0
            while s < n:
                if f[s] == 0:
                    s += 1
                    continue
                e = s
                while e < n and f[e] != 0:
                    e += 1
                lo, hi = max(s - 1, 0), min(e + 1, n)
                if hi - lo <= _SHORT_RUN:  # brute force beats the envelope's divisions
                    for q in range(s, e):
                        best = _INF
                        for p in range(lo, hi):
                            best = min(best, f[p] + w2 * (q - p) * (q - p))
                        a[i, j, q] = best
                else:
                    _envelope_1d(f[lo:hi], w2, out[lo:hi], v, z)
                    a[i, j, s:e] = out[s:e]
                s = e


@numba.njit(cache=True, parallel=True)
def _edt_rows(binary, w2):
    """The first pass of the transform, along x: squared distance to the nearest background
    voxel of the row (inf when the row has none), by a scan each way."""
    nz, ny, nx = binary.shape
    out = np.empty(binary.shape)
    for z in numba.prange(nz):
        for y in range(ny):
            row = out[z, y]
            last = -1
            for x in range(nx):
                if not binary[z, y, x]:
                    last = x
                row[x] = _INF if last < 0 else w2 * (x - last) ** 2
            last = -1
            for x in range(nx - 1, -1, -1):
                if not binary[z, y, x]:
                    last = x
                elif last >= 0:
                    row[x] = min(row[x], w2 * (last - x) ** 2)
    return out


def squared_edt(binary: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Exact squared Euclidean distance (float64, units of ``spacing`` squared) from every
    foreground voxel centre to the nearest background voxel centre; 0 on the background,
    inf where the image holds no background. The image border is not background (BoneJ)."""
    sz, sy, sx = (float(s) for s in spacing)
    a = _edt_rows(np.ascontiguousarray(binary, dtype=bool), sx * sx)
    for axis, s in ((1, sy), (0, sz)):
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
def _ridge_centres(dt2, spacing, pad, templates):
    """Centres (off the pad) whose ball is not inside a 26-neighbour's ball, as (z, y, x) rows in
    raster order, and their squared radii.

    Isotropic voxels (``templates`` non-empty, squared distances in voxels): containment of
    the digital balls, through the templates; otherwise (and beyond the templates' reach)
    containment of the continuous balls, which implies the digital one."""
    nz, ny, nx = dt2.shape
    keep = np.zeros(dt2.shape, np.bool_)
    counts = np.zeros(nz + 1, np.int64)
    vcap = templates.shape[1] - 1
    thresholds = templates.astype(np.float64)  # compared with float distances
    step = np.empty((3, 3, 3))
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                step[dz, dy, dx] = np.sqrt(((dz - 1) * spacing[0]) ** 2 + ((dy - 1) * spacing[1]) ** 2
                                           + ((dx - 1) * spacing[2]) ** 2)
    for z in numba.prange(pad, nz - pad):
        n = 0
        for y in range(pad, ny - pad):
            for x in range(pad, nx - pad):
                v = dt2[z, y, x]
                if v == 0:
                    continue
                if v <= vcap and 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1:
                    # digital balls away from the edges: all 26 tests at once, no branches
                    t0, t1, t2 = thresholds[0, int(v)], thresholds[1, int(v)], thresholds[2, int(v)]
                    hits = 0
                    for dz in range(-1, 2):
                        for dy in range(-1, 2):
                            row = dt2[z + dz, y + dy]
                            t = t0 if dz == 0 and dy == 0 else (t1 if dz == 0 or dy == 0 else t2)
                            tc = _INF if dz == 0 and dy == 0 else (t0 if dz == 0 or dy == 0 else t1)
                            hits += (row[x - 1] >= t) + (row[x + 1] >= t) + (row[x] >= tc)
                    if hits == 0:
                        keep[z, y, x] = True
                        n += 1
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
                if not inside:
                    keep[z, y, x] = True
                    n += 1
        counts[z + 1] = n
    for z in range(nz):
        counts[z + 1] += counts[z]
    centres = np.empty((counts[nz], 3), np.int64)
    r2 = np.empty(counts[nz])
    for z in numba.prange(nz):
        m = counts[z]
        for y in range(ny):
            for x in range(nx):
                if keep[z, y, x]:
                    centres[m, 0] = z
                    centres[m, 1] = y
                    centres[m, 2] = x
                    r2[m] = dt2[z, y, x]
                    m += 1
    return centres, r2


@numba.njit(cache=True)
def _isqrt(n):
    """floor(sqrt(n)) of an integer n >= 0 (below 2^52: the float root is off by at most one)."""
    if n <= 0:
        return 0
    k = int(np.sqrt(n))
    while k * k > n:
        k -= 1
    while (k + 1) * (k + 1) <= n:
        k += 1
    return k


@numba.njit(cache=True)
def _half_width(rem, s, iso):
    """floor(sqrt(rem) / s): the half-width in voxels of a ball's chord (``rem`` is integer when iso)."""
    if rem <= 0.0:
        return 0
    if iso:
        return _isqrt(int(rem))
    return int(np.floor(np.sqrt(rem) / s + 1e-9))


@numba.njit(cache=True)
def _ball_rows(vmax):
    """Rows of the digital balls ``|x|^2 <= v`` for integer v < ``vmax`` (isotropic voxels):
    the rows of ball v are ``start[v]:start[v + 1]``, each a (dz, dy) and a half-width dx."""
    r = int(np.sqrt(max(vmax, 0))) + 1
    start = np.zeros(max(vmax, 0) + 1, np.int64)
    for v in range(vmax):
        n = 0
        for dz in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if dz * dz + dy * dy <= v:
                    n += 1
        start[v + 1] = start[v] + n
    rows = np.empty((start[-1], 3), np.int64)
    m = 0
    for v in range(vmax):
        for dz in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if dz * dz + dy * dy <= v:
                    rows[m, 0], rows[m, 1], rows[m, 2] = dz, dy, _half_width(v - dz * dz - dy * dy, 1.0, True)
                    m += 1
    return start, rows


@numba.njit(cache=True)
def _max_run(row, a, b, v):
    """row[a:b] = max(row[a:b], v), clipped to the row."""
    for x in range(max(a, 0), min(b, row.shape[0])):
        row[x] = max(row[x], v)


@numba.njit(cache=True, parallel=True)
def _paint_balls(out, centres, r2, spacing, iso, below, n_slabs):
    """Each ball with r^2 < ``below`` writes max(r^2) into the voxels of ``out`` it covers
    (|x-c|^2 <= r^2, in mm).

    The z axis is cut into slabs painted in parallel; each slab writes only its own voxels,
    so there is no write race. Centres are sorted by z, so each slab scans only the centres
    whose ball can reach it. ``iso``: unit voxels and integer r^2, so each ball's rows come
    from a table of the digital balls.
    """
    nz, ny, nx = out.shape
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    bounds = np.linspace(0, nz, n_slabs + 1).astype(np.int64)
    reach = 0
    for p in range(r2.shape[0]):
        if r2[p] < below:
            reach = max(reach, _half_width(r2[p], sz, iso))
    start, rows = _ball_rows(int(np.ceil(below)) if iso else 0)
    for s in numba.prange(n_slabs):
        z0, z1 = bounds[s], bounds[s + 1]
        first = np.searchsorted(centres[:, 0], z0 - reach)
        last = np.searchsorted(centres[:, 0], z1 + reach)
        for p in range(first, last):
            cz, cy, cx, v = centres[p, 0], centres[p, 1], centres[p, 2], r2[p]
            if v >= below:
                continue
            if iso:
                for t in range(start[int(v)], start[int(v) + 1]):
                    z, y = cz + rows[t, 0], cy + rows[t, 1]
                    if z0 <= z < z1 and 0 <= y < ny:
                        _max_run(out[z, y], cx - rows[t, 2], cx + rows[t, 2] + 1, v)
                continue
            tol = v * 1e-12
            rz = _half_width(v, sz, iso)
            for z in range(max(cz - rz, z0), min(cz + rz + 1, z1)):
                remz = v - ((z - cz) * sz) ** 2
                if remz < -tol:
                    continue
                ry = _half_width(remz, sy, iso)
                for y in range(max(cy - ry, 0), min(cy + ry + 1, ny)):
                    rem = remz - ((y - cy) * sy) ** 2
                    if rem >= -tol:
                        rx = _half_width(rem, sx, iso)
                        _max_run(out[z, y], cx - rx, cx + rx + 1, v)


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
def _paint_large_balls(out, centres, r2, spacing, iso, least):
    """Paint the balls with r^2 >= ``least`` in descending r^2 into a zeroed ``out``, so the
    first ball to reach a voxel sets its value; each row keeps skip pointers past its painted
    voxels, so a ball costs a step per row it crosses plus the voxels it paints first, not its
    volume. Call this before painting the smaller balls."""
    nz, ny, nx = out.shape
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    large = np.nonzero(r2 >= least)[0]
    order = large[np.argsort(-r2[large], kind="mergesort")]
    top = int(r2[order[0]]) if iso and order.size else -1
    isqrt = np.empty(top + 1 if top < (1 << 22) else 0, np.int64)  # integer chords: a table
    for k in range(isqrt.shape[0]):
        isqrt[k] = _half_width(k, 1.0, True)
    reach = np.zeros(r2.shape[0], np.int64)
    counts = np.zeros(nz + 1, np.int64)
    for p in large:
        reach[p] = _half_width(r2[p], sz, iso)
        for z in range(max(centres[p, 0] - reach[p], 0), min(centres[p, 0] + reach[p], nz - 1) + 1):
            counts[z + 1] += 1
    for z in range(nz):
        counts[z + 1] += counts[z]
    members = np.empty(counts[nz], np.int64)  # each slice's balls, in descending r^2
    fill = counts[:nz].copy()
    for p in order:
        for z in range(max(centres[p, 0] - reach[p], 0), min(centres[p, 0] + reach[p], nz - 1) + 1):
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
            tol = 0.0 if iso else v * 1e-12
            remz = v - ((z - centres[p, 0]) * sz) ** 2
            if remz < -tol:
                continue
            ry = _half_width(remz, sy, iso)
            for y in range(max(centres[p, 1] - ry, 0), min(centres[p, 1] + ry, ny - 1) + 1):
                rem = remz - ((y - centres[p, 1]) * sy) ** 2
                if rem >= -tol:
                    rx = isqrt[int(rem)] if isqrt.shape[0] else _half_width(rem, sx, iso)
                    _paint_interval(out[z, y], nxt[y], max(centres[p, 2] - rx, 0), min(centres[p, 2] + rx, nx - 1), v)


@numba.njit(cache=True)
def _climb(dt2, z, y, x, top, lo, hi, stack):
    """Steepest ascent of ``dt2`` from (z, y, x) over 26-neighbours inside the box ``lo``..``hi``
    (exclusive) to a local maximum, returned as a linear index and memoised in ``top`` for every
    voxel on the way (-1: not known yet)."""
    nz, ny, nx = dt2.shape
    n = 0
    while True:
        here = (z * ny + y) * nx + x
        if top[here] >= 0:
            found = top[here]
            break
        stack[n] = here
        n += 1
        best = dt2[z, y, x]
        bz, by, bx = z, y, x
        for zz in range(max(z - 1, lo[0]), min(z + 2, hi[0])):
            for yy in range(max(y - 1, lo[1]), min(y + 2, hi[1])):
                for xx in range(max(x - 1, lo[2]), min(x + 2, hi[2])):
                    if dt2[zz, yy, xx] > best:
                        best = dt2[zz, yy, xx]
                        bz, by, bx = zz, yy, xx
        if bz == z and by == y and bx == x:
            found = here
            break
        z, y, x = bz, by, bx
    for m in range(n):
        top[stack[m]] = found
    return found


@numba.njit(cache=True)
def _covers_structure(structure, c, v, d, w, budget):
    """True when every voxel of the structure in the digital ball |x - c|^2 <= v also lies in the
    ball |x - c - d|^2 <= w (w > v; integer squared radii, unit voxels); False when it does not or
    when checking would take more than ``budget`` columns.

    A voxel of the first ball outside the second satisfies x.d < (v - w + |d|^2) / 2 (x relative to
    c): it lies in a cap of the first ball opposite d, which for nearly nested balls is small. The
    cap's box is scanned in columns along the axis where d is largest, each column's stretch
    outside the second ball found exactly in integers."""
    nz, ny, nx = structure.shape
    dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    r = np.sqrt(v)
    if (r + np.sqrt(dd)) ** 2 <= w * (1.0 - 1e-12):  # nested as continuous balls, so as digital ones
        return True
    tau = v - w + dd
    if tau >= 0:
        return False  # at least half the ball: not worth it
    norm = np.sqrt(dd)
    s = -tau / (2.0 * norm)  # the cap: x.u < -s, |x| <= r, u = d / |d|
    if s > r + 1.0:
        return True
    rho = np.sqrt(max(r * r - s * s, 0.0))
    a = 0
    for k in range(1, 3):
        if abs(d[k]) > abs(d[a]):
            a = k
    p, q = (a + 1) % 3, (a + 2) % 3
    lo_p = int(np.floor(min(-s * d[p] / norm, -r * d[p] / norm) - rho)) - 1
    hi_p = int(np.ceil(max(-s * d[p] / norm, -r * d[p] / norm) + rho)) + 1
    lo_q = int(np.floor(min(-s * d[q] / norm, -r * d[q] / norm) - rho)) - 1
    hi_q = int(np.ceil(max(-s * d[q] / norm, -r * d[q] / norm) + rho)) + 1
    if (hi_p - lo_p + 1) * (hi_q - lo_q + 1) > budget:
        return False
    point = np.empty(3, np.int64)
    for xp in range(lo_p, hi_p + 1):
        for xq in range(lo_q, hi_q + 1):
            rem = v - xp * xp - xq * xq
            if rem < 0:
                continue
            h = _isqrt(rem)  # the column of the first ball: -h..h along a
            m = w - (xp - d[p]) ** 2 - (xq - d[q]) ** 2
            if m < 0:  # the whole column lies outside the second ball
                first, last, gap_lo, gap_hi = -h, h, h + 1, h
            else:
                k = _isqrt(m)  # inside the second ball: d_a - k .. d_a + k
                first, last, gap_lo, gap_hi = -h, h, d[a] - k, d[a] + k
            for part in range(2):  # the column's stretches below and above the second ball
                a0, a1 = (first, min(last, gap_lo - 1)) if part == 0 else (max(first, gap_hi + 1), last)
                for xa in range(a0, a1 + 1):
                    point[a], point[p], point[q] = c[a] + xa, c[p] + xp, c[q] + xq
                    if 0 <= point[0] < nz and 0 <= point[1] < ny and 0 <= point[2] < nx:
                        if structure[point[0], point[1], point[2]]:
                            return False
    return True


@numba.njit(cache=True, parallel=True)
def _redundant_balls(dt2, structure, centres, r2, which, pad, budget, n_chunks, top):
    """For the balls ``which`` (isotropic voxels): True where every structure voxel of the ball
    lies in the ball of the local maximum of the distance map that steepest ascent from its centre
    reaches, a larger ball, so that leaving the ball out changes no maximum on the structure.
    ``top``: the ascent's memo, -1 for every voxel at first."""
    nz, ny, nx = dt2.shape
    lo = np.array([pad, pad, pad])
    hi = np.array([nz - pad, ny - pad, nx - pad])
    vmax = 0.0
    for p in which:
        vmax = max(vmax, r2[p])
    out = np.zeros(which.shape[0], np.bool_)
    chunks = np.linspace(0, which.shape[0], n_chunks + 1).astype(np.int64)
    for c in numba.prange(chunks.shape[0] - 1):
        stack = np.empty(int(vmax) + 2, np.int64)  # an ascent path: dt2 grows at every step
        d = np.empty(3, np.int64)
        for m in range(chunks[c], chunks[c + 1]):
            p = which[m]
            v = r2[p]
            cz, cy, cx = centres[p, 0], centres[p, 1], centres[p, 2]
            t = _climb(dt2, cz, cy, cx, top, lo, hi, stack)
            tx = t % nx
            ty = (t // nx) % ny
            tz = t // (nx * ny)
            w = dt2[tz, ty, tx]
            if w > v:
                d[0], d[1], d[2] = tz - cz, ty - cy, tx - cx
                out[m] = _covers_structure(structure, centres[p], int(v), d, int(w), budget)
    return out


@numba.njit(cache=True, parallel=True)
def _scatter_keys(out, centres, r2, top):
    """``out`` = inf except at the centres, which hold ``top - (W + 1) r^2`` (W = top + 1)."""
    nz, ny, nx = out.shape
    for z in numba.prange(nz):
        out[z] = _INF
    for p in range(r2.shape[0]):
        out[centres[p, 0], centres[p, 1], centres[p, 2]] = top - (top + 2.0) * r2[p]


@numba.njit(cache=True, parallel=True)
def _touched_background(painted, keys, structure, top):
    """Off the structure, ``painted`` = the largest r^2 of the balls whose surface passes through
    the voxel (0 if none), decoded from ``keys`` = min over balls of W (|x - c|^2 - r^2) + top - r^2."""
    nz, ny, nx = painted.shape
    w = top + 1.0
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                if structure[z, y, x]:
                    continue
                k = keys[z, y, x]
                power = np.floor(k / w)  # |x - c|^2 - r^2 of the best ball: 0 when x is on its surface
                painted[z, y, x] = top - (k - w * power) if power == 0 else 0.0


def _paint_background(painted, structure, centres, r2):
    """Exact values off the structure (where a ball only reaches its surface voxels): each such
    voxel takes the largest r^2 of the balls through it, from one separable lower envelope over
    all ridge balls of the lexicographic key (|x - c|^2 - r^2, -r^2), scaled into one float. So the
    painting may skip balls that add nothing on the structure (``_redundant_balls``)."""
    top = float(r2.max())
    keys = np.empty(painted.shape)
    _scatter_keys(keys, centres, r2, top)
    w = top + 1.0
    for axis in (2, 1, 0):
        _edt_lines(np.moveaxis(keys, axis, -1), w, False)
    _touched_background(painted, keys, structure, top)


@numba.njit(cache=True)
def _neighbour(i, n, periodic):
    """Index ``i`` on an axis of length ``n``: wrapped if periodic, else -1 when outside."""
    if periodic:
        return i % n
    return i if 0 <= i < n else -1


@numba.njit(cache=True)
def _max_into(row, other):
    for x in range(row.shape[0]):
        row[x] = max(row[x], other[x])


@numba.njit(cache=True, parallel=True)
def _dilate_line(a, out, axis, periodic):
    """``out`` = 3-wide dilation of the uint8 volume ``a`` along ``axis`` (0 beyond the edge
    unless periodic); whole rows at a time, so the inner loops vectorise."""
    nz, ny, nx = a.shape
    for z in numba.prange(nz):
        for y in range(ny):
            row = out[z, y]
            row[:] = a[z, y]
            if axis == 2:
                src = a[z, y]
                for x in range(1, nx - 1):
                    row[x] = max(src[x - 1], src[x], src[x + 1])
                for e in range(2):  # the two ends of the row
                    x = e * (nx - 1)
                    for d in range(-1, 2, 2):
                        k = _neighbour(x + d, nx, periodic)
                        if k >= 0:
                            row[x] = max(row[x], src[k])
            elif axis == 1:
                for d in range(-1, 2, 2):
                    k = _neighbour(y + d, ny, periodic)
                    if k >= 0:
                        _max_into(row, a[z, k])
            else:
                for d in range(-1, 2, 2):
                    k = _neighbour(z + d, nz, periodic)
                    if k >= 0:
                        _max_into(row, a[k, y])


@numba.njit(cache=True, parallel=True)
def _diameters(r2):
    """In place: squared radii to diameters, 2 sqrt(r^2)."""
    nz, ny, nx = r2.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                r2[z, y, x] = 2.0 * np.sqrt(r2[z, y, x])


@numba.njit(cache=True, parallel=True)
def _near_zero(d, region, periodic):
    """1 where a 26-neighbour (or the voxel itself) is an unpainted voxel of the image (inside
    ``region`` when it is non-empty), else 0."""
    nz, ny, nx = d.shape
    has_region = region.size > 0
    zero = np.zeros(d.shape, np.uint8)
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                if d[z, y, x] == 0 and (not has_region or region[z, y, x]):
                    zero[z, y, x] = 1
    near = np.empty_like(zero)
    _dilate_line(zero, near, 2, periodic)
    _dilate_line(near, zero, 1, periodic)
    _dilate_line(zero, near, 0, periodic)
    return near


@numba.njit(cache=True, parallel=True)
def _cleaned_map(d, near_zero, binary, region, scale, periodic):
    """``scale * d`` on the structure, NaN elsewhere, with BoneJ's clean-up (step 4) where
    ``near_zero`` is non-empty: a painted voxel with an in-image 26-neighbour of value 0 (a
    surface voxel) takes the mean of its interior (painted, not surface) 26-neighbours, or keeps
    its value if it has none. Outside ``region`` (when it is non-empty) is outside the image:
    neither 0 nor interior."""
    nz, ny, nx = d.shape
    has_region = region.size > 0
    clean_up = near_zero.size > 0
    out = np.empty(d.shape)
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                if not binary[z, y, x]:
                    out[z, y, x] = np.nan
                    continue
                if not clean_up or near_zero[z, y, x] == 0:
                    out[z, y, x] = scale * d[z, y, x]
                    continue
                total = 0.0
                n = 0
                if 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1:  # no edge: no branches
                    for zz in range(z - 1, z + 2):
                        for yy in range(y - 1, y + 2):
                            drow, nrow = d[zz, yy], near_zero[zz, yy]
                            for xx in range(x - 1, x + 2):
                                ok = drow[xx] != 0 and nrow[xx] == 0 and (not has_region or region[zz, yy, xx])
                                total += drow[xx] if ok else 0.0
                                n += ok
                    out[z, y, x] = scale * (total / n if n > 0 else d[z, y, x])
                    continue
                for dz in range(-1, 2):
                    zz = _neighbour(z + dz, nz, periodic)
                    if zz < 0:
                        continue
                    for dy in range(-1, 2):
                        yy = _neighbour(y + dy, ny, periodic)
                        if yy < 0:
                            continue
                        for dx in range(-1, 2):
                            xx = _neighbour(x + dx, nx, periodic)
                            if xx < 0:
                                continue
                            w = d[zz, yy, xx]
                            if w != 0 and near_zero[zz, yy, xx] == 0 and (not has_region or region[zz, yy, xx]):
                                total += w
                                n += 1
                out[z, y, x] = scale * (total / n if n > 0 else d[z, y, x])
    return out


def _finish(r2, binary, region, scale, clean_up, periodic):
    """The thickness map from the painted squared radii (overwritten): ``scale * 2 sqrt(r2)``
    on the structure, NaN elsewhere, with BoneJ's clean-up when asked."""
    _diameters(r2)
    near_zero = _near_zero(r2, region, periodic) if clean_up else np.zeros((0, 0, 0), np.uint8)
    return _cleaned_map(r2, near_zero, binary, region, scale, periodic)


def _fold_max(a: np.ndarray, pad: int, n: tuple[int, ...]) -> np.ndarray:
    """Fold a grid padded by ``pad`` on every side back onto the periodic tile of shape ``n``,
    keeping the maximum of the voxels that land on one another."""
    for axis, size in enumerate(n):
        a = np.moveaxis(a, axis, 0)
        k = -(-a.shape[0] // size)
        whole = np.zeros((k * size,) + a.shape[1:], a.dtype)
        whole[:a.shape[0]] = a
        a = np.moveaxis(np.roll(whole.reshape((k, size) + a.shape[1:]).max(axis=0), -pad, axis=0), 0, axis)
    return np.ascontiguousarray(a)


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
    iso = bool(np.all(sp == sp[0]))
    unit = float(sp[0]) if iso else 1.0
    work = sp / unit
    # outside the region is not background: it counts as foreground for the distance map
    dt2, pad = _squared_distance(binary if region is None else binary | ~region, work, periodic)
    if region is not None:
        dt2[~binary] = 0.0  # centres only inside the structure (and so inside the region)
    if iso:  # digital-ball templates up to r = 200 voxels
        top = float(dt2.max())  # inf only in a periodic block with no background at all
        vmax = int(min(top if np.isfinite(top) else np.max(dt2[np.isfinite(dt2)], initial=0.0), _TEMPLATE_V))
        templates = _containment_templates(vmax)
    else:
        templates = np.zeros((3, 0), np.int64)
    centres, r2 = _ridge_centres(dt2, work, pad, templates)
    # balls much wider than a voxel: painted by rows in descending size (cost ~ area, not volume);
    # the rest (most balls in trabecular bone) one voxel at a time, keeping the maximum
    large = (_LARGE_BALL_VOXELS * work.min()) ** 2
    left_out = _balls_to_leave_out(dt2, binary, centres, r2, large, pad) if iso else None
    if left_out is not None:
        # many rows of large balls to paint, most of them inside larger balls (a large pore,
        # BoneJ's worst case): leave those out, then set the voxels off the structure exactly
        structure, redundant = left_out
        kept_centres, kept_r2 = centres[~redundant], r2[~redundant]
    else:
        kept_centres, kept_r2 = centres, r2
    painted = dt2  # the distances are no longer needed: paint into their memory
    painted[...] = 0.0
    _paint_large_balls(painted, kept_centres, kept_r2, work, iso, large)
    _paint_balls(painted, kept_centres, kept_r2, work, iso, large, max(1, numba.get_num_threads() * 2))
    if left_out is not None:
        _paint_background(painted, structure, centres, r2)
    if periodic:  # painted on the padded grid, balls whole: fold the overhang back onto the tile
        painted = _fold_max(painted, pad, binary.shape)
    empty = np.zeros((0, 0, 0), bool)
    return _finish(painted, binary, empty if region is None else region, unit, clean_up, periodic)


def _balls_to_leave_out(dt2, binary, centres, r2, large, pad):
    """(structure on the painting grid, mask of the ridge balls to leave out) when leaving the
    redundant large balls out pays, else None.

    Painting costs a step per row a large ball crosses; the test and the exact pass off the
    structure cost a few steps per voxel. So leave balls out when the large balls cross more than
    ``_PRUNE_ROWS_PER_VOXEL`` rows per voxel and a sample of them shows that the redundant ones
    alone would save that many (irregular pores are covered by unions of balls, rarely by one)."""
    which = np.flatnonzero(r2 >= large)
    rows = np.pi * r2[which]
    if which.size == 0 or rows.sum() <= _PRUNE_ROWS_PER_VOXEL * dt2.size:
        return None
    structure = np.pad(binary, pad, mode="wrap") if pad else binary
    top = np.full(dt2.size, -1, np.int64)  # the ascent's memo, shared by the sample and the rest
    sample = np.random.default_rng(0).choice(which.size, min(which.size, _PRUNE_SAMPLE), replace=False)
    redundant = _redundant_balls(dt2, structure, centres, r2, which[sample], pad, _CAP_COLUMNS, 8, top)
    if rows.sum() * rows[sample][redundant].sum() / rows[sample].sum() <= _PRUNE_ROWS_PER_VOXEL * dt2.size:
        return None
    left_out = np.zeros(r2.shape, bool)
    left_out[which] = _redundant_balls(dt2, structure, centres, r2, which, pad, _CAP_COLUMNS,
                                       64 * numba.get_num_threads(), top)
    return structure, left_out


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

"""Focal bone-loss maps of the vertebral body (Li et al. 2022, JOR Spine).

The method, step by step (every number is a :class:`FocalParameters` field, the paper's value
the default):

1. Resample the CT around the ROI to a 0.3 mm isotropic grid (linear interpolation), axes
   parallel to the CT's own, so the star lines lie in the CT's slice (axial) plane.
2. Unsharp masking: ``S = I + amount * (I - G_sigma * I)`` with a Gaussian of sigma 0.3 mm.
3. HU -> mg HA/cm3 with the calibration, when one is given (else the maps are in HU).
4. For every ROI voxel and every orientation of the star (every 12 degrees in the axial plane,
   or over the sphere with ``star="3d"``), take the intensity profile along the line through
   the voxel, over the whole stretch of the line that lies inside the ROI. Its local maxima and
   minima alternate; each minimum between two maxima is a valley, and the part of the valley
   below ``min + 0.5 * (max - min)`` = 0.5 * (max + min) is a bone void.
5. A voxel inside a void gets, for that orientation: IncptWidth = the void's width (mm, between
   the two linearly interpolated crossings of the level), focal BMD loss = the mean of
   (1200 - BMD) / 1200 over the void's samples, focal BMC loss = focal BMD loss x IncptWidth.
6. Each measure is averaged over the orientations: the three voxel maps, and their ROI means.

Where the paper is silent, BoneKit chooses (each switchable, see :class:`FocalParameters`):

* ``flank="lower"``: the valley's level uses the lower of its two flanking maxima, so the void
  is one contiguous run between them ("each": each side crosses at its own maximum's level).
* ``no_void="zero"``: an orientation in which the voxel is not in a void (it lies on a ridge,
  i.e. a trabecula, or in an open valley at the ROI's edge) counts as 0 in the average; "skip"
  averages only over the orientations where it is in a void (0 where it never is).
* Only valleys closed by a maximum on both sides inside the ROI are voids: the ends of a
  profile are not extrema.
* Lines are shared: for each orientation the lines form a grid one sample apart (0.3 mm)
  across the orientation; a voxel takes the line nearest its centre and its exact position
  along it. All voxels on a line share one profile, which is what makes the method fast; the
  per-voxel reference implementation (``method="naive"``) follows the same definition voxel by
  voxel and gives identical maps.
* Steps smaller than 1e-9 of the image's value range count as flat (so interpolation round-off on
  a uniform region never creates a void).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
from scipy import ndimage

from .calibration import Calibration
from .errors import BoneKitError
from .progress import ProgressCallback
from .results import Result, quantity
from .volume import Volume, make_affine

__all__ = ["FocalParameters", "FocalResult", "focal_maps", "focal_regions", "pooled", "star_directions", "MAP_NAMES"]

#: The three voxel maps, in the order they are computed and written.
MAP_NAMES = ("IncptWidth", "FocalBMDLoss", "FocalBMCLoss")


@dataclass
class FocalParameters:
    """Parameters of the focal-loss maps; defaults are Li et al. 2022's."""

    spacing_mm: float = 0.3         # isotropic grid the CT is resampled to (linear interpolation)
    sigma_mm: float = 0.3           # Gaussian of the unsharp mask
    sharpen: float = 1.0            # unsharp-mask amount: S = I + sharpen * (I - G * I)
    angle_step_deg: float = 12.0    # between star lines
    reference_bmd: float = 1200.0   # mg HA/cm3 (or HU uncalibrated): loss = (reference - value) / reference
    level: float = 0.5              # void = valley below min + level * (max - min)
    flank: str = "lower"            # which maximum sets the level: "lower" of the two, or "each" side its own
    star: str = "2d"                # "2d": lines in the axial plane; "3d": lines over the sphere
    no_void: str = "zero"           # orientation without a void at the voxel: "zero" or "skip"
    min_depth: float = 0.0          # extrema must rise/fall by more than this (image units); 0 = every extremum

    def check(self) -> None:
        for name in ("spacing_mm", "angle_step_deg", "reference_bmd"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise BoneKitError(f"Focal parameter {name} must be a positive number, not {value}.")
        if not (np.isfinite(self.sigma_mm) and self.sigma_mm >= 0):
            raise BoneKitError(f"Focal parameter sigma_mm must be >= 0 (0 = no unsharp mask), not {self.sigma_mm}.")
        if not (np.isfinite(self.sharpen) and self.sharpen >= 0):
            raise BoneKitError(f"Focal parameter sharpen must be >= 0, not {self.sharpen}.")
        if not (np.isfinite(self.min_depth) and self.min_depth >= 0):
            raise BoneKitError(f"Focal parameter min_depth must be >= 0 (0 = the paper), not {self.min_depth}.")
        if not 0 < self.level <= 1:
            raise BoneKitError(f"Focal parameter level must lie in (0, 1] (the paper: 0.5), not {self.level}.")
        if self.angle_step_deg > 90:
            raise BoneKitError(f"An angle step of {self.angle_step_deg} degrees leaves one line per voxel; "
                               "use at most 90 (the paper: 12).")
        for name, allowed in (("flank", ("lower", "each")), ("star", ("2d", "3d")), ("no_void", ("zero", "skip"))):
            if getattr(self, name) not in allowed:
                raise BoneKitError(f"Focal parameter {name} must be one of {', '.join(allowed)}, "
                                   f"not {getattr(self, name)!r}.")


@dataclass
class FocalResult(Result):
    IncptWidth: float = quantity("mm", "mean over the ROI of the voxel-wise intercept (void) width")
    IncptWidth_SD: float = quantity("mm", "SD over the ROI of the voxel-wise intercept width", name="IncptWidth.SD")
    FocalBMDLoss: float = quantity("1", "mean over the ROI of the voxel-wise focal BMD loss, "
                                   "(reference - BMD) / reference averaged over the void")
    FocalBMDLoss_SD: float = quantity("1", "SD over the ROI of the focal BMD loss", name="FocalBMDLoss.SD")
    FocalBMCLoss: float = quantity("mm", "mean over the ROI of the voxel-wise focal BMC loss, "
                                   "focal BMD loss x IncptWidth")
    FocalBMCLoss_SD: float = quantity("mm", "SD over the ROI of the focal BMC loss", name="FocalBMCLoss.SD")
    BMD: float | None = quantity("mg HA/cm3", "mean calibrated BMD over the ROI (sharpened 0.3 mm image); "
                                 "null without a calibration")
    HU: float | None = quantity("HU", "mean HU over the ROI (sharpened 0.3 mm image); null with a calibration")
    density: str = quantity(None, "what the profiles and the loss are computed on: 'BMD (mg HA/cm3)' or "
                            "'HU (uncalibrated)'")
    void_fraction: float = quantity("1", "fraction of (voxel, orientation) pairs that lie in a void")
    voxels: int = quantity("1", "ROI voxels on the resampled grid")
    orientations: int = quantity("1", "star lines per voxel")
    spacing_mm: float = quantity("mm", "isotropic grid of the maps")
    parameters: dict = field(default_factory=dict, metadata={"unit": None, "description": "all parameters used"})


# ----------------------------------------------------------------------------- geometry

def _snap(v: np.ndarray) -> np.ndarray:
    v = np.where(np.abs(v) < 1e-12, 0.0, v)
    return v / np.linalg.norm(v)


def star_directions(angle_step_deg: float = 12.0, star: str = "2d") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Orthonormal bases (d, e1, e2) in (i, j, k) voxel axes, one per star line: d along the line,
    e1 and e2 across it. "2d": d every ``angle_step_deg`` over [0, 180) in the i-j (axial) plane,
    e2 = k. "3d": elevations every step in (-90, 90) and the k axis, each elevation with as many
    azimuths over [0, 180) as its circle holds at that step."""
    step = float(angle_step_deg)
    if star == "2d":
        elevations = [0.0]
    else:
        m = int(math.ceil(90.0 / step)) - 1
        elevations = [k * step for k in range(-m, m + 1)] + [90.0]
    bases = []
    for phi in elevations:
        if phi == 90.0:
            azimuths = [0.0]
        else:
            count = max(1, int(round(180.0 / step * math.cos(math.radians(phi))))) if star == "3d" else \
                int(math.ceil(180.0 / step - 1e-9))
            azimuths = [q * 180.0 / count for q in range(count)] if star == "3d" else [q * step for q in range(count)]
        for theta in azimuths:
            p, t = math.radians(phi), math.radians(theta)
            d = _snap(np.array([math.cos(p) * math.cos(t), math.cos(p) * math.sin(t), math.sin(p)]))
            e1 = _snap(np.array([-math.sin(t), math.cos(t), 0.0]))
            e2 = _snap(np.cross(d, e1))
            bases.append((d, e1, e2))
    return bases


def _line_range(shape_kji, origin_ijk, d) -> tuple[int, int]:
    """(first n, number of samples) so that O + n d covers the whole grid for any line."""
    corners = np.array([[i, j, k] for i in (0, shape_kji[2] - 1) for j in (0, shape_kji[1] - 1)
                        for k in (0, shape_kji[0] - 1)], dtype=float) - origin_ijk
    along = corners @ d
    n_lo = int(math.floor(along.min())) - 2
    return n_lo, int(math.ceil(along.max())) + 2 - n_lo + 1


# ----------------------------------------------------------------------------- fast kernels

@numba.njit(cache=True)
def _sample(values, inside, x, y, z):
    """Trilinear value at continuous index (x=i, y=j, z=k) and whether its nearest voxel is in the ROI."""
    nk, nj, ni = values.shape
    ri, rj, rk = int(math.floor(x + 0.5)), int(math.floor(y + 0.5)), int(math.floor(z + 0.5))
    if ri < 0 or rj < 0 or rk < 0 or ri >= ni or rj >= nj or rk >= nk or not inside[rk, rj, ri]:
        return 0.0, False
    i0, j0, k0 = int(math.floor(x)), int(math.floor(y)), int(math.floor(z))
    fx, fy, fz = x - i0, y - j0, z - k0
    i0, j0, k0 = min(max(i0, 0), ni - 1), min(max(j0, 0), nj - 1), min(max(k0, 0), nk - 1)
    i1, j1, k1 = min(i0 + 1, ni - 1), min(j0 + 1, nj - 1), min(k0 + 1, nk - 1)
    c00 = values[k0, j0, i0] * (1.0 - fx) + values[k0, j0, i1] * fx
    c01 = values[k0, j1, i0] * (1.0 - fx) + values[k0, j1, i1] * fx
    c0 = c00 * (1.0 - fy) + c01 * fy
    if fz == 0.0:  # lines in the slice plane: bilinear (the same number as the trilinear formula)
        return c0, True
    c10 = values[k1, j0, i0] * (1.0 - fx) + values[k1, j0, i1] * fx
    c11 = values[k1, j1, i0] * (1.0 - fx) + values[k1, j1, i1] * fx
    c1 = c10 * (1.0 - fy) + c11 * fy
    return c0 * (1.0 - fz) + c1 * fz, True


@numba.njit(cache=True)
def _line_sample(values, inside, origin, d, e1, e2, a, b, n):
    """Sample n of line (a, b): the point origin + a e1 + b e2 + n d."""
    x = origin[0] + a * e1[0] + b * e2[0] + n * d[0]
    y = origin[1] + a * e1[1] + b * e2[1] + n * d[1]
    z = origin[2] + a * e1[2] + b * e2[2] + n * d[2]
    return _sample(values, inside, x, y, z)


@numba.njit(cache=True)
def _extrema(vals, start, stop, delta, ext_pos, ext_max):
    """Alternating maxima and minima of ``vals[start:stop]`` that rise and fall by more than
    ``delta`` on both sides (Billauer's peak detection, confirmed on both sides so that the ends
    of the profile are never extrema). Writes positions and kinds; returns their number."""
    m = 0
    hi, lo = vals[start], vals[start]
    hi_at, lo_at = start, start
    state = 0  # 0: nothing yet, 1: looking for a maximum, -1: looking for a minimum
    for q in range(start + 1, stop):
        v = vals[q]
        if v > hi:
            hi, hi_at = v, q
        if v < lo:
            lo, lo_at = v, q
        if state >= 0 and v < hi - delta:
            if state == 1 or _risen_before(vals, start, hi_at, hi, delta):
                ext_pos[m] = hi_at
                ext_max[m] = True
                m += 1
            state, lo, lo_at = -1, v, q
        elif state <= 0 and v > lo + delta:
            if state == -1 or _fallen_before(vals, start, lo_at, lo, delta):
                ext_pos[m] = lo_at
                ext_max[m] = False
                m += 1
            state, hi, hi_at = 1, v, q
    return m


@numba.njit(cache=True)
def _risen_before(vals, start, at, value, delta):
    for q in range(start, at):
        if vals[q] < value - delta:
            return True
    return False


@numba.njit(cache=True)
def _fallen_before(vals, start, at, value, delta):
    for q in range(start, at):
        if vals[q] > value + delta:
            return True
    return False


@numba.njit(cache=True)
def _voids(vals, ins, level, each_flank, reference, delta, vid, left, right, loss):
    """Voids of one profile (runs of in-ROI samples analysed separately). Sets ``vid[n]`` to the
    void holding sample n (-1 if none) and, per void, its crossings (sample units) and mean loss.
    Returns the number of voids."""
    n_len = vals.size
    for n in range(n_len):
        vid[n] = -1
    ext_pos = np.empty(n_len, np.int64)  # alternating extrema of the current run
    ext_max = np.empty(n_len, np.bool_)
    count = 0
    n = 0
    while n < n_len:
        if not ins[n]:
            n += 1
            continue
        start = n
        while n < n_len and ins[n]:
            n += 1
        stop = n  # run [start, stop)
        m = _extrema(vals, start, stop, delta, ext_pos, ext_max)
        for e in range(1, m - 1):
            if ext_max[e]:
                continue
            lo = ext_pos[e]
            vmin = vals[lo]
            vl, vr = vals[ext_pos[e - 1]], vals[ext_pos[e + 1]]
            if each_flank:
                lev_l = vmin + level * (vl - vmin)
                lev_r = vmin + level * (vr - vmin)
            else:
                lev_l = vmin + level * (min(vl, vr) - vmin)
                lev_r = lev_l
            if not (vmin < lev_l and vmin < lev_r):
                continue
            a = lo
            while vals[a - 1] < lev_l:
                a -= 1
            b = lo
            while vals[b + 1] < lev_r:
                b += 1
            total = 0.0
            for q in range(a, b + 1):
                total += (reference - vals[q]) / reference
                vid[q] = count
            left[count] = (a - 1) + (vals[a - 1] - lev_l) / (vals[a - 1] - vals[a])
            right[count] = b + (vals[b] - lev_r) / (vals[b] - vals[b + 1])
            loss[count] = total / (b - a + 1)
            count += 1
    return count


@numba.njit(parallel=True, cache=True)
def _orientation(values, inside, pk, pj, pi, origin, d, e1, e2, n_lo, n_len, level, each_flank, reference,
                 delta, step_mm, width_sum, bmd_sum, bmc_sum, hits):
    """Add one orientation's void measures to the per-voxel sums (voxels given by index arrays)."""
    count = pk.size
    la = np.empty(count, np.int64)
    lb = np.empty(count, np.int64)
    tu = np.empty(count)
    for v in numba.prange(count):
        rx, ry, rz = pi[v] - origin[0], pj[v] - origin[1], pk[v] - origin[2]
        la[v] = int(math.floor(rx * e1[0] + ry * e1[1] + rz * e1[2] + 0.5))
        lb[v] = int(math.floor(rx * e2[0] + ry * e2[1] + rz * e2[2] + 0.5))
        tu[v] = rx * d[0] + ry * d[1] + rz * d[2] - n_lo
    # group the voxels by line (counting sort on the line key)
    a_lo, b_lo = la.min(), lb.min()
    na = la.max() - a_lo + 1
    nkeys = (lb.max() - b_lo + 1) * na
    key = (lb - b_lo) * na + (la - a_lo)
    first = np.zeros(nkeys + 1, np.int64)
    for v in range(count):
        first[key[v] + 1] += 1
    for q in range(nkeys):
        first[q + 1] += first[q]
    fill = first[:-1].copy()
    order = np.empty(count, np.int64)
    for v in range(count):
        order[fill[key[v]]] = v
        fill[key[v]] += 1
    lines = np.nonzero(first[1:] > first[:-1])[0]
    for g in numba.prange(lines.size):
        s0, s1 = first[lines[g]], first[lines[g] + 1]
        v0 = order[s0]
        a, b = la[v0], lb[v0]
        # sample the line from before its first voxel to after its last, then on until the ROI ends
        t_lo, t_hi = tu[v0], tu[v0]
        for s in range(s0, s1):
            t_lo = min(t_lo, tu[order[s]])
            t_hi = max(t_hi, tu[order[s]])
        vals = np.zeros(n_len)
        ins = np.zeros(n_len, np.bool_)
        lo = max(int(math.floor(t_lo)) - 1, 0)
        hi = min(int(math.floor(t_hi)) + 2, n_len - 1)
        n = lo
        while n <= hi or (n < n_len and ins[n - 1]):
            vals[n], ins[n] = _line_sample(values, inside, origin, d, e1, e2, a, b, n_lo + n)
            n += 1
        n = lo - 1
        while n >= 0 and ins[n + 1]:
            vals[n], ins[n] = _line_sample(values, inside, origin, d, e1, e2, a, b, n_lo + n)
            n -= 1
        vid = np.empty(n_len, np.int64)
        left = np.empty(n_len)
        right = np.empty(n_len)
        loss = np.empty(n_len)
        _voids(vals, ins, level, each_flank, reference, delta, vid, left, right, loss)
        for s in range(s0, s1):
            v = order[s]
            t = tu[v]
            q0 = int(math.floor(t))
            for q in (q0, q0 + 1):
                if q >= 0 and q < n_len and vid[q] >= 0:
                    w = vid[q]
                    if left[w] <= t and t <= right[w]:
                        width = (right[w] - left[w]) * step_mm
                        width_sum[v] += width
                        bmd_sum[v] += loss[w]
                        bmc_sum[v] += loss[w] * width
                        hits[v] += 1
                        break


# ----------------------------------------------------------------------------- naive reference

def _naive_voxel(values, inside, p_ijk, origin, basis, n_lo, n_len, params, delta, step_mm):
    """One voxel, one orientation, straight from the definition in plain Python: the voxel's line,
    its whole profile, every void on it, and the one holding the voxel (or None)."""
    d, e1, e2 = ([float(c) for c in v] for v in basis)
    nk, nj, ni = values.shape
    rx, ry, rz = p_ijk[0] - origin[0], p_ijk[1] - origin[1], p_ijk[2] - origin[2]
    a = math.floor(rx * e1[0] + ry * e1[1] + rz * e1[2] + 0.5)
    b = math.floor(rx * e2[0] + ry * e2[1] + rz * e2[2] + 0.5)
    t = rx * d[0] + ry * d[1] + rz * d[2] - n_lo
    profile = []  # (value, in ROI)
    for n in range(n_len):
        nn = n_lo + n
        x = origin[0] + a * e1[0] + b * e2[0] + nn * d[0]
        y = origin[1] + a * e1[1] + b * e2[1] + nn * d[1]
        z = origin[2] + a * e1[2] + b * e2[2] + nn * d[2]
        near = [math.floor(c + 0.5) for c in (x, y, z)]
        if not (0 <= near[0] < ni and 0 <= near[1] < nj and 0 <= near[2] < nk) or \
                not inside[near[2], near[1], near[0]]:
            profile.append((0.0, False))
            continue
        lo = [math.floor(c) for c in (x, y, z)]
        f = [x - lo[0], y - lo[1], z - lo[2]]
        i0, j0, k0 = min(max(lo[0], 0), ni - 1), min(max(lo[1], 0), nj - 1), min(max(lo[2], 0), nk - 1)
        i1, j1, k1 = min(i0 + 1, ni - 1), min(j0 + 1, nj - 1), min(k0 + 1, nk - 1)
        c00 = values[k0, j0, i0] * (1.0 - f[0]) + values[k0, j0, i1] * f[0]
        c01 = values[k0, j1, i0] * (1.0 - f[0]) + values[k0, j1, i1] * f[0]
        c10 = values[k1, j0, i0] * (1.0 - f[0]) + values[k1, j0, i1] * f[0]
        c11 = values[k1, j1, i0] * (1.0 - f[0]) + values[k1, j1, i1] * f[0]
        c0 = c00 * (1.0 - f[1]) + c01 * f[1]
        c1 = c10 * (1.0 - f[1]) + c11 * f[1]
        profile.append((float(c0 * (1.0 - f[2]) + c1 * f[2]), True))
    n = 0
    while n < n_len:  # each run of in-ROI samples is a profile of its own
        if not profile[n][1]:
            n += 1
            continue
        run = []
        while n < n_len and profile[n][1]:
            run.append(profile[n][0])
            n += 1
        offset = n - len(run)
        extrema = []  # (position, is_max): a fall (rise) of more than delta after a rise (fall) of more than delta
        hi_at = lo_at = 0
        state = 0
        for q in range(1, len(run)):
            if run[q] > run[hi_at]:
                hi_at = q
            if run[q] < run[lo_at]:
                lo_at = q
            if state >= 0 and run[q] < run[hi_at] - delta:
                if state == 1 or any(r < run[hi_at] - delta for r in run[:hi_at]):
                    extrema.append((hi_at, True))
                state, lo_at = -1, q
            elif state <= 0 and run[q] > run[lo_at] + delta:
                if state == -1 or any(r > run[lo_at] + delta for r in run[:lo_at]):
                    extrema.append((lo_at, False))
                state, hi_at = 1, q
        for e in range(1, len(extrema) - 1):
            pos, is_max = extrema[e]
            if is_max:
                continue
            vmin, vl, vr = run[pos], run[extrema[e - 1][0]], run[extrema[e + 1][0]]
            if params.flank == "each":
                lev_l, lev_r = vmin + params.level * (vl - vmin), vmin + params.level * (vr - vmin)
            else:
                lev_l = lev_r = vmin + params.level * (min(vl, vr) - vmin)
            if not (vmin < lev_l and vmin < lev_r):
                continue
            qa = pos
            while run[qa - 1] < lev_l:
                qa -= 1
            qb = pos
            while run[qb + 1] < lev_r:
                qb += 1
            left = offset + (qa - 1) + (run[qa - 1] - lev_l) / (run[qa - 1] - run[qa])
            right = offset + qb + (run[qb] - lev_r) / (run[qb] - run[qb + 1])
            if left <= t <= right:
                total = 0.0
                for q in range(qa, qb + 1):
                    total += (params.reference_bmd - run[q]) / params.reference_bmd
                loss = total / (qb - qa + 1)
                width = (right - left) * step_mm
                return width, loss, loss * width
    return None


# ----------------------------------------------------------------------------- pipeline

def _resample(ct: Volume, roi: np.ndarray, params: FocalParameters) -> tuple[Volume, np.ndarray]:
    """The CT (linear) and the ROI (linear, >= 0.5) on an isotropic grid around the ROI, with the
    margin the unsharp mask reaches; grid axes parallel to the CT's."""
    import SimpleITK as sitk

    h = params.spacing_mm
    margin_mm = (math.ceil((4 * params.sigma_mm) / h) + 2) * h
    nz = np.nonzero(roi)
    lo_kji = np.array([a.min() for a in nz], float)
    hi_kji = np.array([a.max() for a in nz], float)
    spacing_kji = np.asarray(ct.spacing_kji, float)
    # read only the CT box the grid needs (one voxel more for the interpolation)
    pad = np.ceil(margin_mm / spacing_kji).astype(int) + 1
    box = tuple(slice(max(0, int(a) - p), min(n, int(b) + p + 1)) for a, b, p, n in zip(lo_kji, hi_kji, pad, roi.shape))
    sub = ct.crop(box)
    start_kji = np.array([b.start for b in box], float)
    x0 = lo_kji - margin_mm / spacing_kji                            # continuous CT index of the first sample
    count = np.floor((hi_kji - lo_kji) * spacing_kji / h + 2 * margin_mm / h).astype(int) + 1
    origin = ct.index_to_physical(x0[::-1])
    direction = ct.direction
    ref = sitk.Image([int(c) for c in count[::-1]], sitk.sitkFloat64)
    ref.SetSpacing([h] * 3)
    ref.SetOrigin([float(v) for v in origin])
    ref.SetDirection([float(v) for v in direction.ravel()])
    out = {}
    for name, array in (("ct", sub.array.astype(np.float64)), ("roi", roi[box].astype(np.float64))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing([float(s) for s in sub.spacing])
        image.SetOrigin([float(v) for v in ct.index_to_physical(start_kji[::-1])])
        image.SetDirection([float(v) for v in direction.ravel()])
        f = sitk.ResampleImageFilter()
        f.SetReferenceImage(ref)
        f.SetInterpolator(sitk.sitkLinear)
        f.SetDefaultPixelValue(0.0)
        f.SetUseNearestNeighborExtrapolator(True)
        out[name] = sitk.GetArrayFromImage(f.Execute(image))
    fine = Volume(out["ct"], make_affine([h] * 3, origin, direction), modality="CT", units=ct.units)
    return fine, out["roi"] >= 0.5


def _sharpen(values: np.ndarray, params: FocalParameters) -> np.ndarray:
    if params.sigma_mm == 0 or params.sharpen == 0:
        return values
    blurred = ndimage.gaussian_filter(values, params.sigma_mm / params.spacing_mm, mode="nearest")
    return values + params.sharpen * (values - blurred)


def _check_profiles_fit(inside: np.ndarray, spacing_mm: float) -> None:
    """At least one line of three samples must lie inside the ROI (a valley needs max, min, max)."""
    for axis in (1, 2):
        a = np.moveaxis(inside, axis, -1)
        if a.shape[-1] >= 3 and (a[..., :-2] & a[..., 1:-1] & a[..., 2:]).any():
            return
    raise BoneKitError(f"The ROI is thinner than one profile: no line of 3 samples ({3 * spacing_mm:g} mm) fits "
                       "inside it in the axial plane. Use the vertebral-body ROI, not a thin shell or a few voxels.")


def _prepare(ct: Volume, roi: Volume, calibration: Calibration | None, params: FocalParameters, report):
    """Checks, then the 0.3 mm grid, the sharpened (and calibrated) values, the ROI on that grid and
    the step below which the profile counts as flat."""
    ct.require_same_grid(roi, "ROI")
    region = np.asarray(roi.array) != 0
    if not region.any():
        raise BoneKitError("The ROI is empty: it has no non-zero voxel. Check it belongs to this CT "
                           "(BoneMorphometry's trabecular ROI, or a mask file on the CT's grid).")
    report(0.02, "resampling to %.2g mm" % params.spacing_mm)
    fine, inside = _resample(ct, region, params)
    if not inside.any():
        raise BoneKitError(f"The ROI vanishes on the {params.spacing_mm:g} mm grid; it is too small to map.")
    if not np.all(np.isfinite(fine.array)):
        raise BoneKitError("The CT holds NaN or infinite values in or around the ROI; fill them (or "
                           "fix the reconstruction) before mapping focal loss.")
    _check_profiles_fit(inside, params.spacing_mm)
    report(0.1, "unsharp mask")
    values = _sharpen(np.ascontiguousarray(fine.array, dtype=np.float64), params)
    if calibration is not None:
        values = calibration.bmd(values)
    # steps within round-off are flat, so interpolating a uniform region never makes a void
    delta = max(params.min_depth, 1e-9 * float(np.ptp(values)))
    return fine, values, inside, delta


def _voxel_sums(values, inside, voxels, params: FocalParameters, delta: float, method: str, report):
    """Per-voxel sums over the star's orientations of (IncptWidth, BMD loss, BMC loss), the number
    of orientations in which each voxel lies in a void, and the number of orientations. ``voxels``
    are (k, j, i) index arrays of ROI voxels (all of them, or any subset: the lines still run
    through the whole ROI)."""
    pk, pj, pi = voxels
    shape = values.shape
    origin = np.array([shape[2] // 2, shape[1] // 2, shape[0] // 2], dtype=float)  # (i, j, k)
    bases = star_directions(params.angle_step_deg, params.star)
    sums = np.zeros((3, pk.size))
    hits = np.zeros(pk.size, np.int64)
    for number, basis in enumerate(bases):
        report(0.1 + 0.85 * number / len(bases), f"star line {number + 1} of {len(bases)}")
        d, e1, e2 = basis
        n_lo, n_len = _line_range(shape, origin, d)
        if method == "fast":
            _orientation(values, inside, pk, pj, pi, origin, d, e1, e2, n_lo, n_len, params.level,
                         params.flank == "each", params.reference_bmd, delta, params.spacing_mm,
                         sums[0], sums[1], sums[2], hits)
        else:
            for v in range(pk.size):
                found = _naive_voxel(values, inside, (int(pi[v]), int(pj[v]), int(pk[v])), origin, basis, n_lo,
                                     n_len, params, delta, params.spacing_mm)
                if found is not None:
                    sums[:, v] += found
                    hits[v] += 1
    return sums, hits, len(bases)


def focal_maps(ct: Volume, roi: Volume, calibration: Calibration | None = None, units: str = "auto",
               params: FocalParameters | None = None, method: str = "fast",
               progress: ProgressCallback | None = None) -> tuple[FocalResult, dict[str, Volume]]:
    """Focal bone-loss maps (IncptWidth, FocalBMDLoss, FocalBMCLoss) of ``ct`` (HU) inside ``roi``
    (non-zero voxels, on the CT's grid), and their ROI means and SDs.

    ``units``: "bmd" (needs ``calibration``), "hu" (profiles and loss on HU, the reference read
    as 1200 HU), or "auto" (BMD when a calibration is given). The maps are float32 volumes on the
    resampled isotropic grid (0 outside the ROI); "ROI" is the resampled ROI as a label map.
    ``method="naive"`` evaluates every voxel on its own (the slow reference; same values).
    ``progress(fraction, message)`` may raise to cancel.
    """
    params = params or FocalParameters()
    params.check()
    report = progress or (lambda f, m: None)
    if units not in ("auto", "bmd", "hu"):
        raise BoneKitError(f"units must be auto, bmd or hu, not {units!r}.")
    if units == "bmd" and calibration is None:
        raise BoneKitError("BMD was requested but no calibration was given: pass the scanner's HU->BMD "
                           "calibration (bonekit calibrate), or ask for HU.")
    calibrated = calibration is not None and units != "hu"
    if method not in ("fast", "naive"):
        raise BoneKitError(f"method must be fast or naive, not {method!r}.")
    fine, values, inside, delta = _prepare(ct, roi, calibration if calibrated else None, params, report)
    pk, pj, pi = (a.astype(np.int64) for a in np.nonzero(inside))
    sums, hits, count = _voxel_sums(values, inside, (pk, pj, pi), params, delta, method, report)
    if params.no_void == "zero":
        per_voxel = sums / count
    else:
        per_voxel = np.divide(sums, hits, out=np.zeros_like(sums), where=hits > 0)
    report(0.97, "statistics")
    maps = {}
    for name, column in zip(MAP_NAMES, per_voxel):
        array = np.zeros(fine.shape, np.float32)
        array[pk, pj, pi] = column
        maps[name] = fine.with_array(array, modality=None, units="1" if name == "FocalBMDLoss" else "mm",
                                     metadata={"map": name})
    maps["ROI"] = fine.with_array(inside.astype(np.uint8), modality="SEG", units="label", metadata={"map": "ROI"})
    density = float(values[inside].mean())
    sd = per_voxel.std(axis=1, ddof=1) if pk.size > 1 else np.zeros(3)
    result = FocalResult(
        IncptWidth=float(per_voxel[0].mean()), IncptWidth_SD=float(sd[0]),
        FocalBMDLoss=float(per_voxel[1].mean()), FocalBMDLoss_SD=float(sd[1]),
        FocalBMCLoss=float(per_voxel[2].mean()), FocalBMCLoss_SD=float(sd[2]),
        BMD=density if calibrated else None, HU=None if calibrated else density,
        density="BMD (mg HA/cm3)" if calibrated else "HU (uncalibrated)",
        void_fraction=float(hits.sum() / (pk.size * count)), voxels=int(pk.size), orientations=count,
        spacing_mm=params.spacing_mm, parameters=asdict(params))
    report(1.0, "focal maps done")
    return result, maps


def focal_regions(ct: Volume, labels: Volume, calibration: Calibration | None = None, units: str = "auto",
                  params: FocalParameters | None = None,
                  progress: ProgressCallback | None = None) -> list[tuple[int, FocalResult, dict[str, Volume]]]:
    """:func:`focal_maps` for each non-zero label of ``labels`` (e.g. the per-vertebra trabecular
    ROI of ``bonekit vertebra``): lines never cross from one vertebra into the next."""
    ct.require_same_grid(labels, "ROI label map")
    values = [int(v) for v in np.unique(np.asarray(labels.array)) if v != 0]
    if not values:
        raise BoneKitError("The ROI is empty: it has no non-zero voxel. Check it belongs to this CT.")
    report = progress or (lambda f, m: None)
    out = []
    for number, value in enumerate(values):
        def part(f, m, number=number):
            report((number + f) / len(values), f"label {value}: {m}")
        result, maps = focal_maps(ct, labels.with_array((np.asarray(labels.array) == value).astype(np.uint8)),
                                  calibration, units, params, progress=part)
        out.append((value, result, maps))
    return out


def pooled(results: list[FocalResult]) -> dict[str, float]:
    """Means and SDs of the three maps over all the regions' voxels together (exact pooling of the
    per-region means and SDs, weighted by voxel count)."""
    counts = np.array([r.voxels for r in results], float)
    total = counts.sum()
    out = {}
    for name in MAP_NAMES:
        means = np.array([getattr(r, name) for r in results])
        sds = np.array([getattr(r, f"{name}_SD") for r in results])
        mean = float((counts * means).sum() / total)
        ss = ((counts - 1) * sds ** 2 + counts * (means - mean) ** 2).sum()
        out[name], out[f"{name}.SD"] = mean, float(np.sqrt(ss / (total - 1))) if total > 1 else 0.0
    return out

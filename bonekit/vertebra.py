"""Per-vertebra analysis of a vertebra label map: body, trabecular ROI, cylindrical VOI,
BMD (or HU), body heights and the Genant grade.

Every step works in millimetres, in each vertebra's own frame: ``s`` (superior) is the body's
own axis, the direction its side walls run in (:func:`_wall_axis`: the walls stay parallel to the
axis in wedge, biconcave and crush fractures, where the endplates do not), found from the spine's
course (a quadratic through the centroids in the level number; the chord of two; the image's S
axis for a lone vertebra), which alone can be 15-25 degrees off at the ends of a short chain;
``a`` (anterior) is the patient's anterior direction made perpendicular to ``s``, and ``l``
completes the frame. Local coordinates are (x lateral, y posterior, z superior) about the
vertebra's centroid.

* **Body**: the spinal canal is the largest hole in the vertebra's projection along ``s``; the
  body is what lies anterior to the canal's front edge (the posterior wall), the cut following
  the canal front across its width and continuing flat beyond it, largest connected part kept.
* **Trabecular ROI**: the body eroded by ``erosion_mm`` (6 mm, Li et al. 2022): voxels whose
  nearest voxel outside the body is more than 6 mm away (Euclidean, physical units).
* **Cylindrical VOI** (Jin et al. 2021, Fig. 4): on the body's central slice (half-way up the
  middle height), line A is the antero-posterior mid-axis (lateral centre of the body); line B
  is perpendicular to A, ``voi_inset_mm`` (5 mm) posterior to the anterior surface of the body;
  the cylinder (diameter 15 mm) is tangent to B at A∩B, so its axis lies 5 + 7.5 mm behind the
  anterior surface, and extends ``voi_half_height_mm`` (5 mm) above and below the central slice,
  along ``s``.
* **Heights**: anterior, middle and posterior heights along ``s`` in the mid-sagittal plane,
  ``wall_inset_mm`` (1 mm) inside the anterior and posterior walls and half-way between them,
  measured on the linearly interpolated body mask (0.5 level) with 0.05 mm steps; gaps up to
  one voxel (the largest spacing) long are bridged (a line 1 mm inside a wall grazes the voxel
  staircase of a mask whose voxels are coarser, or a notch in a real mask's surface).
* **Genant** (semi-quantitative, Genant 1993; as in VerSe): wedge = 1 - Ha/Hp, biconcave =
  1 - Hm/max(Ha, Hp), crush = 1 - Hp/Hp(neighbours) (mean posterior height of the adjacent
  vertebrae in the label map; not assessed without one); the largest of the three is the height
  loss, its kind is the type, grade 0-3 at 20/25/40 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .calibration import Calibration
from .errors import BoneKitError
from .phantom import genant_grade
from .points import VERSE_NAMES
from .progress import ProgressCallback
from .results import Result, quantity
from .volume import Volume


@dataclass
class VertebraParameters:
    erosion_mm: float = 6.0
    voi_diameter_mm: float = 15.0
    voi_half_height_mm: float = 5.0
    voi_inset_mm: float = 5.0
    wall_inset_mm: float = 1.0


@dataclass
class VertebraResult(Result):
    vertebra: str = quantity(None, "VerSe name")
    label: int = quantity(None, "VerSe label id")
    vertebra_volume: float = quantity("mm3", "volume of the whole vertebra mask", name="Vertebra.V")
    body_volume: float = quantity("mm3", "volume of the vertebral body", name="Body.V")
    roi_volume: float = quantity("mm3", "volume of the trabecular ROI (body eroded by 6 mm)", name="ROI.V")
    HU: float = quantity("HU", "mean CT number in the trabecular ROI")
    HU_SD: float = quantity("HU", "standard deviation of the CT number in the ROI", name="HU.SD")
    BMD: float | None = quantity("mg HA/cm3", "trabecular BMD: calibrated mean over the ROI (empty if uncalibrated)")
    VOI_HU: float | None = quantity("HU", "mean CT number in the cylindrical VOI", name="VOI.HU")
    VOI_BMD: float | None = quantity("mg HA/cm3", "calibrated mean over the cylindrical VOI", name="VOI.BMD")
    voi_x: float | None = quantity("mm", "VOI centre, LPS x", name="VOI.x")
    voi_y: float | None = quantity("mm", "VOI centre, LPS y", name="VOI.y")
    voi_z: float | None = quantity("mm", "VOI centre, LPS z", name="VOI.z")
    Ha: float | None = quantity("mm", "anterior body height along the vertebra's superior axis")
    Hm: float | None = quantity("mm", "middle body height")
    Hp: float | None = quantity("mm", "posterior body height")
    wedge: float | None = quantity("1", "1 - Ha/Hp")
    biconcave: float | None = quantity("1", "1 - Hm/max(Ha, Hp)")
    crush: float | None = quantity("1", "1 - Hp/mean Hp of the adjacent vertebrae")
    height_loss: float | None = quantity("1", "largest of wedge, biconcave, crush", name="HeightLoss")
    grade: int | None = quantity(None, "Genant grade 0-3 (<20, 20-25, 25-40, >=40 % height loss)", name="Genant.grade")
    fracture_type: str | None = quantity(None, "wedge, biconcave or crush (grade >= 1)", name="Genant.type")
    calibrated: bool = quantity(None, "True when BMD comes from a calibration")
    note: str | None = quantity(None, "why a measure is missing (no body in the mask, cut by the field of view)")


@dataclass
class VertebraMasks:
    body: Volume   # VerSe ids
    roi: Volume
    voi: Volume


def _superior_axis(ct: Volume) -> np.ndarray:
    d = ct.direction
    axis = int(np.argmax(np.abs(d[2])))
    return d[:, axis] * np.sign(d[2, axis])


def _frame(s: np.ndarray) -> np.ndarray:
    """3x3 frame with columns lateral (x), posterior (y), superior (z) for the superior axis ``s``:
    posterior is the patient's posterior (LPS +y) made perpendicular to ``s``."""
    s = s / np.linalg.norm(s)
    posterior = np.array([0.0, 1.0, 0.0]) - s[1] * s  # LPS +y is posterior
    if np.linalg.norm(posterior) < 1e-6:
        raise BoneKitError("The spine runs antero-posteriorly in this image; check the image orientation.")
    posterior /= np.linalg.norm(posterior)
    return np.stack([np.cross(posterior, s), posterior, s], axis=1)


def _frames(ct: Volume, centroids: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The spine course's frame per vertebra (the prior of :func:`_wall_axis`)."""
    ids = sorted(centroids)
    frames = {}
    cents = np.array([centroids[v] for v in ids])
    for vid in ids:
        if len(ids) >= 3:  # smooth spine curve: quadratic in the level number, differentiated
            coef = np.polyfit(np.array(ids, float), cents, 2)
            up = -(2 * coef[0] * vid + coef[1])  # ids grow towards the feet
        elif len(ids) == 2:
            up = cents[0] - cents[1]
        else:
            up = _superior_axis(ct)
        frames[vid] = _frame(up)
    return frames


def _wall_axis(ct: Volume, body: np.ndarray, prior: np.ndarray, cut: np.ndarray | None = None,
               iterations: int = 10) -> np.ndarray | None:
    """The body's own superior axis: the direction most nearly perpendicular to its side walls.

    The side walls of a vertebral body (lateral, anterior, posterior) run parallel to its axis,
    and fractures (wedge, biconcave, crush) deform the endplates, not the posterior and lateral
    walls; so the walls' unit normals ``n`` lie in the plane perpendicular to the axis, and the
    axis is the eigenvector of least eigenvalue of their scatter sum(w n n^T). The normals are the
    gradient of the body mask smoothed over one voxel (at least 1 mm), taken in LPS millimetres
    whatever the voxel axes, weighted by the gradient magnitude (each part of the surface counts
    by its area, whatever the voxel shape) and by Tukey's biweight of n.s: full for a normal
    perpendicular to the current axis, none from 60 degrees off perpendicular, so the endplates
    (and a cut at the field of view's edge) do not count. The estimate starts from ``prior`` (the
    spine course) and is refined until it settles. The surface within about two smoothing widths
    of ``cut`` (the rest of the vertebra, where the body was cut from the pedicles) is not a wall
    and is left out. None when the walls single out no direction (least eigenvalue above a quarter
    of the next).
    """
    sigma_mm = max(float(ct.spacing.max()), 1.0)
    sigma = sigma_mm / ct.spacing_kji
    pad = [(q, q) for q in np.ceil(3 * sigma).astype(int) + 1]
    phi = ndimage.gaussian_filter(np.pad(body.astype(np.float32), pad), sigma)
    g_kji = np.stack(np.gradient(phi), axis=-1)
    mag = np.linalg.norm(g_kji, axis=-1)
    keep = mag > 0.05 * mag.max()
    if cut is not None and cut.any():  # farther than ~2 smoothing widths from the rest of the vertebra
        keep &= ndimage.gaussian_filter(np.pad(cut.astype(np.float32), pad), sigma) < 0.02
    grad = g_kji[keep][:, ::-1] @ np.linalg.inv(ct.affine[:3, :3])  # d/d(i, j, k) to d/d(LPS)
    w = np.linalg.norm(grad, axis=1)
    n = grad / w[:, None]
    s = prior / np.linalg.norm(prior)
    for _ in range(iterations):
        u = np.clip(1.0 - ((n @ s) / 0.5) ** 2, 0.0, None) ** 2 * w  # Tukey's biweight: 0 where |n.s| >= 0.5
        evals, evecs = np.linalg.eigh((n * u[:, None]).T @ n)
        if not evals[1] > 4 * evals[0]:
            return None
        new = evecs[:, 0] * np.sign(evecs[:, 0] @ s)
        done = new @ s > np.cos(np.radians(0.1))
        s = new
        if done:
            break
    return s


def _body_frame(ct: Volume, vertebra: np.ndarray, origin: np.ndarray, course: np.ndarray,
                max_tilt_deg: float = 45.0, passes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The vertebra's own frame (superior axis from :func:`_wall_axis`) and its body mask.

    The body is cut from the vertebra along the axis and the axis is measured on the body, so
    the two are found in turn, starting from the spine course's frame ``course``, until the axis
    moves less than 0.5 degree. The course frame is kept where the walls give no axis or one
    more than ``max_tilt_deg`` from the course (a mask that is not a vertebral body).
    """
    frame = course
    for _ in range(passes):
        body = separate_body(ct, vertebra, origin, frame)
        s = _wall_axis(ct, body, frame[:, 2], vertebra & ~body)
        if s is None or s @ course[:, 2] < np.cos(np.radians(max_tilt_deg)):
            frame = course
            break
        moved = s @ frame[:, 2] < np.cos(np.radians(0.5))
        frame = _frame(s)
        if not moved:
            break
    return frame, separate_body(ct, vertebra, origin, frame)


def _local_coordinates(ct: Volume, idx_kji: np.ndarray, origin: np.ndarray, frame: np.ndarray) -> np.ndarray:
    to_local = ct.affine[:3, :3][:, ::-1].T @ frame  # (k, j, i) index to local mm, in one product
    return idx_kji.astype(float) @ to_local + (ct.affine[:3, 3] - origin) @ frame


def separate_body(ct: Volume, vertebra: np.ndarray, origin: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Boolean body mask (same shape as ``vertebra``) from a whole-vertebra mask."""
    idx = np.argwhere(vertebra)
    loc = _local_coordinates(ct, idx, origin, frame)
    pixel = float(max(ct.spacing[0], ct.spacing[1], ct.spacing[2] * 0.5))
    lo = loc[:, :2].min(axis=0) - 3 * pixel
    cells = np.floor((loc[:, :2] - lo) / pixel).astype(int)
    shape = cells.max(axis=0) + 4
    proj = np.zeros(shape, bool)
    proj[cells[:, 0], cells[:, 1]] = True
    proj = ndimage.binary_closing(proj, iterations=1)
    holes = ndimage.binary_fill_holes(proj) & ~proj
    lab, n = ndimage.label(holes)
    keep = np.ones(len(idx), bool)
    if n:
        areas = np.bincount(lab.ravel())[1:] * pixel ** 2
        canal = int(np.argmax(areas)) + 1
        if areas[canal - 1] >= 20.0:  # mm^2: a real canal, not a gap between processes
            xs, ys = np.nonzero(lab == canal)
            front = np.full(shape[0], np.inf)
            np.minimum.at(front, xs, ys.astype(float))
            # the posterior wall: canal columns whose front is within 3 mm of the most anterior one
            # (where the canal widens behind the pedicles, its front is not the wall)
            cols = np.nonzero(front <= front.min() + 3.0 / pixel)[0]
            # flat beyond: each column takes the front of the nearest wall column
            nearest = cols[np.abs(np.arange(shape[0])[:, None] - cols[None, :]).argmin(axis=1)]
            cut = front[nearest]
            keep = cells[:, 1] < cut[cells[:, 0]]
    if keep.all():  # no canal found: drop thin posterior parts by an opening of radius 5 mm
        radius = np.ceil(5.0 / ct.spacing_kji).astype(int)
        zz, yy, xx = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = (zz * ct.spacing_kji[0]) ** 2 + (yy * ct.spacing_kji[1]) ** 2 + (xx * ct.spacing_kji[2]) ** 2 <= 25.0
        opened = ndimage.binary_opening(vertebra, structure=ball)
        keep = opened[tuple(idx.T)]
    body = np.zeros_like(vertebra, dtype=bool)
    body[tuple(idx[keep].T)] = True
    lab, n = ndimage.label(body)
    if n > 1:
        body = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return body


def trabecular_roi(body: np.ndarray, spacing_kji, erosion_mm: float) -> np.ndarray:
    """Body voxels whose nearest voxel outside the body is farther than ``erosion_mm``."""
    padded = np.pad(body, 1)
    dist = ndimage.distance_transform_edt(padded, sampling=spacing_kji)[1:-1, 1:-1, 1:-1]
    return dist > erosion_mm


def _run_bounds(values: np.ndarray, ts: np.ndarray, start: int,
                bridge_mm: float = 0.0) -> tuple[float, float] | None:
    """Sub-sample ends (0.5 crossings) of the run of ``values >= 0.5`` nearest index ``start``, gaps
    up to ``bridge_mm`` long inside the run bridged."""
    inside = values >= 0.5
    hits = np.nonzero(inside)[0]
    for g in np.nonzero((np.diff(hits) > 1) & (np.diff(ts[hits]) <= bridge_mm))[0]:
        inside[hits[g]:hits[g + 1]] = True
    if not inside[start]:
        hits = np.nonzero(inside)[0]
        if hits.size == 0:
            return None
        start = hits[np.argmin(np.abs(hits - start))]
    lo = start
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = start
    while hi < len(inside) - 1 and inside[hi + 1]:
        hi += 1
    step = ts[1] - ts[0]

    def frac(a, b):  # fraction of a step from sample a (inside) towards b (outside) where 0.5 is crossed
        va, vb = values[a], values[b]
        return (va - 0.5) / (va - vb) if va != vb else 0.5

    t_lo = ts[lo] - (frac(lo, lo - 1) * step if lo > 0 else 0.0)
    t_hi = ts[hi] + (frac(hi, hi + 1) * step if hi < len(inside) - 1 else 0.0)
    return float(t_lo), float(t_hi)


def _endplate_edge(profile: np.ndarray, ts: np.ndarray, t_mask: float, outward: int) -> float:
    """Endplate surface near the mask edge ``t_mask``, from the CT profile: where the intensity,
    going outward from the endplate's peak, falls half-way to the disc level beyond it.

    A thin bright endplate blurred by the scanner spills half-bright voxels outside the bone, so
    a mask drawn on intensities sits up to half a voxel outside; the half-way point of the
    profile does not. Falls back to ``t_mask`` when no distinct endplate peak is seen.
    """
    def window(a, b):
        lo, hi = sorted((t_mask + outward * a, t_mask + outward * b))
        return (ts >= lo) & (ts <= hi)

    near, beyond = window(-2.5, 0.5), window(2.0, 4.0)
    if not near.any() or not beyond.any():
        return t_mask
    idx = np.nonzero(near)[0]
    peak_i = idx[np.argmax(profile[idx])]
    peak, outside = profile[peak_i], float(profile[beyond].min())
    if peak - outside < 150.0:
        return t_mask
    half = 0.5 * (peak + outside)
    i = peak_i
    while 0 <= i + outward < len(ts) and profile[i + outward] >= half:
        i += outward
    j = i + outward
    if not 0 <= j < len(ts):
        return t_mask
    f = (profile[i] - half) / (profile[i] - profile[j]) if profile[i] != profile[j] else 0.5
    return float(ts[i] + outward * f * (ts[1] - ts[0]))


class _Sampler:
    """Linear interpolation of an array (mask or CT) at physical points."""

    def __init__(self, ct: Volume, array: np.ndarray):
        self.inv = np.linalg.inv(ct.affine)
        self.array = np.asarray(array, dtype=np.float32)

    def __call__(self, lps: np.ndarray) -> np.ndarray:
        ijk = lps @ self.inv[:3, :3].T + self.inv[:3, 3]
        return ndimage.map_coordinates(self.array, ijk[:, ::-1].T, order=1, mode="nearest")


def _geometry(ct: Volume, body: np.ndarray, hu: np.ndarray, origin: np.ndarray, frame: np.ndarray,
              p: VertebraParameters) -> dict:
    """Walls, mid-sagittal line, central slice and the three heights of one body."""
    idx = np.argwhere(body)
    loc = _local_coordinates(ct, idx, origin, frame)
    sampler, hu_sampler = _Sampler(ct, body), _Sampler(ct, hu)
    step = 0.05
    ts = np.arange(-60.0, 60.0 + step, step)

    def points(x, y):
        return origin + frame @ np.array([x, y, 0.0]) + np.outer(ts, frame[:, 2])

    band = max(ct.spacing.max(), 1.0)
    x_mid = 0.5 * (loc[:, 0].min() + loc[:, 0].max())
    # central slice: half-way up the body along its lateral centre line, at mid-depth
    sag = np.abs(loc[:, 0] - x_mid) <= band
    y_mid0 = 0.5 * (loc[sag, 1].min() + loc[sag, 1].max())
    inside = np.nonzero(sampler(points(x_mid, y_mid0)) >= 0.5)[0]
    z_c = float(ts[inside].mean()) if inside.size else 0.0
    y_front, y_back = _line_a_edges(sampler, origin, frame, x_mid, z_c, loc[sag, 1].min(), loc[sag, 1].max())
    y_mid = 0.5 * (y_front + y_back)
    heights = {}
    start = int(np.argmin(np.abs(ts - z_c)))
    for key, y in (("anterior", y_front + p.wall_inset_mm), ("middle", y_mid), ("posterior", y_back - p.wall_inset_mm)):
        pts = points(x_mid, y)
        bounds = _run_bounds(sampler(pts), ts, start, bridge_mm=float(ct.spacing.max()))
        if bounds is None:
            heights[key] = 0.0
            continue
        profile = hu_sampler(pts)
        heights[key] = _endplate_edge(profile, ts, bounds[1], +1) - _endplate_edge(profile, ts, bounds[0], -1)
    return {"x_mid": x_mid, "y_front": y_front, "z_c": z_c, "heights": heights}


def _line_a_edges(sampler, origin, frame, x, z, y_lo, y_hi) -> tuple[float, float]:
    """Sub-voxel anterior and posterior surfaces (0.5 level of the mask) along line A at height z."""
    ys = np.arange(y_lo - 3.0, y_hi + 3.0, 0.05)
    pts = origin + np.outer(np.full_like(ys, x), frame[:, 0]) + np.outer(ys, frame[:, 1]) + z * frame[:, 2]
    inside = np.nonzero(sampler(pts) >= 0.5)[0]
    if not inside.size:
        return float(y_lo), float(y_hi)
    return float(ys[inside[0]]), float(ys[inside[-1]])


def cylinder_mask(ct: Volume, centre_lps: np.ndarray, axis: np.ndarray, diameter_mm: float,
                  half_height_mm: float) -> np.ndarray:
    """Voxels whose centre lies inside a cylinder (boolean, CT grid)."""
    reach = np.hypot(diameter_mm / 2, half_height_mm) + ct.spacing.max()
    c = ct.physical_to_index(centre_lps)
    r = np.ceil(reach / ct.spacing).astype(int)
    lo = np.maximum(np.floor(c - r).astype(int), 0)
    hi = np.minimum(np.ceil(c + r).astype(int) + 1, ct.size)
    mask = np.zeros(ct.array.shape, bool)
    if np.any(hi <= lo):
        return mask
    kk, jj, ii = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
    rel = ijk @ ct.affine[:3, :3].T + ct.affine[:3, 3] - centre_lps
    along = rel @ axis
    radial = np.linalg.norm(rel - np.outer(along, axis), axis=1)
    inside = (np.abs(along) <= half_height_mm + 1e-9) & (radial <= diameter_mm / 2 + 1e-9)
    mask[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = inside.reshape(kk.shape)
    return mask


def analyse_vertebrae(ct: Volume, labels: Volume, calibration: Calibration | None = None,
                      params: VertebraParameters | None = None,
                      voi_centres: dict[int, np.ndarray] | None = None,
                      progress: ProgressCallback | None = None) -> tuple[list[VertebraResult], VertebraMasks]:
    """Body, ROI, VOI, BMD/HU, heights and Genant grade of every vertebra in ``labels``.

    ``voi_centres`` (VerSe id -> LPS mm) overrides the automatic VOI centre (a user moving the
    VOI in Slicer); the VOI axis stays the vertebra's superior axis.
    """
    p = params or VertebraParameters()
    report = progress or (lambda f, m: None)
    ct.require_same_grid(labels, "vertebra label map")
    lab = np.asarray(labels.array)
    ids = [int(v) for v in np.unique(lab) if v != 0]
    unknown = [v for v in ids if v not in VERSE_NAMES]
    if unknown:
        raise BoneKitError(f"Label values {unknown} are not VerSe vertebra ids (L1 = 20 ...); relabel the mask.")
    if not ids:
        raise BoneKitError("The vertebra label map is empty: segment the vertebrae first (bonekit segment).")
    hu = np.asarray(ct.array, dtype=np.float64)
    objects = ndimage.find_objects(lab.astype(np.int32))
    centroids = {}
    for vid in ids:
        idx = np.argwhere(lab == vid)
        centroids[vid] = ct.index_to_physical(idx.mean(axis=0)[::-1])
    frames = _frames(ct, centroids)
    body_map = np.zeros(lab.shape, np.uint8)
    roi_map = np.zeros(lab.shape, np.uint8)
    voi_map = np.zeros(lab.shape, np.uint8)
    rows, geometry = [], {}
    vox = ct.voxel_volume
    for n, vid in enumerate(ids):
        report(n / len(ids), f"analysing {VERSE_NAMES[vid]}")
        name = VERSE_NAMES[vid]
        sl = objects[vid - 1]
        pad = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in sl)
        offset = np.array([s.start for s in pad])
        vertebra = lab[pad] == vid
        origin = centroids[vid]
        block = _sub_block(ct, offset)
        frames[vid], body = _body_frame(block, vertebra, origin, frames[vid])
        if not body.any():  # a fragment: nothing to measure, but say so rather than fail the batch
            rows.append(VertebraResult(vertebra=name, label=vid, vertebra_volume=float(vertebra.sum() * vox),
                                       body_volume=0.0, roi_volume=0.0, calibrated=calibration is not None,
                                       note="no vertebral body in the mask (a fragment?): not measured"))
            continue
        roi = trabecular_roi(body, ct.spacing_kji, p.erosion_mm)
        body_map[pad][body] = vid
        roi_map[pad][roi] = vid
        geo = _geometry(block, body, hu[pad], origin, frames[vid], p)
        cut = any(s.start == 0 or s.stop == n_ for s, n_ in zip(sl, lab.shape))
        if cut:  # truncated heights would read as a fracture
            geo["heights"] = {k: None for k in geo["heights"]}
        frame = frames[vid]
        centre = origin + frame @ np.array([geo["x_mid"], geo["y_front"] + p.voi_inset_mm + p.voi_diameter_mm / 2,
                                            geo["z_c"]])
        if voi_centres and vid in voi_centres:
            centre = np.asarray(voi_centres[vid], dtype=float)
        voi = cylinder_mask(ct, centre, frame[:, 2], p.voi_diameter_mm, p.voi_half_height_mm)
        voi_map[voi] = vid
        geometry[vid] = geo
        roi_hu = hu[pad][roi]
        voi_hu = hu[voi]
        h = geo["heights"]
        ha, hm, hp = h["anterior"], h["middle"], h["posterior"]
        rows.append(VertebraResult(
            vertebra=name, label=vid, vertebra_volume=float(vertebra.sum() * vox), body_volume=float(body.sum() * vox),
            roi_volume=float(roi.sum() * vox),
            HU=float(roi_hu.mean()) if roi_hu.size else None, HU_SD=float(roi_hu.std()) if roi_hu.size else None,
            BMD=float(calibration.bmd(roi_hu.mean())) if calibration is not None and roi_hu.size else None,
            VOI_HU=float(voi_hu.mean()) if voi_hu.size else None,
            VOI_BMD=float(calibration.bmd(voi_hu.mean())) if calibration is not None and voi_hu.size else None,
            voi_x=float(centre[0]), voi_y=float(centre[1]), voi_z=float(centre[2]),
            Ha=ha, Hm=hm, Hp=hp,
            wedge=1 - ha / hp if not cut and hp > 0 else None,
            biconcave=1 - hm / max(ha, hp) if not cut and max(ha, hp) > 0 else None,
            calibrated=calibration is not None,
            note="cut by the field of view: heights and grade not measured" if cut else None))
    _grade(rows)
    report(1.0, "vertebra analysis done")
    masks = VertebraMasks(*(labels.with_array(m, units="label", modality="SEG") for m in (body_map, roi_map, voi_map)))
    return rows, masks


def _sub_block(ct: Volume, offset_kji: np.ndarray) -> Volume:
    """A geometry-only volume whose voxel (0, 0, 0) is the CT's voxel ``offset_kji`` (k, j, i)."""
    affine = ct.affine.copy()
    affine[:3, 3] = ct.index_to_physical(offset_kji[::-1])
    return Volume(np.zeros((1, 1, 1), np.uint8), affine)


def _grade(rows: list[VertebraResult]) -> None:
    by_id = {r.label: r for r in rows}
    for r in rows:
        neighbours = [by_id[v].Hp for v in (r.label - 1, r.label + 1) if v in by_id and by_id[v].Hp]
        r.crush = 1 - r.Hp / float(np.mean(neighbours)) if neighbours and r.Hp else None
        losses = {k: getattr(r, k) for k in ("wedge", "biconcave", "crush") if getattr(r, k) is not None}
        if not losses:
            continue
        kind = max(losses, key=losses.get)
        r.height_loss = float(max(losses[kind], 0.0))
        r.grade = genant_grade(r.height_loss)
        r.fracture_type = kind if r.grade > 0 else None

"""Digitally reconstructed radiographs (DRRs): the perspective (cone-beam) projection of a CT.

Physics (monoenergetic Beer–Lambert, as Plastimatch and X2CT-GAN/TomoRay's DRRs):

* HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` in mm^-1, clipped at 0 (air);
  ``mu_water`` = 0.022 mm^-1 (water near 50 keV, Plastimatch's constant). ``air_below_hu``
  optionally sets everything at or below a level to air, as Plastimatch does at -800 HU.
* A point source at ``sad`` mm before the isocentre, a flat detector ``sid`` mm from the source,
  perpendicular to the central ray. Each pixel value is the line integral ``p = ∫ mu ds``
  (dimensionless) along the ray from the source to the pixel centre, or the transmitted
  fraction ``exp(-p)``.

Projector: Joseph's method (1982). The volume is the trilinear interpolant of the voxel centres
(zero outside); each ray is sampled where it crosses the planes of voxel centres along the volume
axis closest to the beam, with bilinear interpolation in the plane, and each sample weighs the
ray's length between two planes. A slab of ``n`` voxels therefore integrates to exactly
``n x spacing`` along any ray that crosses it. All rays of one view are computed together on the
CPU or a CUDA GPU (``torch.nn.functional.grid_sample``), plane chunk by plane chunk so memory
stays bounded; planes without attenuating voxels are skipped.

Image orientation (the radiographic display convention; both views have superior at the top):

* ``ap`` / ``pa``: the beam runs anterior -> posterior / posterior -> anterior; columns run towards
  the patient's left (the patient's right is on the viewer's left, as a PA chest film is read).
* ``lat`` (left lateral: the beam runs from the patient's right to the left detector) and ``rlat``:
  columns run towards posterior (the patient faces the viewer's left).

Plastimatch's ``--nrm`` is the direction from the detector to the source; its columns run along
``vup x nrm``. So ``ap`` equals ``plastimatch drr --nrm "0 -1 0"``; Plastimatch's ``--nrm "0 1 0"``
is ``pa`` mirrored left-right (X2CT-GAN flips it back), and ``--nrm "-1 0 0"`` is ``lat`` mirrored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numba
import numpy as np

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..volume import Volume

#: Linear attenuation of water (mm^-1) near 50 keV; Plastimatch's constant.
MU_WATER_PER_MM = 0.022

OUTPUTS = ("integral", "transmission")


@dataclass(frozen=True)
class View:
    """A projection direction and how the image is laid out, as unit vectors in LPS."""

    name: str
    beam: tuple[float, float, float]     #: source -> detector
    column: tuple[float, float, float]   #: direction of increasing column index
    row: tuple[float, float, float]      #: direction of increasing row index

    def __post_init__(self):
        m = np.array([self.beam, self.column, self.row], dtype=float)
        if m.shape != (3, 3) or not np.allclose(m @ m.T, np.eye(3), atol=1e-6):
            raise BoneKitError(f"View '{self.name}': beam, column and row directions must be "
                               "orthogonal unit vectors.")


#: The standard views (see the module docstring for the orientation convention).
VIEWS = {
    "ap": View("ap", (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "pa": View("pa", (0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "lat": View("lat", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "rlat": View("rlat", (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


def view_named(name: str | View) -> View:
    if isinstance(name, View):
        return name
    try:
        return VIEWS[str(name).strip().lower()]
    except KeyError:
        raise BoneKitError(f"Unknown view '{name}': use one of {', '.join(VIEWS)}.") from None


@dataclass(frozen=True)
class DetectorGeometry:
    """Source, isocentre and flat-panel detector (distances and pixel sizes in mm).

    The defaults are X2CT-GAN's Plastimatch set-up (SAD 541 mm, SID 949 mm), with a 256 x 256
    detector of 1.75 mm pixels: 448 mm across, about 1 mm per pixel at the isocentre.
    """

    sad: float = 541.0
    sid: float = 949.0
    rows: int = 256
    columns: int = 256
    pixel: tuple[float, float] = (1.75, 1.75)   #: (row, column) spacing at the detector

    def __post_init__(self):
        if not (math.isfinite(self.sad) and math.isfinite(self.sid) and 0 < self.sad < self.sid):
            raise BoneKitError(f"Need 0 < SAD < SID (source-isocentre and source-detector distances in mm), "
                               f"got SAD {self.sad}, SID {self.sid}.")
        if int(self.rows) < 1 or int(self.columns) < 1:
            raise BoneKitError(f"The detector needs at least 1 x 1 pixels, got {self.rows} x {self.columns}.")
        if len(self.pixel) != 2 or min(self.pixel) <= 0:
            raise BoneKitError(f"Detector pixel size must be two positive numbers in mm, got {self.pixel}.")

    @property
    def magnification(self) -> float:
        return self.sid / self.sad

    def source(self, isocenter, view: View) -> np.ndarray:
        return np.asarray(isocenter, float) - self.sad * np.asarray(view.beam)

    def pixel_centres(self, isocenter, view: View) -> np.ndarray:
        """LPS positions (mm) of every detector pixel centre, shape (rows, columns, 3)."""
        centre = self.source(isocenter, view) + self.sid * np.asarray(view.beam)
        r = (np.arange(self.rows) - (self.rows - 1) / 2) * self.pixel[0]
        c = (np.arange(self.columns) - (self.columns - 1) / 2) * self.pixel[1]
        return (centre + r[:, None, None] * np.asarray(view.row) + c[None, :, None] * np.asarray(view.column))


@dataclass
class DRR:
    """One projection image with everything needed to place it in space."""

    image: np.ndarray              #: (rows, columns) float32
    view: View
    geometry: DetectorGeometry
    isocenter: np.ndarray          #: LPS mm
    output: str = "integral"       #: "integral" (∫mu ds, dimensionless) or "transmission" (exp(-∫mu ds))
    settings: dict = field(default_factory=dict)

    def describe(self) -> dict:
        g = self.geometry
        return {"view": asdict(self.view), "sad_mm": g.sad, "sid_mm": g.sid, "rows": g.rows, "columns": g.columns,
                "pixel_mm": list(g.pixel), "isocenter_lps_mm": [float(v) for v in self.isocenter],
                "source_lps_mm": [float(v) for v in g.source(self.isocenter, self.view)],
                "magnification": g.magnification, "output": self.output, **self.settings}

    def to_volume(self) -> Volume:
        """The image as a one-slice volume lying in the detector plane (pixel spacing at the detector)."""
        g, v = self.geometry, self.view
        affine = np.eye(4)
        affine[:3, 0] = np.asarray(v.column) * g.pixel[1]
        affine[:3, 1] = np.asarray(v.row) * g.pixel[0]
        affine[:3, 2] = np.asarray(v.beam)
        affine[:3, 3] = g.pixel_centres(self.isocenter, v)[0, 0]
        units = "1"
        return Volume(self.image[None].astype(np.float32), affine, modality="DX", units=units,
                      metadata={"drr": self.describe()})


@numba.njit(cache=True, parallel=True)
def _hu_to_mu_kernel(hu, mu_water, air_below, out):  # pragma: no cover (compiled)
    nk, nj, ni = hu.shape
    scale = mu_water / 1000.0
    for k in numba.prange(nk):
        for j in range(nj):
            for i in range(ni):
                v = hu[k, j, i]
                m = mu_water + scale * v
                out[k, j, i] = 0.0 if (m < 0 or v <= air_below) else m


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM, air_below_hu: float | None = None) -> np.ndarray:
    """Linear attenuation (mm^-1, float32) from HU: ``mu_water * (1 + HU/1000)``, never negative;
    zero at or below ``air_below_hu`` when given (Plastimatch: -800)."""
    if not mu_water > 0:
        raise BoneKitError(f"The attenuation of water must be positive (mm^-1), got {mu_water}.")
    hu = np.asarray(hu)
    if hu.dtype.kind not in "iuf":
        raise BoneKitError(f"CT values must be numbers, not {hu.dtype}.")
    if hu.dtype.kind == "f" and not np.all(np.isfinite(hu)):
        raise BoneKitError("The CT holds NaN or infinite values; fill or crop them before making DRRs.")
    hu3 = hu.reshape((1,) * (3 - hu.ndim) + hu.shape) if hu.ndim < 3 else hu
    out = np.empty(hu3.shape, np.float32)
    _hu_to_mu_kernel(hu3, float(mu_water), -np.inf if air_below_hu is None else float(air_below_hu), out)
    return out.reshape(hu.shape)


def isocenter_of(volume: Volume, mask: np.ndarray | None = None) -> np.ndarray:
    """Centre (LPS mm) of the volume's grid, or of the bounding box of ``mask`` when given."""
    shape = np.asarray(volume.shape)
    if mask is not None and np.any(mask):
        idx = np.nonzero(mask)
        centre_kji = np.array([(a.min() + a.max()) / 2 for a in idx])
    else:
        centre_kji = (shape - 1) / 2
    return volume.index_to_physical(centre_kji[::-1])


def _bounds(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels, one axis-reduction per axis (cheaper than nonzero)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(x for x in range(mask.ndim) if x != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


@numba.njit(cache=True, inline="always")
def _bilinear(vol, m, h, w):  # pragma: no cover (compiled)
    """vol[m] at (h, w) by bilinear interpolation of the pixel centres, zero outside."""
    _, H, W = vol.shape
    hf = math.floor(h)
    wf = math.floor(w)
    i = int(hf)
    j = int(wf)
    fh = h - hf
    fw = w - wf
    if 0 <= i and i + 1 < H and 0 <= j and j + 1 < W:          # inside: no checks per tap
        return ((1 - fh) * ((1 - fw) * vol[m, i, j] + fw * vol[m, i, j + 1])
                + fh * ((1 - fw) * vol[m, i + 1, j] + fw * vol[m, i + 1, j + 1]))
    value = 0.0
    for di in (0, 1):
        ii = i + di
        if 0 <= ii < H:
            wh = fh if di else 1 - fh
            if 0 <= j < W:
                value += wh * (1 - fw) * vol[m, ii, j]
            if 0 <= j + 1 < W:
                value += wh * fw * vol[m, ii, j + 1]
    return value


@numba.njit(cache=True, parallel=True)
def _joseph_rays(vol, h0, hs, w0, ws, m_lo, m_hi, out):  # pragma: no cover (compiled)
    """out[r] = sum over planes m in [m_lo[r], m_hi[r]] of vol[m] at (h0 + m hs, w0 + m ws).

    Ray by ray, planes innermost: the loop order for volumes whose plane axis is the contiguous one."""
    for r in numba.prange(out.shape[0]):
        acc = 0.0
        for m in range(m_lo[r], m_hi[r] + 1):
            acc += _bilinear(vol, m, h0[r] + m * hs[r], w0[r] + m * ws[r])
        out[r] = acc


@numba.njit(cache=True, parallel=True)
def _joseph_rows(vol, h0, hs, w0, ws, m_lo, m_hi, out):  # pragma: no cover (compiled)
    """:func:`_joseph_rays` for (R, C) ray arrays, plane by plane with the detector columns innermost:
    the loop order for volumes whose in-plane W axis is the contiguous one."""
    R, C = out.shape
    for r in numba.prange(R):
        first = m_lo[r].min()
        last = m_hi[r].max()
        for m in range(first, last + 1):
            for c in range(C):
                if m_lo[r, c] <= m <= m_hi[r, c]:
                    out[r, c] += _bilinear(vol, m, h0[r, c] + m * hs[r, c], w0[r, c] + m * ws[r, c])


def _plane_range(x0, step, lo, hi, n):
    """Per ray, planes m (a superset, clipped to [-1, n]) where lo < x0 + m step < hi."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (lo - x0) / step
        b = (hi - x0) / step
    first = np.where(step > 0, a, np.where(step < 0, b, np.where((x0 > lo) & (x0 < hi), -np.inf, np.inf)))
    last = np.where(step > 0, b, np.where(step < 0, a, np.where((x0 > lo) & (x0 < hi), np.inf, -np.inf)))
    return np.clip(np.floor(first), -1, n), np.clip(np.ceil(last), -1, n)


def project(mu: np.ndarray, affine: np.ndarray, source: np.ndarray, pixels: np.ndarray, *,
            device: str = "cpu", chunk: int = 32, progress: ProgressCallback | None = None,
            engine: str = "auto") -> np.ndarray:
    """Line integrals of ``mu`` (k, j, i array, mm^-1) from ``source`` to each of ``pixels`` (..., 3, LPS mm).

    ``affine`` maps voxel indices (i, j, k) to LPS mm. Returns float32 of ``pixels.shape[:-1]``.
    On the CPU a compiled loop visits, per ray, only the planes where the ray is inside the volume;
    on a GPU ``grid_sample`` samples all rays of a chunk of planes at once. Same samples, same sums
    (``engine`` "numba" or "torch" forces one; "auto": numba on the CPU, torch elsewhere).
    """
    out_shape = pixels.shape[:-1]
    pixels = pixels.reshape(-1, 3)
    inv = np.linalg.inv(np.asarray(affine, float))
    s = inv[:3, :3] @ np.asarray(source, float) + inv[:3, 3]                  # source, index units (i, j, k)
    d = pixels @ inv[:3, :3].T + inv[:3, 3] - s                              # ray directions, index units
    length = np.linalg.norm(pixels - np.asarray(source, float), axis=1)      # mm per unit of t

    # the principal axis: the one the rays advance along fastest (Joseph); refuse rays > 45 deg off it
    a = int(np.argmax(np.abs(d).mean(axis=0)))
    h, w = [x for x in (2, 1, 0) if x != a]                                  # the plane's axes, slow then fast
    if np.any(np.abs(d[:, a]) < np.maximum(np.abs(d[:, h]), np.abs(d[:, w])) * (1 - 1e-9)):
        raise BoneKitError("Some rays run more than 45 degrees away from every axis of the volume "
                           "(in voxel units); use a detector that subtends a smaller angle, or resample "
                           "the volume to near-isotropic voxels.")
    vol = np.asarray(mu).transpose(2 - a, 2 - h, 2 - w)                     # (planes, H, W): a view, no copy
    n_planes, H, W = vol.shape
    # along each ray the plane index m sets t = t0 + m dt (0 at the source, 1 at the pixel) and the
    # in-plane position (h0 + m hs, w0 + m ws); only planes with t in [0, 1] and the ray over the plane count
    dt = 1 / d[:, a]
    t0 = -s[a] * dt
    h0, hs = s[h] + t0 * d[:, h], dt * d[:, h]
    w0, ws = s[w] + t0 * d[:, w], dt * d[:, w]
    t_at0, t_at1 = -t0 / dt, (1 - t0) / dt                                  # plane index where t = 0, 1
    ranges = [(np.ceil(np.minimum(t_at0, t_at1) - 1e-9), np.floor(np.maximum(t_at0, t_at1) + 1e-9)),
              _plane_range(h0, hs, -1, H, n_planes), _plane_range(w0, ws, -1, W, n_planes)]
    m_lo = np.maximum(np.max([r[0] for r in ranges], axis=0), 0).astype(np.int64)
    m_hi = np.minimum(np.min([r[1] for r in ranges], axis=0), n_planes - 1).astype(np.int64)
    weight = length / np.abs(d[:, a])                                        # mm of ray between two planes

    if engine == "auto":
        engine = "numba" if device == "cpu" else "torch"
    if engine == "numba":
        if device != "cpu":
            raise BoneKitError("The compiled DRR projector runs on the CPU only; use engine 'torch' on a GPU.")
        total = np.zeros(len(d))
        rays = (h0, hs, w0, ws, m_lo, m_hi)
        if np.argmin(np.abs(vol.strides)) == 0:             # planes contiguous: walk each ray through them
            _joseph_rays(vol, *rays, total)
        else:                                                # rows of the plane contiguous: sweep columns
            grid = (-1, out_shape[-1]) if len(out_shape) == 2 else (len(d), 1)
            _joseph_rows(vol, *(x.reshape(grid) for x in rays), total.reshape(grid))
        if progress is not None:
            progress(1.0, "Projecting")
    else:
        total = _joseph_torch(vol, h0, hs, w0, ws, m_lo, m_hi, device, chunk, progress)
    return (total * weight).astype(np.float32).reshape(out_shape)


def _joseph_torch(vol, h0, hs, w0, ws, m_lo, m_hi, device, chunk, progress) -> np.ndarray:
    """:func:`_joseph_rays` with ``grid_sample`` over chunks of planes (for GPUs)."""
    import torch
    import torch.nn.functional as F

    n_planes, H, W = vol.shape
    dev = torch.device(device)
    padded = torch.zeros((n_planes, 1, H + 2, W + 2), dtype=torch.float32, device=dev)   # zero border
    padded[:, 0, 1:-1, 1:-1] = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32)).to(dev)
    # grid_sample's normalised coordinates (align_corners: -1 and 1 are the border's centres)
    norm = np.array([2 / (W + 1), 2 / (H + 1)])
    x0 = torch.as_tensor((np.stack([w0, h0], -1) + 1) * norm - 1, dtype=torch.float32, device=dev)
    step = torch.as_tensor(np.stack([ws, hs], -1) * norm, dtype=torch.float32, device=dev)
    lo = torch.as_tensor(m_lo, device=dev)
    hi = torch.as_tensor(m_hi, device=dev)
    total = torch.zeros(len(h0), dtype=torch.float64, device=dev)
    first, last = int(m_lo.min()), int(m_hi.max())
    for start in range(first, last + 1, chunk):
        m = torch.arange(start, min(start + chunk, last + 1), device=dev)
        grid = torch.addcmul(x0[None], m[:, None, None].float(), step[None])[:, None]   # (P, 1, rays, 2)
        samples = F.grid_sample(padded[start:start + len(m)], grid, mode="bilinear",
                                padding_mode="zeros", align_corners=True)[:, 0, 0]   # (P, rays)
        keep = (m[:, None] >= lo[None]) & (m[:, None] <= hi[None])
        total += torch.where(keep, samples, 0).sum(0, dtype=torch.float64)
        if progress is not None:
            progress(min(1.0, (start + len(m) - first) / (last + 1 - first)), "Projecting")
    return total.cpu().numpy()


def compute_drr(volume: Volume, views: Sequence[str | View] = ("ap", "lat"), *,
                geometry: DetectorGeometry | None = None, isocenter=None, mu_water: float = MU_WATER_PER_MM,
                air_below_hu: float | None = None, output: str = "integral", device: str = "auto",
                progress: ProgressCallback | None = None) -> list[DRR]:
    """DRRs of a CT (HU) for each view; see the module docstring for physics and orientation.

    Parameters
    ----------
    volume : Volume
        CT in HU (any orientation and voxel size).
    views : names in :data:`VIEWS` or :class:`View` objects.
    geometry : source, detector and pixel size; :class:`DetectorGeometry` defaults when None.
    isocenter : LPS mm; the centre of the volume's grid when None.
    mu_water, air_below_hu : HU -> attenuation, see :func:`hu_to_mu`.
    output : "integral" (∫mu ds) or "transmission" (exp(-∫mu ds)).
    device : "auto", "cpu" or "cuda[:N]".
    """
    from ..accel import resolve_device

    if output not in OUTPUTS:
        raise BoneKitError(f"Unknown DRR output '{output}': use {' or '.join(OUTPUTS)}.")
    views = [view_named(v) for v in views]
    if not views:
        raise BoneKitError("Ask for at least one view (ap, pa, lat or rlat).")
    geometry = geometry or DetectorGeometry()
    iso = isocenter_of(volume) if isocenter is None else np.asarray(isocenter, float)
    if iso.shape != (3,) or not np.all(np.isfinite(iso)):
        raise BoneKitError(f"The isocentre must be three finite LPS coordinates in mm, got {isocenter}.")
    dev = resolve_device(device)
    mu = hu_to_mu(volume.array, mu_water, air_below_hu)
    # crop to the attenuating voxels, once for all views: exact, the interpolant is zero outside them
    box = _bounds(mu != 0)
    affine = volume.affine.copy()
    if box is not None:
        mu = mu[box]
        affine[:3, 3] = volume.index_to_physical([box[2].start, box[1].start, box[0].start])
    settings = {"mu_water_per_mm": mu_water, "air_below_hu": air_below_hu, "projector": "joseph-bilinear"}
    drrs = []
    for n, view in enumerate(views):
        def sub(f, msg, n=n):
            if progress is not None:
                progress((n + f) / len(views), f"{msg} the {view.name} view")
        source = geometry.source(iso, view)
        # inside the volume's bounding box the source would see rays that start inside the patient
        if bool(volume.contains_index(volume.physical_to_index(source))):
            raise BoneKitError(f"The {view.name} source lies inside the CT volume; increase SAD "
                               f"(now {geometry.sad} mm).")
        if box is None:
            image = np.zeros((geometry.rows, geometry.columns), np.float32)
        else:
            image = project(mu, affine, source, geometry.pixel_centres(iso, view), device=dev, progress=sub)
        if output == "transmission":
            image = np.exp(-image).astype(np.float32)
        drrs.append(DRR(image, view, geometry, iso, output, dict(settings)))
    return drrs

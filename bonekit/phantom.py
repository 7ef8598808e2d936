"""A deterministic synthetic lumbar spine CT with known truth.

The phantom is the embedded default of the demo and the ground truth of many tests.

Anatomy (LPS millimetres; +x = patient left, +y = posterior, +z = superior): L1-L5 on a
lordotic curve, each with its own tilted frame; a vertebral body (elliptic, flattened
posterior wall) with a cortical shell and endplates; a trabecular interior; posterior
elements (pedicles, arch around the spinal canal, spinous and transverse processes);
intervertebral discs; soft tissue, a posterior fat layer and air; optionally
calibration rods of known mg HA/cm^3 in a water-equivalent pad under the patient.

Trabecular microstructure is a continuous, periodic structure
``{p : |g(p)| < tau}`` where ``g`` is a band-limited random field (a finite Fourier
series, so it can be evaluated exactly on any grid): a connected network of plates.
Each vertebra thresholds the same field at its own level, which sets its BV/TV.
The CT sees it through partial volume (the fine structure averaged over each CT voxel),
the scanner's point-spread function (Gaussian, FWHM per axis) and Gaussian noise.

Truth is measured on the fine structure itself: BV/TV by voxel count, Tb.Th and Tb.Sp
as mean local thickness (Hildebrand & Rüegsegger, BoneJ's discretisation, see
:mod:`bonekit.thickness`) at a voxel size where each spans several voxels, BMD as the mean
noise-free mineral density over the trabecular compartment on the CT grid. Body heights,
Genant grades of planted fractures, void positions and the HU <-> mg HA/cm^3 law are
recorded too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import BoneKitError
from .io import write_json, write_volume
from .progress import ProgressCallback
from .points import VERSE_IDS, VERSE_NAMES  # noqa: F401 (re-exported)
from .thickness import local_thickness, thickness_stats
from .volume import Volume


GENANT_TYPES = ("wedge", "biconcave", "crush")


def genant_grade(height_loss: float) -> int:
    """Genant semi-quantitative grade from a height-loss fraction: 0 (< 20 %), 1 (20-25 %), 2 (25-40 %), 3 (>= 40 %)."""
    if height_loss < 0.20:
        return 0
    if height_loss < 0.25:
        return 1
    if height_loss < 0.40:
        return 2
    return 3


@dataclass
class Fracture:
    """A planted Genant fracture: ``kind`` wedge (anterior), biconcave (middle) or crush (whole body)."""

    vertebra: str
    kind: str
    height_loss: float

    def __post_init__(self):
        if self.kind not in GENANT_TYPES:
            raise BoneKitError(f"Fracture type must be one of {', '.join(GENANT_TYPES)}, not '{self.kind}'.")
        if not 0.0 <= self.height_loss < 0.8:
            raise BoneKitError(f"Fracture height loss must be a fraction in [0, 0.8), got {self.height_loss}.")


@dataclass
class Void:
    """A spherical focal void (no trabeculae) inside a body; ``offset_mm`` in the vertebra's frame (x lateral, y AP, z up)."""

    vertebra: str
    diameter_mm: float
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class PhantomConfig:
    """Every parameter of the spine phantom; the defaults are the embedded demo case."""

    seed: int = 0
    vertebrae: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")
    spacing_mm: tuple[float, float, float] = (0.5, 0.5, 1.0)
    #: per-vertebra trabecular BV/TV of the fine structure (one value, or one per vertebra)
    bvtv: tuple[float, ...] = (0.09, 0.11, 0.13, 0.15, 0.17)
    #: mineral density of trabecular bone tissue, cortical shell and posterior elements (mg HA/cm^3)
    tissue_density: float = 1050.0
    cortical_density: float = 1150.0
    posterior_density: float = 550.0
    cortical_thickness_mm: float = 0.8
    #: scanner: HU = hu_intercept + hu_slope * (mg HA/cm^3) for marrow, bone and calibration rods
    hu_intercept: float = -2.0
    hu_slope: float = 1.22
    psf_fwhm_mm: tuple[float, float, float] = (0.7, 0.7, 1.2)
    noise_hu: float = 15.0
    lordosis_mm: float = 9.0
    #: microstructure: tile period, fine voxel, dominant wavelength, vertical elongation of trabeculae
    tile_mm: float = 4.8
    fine_voxel_mm: float = 0.04
    wavelength_mm: float = 1.6
    vertical_anisotropy: float = 1.25
    fractures: tuple[Fracture, ...] = ()
    voids: tuple[Void, ...] = ()
    calibration_rods: tuple[float, ...] = ()
    truth_morphometry: bool = True

    def __post_init__(self):
        unknown = [v for v in self.vertebrae if v not in VERSE_IDS]
        if unknown or not self.vertebrae:
            raise BoneKitError(f"Unknown vertebra name(s) {unknown}; use VerSe names such as L1 ... L5.")
        if len(self.bvtv) not in (1, len(self.vertebrae)):
            raise BoneKitError(f"Give one BV/TV or one per vertebra ({len(self.vertebrae)}), not {len(self.bvtv)}.")
        if not all(0.02 <= b <= 0.6 for b in self.bvtv):
            raise BoneKitError("Trabecular BV/TV must lie between 0.02 and 0.6.")
        if min(self.spacing_mm) <= 0 or max(self.spacing_mm) > 3:
            raise BoneKitError("Phantom voxel spacing must be in (0, 3] mm.")
        for item in (*self.fractures, *self.voids):
            if item.vertebra not in self.vertebrae:
                raise BoneKitError(f"{type(item).__name__} names {item.vertebra}, which is not in the phantom.")

    def bvtv_of(self, index: int) -> float:
        return self.bvtv[0] if len(self.bvtv) == 1 else self.bvtv[index]


# ----------------------------------------------------------------------------- microstructure
class TrabecularField:
    """A periodic band-limited random field whose thickened zero set is the trabecular network."""

    def __init__(self, tile_mm: float, wavelength_mm: float, anisotropy: float, seed: int):
        self.tile_mm = float(tile_mm)
        rng = np.random.default_rng(seed)
        k0 = tile_mm / wavelength_mm  # dominant wave number, cycles per tile
        m = 2 * int(math.ceil(2.2 * k0)) + 2
        k = np.fft.fftfreq(m) * m
        kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
        kr = np.sqrt(kx ** 2 + ky ** 2 + (kz * anisotropy) ** 2)
        weight = np.exp(-0.5 * ((kr - k0) / (0.3 * k0)) ** 2)
        weight[0, 0, 0] = 0.0
        self._spectrum = weight * np.fft.fftn(rng.standard_normal((m, m, m)))
        self._m = m
        self._samples: dict[int, np.ndarray] = {}

    def sample(self, n: int) -> np.ndarray:
        """The field on an n^3 grid over one period (voxel = tile / n), exact (zero-padded spectrum)."""
        if n in self._samples:
            return self._samples[n]
        m = self._m
        if n < m:
            raise BoneKitError(f"The microstructure grid must have at least {m} voxels per tile.")
        h = m // 2
        src = np.r_[0:h, m - h:m]
        dst = np.r_[0:h, n - h:n]
        spectrum = np.zeros((n, n, n), dtype=complex)
        spectrum[np.ix_(dst, dst, dst)] = self._spectrum[np.ix_(src, src, src)]
        g = np.fft.ifftn(spectrum).real
        g /= g.std()
        g.flags.writeable = False
        self._samples[n] = g
        return g

    def level_for(self, bvtv: float, n: int) -> float:
        """Threshold tau such that {|g| < tau} fills ``bvtv`` of the n^3 grid."""
        return float(np.quantile(np.abs(self.sample(n)), bvtv))

    def binary(self, tau: float, n: int) -> np.ndarray:
        return np.abs(self.sample(n)) < tau


def tile_morphometry(field_: TrabecularField, tau: float, fine_voxel_mm: float) -> dict:
    """Truth morphometry of the periodic structure {|g| < tau}.

    Tb.Th on the fine grid, Tb.Sp on a grid twice as coarse (spaces are ~5x wider than
    trabeculae, so both span >= 7 voxels); periodic boundaries, BoneJ discretisation.
    """
    n = int(round(field_.tile_mm / fine_voxel_mm))
    bone = field_.binary(tau, n)
    voxel = field_.tile_mm / n
    th, th_sd = thickness_stats(local_thickness(bone, voxel, periodic=True))
    n_sp = n // 2
    marrow = ~field_.binary(tau, n_sp)
    sp, sp_sd = thickness_stats(local_thickness(marrow, field_.tile_mm / n_sp, periodic=True))
    return {"BV/TV": float(bone.mean()), "Tb.Th": th, "Tb.Th.SD": th_sd, "Tb.Sp": sp, "Tb.Sp.SD": sp_sd,
            "Tb.N": 1.0 / (th + sp), "Tb.Th_voxel_mm": voxel, "Tb.Sp_voxel_mm": field_.tile_mm / n_sp}


# ----------------------------------------------------------------------------- anatomy
@dataclass
class _Vertebra:
    name: str
    centre: np.ndarray        # LPS mm, centre of the body
    frame: np.ndarray         # 3x3, columns: local x (lateral), y (posterior), z (superior)
    a: float                  # lateral semi-axis of the body (mm)
    b: float                  # antero-posterior semi-axis (mm)
    h: float                  # body height (mm)
    disc_below: float         # disc height under this body (mm)
    bvtv: float
    tile_offset: np.ndarray
    fracture: Fracture | None = None

    @property
    def posterior_wall(self) -> float:
        return 0.72 * self.b

    @property
    def middle_y(self) -> float:
        """Local y of the middle height: midway between the anterior and posterior walls."""
        return 0.5 * (self.posterior_wall - self.b)

    def signed_distance(self, x, y, z, shrink: float, voxel: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the body surface shrunk by ``shrink`` mm, in voxels (< 0 inside).

        Each face is measured in units of the voxel size across it (lateral/AP faces: in-plane
        spacing, endplates: slice spacing), so ``0.5 - distance`` clipped to [0, 1] is the
        fraction of a voxel the body fills.
        """
        a, b = self.a - shrink, self.b - shrink
        ell = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        radius = np.sqrt(x ** 2 + y ** 2) / np.maximum(ell, 1e-9)  # ellipse radius along this direction
        z_inf, z_sup = self.endplates(x, y)
        terms = ((ell - 1.0) * radius / voxel[0], (y - (self.posterior_wall - shrink)) / voxel[1],
                 (z_inf + shrink - z) / voxel[2], (z - z_sup + shrink) / voxel[2])
        return np.maximum.reduce(np.broadcast_arrays(*terms))

    def endplates(self, x, y):
        """Inferior and superior endplate heights (local z, mm) over local (x, y)."""
        z_inf = np.full(np.shape(x), -self.h / 2)
        z_sup = np.full(np.shape(x), self.h / 2)
        f = self.fracture
        if f is not None and f.height_loss > 0:
            loss = f.height_loss * self.h
            if f.kind == "wedge":  # superior endplate drops towards the anterior wall
                yp, ya = self.posterior_wall, -self.b
                z_sup = z_sup - loss * np.clip((yp - y) / (yp - ya), 0, 1)
            elif f.kind == "biconcave":  # both endplates cave in, most at the centre, not at the walls
                yp, ya = self.posterior_wall, -self.b
                along = np.sin(np.pi * np.clip((y - ya) / (yp - ya), 0, 1)) ** 2
                dent = 0.5 * loss * along * np.clip(1 - (x / self.a) ** 2, 0, 1)
                z_sup, z_inf = z_sup - dent, z_inf + dent
            else:  # crush: the whole body loses height
                z_sup = z_sup - loss
        return z_inf, z_sup

    def voi(self, diameter_mm: float = 15.0, half_height_mm: float = 5.0, inset_mm: float = 5.0) -> dict:
        """The cylindrical VOI of Jin et al. 2021 by construction: on the central slice (half-way up
        the middle height), ``inset_mm`` behind the anterior wall on the mid-sagittal line, tangent."""
        z_inf, z_sup = self.endplates(np.array(0.0), np.array(self.middle_y))
        local = np.array([0.0, -self.b + inset_mm + diameter_mm / 2, float(z_inf + z_sup) / 2])
        return {"centre_lps_mm": (self.centre + self.frame @ local).tolist(), "axis_lps": self.frame[:, 2].tolist(),
                "diameter_mm": diameter_mm, "height_mm": 2 * half_height_mm}

    def heights(self) -> dict:
        """Anterior, middle and posterior body heights (mm) in the mid-sagittal plane, along local z."""
        ys = {"anterior": -self.b + 1e-6, "middle": self.middle_y, "posterior": self.posterior_wall - 1e-6}
        out = {}
        for key, y in ys.items():
            z_inf, z_sup = self.endplates(np.array(0.0), np.array(y))
            out[key] = float(z_sup - z_inf)
        return out


def _build_spine(cfg: PhantomConfig, rng: np.random.Generator) -> list[_Vertebra]:
    fractures = {f.vertebra: f for f in cfg.fractures}
    dims = []
    for idx, name in enumerate(cfg.vertebrae):
        level = VERSE_IDS[name] - 20  # 0 for L1; thoracic levels are smaller
        a = 20.0 + 1.1 * level + rng.uniform(-0.5, 0.5)
        b = 15.0 + 0.7 * level + rng.uniform(-0.4, 0.4)
        h = 25.0 + 0.4 * level + rng.uniform(-0.5, 0.5)
        disc = 8.5 + 0.5 * level + rng.uniform(-0.4, 0.4)
        dims.append((a, b, h, disc))
    total = sum(d[2] for d in dims) + sum(d[3] for d in dims[:-1])
    z = total / 2
    vertebrae = []
    for idx, (name, (a, b, h, disc)) in enumerate(zip(cfg.vertebrae, dims)):
        zc = z - h / 2
        z -= h + disc
        # lordotic curve: y = k * z^2 (L3 most anterior), tangent gives the body's tilt
        k = cfg.lordosis_mm / (total / 2) ** 2 if total > 0 else 0.0
        centre = np.array([0.0, k * zc ** 2, zc])
        up = np.array([0.0, 2 * k * zc, 1.0])
        up /= np.linalg.norm(up)
        ex = np.array([1.0, 0.0, 0.0])
        ey = np.cross(up, ex)
        frame = np.stack([ex, ey, up], axis=1)
        vertebrae.append(_Vertebra(name, centre, frame, a, b, h, disc, cfg.bvtv_of(idx),
                                   rng.uniform(0, cfg.tile_mm, 3), fractures.get(name)))
    return vertebrae


# ----------------------------------------------------------------------------- result
@dataclass
class SpinePhantom:
    """The phantom: CT, masks and truth."""

    ct: Volume                # HU, int16
    labels: Volume            # whole vertebrae, VerSe ids (uint8)
    bodies: Volume            # vertebral bodies only, VerSe ids
    trabecular: Volume        # trabecular compartment (body minus cortex), VerSe ids
    density: Volume           # noise-free, unblurred mineral density, mg HA/cm^3 (float32)
    centroids: list[dict]     # VerSe centroid list (first entry: axis directions)
    truth: dict
    config: PhantomConfig

    def save(self, out_dir, prefix: str = "phantom") -> dict[str, Path]:
        """Write every part (NIfTI + JSON) into ``out_dir``; returns the paths written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "ct": write_volume(self.ct, out / f"{prefix}_ct.nii.gz"),
            "labels": write_volume(self.labels, out / f"{prefix}_seg-vert_msk.nii.gz"),
            "bodies": write_volume(self.bodies, out / f"{prefix}_body_msk.nii.gz"),
            "trabecular": write_volume(self.trabecular, out / f"{prefix}_trabecular_msk.nii.gz"),
            "density": write_volume(self.density, out / f"{prefix}_density.nii.gz"),
            "centroids": write_json(self.centroids, out / f"{prefix}_seg-subreg_ctd.json"),
            "truth": write_json(self.truth, out / f"{prefix}_truth.json"),
        }
        return paths


def _config_dict(cfg: PhantomConfig) -> dict:
    d = asdict(cfg)
    d["fractures"] = [asdict(f) for f in cfg.fractures]
    d["voids"] = [asdict(v) for v in cfg.voids]
    return d


def spine_phantom(config: PhantomConfig | None = None, progress: ProgressCallback | None = None,
                  **overrides) -> SpinePhantom:
    """Generate the lumbar spine phantom (deterministic for a given configuration and seed).

    Parameters
    ----------
    config : PhantomConfig, optional
        All parameters; keyword ``overrides`` replace single fields (``spine_phantom(seed=3)``).
    progress : callable(fraction, message), optional
        Progress reports.
    """
    cfg = config or PhantomConfig()
    if overrides:
        cfg = PhantomConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **overrides})
    report = progress or (lambda fraction, message: None)
    rng = np.random.default_rng(cfg.seed)
    spine = _build_spine(cfg, rng)
    field_ = TrabecularField(cfg.tile_mm, cfg.wavelength_mm, cfg.vertical_anisotropy, cfg.seed)

    # ---- grid: axis-aligned LPS, covering the spine, processes, back and optional rods
    sx, sy, sz = cfg.spacing_mm
    max_a = max(v.a for v in spine)
    max_b = max(v.b for v in spine)
    skin_y = max_b + 62.0
    y_max = skin_y + (34.0 if cfg.calibration_rods else 6.0)
    x_half = max(max_a + 24.0, 13.0 * len(cfg.calibration_rods) / 2 + 8.0)
    z_half = spine[0].centre[2] + spine[0].h / 2 + 8.0
    z_low = spine[-1].centre[2] - spine[-1].h / 2 - 8.0
    lo = np.array([-x_half, -max_b - 28.0, z_low])
    hi = np.array([x_half, y_max, z_half])
    size = np.floor((hi - lo) / np.array([sx, sy, sz])).astype(int) + 1
    nx, ny, nz = (int(s) for s in size)
    origin = lo
    xs = origin[0] + sx * np.arange(nx)
    ys = origin[1] + sy * np.arange(ny)
    zs = origin[2] + sz * np.arange(nz)

    # ---- background: soft tissue, posterior fat, air, optional calibration pad (HU)
    hu = np.full((nz, ny, nx), 45.0, dtype=np.float32)
    hu[:, (ys > skin_y - 14.0) & (ys <= skin_y), :] = -95.0
    hu[:, ys > skin_y, :] = -1000.0
    density = np.zeros((nz, ny, nx), dtype=np.float32)
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    bodies = np.zeros_like(labels)
    trab = np.zeros_like(labels)
    rods_truth = []
    if cfg.calibration_rods:
        pad_lo, pad_hi = skin_y + 4.0, skin_y + 30.0
        pad = (ys >= pad_lo) & (ys <= pad_hi)
        yc = (pad_lo + pad_hi) / 2
        n_rods = len(cfg.calibration_rods)
        for i, rho in enumerate(cfg.calibration_rods):
            xc = (i - (n_rods - 1) / 2) * 13.0
            disk = ((xs[None, :] - xc) ** 2 + (ys[:, None] - yc) ** 2) <= 5.0 ** 2
            density[:, disk] = rho
            rods_truth.append({"density_mg_cm3": float(rho), "centre_lps_mm": [xc, yc], "diameter_mm": 10.0,
                               "axis": "z (whole field)"})
        hu[:, pad, :] = cfg.hu_intercept + cfg.hu_slope * density[:, pad, :]  # water-equivalent pad + rods

    # ---- per-vertebra rendering within a bounding box
    truth_vertebrae = []
    tiles = {}
    n_tile = int(round(cfg.tile_mm / cfg.fine_voxel_mm))
    ct_voxel = np.array(cfg.spacing_mm)
    for idx, v in enumerate(spine):
        report(0.05 + 0.6 * idx / len(spine), f"rendering {v.name}")
        label = VERSE_IDS[v.name]
        # bounding box of everything this vertebra renders (body + disc below, processes behind)
        reach_lo = np.array([v.a + 18.0, v.b + 6.0, v.h / 2 + v.disc_below + 6.0])
        reach_hi = np.array([v.a + 18.0, v.b + 52.0, v.h / 2 + 6.0])
        box_lo = np.maximum(np.floor((v.centre - reach_lo - origin) / ct_voxel).astype(int), 0)
        box_hi = np.minimum(np.ceil((v.centre + reach_hi - origin) / ct_voxel).astype(int) + 1, [nx, ny, nz])
        sl = (slice(box_lo[2], box_hi[2]), slice(box_lo[1], box_hi[1]), slice(box_lo[0], box_hi[0]))
        Zb, Yb, Xb = np.meshgrid(zs[sl[0]] - v.centre[2], ys[sl[1]] - v.centre[1], xs[sl[2]] - v.centre[0],
                                 indexing="ij", sparse=True)
        local = np.stack([Xb * v.frame[0, c] + Yb * v.frame[1, c] + Zb * v.frame[2, c] for c in range(3)],
                         axis=-1)  # (x lateral, y posterior, z superior)
        lx, ly, lz = local[..., 0], local[..., 1], local[..., 2]

        # body and cortical shell, with partial volume: occupancy from a signed distance in voxel units
        t = cfg.cortical_thickness_mm
        occ_body = np.clip(0.5 - v.signed_distance(lx, ly, lz, 0.0, ct_voxel), 0.0, 1.0)
        occ_inner = np.clip(0.5 - v.signed_distance(lx, ly, lz, t, ct_voxel), 0.0, 1.0)
        body = occ_body >= 0.5
        inner = occ_inner >= 0.5

        # posterior elements (in the body's frame)
        yc = v.b + 9.0  # spinal canal centre
        canal = (lx / 9.5) ** 2 + ((ly - yc) / 8.0) ** 2 <= 1
        pedicles = ((np.abs(lx) - 0.5 * v.a) ** 2 + (lz + 1.0) ** 2 <= 4.5 ** 2) & \
                   (ly >= v.posterior_wall - 2.0) & (ly <= yc + 2.0)
        arch = ((lx / 15.5) ** 2 + ((ly - yc) / 13.0) ** 2 <= 1) & (ly >= yc - 1.0) & (np.abs(lz + 1.0) <= 6.5)
        spinous = (np.abs(lx) <= 3.0) & (ly >= yc + 8.0) & (ly <= yc + 36.0) & \
                  (np.abs(lz + 3.0 + 0.15 * (ly - yc)) <= 8.0)
        transverse = (np.abs(lx) >= 8.0) & (np.abs(lx) <= v.a + 16.0) & \
                     (np.abs(ly - (v.b + 6.0)) <= 3.5 - 0.05 * (np.abs(lx) - 8.0)) & (np.abs(lz + 1.0) <= 3.5)
        posterior = (pedicles | arch | spinous | transverse) & ~canal & ~body

        # disc under the body
        dz = lz + v.h / 2
        disc = ((lx / (v.a - 0.5)) ** 2 + (ly / (v.b - 0.5)) ** 2 <= 1) & (ly <= v.posterior_wall) & \
               (dz < 0) & (dz >= -v.disc_below) if idx < len(spine) - 1 else np.zeros_like(body)

        # trabecular partial-volume fraction: the fine structure averaged over each CT voxel
        if v.bvtv not in tiles:
            tau = field_.level_for(v.bvtv, n_tile)
            fine = field_.binary(tau, n_tile).astype(np.float32)
            footprint = [max(1, int(round(s / (cfg.tile_mm / n_tile)))) for s in ct_voxel[::-1]]
            tiles[v.bvtv] = (tau, ndimage.uniform_filter(fine, size=footprint, mode="wrap"))
        tau, frac_tile = tiles[v.bvtv]
        tidx = np.floor(((local[..., ::-1] + v.tile_offset[::-1]) % cfg.tile_mm) /
                        (cfg.tile_mm / n_tile)).astype(int) % n_tile
        frac = frac_tile[tidx[..., 0], tidx[..., 1], tidx[..., 2]]
        void_truth = []
        for void in cfg.voids:
            if void.vertebra != v.name:
                continue
            off = np.asarray(void.offset_mm, dtype=float)
            inside = np.sum((local - off) ** 2, axis=-1) <= (void.diameter_mm / 2) ** 2
            frac = np.where(inside & inner, 0.0, frac)
            void_truth.append({"diameter_mm": void.diameter_mm, "offset_mm": off.tolist(),
                               "centre_lps_mm": (v.centre + v.frame @ off).tolist(),
                               "voxels": int((inside & inner).sum())})

        # write into the volume: bone has priority over discs; a vertebra never overwrites another
        sub_hu, sub_den = hu[sl], density[sl]
        sub_lab, sub_body, sub_trab = labels[sl], bodies[sl], trab[sl]
        free = sub_lab == 0
        occ_body = np.where(free, occ_body, 0.0)
        occ_inner = np.minimum(occ_inner, occ_body)
        disc &= free & ~posterior & ~body
        sub_hu[disc] = 90.0
        body_density = (occ_body - occ_inner) * cfg.cortical_density + occ_inner * frac * cfg.tissue_density
        post = posterior & free & ~body
        touched = occ_body > 0
        sub_den[touched] = body_density[touched]
        sub_den[post] = cfg.posterior_density
        sub_hu[touched] = ((1.0 - occ_body) * sub_hu + occ_body * cfg.hu_intercept +
                           cfg.hu_slope * body_density)[touched]
        sub_hu[post] = cfg.hu_intercept + cfg.hu_slope * cfg.posterior_density
        sub_lab[(body & free) | post] = label
        sub_body[body & free] = label
        trab_here = inner & free
        sub_trab[trab_here] = label
        weight = occ_inner.sum()

        record = {"name": v.name, "label": label, "centre_lps_mm": v.centre.tolist(),
                  "superior_axis_lps": v.frame[:, 2].tolist(), "anterior_axis_lps": (-v.frame[:, 1]).tolist(),
                  "body_semi_axes_mm": [v.a, v.b], "body_height_mm": v.h,
                  "heights_mm": v.heights(), "voi": v.voi(), "BV/TV_nominal": v.bvtv,
                  "BMD": float((occ_inner * frac).sum() / weight * cfg.tissue_density) if weight else None,
                  "BV/TV": float((occ_inner * frac).sum() / weight) if weight else None,
                  "trabecular_voxels": int(trab_here.sum()), "voids": void_truth}
        if v.fracture is not None:
            hts = record["heights_mm"]
            loss = {"wedge": 1 - hts["anterior"] / hts["posterior"],
                    "biconcave": 1 - hts["middle"] / hts["posterior"],
                    "crush": v.fracture.height_loss}[v.fracture.kind]
            record["fracture"] = {"type": v.fracture.kind, "height_loss": float(loss),
                                  "grade": genant_grade(loss)}
        else:
            record["fracture"] = {"type": None, "height_loss": 0.0, "grade": 0}
        truth_vertebrae.append(record)

    # ---- imaging: point-spread function and noise
    report(0.7, "imaging: point-spread function and noise")
    sigma_vox = [f / 2.3548 / s for f, s in zip(cfg.psf_fwhm_mm[::-1], ct_voxel[::-1])]
    hu = ndimage.gaussian_filter(hu, sigma_vox, mode="nearest")
    if cfg.noise_hu > 0:
        noise_rng = np.random.default_rng([cfg.seed, 1])
        hu += noise_rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(cfg.noise_hu)
    ct_array = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    # ---- morphometry truth of the fine structure
    if cfg.truth_morphometry:
        for i, (record, v) in enumerate(zip(truth_vertebrae, spine)):
            report(0.75 + 0.25 * i / len(spine), f"truth morphometry {v.name}")
            tau = tiles[v.bvtv][0]
            record["fine_structure"] = tile_morphometry(field_, tau, cfg.fine_voxel_mm)
            record["fine_structure"]["BMD"] = record["fine_structure"]["BV/TV"] * cfg.tissue_density

    geometry = dict(spacing=cfg.spacing_mm, origin=origin)
    ct = Volume.from_geometry(ct_array, modality="CT", units="HU", metadata={"source": "bonekit phantom"}, **geometry)
    ctd = [{"direction": ["L", "P", "S"]}]
    for record in truth_vertebrae:
        idx = np.argwhere(labels == record["label"])
        if idx.size == 0:
            continue
        k, j, i = idx.mean(axis=0)
        record["centroid_ijk"] = [float(i), float(j), float(k)]
        record["centroid_lps_mm"] = ct.index_to_physical([i, j, k]).tolist()
        ctd.append({"label": record["label"], "X": round(float(i), 2), "Y": round(float(j), 2), "Z": round(float(k), 2)})
    truth = {
        "description": "BoneKit synthetic lumbar spine phantom: ground truth",
        "units": {"BMD": "mg HA/cm3", "BV/TV": "1", "Tb.Th": "mm", "Tb.Sp": "mm", "Tb.N": "1/mm",
                  "heights_mm": "mm", "centre_lps_mm": "mm (LPS)"},
        "calibration": {"hu_intercept": cfg.hu_intercept, "hu_slope_per_mg_cm3": cfg.hu_slope,
                        "law": "HU = hu_intercept + hu_slope * BMD", "rods": rods_truth},
        "definitions": {
            "BMD": "mean noise-free mineral density over the trabecular compartment (body minus cortex) on the CT grid",
            "BV/TV": "bone volume fraction (voxel count) of the fine structure",
            "Tb.Th / Tb.Sp": "mean local thickness of bone / marrow (Hildebrand & Ruegsegger; BoneJ discretisation "
                             "without the clean-up step), periodic boundaries",
            "heights_mm": "body heights along the vertebra's own superior axis at its anterior wall, centre and "
                          "posterior wall, mid-sagittal plane",
        },
        "vertebrae": truth_vertebrae,
        "config": _config_dict(cfg),
    }
    report(1.0, "phantom done")
    return SpinePhantom(
        ct=ct,
        labels=Volume.from_geometry(labels, units="label", metadata={"label_names": "VerSe"}, **geometry),
        bodies=Volume.from_geometry(bodies, units="label", **geometry),
        trabecular=Volume.from_geometry(trab, units="label", **geometry),
        density=Volume.from_geometry(density, units="mg HA/cm3", **geometry),
        centroids=ctd, truth=truth, config=cfg)


def repositioned(volume: Volume, angles_deg, shift_mm, label: bool = False) -> Volume:
    """``volume`` as a rescan would see it after the patient moved: rotated about its centre
    (``angles_deg`` about x, y, z) and shifted (``shift_mm``, LPS), on the same grid.

    A CT is moved with a Lanczos windowed-sinc interpolator: it is band-limited by the
    scanner's PSF, and a rescan images the moved object with the same PSF. Linear
    interpolation would blur each scan by an amount that depends on its sub-voxel shift (a
    [1/2, 1/2] filter per axis at half a voxel: 23 % of the phantom's high-frequency energy,
    1 % with Lanczos). A label map (``label=True``) is moved by nearest neighbour.
    """
    import SimpleITK as sitk

    image = volume.to_sitk() if label else volume.with_array(volume.array.astype(np.float32)).to_sitk()
    transform = sitk.Euler3DTransform()
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    transform.SetRotation(*np.radians(np.asarray(angles_deg, dtype=float)))
    transform.SetTranslation([float(v) for v in shift_mm])
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLanczosWindowedSinc
    # Resample pulls each output voxel from the transform of its position: the object's move inverted
    moved = sitk.GetArrayFromImage(sitk.Resample(image, image, transform.GetInverse(), interpolator, 0.0))
    return volume.with_array(moved.astype(volume.array.dtype) if label else moved)


# ----------------------------------------------------------------------------- micro-CT mode
@dataclass
class MicroCTPhantom:
    """A trabecular bone block as a micro-CT would image it, with its truth."""

    image: Volume     # grey levels, uint8 (bone bright), as typical micro-CT exports
    binary: Volume    # the structure itself (uint8 0/1)
    truth: dict


def microct_phantom(voxel_mm: float = 0.03, bvtv: float = 0.15, seed: int = 0, tile_mm: float = 4.8,
                    wavelength_mm: float = 1.6, anisotropy: float = 1.25, blur_voxels: float = 0.7,
                    noise: float = 12.0) -> MicroCTPhantom:
    """A trabecular block (one period of the phantom's structure) at ``voxel_mm``, with known morphometry.

    The truth is measured on exactly the binary structure that is imaged, as a tool sees it
    (non-periodic borders, image border not background, BoneJ discretisation).
    """
    if not 0.005 <= voxel_mm <= 0.1:
        raise BoneKitError("Micro-CT voxel size must be between 0.005 and 0.1 mm.")
    field_ = TrabecularField(tile_mm, wavelength_mm, anisotropy, seed)
    n = int(round(tile_mm / voxel_mm))
    voxel = tile_mm / n
    g = np.abs(field_.sample(n))
    tau = float(np.quantile(g, bvtv))
    bone = g < tau
    th, th_sd = thickness_stats(local_thickness(bone, voxel))
    sp, sp_sd = thickness_stats(local_thickness(~bone, voxel))
    rng = np.random.default_rng([seed, 2])
    grey = np.where(bone, 190.0, 60.0)
    grey = ndimage.gaussian_filter(grey, blur_voxels, mode="nearest") if blur_voxels > 0 else grey
    grey = grey + rng.normal(0.0, noise, grey.shape)
    image = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    truth = {"voxel_mm": voxel, "BV/TV": float(bone.mean()), "Tb.Th": th, "Tb.Th.SD": th_sd, "Tb.Sp": sp,
             "Tb.Sp.SD": sp_sd, "Tb.N": 1.0 / (th + sp), "grey_bone": 190, "grey_marrow": 60,
             "units": {"Tb.Th": "mm", "Tb.Sp": "mm", "Tb.N": "1/mm", "BV/TV": "1"}}
    geometry = dict(spacing=(voxel, voxel, voxel))
    return MicroCTPhantom(Volume.from_geometry(image, units="grey", metadata={"source": "bonekit micro-CT phantom"},
                                               **geometry),
                          Volume.from_geometry(bone.astype(np.uint8), units="label", **geometry), truth)

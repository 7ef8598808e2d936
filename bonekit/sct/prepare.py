"""TomoRay preprocessing of a spine CT (Zanier et al. 2024): the CT the DRRs see and the network's target.

1. resample to ``spacing_mm`` isotropic (linear; the label map by nearest neighbour) on an
   LPS-aligned cube of ``size``^3 voxels centred on the spine (the labels' bounding box), padding
   with air;
2. bone extraction: voxels outside the vertebra labels become air (-1000 HU), so the DRRs still
   see air around the bones and the target holds the bones alone;
3. the target: the HU window (centre 400, width 1300: [-250, 1050] HU) mapped to [0, 1] and
   quantised to ``levels`` grey levels.

The window applies to the target only; the DRRs are made from step 2's HU volume, where
air is air (windowing first would turn the air round the bones into -250 HU, which attenuates
like fat; see ``shared/reference/deep-learning-references.md`` §2.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import BoneKitError
from ..volume import Volume, make_affine

AIR_HU = -1000.0


@dataclass(frozen=True)
class PrepareConfig:
    spacing_mm: float = 1.0
    size: int = 256
    window_center_hu: float = 400.0
    window_width_hu: float = 1300.0
    #: grey levels of the target (0 = keep it continuous)
    levels: int = 100
    extract_bones: bool = True
    #: label values that count as bone; empty = every non-zero label
    labels: tuple[int, ...] = ()

    def __post_init__(self):
        if not 0 < self.spacing_mm <= 5:
            raise BoneKitError(f"Resampling spacing must be in (0, 5] mm, got {self.spacing_mm}.")
        if not 8 <= int(self.size) <= 1024:
            raise BoneKitError(f"The cube size must be 8 to 1024 voxels, got {self.size}.")
        if not self.window_width_hu > 0:
            raise BoneKitError(f"The HU window width must be positive, got {self.window_width_hu}.")
        if self.levels == 1 or self.levels < 0:
            raise BoneKitError(f"Quantise to 2 or more grey levels (0 = continuous), got {self.levels}.")

    @property
    def window(self) -> tuple[float, float]:
        half = self.window_width_hu / 2
        return self.window_center_hu - half, self.window_center_hu + half

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict) -> "PrepareConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise BoneKitError(f"Unknown preprocessing setting(s) {sorted(unknown)}; known: {sorted(known)}.")
        data = dict(data)
        if "labels" in data:
            data["labels"] = tuple(int(v) for v in data["labels"])
        return cls(**data)


def window(hu: np.ndarray, config: PrepareConfig) -> np.ndarray:
    """HU -> [0, 1] within the window, quantised to ``config.levels`` grey levels (float32)."""
    lo, hi = config.window
    x = np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0, 1)
    if config.levels:
        x = np.round(x * (config.levels - 1)) / (config.levels - 1)
    return x.astype(np.float32)


def unwindow(x: np.ndarray, config: PrepareConfig) -> np.ndarray:
    """[0, 1] -> HU within the window (the inverse of :func:`window` up to clipping and quantisation)."""
    lo, hi = config.window
    return (np.asarray(x, np.float32) * (hi - lo) + lo).astype(np.float32)


def bone_mask(labels: Volume, config: PrepareConfig) -> np.ndarray:
    lab = np.asarray(labels.array)
    mask = np.isin(lab, config.labels) if config.labels else lab != 0
    if not mask.any():
        wanted = f"labels {list(config.labels)}" if config.labels else "any non-zero label"
        raise BoneKitError(f"The vertebra label map has no voxels with {wanted}; check the mask file "
                           "(and --labels).")
    return mask


def spine_centre(labels: Volume, config: PrepareConfig = PrepareConfig()) -> np.ndarray:
    """LPS centre (mm) of the physical bounding box of the bone labels' voxel centres."""
    ijk = np.array(np.nonzero(bone_mask(labels, config)))[::-1].T.astype(float)
    pts = labels.index_to_physical(ijk)
    return (pts.min(axis=0) + pts.max(axis=0)) / 2


def cube_affine(centre, spacing_mm: float, size: int) -> np.ndarray:
    """IJK -> LPS of an LPS-aligned cube of ``size``^3 voxels of ``spacing_mm`` centred on ``centre``."""
    origin = np.asarray(centre, float) - (size - 1) / 2 * spacing_mm
    return make_affine([spacing_mm] * 3, origin)


def resample_onto(volume: Volume, affine: np.ndarray, shape, *, labels: bool = False,
                  default: float = AIR_HU) -> Volume:
    """``volume`` on the grid (affine, shape kji): linear for images, nearest for label maps."""
    import SimpleITK as sitk

    ref = sitk.Image([int(n) for n in shape[::-1]], sitk.sitkUInt8)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ref.SetSpacing([float(s) for s in spacing])
    ref.SetOrigin([float(v) for v in affine[:3, 3]])
    ref.SetDirection([float(v) for v in (affine[:3, :3] / spacing).ravel()])
    image = volume.to_sitk()
    if labels:
        out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    else:
        out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear,
                            float(default), sitk.sitkFloat32)
    return Volume.from_sitk(out, modality=volume.modality, units=volume.units)


@dataclass
class PreparedCase:
    ct: Volume            #: HU on the cube; air outside the bones when extracted (what the DRRs see)
    target: Volume        #: [0, 1] windowed, quantised (what the network learns)
    labels: Volume | None
    config: PrepareConfig
    centre: np.ndarray    #: LPS mm
    info: dict = field(default_factory=dict)


def extract_bones(ct: Volume, labels: Volume, config: PrepareConfig = PrepareConfig()) -> Volume:
    """The CT with every voxel outside the bone labels set to air (-1000 HU); ``ct`` is not changed."""
    labels = labels.labels_on(ct)
    return ct.with_array(np.where(bone_mask(labels, config), np.asarray(ct.array, np.float32),
                                  np.float32(AIR_HU)).astype(np.float32))


def prepare_case(ct: Volume, labels: Volume | None = None, config: PrepareConfig = PrepareConfig()) -> PreparedCase:
    """TomoRay preprocessing (module docstring). Without labels: no extraction, centred on the CT."""
    if ct.units not in (None, "HU"):
        raise BoneKitError(f"The CT must be in HU, but its values are in {ct.units}.")
    if config.extract_bones and labels is None:
        raise BoneKitError("Bone extraction needs the vertebra label map (or set extract_bones to false).")
    centre = spine_centre(labels, config) if labels is not None else \
        ct.index_to_physical((np.asarray(ct.size) - 1) / 2)
    n = int(config.size)
    affine = cube_affine(centre, config.spacing_mm, n)
    hu = resample_onto(ct, affine, (n, n, n))
    lab = resample_onto(labels, affine, (n, n, n), labels=True) if labels is not None else None
    if config.extract_bones:
        hu = hu.with_array(np.where(bone_mask(lab, config), hu.array, np.float32(AIR_HU)).astype(np.float32))
    hu.units = "HU"
    target = hu.with_array(window(hu.array, config), units="1")
    info = {}
    if lab is not None:   # how much of the bone fits in the cube (a long spine may not)
        info["bone_kept_fraction"] = float(bone_mask(lab, config).sum() * config.spacing_mm ** 3
                                           / (bone_mask(labels, config).sum() * labels.voxel_volume))
    return PreparedCase(hu, target, lab, config, centre, info)

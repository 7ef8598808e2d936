"""Training cases for the synthetic-CT network: CT + vertebra labels -> (AP DRR, lateral DRR, target CT).

One place for the layout the network sees:

* **CT order** of the target (and of every 3D tensor in :mod:`bonekit.sct.networks`): (D, H, W) =
  (superior -> inferior, anterior -> posterior, patient's right -> left). The prepared cube is
  LPS-aligned, its array (k, j, i) runs (inferior -> superior, A -> P, R -> L), so the network order
  is the array with k reversed (:func:`to_network`, :func:`from_network`).
* **Radiographs**: BoneKit's DRR layout (rows superior -> inferior; AP columns towards the patient's
  left, lateral columns towards posterior), resized to the network's size and normalised to [0, 1]
  between their 0.5th and 99.5th percentiles (:func:`network_image`), the same for DRRs and real films.
* **Geometry**: the detector is sized so that its field at the isocentre equals the prepared cube:
  ``size`` pixels of ``spacing x SID / SAD`` mm (:func:`training_geometry`); the isocentre is the
  cube's centre.

Sources of cases: generated spine phantoms with varied anatomy (:func:`phantom_cases`), and folders
in the VerSe or CTSpine1K layout (:func:`discover_cases`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BoneKitError
from ..volume import Volume
from .drr import DetectorGeometry, compute_drr
from .prepare import PrepareConfig, prepare_case
from .radiograph import normalise

#: input normalisation percentiles (low, high), recorded with every model
INPUT_PERCENTILES = (0.5, 99.5)


def training_geometry(prepare: PrepareConfig, sad: float = 541.0, sid: float = 949.0) -> DetectorGeometry:
    """A detector whose field at the isocentre is exactly the prepared cube (``size`` pixels)."""
    pixel = prepare.spacing_mm * sid / sad
    return DetectorGeometry(sad=sad, sid=sid, rows=prepare.size, columns=prepare.size, pixel=(pixel, pixel))


def to_network(array_kji: np.ndarray) -> np.ndarray:
    """Prepared cube array (k, j, i) -> network CT order (D, H, W): superior first."""
    return np.ascontiguousarray(np.asarray(array_kji)[::-1])


def from_network(dhw: np.ndarray) -> np.ndarray:
    """Network CT order -> array (k, j, i) of an LPS-aligned cube."""
    return np.ascontiguousarray(np.asarray(dhw)[::-1])


def resize(array: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image or a cube to ``size`` per side: area-averaged when shrinking by a
    whole factor, else linear (float32)."""
    from scipy import ndimage

    a = np.asarray(array, np.float32)
    n = a.shape[0]
    if any(s != n for s in a.shape):
        raise BoneKitError(f"Expected a square image or a cube, got shape {a.shape}.")
    if n == size:
        return a.copy()
    if n % size == 0:
        f = n // size
        shape = [x for _ in a.shape for x in (size, f)]
        return a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2))).astype(np.float32)
    # voxel centres map onto voxel centres of the same field (half-voxel aligned)
    scale = n / size
    coords = (np.arange(size) + 0.5) * scale - 0.5
    grids = np.meshgrid(*[coords] * a.ndim, indexing="ij")
    return ndimage.map_coordinates(a, grids, order=1, mode="nearest").astype(np.float32)


def network_image(image: np.ndarray, size: int) -> np.ndarray:
    """A radiograph or DRR in BoneKit's layout -> the network's input: resized, normalised to [0, 1]."""
    return normalise(resize(image, size), *INPUT_PERCENTILES)


@dataclass
class Case:
    """One training or validation case in the network's layout."""

    name: str
    ap: np.ndarray        #: (S, S) in [0, 1]
    lateral: np.ndarray   #: (S, S) in [0, 1]
    ct: np.ndarray        #: (S, S, S) in [0, 1], CT order
    info: dict


def make_case(name: str, ct: Volume, labels: Volume, prepare: PrepareConfig, size: int,
              geometry: DetectorGeometry | None = None) -> Case:
    """Prepare a CT (TomoRay), make its AP and lateral DRRs, and lay everything out for the network."""
    case = prepare_case(ct, labels, prepare)
    geometry = geometry or training_geometry(prepare)
    ap, lat = compute_drr(case.ct, ["ap", "lat"], geometry=geometry, isocenter=case.centre, device="cpu")
    target = resize(to_network(case.target.array), size)
    return Case(name, network_image(ap.image, size), network_image(lat.image, size), target,
                {"centre_lps_mm": [float(v) for v in case.centre], **case.info})


#: vertebra runs the phantom cases draw from (VerSe names)
_LEVELS = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")


def phantom_config(seed: int):
    """A spine phantom with varied anatomy from ``seed``: 3-5 consecutive vertebrae between T10 and L5,
    curvature, bone density, and sometimes a fracture (1 mm voxels; the microstructure is not needed)."""
    from ..phantom import Fracture, PhantomConfig

    rng = np.random.default_rng([seed, 7321])
    n = int(rng.integers(3, 6))
    first = int(rng.integers(0, len(_LEVELS) - n + 1))
    vertebrae = _LEVELS[first:first + n]
    fractures = ()
    if rng.random() < 0.4:
        fractures = (Fracture(str(rng.choice(vertebrae)), str(rng.choice(["wedge", "biconcave", "crush"])),
                              float(rng.uniform(0.2, 0.45))),)
    return PhantomConfig(seed=int(seed), vertebrae=vertebrae, spacing_mm=(1.0, 1.0, 1.0),
                         bvtv=tuple(float(v) for v in rng.uniform(0.06, 0.22, n)),
                         lordosis_mm=float(rng.uniform(-4.0, 16.0)), noise_hu=float(rng.uniform(5, 25)),
                         fractures=fractures, truth_morphometry=False)


def phantom_cases(seeds, prepare: PrepareConfig, size: int, progress=None) -> list[Case]:
    from ..phantom import spine_phantom

    seeds = list(seeds)
    cases = []
    for n, seed in enumerate(seeds):
        cfg = phantom_config(seed)
        ph = spine_phantom(cfg)
        case = make_case(f"phantom-{seed}", ph.ct, ph.labels, prepare, size)
        case.info["vertebrae"] = list(cfg.vertebrae)
        cases.append(case)
        if progress is not None:
            progress((n + 1) / len(seeds), f"Preparing phantom {seed}")
    return cases


#: (CT suffix, label-map suffix) of each supported folder layout
LAYOUTS = {
    # VerSe 2019/2020: sub-verse004_ct.nii.gz + sub-verse004_seg-vert_msk.nii.gz (rawdata/ and derivatives/)
    "verse": ("_ct.nii.gz", "_seg-vert_msk.nii.gz"),
    # CTSpine1K: <case>.nii.gz + <case>_seg.nii.gz (data/ and label folders)
    "ctspine1k": (".nii.gz", "_seg.nii.gz"),
}


def discover_cases(root, layout: str) -> list[dict]:
    """Pair every CT under ``root`` with its vertebra label map by file name; sorted by case name."""
    if layout not in LAYOUTS:
        raise BoneKitError(f"Unknown dataset layout '{layout}': use {' or '.join(LAYOUTS)}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BoneKitError(f"{root}: no such dataset folder.")
    ct_suffix, seg_suffix = LAYOUTS[layout]
    segs = {p.name[: -len(seg_suffix)]: p for p in root.rglob(f"*{seg_suffix}")}
    cases = []
    for p in sorted(root.rglob(f"*{ct_suffix}")):
        if p.name.endswith(seg_suffix) or re.search(r"_seg|_msk|_label", p.name):
            continue
        name = p.name[: -len(ct_suffix)]
        if name in segs:
            cases.append({"name": name, "ct": str(p), "labels": str(segs[name])})
    if not cases:
        raise BoneKitError(f"{root}: no CT with a matching vertebra label map in the {layout} layout "
                           f"(<case>{ct_suffix} with <case>{seg_suffix}).")
    return cases


def file_cases(entries: list[dict], prepare: PrepareConfig, size: int, progress=None) -> list[Case]:
    from ..io import read_volume

    cases = []
    for n, e in enumerate(entries):
        ct = read_volume(e["ct"])
        labels = read_volume(e["labels"])
        cases.append(make_case(e.get("name") or Path(e["ct"]).name, ct, labels, prepare, size))
        if progress is not None:
            progress((n + 1) / len(entries), f"Preparing {cases[-1].name}")
    return cases


def stack(cases: list[Case]) -> dict[str, np.ndarray]:
    if not cases:
        return {"ap": np.zeros((0, 1, 1), np.float32), "lateral": np.zeros((0, 1, 1), np.float32),
                "ct": np.zeros((0, 1, 1, 1), np.float32), "names": np.array([], str)}
    return {"ap": np.stack([c.ap for c in cases]), "lateral": np.stack([c.lateral for c in cases]),
            "ct": np.stack([c.ct for c in cases]), "names": np.array([c.name for c in cases])}

"""Synthetic CT from an AP and a lateral view: from DRRs of a CT, or from real radiographs.

The output is an LPS-aligned cube of the model's size, ``prepare.size x spacing / size`` mm voxels,
in HU within the training window (TomoRay: -250 ... 1050 HU; bones only, air is -250 HU), centred on
the isocentre: the CT's spine centre for DRR input, the origin (0, 0, 0) for radiographs, whose
position in the patient is unknown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BoneKitError
from ..progress import ProgressCallback
from ..volume import Volume
from .data import from_network, resize, to_network
from .drr import compute_drr
from .prepare import cube_affine, prepare_case, unwindow
from .radiograph import Radiograph, normalise, resample_to_detector


@dataclass
class SCTResult:
    volume: Volume                   #: HU, LPS-aligned cube
    normalized: np.ndarray           #: (S, S, S) in [0, 1], network CT order
    inputs: tuple[np.ndarray, np.ndarray]   #: the network's AP and lateral inputs, (S, S) in [0, 1]
    device: str
    seconds: float
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"device": self.device, "seconds": round(self.seconds, 3), "size": list(self.volume.size),
                "spacing_mm": [float(v) for v in self.volume.spacing], **self.info}


def _check_pair(ap, lateral) -> tuple[np.ndarray, np.ndarray]:
    if ap is None or lateral is None:
        missing = "AP" if ap is None else "lateral"
        raise BoneKitError(f"The {missing} view is missing: a synthetic CT needs both an AP (or PA) and a "
                           "lateral view.")
    ap, lateral = np.asarray(ap, np.float32), np.asarray(lateral, np.float32)
    for name, img in (("AP", ap), ("lateral", lateral)):
        if img.ndim != 2:
            raise BoneKitError(f"The {name} view must be one 2D image, got shape {img.shape}.")
        if img.shape[0] != img.shape[1]:
            raise BoneKitError(f"The {name} view must be square in the model's detector layout, got "
                               f"{img.shape[0]} x {img.shape[1]}; resample it with resample_to_detector.")
        if not np.all(np.isfinite(img)):
            raise BoneKitError(f"The {name} view holds NaN or infinite values.")
    if ap.shape != lateral.shape:
        raise BoneKitError(f"The AP ({ap.shape[0]} x {ap.shape[1]}) and lateral ({lateral.shape[0]} x "
                           f"{lateral.shape[1]}) views must have the same size.")
    return ap, lateral


def synthesize(ap, lateral, model, *, centre=(0.0, 0.0, 0.0), device: str = "auto",
               progress: ProgressCallback | None = None) -> SCTResult:
    """Run the generator on two views already in the model's detector layout (square, same size).

    ``model`` is ``(generator, SCTModelInfo)`` as :func:`bonekit.sct.model.load_model` returns it.
    """
    import torch

    from ..accel import is_out_of_memory, resolve_device

    G, info = model
    ap, lateral = _check_pair(ap, lateral)
    size = info.generator.size
    low, high = info.input_percentiles
    x = [normalise(resize(img, size), low, high) for img in (ap, lateral)]
    dev = resolve_device(device)
    notes = []
    start = time.perf_counter()
    if progress is not None:
        progress(0.1, "Running the network")

    def run(d):
        G.to(d).eval()
        with torch.inference_mode():
            t = [torch.from_numpy(v)[None, None].to(d) for v in x]
            out = G(*t)
            out = out[0] if isinstance(out, tuple) else out
            return out[0, 0].float().clamp(0, 1).cpu().numpy()

    try:
        ct01 = run(dev)
    except RuntimeError as exc:
        if dev == "cpu" or not is_out_of_memory(exc):
            raise
        notes.append(f"out of GPU memory on {dev}: ran on the CPU instead")
        dev = "cpu"
        torch.cuda.empty_cache()
        ct01 = run(dev)
    seconds = time.perf_counter() - start
    hu = unwindow(from_network(ct01), info.prepare)
    affine = cube_affine(centre, info.voxel_mm, size)
    lo, hi = info.prepare.window
    volume = Volume(hu, affine, modality="CT", units="HU",
                    metadata={"synthetic_ct": {"window_hu": [lo, hi], "model": info.card.get("name"),
                                               "note": "synthetic CT from two projections; research use only"}})
    if progress is not None:
        progress(1.0, "Done")
    return SCTResult(volume, ct01, (x[0], x[1]), dev, seconds, {"fallbacks": notes})


def from_ct(ct: Volume, labels: Volume, model, *, device: str = "auto",
            progress: ProgressCallback | None = None) -> tuple[SCTResult, np.ndarray]:
    """DRRs of a CT (bone-extracted with its vertebra labels, as in training) -> synthetic CT.

    Returns the result and the truth: the prepared CT in the network's order and size, in [0, 1].
    """
    G, info = model
    case = prepare_case(ct, labels, info.prepare)
    if progress is not None:
        progress(0.05, "Making the DRRs")
    ap, lat = compute_drr(case.ct, ["ap", "lat"], geometry=info.geometry, isocenter=case.centre, device="cpu")
    result = synthesize(ap.image, lat.image, model, centre=case.centre, device=device, progress=progress)
    truth = resize(to_network(case.target.array), info.generator.size)     # the prepared, windowed target
    result.info["bone_kept_fraction"] = case.info.get("bone_kept_fraction")
    return result, truth


AP_VIEWS = ("ap", "pa")
LATERAL_VIEWS = ("lat", "rlat")


def from_radiographs(ap: Radiograph, lateral: Radiograph, model, *, magnification: float | None = None,
                     device: str = "auto", progress: ProgressCallback | None = None) -> SCTResult:
    """Two real radiographs (:func:`bonekit.sct.radiograph.read_radiograph`) -> synthetic CT.

    Each is rescaled so that its pixels at the isocentre match the model's training detector, centred
    on the image centre (:func:`~bonekit.sct.radiograph.resample_to_detector`).
    """
    if ap is None or lateral is None:
        _check_pair(ap, lateral)
    if ap.view is not None and ap.view not in AP_VIEWS:
        raise BoneKitError(f"The radiograph given as AP is a {ap.view} view; swap the two files.")
    if lateral.view is not None and lateral.view not in LATERAL_VIEWS:
        raise BoneKitError(f"The radiograph given as lateral is an {lateral.view} view; swap the two files.")
    _, info = model
    a = resample_to_detector(ap, info.geometry, magnification=magnification)
    b = resample_to_detector(lateral, info.geometry, magnification=magnification)
    result = synthesize(a.image, b.image, model, device=device, progress=progress)
    result.info["magnification"] = {"ap": [a.magnification, a.magnification_source],
                                    "lateral": [b.magnification, b.magnification_source]}
    return result

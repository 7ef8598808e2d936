"""Vertebra segmentation by GrowCut, from explicit seeds or from one point per vertebra.

GrowCut here is FastGrowCut (Zhu et al. 2014), the algorithm behind Slicer's Segment Editor
"Grow from seeds": every unlabelled voxel takes the label of the seed it is joined to by the
cheapest path, the cost of a step being the intensity difference across it. The
implementation is pluggable (:data:`GrowCutFunction`): the core uses ``itk.FastGrowCut``
(pip ``itk-growcut``), the Slicer module passes ``vtkImageGrowCutSegment``; both give
identical labels (``benchmarks/growcut_backends.py``). Everything around it is here, once:

1. crop a box around the points (the whole spine segment plus margins),
2. smooth the intensity (Gaussian, default sigma 0.5 mm) so that noise does not add path cost,
3. derive seeds: a ball around each point labels its vertebra; background seeds are
   soft tissue at least ``background_distance_mm`` from bone that is open (no bone within
   ``enclosure_mm``) in at least two of 26 directions -- that is everything but the marrow
   inside a vertebral body, so discs, the spinal canal, muscle and fat become background;
   bone far from every point (ribs' far ends, pelvis) and virtual neighbours beyond the first
   and last point and in gaps of the VerSe numbering become background too, and so does the
   lumen of contrast-filled vessels (as bright as bone, but smooth),
4. grow, then keep for each vertebra the connected part that holds its point and fill holes,
5. paste the labels (VerSe ids) back into an image on the CT grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from .errors import BoneKitError
from .points import VERSE_NAMES, Points
from .progress import ProgressCallback
from .volume import Volume

#: growcut(intensity float32 (k,j,i), seeds uint8 (0 = unlabelled), spacing (i,j,k) mm,
#:         exclude uint8 or None (non-zero voxels take no part and come out 0)) -> labels uint8
GrowCutFunction = Callable[[np.ndarray, np.ndarray, tuple, "np.ndarray | None"], np.ndarray]


@dataclass
class SegmentationParameters:
    """Parameters of point-based vertebra segmentation (defaults used for every reported figure)."""

    #: HU above which (after smoothing) a voxel is bone for seed placement
    bone_hu: float = 150.0
    #: HU above which (after smoothing) bone near the points seeds the spine: high enough that
    #: partial-volume edge voxels are left to GrowCut
    seed_hu: float = 400.0
    #: bone (above ``bone_hu``) deeper than this inside the bone threshold seeds the spine (mm; 0 = off)
    deep_bone_mm: float = 1.0
    #: radius of the seed ball around each point (mm)
    seed_radius_mm: float = 4.0
    #: second pass: each vertebra's seeds fill the spine within this radius of its point (its
    #: pedicles: their path from the body crosses the posterior cortex, from the level above a joint) ...
    core_radius_mm: float = 22.0
    #: ... and stop this far short of the mid-plane to each neighbouring point (mm)
    core_margin_mm: float = 3.0
    #: background seed regions smaller than this are dropped (marrow seen through cortical gaps)
    min_background_mm3: float = 1000.0
    #: background seeds lie at least this far from bone (mm)
    background_distance_mm: float = 0.5
    #: a direction is open when no bone lies within this distance along it (mm)
    enclosure_mm: float = 30.0
    #: contrast-filled vessels: between ``vessel_hu`` (as bright as bone) and ``vessel_max_hu``
    #: (darker than compact bone), yet smoother than bone (local SD below ``vessel_sd_hu``, 3x3
    #: in-plane) over a disc of ``vessel_radius_mm``, are background (``vessel_sd_hu`` 0 = off)
    vessel_hu: float = 250.0
    vessel_max_hu: float = 600.0
    vessel_sd_hu: float = 20.0
    vessel_radius_mm: float = 1.5
    #: bone farther than this from the line through the points is background (mm)
    far_bone_mm: float = 75.0
    #: ... or farther sideways than this (ribs), or farther in front of the points (vessels) (mm)
    lateral_mm: float = 45.0
    anterior_mm: float = 30.0
    #: crop margin around the points: across the spine and along it (mm)
    margin_mm: tuple[float, float] = (85.0, 45.0)
    #: Gaussian smoothing of the intensity before growing (mm; 0 = none)
    smoothing_mm: float = 0.0
    #: FastGrowCut distance penalty (Slicer's "Seed locality"; 0 = none, as Slicer's default)
    distance_penalty: float = 0.0


def itk_growcut(intensity: np.ndarray, seeds: np.ndarray, spacing, exclude: np.ndarray | None = None,
                distance_penalty: float = 0.0) -> np.ndarray:
    """FastGrowCut from pip ``itk-growcut`` (``itk.FastGrowCut``); ``exclude`` is its mask image."""
    try:
        import itk
    except ImportError:
        raise BoneKitError("GrowCut needs the 'itk-growcut' package: pip install itk-growcut") from None
    image = itk.image_from_array(np.ascontiguousarray(intensity, dtype=np.float32))
    seed_image = itk.image_from_array(np.ascontiguousarray(seeds, dtype=np.uint8))
    for im in (image, seed_image):
        im.SetSpacing([float(s) for s in spacing])
    gc = itk.FastGrowCut[type(image), type(seed_image)].New()
    gc.SetInput(image)
    gc.SetSeedImage(seed_image)
    gc.SetDistancePenalty(float(distance_penalty))
    if exclude is not None:
        mask = itk.image_from_array(np.ascontiguousarray(exclude, dtype=np.uint8))
        mask.SetSpacing([float(s) for s in spacing])
        gc.SetMaskImage(mask)
    gc.Update()
    return np.array(itk.array_view_from_image(gc.GetOutput()), dtype=np.uint8)


def _free_direction_count(bone: np.ndarray, spacing_kji: np.ndarray, reach_mm: float) -> np.ndarray:
    """For each voxel, the number of the 26 grid directions with no bone within ``reach_mm``."""
    from ._kernels import free_direction_count
    return free_direction_count(np.ascontiguousarray(bone, dtype=np.uint8),
                                np.asarray(spacing_kji, dtype=np.float64), float(reach_mm), in_plane=True)


def _ball(shape, centre_kji, radius_mm, spacing_kji) -> tuple[tuple[slice, ...], np.ndarray]:
    """Slices of a box around a ball and the ball's mask inside it (clipped to the image)."""
    r = np.ceil(radius_mm / spacing_kji).astype(int)
    c = np.rint(centre_kji).astype(int)
    lo = np.maximum(c - r, 0)
    hi = np.minimum(c + r + 1, shape)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    d2 = sum(((g - cc) * s) ** 2 for g, cc, s in zip(grids, centre_kji, spacing_kji))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), d2 <= radius_mm ** 2


def _spine_offsets(shape, spacing_kji, nodes_kji: np.ndarray, direction_kji: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distance (mm) of every voxel to the polyline through ``nodes_kji`` (a point if one node),
    and its offset from the nearest polyline point towards the patient's left (LPS x) and
    anterior (-LPS y). ``direction_kji``: LPS unit vectors of the k, j, i axes as columns."""
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1).T * spacing_kji.astype(np.float32)
    nodes = nodes_kji * spacing_kji
    best = np.full(grid.shape[0], np.inf, dtype=np.float32)
    offset = np.zeros_like(grid)
    segments = list(zip(nodes[:-1], nodes[1:])) or [(nodes[0], nodes[0])]
    for a, b in segments:
        ab = b - a
        t = np.clip((grid - a) @ ab / max(float(ab @ ab), 1e-12), 0, 1) if ab.any() else np.zeros(len(grid))
        rel = grid - (a + t[:, None] * ab).astype(np.float32)
        d = np.linalg.norm(rel, axis=1)
        closer = d < best
        best[closer] = d[closer]
        offset[closer] = rel[closer]
    lps = offset @ np.asarray(direction_kji, dtype=np.float32).T
    return best.reshape(shape), lps[:, 0].reshape(shape), (-lps[:, 1]).reshape(shape)


def _check_points(ct: Volume, points: Points) -> dict[int, np.ndarray]:
    if not points:
        raise BoneKitError("No vertebra points given; place one point inside each vertebral body.")
    ijk = {}
    for vid, lps in sorted(points.items()):
        idx = ct.physical_to_index(lps)
        if not ct.contains_index(idx):
            raise BoneKitError(f"The point for {VERSE_NAMES.get(vid, vid)} at LPS {np.round(lps, 1).tolist()} mm "
                               f"lies outside the image; check the point file belongs to this scan "
                               f"(CSV points are LPS, not RAS).")
        ijk[vid] = idx
    return ijk


def _same_bone_between(image: np.ndarray, pa: np.ndarray, pb: np.ndarray, spacing_kji: np.ndarray,
                       contrast_hu: float = 40.0) -> bool:
    """True when the straight line between two points (k, j, i) crosses neither an endplate (a
    peak) nor a disc (a dip): its intensity, smoothed by 1 mm, stays within ``contrast_hu`` of
    the level at its ends. Adjacent vertebrae measured 64-346 HU; two points in one body 5-8 HU."""
    lo = np.maximum(np.floor(np.minimum(pa, pb) - 4.0 / spacing_kji).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(pa, pb) + 4.0 / spacing_kji).astype(int) + 1, image.shape)
    box = ndimage.gaussian_filter(image[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32),
                                  1.0 / spacing_kji, mode="nearest")
    n = int(np.linalg.norm((pb - pa) * spacing_kji) / 0.25) + 2
    samples = (pa - lo)[None, :] + np.linspace(0, 1, n)[:, None] * (pb - pa)[None, :]
    profile = ndimage.map_coordinates(box, samples.T, order=1, mode="nearest")
    end = max(1, n // 5)
    base = float(np.median(np.r_[profile[:end], profile[-end:]]))
    middle = profile[end:-end]
    return bool(middle.size) and middle.max() - base < contrast_hu and base - middle.min() < contrast_hu


def _check_plausible(ct: Volume, smooth: np.ndarray, ijk_kji: dict[int, np.ndarray], bone_hu: float,
                     origin_kji: np.ndarray) -> None:
    """Refuse points that cannot be right: two in one vertebra (closer than 10 mm, or only marrow
    between them), none near bone."""
    sp = ct.spacing_kji
    ids = sorted(ijk_kji)
    for a, b in zip(ids[:-1], ids[1:]):
        pa, pb = ijk_kji[a], ijk_kji[b]
        dist = float(np.linalg.norm((pa - pb) * sp))
        if dist < 10.0:
            raise BoneKitError(f"The points for {VERSE_NAMES[a]} and {VERSE_NAMES[b]} are only {dist:.1f} mm apart: "
                               f"two points in one vertebra? Give one point per vertebra.")
        if _same_bone_between(smooth, pa - origin_kji, pb - origin_kji, sp):
            raise BoneKitError(f"Between the points for {VERSE_NAMES[a]} and {VERSE_NAMES[b]} there is no endplate or "
                               f"disc, only marrow: two points in one vertebra? Give one point per vertebra.")
    for vid, p in ijk_kji.items():  # some bone must lie near each point
        box, ball = _ball(smooth.shape, p - origin_kji, 15.0, sp)
        if not (smooth[box][ball] > bone_hu).any():
            raise BoneKitError(f"No bone (> {bone_hu:g} HU) within 15 mm of the point for {VERSE_NAMES[vid]}: "
                               f"place it inside the vertebral body (is the image in HU?).")


def _virtual_neighbours(nodes: np.ndarray, ids: list[int], spacing_kji: np.ndarray) -> list[np.ndarray]:
    """Where the unlisted vertebrae lie: one level beyond the first and last point and in numbering gaps."""
    if len(ids) >= 2:
        step_first = (nodes[1] - nodes[0]) / (ids[1] - ids[0])
        step_last = (nodes[-1] - nodes[-2]) / (ids[-1] - ids[-2])
    else:  # one point: a level is about 30 mm along the image axis
        step_first = step_last = np.array([30.0, 0.0, 0.0]) / spacing_kji
    virtual = [nodes[0] - step_first, nodes[-1] + step_last]
    for (va, pa), (vb, pb) in zip(zip(ids[:-1], nodes[:-1]), zip(ids[1:], nodes[1:])):
        virtual += [pa + (pb - pa) * m / (vb - va) for m in range(1, vb - va)]
    return virtual


def spine_seeds(intensity: np.ndarray, spacing_kji: np.ndarray, points_kji: dict[int, np.ndarray],
                params: SegmentationParameters, direction_kji: np.ndarray | None = None) -> np.ndarray:
    """First pass seeds on a (cropped, smoothed) CT: 1 = spine bone, 2 = everything else.

    Spine: bone (above ``bone_hu``) within ``far_bone_mm`` of the line through the points, and a
    ball around each point (marrow can be darker than the bone threshold). Background: soft
    tissue at least ``background_distance_mm`` from bone and open (no bone within
    ``enclosure_mm``) in two or more of 26 directions -- discs, the spinal canal, muscle, fat --
    and bone farther from the line.
    """
    shape = intensity.shape
    direction_kji = np.eye(3)[:, ::-1] if direction_kji is None else direction_kji
    lumen = _vessel_lumen(intensity, spacing_kji, params)
    # a vessel's wall (partial volume between lumen and fat) is as bright as bone: no spine seed
    # within 2 mm of a lumen, and the lumen is not bone for the depth test below
    near_lumen = ndimage.distance_transform_edt(~lumen, sampling=spacing_kji) <= 2.0 if lumen.any() else lumen
    bone = (intensity > params.bone_hu) & ~lumen
    seeds = np.zeros(shape, dtype=np.uint8)
    dist_bone = ndimage.distance_transform_edt(~bone, sampling=spacing_kji)
    free = _free_direction_count(bone, spacing_kji, params.enclosure_mm)
    open_tissue = (dist_bone >= params.background_distance_mm) & (free >= 2)
    # marrow seen through gaps of a thin cortex forms small islands; real background is large
    lab, n = ndimage.label(open_tissue)
    if n:
        sizes = np.bincount(lab.ravel()) * float(np.prod(spacing_kji))
        sizes[0] = 0
        open_tissue = (sizes >= params.min_background_mm3)[lab]
    seeds[open_tissue] = 2
    ids = sorted(points_kji)
    nodes = np.array([points_kji[v] for v in ids])
    dist, lateral, anterior = _spine_offsets(shape, spacing_kji, nodes, direction_kji)
    # vertebrae reach ~45 mm sideways (transverse processes) and lie behind the body's front:
    # ribs beyond, the aorta and other contrast-filled vessels in front are not spine
    near = (dist <= params.far_bone_mm) & (np.abs(lateral) <= params.lateral_mm) & (anterior <= params.anterior_mm)
    seeds[bone & ~near] = 2
    # certain bone: bright, and not on the outer slope of a brighter neighbour (a blurred thin
    # cortex spills half-bright voxels outside the bone; GrowCut decides those)
    peak = ndimage.maximum_filter(intensity, size=3)
    certain = (intensity > params.seed_hu) & (intensity >= 0.5 * peak)
    # and the inside of thicker bone: more than ``deep_bone_mm`` inside the bone threshold
    # (cancellous posterior elements, dense trabecular bone)
    if params.deep_bone_mm > 0:
        certain |= ndimage.distance_transform_edt(bone, sampling=spacing_kji) > params.deep_bone_mm
    seeds[certain & near & ~near_lumen] = 1
    seeds[lumen] = 2
    for vid in ids:
        box, ball = _ball(shape, points_kji[vid], params.seed_radius_mm, spacing_kji)
        seeds[box][ball] = 1
    return seeds


def _vessel_lumen(intensity: np.ndarray, spacing_kji: np.ndarray, params: SegmentationParameters) -> np.ndarray:
    """Contrast-filled lumen: as bright as bone but homogeneous (bone is trabecular, or a thin
    cortex with steep edges), kept only where a disc of ``vessel_radius_mm`` fits in the plane."""
    if params.vessel_sd_hu <= 0:
        return np.zeros(intensity.shape, bool)
    window = (1, 3, 3)
    mean = ndimage.uniform_filter(intensity, window)
    var = ndimage.uniform_filter(intensity * intensity, window) - mean * mean
    lumen = (mean > params.vessel_hu) & (mean < params.vessel_max_hu) & (var < params.vessel_sd_hu ** 2)
    r = np.maximum(np.rint(params.vessel_radius_mm / np.asarray(spacing_kji[1:])), 1).astype(int)
    yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1]
    disc = ((yy * spacing_kji[1]) ** 2 + (xx * spacing_kji[2]) ** 2 <= max(params.vessel_radius_mm, float(min(spacing_kji[1:]))) ** 2)
    return ndimage.binary_opening(lumen, structure=disc[None])


def _body_core(shape, spacing_kji, centre, others, radius_mm, margin_mm) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within ``radius_mm`` of ``centre`` and at least ``margin_mm`` on its side of the
    mid-plane to every point in ``others`` (the neighbouring vertebrae, real or virtual)."""
    box, ball = _ball(shape, centre, radius_mm, spacing_kji)
    grids = np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij")
    xyz = np.stack(grids, axis=-1) * spacing_kji  # mm, k j i
    c = np.asarray(centre) * spacing_kji
    for other in others:
        o = np.asarray(other) * spacing_kji
        normal = (o - c) / max(np.linalg.norm(o - c), 1e-9)
        ball &= (xyz - (c + o) / 2) @ normal <= -margin_mm
    return box, ball


def vertebra_seeds(spine: np.ndarray, spacing_kji: np.ndarray, points_kji: dict[int, np.ndarray],
                   params: SegmentationParameters, labels: dict[int, int]) -> np.ndarray:
    """Second pass seeds (grown inside the spine only).

    Each vertebra is seeded with the spine voxels of its core: within ``core_radius_mm`` of
    its point and ``core_margin_mm`` short of the mid-planes to its neighbours, so that a thin or
    bridged disc cannot let one vertebra flood the next. Unlisted neighbours (one level beyond
    the ends, gaps in the numbering) are seeded the same way with ``max + 1`` and dropped.
    """
    ids = sorted(points_kji)
    nodes = np.array([points_kji[v] for v in ids])
    virtual = _virtual_neighbours(nodes, ids, spacing_kji)
    everyone = [(labels[v], points_kji[v]) for v in ids] + [(max(labels.values()) + 1, c) for c in virtual]
    seeds = np.zeros(spine.shape, np.uint8)
    for n, (value, centre) in enumerate(everyone):
        others = [c for m, (_, c) in enumerate(everyone) if m != n]
        box, core = _body_core(spine.shape, spacing_kji, centre, others, params.core_radius_mm,
                               params.core_margin_mm)
        if core.size:
            target = seeds[box]
            target[core & spine[box] & (target == 0)] = value
    for vid in ids:  # the point's own ball always belongs to it
        box, ball = _ball(spine.shape, points_kji[vid], params.seed_radius_mm, spacing_kji)
        seeds[box][ball] = labels[vid]
    return seeds


def _crop_box(ct: Volume, ijk: dict[int, np.ndarray], params: SegmentationParameters) -> tuple[slice, ...]:
    across, along = params.margin_mm
    pts = np.array(list(ijk.values()))  # i, j, k
    sp = ct.spacing
    # which voxel axis runs along the spine: the one the points spread over most (k for axial scans)
    spread = np.ptp(pts * sp, axis=0) if len(pts) > 1 else np.abs(ct.direction[2])
    along_axis = int(np.argmax(spread))
    margin = np.where(np.arange(3) == along_axis, along, across) / sp
    lo = np.maximum(np.floor(pts.min(axis=0) - margin).astype(int), 0)
    hi = np.minimum(np.ceil(pts.max(axis=0) + margin).astype(int) + 1, ct.size)
    return tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))


def segment_vertebrae(ct: Volume, points: Points | None = None, *, seeds: Volume | None = None,
                      params: SegmentationParameters | None = None, growcut: GrowCutFunction | None = None,
                      progress: ProgressCallback | None = None) -> Volume:
    """Label map of vertebrae (VerSe ids, uint8) on the CT grid, from points or from a seed label map.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    points : {VerSe id: LPS mm}, optional
        One point inside each vertebral body (see :mod:`bonekit.points`).
    seeds : Volume, optional
        Explicit seeds on the CT grid instead of points: VerSe ids (1-28) seed vertebrae, any
        other non-zero value seeds background; 0 is unlabelled. Segmented without cropping.
    growcut : callable, optional
        GrowCut implementation (default :func:`itk_growcut`).
    """
    params = params or SegmentationParameters()
    report = progress or (lambda f, m: None)
    grow = growcut or (lambda im, sd, sp, ex=None: itk_growcut(im, sd, sp, ex, params.distance_penalty))
    if (points is None) == (seeds is None):
        raise BoneKitError("Give either one point per vertebra or a seed label map, not both or neither.")
    if ct.array.dtype.kind not in "iuf":
        raise BoneKitError(f"The CT must hold numbers (HU), not {ct.array.dtype}.")

    if seeds is not None:
        ct.require_same_grid(seeds, "seed label map")
        seed_array = np.asarray(seeds.array)
        values = [int(v) for v in np.unique(seed_array) if v != 0]
        vertebra_ids = [v for v in values if v in VERSE_NAMES]
        if not vertebra_ids:
            raise BoneKitError("The seed label map has no vertebra seeds (VerSe ids 1-25, 28).")
        if len(values) == len(vertebra_ids):
            raise BoneKitError("The seed label map has no background seeds: add seeds with a value that is not "
                               "a VerSe id (e.g. 100) on soft tissue, discs and other bones.")
        mapping = {v: n + 1 for n, v in enumerate(values)}
        compact = np.zeros(seed_array.shape, np.uint8)
        for v, n in mapping.items():
            compact[seed_array == v] = n
        report(0.2, "growing from seeds")
        intensity = _smooth(ct.array, ct.spacing_kji, params.smoothing_mm)
        grown = grow(intensity, compact, tuple(ct.spacing), None)
        out = np.zeros(ct.array.shape, np.uint8)
        for v in vertebra_ids:
            out[_clean(grown == mapping[v], seed_array == v)] = v
        report(1.0, "segmentation done")
        return ct.with_array(out, units="label", modality="SEG", metadata={"label_names": "VerSe"})

    ijk = _check_points(ct, points)
    box = _crop_box(ct, ijk, params)
    origin_kji = np.array([s.start for s in box], dtype=float)
    report(0.05, "smoothing")
    sub = _smooth(ct.array[box], ct.spacing_kji, params.smoothing_mm)
    pts_kji = {v: p[::-1] - origin_kji for v, p in ijk.items()}
    _check_plausible(ct, sub, {v: p[::-1] for v, p in ijk.items()}, params.bone_hu, origin_kji)
    labels = {vid: n + 1 for n, vid in enumerate(sorted(pts_kji))}
    report(0.15, "placing seeds")
    first = spine_seeds(sub, ct.spacing_kji, pts_kji, params, ct.direction[:, ::-1])
    report(0.3, "growing the spine from seeds")
    spine = grow(sub, first, tuple(ct.spacing), None) == 1
    report(0.6, "splitting the spine into vertebrae")
    seed_array = vertebra_seeds(spine, ct.spacing_kji, pts_kji, params, labels)
    grown = grow(sub, seed_array, tuple(ct.spacing), (~spine).astype(np.uint8))
    report(0.85, "cleaning up")
    out = np.zeros(ct.array.shape, np.uint8)
    out_box = out[box]
    for vid, value in labels.items():
        part = _clean(grown == value, seed_array == value)
        if not part.any():
            raise BoneKitError(f"Nothing grew from the point for {VERSE_NAMES[vid]}: is it inside the vertebral body?")
        out_box[part] = vid
    report(1.0, "segmentation done")
    return ct.with_array(out, units="label", modality="SEG", metadata={"label_names": "VerSe"})


def _smooth(array: np.ndarray, spacing_kji: np.ndarray, sigma_mm: float) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    if sigma_mm <= 0:
        return a.copy()
    return ndimage.gaussian_filter(a, sigma=sigma_mm / np.asarray(spacing_kji), mode="nearest")


def _clean(region: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected parts of ``region`` that touch the seed, with enclosed holes filled."""
    lab, n = ndimage.label(region)
    if n == 0:
        return region
    keep = np.unique(lab[seed & region])
    keep = keep[keep > 0]
    if keep.size == 0:
        return np.zeros_like(region)
    return ndimage.binary_fill_holes(np.isin(lab, keep))

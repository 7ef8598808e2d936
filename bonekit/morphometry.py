"""Trabecular bone morphometry with BoneJ's conventions, inside a mask (a VOI) or a whole image.

Pipeline: optional Gaussian blur (sigma in mm) -> binarisation (:mod:`bonekit.threshold`:
ImageJ "Default" IsoData, IsoData, Otsu or a fixed value; or an image that is already binary)
-> metrics over the mask:

============ ============ ==========================================================================
key          unit         definition
============ ============ ==========================================================================
BV/TV        1            bone voxels / mask voxels (BoneJ ElementFraction: a voxel count)
BA/TA        1            mean over the slices k that hold mask voxels of bone / mask voxels in the slice
                          (slice-wise bone area fraction, David et al.); per slice in BA/TA.slices
Tb.Th        mm           mean local thickness of the bone (Hildebrand & Rüegsegger; BoneJ Thickness:
                          ridge balls, clean-up, mask artefacts), :mod:`bonekit.thickness`
Tb.Th.SD     mm           its standard deviation over the bone voxels
Tb.Sp        mm           mean local thickness of the marrow (BoneJ Thickness, "inverse")
Tb.Sp.SD     mm           its standard deviation over the marrow voxels
Tb.N         1/mm         1 / (Tb.Th + Tb.Sp) (BoneJ has no Tb.N in Thickness; this is the usual pairing)
BS/BV        1/mm         bone surface (marching cubes, vertices at edge midpoints as ImageJ-Ops) / BV
Conn.D       1/mm^3       (1 - (chi + delta chi)) / TV (Odgaard & Gundersen; BoneJ Connectivity),
                          :mod:`bonekit.connectivity`
SMI          1            structure model index 6 BV (dBS/dr) / BS^2 (Hildebrand & Rüegsegger): plates 0,
                          rods 3, spheres 4; on a surface smoothed by one voxel (not BoneJ's mesh)
DA           1            degree of anisotropy 1 - lambda_min / lambda_max of the mean-intercept-length
                          ellipsoid (BoneJ2 Anisotropy): 0 isotropic .. 1, :mod:`bonekit.anisotropy`
threshold    image units  the level used: bone is ``value > threshold``
ITK          (dict)       with ``itk=True``: ITKBoneMorphometry's plate-model values, for comparison
                          with studies that used it (:func:`itk_plate_model`)
============ ============ ==========================================================================

Inside a mask, voxels outside it are neither bone nor marrow -- as the border of a cropped image
is to BoneJ -- so a box mask gives exactly BoneJ's values on the cropped box; the bone surface
counts only the triangles inside the mask (the cut faces of the VOI are not bone surface).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anisotropy import degree_of_anisotropy
from .connectivity import connectivity
from .errors import BoneKitError
from .progress import ProgressCallback
from .results import Result, quantity
from .thickness import local_thickness, thickness_stats
from .threshold import threshold_image
from .volume import Volume


@dataclass
class MorphometryResult(Result):
    BV_TV: float = quantity("1", "bone volume fraction: bone voxels / mask voxels", name="BV/TV")
    BA_TA: float = quantity("1", "slice-wise bone area fraction: mean over the slices k holding mask voxels of "
                            "bone / mask voxels in the slice (David et al.)", name="BA/TA")
    Tb_Th: float = quantity("mm", "trabecular thickness: mean local thickness of bone (BoneJ)", name="Tb.Th")
    Tb_Th_SD: float = quantity("mm", "standard deviation of the local thickness of bone", name="Tb.Th.SD")
    Tb_Sp: float = quantity("mm", "trabecular separation: mean local thickness of marrow (BoneJ)", name="Tb.Sp")
    Tb_Sp_SD: float = quantity("mm", "standard deviation of the local thickness of marrow", name="Tb.Sp.SD")
    Tb_N: float = quantity("1/mm", "trabecular number: 1 / (Tb.Th + Tb.Sp)", name="Tb.N")
    BS_BV: float = quantity("1/mm", "bone surface (marching cubes) / bone volume", name="BS/BV")
    Conn_D: float = quantity("1/mm3", "connectivity density: (1 - corrected Euler characteristic) / TV",
                             name="Conn.D")
    DA: float | None = quantity("1", "degree of anisotropy 1 - lambda_min/lambda_max of the mean-intercept-length "
                                "ellipsoid (BoneJ2): 0 isotropic .. 1 (null if the MIL cloud fits no ellipsoid)")
    SMI: float | None = quantity("1", "structure model index 6 BV (dBS/dr) / BS^2: plates 0, rods 3, spheres 4 "
                                 "(surface smoothed by one voxel)")
    threshold: float | None = quantity("image units", "binarisation level: bone is value > threshold "
                                       "(null for an image given as binary)")
    method: str = quantity(None, "binarisation: default (ImageJ IsoData), isodata, otsu, fixed or binary")
    BV: float = quantity("mm3", "bone volume")
    TV: float = quantity("mm3", "total (mask) volume")
    BS: float = quantity("mm2", "bone surface inside the mask")
    euler: int = quantity("1", "Euler characteristic of the bone inside the mask", name="Euler")
    delta_euler: float = quantity("1", "Odgaard & Gundersen edge correction of the Euler characteristic",
                                  name="Euler.delta")
    itk: dict | None = quantity(None, "ITKBoneMorphometry's mean-intercept-length / plate-model values "
                                "(BV/TV, Tb.N, Tb.Th, Tb.Sp, BS/BV; only with itk=True)", name="ITK")
    BA_TA_slices: list | None = quantity("1", "BA/TA of each slice k from the mask's first slice to its last "
                                         "(null for a slice without mask voxels)", name="BA/TA.slices")


def binarise(image: Volume, threshold="default", mask: np.ndarray | None = None, blur_mm: float = 0.0,
             binary: bool = False) -> tuple[float | None, str, np.ndarray]:
    """(level, method, bone) for an image: bone is ``value > level`` after an optional Gaussian blur
    of ``blur_mm`` (sigma, mm); ``binary=True`` takes non-zero voxels as bone (level None)."""
    array = np.asarray(image.array)
    if binary:
        values = np.unique(array[mask] if mask is not None else array)
        if values.size > 2:
            raise BoneKitError(f"--binary was given but the image holds {values.size} different values; "
                               "leave it out to threshold a grey-level image.")
        return None, "binary", array != 0
    array = _blurred(array, image.spacing_kji, blur_mm, np.float32)
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            pass
    level, bone = threshold_image(array, threshold, mask=mask)
    method = "fixed" if isinstance(threshold, (int, float)) else str(threshold).lower()
    return float(level), method, bone


def clean_binary(image: Volume, threshold="default", blur_mm: float = 0.0, resample: float = 1.0,
                 close_mm: float = 0.0, largest: bool = False) -> tuple[Volume, float, str]:
    """A cleaned binary bone image, as micro-FE pipelines prepare one (ciclope's LHDL example:
    blur 1 voxel, resample 2, threshold 63, closing by a ball of 3 voxels, largest component).

    In order: a Gaussian blur (sigma ``blur_mm``, edges extended); resampling to voxels
    ``resample`` times larger (spline of order 2, as ``scipy.ndimage.zoom``: the first and last
    voxel centres stay, so the new spacing is exact); the threshold (bone is value > level,
    ``threshold`` as in :func:`binarise`); a closing by a ball of radius ``close_mm`` (edges
    mirrored); the largest 6-connected component. Returns (binary uint8 volume with its geometry,
    level, method); measure it with ``morphometry(..., binary=True)``."""
    if resample <= 0 or not np.isfinite(resample):
        raise BoneKitError(f"The resampling factor must be positive, not {resample}.")
    if close_mm < 0:
        raise BoneKitError(f"The closing radius must be in mm >= 0, not {close_mm}.")
    work = image
    if blur_mm:
        work = image.with_array(_blurred(image.array, image.spacing_kji, blur_mm, np.float64))
    if resample != 1.0:
        n_in = np.array(work.array.shape)
        array = ndimage.zoom(np.asarray(work.array, dtype=np.float64), 1.0 / resample, order=2)
        n_out = np.array(array.shape)
        if (n_out < 2).any():
            raise BoneKitError(f"Resampling by {resample} leaves {tuple(n_out)} voxels: use a smaller factor.")
        stretch = (n_in - 1) / (n_out - 1)  # k, j, i
        work = Volume.from_geometry(array, spacing=work.spacing * stretch[::-1], origin=work.origin,
                                    direction=work.direction, modality=work.modality, units=work.units)
    level, method, bone = binarise(work, threshold)
    if close_mm > 0:
        spacing = np.asarray(work.spacing_kji)
        reach = close_mm * (1 + 1e-6)  # headers keep spacings to single precision
        r = np.floor(reach / spacing).astype(int)
        grid = np.ogrid[tuple(slice(-a, a + 1) for a in r)]
        ball = sum((g * s) ** 2 for g, s in zip(grid, spacing)) <= reach ** 2
        bone = ndimage.grey_erosion(ndimage.grey_dilation(bone.astype(np.uint8), footprint=ball, mode="reflect"),
                                    footprint=ball, mode="reflect").astype(bool)
    if largest:
        parts, n = ndimage.label(bone)
        if n > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            bone = parts == sizes.argmax()
    if not bone.any():
        raise BoneKitError(f"No bone left at threshold {level:g}: check the threshold.")
    return work.with_array(bone.astype(np.uint8), units="label", modality=None), level, method


def _blurred(array: np.ndarray, spacing_kji, sigma_mm: float, dtype) -> np.ndarray:
    """``array`` after a Gaussian of ``sigma_mm`` (edges extended), as ``dtype``; unchanged if 0."""
    if sigma_mm < 0:
        raise BoneKitError(f"The blur must be a sigma in mm >= 0, not {sigma_mm}.")
    if sigma_mm == 0:
        return array
    return ndimage.gaussian_filter(np.asarray(array, dtype=dtype), sigma_mm / np.asarray(spacing_kji), mode="nearest")


def _surface_mesh(bone: np.ndarray, region: np.ndarray, spacing_kji, smooth_voxels: float = 0.0):
    """Marching-cubes mesh (vertices in mm, outward normals, faces) of the bone surface inside
    ``region`` (triangles whose centre lies in a region voxel), at the half-way level, after an
    optional Gaussian smoothing. The image edge is extended, so it adds no surface."""
    from skimage.measure import marching_cubes

    spacing = np.asarray(spacing_kji, dtype=float)
    padded = np.pad(bone.astype(np.float32), 1, mode="edge")
    if smooth_voxels > 0:
        padded = ndimage.gaussian_filter(padded, smooth_voxels * spacing.min() / spacing, mode="nearest")
    if not padded.min() < 0.5 < padded.max():  # no surface (e.g. a speck of bone that smoothing dissolves)
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3), int)
    verts, faces, normals, _ = marching_cubes(padded, 0.5, spacing=tuple(spacing))
    centres = verts[faces].mean(axis=1) / spacing - 1.0  # voxel index in the unpadded image
    idx = np.rint(centres).astype(int)
    keep = np.all((idx >= 0) & (idx < np.array(bone.shape)), axis=1)  # the pad's half cells are outside
    keep[keep] = region[idx[keep, 0], idx[keep, 1], idx[keep, 2]]
    return verts, normals, faces[keep]


def _bone_surface(bone: np.ndarray, region: np.ndarray, spacing_kji) -> float:
    """Area (mm^2) of the bone surface inside ``region`` (vertices at the edge midpoints, as ImageJ-Ops)."""
    from skimage.measure import mesh_surface_area

    verts, _, faces = _surface_mesh(bone, region, spacing_kji)
    return float(mesh_surface_area(verts, faces)) if len(faces) else 0.0


def _structure_model_index(bone: np.ndarray, region: np.ndarray, spacing_kji, bv: float) -> float | None:
    """SMI = 6 BV (dBS/dr) / BS^2 (Hildebrand & Rüegsegger 1997): 0 for plates, 3 for rods, 4 for
    spheres, negative where the surface is concave. dBS/dr by moving the mesh's vertices along
    their normals by +-1 % of a voxel. The surface is smoothed by a Gaussian of one voxel first:
    on the raw digital staircase the normals are too coarse (a digital ball gives 3.4, a rod 2.3)."""
    from skimage.measure import mesh_surface_area

    verts, normals, faces = _surface_mesh(bone, region, spacing_kji, smooth_voxels=1.0)
    if not len(faces):
        return None
    delta = 0.01 * float(np.min(spacing_kji))
    area = mesh_surface_area(verts, faces)
    grown = mesh_surface_area(verts + delta * normals, faces)
    shrunk = mesh_surface_area(verts - delta * normals, faces)
    return float(6.0 * bv * (grown - shrunk) / (2 * delta) / area ** 2)


def slice_area_fractions(bone: np.ndarray, region: np.ndarray) -> list[float | None]:
    """Bone area fraction BA/TA = bone voxels / region voxels of each slice k (the first array axis),
    from the region's first slice to its last; None for a slice in between without region voxels."""
    area = region.sum(axis=(1, 2))
    slices = np.flatnonzero(area)
    if not slices.size:
        raise BoneKitError("The region is empty: no slice holds a voxel of it.")
    bone_area = (np.asarray(bone, bool) & region).sum(axis=(1, 2))
    return [float(bone_area[k] / area[k]) if area[k] else None for k in range(slices[0], slices[-1] + 1)]


def itk_plate_model(bone: np.ndarray, region: np.ndarray, spacing_kji) -> dict[str, float]:
    """ITKBoneMorphometry (``itk.BoneMorphometryFeaturesFilter``) on the bone inside ``region``.

    Its values are the plate model over mean intercept lengths along the 3 image axes only:
    Tb.N = P_L, Tb.Th = BV/TV / P_L, Tb.Sp = (1 - BV/TV) / P_L, BS/BV = 2 P_L / (BV/TV). Exact only for
    structures equally inclined to the axes: plates along an axis come out 1.5x thick, rods about
    half the direct Tb.Th. Its anisotropic spacing is applied to the wrong axes, so it is refused.
    The image is padded by replicating its edge (the tool treats outside as marrow, and bone at
    the edge as surface) and the mask keeps the pad out.
    """
    spacing = np.asarray(spacing_kji, dtype=float)
    if not np.allclose(spacing, spacing[0], rtol=1e-6):
        raise BoneKitError(f"ITKBoneMorphometry needs isotropic voxels (it swaps the x and z spacings), got "
                           f"{spacing[::-1].tolist()} mm (x, y, z): resample to isotropic voxels first.")
    try:
        import itk
        filter_type = itk.BoneMorphometryFeaturesFilter
    except (ImportError, AttributeError):
        raise BoneKitError("The ITK option needs the 'itk-bonemorphometry' package: pip install itk-bonemorphometry") \
            from None
    image = itk.image_from_array(np.pad(bone.astype(np.uint8), 1, mode="edge"))
    mask = itk.image_from_array(np.pad(region.astype(np.uint8), 1))
    for im in (image, mask):
        im.SetSpacing([float(spacing[0])] * 3)
    f = filter_type[type(image)].New(image)
    f.SetMaskImage(mask)
    f.SetThreshold(1)
    f.Update()
    return {"BV/TV": float(f.GetBVTV()), "Tb.N": float(f.GetTbN()), "Tb.Th": float(f.GetTbTh()),
            "Tb.Sp": float(f.GetTbSp()), "BS/BV": float(f.GetBSBV())}


def morphometry(image: Volume, mask: Volume | None = None, threshold="default", blur_mm: float = 0.0,
                binary: bool = False, maps: bool = False, itk: bool = False,
                progress: ProgressCallback | None = None) -> tuple[MorphometryResult, dict[str, Volume]]:
    """Trabecular morphometry of ``image`` inside ``mask`` (non-zero voxels; the whole image if None).

    Returns the result and, with ``maps=True``, the thickness and separation maps ("Tb.Th",
    "Tb.Sp": float32 volumes in mm on the mask's bounding box -- the image's grid, cropped, with
    exact geometry -- NaN where not bone / not marrow). Only the bounding box (and the margin a
    blur needs) is read, blurred and thresholded, so a small VOI in a large CT is cheap.
    """
    report = progress or (lambda f, m: None)
    if np.asarray(image.array).ndim != 3:
        raise BoneKitError("Morphometry needs a 3D image.")
    if mask is not None:
        image.require_same_grid(mask, "mask")
        region = np.asarray(mask.array) != 0
        if not region.any():
            raise BoneKitError("The mask is empty: it has no non-zero voxel; check it belongs to this image.")
    else:
        region = np.ones(image.array.shape, bool)
    # work on the mask's bounding box (the rest is neither bone nor marrow), blurred with the
    # margin the Gaussian reaches (SciPy's kernel radius int(4 sigma + 0.5) voxels, plus one)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(region))
    reach = [int(4 * blur_mm / s + 0.5) + 1 if blur_mm > 0 else 0 for s in image.spacing_kji]
    outer = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(box, reach, region.shape))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))
    sub_region = region[box]
    report(0.05, "binarising")
    outer_region = np.zeros(region[outer].shape, bool)
    outer_region[inner] = sub_region
    level, method, bone = binarise(image.crop(outer), threshold, outer_region, blur_mm, binary)
    bone = bone[inner] & sub_region
    marrow = sub_region & ~bone
    n_bone, n_total = int(bone.sum()), int(sub_region.sum())
    if n_bone == 0:
        raise BoneKitError(f"No bone inside the mask at threshold {level}: check the threshold or the mask.")
    if n_bone == n_total:
        raise BoneKitError(f"Everything inside the mask is bone at threshold {level}: no marrow to measure "
                           "separation against; check the threshold or the mask.")
    spacing = np.asarray(image.spacing_kji, dtype=float)
    voxel = float(np.prod(spacing))
    report(0.15, "thickness of bone")
    th_map = local_thickness(bone, spacing, region=sub_region)
    report(0.45, "thickness of marrow")
    sp_map = local_thickness(marrow, spacing, region=sub_region)
    th, th_sd = thickness_stats(th_map)
    sp, sp_sd = thickness_stats(sp_map)
    report(0.75, "surface")
    bs = _bone_surface(bone, sub_region, spacing)
    smi = _structure_model_index(bone, sub_region, spacing, n_bone * voxel)
    report(0.85, "connectivity")
    conn = connectivity(bone, tuple(spacing), mask=sub_region)
    report(0.9, "anisotropy")
    try:
        da = degree_of_anisotropy(bone, sub_region, spacing)["DA"]
    except BoneKitError:  # too few intercepts for an ellipsoid (a tiny region): no DA, the rest stands
        da = None
    ba_ta_slices = slice_area_fractions(bone, sub_region)
    ba_ta = float(np.mean([f for f in ba_ta_slices if f is not None]))
    itk_values = itk_plate_model(bone, sub_region, spacing) if itk else None
    bv, tv = n_bone * voxel, n_total * voxel
    result = MorphometryResult(
        BV_TV=n_bone / n_total, Tb_Th=th, Tb_Th_SD=th_sd, Tb_Sp=sp, Tb_Sp_SD=sp_sd, Tb_N=1.0 / (th + sp),
        BS_BV=bs / bv, Conn_D=float(conn["Conn.D"]), DA=da, SMI=smi, threshold=level, method=method,
        BV=bv, TV=tv, BS=bs, euler=int(conn["euler"]), delta_euler=float(conn["delta_euler"]), itk=itk_values,
        BA_TA=ba_ta, BA_TA_slices=ba_ta_slices)
    out_maps = {}
    if maps:  # on the mask's bounding box, with its exact geometry
        grid = image.crop(box)
        for name, m in (("Tb.Th", th_map), ("Tb.Sp", sp_map)):
            out_maps[name] = grid.with_array(m.astype(np.float32), units="mm", modality=None, metadata={"map": name})
    report(1.0, "morphometry done")
    return result, out_maps

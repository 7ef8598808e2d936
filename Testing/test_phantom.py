"""The spine phantom: determinism, and truth that matches what is measured on what it rendered."""

import json

import numpy as np
import pytest
from scipy import ndimage

from bonekit import BoneKitError
from bonekit.phantom import (Fracture, PhantomConfig, TrabecularField, genant_grade, microct_phantom,
                             repositioned, spine_phantom, tile_morphometry)
from bonekit.thickness import local_thickness, thickness_stats


def test_same_seed_same_phantom_and_other_seed_other_phantom():
    kwargs = dict(vertebrae=("L4", "L5"), bvtv=(0.12,), truth_morphometry=False, spacing_mm=(0.8, 0.8, 1.5))
    a = spine_phantom(PhantomConfig(seed=3, **kwargs))
    b = spine_phantom(PhantomConfig(seed=3, **kwargs))
    c = spine_phantom(PhantomConfig(seed=4, **kwargs))
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.labels.array, b.labels.array)
    assert json.dumps(a.truth, sort_keys=True) == json.dumps(b.truth, sort_keys=True)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_labels_masks_and_centroids_are_consistent(small_phantom):
    p = small_phantom
    assert set(np.unique(p.labels.array)) == {0, 20, 21, 22}
    assert p.ct.same_grid(p.labels) and p.ct.same_grid(p.bodies) and p.ct.same_grid(p.trabecular)
    assert np.all(p.labels.array[p.bodies.array > 0] == p.bodies.array[p.bodies.array > 0])
    assert np.all(p.bodies.array[p.trabecular.array > 0] == p.trabecular.array[p.trabecular.array > 0])
    assert p.centroids[0] == {"direction": ["L", "P", "S"]}
    for entry in p.centroids[1:]:
        k, j, i = np.argwhere(p.labels.array == entry["label"]).mean(axis=0)
        assert (entry["X"], entry["Y"], entry["Z"]) == pytest.approx((i, j, k), abs=0.01)
    # L1 is the most superior (largest z in LPS)
    z = {e["label"]: e["Z"] for e in p.centroids[1:]}
    assert z[20] > z[21] > z[22]


def test_fine_structure_truth_is_what_is_measured(small_phantom):
    cfg = small_phantom.config
    field = TrabecularField(cfg.tile_mm, cfg.wavelength_mm, cfg.vertical_anisotropy, cfg.seed)
    n = int(round(cfg.tile_mm / cfg.fine_voxel_mm))
    previous = None
    for record, nominal in zip(small_phantom.truth["vertebrae"], cfg.bvtv):
        fs = record["fine_structure"]
        bone = field.binary(field.level_for(nominal, n), n)
        assert fs["BV/TV"] == pytest.approx(bone.mean()) == pytest.approx(nominal, abs=1e-4)
        th, _ = thickness_stats(local_thickness(bone, cfg.tile_mm / n, periodic=True))
        assert fs["Tb.Th"] == pytest.approx(th)
        assert 0.05 < fs["Tb.Th"] < 0.4 and 0.5 < fs["Tb.Sp"] < 1.5  # human lumbar trabecular range (mm)
        assert fs["Tb.N"] == pytest.approx(1 / (fs["Tb.Th"] + fs["Tb.Sp"]))
        if previous:  # denser bone: thicker trabeculae, narrower spaces
            assert fs["Tb.Th"] > previous["Tb.Th"] and fs["Tb.Sp"] < previous["Tb.Sp"]
        previous = fs


def test_truth_morphometry_converges_with_resolution():
    # Tb.Sp is measured on a grid twice as coarse as Tb.Th: check it hardly depends on that
    field = TrabecularField(4.8, 1.6, 1.25, seed=1)
    tau = field.level_for(0.15, 120)
    coarse = tile_morphometry(field, tau, 0.04)
    sp_fine, _ = thickness_stats(local_thickness(~field.binary(tau, 96), 4.8 / 96, periodic=True))
    assert coarse["Tb.Sp"] == pytest.approx(sp_fine, rel=0.01)


def test_bmd_truth_and_ct_calibration(small_phantom):
    p = small_phantom
    cal = p.truth["calibration"]
    for record, nominal in zip(p.truth["vertebrae"], p.config.bvtv):
        assert record["BMD"] == pytest.approx(record["BV/TV"] * p.config.tissue_density)
        assert record["BV/TV"] == pytest.approx(nominal, rel=0.03)
        # deep inside the compartment (2 mm from its edge, away from the void) the CT mean follows the law
        compartment = p.trabecular.array == record["label"]
        deep = ndimage.binary_erosion(compartment, iterations=2)
        kji = np.argwhere(deep)
        lps = p.ct.index_to_physical(kji[:, ::-1])
        for void in record["voids"]:  # keep 2 mm away from planted voids
            far = np.linalg.norm(lps - void["centre_lps_mm"], axis=1) > void["diameter_mm"] / 2 + 2
            kji, lps = kji[far], lps[far]
        hu = p.ct.array[tuple(kji.T)].mean()
        bmd = (hu - cal["hu_intercept"]) / cal["hu_slope_per_mg_cm3"]
        assert bmd == pytest.approx(record["BMD"], rel=0.04)
    # calibration rods: HU at each rod's centre is intercept + slope * density
    for rod in cal["rods"]:
        i, j, _ = p.ct.physical_to_index([*rod["centre_lps_mm"], 0.0])
        core = p.ct.array[:, int(round(j)) - 3:int(round(j)) + 4, int(round(i)) - 3:int(round(i)) + 4]
        expected = cal["hu_intercept"] + cal["hu_slope_per_mg_cm3"] * rod["density_mg_cm3"]
        assert core.mean() == pytest.approx(expected, abs=1.5)


def test_void_is_empty_of_bone(small_phantom):
    p = small_phantom
    record = p.truth["vertebrae"][0]
    (void,) = record["voids"]
    i, j, k = np.rint(p.ct.physical_to_index(void["centre_lps_mm"])).astype(int)
    assert p.density.array[k, j, i] == 0.0
    assert p.trabecular.array[k, j, i] == record["label"]


def _height_along_axis(mask, volume, start_lps, axis, step=0.05, reach=40.0):
    """Length (mm) of the mask along a line through start_lps in direction axis (nearest-voxel sampling)."""
    t = np.arange(-reach, reach, step)
    pts = np.asarray(start_lps) + t[:, None] * np.asarray(axis)
    ijk = np.rint(volume.physical_to_index(pts)).astype(int)
    ok = volume.contains_index(ijk, margin=0)
    ijk = ijk[ok]
    inside = mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    return inside.sum() * step


def test_planted_fractures_heights_and_grades(small_phantom):
    p = small_phantom
    spacing_z = p.ct.spacing[2]
    for record in p.truth["vertebrae"]:
        mask = p.bodies.array == record["label"]
        centre = np.asarray(record["centre_lps_mm"])
        up = np.asarray(record["superior_axis_lps"])
        anterior = np.asarray(record["anterior_axis_lps"])
        a, b = record["body_semi_axes_mm"]
        wall = 0.72 * b
        for name, offset in (("anterior", b - 0.6), ("middle", (b - wall) / 2), ("posterior", -wall + 0.6)):
            measured = _height_along_axis(mask, p.ct, centre + offset * anterior, up)
            assert measured == pytest.approx(record["heights_mm"][name], abs=spacing_z), (record["name"], name)
    fractures = {r["name"]: r["fracture"] for r in p.truth["vertebrae"]}
    assert fractures["L1"] == {"type": None, "height_loss": 0.0, "grade": 0}
    assert fractures["L2"]["type"] == "wedge" and fractures["L2"]["grade"] == 2
    assert fractures["L2"]["height_loss"] == pytest.approx(0.30)
    assert fractures["L3"]["type"] == "biconcave" and fractures["L3"]["grade"] == 2
    assert fractures["L3"]["height_loss"] == pytest.approx(0.27)


def test_genant_thresholds():
    assert [genant_grade(x) for x in (0.0, 0.19, 0.20, 0.249, 0.25, 0.399, 0.40, 0.7)] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(vertebrae=("L9",)), "Unknown vertebra"),
    (dict(bvtv=(0.1, 0.2)), "one per vertebra"),
    (dict(fractures=(Fracture("T12", "wedge", 0.3),)), "not in the phantom"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(BoneKitError, match=message):
        PhantomConfig(**kwargs)
    with pytest.raises(BoneKitError, match="Fracture type"):
        Fracture("L1", "compression", 0.3)


def test_microct_block_truth():
    block = microct_phantom(voxel_mm=0.06, bvtv=0.2, seed=2)
    t = block.truth
    binary = block.binary.array.astype(bool)
    assert t["BV/TV"] == pytest.approx(binary.mean()) == pytest.approx(0.2, abs=1e-3)
    assert np.allclose(block.image.spacing, t["voxel_mm"])
    # a mid-grey threshold recovers the structure from the noisy, blurred image
    assert ((block.image.array > 125) == binary).mean() > 0.95
    th, _ = thickness_stats(local_thickness(binary, t["voxel_mm"]))
    assert t["Tb.Th"] == pytest.approx(th)


def test_repositioned_moves_without_blurring(small_phantom):
    """A rescan's move: a whole-voxel shift is exact (the windowed sinc is 1 at 0 and 0 at the other
    integers), a half-voxel shift keeps the image's high frequencies (linear interpolation loses
    23 % of them), there and back returns the image, and labels keep their values."""
    ct = small_phantom.ct
    a = ct.array.astype(np.float32)
    centre = tuple(slice(n // 4, 3 * n // 4) for n in a.shape)
    sp = ct.spacing  # i, j, k; direction is the identity
    one_voxel = repositioned(ct, (0, 0, 0), (sp[0], 0, 0)).array  # the object moves +x: value at i came from i - 1
    assert np.allclose(one_voxel[:, :, 10:-10], a[:, :, 9:-11], atol=1e-3)
    half = np.array(sp) / 2
    moved = repositioned(ct, (0, 0, 0), half).array
    high = lambda x: float(np.std(np.diff(x[centre], axis=2)))  # noqa: E731
    assert high(moved) / high(a) > 0.95
    back = repositioned(ct.with_array(moved), (0, 0, 0), -half).array
    assert np.sqrt(np.mean((back[centre] - a[centre]) ** 2)) < 0.15 * a[centre].std()
    labels = repositioned(small_phantom.labels, (1.0, -1.0, 0.5), (0.3, 0.2, -0.4), label=True)
    assert labels.array.dtype == small_phantom.labels.array.dtype
    assert set(np.unique(labels.array)) == set(np.unique(small_phantom.labels.array))
    assert abs(np.count_nonzero(labels.array == 21) / np.count_nonzero(small_phantom.labels.array == 21) - 1) < 0.02

"""Vertebra point files: Slicer markups (RAS or LPS), CSV in LPS, VerSe centroid JSON."""

import json

import numpy as np
import pytest

from bonekit import BoneKitError, read_volume
from bonekit.points import read_points, verse_id, write_csv_points


def test_verse_ids():
    assert verse_id("L1") == 20 and verse_id("t12") == 19 and verse_id("C7") == 7 and verse_id(28) == 28
    with pytest.raises(BoneKitError, match="not a vertebra"):
        verse_id("L9")


def test_markups_in_ras_are_converted_to_lps(tmp_path):
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                          "Resources/Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [
                   {"label": "L1", "position": [10.0, -20.0, 30.0]},
                   {"label": "L2", "position": [11.0, -21.0, 0.0]}]}]}
    path = tmp_path / "points.mrk.json"
    path.write_text(json.dumps(markups))
    points = read_points(path)
    assert np.allclose(points[20], [-10.0, 20.0, 30.0]) and np.allclose(points[21], [-11.0, 21.0, 0.0])


def test_csv_round_trip(tmp_path):
    points = {19: np.array([1.5, -2.25, 300.125]), 20: np.array([0.0, 4.0, 270.0])}
    back = read_points(write_csv_points(points, tmp_path / "p.csv"))
    assert back.keys() == points.keys() and all(np.allclose(back[k], points[k]) for k in points)


@pytest.mark.parametrize("text, message", [
    ("name,x,y,z\nL1,1,2,3\n", "header"),
    ("label,x,y,z\nL1,1,2,3\nL1,4,5,6\n", "given twice"),
    ("label,x,y,z\nL1,1,a,3\n", "not a number"),
    ("label,x,y,z\nQ4,1,2,3\n", "not a vertebra"),
])
def test_bad_csv(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BoneKitError, match=message):
        read_points(path)


def test_verse_centroids_fall_inside_their_vertebrae(shared_data):
    """The expert VerSe sample: each centroid (voxel coordinates, PIR) lies in its own label."""
    folder = shared_data / "spine_ct" / "verse_sample"
    mask = read_volume(folder / "sub-verse004_seg-vert_msk.nii.gz")
    points = read_points(folder / "sub-verse004_seg-subreg_ctd.json", image=mask)
    assert sorted(points) == list(range(16, 25))
    for vid, lps in points.items():
        i, j, k = np.rint(mask.physical_to_index(lps)).astype(int)
        assert mask.array[k, j, i] == vid


def test_verse_centroids_need_the_image(shared_data):
    with pytest.raises(BoneKitError, match="needs its CT"):
        read_points(shared_data / "spine_ct" / "verse_sample" / "sub-verse004_seg-subreg_ctd.json")

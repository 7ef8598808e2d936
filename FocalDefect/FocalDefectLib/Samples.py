"""A small synthetic CT with known bone voids, for the self-test and the adapter tests (nothing downloaded).

Big enough to hold two trabecular ROIs with voids well inside them, small enough that the focal
maps of both take well under a second: a 300 HU block of "trabecular bone" in air, pierced by
cylindrical voids of 0 HU (marrow) along the slice axis, blurred like a scanner would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bonekit import Volume, make_affine

__all__ = ["FocalPhantom", "focalVoidPhantom"]

#: (label, centre i, centre j, diameter in mm) of each void; label 1 = ROI "L1", 2 = ROI "L2".
VOIDS = ((1, 19.0, 20.0, 3.0), (2, 42.0, 15.0, 2.0), (2, 49.0, 26.0, 2.5))


@dataclass
class FocalPhantom:
    """What :func:`focalVoidPhantom` builds."""

    ct: Volume          # int16 HU
    labels: Volume      # uint8 ROIs on the CT grid: 1 and 2, 0 elsewhere
    names: dict = field(default_factory=dict)  # label -> ROI name ("L1", "L2")
    voids: list = field(default_factory=list)  # {"label", "centre_lps_mm" (mid-slice), "diameter_mm"} per void


def focalVoidPhantom(boneHU: float = 300.0, voidHU: float = 0.0, airHU: float = -1000.0) -> FocalPhantom:
    """Two ROIs side by side in a uniform bone block, with one and two cylindrical voids.

    Grid: 64 x 40 x 12 voxels (i, j, k) of 0.5 x 0.5 x 0.7 mm, rotated 10 degrees about the
    slice axis and away from the origin, so that geometry errors (LPS/RAS, spacing, direction)
    show. The voids run along k through the whole block; blur: a [1 2 1]/4 kernel twice along
    i and j (about one voxel's sigma). The ROIs keep 4 voxels (2 mm) of uniform bone between
    them and the block's edge, and at least 2 mm between each void and the ROI's edge.
    """
    nk, nj, ni = 12, 40, 64
    angle = math.radians(10.0)
    direction = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                          [math.sin(angle), math.cos(angle), 0.0],
                          [0.0, 0.0, 1.0]])
    affine = make_affine((0.5, 0.5, 0.7), (12.5, -30.25, 101.0), direction)
    values = np.full((nk, nj, ni), airHU)
    values[1:-1, 3:-3, 3:-3] = boneHU
    jj, ii = np.mgrid[0:nj, 0:ni]
    for _, ci, cj, diameter in VOIDS:
        radius = diameter / 2 / 0.5
        values[1:-1][:, (ii - ci) ** 2 + (jj - cj) ** 2 <= radius ** 2] = voidHU
    kernel = np.array([0.25, 0.5, 0.25])
    for axis in (1, 2, 1, 2):
        values = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, values)
    # np.convolve pads with zeros: put the air back at the border the kernel reached into
    values[:, :2, :] = values[:, -2:, :] = airHU
    values[:, :, :2] = values[:, :, -2:] = airHU
    ct = Volume(np.round(values).astype(np.int16), affine, modality="CT", units="HU",
                metadata={"source": "BoneKit focal void phantom"})
    labels = np.zeros((nk, nj, ni), np.uint8)
    labels[3:-3, 7:-7, 7:31] = 1
    labels[3:-3, 7:-7, 33:-7] = 2
    voids = [{"label": label, "centre_lps_mm": ct.index_to_physical([ci, cj, (nk - 1) / 2]).tolist(),
              "diameter_mm": diameter} for label, ci, cj, diameter in VOIDS]
    return FocalPhantom(ct, ct.with_array(labels, modality="SEG", units="label"), {1: "L1", 2: "L2"}, voids)

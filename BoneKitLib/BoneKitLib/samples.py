"""Small synthetic data for the modules' self-tests and the adapter tests (nothing is downloaded)."""

from __future__ import annotations

__all__ = ["smallSpinePhantom"]


def smallSpinePhantom(seed: int = 0):
    """A coarse two-vertebra (L1, L2) spine phantom from :func:`bonekit.phantom.spine_phantom`.

    1.5 x 1.5 x 2 mm voxels and no micro-structure truth, so it builds in a
    fraction of a second: ``.ct`` (int16 HU) and ``.labels`` (uint8 VerSe ids,
    20 = L1, 21 = L2) on the same grid. The phantom module (SciPy, Numba) is
    imported here, not with BoneKitLib, so that loading the modules stays light.
    """
    from bonekit.phantom import spine_phantom

    return spine_phantom(seed=seed, vertebrae=("L1", "L2"), bvtv=(0.12,), spacing_mm=(1.5, 1.5, 2.0),
                         truth_morphometry=False)

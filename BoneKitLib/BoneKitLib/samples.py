"""Small synthetic data for the modules' self-tests and the adapter tests (nothing is downloaded)."""

from __future__ import annotations

__all__ = ["smallSpinePhantom"]


def smallSpinePhantom(seed: int = 0, vertebrae: tuple[str, ...] = ("L1", "L2")):
    """A coarse spine phantom from :func:`bonekit.phantom.spine_phantom`: L1 and L2 unless told otherwise.

    1.5 x 1.5 x 2 mm voxels and no micro-structure truth, so it builds in a
    fraction of a second: ``.ct`` (int16 HU) and ``.labels`` (uint8 VerSe ids,
    20 = L1, 21 = L2 ...) on the same grid. The phantom module (SciPy, Numba) is
    imported here, not with BoneKitLib, so that loading the modules stays light.
    """
    from bonekit.phantom import spine_phantom

    return spine_phantom(seed=seed, vertebrae=tuple(vertebrae), bvtv=(0.12,), spacing_mm=(1.5, 1.5, 2.0),
                         truth_morphometry=False)

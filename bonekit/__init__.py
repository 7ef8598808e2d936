"""BoneKit core: vertebral bone quality from CT.

Pure Python (numpy, SciPy, SimpleITK, torch); never imports slicer, qt or vtk.
"""

from .errors import BoneKitError
from .volume import Volume, make_affine, orientation_code
from .io import read_volume, write_volume, write_json

__version__ = "0.1.0"

__all__ = ["BoneKitError", "Volume", "make_affine", "orientation_code", "read_volume", "write_volume",
           "write_json", "__version__"]

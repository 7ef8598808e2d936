"""BoneKit's cohort batch, headless in 3D Slicer (see BoneKitLib.slicerbatch)::

    Slicer --no-main-window --python-script PATH/bonekit_slicer_batch.py -- MANIFEST --out DIR \\
        [--steps segment,vertebra,morphometry,focal] [--threshold default] [--retry-failed]

Exit status: 0 every case done, 3 some case failed, 2 bad arguments or manifest.
"""

import sys
from pathlib import Path

# Installed, this file is <qt-scripted-modules>/BoneKitLib/scripts/, where Slicer already has BoneKitLib, the
# core package bonekit and the modules' Libs on sys.path. In a source tree (<repository>/BoneKitLib/BoneKitLib/
# scripts/) they are found from the repository's layout.
_package = Path(__file__).resolve().parents[1]
_root = _package.parents[1]
_folders = [_package.parent]
if (_root / "bonekit").is_dir():
    _folders += [_root, _root / "BoneMorphometry", _root / "FocalDefect"]
sys.path.extend(str(f) for f in _folders if str(f) not in sys.path)

from BoneKitLib.slicerbatch import runInSlicer  # noqa: E402

if __name__ == "__main__":
    exitStatus = runInSlicer(sys.argv[1:])  # in the Slicer application, it quits with this status

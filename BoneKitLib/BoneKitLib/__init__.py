"""BoneKitLib: the MRML side of BoneKit, shared by the four modules.

Adapters between the pure-Python core (:mod:`bonekit`) and Slicer nodes:
volumes, label maps and segmentations, result tables and colour overlays.
No qt, ctk or ``slicer.ScriptedLoadableModule`` imports, so it works in Slicer,
in ``PythonSlicer`` and with pip ``slicer-core``.

Example (Slicer's Python console)::

    import BoneKitLib
    ct = BoneKitLib.volumeFromNode(slicer.util.getNode("CT"))  # bonekit.Volume, LPS geometry
    node = BoneKitLib.volumeToNode(ct, slicer.mrmlScene, name="copy")
"""

from .display import COLORMAPS, colorTableNode, showColorLegend, showOverlay, showTable
from .growcut import vtkGrowCut
from .cancellable import CancellableRunMixin, ModelRunMixin
from .coreprocess import DEVICES, FROM_FILE, CoreProcessLogic
from .gui import ParameterNodeWidgetMixin, reloadPackages
from .inputs import (CTInputLogic, CTSummary, ProcessingCancelled, ProgressCallback, checkHounsfieldUnits,
                     ctSummaryTable, ctVolumeFromNode, loadCalibration, reportProgress, summarizeCT)
from .samples import smallSpinePhantom
from .segmentations import (LABEL_VALUE_TAG, ensureConverterRules, labelmapToSegmentation, segmentationToLabelmap,
                            segmentLabelValues)
from .tables import addResultColumns, resultsFromTable, resultsToTable
from .volumes import ijkToRASMatrix, setIJKToRASMatrix, setNodeAttributes, volumeFromNode, volumeToNode

__all__ = [
    # volumes
    "volumeToNode", "volumeFromNode", "ijkToRASMatrix", "setIJKToRASMatrix", "setNodeAttributes",
    # segmentations
    "labelmapToSegmentation", "segmentationToLabelmap", "segmentLabelValues", "ensureConverterRules",
    "LABEL_VALUE_TAG",
    # GrowCut on Slicer's vtkImageGrowCutSegment (a bonekit.segment.GrowCutFunction)
    "vtkGrowCut",
    # tables
    "resultsToTable", "resultsFromTable", "addResultColumns",
    # display
    "COLORMAPS", "colorTableNode", "showOverlay", "showColorLegend", "showTable",
    # module inputs
    "ctVolumeFromNode", "checkHounsfieldUnits", "ProcessingCancelled", "CTSummary", "summarizeCT", "ctSummaryTable",
    "ProgressCallback", "reportProgress", "loadCalibration", "CTInputLogic",
    # samples and GUI plumbing
    "smallSpinePhantom", "ParameterNodeWidgetMixin", "CancellableRunMixin", "ModelRunMixin", "reloadPackages",
    # running the core in a child process (deep-learning modules)
    "CoreProcessLogic", "DEVICES", "FROM_FILE",
]

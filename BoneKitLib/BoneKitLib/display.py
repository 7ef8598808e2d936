"""Showing scalar maps (thickness, focal BMC loss, ...) as colour overlays on the CT.

Slicer's file-based colour tables (Viridis, Inferno, ColdToHotRainbow) are not
available under pip slicer-core, and an extension should not depend on their
node IDs anyway, so BoneKit builds its own ``vtkMRMLColorTableNode`` from a few
control colours, once per scene, and reuses it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import slicer

from bonekit import BoneKitError

__all__ = ["COLORMAPS", "colorTableNode", "showOverlay", "showColorLegend", "showTable"]

#: Control colours (hex, low to high values), linearly interpolated in RGB.
COLORMAPS: dict[str, tuple[str, ...]] = {
    # perceptually uniform blue-green-yellow
    "Viridis": ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"),
    # perceptually uniform black-purple-orange-yellow
    "Inferno": ("#000004", "#420a68", "#932667", "#dd513a", "#fca50a", "#fcffa4"),
    # diverging rainbow: dark blue (cold, low) to dark red (hot, high)
    "ColdToHot": ("#00007f", "#0000ff", "#00ffff", "#00ff00", "#ffff00", "#ff0000", "#7f0000"),
}

COLORMAP_ATTRIBUTE = "BoneKit.colorMap"
_NO_UPPER_THRESHOLD = float(np.finfo(np.float32).max)


def _rgb(hexColor: str) -> tuple[float, float, float]:
    return tuple(int(hexColor[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


def colorTableNode(scene, name: str = "Viridis", numberOfColors: int = 256):
    """The scene's BoneKit colour table called ``name``, created on first use.

    Parameters
    ----------
    scene : vtkMRMLScene
    name : str
        One of :data:`COLORMAPS`.
    numberOfColors : int
        Table entries (256 gives smooth maps).

    Returns
    -------
    vtkMRMLColorTableNode
        Named "BoneKit <name>", in the "BoneKit" category of the Colors module.
    """
    if name not in COLORMAPS:
        raise BoneKitError(f"Unknown colour map '{name}'; choose one of {', '.join(COLORMAPS)}.")
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
        if node.GetAttribute(COLORMAP_ATTRIBUTE) == name and node.GetNumberOfColors() == numberOfColors:
            return node
    controls = np.array([_rgb(c) for c in COLORMAPS[name]])
    positions = np.linspace(0.0, 1.0, len(controls))
    samples = np.linspace(0.0, 1.0, numberOfColors)
    colors = np.column_stack([np.interp(samples, positions, controls[:, channel]) for channel in range(3)])
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(f"BoneKit {name}")
    node.SetTypeToUser()
    node.SetNumberOfColors(numberOfColors)
    node.SetAttribute("Category", "BoneKit")
    node.SetAttribute(COLORMAP_ATTRIBUTE, name)
    for index, (r, g, b) in enumerate(colors):
        node.SetColor(index, f"{name} {index}", float(r), float(g), float(b), 1.0)
    scene.AddNode(node)
    return node


def showOverlay(mapNode, valueRange: Sequence[float], *, threshold: float | None = None,
                colormap: str = "Viridis", opacity: float = 0.6, backgroundNode=None):
    """Show a scalar map as a colour-mapped foreground layer in every slice view.

    Parameters
    ----------
    mapNode : vtkMRMLScalarVolumeNode
        The map (e.g. focal BMC loss, 0..1). Only its display settings change.
    valueRange : (low, high)
        Values mapped to the first and last colour (window/level).
    threshold : float, optional
        Voxels below this value are not drawn, so the CT shows through.
    colormap : str
        One of :data:`COLORMAPS`.
    opacity : float
        Foreground opacity, 0..1.
    backgroundNode : vtkMRMLVolumeNode, optional
        Also put this volume (the CT) in the background.

    Returns
    -------
    vtkMRMLScalarVolumeDisplayNode
        The map's display node. Slice views are the scene's
        ``vtkMRMLSliceCompositeNode`` nodes; with none (no views yet, or a batch
        run) only the display node is set.
    """
    low, high = (float(v) for v in valueRange)
    if not high > low:
        raise BoneKitError(f"The value range of the map must be increasing, got {low} to {high}.")
    if not 0.0 <= opacity <= 1.0:
        raise BoneKitError(f"The overlay opacity must lie between 0 and 1, got {opacity}.")
    scene = mapNode.GetScene()
    if mapNode.GetDisplayNode() is None:
        mapNode.CreateDefaultDisplayNodes()
    displayNode = mapNode.GetDisplayNode()
    wasModifying = displayNode.StartModify()
    displayNode.SetAndObserveColorNodeID(colorTableNode(scene, colormap).GetID())
    displayNode.AutoWindowLevelOff()
    displayNode.SetWindowLevelMinMax(low, high)
    if threshold is None:
        displayNode.ApplyThresholdOff()
    else:
        displayNode.SetLowerThreshold(float(threshold))
        displayNode.SetUpperThreshold(_NO_UPPER_THRESHOLD)
        displayNode.ApplyThresholdOn()
    displayNode.EndModify(wasModifying)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        compositeNode = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if backgroundNode is not None:
            compositeNode.SetBackgroundVolumeID(backgroundNode.GetID())
        compositeNode.SetForegroundVolumeID(mapNode.GetID())
        compositeNode.SetForegroundOpacity(opacity)
    return displayNode


def showColorLegend(mapNode, title: str | None = None, labelFormat: str = "%.2f"):
    """Show a colour legend (scalar bar) of a map's colour table in the views that show the map.

    Parameters
    ----------
    mapNode : vtkMRMLScalarVolumeNode
        A map with a display node (e.g. after :func:`showOverlay`); the legend follows its
        colour table and window/level.
    title : str, optional
        Legend title, e.g. "Tb.Th (mm)"; by default the node name.
    labelFormat : str
        printf format of the tick labels.

    Returns
    -------
    vtkMRMLColorLegendDisplayNode
        The map's legend (created on first use, reused after).
    """
    scene = mapNode.GetScene()
    if mapNode.GetDisplayNode() is None:
        mapNode.CreateDefaultDisplayNodes()
    # Slicer's Colors module registers the legend node class at start-up; pip slicer-core does not.
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(mapNode)
    if legend is None:
        raise BoneKitError(f"Slicer could not create a colour legend for '{mapNode.GetName()}'.")
    wasModifying = legend.StartModify()
    legend.SetTitleText(title or mapNode.GetName())
    legend.SetLabelFormat(labelFormat)
    legend.SetVisibility(True)
    legend.EndModify(wasModifying)
    return legend


def showTable(tableNode) -> None:
    """Switch the Slicer layout to one with a table view and show ``tableNode`` in it.

    Needs the Slicer application (``slicer.app``); does nothing without it
    (pip slicer-core, ``PythonSlicer``).
    """
    app = getattr(slicer, "app", None)
    if app is None or app.layoutManager() is None:
        return
    layoutManager = app.layoutManager()
    layoutManager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout))
    selectionNode = app.applicationLogic().GetSelectionNode()
    selectionNode.SetActiveTableID(tableNode.GetID())
    app.applicationLogic().PropagateTableSelection()

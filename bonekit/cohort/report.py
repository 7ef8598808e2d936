"""Per-patient report: one self-contained HTML page (images embedded) from a case folder of ``bonekit batch``.

``bonekit report OUT/cases/CASE --out report.html [--pdf]`` reads what the batch wrote for the case
(``case.json``, ``results.json``, the label map and the body/ROI/VOI masks, the per-vertebra maps in
``maps/``, ``calibration.json``) and the case's CT, and writes a page with

- a sagittal overview with each vertebra outlined and named (its Genant grade when fractured),
- per vertebra: the VOI on axial and sagittal slices, the apparent thickness map and the focal
  BMC-loss map as colour overlays with colour bars,
- the per-vertebra table (units in the headers) and every column's definition, the fracture grades,
  the calibration used (or the statement that BMD is uncalibrated), BoneKit's version and parameters,
  a methods paragraph with the papers, and the statement that it is for research use, not diagnosis.

Slices are sampled in patient coordinates (LPS mm) at one step in both directions, so anisotropic
voxels, any voxel-axis order and the maps' own grids are shown with true proportions: axial slices
are seen from the feet (patient's right on the left, anterior up), sagittal slices from the patient's
left (anterior on the left, superior up). The page needs no script and no network; it reads on a
phone (images and table scale to the screen) and prints (A4, no figure split across pages). With
``pdf=True`` headless Chromium prints it to PDF.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BoneKitError
from ..volume import Volume
from .batch import CASE_FILE, MAPS_DIR, RESULTS_FILE, STATUS_FILE, map_file

__all__ = ["CaseRecord", "load_case", "sample_plane", "render_report", "write_report", "write_reports", "find_chromium",
           "print_pdf", "TABLE_COLUMNS", "DISCLAIMER"]

DISCLAIMER = ("For research use only. Not for diagnosis or treatment decisions: BoneKit is not a medical "
              "device, and its measurements have not been validated for clinical use.")

#: The per-vertebra table: (column of results.json, header, digits, scale). Columns a case lacks are left out.
TABLE_COLUMNS = (
    ("vertebra", "Vertebra", None, 1),
    ("BMD", "BMD (mg HA/cm³)", 1, 1),
    ("HU", "ROI mean (HU)", 1, 1),
    ("VOI.BMD", "VOI BMD (mg HA/cm³)", 1, 1),
    ("Ha", "Ha (mm)", 1, 1),
    ("Hm", "Hm (mm)", 1, 1),
    ("Hp", "Hp (mm)", 1, 1),
    ("HeightLoss", "Height loss (%)", 0, 100),
    ("Genant.grade", "Genant grade", None, 1),
    ("Genant.type", "Type", None, 1),
    ("app.BV/TV", "App. BV/TV (%)", 1, 100),
    ("app.Tb.Th", "App. Tb.Th (mm)", 2, 1),
    ("app.Tb.Sp", "App. Tb.Sp (mm)", 2, 1),
    ("focal.IncptWidth", "IncptWidth (mm)", 2, 1),
    ("focal.FocalBMDLoss", "Focal BMD loss (1)", 3, 1),
    ("focal.FocalBMCLoss", "Focal BMC loss (mm)", 3, 1),
    ("note", "Note", None, 1),
)

_WINDOW_HU = (-300.0, 1300.0)          # bone window of the CT underlay (level 500, width 1600)
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
            "#bcbd22", "#7f7f7f")


# ----------------------------------------------------------------------------- reading a case
@dataclass
class CaseRecord:
    """Everything a report shows, read from one case folder."""

    folder: Path
    case: dict
    settings: dict
    version: str
    rows: list[dict]
    ct: Volume
    labels: Volume
    body: Volume | None = None
    roi: Volume | None = None
    voi: Volume | None = None
    calibration: dict | None = None
    maps: dict = field(default_factory=dict)     # (vertebra, "Tb.Th" | "FocalBMCLoss") -> Volume

    @property
    def calibrated(self) -> bool:
        return any(r.get("calibrated") for r in self.rows)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BoneKitError(f"{path.parent}: no {path.name} ({what}). A report is made from a case folder of "
                           f"'bonekit batch' (OUT/cases/CASE); run the batch first.") from None
    except ValueError as error:
        raise BoneKitError(f"{path}: not valid JSON ({error}).") from None


def load_case(folder, image=None) -> CaseRecord:
    """Read a batch case folder (and the CT it names, or ``image`` when the CT has moved)."""
    from ..io import read_volume

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BoneKitError(f"{folder}: not a folder. Give a case folder of 'bonekit batch' (OUT/cases/CASE).")
    status = _read_json(folder / STATUS_FILE, "the case's status")
    if status.get("state") != "done":
        raise BoneKitError(f"Case {status.get('case', folder.name)} did not finish (state {status.get('state')}, "
                           f"step {status.get('step')}: {status.get('error')}); there is nothing to report. "
                           f"Fix the input and rerun the batch with --retry-failed.")
    info = _read_json(folder / CASE_FILE, "the case's inputs and settings")
    rows = _read_json(folder / RESULTS_FILE, "the measurements").get("vertebrae", [])
    if not rows:
        raise BoneKitError(f"Case {info['case']['case']}: no vertebra was measured; there is nothing to report.")
    case = info["case"]
    source = Path(image).expanduser() if image else Path(case["image"])
    if not source.exists():
        raise BoneKitError(f"The case's CT {source} is not there any more; give its new place with --image.")
    ct = read_volume(source)
    label_file = folder / "labels.nii.gz"
    if label_file.exists():
        labels = read_volume(label_file)
    elif case.get("labels") and Path(case["labels"]).exists():
        labels = read_volume(case["labels"]).labels_on(ct)
    else:
        raise BoneKitError(f"{folder}: no labels.nii.gz and the manifest's label map {case.get('labels')} is not "
                           f"there; rerun the batch for this case.")
    masks = {name: read_volume(folder / f"{name}.nii.gz") if (folder / f"{name}.nii.gz").exists() else None
             for name in ("body", "roi", "voi")}
    for what, volume in [("label map", labels), *masks.items()]:
        if volume is not None and not volume.same_grid(ct):
            raise BoneKitError(f"The case's {what} is not on the grid of {source}: this is not the CT the case "
                               f"was computed from.")
    maps = {}
    for row in rows:
        for quantity in ("Tb.Th", "FocalBMCLoss"):
            path = folder / MAPS_DIR / map_file(row["vertebra"], quantity)
            if path.exists():
                maps[(row["vertebra"], quantity)] = read_volume(path)
    calibration = None
    if (folder / "calibration.json").exists():
        calibration = _read_json(folder / "calibration.json", "the calibration")
    return CaseRecord(folder, case, info.get("settings", {}), info.get("bonekit", "?"), rows, ct, labels,
                      masks["body"], masks["roi"], masks["voi"], calibration, maps)


# ----------------------------------------------------------------------------- slices in patient space
@dataclass(frozen=True)
class Plane:
    """A display plane: pixel (row r, column c) is at ``corner + c*step*right + r*step*down`` (LPS mm)."""

    corner: np.ndarray
    right: np.ndarray
    down: np.ndarray
    shape: tuple[int, int]
    step: float

    def points(self) -> np.ndarray:
        rows, cols = np.mgrid[0:self.shape[0], 0:self.shape[1]]
        return (self.corner + (cols[..., None] * self.right + rows[..., None] * self.down) * self.step)

    def to_pixel(self, lps) -> tuple[float, float]:
        """(column, row) of an LPS point projected onto the plane."""
        d = np.asarray(lps, float) - self.corner
        return float(d @ self.right / self.step), float(d @ self.down / self.step)


_AXES = {"axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),       # right = patient left, down = posterior
         "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0]))}   # right = posterior, down = inferior


def plane_through(view: str, centre, half_width: float, half_height: float, step: float) -> Plane:
    """An axial or sagittal plane centred on ``centre`` (LPS mm), ``2*half`` mm wide and high."""
    right, down = _AXES[view]
    shape = (max(2, int(round(2 * half_height / step)) + 1), max(2, int(round(2 * half_width / step)) + 1))
    corner = np.asarray(centre, float) - right * half_width - down * half_height
    return Plane(corner, right, down, shape, float(step))


def sample_plane(volume: Volume, plane: Plane, order: int = 1, fill: float = np.nan) -> np.ndarray:
    """``volume``'s values on ``plane`` (linear or nearest-voxel interpolation; ``fill`` outside)."""
    from scipy import ndimage

    ijk = volume.physical_to_index(plane.points().reshape(-1, 3))
    array = np.asarray(volume.array)
    data = array.astype(np.float32) if order else array
    values = ndimage.map_coordinates(data, ijk[:, ::-1].T, order=order, mode="constant",
                                     cval=fill if order else 0, prefilter=False)
    values = values.reshape(plane.shape).astype(np.float32)
    if not order:   # nearest voxel: mark what lies outside the grid
        inside = np.all((ijk > -0.5) & (ijk < np.array(volume.size) - 0.5), axis=1).reshape(plane.shape)
        values[~inside] = fill
    return values


def _centroid(volume: Volume, label: int | None = None) -> np.ndarray | None:
    array = np.asarray(volume.array)
    idx = np.argwhere(array == label if label is not None else array != 0)
    if idx.size == 0:
        return None
    return volume.index_to_physical(idx.mean(axis=0)[::-1])


def _extent(volume: Volume, label: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """LPS bounding box (low, high corners) of a label (or of all non-zero voxels)."""
    array = np.asarray(volume.array)
    idx = np.argwhere(array == label if label is not None else array != 0)
    if idx.size == 0:
        return None
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    points = volume.index_to_physical(np.where(corners, hi, lo)[:, ::-1].astype(float))
    return points.min(axis=0), points.max(axis=0)


# ----------------------------------------------------------------------------- figures
def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", pad_inches=0.04)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _axes(plane: Plane, width_in: float = 3.4):
    try:
        import matplotlib
    except ImportError:
        raise BoneKitError("The report draws its images with matplotlib: pip install 'bonekit[cohort]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aspect = plane.shape[0] / plane.shape[1]
    figure, ax = plt.subplots(figsize=(width_in, max(1.5, width_in * aspect)))
    ax.set_axis_off()
    return figure, ax


def _show_ct(ax, record: CaseRecord, plane: Plane):
    grey = sample_plane(record.ct, plane, order=1, fill=_WINDOW_HU[0])
    ax.imshow(grey, cmap="gray", vmin=_WINDOW_HU[0], vmax=_WINDOW_HU[1], interpolation="bilinear")


def _outline(ax, mask: np.ndarray, colour: str, width: float = 1.2, style: str = "solid"):
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=width, linestyles=style)


def _label_value(row: dict) -> int:
    return int(row["label"])


def overview_figure(record: CaseRecord) -> str:
    """Sagittal slice through the spine, each vertebra outlined in its colour and named."""
    box = _extent(record.labels)
    centre = (box[0] + box[1]) / 2
    centroid = _centroid(record.labels)
    centre[0] = centroid[0]
    half_w, half_h = (box[1][1] - box[0][1]) / 2 + 25, (box[1][2] - box[0][2]) / 2 + 15
    step = float(np.clip(min(record.ct.spacing), 0.4, 1.0))
    plane = plane_through("sagittal", centre, half_w, half_h, step)
    figure, ax = _axes(plane, 4.6)
    _show_ct(ax, record, plane)
    labels = sample_plane(record.labels, plane, order=0, fill=0)
    for n, row in enumerate(record.rows):
        colour = _COLOURS[n % len(_COLOURS)]
        _outline(ax, labels == _label_value(row), colour, 1.4)
        point = _centroid(record.labels, _label_value(row))
        if point is None:
            continue
        c, r = plane.to_pixel(point)
        text = row["vertebra"] + (f" G{row['Genant.grade']}" if row.get("Genant.grade") else "")
        ax.text(3, r, text, color="white", fontsize=9, fontweight="bold",
                va="center", ha="left", bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5, "alpha": 0.9})
    ax.text(plane.shape[1] - 3, 2, "A ← → P", color="yellow", fontsize=8, va="top", ha="right")
    ax.text(3, plane.shape[0] - 3, f"sagittal, x = {centre[0]:.1f} mm (LPS)", color="yellow", fontsize=7,
            va="bottom")
    return _png(figure)


def _vertebra_planes(record: CaseRecord, row: dict) -> tuple[np.ndarray, float, float, float] | None:
    label = _label_value(row)
    source = record.body if record.body is not None and np.any(np.asarray(record.body.array) == label) \
        else record.labels
    box = _extent(source, label)
    if box is None:
        return None
    centre = (box[0] + box[1]) / 2
    if all(row.get(k) is not None for k in ("VOI.x", "VOI.y", "VOI.z")):
        centre = np.array([row["VOI.x"], row["VOI.y"], row["VOI.z"]], float)
    half = (box[1] - box[0]) / 2 + 6
    step = float(np.clip(min(record.ct.spacing), 0.3, 0.6))
    return centre, float(max(half[0], half[1])), float(half[2]), step


def _region_outlines(ax, record: CaseRecord, plane: Plane, label: int, voi_fill: bool):
    import matplotlib.colors as mcolors

    for name, colour, style in (("body", "#ffd700", "solid"), ("roi", "#ff4fd8", "dashed")):
        mask = getattr(record, name)
        if mask is not None:
            _outline(ax, sample_plane(mask, plane, order=0, fill=0) == label, colour, 1.0, style)
    if record.voi is not None:
        voi = sample_plane(record.voi, plane, order=0, fill=0) == label
        if voi_fill and voi.any():
            overlay = np.zeros((*voi.shape, 4))
            overlay[voi] = (*mcolors.to_rgb("#00e5ff"), 0.35)
            ax.imshow(overlay, interpolation="nearest")
        _outline(ax, voi, "#00e5ff", 1.3)


def voi_figure(record: CaseRecord, row: dict, view: str) -> str | None:
    """The vertebra on an axial or sagittal slice through its VOI: body, ROI and VOI outlined."""
    geometry = _vertebra_planes(record, row)
    if geometry is None:
        return None
    centre, half_w, half_h, step = geometry
    plane = plane_through(view, centre, half_w, half_w if view == "axial" else half_h + 4, step)
    figure, ax = _axes(plane)
    _show_ct(ax, record, plane)
    _region_outlines(ax, record, plane, _label_value(row), voi_fill=True)
    ax.set_title(f"{row['vertebra']}: VOI, {view}", fontsize=9)
    return _png(figure)


def map_figure(record: CaseRecord, row: dict, quantity: str, maximum: float) -> str | None:
    """A map of the vertebra on the axial slice through its VOI centre, as a colour overlay with a colour bar."""
    volume = record.maps.get((row["vertebra"], quantity))
    geometry = _vertebra_planes(record, row)
    if volume is None or geometry is None:
        return None
    centre, half_w, _, step = geometry
    plane = plane_through("axial", centre, half_w, half_w, min(step, float(min(volume.spacing))))
    values = sample_plane(volume, plane, order=0, fill=np.nan)
    region = record.voi if quantity == "Tb.Th" else record.roi     # the map is 0 outside its region
    if region is not None:
        values[sample_plane(region, plane, order=0, fill=0) != _label_value(row)] = np.nan
    if quantity == "Tb.Th":
        values[values <= 0] = np.nan                                  # marrow: no thickness
    figure, ax = _axes(plane)
    _show_ct(ax, record, plane)
    _region_outlines(ax, record, plane, _label_value(row), voi_fill=False)
    colours = "viridis" if quantity == "Tb.Th" else "inferno"
    shown = ax.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=0, vmax=maximum, interpolation="nearest")
    unit, title = ("mm", "apparent Tb.Th") if quantity == "Tb.Th" else ("mm", "focal BMC loss")
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(f"{title} ({unit})", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(f"{row['vertebra']}: {title}, axial", fontsize=9)
    return _png(figure)


def _map_maximum(record: CaseRecord, quantity: str) -> float:
    """One colour scale per map across the case's vertebrae (99th percentile), so colours compare."""
    values = [np.asarray(v.array)[np.isfinite(v.array) & (np.asarray(v.array) > 0)]
              for (name, q), v in record.maps.items() if q == quantity]
    values = np.concatenate(values) if values else np.array([])
    return float(np.percentile(values, 99)) if values.size else 1.0


# ----------------------------------------------------------------------------- the page
_CSS = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:62rem;
padding:0.8rem;color:#1a1a1a;line-height:1.45;font-size:16px}
h1{font-size:1.45rem;margin:0.3rem 0}h2{font-size:1.15rem;margin:1.4rem 0 0.5rem;border-bottom:1px solid #ccc}
h3{font-size:1rem;margin:1rem 0 0.3rem}
.banner{border:2px solid #b00020;background:#fdecee;color:#7a0016;padding:0.6rem 0.8rem;border-radius:6px;
font-weight:600}
.meta{display:grid;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr));gap:0.2rem 1.2rem;margin:0}
.meta div{margin:0}.meta dt{font-weight:600;display:inline}.meta dd{display:inline;margin:0 0 0 0.3rem}
.tablewrap{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:0.85rem;white-space:nowrap}
th,td{border:1px solid #bbb;padding:0.2rem 0.45rem;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
tr.fracture td{background:#fff1d6}
figure{margin:0;break-inside:avoid;page-break-inside:avoid}
figure img{width:100%;height:auto;display:block}figcaption{font-size:0.8rem;color:#444}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:0.6rem}
.overview{max-width:30rem}
dl.defs dt{font-weight:600}dl.defs dd{margin:0 0 0.4rem 1rem;font-size:0.9rem}
.small{font-size:0.85rem;color:#333}
section.vertebra{break-inside:avoid;page-break-inside:avoid}
@media print{body{max-width:none;font-size:10pt;padding:0}.banner{background:none}
 .grid{grid-template-columns:repeat(4,1fr)}.overview{max-width:12cm}a{color:inherit}}
@page{size:A4;margin:14mm}
"""


def _fmt(value, digits, scale) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if digits is None or not isinstance(value, (int, float)):
        return html.escape(str(value))
    return f"{value * scale:.{digits}f}"


def _definitions() -> dict[str, tuple[str, str]]:
    """Column -> (unit, definition) for every column a report can show."""
    from .batch import _columns

    return {d["column"]: (d["unit"], d["definition"]) for d in _columns(("morphometry", "focal"))}


def _methods(record: CaseRecord) -> str:
    settings = record.settings
    steps = settings.get("steps", [])
    parts = []
    if "segment" in steps:
        parts.append("Vertebrae were segmented from one point per vertebra by GrowCut region growing "
                     "(Vezhnevets &amp; Konouchine 2005), as Slicer's “Grow from seeds”, with VerSe label ids "
                     "(Löffler et al. 2020).")
    parts.append(f"The vertebral body was separated from the posterior elements and eroded by "
                 f"{settings.get('erosion_mm', 6):g} mm to give the trabecular ROI (Li et al. 2022); BMD is the "
                 f"ROI mean after asynchronous HU→mg HA/cm³ calibration, or the mean CT number when no "
                 f"calibration was given. A cylindrical VOI of {settings.get('voi_diameter_mm', 15):g} mm diameter "
                 f"and ±{settings.get('voi_half_height_mm', 5):g} mm height was placed on the central axial slice "
                 f"5 mm inside the anterior cortex (Jin et al. 2021, Fig. 4). Anterior, middle and posterior body "
                 f"heights give the Genant semi-quantitative grade (Genant et al. 1993: &lt;20 %, 20–25 %, "
                 f"25–40 %, ≥40 % height loss).")
    if "morphometry" in steps:
        parts.append(f"Apparent trabecular morphometry in the VOI used the "
                     f"{html.escape(str(settings.get('morphometry_threshold', 'default')))} threshold (ImageJ "
                     f"IsoData “Default” unless stated) and direct local-thickness Tb.Th and Tb.Sp "
                     f"(Hildebrand &amp; Rüegsegger 1997) with BoneJ's conventions (Doube et al. 2010); at "
                     f"clinical CT resolution these are apparent values, not micro-CT trabecular dimensions.")
    if "focal" in steps:
        parts.append("Focal bone-loss maps followed Li et al. 2022: the CT resampled to 0.3 mm, unsharp "
                     "masking (σ 0.3 mm), star-line intensity profiles every 12° in the axial plane, voids "
                     "below half of the adjacent maximum and minimum, and per voxel the intercept width, the "
                     "focal BMD loss (1200 − BMD)/1200 and the focal BMC loss (their product, mm).")
    return " ".join(parts)


_REFERENCES = (
    "Jin D, et al. Deep learning super-resolution of clinical CT for trabecular bone microstructure. "
    "Tomography 2021.",
    "Li Y, et al. Voxel-wise focal bone loss maps from clinical CT of the vertebra. JOR Spine 2022.",
    "Genant HK, Wu CY, van Kuijk C, Nevitt MC. Vertebral fracture assessment using a semiquantitative "
    "technique. J Bone Miner Res 1993;8:1137–48.",
    "Löffler MT, et al. A vertebral segmentation dataset with fracture grading (VerSe). Radiol Artif Intell 2020.",
    "Hildebrand T, Rüegsegger P. A new method for the model-independent assessment of thickness in "
    "three-dimensional images. J Microsc 1997;185:67–75.",
    "Doube M, et al. BoneJ: free and extensible bone image analysis in ImageJ. Bone 2010;47:1076–9.",
    "Vezhnevets V, Konouchine V. GrowCut: interactive multi-label N-D image segmentation. Graphicon 2005.",
    "Bouxsein ML, et al. Guidelines for assessment of bone microstructure in rodents using micro-CT "
    "(nomenclature). J Bone Miner Res 2010;25:1468–86.",
)


def _table(record: CaseRecord, definitions: dict) -> tuple[str, list[str]]:
    present = [c for c in TABLE_COLUMNS if any(r.get(c[0]) is not None for r in record.rows)]
    if record.calibrated:
        present = [c for c in present if c[0] != "HU"]
    head = "".join(f"<th scope='col'>{html.escape(c[1])}</th>" for c in present)
    body = []
    for row in record.rows:
        cls = " class='fracture'" if (row.get("Genant.grade") or 0) >= 1 else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(row.get(c[0]), c[2], c[3])}</td>" for c in present)
                    + "</tr>")
    table = (f"<div class='tablewrap'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
             f"</table></div>")
    return table, [c[0] for c in present if c[0] in definitions]


def _calibration_text(record: CaseRecord) -> str:
    c = record.calibration
    if not c:
        return ("<p><strong>Uncalibrated.</strong> No HU→BMD calibration was given for this scan, so densities "
                "are mean CT numbers in HU; no BMD was estimated.</p>")
    r2 = c.get("r2")
    who = ", ".join(x for x in (c.get("scanner"), c.get("protocol")) if x)
    return (f"<p>Asynchronous calibration{(' (' + html.escape(who) + ')') if who else ''}: "
            f"BMD [mg HA/cm³] = {c['slope_mg_cm3_per_HU']:.4f} × HU {'−' if c['intercept_mg_cm3'] < 0 else '+'} "
            f"{abs(c['intercept_mg_cm3']):.2f}"
            f"{f', R² = {r2:.4f}' if r2 is not None else ''}, from {len(c.get('pairs', []))} insert(s) "
            f"({html.escape(Path(str(record.case.get('calibration') or 'calibration.json')).name)}).</p>")


def _grades_text(record: CaseRecord) -> str:
    graded = [r for r in record.rows if r.get("Genant.grade") is not None]
    fractured = [r for r in graded if r["Genant.grade"] >= 1]
    if not graded:
        return "<p>No body heights could be measured, so no vertebra was graded.</p>"
    if not fractured:
        return (f"<p>No vertebra reached Genant grade 1 (≥ 20 % height loss) among the {len(graded)} graded: "
                f"{', '.join(r['vertebra'] for r in graded)}.</p>")
    names = {1: "mild", 2: "moderate", 3: "severe"}
    items = "".join(f"<li><strong>{r['vertebra']}</strong>: grade {r['Genant.grade']} ({names[r['Genant.grade']]}), "
                    f"{html.escape(str(r.get('Genant.type') or ''))}, height loss {100 * r['HeightLoss']:.0f} %</li>"
                    for r in fractured)
    return f"<ul>{items}</ul>"


def render_report(record: CaseRecord, generated: str | None = None) -> str:
    """The report page (HTML text, images embedded)."""
    definitions = _definitions()
    case = record.case
    image = record.ct.describe()
    generated = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    metadata = "".join(f"<div><dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd></div>"
                       for k, v in (case.get("metadata") or {}).items() if str(v).strip())
    spacing = " × ".join(f"{s:.3g}" for s in image["spacing_mm"])
    size = " × ".join(str(s) for s in image["size_ijk"])
    table, shown = _table(record, definitions)
    defs = "".join(f"<dt>{html.escape(c)}{f' ({html.escape(definitions[c][0])})' if definitions[c][0] else ''}"
                   f"</dt><dd>{html.escape(definitions[c][1])}</dd>" for c in shown)
    maxima = {q: _map_maximum(record, q) for q in ("Tb.Th", "FocalBMCLoss")}
    sections = []
    for row in record.rows:
        panels = [("VOI (cyan) in the body (yellow) and trabecular ROI (pink, dashed), axial",
                   voi_figure(record, row, "axial")),
                  ("The same VOI on the sagittal slice through its centre", voi_figure(record, row, "sagittal")),
                  ("Apparent trabecular thickness in the VOI (local thickness, mm)",
                   map_figure(record, row, "Tb.Th", maxima["Tb.Th"])),
                  ("Focal BMC loss in the ROI (Li et al. 2022; mm)",
                   map_figure(record, row, "FocalBMCLoss", maxima["FocalBMCLoss"]))]
        figures = "".join(f"<figure><img alt='{html.escape(row['vertebra'] + ': ' + caption)}' "
                          f"src='data:image/png;base64,{png}'><figcaption>{html.escape(caption)}</figcaption>"
                          f"</figure>" for caption, png in panels if png)
        sections.append(f"<section class='vertebra'><h3>{html.escape(row['vertebra'])}</h3>"
                        f"<div class='grid'>{figures}</div></section>")
    settings = "; ".join(f"{k} = {v}" for k, v in record.settings.items())
    references = "".join(f"<li>{html.escape(r)}</li>" for r in _REFERENCES)
    title = f"BoneKit report: {case['case']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="BoneKit {html.escape(record.version)}">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<p class="banner" role="note">{DISCLAIMER}</p>
<dl class="meta">
<div><dt>Case</dt><dd>{html.escape(case['case'])}</dd></div>
<div><dt>CT</dt><dd>{html.escape(Path(case['image']).name)}</dd></div>
<div><dt>Grid</dt><dd>{size} voxels, {spacing} mm, {html.escape(image['orientation'])}</dd></div>
{metadata}
<div><dt>BoneKit</dt><dd>{html.escape(record.version)}</dd></div>
<div><dt>Report made</dt><dd>{generated}</dd></div>
</dl></header>
<main>
<h2>Spine overview</h2>
<figure class="overview"><img alt="Sagittal overview with the vertebrae outlined and named"
 src="data:image/png;base64,{overview_figure(record)}">
<figcaption>Sagittal slice (anterior left, superior up), bone window {_WINDOW_HU[0]:g} to {_WINDOW_HU[1]:g} HU;
each measured vertebra outlined and named, with its Genant grade (G1–G3) when fractured.</figcaption></figure>
<h2>Fracture grades</h2>
{_grades_text(record)}
<h2>Measurements per vertebra</h2>
{table}
<p class="small">Height loss is the largest of the wedge, biconcave and crush ratios; rows with a Genant grade of
1 or more are shaded. “App.” marks apparent morphometry at CT resolution inside the cylindrical VOI.</p>
<h2>Calibration</h2>
{_calibration_text(record)}
<h2>Images per vertebra</h2>
{''.join(sections)}
<h2>Definitions</h2>
<dl class="defs">{defs}</dl>
<h2>Methods</h2>
<p>{_methods(record)}</p>
<ol class="small">{references}</ol>
<h2>Software and parameters</h2>
<p class="small">BoneKit {html.escape(record.version)}; {html.escape(settings)}.
Case folder: {html.escape(record.folder.name)}.</p>
</main>
<footer><p class="banner" role="note">{DISCLAIMER}</p></footer>
</body></html>
"""


# ----------------------------------------------------------------------------- writing (and printing)
def find_chromium() -> str | None:
    """A Chromium or Chrome executable on PATH (None when there is none)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: Chromium flags for a headless run that reaches no network (and runs as root in containers).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
                  "--mute-audio")


def print_pdf(html_path, pdf_path, timeout: float = 120) -> Path:
    """Print an HTML page to PDF with headless Chromium (A4, backgrounds kept)."""
    browser = find_chromium()
    if browser is None:
        raise BoneKitError("--pdf needs Chromium or Chrome on the PATH (Debian/Ubuntu: apt-get install chromium); "
                           "the HTML report was written and prints from any browser.")
    from ..io import atomic_path

    pdf_path = Path(pdf_path)
    with tempfile.TemporaryDirectory() as profile, atomic_path(pdf_path, ".pdf") as tmp:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                   f"--print-to-pdf={tmp}", Path(html_path).resolve().as_uri()]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BoneKitError(f"Chromium did not print the PDF within {timeout:g} s.") from None
        if done.returncode != 0 or not Path(tmp).exists() or Path(tmp).stat().st_size == 0:
            raise BoneKitError(f"Chromium could not print the PDF (exit {done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
    return pdf_path


def write_report(folder, out, pdf: bool = False, image=None) -> dict[str, Path]:
    """Write the report of a case folder to ``out`` (HTML; and ``out`` with .pdf when ``pdf``)."""
    from ..io import atomic_path

    out = Path(out).expanduser()
    if out.suffix.lower() not in (".html", ".htm"):
        raise BoneKitError(f"{out}: the report is an HTML page; give a name ending in .html.")
    record = load_case(folder, image)
    text = render_report(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".html") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    files = {"html": out}
    if pdf:
        files["pdf"] = print_pdf(out, out.with_suffix(".pdf"))
    return files


def write_reports(batch_folder, out_folder, pdf: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """One report per finished case of a batch folder, as ``out_folder/CASE.html``; returns (written,
    [(case, why not)])."""
    cases = sorted(p for p in (Path(batch_folder) / "cases").iterdir() if p.is_dir() and not p.name.startswith("."))
    written, skipped = [], []
    for folder in cases:
        try:
            written.append(write_report(folder, Path(out_folder) / f"{folder.name}.html", pdf=pdf)["html"])
        except BoneKitError as error:
            skipped.append((folder.name, str(error)))
    return written, skipped

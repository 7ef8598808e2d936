"""Cohort batch: the per-vertebra measurements of many CTs, resumable, on one machine or a Dask cluster.

``bonekit batch MANIFEST --out DIR`` runs each case of the manifest (:mod:`bonekit.cohort.manifest`)
in its own process (``python -m bonekit.cohort.batch CASE.json``), so that a crash, a memory blow-up or a
hang of one case cannot stop the others; its error is recorded and the run goes on.

Each case is computed in a staging folder and published by one rename into ``DIR/cases/<case>/`` with
its ``status.json`` (state ``done`` or ``failed``, the error, the seconds, and a fingerprint of the
inputs, settings and BoneKit version). A rerun skips every case whose status carries the same
fingerprint, so a killed run resumes where it stopped and recomputes nothing that finished; changed
inputs or settings are recomputed. Failed cases are kept as failed unless ``retry_failed``.

The results are then gathered into ``DIR/results.csv`` and ``results.parquet`` (one row per case and
vertebra: the case id, its metadata columns, then the measurements), ``columns.csv`` (the data
dictionary: column, unit, definition, step), ``failures.csv`` (case, step, error) and ``batch.json``.

Executors: a pool of ``workers`` processes on this machine, or an existing Dask distributed cluster
(``scheduler="tcp://host:8786"``; every worker needs BoneKit and the same paths). Either way the
same child command computes each case, so the results are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BoneKitError
from .manifest import Case, check_steps, read_manifest

__all__ = ["BatchSettings", "BatchSummary", "run_batch", "gather", "process_case", "compute_case", "case_fingerprint",
           "pending_cases", "staging_folder", "write_case_record", "publish_case", "report_status", "prefixed_scalars", "vertebra_name",
           "STAGING_DIR",
           "STATUS_FILE", "RESULTS_FILE", "CASE_FILE", "MAPS_DIR", "map_file"]

STATUS_FILE = "status.json"
RESULTS_FILE = "results.json"
#: the case's row, the settings, BoneKit's version and the image geometry (what a report needs)
CASE_FILE = "case.json"
#: per-vertebra maps (0 where undefined: NIfTI readers turn NaN into 0): apparent Tb.Th of the VOI's bone
#: (CT grid, cropped) and focal BMC loss in the ROI (0.3 mm grid)
MAPS_DIR = "maps"
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class BatchSettings:
    """What every case runs: steps and their parameters (the paper defaults unless changed)."""

    steps: tuple[str, ...] = ("segment", "vertebra", "morphometry", "focal")
    erosion_mm: float = 6.0
    voi_diameter_mm: float = 15.0
    voi_half_height_mm: float = 5.0
    morphometry_threshold: str = "default"
    #: seconds one case may take before it is stopped and recorded as failed (0: no limit)
    timeout_s: float = 0.0
    #: the sr step: BoneSR model (catalogue name or file), device, and whether to run a model trained
    #: at another voxel size than the CT's
    sr_model: str = "demo"
    sr_device: str = "auto"
    sr_allow_spacing: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return d


@dataclass
class BatchSummary:
    """What :func:`run_batch` did."""

    out: Path
    cases: int = 0
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "cases": self.cases, "computed": self.computed, "skipped": self.skipped,
                "failed": self.failed, "rows": self.rows, "seconds": round(self.seconds, 2),
                "files": {k: str(v) for k, v in self.files.items()}}


# ----------------------------------------------------------------------------- fingerprints
def _file_stamp(path: str | None):
    """Size and modification time of a file, or of every file in a folder (a DICOM series)."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        return sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in p.rglob("*") if f.is_file())
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def case_fingerprint(case: Case, settings: BatchSettings) -> str:
    """A hash of the case's row, its input files (sizes and times), the settings and BoneKit's version."""
    from .. import __version__

    record = {"case": case.to_dict(), "files": {k: _file_stamp(getattr(case, k)) for k in
                                                ("image", "points", "labels", "calibration")},
              "settings": settings.to_dict(), "bonekit": __version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- one case (in its own process)
def process_case(case: Case, folder: Path, settings: BatchSettings, step_log: list | None = None) -> dict:
    """Run the steps on one case, writing its masks into ``folder``; returns ``{"vertebrae": [rows]}``.

    Each row is one vertebra: the vertebra step's measurements, then the apparent morphometry inside
    its VOI (columns prefixed ``app.``), then the focal bone-loss means inside its ROI (``focal.``).
    """
    import numpy as np

    from ..calibration import Calibration
    from ..io import read_volume, write_volume

    def step(name):
        if step_log is not None:
            step_log.append(name)

    steps = settings.steps
    step("read")
    ct = read_volume(case.image)
    calibration = Calibration.load(case.calibration) if case.calibration else None
    maps = write_case_record(case, folder, settings, ct, calibration)
    if case.labels:
        labels = read_volume(case.labels).labels_on(ct)
    elif "segment" in steps:
        from ..points import read_points
        from ..segment import segment_vertebrae

        step("segment")
        labels = segment_vertebrae(ct, read_points(case.points, image=ct))
        write_volume(labels, folder / "labels.nii.gz")
    else:
        raise BoneKitError("No label map and no segment step.")
    rows = {}
    if "vertebra" in steps:
        from ..vertebra import VertebraParameters, analyse_vertebrae

        step("vertebra")
        params = VertebraParameters(erosion_mm=settings.erosion_mm, voi_diameter_mm=settings.voi_diameter_mm,
                                    voi_half_height_mm=settings.voi_half_height_mm)
        results, masks = analyse_vertebrae(ct, labels, calibration, params)
        for name in ("body", "roi", "voi"):
            write_volume(getattr(masks, name), folder / f"{name}.nii.gz")
        rows = {r.label: r.to_dict() for r in results}
        if "morphometry" in steps:
            from ..morphometry import morphometry

            step("morphometry")
            for label in rows:
                voi = masks.voi.array == label
                if voi.any():
                    r, thickness = morphometry(ct, masks.voi.with_array(voi.astype(np.uint8)),
                                               threshold=settings.morphometry_threshold, maps=True)
                    rows[label].update(prefixed_scalars("app.", r))
                    write_volume(thickness["Tb.Th"], maps / map_file(vertebra_name(label), "Tb.Th"))
        if "focal" in steps and np.asarray(masks.roi.array).any():   # no ROI (small bodies, coarse CT): empty
            from ..focal import focal_regions

            step("focal")
            for label, r, focal in focal_regions(ct, masks.roi, calibration):
                rows[label].update(prefixed_scalars("focal.", r))
                write_volume(focal["FocalBMCLoss"], maps / map_file(vertebra_name(label), "FocalBMCLoss"))
        if "sr" in steps:
            step("sr")
            for label in rows:
                voi = masks.voi.array == label
                if voi.any():
                    rows[label].update(_super_resolved_morphometry(ct, masks.voi.with_array(voi.astype(np.uint8)),
                                                                   settings))
    for label, row in rows.items():
        row.setdefault("vertebra", vertebra_name(label))
    return {"vertebrae": [rows[k] for k in sorted(rows)]}


def _super_resolved_morphometry(ct, voi, settings: BatchSettings) -> dict:
    """``sr.*`` columns: morphometry inside the VOI of its BoneSR super-resolved image (Jin et al. 2021)."""
    from ..models import resolve_model
    from ..morphometry import morphometry
    from ..sr.infer import super_resolve

    result = super_resolve(ct, resolve_model(settings.sr_model, "sr"), roi=voi, margin_mm=1.0,
                           device=settings.sr_device, allow_spacing=settings.sr_allow_spacing)
    fine = result.volume
    r, _ = morphometry(fine, voi.labels_on(fine), threshold=settings.morphometry_threshold)
    return {**prefixed_scalars("sr.", r), "sr.device": result.device, "sr.spacing_mm": float(min(fine.spacing))}


def write_case_record(case: Case, folder: Path, settings: BatchSettings, ct, calibration=None) -> Path:
    """``case.json`` (the row, settings, version, image geometry) and a copy of the calibration, what a
    report of the case reads; returns the (new) folder for the case's maps."""
    from .. import __version__
    from ..io import write_json

    write_json({"case": case.to_dict(), "settings": settings.to_dict(), "bonekit": __version__,
                "image": ct.describe()}, folder / CASE_FILE)
    if calibration is not None:
        calibration.save(folder / "calibration.json")
    maps = folder / MAPS_DIR
    maps.mkdir(exist_ok=True)
    return maps


def vertebra_name(label: int) -> str:
    from ..points import VERSE_NAMES

    return VERSE_NAMES.get(label, str(label))


def map_file(vertebra: str, quantity: str) -> str:
    """File name (in the case's ``maps/`` folder) of one vertebra's map: thickness or focal BMC loss."""
    return f"{vertebra}_{quantity.replace('.', '')}.nii.gz"


def prefixed_scalars(prefix: str, result) -> dict:
    """A result's single-valued fields as table columns named ``prefix + name`` (lists and dicts left out)."""
    return {f"{prefix}{k}": v for k, v in result.to_dict().items() if not isinstance(v, (list, dict))}


def _scalar_columns(cls) -> list[dict]:
    """The columns of a result class that :func:`_scalars` keeps (not typed as a list or a dict)."""
    return [c for c in cls.columns() if not any(word in str(c["type"]) for word in ("list", "dict"))]


def compute_case(case: Case, folder: Path, settings: BatchSettings, fingerprint: str,
                 compute: Callable[..., dict] = process_case) -> dict:
    """Run ``compute(case, folder, settings, step_log)`` (:func:`process_case` or another runner's, e.g.
    Slicer's), writing ``results.json`` and ``status.json`` into ``folder``; returns the status (never raises)."""
    from .. import __version__

    steps: list = []
    started = time.perf_counter()
    status = {"case": case.case, "fingerprint": fingerprint, "bonekit": __version__}
    if "sr" in settings.steps:
        status["gpus_visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        result = compute(case, folder, settings, steps)
        (folder / RESULTS_FILE).write_text(json.dumps(result, indent=1, default=_json_default, allow_nan=True))
        status.update(state="done", vertebrae=len(result["vertebrae"]))
    except Exception as error:  # the case failed: record why, the batch goes on
        message = str(error) if isinstance(error, BoneKitError) else f"{type(error).__name__}: {error}"
        status.update(state="failed", step=steps[-1] if steps else "start", error=message,
                      traceback=traceback.format_exc(limit=8))
    status["seconds"] = round(time.perf_counter() - started, 3)
    (folder / STATUS_FILE).write_text(json.dumps(status, indent=1))
    return status


def _child_main(argv: Sequence[str]) -> int:
    """``python -m bonekit.cohort.batch CASE.json``: compute one case into the staging folder given there."""
    job = json.loads(Path(argv[0]).read_text())
    settings = BatchSettings(**{**job["settings"], "steps": tuple(job["settings"]["steps"])})
    compute_case(Case.from_dict(job["case"]), Path(job["folder"]), settings, job["fingerprint"])
    return 0


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def execute_case(case: dict, out: str, settings: dict, fingerprint: str, threads: int = 1,
                 gpu: str | None = None) -> dict:
    """Compute one case in a child process and publish its folder; returns its status (never raises).

    Runs in the parent's worker threads, or on a Dask worker: both start the same child command.
    ``gpu`` (a CUDA device id) is the only GPU the child sees (``CUDA_VISIBLE_DEVICES``).
    """
    from .. import __version__

    out = Path(out)
    staging = staging_folder(out, case["case"])
    job = staging / "job.json"
    job.write_text(json.dumps({"case": case, "settings": settings, "fingerprint": fingerprint,
                               "folder": str(staging), "bonekit": __version__}))
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(max(1, int(threads)))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    timeout = settings.get("timeout_s") or None
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "bonekit.cohort.batch", str(job)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=timeout)
        output, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as expired:
        output, code = (expired.stdout or "") if isinstance(expired.stdout, str) else "", None
    status = _read_json(staging / STATUS_FILE)
    if status is None:   # the child died (crash, out of memory, timeout) before writing its status
        reason = (f"stopped after the {timeout:g} s time limit" if code is None
                  else f"the case's process ended with exit code {code}")
        status = {"case": case["case"], "fingerprint": fingerprint, "bonekit": __version__, "state": "failed",
                  "step": "process", "error": reason, "output": output[-2000:],
                  "seconds": round(time.perf_counter() - started, 3)}
        (staging / STATUS_FILE).write_text(json.dumps(status, indent=1))
    job.unlink(missing_ok=True)
    publish_case(staging, out, case["case"])
    return status


def staging_folder(out: Path, case_id: str) -> Path:
    """A new, empty folder where one case is computed before :func:`publish_case`."""
    staging = Path(out) / "cases" / STAGING_DIR / f"{case_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def publish_case(staging: Path, out: Path, case_id: str) -> Path:
    """Replace the case's folder by its staging folder: outputs and status appear together."""
    final = Path(out) / "cases" / case_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


# ----------------------------------------------------------------------------- the batch
def pending_cases(cases: list[Case], out: Path, settings: BatchSettings, retry_failed: bool):
    todo, skipped, prints = [], [], {}
    for case in cases:
        fingerprint = case_fingerprint(case, settings)
        prints[case.case] = fingerprint
        status = _read_json(out / "cases" / case.case / STATUS_FILE)
        if (status is not None and status.get("fingerprint") == fingerprint
                and (status.get("state") == "done" or (status.get("state") == "failed" and not retry_failed))):
            skipped.append(case.case)
        else:
            todo.append(case)
    return todo, skipped, prints


def run_batch(manifest, out, settings: BatchSettings | None = None, workers: int = 1, scheduler: str | None = None,
              retry_failed: bool = False, progress: Callable[[float, str], None] | None = None,
              log: Callable[[str], None] | None = None, compute: Callable[..., dict] | None = None,
              runner: str = "bonekit", gpus: Sequence[str] | None = None) -> BatchSummary:
    """Run every case of ``manifest`` that has not finished with the same fingerprint, then gather.

    ``compute`` (a function like :func:`process_case`) computes the cases one after the other in this
    process instead of child processes: how the Slicer batch runs the modules' logic. ``runner`` is
    recorded in ``batch.json``. ``gpus`` (CUDA device ids) gives each running case one GPU of its own;
    with fewer GPUs than ``workers`` only as many cases run at once. On Dask, start one worker per GPU
    (each with its ``CUDA_VISIBLE_DEVICES``, as dask-cuda does): the case's process inherits it.
    """
    settings = settings or BatchSettings()
    settings = BatchSettings(**{**settings.to_dict(), "steps": check_steps(settings.steps)})
    cases = read_manifest(manifest, settings.steps)         # every problem reported before any work
    if workers < 1:
        raise BoneKitError(f"--workers must be at least 1, got {workers}.")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise BoneKitError(f"{out}: exists and is not a folder; choose another --out.")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "cases" / STAGING_DIR, ignore_errors=True)   # what a killed run left half-done
    started = time.perf_counter()
    todo, skipped, prints = pending_cases(cases, out, settings, retry_failed)
    summary = BatchSummary(out=out, cases=len(cases), skipped=skipped)
    if log and skipped:
        log(f"{len(skipped)} case(s) already finished with the same inputs and settings: skipped")
    statuses = []
    jobs = [(c.to_dict(), str(out), settings.to_dict(), prints[c.case]) for c in todo]
    if todo and compute is not None:
        for n, case in enumerate(todo, start=1):
            staging = staging_folder(out, case.case)
            status = compute_case(case, staging, settings, prints[case.case], compute)
            publish_case(staging, out, case.case)
            statuses.append(report_status(status, n, len(todo), progress, log))
    elif jobs and scheduler:
        statuses = _run_dask(jobs, scheduler, progress, log)
    elif jobs:
        threads = max(1, (os.cpu_count() or 1) // workers)
        free = queue.Queue()              # GPU ids: a running case holds one, no two cases share one
        for gpu in (gpus if gpus else [None] * workers):
            free.put(gpu)

        def one(job):
            gpu = free.get()
            try:
                return execute_case(*job, threads, gpu)
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, job) for job in jobs]
            for n, future in enumerate(as_completed(futures), start=1):
                statuses.append(report_status(future.result(), n, len(jobs), progress, log))
    summary.computed = [s["case"] for s in statuses]
    shutil.rmtree(out / "cases" / STAGING_DIR, ignore_errors=True)
    summary.files, summary.rows, failed = gather(cases, out, settings.steps)
    summary.failed = failed
    summary.seconds = time.perf_counter() - started
    from ..io import write_json

    write_json({**summary.to_dict(), "settings": settings.to_dict(), "manifest": str(Path(manifest).resolve()),
                "runner": runner}, out / "batch.json")
    return summary


def report_status(status: dict, n: int, total: int, progress, log) -> dict:
    text = (f"{status['case']}: done in {status.get('seconds', 0):.1f} s" if status.get("state") == "done"
            else f"{status['case']}: FAILED at {status.get('step')}: {status.get('error')}")
    if log:
        log(text)
    if progress:
        progress(n / total, text)
    return status


def _run_dask(jobs, scheduler: str, progress, log) -> list[dict]:
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError:
        raise BoneKitError("--scheduler needs Dask distributed: pip install 'bonekit[cohort]'.") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise BoneKitError(f"Could not reach the Dask scheduler at {scheduler}: {error}.") from None
    statuses = []
    try:
        futures = [client.submit(execute_case, *job, 1, pure=False, key=f"bonekit-case-{job[0]['case']}-"
                                 f"{uuid.uuid4().hex[:6]}") for job in jobs]
        for n, future in enumerate(dask_completed(futures), start=1):
            statuses.append(report_status(future.result(), n, len(jobs), progress, log))
    finally:
        client.close()
    return statuses


# ----------------------------------------------------------------------------- gathering
def _columns(steps: Sequence[str]) -> list[dict]:
    """The data dictionary of the results table: column, unit, definition, step."""
    from ..focal import FocalResult
    from ..morphometry import MorphometryResult
    from ..vertebra import VertebraResult

    rows = [{"column": "case", "unit": "", "definition": "case id (manifest)", "step": "manifest"}]
    rows += [{"column": c["name"], "unit": c["unit"] or "", "definition": c["description"], "step": "vertebra"}
             for c in VertebraResult.columns()]
    if "morphometry" in steps:
        rows += [{"column": f"app.{c['name']}", "unit": c["unit"] or "", "step": "morphometry",
                  "definition": f"apparent (CT-resolution) {c['description']}, inside the vertebra's cylindrical VOI"}
                 for c in _scalar_columns(MorphometryResult)]
    if "sr" in steps:
        rows += [{"column": f"sr.{c['name']}", "unit": c["unit"] or "", "step": "sr",
                  "definition": f"super-resolved (BoneSR) {c['description']}, inside the vertebra's cylindrical VOI"}
                 for c in _scalar_columns(MorphometryResult)]
        rows += [{"column": "sr.device", "unit": "", "step": "sr", "definition": "where the BoneSR generator ran"},
                 {"column": "sr.spacing_mm", "unit": "mm", "step": "sr",
                  "definition": "voxel size of the super-resolved image (the CT's / the model's scale)"}]
    if "focal" in steps:
        rows += [{"column": f"focal.{c['name']}", "unit": c["unit"] or "", "step": "focal",
                  "definition": f"{c['description']}, in the vertebra's trabecular ROI"}
                 for c in _scalar_columns(FocalResult)]
    return rows


def gather(cases: list[Case], out: Path, steps: Sequence[str] = ("vertebra", "morphometry", "focal")
           ) -> tuple[dict, int, list[str]]:
    """Collect the cases' results and failures into the batch tables; returns (files, rows, failed cases)."""
    import csv

    from ..io import atomic_path

    out = Path(out)
    meta_columns: list[str] = []
    records, failures = [], []
    for case in cases:
        for key in case.metadata:
            if key not in meta_columns:
                meta_columns.append(key)
    for case in cases:
        folder = out / "cases" / case.case
        status = _read_json(folder / STATUS_FILE) or {"state": "missing", "step": "", "error": "not run"}
        if status.get("state") != "done":
            failures.append({"case": case.case, "step": status.get("step", ""), "error": status.get("error", "")})
            continue
        result = _read_json(folder / RESULTS_FILE) or {"vertebrae": []}
        for row in result["vertebrae"]:
            records.append({"case": case.case, **{k: case.metadata.get(k, "") for k in meta_columns}, **row})
    dictionary = _columns(steps)
    order = ["case", *meta_columns] + [d["column"] for d in dictionary[1:]]
    files = {}
    with atomic_path(out / "results.csv", ".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=order, extrasaction="ignore")
            writer.writeheader()
            writer.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in order} for r in records])
    files["results_csv"] = out / "results.csv"
    meta = [{"column": c, "unit": "", "definition": "subject metadata (manifest)", "step": "manifest"}
            for c in meta_columns]
    dictionary = [dictionary[0], *meta, *dictionary[1:]]
    with atomic_path(out / "columns.csv", ".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["column", "unit", "definition", "step"])
            writer.writeheader()
            writer.writerows([d for d in dictionary if d["column"] in order])
    files["columns"] = out / "columns.csv"
    with atomic_path(out / "failures.csv", ".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["case", "step", "error"])   # no time: the table is reproducible
            writer.writeheader()
            writer.writerows(failures)
    files["failures"] = out / "failures.csv"
    parquet = _write_parquet(records, order, dictionary, out / "results.parquet")
    if parquet is not None:
        files["results_parquet"] = parquet
    return files, len(records), [f["case"] for f in failures]


def _write_parquet(records: list[dict], order: list[str], dictionary: list[dict], path: Path) -> Path | None:
    """The results as Parquet, units and definitions in each field's metadata (None without pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    from ..io import atomic_path

    described = {d["column"]: d for d in dictionary}
    arrays, fields = [], []
    for column in order:
        values = [r.get(column) for r in records]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, bool} and kinds and bool not in kinds:
            array = pa.array(values, pa.int64())
        elif kinds <= {int, float} and kinds:
            array = pa.array([None if v is None else float(v) for v in values], pa.float64())
        elif kinds == {bool}:
            array = pa.array(values, pa.bool_())
        else:
            array = pa.array([None if v is None else str(v) for v in values], pa.string())
        d = described.get(column, {})
        fields.append(pa.field(column, array.type, metadata={"unit": d.get("unit", ""),
                                                             "definition": d.get("definition", "")}))
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


if __name__ == "__main__":   # the child process of one case
    sys.exit(_child_main(sys.argv[1:]))

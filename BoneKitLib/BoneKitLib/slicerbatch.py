"""Headless cohort batch in 3D Slicer: the BoneMorphometry and FocalDefect logics over a manifest.

Run by ``scripts/bonekit_slicer_batch.py`` (next to this file)::

    Slicer --no-main-window --python-script .../BoneKitLib/scripts/bonekit_slicer_batch.py \\
        -- MANIFEST --out DIR [--steps segment,vertebra,morphometry,focal] [--threshold default] [--retry-failed]

The manifest is ``bonekit batch``'s (:mod:`bonekit.cohort.manifest`), checked completely before any work.
Each case is loaded into the scene (CT, vertebra points or label map), measured by the modules' logic
(GrowCut segmentation from the points, vertebra analysis, apparent morphometry in each VOI, focal
bone-loss maps in each ROI) and published atomically into ``DIR/cases/<case>/`` with the files
``bonekit batch`` writes (``status.json`` with the same fingerprint, ``results.json``, ``case.json``,
the masks and ``maps/``); then the same tables are gathered (``results.csv``/``.parquet``,
``columns.csv``, ``failures.csv``, ``batch.json``). Both runners call the same core functions, so their
tables are equal, and each resumes the other's output folder: a case finished with the same
fingerprint is skipped.

Unlike ``bonekit batch``, the cases run one after the other in this one Slicer process: no worker
pool, no per-case process (a crash of Slicer stops the run; a rerun resumes it) and no time limit.
The vertebra regions are the module's (erosion 6 mm, VOI 15 mm wide, 10 mm high).

Exit status: 0 every case done, 3 some case failed (``failures.csv``), 2 bad arguments or manifest
(nothing written).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bonekit import BoneKitError, Volume
from bonekit.cohort.batch import (BatchSettings, BatchSummary, map_file, prefixed_scalars, run_batch,
                                  vertebra_name, write_case_record)
from bonekit.cohort.manifest import STEPS, Case, check_steps

from .segmentations import _temporaryNodes, labelmapToSegmentation, segmentationToLabelmap
from .volumes import volumeFromNode, volumeToNode

__all__ = ["EXIT_DONE", "EXIT_FAILED", "EXIT_USAGE", "runBatch", "processCase", "main", "runInSlicer"]

EXIT_DONE, EXIT_FAILED, EXIT_USAGE = 0, 3, 2


def processCase(case: Case, folder: Path, settings: BatchSettings, scene, stepLog: list | None = None) -> dict:
    """One case through the modules' logic, its files written into ``folder``: what
    :func:`bonekit.cohort.batch.process_case` computes and writes, ``{"vertebrae": [rows]}`` returned."""
    from bonekit.calibration import Calibration
    from bonekit.io import read_volume, write_volume
    from bonekit.points import VERSE_NAMES
    from BoneMorphometryLib import BoneMorphometryLibLogic
    from BoneMorphometryLib.Logic import REGIONS

    def step(name):
        if stepLog is not None:
            stepLog.append(name)

    steps = settings.steps
    step("read")
    ct = read_volume(case.image)  # bonekit's reader, as process_case: the same voxels and geometry
    maps = write_case_record(case, folder, settings, ct,
                             Calibration.load(case.calibration) if case.calibration else None)
    ctNode = volumeToNode(ct, scene, name=case.case)
    bone = BoneMorphometryLibLogic()
    if case.labels:
        vertebrae = labelmapToSegmentation(read_volume(case.labels).labels_on(ct), scene, names=VERSE_NAMES,
                                           referenceNode=ctNode, name=bone.vertebraeName)
    elif "segment" in steps:
        step("segment")
        vertebrae = bone.segment(ctNode, case.points)
        write_volume(bone.vertebraLabels(vertebrae, ct)[0], folder / "labels.nii.gz")
    else:
        raise BoneKitError("No label map and no segment step.")
    if "vertebra" not in steps:
        return {"vertebrae": []}
    step("vertebra")
    analysis = bone.analyse(ctNode, vertebrae, case.calibration)
    rows = {r.label: r.to_dict() for r in analysis.rows}
    names = {label: vertebra_name(label) for label in rows}
    regions = analysis.regions  # "L1 body", "L1 ROI", "L1 VOI" ...: a vertebra's empty region has no segment
    segmentation = regions.GetSegmentation()
    present = {suffix: [label for label in rows
                        if segmentation.GetSegmentIdBySegmentName(f"{names[label]} {suffix}")]
               for suffix, _ in REGIONS.values()}
    masks = {}
    for kind, (suffix, _) in REGIONS.items():
        ids = [segmentation.GetSegmentIdBySegmentName(f"{names[label]} {suffix}") for label in present[suffix]]
        masks[kind] = (segmentationToLabelmap(regions, ct, ids)[0] if ids
                       else ct.with_array(np.zeros(ct.shape, np.uint8), modality="SEG", units="label"))
        write_volume(masks[kind], folder / f"{kind}.nii.gz")
    if "morphometry" in steps and present["VOI"]:
        step("morphometry")
        trabecular = bone.segmentMorphometry(ctNode, regions, [f"{names[label]} VOI" for label in present["VOI"]],
                                             settings.morphometry_threshold, showThicknessMap=False)
        thickness = volumeFromNode(trabecular.thicknessMap).array
        for label in present["VOI"]:
            rows[label].update(prefixed_scalars("app.", trabecular.results[f"{names[label]} VOI"]))
            write_volume(_boxMap(ct, masks["voi"].array == label, thickness), maps / map_file(names[label], "Tb.Th"))
    if "focal" in steps and present["ROI"]:
        from FocalDefectLib import FocalDefectLibLogic

        step("focal")
        focal = FocalDefectLibLogic().process(ctNode, regions, [f"{names[label]} ROI" for label in present["ROI"]],
                                              case.calibration, showMaps=False)
        for label in present["ROI"]:
            region = f"{names[label]} ROI"
            rows[label].update(prefixed_scalars("focal.", focal.results[region]))
            loss = volumeFromNode(focal.maps[region]["FocalBMCLoss"])  # the core's map: 0.3 mm grid, 0 outside
            write_volume(loss, maps / map_file(names[label], "FocalBMCLoss"))
    for label, row in rows.items():
        row.setdefault("vertebra", names[label])
    return {"vertebrae": [rows[k] for k in sorted(rows)]}


def _boxMap(ct: Volume, region: np.ndarray, thickness: np.ndarray) -> Volume:
    """One VOI's Tb.Th map as the core returns it: on the VOI's bounding box, NaN outside its bone (the
    module's map is on the whole CT, 0 outside bone)."""
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(region))
    values = np.where(region & (thickness > 0), thickness, np.nan).astype(np.float32)
    return ct.crop(box).with_array(values[box], units="mm", modality=None, metadata={"map": "Tb.Th"})


def runBatch(manifest, out, steps: Sequence[str] | str = STEPS, retryFailed: bool = False,
             threshold: str = "default", scene=None, log: Callable[[str], None] | None = print) -> BatchSummary:
    """Every case of ``manifest`` not yet finished with the same fingerprint, one after the other in
    ``scene`` (``slicer.mrmlScene`` by default), then the batch tables (:func:`bonekit.cohort.batch.run_batch`
    with this module's :func:`processCase`).

    Raises
    ------
    BoneKitError
        A bad manifest, step or output folder: before anything is written.
    """
    import slicer
    from BoneMorphometryLib.Trabecular import parseMorphometryThreshold

    settings = BatchSettings(steps=check_steps(steps), morphometry_threshold=str(threshold))
    if "sr" in settings.steps:
        raise BoneKitError("The sr step runs in 'bonekit batch' (a process per case, one GPU each), not in the "
                           "Slicer batch; leave it out here.")
    parseMorphometryThreshold(settings.morphometry_threshold)   # checked before any work, as the manifest
    scene = slicer.mrmlScene if scene is None else scene

    def compute(case: Case, folder: Path, settings: BatchSettings, stepLog: list) -> dict:
        with _temporaryNodes(scene):  # the case's nodes leave the scene with it
            return processCase(case, folder, settings, scene, stepLog)

    return run_batch(manifest, out, settings, retry_failed=retryFailed, log=log, compute=compute, runner="Slicer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bonekit_slicer_batch.py", description="BoneKit cohort batch inside 3D "
                                "Slicer: Slicer --no-main-window --python-script bonekit_slicer_batch.py -- "
                                "MANIFEST --out DIR")
    p.add_argument("manifest", help="CSV with columns case, image [, points, labels, calibration, metadata...]")
    p.add_argument("--out", required=True, help="output folder (cases/<case>/, results.csv/.parquet, "
                                                "columns.csv, failures.csv, batch.json)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps (default {','.join(STEPS)})")
    p.add_argument("--threshold", default="default", help="morphometry threshold (default: ImageJ Default)")
    p.add_argument("--retry-failed", action="store_true", help="compute failed cases again")
    return p


def main(argv: Sequence[str] | None = None, scene=None) -> int:
    """The batch from command-line arguments (Slicer's ``sys.argv[1:]``; a leading ``--`` is dropped);
    returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage (or the help)
        return EXIT_USAGE if stop.code else EXIT_DONE
    try:
        summary = runBatch(args.manifest, args.out, args.steps, args.retry_failed, args.threshold, scene)
    except (BoneKitError, OSError) as error:
        print(f"bonekit_slicer_batch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{summary.cases} cases: {len(summary.computed)} computed, {len(summary.skipped)} already finished, "
          f"{len(summary.failed)} failed; {summary.rows} vertebra rows in {summary.seconds:.1f} s")
    for name, path in summary.files.items():
        print(f"  {name:<16} {path}")
    return EXIT_FAILED if summary.failed else EXIT_DONE


def runInSlicer(argv: Sequence[str] | None = None) -> int:
    """:func:`main`, then quit Slicer with its status (when run in the Slicer application; under pip
    slicer-core, which has no application, the status is returned)."""
    import slicer

    try:
        status = main(argv)
    except Exception:  # an unexpected error: Slicer must still quit, not wait headless forever
        traceback.print_exc()
        status = 1
    if getattr(slicer, "app", None) is not None:
        sys.stdout.flush()
        slicer.util.exit(status)
    return status

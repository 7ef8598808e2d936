"""bonekit batch: manifests checked before any work, one process per case, failures recorded, resume without
recomputation, and the same results on a local Dask cluster (loopback).

Truths: the in-process pipeline (:func:`bonekit.cohort.batch.process_case`) on the same case, byte-identical
tables across reruns and executors, and the files' own modification times (nothing rewritten on resume).
"""

import csv
import json
import shutil
from pathlib import Path

import pytest

from bonekit import BoneKitError
from bonekit.cli import main
from bonekit.cohort.batch import BatchSettings, case_fingerprint, process_case, run_batch
from bonekit.cohort.manifest import read_manifest
from bonekit.phantom import spine_phantom

STEPS = ("segment", "vertebra", "morphometry", "focal")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two coarse phantoms (L1, L2) with their centroid files, and a case whose image is not an image."""
    root = tmp_path_factory.mktemp("cohort")
    for seed in (1, 2):
        spine_phantom(seed=seed, vertebrae=("L1", "L2"), bvtv=(0.12,), spacing_mm=(1.5, 1.5, 2.0),
                      truth_morphometry=False).save(root / f"p{seed}")
    (root / "broken.nii.gz").write_text("not an image")
    manifest = root / "manifest.csv"
    manifest.write_text("case,image,points,age,fracture\n"
                        "p1,p1/phantom_ct.nii.gz,p1/phantom_seg-subreg_ctd.json,61,0\n"
                        "p2,p2/phantom_ct.nii.gz,p2/phantom_seg-subreg_ctd.json,72,1\n"
                        "bad,broken.nii.gz,p1/phantom_seg-subreg_ctd.json,80,1\n")
    return root, manifest


@pytest.fixture(scope="module")
def first_run(cohort):
    root, manifest = cohort
    summary = run_batch(manifest, root / "run", BatchSettings(steps=STEPS), workers=2)
    return root / "run", summary


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bad_manifests_are_refused_before_any_work(tmp_path):
    (tmp_path / "ct.nii.gz").write_text("x")
    bad = tmp_path / "m.csv"
    bad.write_text("case,image,points\n"
                   "a,ct.nii.gz,\n"                       # segment without points or labels
                   "a,ct.nii.gz,nowhere.json\n"           # duplicate id, missing points file
                   "b c,missing.nii.gz,\n"                # id with a space, missing image
                   ",ct.nii.gz,\n")                       # empty id
    with pytest.raises(BoneKitError) as error:
        run_batch(bad, tmp_path / "out")
    text = str(error.value)
    for expected in ("nothing was run", "line 2 (case a): the segment step needs a points file",
                     "line 3 (case a): case id 'a' already on line 2", "line 3 (case a): points nowhere.json does not",
                     "line 4 (case b c): the case id may hold", "line 4 (case b c): image missing.nii.gz does not",
                     "line 5: empty case id"):
        assert expected in text
    assert not (tmp_path / "out").exists()
    no_image = tmp_path / "n.csv"
    no_image.write_text("case,points\na,x.json\n")
    with pytest.raises(BoneKitError, match="no column 'image'; the manifest needs case, image"):
        read_manifest(no_image)
    with pytest.raises(BoneKitError, match="Unknown step 'sr2'"):
        read_manifest(bad, "segment,sr2")
    labels_only = tmp_path / "l.csv"
    labels_only.write_text("case,image\na,ct.nii.gz\n")
    with pytest.raises(BoneKitError, match="without the segment step, a label map is needed"):
        read_manifest(labels_only, "vertebra")


def test_batch_results_equal_the_pipeline_and_failures_are_recorded(cohort, first_run, tmp_path):
    root, manifest = cohort
    out, summary = first_run
    assert sorted(summary.computed) == ["bad", "p1", "p2"] and summary.failed == ["bad"] and summary.rows == 4
    table = rows(out / "results.csv")
    assert [(r["case"], r["vertebra"], r["age"], r["fracture"]) for r in table] == [
        ("p1", "L1", "61", "0"), ("p1", "L2", "61", "0"), ("p2", "L1", "72", "1"), ("p2", "L2", "72", "1")]
    case = next(c for c in read_manifest(manifest) if c.case == "p2")
    truth = process_case(case, tmp_path, BatchSettings(steps=STEPS))["vertebrae"]
    for got, want in zip(table[2:], truth):
        for column in ("HU", "Ha", "Hp", "app.BV/TV", "app.Tb.Th", "focal.FocalBMCLoss", "focal.HU"):
            assert float(got[column]) == pytest.approx(want[column], rel=1e-12), column
    [failure] = rows(out / "failures.csv")
    assert failure["case"] == "bad" and failure["step"] == "read" and "not a readable image" in failure["error"]
    assert list(failure) == ["case", "step", "error"]        # no time in the table: reruns give the same bytes
    units = {r["column"]: r["unit"] for r in rows(out / "columns.csv")}
    assert (units["HU"], units["Ha"], units["app.Tb.Th"], units["focal.FocalBMCLoss"], units["age"]) == (
        "HU", "mm", "mm", "mm", "")
    assert len(units) == len(table[0]) and "app.BA/TA.slices" not in units and "focal.parameters" not in units
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = pq.read_table(out / "results.parquet")
    assert parquet.num_rows == 4 and parquet.schema.field("HU").metadata[b"unit"] == b"HU"
    assert parquet.column("HU").to_pylist() == pytest.approx([float(r["HU"]) for r in table], rel=1e-15)
    assert (out / "cases" / "p1" / "labels.nii.gz").is_file() and (out / "cases" / "p1" / "voi.nii.gz").is_file()
    assert json.loads((out / "batch.json").read_text())["failed"] == ["bad"]


def test_a_rerun_recomputes_nothing_and_a_killed_run_resumes(cohort, first_run):
    root, manifest = cohort
    out, _ = first_run
    results = (out / "results.csv").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*") if p.is_file()}
    again = run_batch(manifest, out, BatchSettings(steps=STEPS), workers=2)
    assert again.computed == [] and sorted(again.skipped) == ["bad", "p1", "p2"]
    assert {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*") if p.is_file()} == stamps
    assert (out / "results.csv").read_bytes() == results
    # as a kill leaves it: p2 never published, a half-written staging folder
    shutil.rmtree(out / "cases" / "p2")
    (out / "cases" / ".staging" / "p2-dead").mkdir(parents=True)
    resumed = run_batch(manifest, out, BatchSettings(steps=STEPS), workers=2)
    assert resumed.computed == ["p2"] and not (out / "cases" / ".staging").exists()
    assert (out / "results.csv").read_bytes() == results
    assert (out / "cases" / "p1" / "status.json").stat().st_mtime_ns == stamps[out / "cases" / "p1" / "status.json"]


def test_changed_settings_or_inputs_change_the_fingerprint(cohort, tmp_path):
    root, manifest = cohort
    case = read_manifest(manifest)[0]
    base = case_fingerprint(case, BatchSettings())
    assert case_fingerprint(case, BatchSettings()) == base
    assert case_fingerprint(case, BatchSettings(erosion_mm=5.0)) != base
    copy = tmp_path / "ct.nii.gz"
    shutil.copy2(case.image, copy)
    moved = type(case)(**{**case.__dict__, "image": str(copy)})
    assert case_fingerprint(moved, BatchSettings()) != base


def test_a_case_past_its_time_limit_is_stopped_and_recorded(cohort, tmp_path):
    root, manifest = cohort
    one = tmp_path / "one.csv"
    one.write_text(f"case,image,points\nslow,{root}/p1/phantom_ct.nii.gz,{root}/p1/phantom_seg-subreg_ctd.json\n")
    summary = run_batch(one, tmp_path / "out", BatchSettings(steps=("segment",), timeout_s=0.3))
    assert summary.failed == ["slow"]
    [failure] = rows(tmp_path / "out" / "failures.csv")
    assert failure["step"] == "process" and "time limit" in failure["error"]


def test_a_local_dask_cluster_gives_identical_results(cohort, first_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, manifest = cohort
    out, _ = first_run
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        summary = run_batch(manifest, tmp_path / "dask", BatchSettings(steps=STEPS), scheduler=cluster.scheduler_address)
    assert sorted(summary.computed) == ["bad", "p1", "p2"] and summary.failed == ["bad"]
    assert (tmp_path / "dask" / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_cli_batch_exit_status_and_bad_scheduler(cohort, first_run, tmp_path, capsys):
    root, manifest = cohort
    out, _ = first_run
    assert main(["batch", str(manifest), "--out", str(out), "--workers", "2"]) == 3      # a case failed
    assert "0 computed, 3 already finished, 1 failed; 4 vertebra rows" in capsys.readouterr().out
    assert main(["batch", str(manifest), "--out", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "Could not reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_a_case_without_trabecular_roi_is_measured_without_focal_columns(cohort, tmp_path):
    """A body smaller than twice the erosion (coarse CT, small vertebrae) has no ROI: the case is done,
    its focal columns are empty, the rest is measured."""
    root, manifest = cohort
    case = next(c for c in read_manifest(manifest) if c.case == "p1")
    result = process_case(case, tmp_path, BatchSettings(steps=STEPS, erosion_mm=40.0))["vertebrae"]
    assert [r["vertebra"] for r in result] == ["L1", "L2"]
    assert all(r["ROI.V"] == 0 and not any(k.startswith("focal.") for k in r) for r in result)
    assert all(r["app.BV/TV"] > 0 and r["Ha"] > 0 for r in result)


def test_sr_step_measures_the_super_resolved_voi_and_each_case_holds_one_gpu(cohort, tmp_path):
    """The sr step (demo BoneSR model, on the CPU here): sr.* columns from the VOI's super-resolved image
    at the CT's spacing / the model's scale, equal to the in-process pipeline; with --gpus each case's
    process sees exactly one of the listed devices."""
    pytest.importorskip("torch")
    from bonekit.sr.model import load_model
    from bonekit.models import resolve_model

    root, manifest = cohort
    good = root / "sr.csv"   # the two good cases
    good.write_text("\n".join(manifest.read_text().splitlines()[:3]) + "\n")
    settings = BatchSettings(steps=("segment", "vertebra", "sr"), sr_allow_spacing=True, sr_device="cpu")
    summary = run_batch(good, tmp_path / "run", settings, workers=2, gpus=["7", "8"])
    assert summary.failed == [] and summary.rows == 4
    table = rows(tmp_path / "run" / "results.csv")
    scale = load_model(resolve_model("demo", "sr"))[0].scale
    for row in table:
        assert 0 < float(row["sr.BV/TV"]) < 1 and float(row["sr.Tb.Th"]) > 0 and row["sr.device"] == "cpu"
        assert float(row["sr.spacing_mm"]) == pytest.approx(1.5 / scale, rel=1e-6)
    units = {r["column"]: r["unit"] for r in rows(tmp_path / "run" / "columns.csv")}
    assert units["sr.Tb.Th"] == "mm" and units["sr.spacing_mm"] == "mm" and "app.BV/TV" not in units
    statuses = [json.loads((tmp_path / "run" / "cases" / c / "status.json").read_text()) for c in ("p1", "p2")]
    assert sorted(s["gpus_visible"] for s in statuses) in (["7", "8"], ["7", "7"], ["8", "8"])
    case = next(c for c in read_manifest(good) if c.case == "p1")
    (tmp_path / "p1").mkdir()
    truth = process_case(case, tmp_path / "p1", settings)["vertebrae"]
    assert [float(r["sr.BV/TV"]) for r in table[:2]] == pytest.approx([t["sr.BV/TV"] for t in truth], rel=1e-6)
    with pytest.raises(BoneKitError, match="Unknown step 'sr2'"):
        read_manifest(good, "segment,sr2")

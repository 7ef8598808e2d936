"""The headless Slicer batch (BoneKitLib.slicerbatch) on a scene built with pip slicer-core.

Truths: ``bonekit batch`` (:func:`bonekit.cohort.batch.run_batch`, one process per case, the core functions
called directly) on the same manifest: its tables, per-case files and fingerprints; the files' own
modification times (nothing rewritten on resume).
Cohort: test_cohort_batch's, two coarse phantoms (L1, L2 at 1.5 x 1.5 x 2 mm) with VerSe centroid files and
a case whose image is not an image, and its ``bonekit batch`` run.
"""

import json
import runpy

import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import REPOSITORY, slicer_app  # noqa: E402,F401  (pytest fixture)
from test_cohort_batch import cohort, first_run, rows  # noqa: E402,F401  (pytest fixtures: the cohort, bonekit batch)

from BoneKitLib.slicerbatch import EXIT_DONE, EXIT_FAILED, EXIT_USAGE, main  # noqa: E402
from bonekit.cohort.batch import BatchSettings, run_batch  # noqa: E402

SCRIPT = REPOSITORY / "BoneKitLib" / "BoneKitLib" / "scripts" / "bonekit_slicer_batch.py"


def test_slicer_batch_writes_what_bonekit_batch_writes_and_resumes(slicer_app, cohort, first_run, capsys):
    root, manifest = cohort
    out, (core, _) = root / "slicer", first_run
    assert main([str(manifest), "--out", str(out)]) == EXIT_FAILED   # a case failed, the others are done
    assert "3 cases: 3 computed, 0 already finished, 1 failed; 4 vertebra rows" in capsys.readouterr().out
    assert slicer_app.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0  # cleared

    table = rows(out / "results.csv")
    assert [(r["case"], r["vertebra"], r["age"]) for r in table] == [("p1", "L1", "61"), ("p1", "L2", "61"),
                                                                      ("p2", "L1", "72"), ("p2", "L2", "72")]
    assert "app.Tb.Th" in table[0] and "focal.FocalBMCLoss" in table[0]
    for name in ("results.csv", "columns.csv"):  # the same core functions on the same voxels: every digit equal
        assert (out / name).read_bytes() == (core / name).read_bytes(), name
    [failure] = rows(out / "failures.csv")
    assert failure["case"] == "bad" and failure["step"] == "read" and "not a readable image" in failure["error"]
    assert json.loads((out / "batch.json").read_text())["failed"] == ["bad"]

    for case in ("p1", "p2", "bad"):
        status, want = (json.loads((o / "cases" / case / "status.json").read_text()) for o in (out, core))
        assert (status["state"], status["fingerprint"]) == (want["state"], want["fingerprint"])
    files = [sorted(p.relative_to(o / "cases" / "p2") for p in (o / "cases" / "p2").rglob("*") if p.is_file())
             for o in (out, core)]
    assert files[0] == files[1] and len(files[0]) == 11   # status, results, case, labels, 3 masks, 4 maps
    for name in files[0]:   # byte for byte: results.json, case.json, the masks and maps (voxels and header)
        if name.name != "status.json":  # its seconds differ
            assert (out / "cases" / "p2" / name).read_bytes() == (core / "cases" / "p2" / name).read_bytes(), name

    # a rerun recomputes nothing, and exits the same
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*") if p.is_file()}
    assert main(["--", str(manifest), "--out", str(out)]) == EXIT_FAILED
    assert "0 computed, 3 already finished, 1 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*") if p.is_file()} == stamps
    # the same fingerprints: bonekit batch resumes the Slicer batch's folder (and the other way round)
    assert run_batch(manifest, out, BatchSettings()).computed == []


def test_bad_manifest_or_arguments_exit_2_and_write_nothing(slicer_app, cohort, tmp_path, capsys):
    root, manifest = cohort
    bad = tmp_path / "bad.csv"
    bad.write_text(f"case,image,points\na,{root}/p1/phantom_ct.nii.gz,\nb,missing.nii.gz,x.json\n")
    out = tmp_path / "out"
    assert main([str(bad), "--out", str(out)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "nothing was run" in error and "line 2 (case a): the segment step needs a points file" in error
    assert "line 3 (case b): image missing.nii.gz does not exist" in error
    for arguments, message in ((["--steps", "segment,sr"], "The sr step runs in 'bonekit batch'"),
                               (["--steps", "segment,sr2"], "Unknown step 'sr2'"),
                               (["--threshold", "bright"], "The morphometry threshold must be"),
                               ([], "the following arguments are required: --out")):  # argparse's usage
        out_ = ["--out", str(out)] if arguments else []
        assert main([str(manifest), *out_, *arguments]) == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert not out.exists()
    out.write_text("a file")
    assert main([str(manifest), "--out", str(out)]) == EXIT_USAGE
    assert "exists and is not a folder" in capsys.readouterr().err


def test_the_entry_script_runs_a_labelled_case(slicer_app, cohort, tmp_path, monkeypatch):
    from bonekit.cohort.batch import process_case
    from bonekit.cohort.manifest import read_manifest

    root, _ = cohort
    one = tmp_path / "one.csv"
    one.write_text(f"case,image,labels\nlabelled,{root}/p1/phantom_ct.nii.gz,{root}/p1/phantom_seg-vert_msk.nii.gz\n")
    monkeypatch.setattr("sys.argv", [str(SCRIPT), "--", str(one), "--out", str(tmp_path / "out"),
                                     "--steps", "vertebra"])  # as Slicer sets it: the script, then its arguments
    assert runpy.run_path(str(SCRIPT), run_name="__main__")["exitStatus"] == EXIT_DONE
    results = json.loads((tmp_path / "out" / "cases" / "labelled" / "results.json").read_text())
    [case] = read_manifest(one, "vertebra")
    (tmp_path / "core").mkdir()
    assert results == process_case(case, tmp_path / "core", BatchSettings(steps=("vertebra",)))
    assert [r["vertebra"] for r in results["vertebrae"]] == ["L1", "L2"] and "app.Tb.Th" not in results["vertebrae"][0]
    assert not (tmp_path / "out" / "cases" / "labelled" / "labels.nii.gz").exists()  # given, not segmented

"""``bonekit stats``: validation statistics from a results table (CSV, TSV or Parquet)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_stats_parser"]


def _table(args, *columns):
    from .stats import read_table

    return read_table(args.table, [c for c in columns if c])


def _finish(args, record: dict, lines: list[str]) -> int:
    from ..io import write_json

    print("\n".join(lines))
    if args.json:
        write_json(record, args.json)
    return 0


def _plots(args) -> Path | None:
    if not args.plots:
        return None
    folder = Path(args.plots).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _ci(r: dict, digits: int = 3) -> str:
    return f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"


def cmd_correlate(args) -> int:
    from . import stats

    table = _table(args, args.x, args.y)
    methods = ["pearson", "spearman"] if args.method == "both" else [args.method]
    results = [stats.correlation(table[args.x], table[args.y], m) for m in methods]
    lines = [f"{r['method']:<9} r {r['r']:.3f} {_ci(r)} (95 % CI, Fisher z), p {r['p']:.3g}, n {r['n']}"
             + (f" ({r['excluded']} rows left out)" if r["excluded"] else "") for r in results]
    folder = _plots(args)
    if folder is not None:
        path = stats.scatter_plot(table[args.x], table[args.y], folder / f"scatter_{args.x}_{args.y}.png",
                                  labels=(args.x, args.y), result=results[0])
        lines.append(f"plot -> {path}")
    return _finish(args, {"x": args.x, "y": args.y, "correlations": results}, lines)


def cmd_compare(args) -> int:
    import pandas as pd

    from . import stats

    table = _table(args, args.a, args.b)
    a, b = (pd.to_numeric(table[c], errors="coerce").to_numpy(float) for c in (args.a, args.b))
    paired, ba = stats.paired_comparison(a, b), stats.bland_altman(a, b)
    both = pd.DataFrame({"subject": range(len(a)), args.a: a, args.b: b}).dropna()
    icc = stats.icc(both.melt(id_vars="subject", var_name="method", value_name="value"), "subject", "method", "value")
    u = f" {args.units}" if args.units else ""
    lines = [f"{args.a} - {args.b}: mean difference {paired['mean_difference']:.4g}{u} {_ci(paired, 4)}, "
             f"paired t {paired['t']:.3f} (df {paired['df']}), p {paired['p_t']:.3g}; Wilcoxon p "
             f"{paired['p_wilcoxon']:.3g}; n {paired['n']}",
             f"Bland-Altman: bias {ba['bias']:.2f}{u}, limits of agreement {ba['loa_low']:.2f} to "
             f"{ba['loa_high']:.2f}{u} (bias ± 1.96 SD, SD {ba['sd']:.2f})"]
    lines += [f"{r['shrout_fleiss']} ({r['description']}): {r['icc']:.3f} {_ci(r, 2)}" for r in icc
              if r["shrout_fleiss"] in ("ICC(2,1)", "ICC(3,1)")]
    folder = _plots(args)
    if folder is not None:
        path = stats.bland_altman_plot(a, b, folder / f"bland_altman_{args.a}_{args.b}.png", ba,
                                       labels=(args.a, args.b), units=args.units or "")
        lines.append(f"plot -> {path}")
    return _finish(args, {"a": args.a, "b": args.b, "paired": paired, "bland_altman": ba, "icc": icc}, lines)


def cmd_icc(args) -> int:
    from . import stats

    rows = stats.icc(_table(args, args.subject, args.rater, args.value), args.subject, args.rater, args.value)
    lines = [f"{r['shrout_fleiss']:<9} = {r['form']:<9} {r['icc']:.3f} {_ci(r, 2)}  F({r['df1']}, {r['df2']}) "
             f"{r['F']:.3f}, p {r['p']:.3g}  {r['description']}" for r in rows]
    return _finish(args, {"value": args.value, "icc": rows}, lines)


def cmd_kendall(args) -> int:
    from . import stats

    r = stats.kendalls_w(_table(args, args.subject, args.rater, args.value), args.subject, args.rater, args.value)
    return _finish(args, r, [f"Kendall's W {r['W']:.3f} ({r['raters']} raters, {r['subjects']} subjects); Friedman "
                             f"chi-square {r['Q']:.3f}, df {r['df']}, p {r['p']:.3g}"])


def cmd_precision(args) -> int:
    from . import stats

    r = stats.precision(_table(args, args.subject, args.value), args.subject, args.value)
    u = f" {args.units}" if args.units else ""
    lines = [f"precision (ISCD): RMS-SD {r['rms_sd']:.4g}{u}, RMS-CV {r['rms_cv_percent']:.2f} %; "
             f"LSC {r['lsc']:.4g}{u} ({r['lsc_percent']:.2f} %) at 95 %; {r['subjects']} subjects, "
             f"{r['measurements']} measurements, {r['df']} degrees of freedom"]
    if not r["enough_df"]:
        lines.append("note: ISCD asks for at least 30 degrees of freedom (30 patients twice or 15 three times)")
    return _finish(args, r, lines)


def cmd_logistic(args) -> int:
    from . import stats

    r = stats.logistic_regression(_table(args, args.outcome, *args.predictors), args.outcome, args.predictors)
    lines = [f"{p['predictor']}: odds ratio per SD ({p['sd']:.4g}) {p['odds_ratio_per_sd']:.3f} {_ci(p)}, "
             f"p {p['p']:.3g}" for p in r["predictors"]]
    lines.append(f"{r['n']} cases, {r['events']} with {args.outcome} = 1; McFadden pseudo-R² {r['pseudo_r2']:.3f}")
    return _finish(args, r, lines)


def add_stats_parser(sub) -> None:
    """Register ``bonekit stats`` and its analyses."""
    stats = sub.add_parser("stats", help="validation statistics from a results table: correlation, paired tests, "
                                         "Bland-Altman, ICC, precision (ISCD), Kendall's W, logistic regression")
    ssub = stats.add_subparsers(dest="stats_command", metavar="ANALYSIS")
    ssub.required = True

    def analysis(name, help, func, *columns):
        p = ssub.add_parser(name, help=help)
        p.add_argument("table", help="results table (.csv, .tsv or .parquet), e.g. from bonekit batch")
        for column, text in columns:
            if column.startswith("--"):
                p.add_argument(column, required=True, help=text)
            else:
                p.add_argument(column, help=text)
        p.add_argument("--json", metavar="OUT.json", help="write the numbers")
        p.set_defaults(func=func)
        return p

    p = analysis("correlate", "Pearson and/or Spearman r with 95 % CI", cmd_correlate, ("x", "column"), ("y", "column"))
    p.add_argument("--method", choices=("pearson", "spearman", "both"), default="both")
    p.add_argument("--plots", metavar="DIR", help="write a scatter plot (PNG) here")
    p = analysis("compare", "two methods on the same cases: paired t, Wilcoxon, Bland-Altman, ICC", cmd_compare,
                 ("a", "column of method A"), ("b", "column of method B"))
    p.add_argument("--units", help="units of the two columns, for the text and the plot")
    p.add_argument("--plots", metavar="DIR", help="write a Bland-Altman plot (PNG) here")
    long = (("--subject", "column naming the subject (patient, vertebra)"),
            ("--rater", "column naming the rater, reader, session or method"), ("--value", "column of the measurement"))
    analysis("icc", "the six intraclass correlations of a long table (one row per subject and rater)", cmd_icc, *long)
    analysis("kendall", "Kendall's W of raters ranking subjects, with Friedman's test", cmd_kendall, *long)
    p = analysis("precision", "ISCD precision: RMS-SD, RMS-CV and least significant change of repeated scans",
                 cmd_precision, long[0], long[2])
    p.add_argument("--units", help="units of the measurement (e.g. mg/cm3)")
    p = analysis("logistic", "odds ratio per SD of each predictor for a 0/1 outcome (logistic regression)",
                 cmd_logistic, ("outcome", "0/1 column, e.g. fracture"))
    p.add_argument("predictors", nargs="+", help="predictor columns (z-scored; adjusted for each other)")


def cmd_batch(args) -> int:
    from ..cli import log, progress_for
    from .batch import BatchSettings, run_batch

    settings = BatchSettings(steps=tuple(s.strip() for s in args.steps.split(",") if s.strip()),
                             erosion_mm=args.erosion, voi_diameter_mm=args.voi_diameter,
                             voi_half_height_mm=args.voi_half_height, morphometry_threshold=args.threshold,
                             timeout_s=args.timeout, sr_model=args.sr_model, sr_device=args.sr_device,
                             sr_allow_spacing=args.allow_spacing)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    with progress_for(args, "batch") as progress:
        summary = run_batch(args.manifest, args.out, settings, workers=args.workers, scheduler=args.scheduler,
                            retry_failed=args.retry_failed, progress=progress, log=log, gpus=gpus)
    print(f"{summary.cases} cases: {len(summary.computed)} computed, {len(summary.skipped)} already finished, "
          f"{len(summary.failed)} failed; {summary.rows} vertebra rows in {summary.seconds:.1f} s")
    for name, path in summary.files.items():
        print(f"  {name:<16} {path}")
    return 3 if summary.failed else 0


def add_batch_parser(sub) -> None:
    """Register ``bonekit batch``."""
    from .manifest import ALL_STEPS, STEPS

    p = sub.add_parser("batch", help="per-vertebra measurements of a cohort (a manifest of CTs), resumable, on "
                                     "worker processes or a Dask cluster")
    p.add_argument("manifest", help="CSV with columns case, image [, points, labels, calibration, metadata...]")
    p.add_argument("--out", required=True, help="output folder (cases/<case>/, results.csv/.parquet, "
                                                "columns.csv, failures.csv, batch.json)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps of {','.join(ALL_STEPS)} "
                                                           f"(default {','.join(STEPS)})")
    p.add_argument("--workers", type=int, default=1, help="cases computed at once on this machine (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask distributed scheduler "
                                                          "(tcp://host:8786) instead")
    p.add_argument("--retry-failed", action="store_true", help="compute failed cases again")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S", help="stop a case after S seconds (0: never)")
    p.add_argument("--erosion", type=float, default=6.0, help="ROI erosion of the body in mm (default 6)")
    p.add_argument("--voi-diameter", type=float, default=15.0, help="VOI diameter in mm (default 15)")
    p.add_argument("--voi-half-height", type=float, default=5.0, help="VOI half height in mm (default 5)")
    p.add_argument("--threshold", default="default", help="morphometry threshold (default: ImageJ Default)")
    p.add_argument("--sr-model", default="demo", help="sr step: BoneSR model, catalogue name or file (default demo)")
    p.add_argument("--sr-device", default="auto", help="sr step: auto, cuda or cpu (default auto)")
    p.add_argument("--allow-spacing", action="store_true",
                   help="sr step: run a model trained at another voxel size than the CT's")
    p.add_argument("--gpus", metavar="IDS", help="CUDA device ids (0,1,...): each running case gets one of its own")
    p.add_argument("--progress-lines", action="store_true", help="print 'PROGRESS fraction message' lines")
    p.set_defaults(func=cmd_batch)


def cmd_report(args) -> int:
    from .report import write_report, write_reports

    source = Path(args.case_dir)
    if (source / "cases").is_dir() and not (source / "status.json").exists():   # a whole batch folder
        written, skipped = write_reports(source, args.out, pdf=args.pdf)
        for path in written:
            print(f"report -> {path}")
        for case, reason in skipped:
            print(f"{case}: no report ({reason})")
        return 0 if written else 3
    files = write_report(source, args.out, pdf=args.pdf, image=args.image)
    for kind, path in files.items():
        print(f"{kind} report -> {path}")
    return 0


def add_report_parser(sub) -> None:
    """Register ``bonekit report``."""
    p = sub.add_parser("report", help="per-patient report (self-contained HTML, optional PDF) of a batch case")
    p.add_argument("case_dir", help="a case folder of bonekit batch (OUT/cases/CASE), or the batch folder OUT "
                                    "for one report per finished case")
    p.add_argument("--out", required=True, help="report.html (for a batch folder: the folder for CASE.html)")
    p.add_argument("--pdf", action="store_true", help="also print it to PDF (needs Chromium or Chrome)")
    p.add_argument("--image", help="the case's CT, when it has moved since the batch ran")
    p.set_defaults(func=cmd_report)

"""Validation statistics the seed papers report, computed from a results table (``bonekit stats``).

Every function takes plain columns (or a long table) and returns a dict of numbers with the method
stated, so that a paper's methods section can be written from it:

* :func:`correlation`: Pearson or Spearman r with its 95 % confidence interval (Fisher z; pingouin)
  and p-value (scipy);
* :func:`paired_comparison`: paired t-test (with the confidence interval of the mean difference) and
  Wilcoxon signed-rank test (scipy);
* :func:`bland_altman`: bias, SD of the differences, 95 % limits of agreement (bias ± 1.96 SD) and
  their confidence intervals (Bland & Altman 1999: SE of the bias s/√n, of a limit √(3s²/n));
* :func:`icc`: the six intraclass correlations of Shrout & Fleiss 1979 / McGraw & Wong 1996
  (pingouin), each named by its form;
* :func:`precision`: short-term precision as the ISCD precision calculator defines it: root-mean-square
  SD (and CV) over subjects scanned repeatedly, and the least significant change LSC = 2.77 × RMS-SD;
* :func:`kendalls_w`: Kendall's coefficient of concordance W with Friedman's test (pingouin);
* :func:`logistic_regression`: odds ratios per standard deviation of each predictor (statsmodels Logit
  on z-scored predictors), with 95 % confidence intervals.

Rows with a missing value in a column an analysis uses are left out, and the count is reported.
Plots (:func:`bland_altman_plot`, :func:`scatter_plot`) are PNG files (matplotlib, no display).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BoneKitError

__all__ = ["read_table", "correlation", "paired_comparison", "bland_altman", "icc", "ICC_FORMS", "precision",
           "kendalls_w", "logistic_regression", "bland_altman_plot", "scatter_plot", "LSC_FACTOR"]

#: ISCD: least significant change at 95 % confidence = 1.96 * sqrt(2) * precision error (rounded as ISCD does).
LSC_FACTOR = 2.77

#: pingouin's ICC type -> (Shrout & Fleiss name, McGraw & Wong description).
ICC_FORMS = {
    "ICC(1,1)": ("ICC(1,1)", "one-way random effects, absolute agreement, single measurement"),
    "ICC(A,1)": ("ICC(2,1)", "two-way random effects, absolute agreement, single measurement"),
    "ICC(C,1)": ("ICC(3,1)", "two-way mixed effects, consistency, single measurement"),
    "ICC(1,k)": ("ICC(1,k)", "one-way random effects, absolute agreement, mean of k measurements"),
    "ICC(A,k)": ("ICC(2,k)", "two-way random effects, absolute agreement, mean of k measurements"),
    "ICC(C,k)": ("ICC(3,k)", "two-way mixed effects, consistency, mean of k measurements"),
}


def _stats_packages():
    import importlib

    for name in ("pandas", "pingouin", "statsmodels"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise BoneKitError(f"bonekit stats needs {name}: pip install 'bonekit[cohort]'.") from None


def read_table(path, columns: Sequence[str] = ()):
    """A results table (CSV, TSV or Parquet) as a pandas DataFrame; ``columns`` must be in it."""
    _stats_packages()
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BoneKitError(f"{path}: no such table.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise BoneKitError(f"{path}: read a .csv, .tsv or .parquet table.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise BoneKitError(f"{path}: no column {', '.join(repr(c) for c in missing)}; it has "
                           f"{', '.join(map(str, table.columns))}.")
    return table


def _numeric(table, columns: Sequence[str]):
    """The rows of ``table`` with a number in every column (others left out), and how many were left out."""
    import pandas as pd

    data = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    complete = data.dropna()
    return complete, int(len(data) - len(complete))


def _pair(a, b, minimum: int = 3):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise BoneKitError(f"Paired analyses need two columns of the same length ({a.shape} and {b.shape}).")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < minimum:
        raise BoneKitError(f"Only {int(keep.sum())} complete pairs; at least {minimum} are needed.")
    return a[keep], b[keep], int((~keep).sum())


def correlation(x, y, method: str = "pearson", confidence: float = 0.95) -> dict:
    """Pearson or Spearman correlation with a Fisher-z confidence interval and a two-sided p-value."""
    _stats_packages()
    import pingouin as pg
    from scipy import stats

    x, y, dropped = _pair(x, y, 4)
    if method == "pearson":
        result = stats.pearsonr(x, y)
        ci = result.confidence_interval(confidence)
        low, high = float(ci.low), float(ci.high)
    elif method == "spearman":
        result = stats.spearmanr(x, y)
        low, high = pg.compute_esci(float(result.statistic), len(x), len(x), eftype="r", confidence=confidence,
                                    decimals=12)
    else:
        raise BoneKitError(f"Unknown correlation '{method}': use pearson or spearman.")
    return {"method": method, "n": len(x), "excluded": dropped, "r": float(result.statistic),
            "ci_low": float(low), "ci_high": float(high), "confidence": confidence, "p": float(result.pvalue),
            "ci_method": "Fisher z transform"}


def paired_comparison(a, b, confidence: float = 0.95) -> dict:
    """Paired t-test of ``a - b`` (with the CI of the mean difference) and the Wilcoxon signed-rank test."""
    from scipy import stats

    a, b, dropped = _pair(a, b)
    t = stats.ttest_rel(a, b)
    ci = t.confidence_interval(confidence)
    differences = a - b
    out = {"n": len(a), "excluded": dropped, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
           "mean_difference": float(differences.mean()), "sd_difference": float(differences.std(ddof=1)),
           "t": float(t.statistic), "df": int(t.df), "p_t": float(t.pvalue), "ci_low": float(ci.low),
           "ci_high": float(ci.high), "confidence": confidence}
    if np.all(differences == 0):
        out.update(wilcoxon_statistic=float("nan"), p_wilcoxon=1.0)
    else:
        w = stats.wilcoxon(a, b)
        out.update(wilcoxon_statistic=float(w.statistic), p_wilcoxon=float(w.pvalue))
    return out


def bland_altman(a, b, sd_factor: float = 1.96, confidence: float = 0.95) -> dict:
    """Bias (mean of ``a - b``), SD of the differences, limits of agreement bias ± ``sd_factor`` SD, and
    confidence intervals of the bias and of each limit (Bland & Altman 1999, t quantile with n - 1 df)."""
    from scipy import stats

    a, b, dropped = _pair(a, b)
    d = a - b
    n, bias, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    q = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    se_bias, se_limit = sd / math.sqrt(n), math.sqrt(3 * sd ** 2 / n)
    low, high = bias - sd_factor * sd, bias + sd_factor * sd
    return {"n": n, "excluded": dropped, "bias": bias, "sd": sd, "sd_factor": sd_factor, "loa_low": low,
            "loa_high": high, "bias_ci": [bias - q * se_bias, bias + q * se_bias],
            "loa_low_ci": [low - q * se_limit, low + q * se_limit],
            "loa_high_ci": [high - q * se_limit, high + q * se_limit], "confidence": confidence,
            "differences": "a - b"}


def icc(table, subject: str, rater: str, value: str) -> list[dict]:
    """All six ICC forms of a long table (one row per subject and rater/session), with F test and 95 % CI.

    Each row names its form twice: pingouin's (McGraw & Wong, e.g. ICC(A,1)) and Shrout & Fleiss's
    (ICC(2,1)), with a description. Subjects missing a rating are left out (pingouin's ``nan_policy``).
    """
    _stats_packages()
    import pingouin as pg

    import pandas as pd

    data = table[[subject, rater, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce")
    counts = data.dropna().groupby(subject)[rater].nunique()
    if len(counts) < 2 or counts.max() < 2:
        raise BoneKitError("An ICC needs at least 2 subjects each rated by at least 2 raters (or sessions).")
    result = pg.intraclass_corr(data, targets=subject, raters=rater, ratings=value, nan_policy="omit")
    rows = []
    for _, r in result.iterrows():
        shrout, description = ICC_FORMS[r["Type"]]
        rows.append({"form": r["Type"], "shrout_fleiss": shrout, "description": description, "icc": float(r["ICC"]),
                     "F": float(r["F"]), "df1": int(r["df1"]), "df2": int(r["df2"]), "p": float(r["pval"]),
                     "ci_low": float(r["CI95"][0]), "ci_high": float(r["CI95"][1]), "confidence": 0.95,
                     "subjects": int(counts[counts == counts.max()].size)})
    return rows


def precision(table, subject: str, value: str) -> dict:
    """Short-term precision of repeated measurements per subject, as the ISCD precision calculator.

    Per subject with two or more measurements: SD (n - 1 denominator) and CV = SD / mean. The
    precision error is the root mean square of the SDs, pooled by degrees of freedom
    (√(Σ (nᵢ - 1) SDᵢ² / Σ (nᵢ - 1)), the plain RMS when every subject has the same count), and
    likewise for the CV; the least significant change is LSC = 2.77 × precision error. ISCD asks for
    at least 30 degrees of freedom (30 patients scanned twice, or 15 three times).
    """
    data, dropped = _numeric(table, [value])
    groups = [g.to_numpy(float) for _, g in data[value].groupby(table.loc[data.index, subject]) if len(g) >= 2]
    if not groups:
        raise BoneKitError(f"No subject in '{subject}' has two or more measurements of '{value}'.")
    dof = np.array([len(g) - 1 for g in groups], float)
    sds = np.array([g.std(ddof=1) for g in groups])
    means = np.array([g.mean() for g in groups])
    if np.any(means == 0):
        raise BoneKitError(f"A subject's mean '{value}' is 0: the CV is undefined.")
    rms_sd = float(np.sqrt(np.sum(dof * sds ** 2) / dof.sum()))
    rms_cv = float(np.sqrt(np.sum(dof * (sds / means) ** 2) / dof.sum()))
    return {"subjects": len(groups), "measurements": int(sum(len(g) for g in groups)), "df": int(dof.sum()),
            "excluded": dropped, "rms_sd": rms_sd, "rms_cv_percent": 100 * rms_cv, "lsc": LSC_FACTOR * rms_sd,
            "lsc_percent": 100 * LSC_FACTOR * rms_cv, "lsc_factor": LSC_FACTOR,
            "enough_df": bool(dof.sum() >= 30)}


def kendalls_w(table, subject: str, rater: str, value: str) -> dict:
    """Kendall's W of raters ranking subjects (rows: subject x rater), with Friedman's chi-square test.

    W = Q / (n (k - 1)) with Friedman's Q over n subjects and k raters (pingouin; no tie correction).
    Subjects missing a rating are left out.
    """
    _stats_packages()
    import pingouin as pg

    data, dropped = _numeric(table, [value])
    data = data.assign(**{subject: table.loc[data.index, subject], rater: table.loc[data.index, rater]})
    wide = data.pivot_table(index=subject, columns=rater, values=value, aggfunc="first").dropna()
    if wide.shape[0] < 2 or wide.shape[1] < 2:
        raise BoneKitError("Kendall's W needs at least 2 subjects rated by at least 2 raters.")
    # Kendall's W ranks the subjects within each rater: Friedman with the subjects as the "within" factor
    long = wide.reset_index().melt(id_vars=subject, var_name=rater, value_name=value)
    result = pg.friedman(long, dv=value, within=subject, subject=rater).iloc[0]
    return {"W": float(result["W"]), "Q": float(result["Q"]), "df": int(result["ddof1"]),
            "p": float(result["p_unc"]), "subjects": int(wide.shape[0]), "raters": int(wide.shape[1]),
            "excluded": dropped}


def logistic_regression(table, outcome: str, predictors: Sequence[str], confidence: float = 0.95) -> dict:
    """Odds ratio per standard deviation of each predictor, from one logistic model of a 0/1 outcome.

    The predictors are z-scored (sample SD) before the fit (statsmodels Logit, maximum likelihood), so
    each coefficient's exponential is the odds ratio for a one-SD increase, adjusted for the others.
    """
    _stats_packages()
    import statsmodels.api as sm

    data, dropped = _numeric(table, [outcome, *predictors])
    y = data[outcome].to_numpy(float)
    if not np.all(np.isin(y, (0.0, 1.0))) or len(np.unique(y)) < 2:
        raise BoneKitError(f"The outcome '{outcome}' must be 0 or 1 with both present (e.g. fracture yes = 1).")
    x = data[list(predictors)].to_numpy(float)
    sd = x.std(axis=0, ddof=1)
    if np.any(sd == 0):
        raise BoneKitError("A predictor is constant: it has no standard deviation.")
    z = (x - x.mean(axis=0)) / sd
    model = sm.Logit(y, sm.add_constant(z, has_constant="add"))
    try:
        fit = model.fit(disp=False)
    except Exception as error:   # perfect separation, singular matrix
        raise BoneKitError(f"The logistic model could not be fitted: {error}.") from None
    ci = np.asarray(fit.conf_int(1 - confidence))
    rows = [{"predictor": p, "sd": float(sd[i]), "odds_ratio_per_sd": float(np.exp(fit.params[i + 1])),
             "ci_low": float(np.exp(ci[i + 1, 0])), "ci_high": float(np.exp(ci[i + 1, 1])),
             "p": float(fit.pvalues[i + 1])} for i, p in enumerate(predictors)]
    return {"outcome": outcome, "n": int(len(y)), "events": int(y.sum()), "excluded": dropped,
            "predictors": rows, "confidence": confidence, "converged": bool(fit.mle_retvals.get("converged", True)),
            "pseudo_r2": float(fit.prsquared)}


# ----------------------------------------------------------------------------- plots
def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(5.0, 4.0), dpi=120)


def bland_altman_plot(a, b, path, result: dict | None = None, labels: tuple[str, str] = ("A", "B"),
                      units: str = "") -> Path:
    """Bland-Altman plot (difference against mean, bias and limits of agreement) as a PNG file."""
    a, b, _ = _pair(a, b)
    result = result or bland_altman(a, b)
    plt, (fig, ax) = _figure()
    unit = f" ({units})" if units else ""
    ax.scatter((a + b) / 2, a - b, s=14, color="#1f77b4", alpha=0.8)
    for level, style, text in ((result["bias"], "-", "bias"), (result["loa_low"], "--", "-1.96 SD"),
                               (result["loa_high"], "--", "+1.96 SD")):
        ax.axhline(level, color="#444444", linestyle=style, linewidth=1)
        ax.annotate(f"{text} {level:.3g}", (1.0, level), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=8)
    ax.set_xlabel(f"mean of {labels[0]} and {labels[1]}{unit}")
    ax.set_ylabel(f"{labels[0]} - {labels[1]}{unit}")
    ax.set_title(f"Bland-Altman, n = {result['n']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def scatter_plot(x, y, path, labels: tuple[str, str] = ("x", "y"), result: dict | None = None) -> Path:
    """Scatter plot with the least-squares line and the identity line, as a PNG file."""
    x, y, _ = _pair(x, y)
    plt, (fig, ax) = _figure()
    ax.scatter(x, y, s=14, color="#1f77b4", alpha=0.8)
    slope, intercept = np.polyfit(x, y, 1)
    grid = np.array([x.min(), x.max()])
    ax.plot(grid, slope * grid + intercept, color="#d62728", linewidth=1, label=f"y = {slope:.3g} x + {intercept:.3g}")
    ax.plot(grid, grid, color="#888888", linewidth=0.8, linestyle=":", label="identity")
    if result is not None:
        ax.set_title(f"{result['method']} r = {result['r']:.3f} "
                     f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}], n = {result['n']}", fontsize=10)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

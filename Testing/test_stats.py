"""bonekit.cohort.stats against worked examples with published answers, and definitions computed by hand.

* ICC: Shrout & Fleiss 1979, Table 2 (6 targets x 4 judges): ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71,
  ICC(1,4) .44, ICC(2,4) .62, ICC(3,4) .91.
* Bland-Altman: Bland & Altman 1986 (Lancet), Wright vs mini Wright peak flow meter, first readings of
  17 subjects: mean difference -2.1 l/min, SD 38.8 l/min.
* Paired t-test: Student's sleep data (Cushny & Peebles), as R's ``t.test(paired = TRUE)`` gives it:
  t = -4.0621, df = 9, p = 0.002833, 95 % CI of the mean difference -2.4598858 to -0.7001142.
* Correlation CIs: the Fisher z formula; Kendall's W: its definition 12 S / (m^2 (n^3 - n));
  precision: ISCD's RMS-SD and LSC on pairs with a known SD; logistic regression: simulated data with a
  known odds ratio per SD.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from bonekit import BoneKitError
from bonekit.cli import main
from bonekit.cohort import stats

SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
MINI_WRIGHT = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def long_table(matrix, subject="subject", rater="rater", value="value"):
    return pd.DataFrame([(f"s{i}", f"r{j}", matrix[i][j]) for i in range(len(matrix)) for j in range(len(matrix[0]))],
                        columns=[subject, rater, value])


def test_icc_reproduces_shrout_and_fleiss():
    rows = {r["shrout_fleiss"]: r for r in stats.icc(long_table(SHROUT_FLEISS), "subject", "rater", "value")}
    published = {"ICC(1,1)": 0.17, "ICC(2,1)": 0.29, "ICC(3,1)": 0.71, "ICC(1,k)": 0.44, "ICC(2,k)": 0.62,
                  "ICC(3,k)": 0.91}
    for form, value in published.items():
        assert rows[form]["icc"] == pytest.approx(value, abs=0.005), form
        assert rows[form]["ci_low"] <= rows[form]["icc"] <= rows[form]["ci_high"]
    assert rows["ICC(2,1)"]["form"] == "ICC(A,1)" and "absolute agreement" in rows["ICC(2,1)"]["description"]
    assert rows["ICC(2,1)"]["subjects"] == 6


def test_bland_altman_reproduces_the_1986_peak_flow_example():
    r = stats.bland_altman(WRIGHT, MINI_WRIGHT)
    assert (round(r["bias"], 1), round(r["sd"], 1), r["n"]) == (-2.1, 38.8, 17)
    assert r["loa_low"] == pytest.approx(r["bias"] - 1.96 * r["sd"]) and r["loa_high"] == pytest.approx(
        r["bias"] + 1.96 * r["sd"])
    # Bland & Altman 1999: SE of the bias s/sqrt(n), of a limit sqrt(3 s^2 / n), t with 16 df (2.120)
    assert r["bias_ci"][1] - r["bias"] == pytest.approx(2.1199 * 38.765 / math.sqrt(17), rel=1e-3)
    assert r["loa_high_ci"][1] - r["loa_high"] == pytest.approx(2.1199 * math.sqrt(3 * 38.765 ** 2 / 17), rel=1e-3)


def test_paired_comparison_reproduces_the_sleep_data():
    r = stats.paired_comparison(SLEEP_1, SLEEP_2)
    assert r["t"] == pytest.approx(-4.0621, abs=1e-4) and r["df"] == 9 and r["p_t"] == pytest.approx(0.002833, abs=1e-6)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    assert r["mean_difference"] == pytest.approx(-1.58)
    assert r["wilcoxon_statistic"] == 0 and r["p_wilcoxon"] < 0.01     # every non-zero difference is negative


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_confidence_interval_is_fishers(method):
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.8, size=40)
    x[3] = np.nan                                                    # left out and counted
    r = stats.correlation(x, y, method)
    assert r["n"] == 39 and r["excluded"] == 1
    z, half = math.atanh(r["r"]), 1.959964 / math.sqrt(39 - 3)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-5)
    assert 0 < r["p"] < 1e-4
    with pytest.raises(BoneKitError, match="Unknown correlation"):
        stats.correlation(x, y, "kendall-tau-b")


def test_kendalls_w_is_its_definition():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=8)
    ratings = np.array([truth + rng.normal(scale=0.7, size=8) for _ in range(4)]).T   # 8 subjects x 4 raters
    r = stats.kendalls_w(long_table(ratings), "subject", "rater", "value")
    ranks = np.argsort(np.argsort(ratings, axis=0), axis=0) + 1                       # each rater ranks subjects
    totals = ranks.sum(axis=1)
    m, n = 4, 8
    w = 12 * np.sum((totals - totals.mean()) ** 2) / (m ** 2 * (n ** 3 - n))
    assert r["W"] == pytest.approx(w) and (r["subjects"], r["raters"], r["df"]) == (8, 4, 7)
    perfect = stats.kendalls_w(long_table(np.tile(truth[:, None], (1, 3))), "subject", "rater", "value")
    assert perfect["W"] == pytest.approx(1.0)


def test_precision_is_the_iscd_rms_sd_and_lsc():
    # 15 subjects scanned twice, each pair 2 mg/cm^3 apart: SD of a pair = 2 / sqrt(2); 15 more scanned 3 times
    rows = [(f"a{i}", 100.0 + i) for i in range(15)] + [(f"a{i}", 102.0 + i) for i in range(15)]
    rows += [(f"b{i}", v) for i in range(15) for v in (200.0, 203.0, 206.0)]          # SD 3
    table = pd.DataFrame(rows, columns=["patient", "bmd"])
    r = stats.precision(table, "patient", "bmd")
    pooled = math.sqrt((15 * 1 * 2.0 + 15 * 2 * 9.0) / (15 + 30))                  # df-weighted RMS of SD^2
    assert r["rms_sd"] == pytest.approx(pooled) and r["lsc"] == pytest.approx(2.77 * pooled)
    assert (r["subjects"], r["measurements"], r["df"], r["enough_df"]) == (30, 75, 45, True)
    twice = stats.precision(table.iloc[:30], "patient", "bmd")
    assert twice["rms_sd"] == pytest.approx(math.sqrt(2.0)) and not twice["enough_df"]
    cv = np.sqrt(np.mean([(math.sqrt(2.0) / (101.0 + i)) ** 2 for i in range(15)]))
    assert twice["rms_cv_percent"] == pytest.approx(100 * cv)


def test_logistic_regression_recovers_a_known_odds_ratio_per_sd():
    rng = np.random.default_rng(3)
    n = 4000
    bmd = rng.normal(120.0, 30.0, n)                      # odds ratio 0.5 per SD (30 mg/cm^3) of BMD
    age = rng.normal(65.0, 10.0, n)                       # no effect
    logit = -1.0 + math.log(0.5) * (bmd - 120.0) / 30.0
    fracture = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    r = stats.logistic_regression(pd.DataFrame({"bmd": bmd, "age": age, "fracture": fracture}), "fracture",
                                  ["bmd", "age"])
    bmd_row, age_row = r["predictors"]
    assert bmd_row["ci_low"] < 0.5 < bmd_row["ci_high"] and bmd_row["odds_ratio_per_sd"] == pytest.approx(0.5, abs=0.05)
    assert age_row["ci_low"] < 1.0 < age_row["ci_high"]
    assert bmd_row["sd"] == pytest.approx(30.0, rel=0.05) and r["events"] == fracture.sum()
    with pytest.raises(BoneKitError, match="must be 0 or 1"):
        stats.logistic_regression(pd.DataFrame({"x": bmd, "y": bmd}), "y", ["x"])


def test_plots_are_png_files(tmp_path):
    ba = stats.bland_altman_plot(WRIGHT, MINI_WRIGHT, tmp_path / "ba.png", labels=("Wright", "mini"), units="l/min")
    sc = stats.scatter_plot(WRIGHT, MINI_WRIGHT, tmp_path / "sc.png",
                            result=stats.correlation(WRIGHT, MINI_WRIGHT))
    for path in (ba, sc):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_cli_compare_writes_json_and_plots(tmp_path, capsys):
    table = tmp_path / "peak.csv"
    pd.DataFrame({"wright": WRIGHT, "mini": MINI_WRIGHT}).to_csv(table, index=False)
    assert main(["stats", "compare", str(table), "wright", "mini", "--json", str(tmp_path / "r.json"),
                 "--plots", str(tmp_path / "plots")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert round(record["bland_altman"]["bias"], 1) == -2.1 and record["paired"]["n"] == 17
    assert {r["shrout_fleiss"] for r in record["icc"]} >= {"ICC(2,1)", "ICC(3,1)"}
    assert (tmp_path / "plots" / "bland_altman_wright_mini.png").is_file()
    out = capsys.readouterr().out
    assert "bias -2.12" in out and "ICC(2,1)" in out


def test_cli_long_table_analyses(tmp_path, capsys):
    table = tmp_path / "sf.csv"
    long_table(SHROUT_FLEISS, "target", "judge", "score").to_csv(table, index=False)
    assert main(["stats", "icc", str(table), "--subject", "target", "--rater", "judge", "--value", "score"]) == 0
    assert "ICC(3,1)" in capsys.readouterr().out
    assert main(["stats", "kendall", str(table), "--subject", "target", "--rater", "judge", "--value", "score"]) == 0
    assert "Kendall's W" in capsys.readouterr().out
    assert main(["stats", "precision", str(table), "--subject", "target", "--value", "score"]) == 0
    assert "LSC" in capsys.readouterr().out


def test_cli_bad_tables_say_what_to_do(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2, 3], "b": [1, 2, 4]}).to_csv(table, index=False)
    assert main(["stats", "correlate", str(table), "a", "nope"]) == 2
    assert "no column 'nope'; it has a, b" in capsys.readouterr().err
    assert main(["stats", "correlate", str(tmp_path / "none.csv"), "a", "b"]) == 2
    assert "no such table" in capsys.readouterr().err
    assert main(["stats", "correlate", str(table), "a", "b"]) == 2                  # 3 pairs: too few for a CI
    assert "at least 4 are needed" in capsys.readouterr().err

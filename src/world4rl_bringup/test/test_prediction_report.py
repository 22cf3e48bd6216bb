"""Predicted against measured success across tasks: sign agreement only where the measured
difference is significant, the correlation, and the gate's measurably worse choices."""

from __future__ import annotations

import numpy as np
import pytest

from world4rl_bringup import prediction_report as report


def _summary(task, predicted, measured, measured_ci, deploy):
    pb, pr = predicted
    mb, mr = measured
    worse = measured_ci[1] < 0 if deploy == "refined" else measured_ci[0] > 0
    return {
        "task": task,
        "predicted": {"bc": pb, "refined": pr},
        "predicted_ci95": {"bc": [pb - 0.05, pb + 0.05], "refined": [pr - 0.05, pr + 0.05]},
        "predicted_difference": pr - pb,
        "predicted_difference_ci95": [pr - pb - 0.1, pr - pb + 0.1],
        "measured": {"bc": mb, "refined": mr},
        "measured_ci95": {"bc": [mb - 0.05, mb + 0.05], "refined": [mr - 0.05, mr + 0.05]},
        "measured_difference": mr - mb,
        "measured_difference_ci95": measured_ci,
        "gate": {"deploy": deploy, "reason": "..."},
        "gate_choice_measurably_worse": worse,
    }


def test_sign_agreement_counts_only_significant_measured_differences():
    summaries = [
        _summary("drawer", (0.70, 0.82), (0.89, 0.825), [-0.12, -0.01], "bc"),  # significant, sign wrong
        _summary("pick", (0.40, 0.55), (0.47, 0.60), [0.05, 0.20], "refined"),  # significant, sign right
        _summary("reach", (0.50, 0.52), (0.47, 0.49), [-0.10, 0.14], "bc"),  # not significant
        _summary("push", (0.30, 0.20), (0.50, 0.30), [-0.30, -0.10], "refined"),  # the gate chose the worse
    ]
    stats = report.across_tasks(summaries)
    assert stats["significant_measured_differences"] == ["drawer", "pick", "push"]
    assert stats["predicted_sign_agrees"] == ["pick", "push"]
    assert stats["predicted_sign_disagrees"] == ["drawer"]
    assert stats["gate_measurably_worse"] == ["push"]
    xs = [0.70, 0.82, 0.40, 0.55, 0.50, 0.52, 0.30, 0.20]
    ys = [0.89, 0.825, 0.47, 0.60, 0.47, 0.49, 0.50, 0.30]
    assert stats["pearson_predicted_vs_measured"] == pytest.approx(float(np.corrcoef(xs, ys)[0, 1]))
    summaries[0]["discrimination"] = {"auc": 0.74, "ci95": [0.655, 0.816], "successes": 76, "failures": 74}
    summaries[1]["discrimination"] = {"auc": None, "ci95": None, "successes": 150, "failures": 0}
    lines = report.markdown(summaries)
    assert lines[2].startswith("| drawer | 70 % (65..75) | 89 % (84..94) | 82 % ")
    assert lines[2].endswith("| bc | no | 0.74 (0.66..0.82) |")
    assert lines[3].endswith("| n/a (0 failures) |")
    assert lines[4].endswith("| - |")
    across = next(line for line in lines if line.startswith("Across"))
    assert "disagrees on drawer" in across
    assert "measurably worse on push" in across


def test_too_few_points_have_no_correlation():
    assert report.pearson([(0.1, 0.2), (0.3, 0.4)]) is None
    assert report.pearson([(0.5, 0.1), (0.5, 0.2), (0.5, 0.3)]) is None
    assert report.across_tasks([{"task": "a", "gate": {"deploy": "bc"}}])["tasks_with_both"] == 0

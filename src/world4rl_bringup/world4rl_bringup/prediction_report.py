"""Predicted against measured success, per task of a `world4rl coverage` run and across tasks.

The refine run's closing step (world4rl_policy.prediction) predicts BC's and the refined policy's
real success from imagination and writes the gate's choice to RUN/refine/TASK/gate.json; the eval
stage measures both in the true simulator (RUN/eval/TASK/eval.json). This module sets them side by
side: per task, and across tasks whether the predicted difference (refined minus BC) has the sign of
a significant measured one, the correlation of predicted with measured success, and whether the
gate's choice was ever measurably worse than the other policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def task_summary(root: Path, task: str) -> dict[str, Any]:
    """Predicted (RUN/refine/TASK/gate.json) and measured (RUN/eval/TASK/eval.json) success of BC and
    the refined policy side by side, and the gate's choice; the parts that exist."""
    from world4rl_policy.prediction import read_gate
    from world4rl_policy.reward_calibration import read_calibration

    out: dict[str, Any] = {"task": task}
    gate = read_gate(root / "refine" / task)
    if calibration := read_calibration(root / "refine" / task):
        keep = ("threshold", "floor", "rollouts", "real_success", "imagined_success_at_floor")
        out["reward_calibration"] = {k: calibration[k] for k in (*keep, "imagined_success_at_threshold", "honest")}
        out["discrimination"] = calibration.get("discrimination") or _discrimination(root, calibration)
    prediction = (gate or {}).get("prediction")
    if gate:
        out["gate"] = {"deploy": gate["deploy"], "reason": gate["reason"]}
    if prediction:
        out["predicted"] = {n: p["predicted_success"] for n, p in prediction["policies"].items()}
        out["predicted_ci95"] = {n: p["predicted_ci95"] for n, p in prediction["policies"].items()}
        out["imagined"] = {n: p["imagined_success"] for n, p in prediction["policies"].items()}
        out["predicted_difference"] = prediction["difference"]["predicted"]
        out["predicted_difference_ci95"] = prediction["difference"]["predicted_ci95"]
    eval_json = root / "eval" / task / "eval.json"
    if eval_json.is_file():
        policies = {p["label"]: p for p in json.loads(eval_json.read_text())["policies"]}
        out["measured"] = {n: p["success_rate"] for n, p in policies.items()}
        out["measured_ci95"] = {n: p["ci95_wilson"] for n, p in policies.items()}
        vs = policies["refined"]["vs_baseline"]
        out["measured_difference"] = vs["difference"]
        out["measured_difference_ci95"] = vs["difference_ci95_newcombe"]
        out["mcnemar_exact_p"] = vs["mcnemar_exact_p"]
    if gate and "measured" in out:
        lo, hi = out["measured_difference_ci95"]  # refined - bc
        # Measurably worse: the interval of (chosen - other) lies below zero.
        out["gate_choice_measurably_worse"] = bool(hi < 0 if gate["deploy"] == "refined" else lo > 0)
    return out


def _discrimination(root: Path, calibration: dict[str, Any]) -> dict[str, Any]:
    """For calibration records written before they carried it: from their dreams and the dataset's outcomes."""
    from world4rl_model.dataset import Dataset
    from world4rl_policy.prediction import discrimination, recorded_outcomes
    from world4rl_policy.reward_calibration import dreams_for_prediction

    real = recorded_outcomes(Dataset(root / "dataset"), calibration["episodes"])
    return discrimination(dreams_for_prediction(calibration, calibration["threshold"]), real)


def across_tasks(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Sign agreement where the measured difference is significant (its Newcombe interval excludes 0),
    Pearson correlation of predicted with measured success (BC and refined of every task), and the
    tasks where the gate's choice was measurably worse."""
    both = [s for s in summaries if "predicted" in s and "measured" in s]
    significant = [s for s in both if not s["measured_difference_ci95"][0] <= 0 <= s["measured_difference_ci95"][1]]
    agree = [s["task"] for s in significant if (s["predicted_difference"] > 0) == (s["measured_difference"] > 0)]
    pairs = [(s["predicted"][n], s["measured"][n]) for s in both for n in ("bc", "refined")]
    return {
        "tasks_with_both": len(both),
        "significant_measured_differences": [s["task"] for s in significant],
        "predicted_sign_agrees": agree,
        "predicted_sign_disagrees": [s["task"] for s in significant if s["task"] not in agree],
        "pearson_predicted_vs_measured": pearson(pairs),
        "gate_measurably_worse": [s["task"] for s in summaries if s.get("gate_choice_measurably_worse")],
    }


def pearson(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 3:
        return None
    xs, ys = zip(*pairs, strict=True)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def markdown(summaries: list[dict[str, Any]]) -> list[str]:
    """The predicted-vs-measured table and the across-task figures, as markdown lines."""

    def pct(x: float) -> str:
        return f"{100 * x:.0f} %"

    def span(ci: list[float], signed: bool = False) -> str:
        fmt = "{:+.0f}" if signed else "{:.0f}"
        return f"{fmt.format(100 * ci[0])}..{fmt.format(100 * ci[1])}"

    def auc(s: dict[str, Any]) -> str:
        d = s.get("discrimination")
        if not d:
            return "-"
        if d["auc"] is None:
            return f"n/a ({d['failures']} failures)"
        return f"{d['auc']:.2f} ({d['ci95'][0]:.2f}..{d['ci95'][1]:.2f})"

    lines = [
        "| task | BC predicted | BC measured | refined predicted | refined measured | difference predicted "
        "| difference measured | gate deploys | gate measurably worse | imagination AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if "predicted" not in s or "measured" not in s:
            deploys = s.get("gate", {}).get("deploy", "-")
            lines.append(f"| {s['task']} | (no prediction or no evaluation) | | | | | | {deploys} | | {auc(s)} |")
            continue
        p, m, pc, mc = s["predicted"], s["measured"], s["predicted_ci95"], s["measured_ci95"]
        lines.append(
            f"| {s['task']} | {pct(p['bc'])} ({span(pc['bc'])}) | {pct(m['bc'])} ({span(mc['bc'])}) "
            f"| {pct(p['refined'])} ({span(pc['refined'])}) | {pct(m['refined'])} ({span(mc['refined'])}) "
            f"| {100 * s['predicted_difference']:+.0f} ({span(s['predicted_difference_ci95'], True)}) "
            f"| {100 * s['measured_difference']:+.0f} ({span(s['measured_difference_ci95'], True)}) "
            f"| {s['gate']['deploy']} | {'yes' if s['gate_choice_measurably_worse'] else 'no'} | {auc(s)} |"
        )
    stats = across_tasks(summaries)
    r = stats["pearson_predicted_vs_measured"]
    lines += [
        "",
        f"Across {stats['tasks_with_both']} task(s): measured difference significant on "
        f"{', '.join(stats['significant_measured_differences']) or 'none'}; predicted sign agrees on "
        f"{', '.join(stats['predicted_sign_agrees']) or 'none'}, disagrees on "
        f"{', '.join(stats['predicted_sign_disagrees']) or 'none'}; Pearson r of predicted vs measured success "
        f"{'n/a' if r is None else f'{r:.2f}'}; the gate's choice measurably worse on "
        f"{', '.join(stats['gate_measurably_worse']) or 'no task'}.",
        "",
        "Imagination AUC: how well dreams of the BC policy's recorded rollouts tell their real successes from "
        "their real failures (ROC AUC of the classifier's peak probability, bootstrap 95 % interval; 0.5 is "
        "chance: the dreams do not judge single episodes, so BC's predicted level rests on the rollouts' base "
        "rate; the rule 'calibrated' then maps every policy to it, while the default 'paired' still adds the "
        "refined policy's imagined gain on the same starts, as on franka pick_place at 0.46).",
    ]
    return lines

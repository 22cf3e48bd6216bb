"""Evaluation of the success classifier: accuracy and calibration.

`evaluate_classifier` reports accuracy, precision, recall, F1, and calibration (a 10-bin
reliability table and the expected calibration error) on held-out episodes, per frame and per
episode (does the classifier fire in successful episodes and stay silent in failed ones);
`evaluate_on_dreams` does the same on world-model dreams, per open-loop horizon;
`report_markdown` renders the report.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from world4rl_model.data import EpisodeStore
from world4rl_model.reward import RewardClassifier

if TYPE_CHECKING:
    from world4rl_model.reward_dreams import DreamPool


def calibration_report(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5, bins: int = 10) -> dict:
    prob, label = prob.float().cpu(), label.bool().cpu()
    pred = prob >= threshold
    tp = int((pred & label).sum())
    fp = int((pred & ~label).sum())
    fn = int((~pred & label).sum())
    tn = int((~pred & ~label).sum())
    n = len(prob)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    table, ece = [], 0.0
    edges = torch.linspace(0, 1, bins + 1)
    for i in range(bins):
        lo, hi = edges[i].item(), edges[i + 1].item()
        m = (prob >= lo) & ((prob < hi) if i < bins - 1 else (prob <= hi))
        count = int(m.sum())
        if count:
            conf = prob[m].mean().item()
            freq = label[m].float().mean().item()
            ece += count / n * abs(conf - freq)
        else:
            conf = freq = float("nan")
        table.append({"bin": [round(lo, 2), round(hi, 2)], "count": count, "mean_prob": conf, "frac_success": freq})
    bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), label.float()).item() if n else float("nan")
    return {
        "n": n,
        "positives": int(label.sum()),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "balanced_accuracy": 0.5 * ((tp / (tp + fn) if tp + fn else 1.0) + (tn / (tn + fp) if tn + fp else 1.0)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "bce": bce,
        "ece": ece,
        "reliability": table,
        "threshold": threshold,
    }


@torch.no_grad()
def _probabilities(model: RewardClassifier, frames: torch.Tensor, task: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The classifier's success probability of every frame, in batches (on the CPU)."""
    model.eval()
    return torch.cat(
        [
            model.probability(frames[i : i + batch_size], task[i : i + batch_size])
            for i in range(0, len(frames), batch_size)
        ]
    ).cpu()


@torch.no_grad()
def evaluate_classifier(model: RewardClassifier, store: EpisodeStore, batch_size: int = 256) -> dict[str, Any]:
    """Per-frame and per-episode metrics of `model` on every frame of `store`'s episodes."""
    prob = _probabilities(model, store.frames, store.task, batch_size)
    label = store.success.cpu()
    report = {"frames": calibration_report(prob, label, model.config.threshold)}
    # Episode level: success predicted somewhere vs the episode having any success frame.
    ep_pred, ep_true = [], []
    for e in range(len(store)):
        s, n = int(store.offsets[e]), int(store.lengths[e])
        ep_pred.append(bool((prob[s : s + n] >= model.config.threshold).any()))
        ep_true.append(bool(label[s : s + n].any()))
    ep_pred_t, ep_true_t = torch.tensor(ep_pred), torch.tensor(ep_true)
    report["episodes"] = {
        "n": len(ep_pred),
        "accuracy": float((ep_pred_t == ep_true_t).float().mean()) if ep_pred else float("nan"),
        "successful_detected": int((ep_pred_t & ep_true_t).sum()),
        "successful": int(ep_true_t.sum()),
        "failed_false_alarm": int((ep_pred_t & ~ep_true_t).sum()),
        "failed": int((~ep_true_t).sum()),
    }
    tasks = model.config.tasks or ["task"]
    report["per_task"] = {}
    for ti, name in enumerate(tasks):
        m = (store.task.cpu() == ti) if model.config.tasks else torch.ones_like(label)
        if m.any():
            r = calibration_report(prob[m], label[m], model.config.threshold)
            report["per_task"][name] = {k: r[k] for k in ("n", "positives", "accuracy", "precision", "recall", "ece")}
    return report


@torch.no_grad()
def evaluate_on_dreams(model: RewardClassifier, pool: DreamPool, batch_size: int = 256) -> dict[str, Any]:
    """The classifier on dreamed frames against the real outcome: overall and per open-loop horizon."""
    prob = _probabilities(model, pool.frames, pool.task, batch_size)
    label, horizon = pool.success.cpu(), pool.horizon.cpu()
    report = {"frames": calibration_report(prob, label, model.config.threshold), "per_horizon": {}}
    for h in horizon.unique().tolist():
        m = horizon == h
        r = calibration_report(prob[m], label[m], model.config.threshold)
        report["per_horizon"][int(h)] = {k: r[k] for k in ("n", "positives", "accuracy", "precision", "recall")}
    return report


def _fmt(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    f = report["frames"]
    lines = [
        "## Reward classifier on held-out episodes",
        "",
        f"Frames: {f['n']} ({f['positives']} success), threshold {f['threshold']}",
        "",
        "| accuracy | balanced acc. | precision | recall | F1 | BCE | ECE |",
        "|---|---|---|---|---|---|---|",
        f"| {_fmt(f['accuracy'])} | {_fmt(f['balanced_accuracy'])} | {_fmt(f['precision'])} | {_fmt(f['recall'])} "
        f"| {_fmt(f['f1'])} | {_fmt(f['bce'])} | {_fmt(f['ece'])} |",
        "",
        "Reliability (predicted probability bin -> observed success frequency):",
        "",
        "| bin | frames | mean prob | frac success |",
        "|---|---|---|---|",
    ]
    for row in f["reliability"]:
        lines.append(
            f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['count']} | {_fmt(row['mean_prob'])} "
            f"| {_fmt(row['frac_success'])} |"
        )
    e = report["episodes"]
    lines += [
        "",
        f"Episodes: {e['n']}, accuracy {_fmt(e['accuracy'])}; successful episodes detected "
        f"{e['successful_detected']}/{e['successful']}, false alarms in failed episodes "
        f"{e['failed_false_alarm']}/{e['failed']}",
        "",
        "| task | frames | success frames | accuracy | precision | recall | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["per_task"].items():
        lines.append(
            f"| {name} | {r['n']} | {r['positives']} | {_fmt(r['accuracy'])} | {_fmt(r['precision'])} "
            f"| {_fmt(r['recall'])} | {_fmt(r['ece'])} |"
        )
    if "dreamed_frames" in report:
        d = report["dreamed_frames"]
        f = d["frames"]
        lines += [
            "",
            f"World-model dreams of the held-out episodes ({f['n']} frames, {f['positives']} where the real episode "
            "had succeeded): what PPO's reward sees",
            "",
            "| open-loop step | frames | success | accuracy | precision | recall |",
            "|---|---|---|---|---|---|",
        ]
        for h, r in [("all", f), *d["per_horizon"].items()]:
            lines.append(
                f"| {h} | {r['n']} | {r['positives']} | {_fmt(r['accuracy'])} | {_fmt(r['precision'])} "
                f"| {_fmt(r['recall'])} |"
            )
    return "\n".join(lines) + "\n"

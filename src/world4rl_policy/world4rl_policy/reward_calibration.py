"""Imagination that does not flatter: the classifier's threshold calibrated on recorded outcomes.

Dreams credit near misses: with the classifier's own threshold, the BC policy succeeds more often in
imagination than it did on the robot (pick_place 62.5 % imagined vs 47 % real, reach 71.9 % vs 55 %),
and PPO learns to produce what imagination credits. The robot's record of the BC policy says how
much to discount: its rollouts (dataset episodes of kind "policy") carry their real outcomes. So,
before PPO starts, the BC policy dreams each recorded rollout again (sampled actions, as it was
rolled out, from the same first frame, for the recorded length) and the threshold is raised to the
lowest value at which the dreams succeed no more often than the rollouts did. The reward then pays
only successes the classifier is at least that confident about, and nothing is set per task: the
threshold follows from the task's own record. It is never lowered below the floor (the classifier's
own threshold, or `reward_threshold` when given) and never raised above MAX_THRESHOLD (a classifier
that is certain about the failures too cannot be made honest by its threshold; the record says so).

`world4rl refine --reward-calibration` (PPOConfig.reward_calibration) runs this once per refine run
and keeps the result in OUT/reward_calibration.json, which resumes and the closing prediction reuse.
ROS-free.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world4rl_model.atomic_io import atomic_write_text, read_json_record
from world4rl_model.runtime import derive_seed
from world4rl_policy.prediction import (
    CALIBRATION_KIND,
    discrimination,
    discrimination_line,
    imagine,
    recorded_horizon,
    recorded_outcomes,
)

CALIBRATION_FILE = "reward_calibration.json"
CALIBRATION_FORMAT = "world4rl-reward-calibration"
MAX_THRESHOLD = 0.99  # above this the reward would hardly ever fire: the calibration gives up there


def calibrated_threshold(peaks: np.ndarray, real: np.ndarray, floor: float) -> float:
    """The lowest threshold >= floor (<= MAX_THRESHOLD) at which the dreams' success rate (a dream
    succeeds when its peak probability reaches the threshold) is at most the real success rate.

    peaks: [rollouts, dreams] peak classifier probability per dream; real: [rollouts] outcomes."""
    peaks = np.asarray(peaks, dtype=np.float64)
    real = np.asarray(real, dtype=bool)
    if peaks.ndim != 2 or peaks.shape[0] != real.shape[0] or peaks.size == 0:
        raise ValueError(
            f"peaks must be [rollouts, dreams] with one outcome per rollout, got {peaks.shape}, {real.shape}"
        )
    target = float(real.mean())
    # The rate only changes just above a peak value: those (and the floor) are the candidates.
    candidates = np.unique(np.concatenate([[floor], np.nextafter(peaks.ravel(), np.inf)]))
    candidates = candidates[(candidates >= floor) & (candidates <= MAX_THRESHOLD)]
    for t in candidates:  # ascending
        if (peaks >= t).mean() <= target:
            return float(t)
    return MAX_THRESHOLD if floor <= MAX_THRESHOLD else float(floor)


def _fingerprints(cfg) -> dict[str, str]:
    from world4rl_model.checkpoint import checkpoint_fingerprint

    return {name: checkpoint_fingerprint(getattr(cfg, name)).sha256 for name in ("policy", "world_model", "reward")}


def _settings(cfg, task: str | None) -> dict[str, Any]:
    """What the calibration depends on: a record made with other settings is made again."""
    return {
        "task": task,
        "floor": cfg.reward_threshold,
        "dreams_per_rollout": cfg.prediction.calibration_repeats,
        "sampling_steps": cfg.sampling_steps,
        "bf16": bool(cfg.bf16),
        "seed": derive_seed(cfg.seed, "reward-calibration"),
        "checkpoints": _fingerprints(cfg),
    }


def calibrate(cfg, task: str | None) -> dict[str, Any]:
    """Dream the BC policy's recorded rollouts of `task` and pick the threshold; -> the record."""
    from world4rl_model.dataset import Dataset
    from world4rl_model.env import WorldModelEnv
    from world4rl_model.reward import RewardClassifier
    from world4rl_model.world_model import WorldModel

    ds = Dataset(cfg.dataset)
    rollouts = ds.select(tasks=[task] if task else None, kinds=[CALIBRATION_KIND])
    if len(rollouts) < cfg.prediction.min_calibration:
        raise ValueError(
            f"--reward-calibration: {cfg.dataset} has {len(rollouts)} recorded rollouts of the BC policy "
            f"(kind '{CALIBRATION_KIND}') for task {task}, need {cfg.prediction.min_calibration} "
            "(record them, e.g. `world4rl coverage` does, or set --reward-threshold instead)"
        )
    device = torch.device(cfg.device)
    wm, _ = WorldModel.from_checkpoint(cfg.world_model, device)
    rm, _ = RewardClassifier.from_checkpoint(cfg.reward, device)
    floor = float(cfg.reward_threshold if cfg.reward_threshold is not None else rm.config.threshold)
    horizon = recorded_horizon(ds, rollouts)
    settings = _settings(cfg, task)
    env = WorldModelEnv(
        wm, rm, ds, num_envs=cfg.prediction.batch, horizon=horizon, task=task, episodes=rollouts, device=device,
        sampling_steps=cfg.sampling_steps, threshold=floor, bf16=cfg.bf16, seed=settings["seed"],
    )  # fmt: skip
    from world4rl_policy.policy import load_policy_module

    bc = load_policy_module(cfg.policy)[0].to(device)
    label = "calibrate reward" if cfg.progress else None
    dreams = imagine(
        bc, env, rollouts, cfg.prediction.calibration_repeats, horizon, sampled=True, seed=settings["seed"],
        label=label, full_length=True,
    )  # fmt: skip
    real = recorded_outcomes(ds, rollouts)
    threshold = calibrated_threshold(dreams.peak_probability, real, floor)
    imagined_at = float((dreams.peak_probability >= threshold).mean())
    return {
        "format": CALIBRATION_FORMAT,
        "version": 1,
        "threshold": threshold,
        "floor": floor,
        "rollouts": len(rollouts),
        "horizon": horizon,
        "real_success": float(real.mean()),
        "imagined_success_at_floor": float((dreams.peak_probability >= floor).mean()),
        "imagined_success_at_threshold": imagined_at,
        "honest": imagined_at <= float(real.mean()),
        "discrimination": discrimination(dreams, real, seed=settings["seed"] % 2**32),
        "seconds": dreams.seconds,
        # The dreams themselves: the closing prediction's calibration reuses them (dreams_for_prediction).
        "episodes": [int(e) for e in rollouts],
        "peak_probability": np.round(dreams.peak_probability, 6).tolist(),
        "rule": "lowest threshold at which dreams of the BC policy's recorded rollouts succeed no more often "
        "than they did",
        "settings": settings,
    }


def dreams_for_prediction(record: dict[str, Any], threshold: float):
    """The calibration's dreams as the prediction's calibration pass (world4rl_policy.prediction.Imagined):
    the same BC policy, rollouts, sampled actions and horizon, so they need not be dreamt twice."""
    from world4rl_policy.prediction import Imagined

    peaks = np.asarray(record["peak_probability"], dtype=np.float64)
    episodes = np.asarray(record["episodes"], dtype=np.int64)
    return Imagined(episodes, (peaks >= threshold).mean(axis=1), peaks.shape[1], 0.0, peaks)


def calibration_in_use(cfg) -> dict[str, Any] | None:
    """OUT's calibration record when cfg rewards with its threshold and its checkpoints are the ones
    it dreamt with; else None (a record left from other checkpoints or another threshold)."""
    record = read_calibration(cfg.out)
    if record is None or cfg.reward_threshold != record["threshold"]:
        return None
    return record if record["settings"]["checkpoints"] == _fingerprints(cfg) else None


def read_calibration(out: str | Path) -> dict[str, Any] | None:
    return read_json_record(Path(out) / CALIBRATION_FILE, CALIBRATION_FORMAT, "reward-calibration")


def with_calibrated_threshold(cfg, task: str | None):
    """cfg with reward_threshold set by the calibration (made once, kept in OUT/reward_calibration.json)
    and reward_calibration off; cfg unchanged when it does not ask for calibration."""
    if not cfg.reward_calibration:
        return cfg
    record = read_calibration(cfg.out)
    if record is None or record["settings"] != _settings(cfg, task):
        record = calibrate(cfg, task)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.out) / CALIBRATION_FILE, json.dumps(record, indent=1) + "\n")
        print(
            f"[refine] reward threshold {record['threshold']:.3f} (floor {record['floor']:.2f}): the BC policy's "
            f"{record['rollouts']} recorded rollouts succeeded {100 * record['real_success']:.1f} % on the robot, "
            f"{100 * record['imagined_success_at_floor']:.1f} % in dreams at the floor, "
            f"{100 * record['imagined_success_at_threshold']:.1f} % at the threshold; "
            + discrimination_line(record["discrimination"]),
            flush=True,
        )
    return dataclasses.replace(cfg, reward_threshold=record["threshold"], reward_calibration=False)

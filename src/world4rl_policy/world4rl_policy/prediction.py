"""Predicted real success and the do-no-harm gate: know, before the arm moves, whether refining paid.

Success in imagination flatters: the world model and the reward classifier credit near misses, and
PPO learns to produce what they credit. The robot's own record of the BC policy says by how much:
the BC policy's rollouts (dataset episodes of kind "policy" of the task, which the coverage recipe
records with the BC policy's sampled actions) carry their real outcomes. The estimate, per policy:

1. Imagine. From each start frame, `repeats` dreams of `horizon` steps (the real episode length)
   with the policy in the loop; per start, the fraction f of dreams in which the classifier fires.
   The BC and refined policies act with their mean action (as on the robot) from the start frames
   of held-out episodes (the world model's validation split of the task), with the same dream noise
   for both (common random numbers: their difference is sharper than either).
2. Calibrate. The same for the BC policy as it was rolled out (sampled actions) from the start
   frames of its recorded rollouts, whose real outcome y is known; a logistic map
   P(real success | f) = sigmoid(a + b f) fitted to those (f, y) pairs (a weak ridge keeps it finite
   when every rollout failed or every one succeeded).
3. Predict. The mean of P(real success | f) over the held-out starts (rule "calibrated"). That map
   is fitted on one policy's rollouts: where its dreams do not tell that policy's real successes from
   its failures (discrimination(), AUC near 0.5) it is flat and maps every policy to the same base
   rate, blind to a gain the dreams do show (franka pick_place: 2.5 % -> 10 % imagined, +15.5 points
   real, predicted -0.6). Rule "paired" predicts BC so and adds the refined policy's imagined
   gain over BC in points, both dreamt from the same starts under the same noise (imagination's
   error on a start taken as shared by both policies), clipped to 0-100 %. Not in log-odds: where
   the dreams almost never succeed and the robot almost always does (Meta-World drawer-open-v3:
   0.2 % against 94 %), one dream's difference is a large odds ratio, and moved that way BC's
   94 % fell by 10 points on no evidence. `rollout_starts` judges from the recorded rollouts'
   first frames as well, ~10x more starts than the held-out split, so that the paired gain has a
   usable interval.

The 95 % intervals come from a bootstrap that resamples the calibration rollouts (and refits the map)
and the held-out starts (the same draw for both policies). The assumption, stated in every report:
imagination misjudges the refined policy's behaviour as it misjudged BC's. PPO can break it by
finding what the classifier credits and reality does not; the interval cannot see that, which is why
the gate demands a predicted gain beyond the interval and otherwise keeps BC.

The gate: deploy the refined policy only when the lower bound of the predicted difference (refined
minus BC) is above zero; otherwise BC, with the reason. ROS-free; `refine` calls `predict_and_gate`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world4rl_policy.policy import GaussianPolicy, load_policy_module, recent_frames

CALIBRATION_KIND = "policy"  # dataset episodes recorded with the BC policy on the robot
RULES = ("calibrated", "paired")
METHOD = (
    "imagined success per start (fraction of dreams in which the classifier fires), mapped to real success "
    "by a logistic fit on the BC policy's recorded rollouts; bootstrap 95 % intervals over calibration "
    "rollouts and held-out starts"
)
PAIRED_METHOD = (
    "BC's imagined success per start mapped to real success by a logistic fit on its recorded rollouts; the "
    "refined policy's: BC's prediction plus its imagined gain over BC on the same starts and dream noise, "
    "clipped to 0-1; bootstrap 95 % intervals over calibration rollouts and starts"
)


@dataclass
class PredictionSettings:
    """How `world4rl refine` (its closing step, `--prediction.*`) and `world4rl predict` predict."""

    repeats: int = 4  # dreams per held-out start frame, per policy
    calibration_repeats: int = 4  # dreams per start frame of each recorded BC rollout
    horizon: int | None = None  # imagined steps per dream (None: the recorded rollouts' length, as on the robot)
    batch: int = 32  # dreams stepped together
    bootstrap: int = 2000  # bootstrap resamples for the 95 % intervals
    min_calibration: int = 10  # fewer recorded BC rollouts of the task: no prediction, the gate keeps BC
    # a dreamt success must hold on this many independent samples of its step (WorldModelEnv's
    # success_samples): a policy that provokes lucky samples is not credited. 1: one sample.
    success_samples: int = 1
    # how the refined policy's predicted success follows from the dreams: "calibrated" maps each
    # policy's imagined success through the logistic fit of the BC rollouts (flat, and so blind to any
    # difference, where dreams do not tell single rollouts apart); "paired" predicts BC so and adds
    # the refined policy's imagined gain over BC on the same starts and dream noise, in points
    # (imagination's error on a start taken as shared by both policies), clipped to 0-100 %.
    rule: str = "paired"
    # judge BC and refined also from the first frames of the BC policy's recorded rollouts (seen by
    # the world model in training, but only their first frames are used) beside the held-out starts:
    # ~10x more starts, so that a gain of a few points can be told from noise.
    rollout_starts: bool = True

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"prediction.rule: {self.rule!r} is not one of {', '.join(RULES)}")


@dataclass
class Imagined:
    """Per start frame: the dataset episode it came from and the fraction of dreams that succeeded."""

    episodes: np.ndarray  # int [N]
    success_fraction: np.ndarray  # float [N]
    dreams: int  # dreams per start
    seconds: float
    peak_probability: np.ndarray | None = None  # float [N, dreams]: the classifier's highest probability in each dream

    @property
    def rate(self) -> float:
        return float(self.success_fraction.mean())


@torch.no_grad()
def imagine(
    policy: GaussianPolicy,
    env,
    episodes: list[int],
    repeats: int,
    horizon: int,
    sampled: bool,
    seed: int,
    label: str | None = None,
    full_length: bool = False,
) -> Imagined:
    """Dream `repeats` episodes of `horizon` steps from the first frame of each dataset episode in
    `episodes`, the policy in the loop (mean action, or sampled when `sampled`); success is the
    classifier firing at any step. `env` is a WorldModelEnv whose start pool holds those episodes.
    A batch stops once all its dreams succeeded, unless `full_length` (each dream's peak probability
    is then its highest over all `horizon` steps, as a threshold above the env's needs)."""
    t0 = time.time()
    policy = policy.eval()
    env.terminate_on_success = False
    env.horizon = horizon + 1  # no autoreset inside a dream
    jobs = [e for e in episodes for _ in range(repeats)]
    b = env.num_envs
    hits = np.zeros(len(jobs), dtype=bool)
    peaks = np.zeros(len(jobs), dtype=np.float64)
    chunks = range(0, len(jobs), b)
    if label is not None:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"[predict] {label}", unit="batch", leave=False, dynamic_ncols=True)
    for c, first in enumerate(chunks):
        chunk = jobs[first : first + b]
        obs, _ = env.reset_to(chunk + [chunk[-1]] * (b - len(chunk)), seed=seed + c)
        gen = torch.Generator(device=env.device).manual_seed(seed + 7919 * (c + 1))
        success = torch.zeros(b, dtype=torch.bool, device=env.device)
        peak = torch.zeros(b, device=env.device)
        for _ in range(horizon):
            mean, log_std, _ = policy(recent_frames(policy, obs["frames"]).to(env.device))
            action = (
                mean + log_std.exp() * torch.randn(mean.shape, generator=gen, device=env.device) if sampled else mean
            )
            obs, _, _, _, info = env.step(action.clamp(-1, 1))
            success |= info["success"]
            peak = torch.maximum(peak, info["success_prob"].float())
            if not full_length and bool(success.all()):
                break
        hits[first : first + len(chunk)] = success[: len(chunk)].cpu().numpy()
        peaks[first : first + len(chunk)] = peak[: len(chunk)].cpu().numpy()
    per_start = hits.reshape(len(episodes), repeats).mean(axis=1)
    episodes_array = np.asarray(episodes, dtype=np.int64)
    return Imagined(episodes_array, per_start, repeats, time.time() - t0, peaks.reshape(len(episodes), repeats))


def fit_calibration(f: np.ndarray, y: np.ndarray, ridge: float = 0.1, iterations: int = 50) -> np.ndarray:
    """Logistic regression y ~ sigmoid(a + b f) by Newton's method with a ridge on (a, b); returns [a, b]."""
    x = np.stack([np.ones_like(f, dtype=np.float64), f.astype(np.float64)], axis=1)
    y = y.astype(np.float64)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def calibrated(w: np.ndarray, f: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(w[0] + w[1] * f)))


def _interval(samples: np.ndarray) -> list[float]:
    return [float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))]


def _predicted(w: np.ndarray, candidates: dict[str, Imagined], rule: str, starts: np.ndarray) -> dict[str, float]:
    """Each candidate's predicted real success on these starts (indices) under calibration map w; the
    first candidate is the baseline the "paired" rule adds the others' imagined gains to."""
    fractions = {n: c.success_fraction[starts] for n, c in candidates.items()}
    if rule == "calibrated":
        return {n: float(calibrated(w, f).mean()) for n, f in fractions.items()}
    base = next(iter(fractions))
    level = float(calibrated(w, fractions[base]).mean())
    return {n: float(np.clip(level + (f - fractions[base]).mean(), 0.0, 1.0)) for n, f in fractions.items()}


def predict(
    calibration: Imagined,
    real: np.ndarray,
    candidates: dict[str, Imagined],
    bootstrap: int,
    seed: int,
    rule: str,
) -> dict[str, Any]:
    """Predicted real success of each candidate (same starts, in the same order) and of the difference
    of the last against the first (PredictionSettings.rule says how); intervals by a paired bootstrap."""
    names = list(candidates)
    f_cal, y = calibration.success_fraction, real.astype(bool)
    w = fit_calibration(f_cal, y)
    n_cal, n_eval = len(f_cal), len(candidates[names[0]].success_fraction)
    point = _predicted(w, candidates, rule, np.arange(n_eval))
    rng = np.random.default_rng(seed)
    draws = {n: np.empty(bootstrap) for n in names}
    for k in range(bootstrap):
        i = rng.integers(0, n_cal, n_cal)
        j = rng.integers(0, n_eval, n_eval)
        for n, v in _predicted(fit_calibration(f_cal[i], y[i]), candidates, rule, j).items():
            draws[n][k] = v
    result: dict[str, Any] = {
        "rule": rule,
        "calibration": {
            "rollouts": int(n_cal),
            "real_success": float(y.mean()),
            "imagined_success": calibration.rate,
            "dreams_per_rollout": calibration.dreams,
            "logistic_a_b": [float(v) for v in w],
            "discrimination": discrimination(calibration, y, bootstrap, seed=seed + 1),
        },
        "policies": {
            n: {
                "imagined_success": c.rate,
                "predicted_success": point[n],
                "predicted_ci95": _interval(draws[n]),
                "starts": len(c.success_fraction),  # prediction["judging_starts"] says which
                "dreams_per_start": c.dreams,
            }
            for n, c in candidates.items()
        },
    }
    if len(names) >= 2:
        base, other = names[0], names[-1]
        diff = draws[other] - draws[base]
        result["difference"] = {
            "of": f"{other} - {base}",
            "imagined": candidates[other].rate - candidates[base].rate,
            "predicted": point[other] - point[base],
            "predicted_ci95": _interval(diff),
            "bootstrap_p_not_better": float((diff <= 0).mean()),
        }
    return result


def discrimination(dreams: Imagined, real: np.ndarray, bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How well imagination tells the BC policy's real successes from its real failures, before any
    PPO: the ROC AUC of each recorded rollout's dream score (the classifier's peak probability averaged
    over its dreams; the fraction of successful dreams when peaks were not kept) against the rollout's
    real outcome, with a bootstrap 95 % interval over rollouts. 0.5 is chance: the dreams do not judge
    single episodes, so BC's predicted level is the rollouts' base rate; rule "calibrated" maps every
    policy there and cannot ship a refined one, rule "paired" still carries the refined policy's
    imagined gain over BC (franka pick_place gained +15.5 real points at 0.46, predicted +14.5).
    None when every rollout had the same outcome (nothing to tell apart)."""
    from world4rl_policy.ood import roc_auc

    y = np.asarray(real, dtype=bool)
    score = dreams.peak_probability.mean(axis=1) if dreams.peak_probability is not None else dreams.success_fraction
    out: dict[str, Any] = {"successes": int(y.sum()), "failures": int((~y).sum())}
    if y.all() or not y.any():
        return {**out, "auc": None, "ci95": None, "informative": None}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        i = rng.integers(0, len(y), len(y))
        if y[i].any() and not y[i].all():
            draws.append(roc_auc(score[i][y[i]], score[i][~y[i]]))
    ci = _interval(np.asarray(draws))
    return {**out, "auc": roc_auc(score[y], score[~y]), "ci95": ci, "informative": bool(ci[0] > 0.5)}


SHIFT_FRAMES = 2048  # recorded frames, spread evenly over the judging episodes, on which both policies act


@torch.no_grad()
def policy_shift(
    bc: GaussianPolicy, refined: GaussianPolicy, dataset, episodes: list[int], max_frames: int = SHIFT_FRAMES
) -> dict[str, Any]:
    """How far refinement moved the policy: both policies' mean actions (clipped to the action range,
    as on the robot) on the same recorded frames with their real frame history, the mean and largest
    absolute difference in action units (actions lie in [-1, 1]) and the mean in BC's own standard
    deviations. Near zero the refined policy acts as BC does: the gate's paired prediction is then zero
    and any difference measured on the robot is noise (docs/results.md: the demo's 8,192 PPO steps moved
    drawer's BC by 0.009, and the two dreamt alike from every start)."""
    from world4rl_policy.bc import BCData

    data = BCData(dataset, episodes, bc.config.frame_history, bool(bc.config.proprio_dim))
    if len(data) == 0:
        raise ValueError("policy_shift: the episodes hold no frames")
    device = next(bc.parameters()).device
    index = np.unique(np.linspace(0, len(data) - 1, min(max_frames, len(data))).round().astype(np.int64))
    shift, in_std = [], []
    for chunk in np.array_split(index, -(-len(index) // 256)):
        b = data.batch(chunk)
        frames, proprio = b["frames"].to(device), b["proprio"].to(device) if "proprio" in b else None
        bc_mean, bc_log_std, _ = bc(frames, proprio)
        refined_mean = refined(frames, proprio)[0].clamp(-1.0, 1.0)
        d = (refined_mean - bc_mean.clamp(-1.0, 1.0)).abs().float()
        shift.append(d)
        in_std.append(d / bc_log_std.float().exp())
    d, z = torch.cat(shift), torch.cat(in_std)
    return {
        "frames": len(index),
        "mean_abs": float(d.mean()),
        "max_abs": float(d.max()),
        "per_dimension": [round(float(v), 6) for v in d.mean(0)],
        "mean_in_bc_std": float(z.mean()),
    }


def shift_line(shift: dict[str, Any]) -> str:
    """One sentence for logs and reports."""
    return (
        f"refinement moved the mean action by {shift['mean_abs']:.4f} on average (largest {shift['max_abs']:.3f}; "
        f"actions lie in [-1, 1]), {shift['mean_in_bc_std']:.2f} of BC's standard deviations, over "
        f"{shift['frames']} recorded frames"
    )


def discrimination_line(d: dict[str, Any]) -> str:
    """One sentence for logs and reports."""
    if d.get("auc") is None:
        return f"imagination's discrimination: undefined ({d['successes']} real successes, {d['failures']} failures)"
    lo, hi = d["ci95"]
    verdict = (
        "imagination tells real successes from failures"
        if d["informative"]
        else "not distinguishable from chance: single dreams say little here; only the policies' paired imagined "
        "difference can (rule 'paired')"
    )
    auc = f"ROC AUC {d['auc']:.2f} (95 % {lo:.2f}-{hi:.2f})"
    return f"imagination's discrimination: {auc} on the BC rollouts; {verdict}"


def gate(prediction: dict[str, Any] | None, reason_if_none: str = "") -> dict[str, str]:
    """Which policy to deploy: "refined" only when the predicted gain's 95 % lower bound is above zero."""
    if prediction is None or "difference" not in prediction:
        return {"policy": "bc", "reason": f"no prediction ({reason_if_none}); the gate keeps the BC policy"}
    d = prediction["difference"]
    lo, hi = d["predicted_ci95"]
    pct = f"{100 * d['predicted']:+.1f} points (95 % interval {100 * lo:+.1f} to {100 * hi:+.1f})"
    if lo > 0:
        return {"policy": "refined", "reason": f"predicted gain over BC {pct} lies above zero"}
    return {"policy": "bc", "reason": f"predicted gain over BC {pct} is not above zero; keeping BC"}


def held_out_starts(dataset, world_model_config: dict[str, Any], task: str | None) -> list[int]:
    """The task's episodes the world model did not train on (its validation split)."""
    d = world_model_config.get("dataset") or {}
    _, val = dataset.split(float(d.get("val_fraction", 0.1)), int(d.get("split_seed", 0)))
    return dataset.select(val, tasks=[task] if task else None)


def recorded_horizon(dataset, episodes: list[int]) -> int:
    """Steps of the longest of these recorded episodes (frames - 1): a dream as long as the robot's."""
    return max(int(dataset.episodes[e]["length"]) for e in episodes) - 1


def recorded_outcomes(dataset, episodes: list[int]) -> np.ndarray:
    """The real outcome (success) of each of these recorded episodes, in order."""
    return np.array([bool(dataset.episodes[e]["success"]) for e in episodes], dtype=bool)


def judging_horizon(dataset, settings: PredictionSettings, episodes: list[int]) -> int:
    """Imagined steps per dream when judging a policy: settings.horizon, else as long as the robot's
    episodes (the longest of `episodes`, the task's recorded BC rollouts or its held-out episodes),
    whatever horizon PPO trained with: success is judged over the whole task, as on the robot."""
    if settings.horizon:
        return int(settings.horizon)
    if not episodes:
        raise ValueError("judging_horizon: no episodes to take the task's length from (set prediction.horizon)")
    return recorded_horizon(dataset, episodes)


def predict_and_gate(
    bc_policy: str | Path,
    refined_policy: str | Path,
    world_model: str | Path,
    reward: str | Path,
    dataset: str | Path,
    task: str | None,
    settings: PredictionSettings,
    threshold: float | None = None,
    sampling_steps: int | None = None,
    bf16: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    exclude: list[int] | tuple[int, ...] = (),
    dreamt: tuple[Imagined, int] | None = None,
) -> dict[str, Any]:
    """The refine run's closing step: predictions for BC and refined, and the gate's choice. Held-out
    starts in `exclude` (those that chose among several PPO seeds: world4rl_policy.seeds) are not used.
    `dreamt`: (the BC policy's dreams of its recorded rollouts, their horizon), already dreamt with this
    threshold (the reward calibration's): used for the calibration when they match these rollouts."""
    from world4rl_model.dataset import Dataset
    from world4rl_model.env import WorldModelEnv
    from world4rl_model.reward import RewardClassifier
    from world4rl_model.world_model import WorldModel

    ds = Dataset(dataset)
    tasks = [task] if task else None
    calib_eps = ds.select(tasks=tasks, kinds=[CALIBRATION_KIND])
    device = torch.device(device)
    wm, wm_config = WorldModel.from_checkpoint(world_model, device)
    starts = [e for e in held_out_starts(ds, wm_config, task) if e not in set(exclude)]
    method = PAIRED_METHOD if settings.rule == "paired" else METHOD
    out: dict[str, Any] = {"method": method, "assumption": "imagination misjudges the refined policy as it did BC"}
    if exclude:
        out["excluded_starts"] = sorted(int(e) for e in exclude)  # they chose the PPO seed: not a fair judge
    if len(calib_eps) < settings.min_calibration or not starts:
        return {**out, "prediction": None, "deploy": gate(None, _no_prediction(len(calib_eps), task, settings))}
    horizon = judging_horizon(ds, settings, calib_eps)
    rm, _ = RewardClassifier.from_checkpoint(reward, device)
    env = WorldModelEnv(
        wm, rm, ds, num_envs=settings.batch, horizon=horizon, task=task, episodes=sorted(set(calib_eps) | set(starts)),
        device=device, sampling_steps=sampling_steps, threshold=threshold, bf16=bf16, seed=seed,
        success_samples=settings.success_samples,
    )  # fmt: skip
    bc, _ = load_policy_module(bc_policy)
    refined, _ = load_policy_module(refined_policy)
    bc, refined = bc.to(device), refined.to(device)
    s = seed
    show = (lambda text: text) if progress else (lambda text: None)
    reused = (  # the reward calibration's dreams judged success on one sample
        dreamt is not None
        and settings.success_samples == 1
        and _reusable(dreamt, calib_eps, settings.calibration_repeats, horizon)
    )
    if reused:
        calibration = dreamt[0]
    else:
        calibration = imagine(
            bc, env, calib_eps, settings.calibration_repeats, horizon, sampled=True, seed=s + 1,
            label=show("calibration"),
        )  # fmt: skip
    real = recorded_outcomes(ds, calib_eps)
    judged = starts + (calib_eps if settings.rollout_starts else [])
    candidates = {
        "bc": imagine(bc, env, judged, settings.repeats, horizon, sampled=False, seed=s + 2, label=show("bc")),
        "refined": imagine(
            refined, env, judged, settings.repeats, horizon, sampled=False, seed=s + 2, label=show("refined")
        ),
    }
    prediction = predict(calibration, real, candidates, settings.bootstrap, seed=s + 3, rule=settings.rule)
    prediction.update(_judging_record(len(starts), judged, candidates))
    prediction["policy_shift"] = policy_shift(bc, refined, ds, judged)
    prediction["success_samples"] = settings.success_samples
    prediction["horizon"] = horizon
    prediction["calibration"]["dreams_reused"] = reused  # from the reward calibration's dreams
    prediction["reward_threshold"] = env.threshold
    prediction["seconds"] = calibration.seconds + sum(c.seconds for c in candidates.values())
    return {**out, "prediction": prediction, "deploy": gate(prediction)}


def _no_prediction(rollouts: int, task: str | None, settings: PredictionSettings) -> str:
    """Why there is no prediction: too few recorded BC rollouts, or no held-out start."""
    if rollouts < settings.min_calibration:
        return (
            f"{rollouts} recorded rollouts of the BC policy (kind '{CALIBRATION_KIND}') for task {task}, "
            f"need {settings.min_calibration}"
        )
    return f"no held-out episodes of task {task} in the world model's validation split"


def _judging_record(held_out: int, judged: list[int], candidates: dict[str, Imagined]) -> dict[str, Any]:
    """Which starts judged the policies, and every start's dream verdicts (so that another rule can be
    judged on the same dreams later)."""
    return {
        "judging_starts": {"held_out": held_out, "recorded_rollouts": len(judged) - held_out},
        "per_start": {
            "episodes": [int(e) for e in judged],
            **{n: [round(float(f), 6) for f in c.success_fraction] for n, c in candidates.items()},
        },
    }


def _reusable(dreamt: tuple[Imagined, int], episodes: list[int], repeats: int, horizon: int) -> bool:
    dreams, dreamt_horizon = dreamt
    return dreamt_horizon == horizon and dreams.dreams == repeats and dreams.episodes.tolist() == list(episodes)


def interval_text(p: dict[str, Any]) -> str:
    lo, hi = p["predicted_ci95"]
    return f"{100 * p['predicted_success']:.1f} % ({100 * lo:.1f}-{100 * hi:.1f} %)"


# ---------------------------------------------------------------------------------- the gate's file

GATE_FILE = "gate.json"  # in the refine run directory, beside `latest`
GATE_FORMAT = "world4rl-gate"
POLICY_CHOICES = ("gate", "bc", "refined")  # what deploy runs from a refine run: the gate's pick, or either


def write_gate(refine_out: str | Path, result: dict[str, Any], bc_policy: str | Path) -> Path:
    """OUT/gate.json: the gate's choice with both checkpoints' fingerprints (a later change of either
    makes the decision stale) and the prediction it rests on."""
    from world4rl_model.checkpoint import checkpoint_fingerprint

    bc, refined = checkpoint_fingerprint(bc_policy), checkpoint_fingerprint(refine_out)
    record = {
        "format": GATE_FORMAT,
        "version": 1,
        "deploy": result["deploy"]["policy"],
        "reason": result["deploy"]["reason"],
        "bc": {"checkpoint": str(bc.path), "sha256": bc.sha256},
        "refined": {"checkpoint": str(refined.path), "sha256": refined.sha256},
        **{k: v for k, v in result.items() if k != "deploy"},
    }
    path = Path(refine_out) / GATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_gate(refine_out: str | Path) -> dict[str, Any] | None:
    """The gate record of a refine run directory, or None when it has none."""
    from world4rl_model.atomic_io import read_json_record

    path = Path(refine_out) / GATE_FILE
    record = read_json_record(path, GATE_FORMAT, "gate")
    if record is not None and record.get("deploy") not in ("bc", "refined"):
        raise ValueError(f"{path}: not a gate record (deploy {record.get('deploy')!r})")
    return record


def resolve_deploy_policy(policy: str | Path, choice: str = "gate") -> tuple[Path, str | None]:
    """The checkpoint to deploy for `policy` and a sentence saying why (None for a plain checkpoint).

    `policy` may be a refine run directory with a gate record: `choice="gate"` runs what the gate
    chose, "bc" or "refined" that one explicitly. A record whose checkpoints changed since is stale:
    an error, so an old decision never picks for a new policy."""
    from world4rl_model.checkpoint import checkpoint_fingerprint

    if choice not in POLICY_CHOICES:
        raise ValueError(f"policy choice must be one of {POLICY_CHOICES}, got {choice!r}")
    record = read_gate(policy) if Path(policy).is_dir() else None
    if record is None:
        if choice != "gate":
            raise ValueError(
                f"{policy}: no {GATE_FILE} (not a refine run with a gate decision); choose {choice!r} how?"
            )
        return Path(policy), None
    for name in ("bc", "refined"):
        entry = record[name]
        now = checkpoint_fingerprint(policy if name == "refined" else entry["checkpoint"])
        if now.sha256 != entry["sha256"]:
            raise ValueError(
                f"{Path(policy) / GATE_FILE}: the {name} policy changed since the gate decided "
                f"({entry['checkpoint']}); run `world4rl predict` again, or deploy a checkpoint directory directly"
            )
    picked = record["deploy"] if choice == "gate" else choice
    path = Path(record[picked]["checkpoint"])
    if choice == "gate":
        note = f"deploying the {picked} policy, as the gate chose: {record['reason']}"
    elif choice == record["deploy"]:
        note = f"deploying the {picked} policy (chosen explicitly; the gate chose it too: {record['reason']})"
    else:
        note = f"deploying the {picked} policy against the gate's choice of {record['deploy']} ({record['reason']})"
    return path, note

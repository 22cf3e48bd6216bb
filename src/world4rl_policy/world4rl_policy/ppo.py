"""PPO in imagination: refine a behaviour-cloned policy inside the frozen world model (World4RL).

One file, CleanRL style (ppo_continuous_action.py), read top to bottom:

1. `PPOConfig`: every setting, with defaults for the CPU budget of this project.
2. `compute_gae`, `ppo_losses`, `gaussian_kl`: the update's math as pure functions (unit-tested
   against hand-computed values).
3. `refine` and `_Refinement`: the loop. Load the BC policy (and a frozen copy of it as the
   reference); build a `WorldModelEnv` (world4rl_model.env) whose episodes start from real dataset
   frames, whose next frames the diffusion model dreams and whose reward is the success
   classifier's; then repeat: collect `num_steps` imagined steps in each of `num_envs` envs,
   compute GAE advantages (`_Refinement.batch`), and take `update_epochs` passes of
   clipped-objective mini-batch updates (`_Refinement.update`). The training harness
   (world4rl_model.harness) runs the repetition, as for every trainer: seeding, the time limit,
   TensorBoard, checkpoints and resume, the progress bar.

Details that matter here:

- Actions: the policy is a *clipped* Gaussian (policy.py). PPO's ratio uses the log-density of the
  raw sample; the env clips it to [-1, 1] (CleanRL's continuous PPO).
- Truncation is not termination: when an imagined episode hits the horizon H, its last reward is
  bootstrapped with gamma * V(final frames) (from the env's info["final_obs"]); only success
  (the classifier firing) terminates with no bootstrap.
- Critic: BC never trained the value head, so the first `value_warmup_updates` updates train the
  critic alone, and by default the value loss does not flow into the shared image encoder
  (`critic_detach`), so a noisy value regression cannot erase the features BC learned.
- Conservative exploration: log-std is clamped to <= `log_std_max` (0: std <= 1, the paper's
  choice; 2 is the usual bound, for comparison). The clamp is part of the policy's config, so the
  refined checkpoint keeps it.
- Staying near the data: `kl_bc_coef` adds KL(pi || pi_BC) on the visited (imagined) states;
  `bc_coef` adds the Gaussian NLL of the demonstrations (a BC regulariser on real frames).

Run directory (`out`)::

    OUT/
      latest, step_000000010/ ...   policy checkpoints (safetensors + config.json) with training state;
                                    `policy.load_policy(OUT)` runs the latest. The step is the update.
      tb/                           TensorBoard: imagined success rate/return/length, losses, KL, std
      imagined.mp4                  a few imagined episodes of the final policy (if imageio is present)
      summary.json                  written when the run ends
      gate.json                     predicted real success of BC and the refined policy, and the
                                    policy to deploy (world4rl_policy.prediction; --no-predict: none)

At the end the refined checkpoint gets out-of-distribution statistics fitted to its own weights
(world4rl_policy.ood: refinement changed the encoder the BC policy's were fitted to).

Resume: run the same command again; it continues from OUT/latest (weights, optimizer, update
counter, reference policy). Imagined episodes in flight are not saved: a resumed run starts new
episodes from real frames, seeded by (seed, update).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from world4rl_model.harness import Component, Harness, LoopSettings
from world4rl_model.runtime import derive_seed
from world4rl_policy.ood import fit_run
from world4rl_policy.policy import (
    CHECKPOINT_KIND,
    GaussianPolicy,
    PolicyConfig,
    load_policy_module,
    policy_checkpoint_config,
    recent_frames,
    soft_clamp,
)
from world4rl_policy.prediction import PredictionSettings, predict_and_gate, write_gate
from world4rl_policy.reward_calibration import calibration_in_use, dreams_for_prediction, with_calibrated_threshold

TRAINER = "ppo-imagination"


@dataclass
class PPOConfig:
    """Settings of a refinement run (`world4rl refine --help` lists them)."""

    policy: str  # BC policy checkpoint (or run directory) to start from
    world_model: str  # world-model checkpoint (or run directory)
    reward: str  # reward-classifier checkpoint (or run directory)
    dataset: str  # dataset whose real frames start the imagined episodes
    out: str  # run directory: checkpoints OUT/step_*/ and `latest`, TensorBoard OUT/tb, video OUT/imagined.mp4
    task: str | None = None  # task to refine (None: the BC policy's task if it has exactly one)
    # --- imagined rollouts
    num_envs: int = 32  # imagined episodes run in parallel
    num_steps: int = 16  # imagined steps per env per PPO update (rollout length)
    horizon: int = 50  # imagined episode length H (truncation)
    total_steps: int = 50_000  # imagined transitions in total
    start: Literal["first", "any"] = "first"  # start imagined episodes at real episodes' first frame or any frame
    start_kinds: list[str] | None = None  # episode kinds to start from, e.g. expert policy (None: all)
    sampling_steps: int | None = None  # Euler steps of the world model (None: its own default)
    reward_mode: Literal["binary", "probability"] = "binary"  # binary success (World4RL) or its probability
    reward_threshold: float | None = None  # success probability threshold (None: the classifier's own)
    # raise the threshold until dreams of the BC policy's recorded rollouts succeed no more often than
    # they did on the robot (world4rl_policy.reward_calibration; reward_threshold is then the floor)
    reward_calibration: bool = False
    bf16: bool = False  # bfloat16 autocast for the world model and classifier (~1.5x on CPUs with AVX512-BF16)
    # --- PPO
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    lr: float = 3e-5  # actor (and encoder) learning rate: a fine-tune of BC, so small
    critic_lr: float = 3e-4  # critic learning rate (the critic starts from scratch)
    anneal_lr: bool = False  # decay the learning rates linearly to 0
    update_epochs: int = 4  # epochs over each rollout per update
    num_minibatches: int = 4  # mini-batches per epoch
    clip_coef: float = 0.2  # PPO ratio clip epsilon
    clip_vloss: bool = False  # clip the value loss too (CleanRL's option)
    norm_adv: bool = True  # normalise advantages per mini-batch
    ent_coef: float = 0.0  # entropy bonus weight
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient-norm clip
    target_kl: float | None = 0.05  # stop an update's epochs early past this approx. KL (None or <= 0: never)
    value_warmup_updates: int = 3  # first updates train the critic only
    critic_detach: bool = True  # the value loss does not train the shared encoder (--no-critic-detach: it does)
    # --- staying close to the demonstrations
    kl_bc_coef: float = 0.0  # weight of KL(pi || pi_BC) on imagined states
    bc_coef: float = 0.0  # weight of the demonstrations' Gaussian NLL (BC regulariser)
    bc_batch_size: int = 64  # demonstration samples per mini-batch for the BC regulariser
    bc_kinds: list[str] = field(default_factory=lambda: ["expert", "human"])  # episode kinds of the BC regulariser
    # --- exploration bounds (override the BC policy's; None keeps them)
    log_std_max: float | None = 0.0  # max log-std: 0 is World4RL's conservative exploration (std <= 1), 2 the usual
    log_std_min: float | None = None  # log-std lower bound (None: the policy's)
    # --- run
    seed: int = 0  # random seed
    seeds: int = 1  # PPO runs with seeds seed..seed+seeds-1; the best in imagination on held-out starts is kept
    device: str = "cpu"  # torch device: cpu or cuda
    threads: int | None = None  # torch CPU threads (None: the cores)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    checkpoint_every: int = 10  # checkpoint every N updates
    keep_checkpoints: int = 3  # checkpoints kept in OUT (older ones are deleted)
    video_episodes: int = 4  # imagined episodes of the final policy written to OUT/imagined.mp4 (0: none)
    resume: bool = True  # continue from OUT/latest if OUT has a checkpoint (--no-resume: start afresh)
    progress: bool = True  # show a progress bar
    # --- closing step: predicted real success of BC and the refined policy, and the policy to deploy
    predict: bool = True  # predict both policies' real success and write the gate's choice to OUT/gate.json
    prediction: PredictionSettings = field(default_factory=PredictionSettings)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.target_kl is not None and self.target_kl <= 0:
            self.target_kl = None

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- the math


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a rollout of T steps of B envs.

    rewards, values, dones: [T, B]; dones[t] = the episode ended with step t (no bootstrap past it:
    truncated steps must already carry gamma * V(final) in their reward); next_value [B] = V of the
    observation after the last step. Returns (advantages, returns = advantages + values), [T, B].
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        following = next_value if t == steps - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * following * nonterminal - values[t]
        last = delta + gamma * gae_lambda * nonterminal * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_losses(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    clip_coef: float,
    clip_vloss: bool = False,
    norm_adv: bool = True,
) -> dict[str, torch.Tensor]:
    """The clipped surrogate (to minimise), the value loss and diagnostics for one mini-batch.

    pg_loss = mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))), r = exp(new - old);
    v_loss = 0.5 mean((V - R)^2) (or the clipped variant of CleanRL with clip_vloss);
    approx_kl = mean((r - 1) - log r) (Schulman's low-variance estimator).
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    if norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    if clip_vloss:
        v_clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((new_value - returns) ** 2).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return {"pg_loss": pg_loss, "v_loss": v_loss, "approx_kl": approx_kl, "clipfrac": clipfrac}


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(N_p || N_q) of diagonal Gaussians, summed over the last dimension."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def policy_heads(
    policy: GaussianPolicy, frames: torch.Tensor, critic_detach: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GaussianPolicy.forward (mean, log_std, value), optionally with the critic on detached features."""
    cfg = policy.config
    h = policy.features(frames)
    a = policy.actor(h)
    mean = policy.mean_head(a)
    log_std = soft_clamp(policy.log_std_head(a), cfg.log_std_min, cfg.log_std_max)
    value = policy.critic(h.detach() if critic_detach else h).squeeze(-1)
    return mean, log_std, value


# ---------------------------------------------------------------------------------- the loop


def _load_start_policy(cfg: PPOConfig, device: torch.device) -> tuple[GaussianPolicy, dict[str, Any]]:
    """The BC policy with the requested log-std bounds (the bounds are config, not weights)."""
    policy, config = load_policy_module(cfg.policy)
    pcfg = policy.config
    overrides = {}
    if cfg.log_std_max is not None:
        overrides["log_std_max"] = float(cfg.log_std_max)
    if cfg.log_std_min is not None:
        overrides["log_std_min"] = float(cfg.log_std_min)
    if overrides:
        new = GaussianPolicy(PolicyConfig.from_dict({**pcfg.to_dict(), **overrides}))
        new.load_state_dict(policy.state_dict())
        policy = new
    return policy.to(device), config


def _resolve_task(cfg: PPOConfig, bc_config: dict[str, Any], dataset_tasks: list[str]) -> str | None:
    if cfg.task:
        return cfg.task
    tasks = bc_config.get("tasks") or []
    if len(tasks) == 1:
        return tasks[0]
    if len(dataset_tasks) == 1:
        return dataset_tasks[0]
    raise ValueError(
        f"{cfg.policy}: the policy was trained on tasks {tasks} and the dataset holds {dataset_tasks}: "
        "choose the task to refine with --task"
    )


def _task_of(cfg: PPOConfig) -> str | None:
    """The task a refine run refines (before anything is built)."""
    from world4rl_model.dataset import Dataset

    return _resolve_task(cfg, load_policy_module(cfg.policy)[1], list(Dataset(cfg.dataset).tasks))


def make_env(cfg: PPOConfig, task: str | None, device: torch.device, num_envs: int | None = None, seed: int = 0):
    from world4rl_model.dataset import Dataset
    from world4rl_model.env import WorldModelEnv
    from world4rl_model.reward import RewardClassifier
    from world4rl_model.world_model import WorldModel

    wm, _ = WorldModel.from_checkpoint(cfg.world_model, device)
    rm, _ = RewardClassifier.from_checkpoint(cfg.reward, device)
    ds = Dataset(cfg.dataset)
    episodes = ds.select(tasks=[task] if task else None, kinds=cfg.start_kinds) if cfg.start_kinds else None
    return WorldModelEnv(
        wm,
        rm,
        ds,
        num_envs=num_envs or cfg.num_envs,
        horizon=cfg.horizon,
        task=task,
        episodes=episodes,
        start=cfg.start,
        device=device,
        sampling_steps=cfg.sampling_steps,
        reward_mode=cfg.reward_mode,
        threshold=cfg.reward_threshold,
        bf16=cfg.bf16,
        seed=seed,
    )


class _EpisodeStats:
    """Returns, lengths and successes of imagined episodes that finished since the last `pop`."""

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.ret = torch.zeros(num_envs, device=device)
        self.finished: list[tuple[float, int, bool]] = []

    def step(self, reward: torch.Tensor, terminated: torch.Tensor, done: torch.Tensor, length: torch.Tensor) -> None:
        self.ret += reward
        for i in done.nonzero().flatten().tolist():
            self.finished.append((float(self.ret[i]), int(length[i]), bool(terminated[i])))
            self.ret[i] = 0.0

    def pop(self) -> dict[str, float]:
        done, self.finished = self.finished, []
        if not done:
            return {}
        r, n, s = zip(*done, strict=True)
        mean = {"return": float(np.mean(r)), "length": float(np.mean(n)), "success": float(np.mean(s))}
        return {"episodes": len(done), **mean}


@dataclass
class RolloutBuffer:
    """One update's imagined experience, [num_steps, num_envs, ...] (CleanRL's storage tensors)."""

    frames: torch.Tensor  # uint8 [N, B, T, H, W, 3], the policy's input at each step
    actions: torch.Tensor  # raw (unclipped) Gaussian samples [N, B, A]
    logprobs: torch.Tensor  # log pi_old(a | s) [N, B]
    values: torch.Tensor  # V_old(s) [N, B]
    rewards: torch.Tensor  # the classifier's reward (+ gamma V(final) on truncated steps) [N, B]
    raw_rewards: torch.Tensor  # the classifier's reward alone [N, B]
    dones: torch.Tensor  # 1.0 where the episode ended with this step [N, B]

    @classmethod
    def allocate(cls, num_steps: int, num_envs: int, pcfg: PolicyConfig, device) -> RolloutBuffer:
        n, b, t, s = num_steps, num_envs, pcfg.frame_history, pcfg.image_size

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros((n, b, *shape), dtype=dtype, device=device)

        return cls(
            zeros(t, s, s, 3, dtype=torch.uint8), zeros(pcfg.action_dim), zeros(), zeros(), zeros(), zeros(), zeros()
        )


@torch.no_grad()
def collect_rollout(
    policy: GaussianPolicy,
    env,
    obs: dict[str, torch.Tensor],
    buf: RolloutBuffer,
    gamma: float,
    critic_detach: bool = True,
    stats: _EpisodeStats | None = None,
) -> dict[str, torch.Tensor]:
    """Fill `buf` with len(buf.frames) steps of every env from `obs`; returns the observation after them."""
    policy.eval()
    for step in range(buf.frames.shape[0]):
        frames = recent_frames(policy, obs["frames"])
        mean, log_std, value = policy_heads(policy, frames, critic_detach)
        dist = torch.distributions.Normal(mean, log_std.exp())
        action = dist.sample()
        buf.frames[step], buf.actions[step], buf.values[step] = frames, action, value
        buf.logprobs[step] = dist.log_prob(action).sum(-1)
        obs, reward, terminated, truncated, info = env.step(action.clamp(-1.0, 1.0))
        reward = reward.float()
        buf.raw_rewards[step] = reward
        if stats is not None:
            stats.step(reward, terminated, terminated | truncated, info["elapsed_steps"])
        if truncated.any():
            # A time limit, not a failure: bootstrap with the value of the frames the episode ended on.
            rows = truncated.nonzero().flatten()
            final = recent_frames(policy, info["final_obs"]["frames"][rows])
            reward[rows] += gamma * policy_heads(policy, final, critic_detach)[2]
        buf.rewards[step] = reward
        buf.dones[step] = (terminated | truncated).float()
    policy.train()
    return obs


def refine(cfg: PPOConfig) -> dict[str, Any]:
    """Run (or resume) PPO in the world model; returns a summary. The policy is saved in cfg.out.

    The harness (world4rl_model.harness) runs the loop, one step per PPO update: `_Refinement.batch`
    collects the rollout, `_Refinement.update` takes the update's epochs of mini-batch steps.
    With cfg.seeds > 1, world4rl_policy.seeds runs one such refinement per seed and keeps the best."""
    from world4rl_policy.seeds import SELECTION_FILE, refine_seeds

    if cfg.reward_calibration:  # resolving the task loads the policy and the dataset: only when needed
        cfg = with_calibrated_threshold(cfg, _task_of(cfg))
    if cfg.seeds > 1:
        return refine_seeds(cfg)
    if (Path(cfg.out) / SELECTION_FILE).exists():
        raise ValueError(
            f"{cfg.out}: a run of several PPO seeds ({SELECTION_FILE}); pass the same --seeds to resume it"
        )
    settings = LoopSettings.from_config(cfg, steps=cfg.num_updates, log_every=1)
    with Harness(settings) as harness:
        run = _Refinement(cfg, harness)
        t0, cpu0 = time.time(), time.process_time()
        update = harness.fit(run)
        perf = imagination_perf(run, time.process_time() - cpu0, update * cfg.batch_size)
    if not run.imagined and run.earlier.get("perf"):  # finished before: its loop's cost, not this no-op's
        perf = run.earlier["perf"]
    # Refinement changed the encoder: the BC policy's out-of-distribution statistics no longer fit.
    ood = fit_run(run.out, cfg.dataset)
    video = None
    if cfg.video_episodes > 0:
        video = write_imagined_video(cfg, run.model, run.task, run.device, run.out / "imagined.mp4")
    summary = {
        "out": str(run.out),
        "task": run.task,
        "updates": update,
        "imagined_steps_this_run": run.imagined,
        "seconds": time.time() - t0,
        "resumed_from": run.resumed_from,
        "last": run.history[-1] if run.history else {},
        "video": video,
        "ood": ood,
        "reward_threshold": run.env.threshold,
        "perf": perf,
    }
    if cfg.predict:
        summary["gate"] = predict_after_refine(cfg, run.task, update)
    (run.out / "summary.json").write_text(json.dumps({**summary, "history": run.history}, indent=1) + "\n")
    return summary


def _earlier_summary(out: Path, start_update: int) -> dict[str, Any]:
    """summary.json of an earlier attempt at this run, its history cut at `start_update` (the checkpoint
    this attempt resumes from); {} when there is none (an attempt stopped midway writes none)."""
    path = out / "summary.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    earlier["history"] = [row for row in earlier.get("history", []) if row.get("update", 0) <= start_update]
    return earlier


def imagination_perf(run: _Refinement, cpu_seconds: float, x: int) -> dict[str, Any]:
    """The PPO loop's cost: CPU seconds of the process (all threads; reward calibration, the closing
    prediction, the OOD fit and the video excluded), the part of them spent collecting rollouts (the
    world model, the classifier and the policy acting), imagined steps per CPU-hour, and the sampler
    the world model dreamt with. Also TensorBoard (perf/* at the last update's step `x`)."""
    from world4rl_model.checkpoint import load_config

    wm = run.env.world_model
    steps = run.env.sampling_steps or wm.config.sampling_steps
    perf = {
        "ppo_cpu_seconds": cpu_seconds,
        "rollout_cpu_seconds": run.rollout_cpu_seconds,
        "imagined_steps": run.imagined,
        "imagined_steps_per_cpu_hour": run.imagined * 3600.0 / cpu_seconds if cpu_seconds > 0 else None,
        "sampling_steps": int(steps),
        "world_model": str(run.cfg.world_model),
        "world_model_distilled": "distilled_from" in load_config(run.cfg.world_model),
        "threads": torch.get_num_threads(),
    }
    if run.imagined and perf["imagined_steps_per_cpu_hour"] is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run.out / "tb")) as tb:
            tb.add_scalar("perf/imagined_steps_per_cpu_hour", perf["imagined_steps_per_cpu_hour"], x)
            tb.add_scalar("perf/ppo_cpu_seconds", cpu_seconds, x)
            tb.add_scalar("perf/sampling_steps", perf["sampling_steps"], x)
    return perf


def predict_after_refine(cfg: PPOConfig, task: str | None, update: int) -> dict[str, Any]:
    """Predicted real success of BC and of the refined policy, and the gate's choice: OUT/gate.json,
    the summary, and TensorBoard (predicted/* at the last update's step)."""
    from world4rl_policy.seeds import gate_exclusions

    cfg = with_calibrated_threshold(cfg, task)  # the threshold PPO was rewarded with
    record = calibration_in_use(cfg)  # its dreams, made for this threshold
    dreamt = (dreams_for_prediction(record, cfg.reward_threshold), record["horizon"]) if record else None
    result = predict_and_gate(
        cfg.policy, cfg.out, cfg.world_model, cfg.reward, cfg.dataset, task, cfg.prediction,
        threshold=cfg.reward_threshold, sampling_steps=cfg.sampling_steps, bf16=cfg.bf16,
        seed=derive_seed(cfg.seed, "prediction"), device=cfg.device, progress=cfg.progress,
        exclude=gate_exclusions(cfg.out), dreamt=dreamt,
    )  # fmt: skip
    write_gate(cfg.out, result, cfg.policy)
    if (prediction := result["prediction"]) is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(Path(cfg.out) / "tb")) as tb:
            x = update * cfg.batch_size
            for name, p in prediction["policies"].items():
                tb.add_scalar(f"predicted/{name}_real_success", p["predicted_success"], x)
                tb.add_scalar(f"predicted/{name}_imagined_success", p["imagined_success"], x)
            tb.add_scalar("predicted/difference", prediction["difference"]["predicted"], x)
            tb.add_scalar("predicted/deploys_refined", float(result["deploy"]["policy"] == "refined"), x)
            tb.add_text("predicted/gate", result["deploy"]["reason"], x)
            tb.add_scalar("predicted/policy_shift", prediction["policy_shift"]["mean_abs"], x)
    return result


class _Refinement(Component):
    """PPO for the harness: a step is one update; its batch is a rollout of num_steps imagined steps in
    every env, and `update` takes `update_epochs` passes of clipped-objective mini-batch steps over it."""

    name = "refine"
    kind = CHECKPOINT_KIND
    progress_tags = ("imagined/episode_success", "ppo/approx_kl", "ppo/v_loss", "imagined/imagined_per_s")

    def __init__(self, cfg: PPOConfig, harness: Harness):
        from world4rl_model.dataset import Dataset

        self.cfg, self.out, self.device = cfg, Path(cfg.out), torch.device(harness.device)
        self.bf16 = bool(cfg.bf16)  # the world model and the classifier (the policy trains in fp32)
        self.tb_step_scale = cfg.batch_size  # TensorBoard's x: imagined transitions
        policy, bc_config = _load_start_policy(cfg, self.device)
        self.model = policy
        self.resumed_from = None
        if harness.checkpoint is not None:  # the harness loads its weights
            self.resumed_from = str(harness.checkpoint)
            loaded, saved = load_policy_module(self.out)
            if loaded.config != policy.config:
                raise ValueError(
                    f"{self.out}: existing run has policy config {loaded.config}, this run {policy.config}"
                )
            started_from = saved.get("refined_from", {}).get("policy")
            if started_from != str(Path(cfg.policy).absolute()):
                raise ValueError(f"{self.out}: existing run refines {started_from}, not {cfg.policy}; use a new --out")
        # The frozen reference is always the BC policy itself (for KL-to-BC and for the summary).
        self.reference, _ = _load_start_policy(cfg, self.device)
        self.reference.eval().requires_grad_(False)
        dataset = Dataset(cfg.dataset)
        self.task = _resolve_task(cfg, bc_config, list(dataset.tasks))
        self.env = make_env(cfg, self.task, self.device, seed=derive_seed(cfg.seed, "env"))
        if self.env.image_size != policy.config.image_size:
            raise ValueError(f"policy image_size {policy.config.image_size} != world model's {self.env.image_size}")
        self.bc_data = _bc_regulariser_data(cfg, dataset, self.task, bc_config, policy.config.frame_history)
        self.bc_rng = np.random.default_rng(derive_seed(cfg.seed, "bc", harness.start_step))
        self.provenance = _provenance(cfg, bc_config, dataset, self.task)
        self.buf = RolloutBuffer.allocate(cfg.num_steps, cfg.num_envs, policy.config, self.device)
        self.obs, _ = self.env.reset(seed=derive_seed(cfg.seed, "reset", harness.start_step))
        self.stats = _EpisodeStats(cfg.num_envs, self.device)
        # A resumed run keeps the rows its earlier attempts wrote to summary.json (up to where it resumes).
        self.earlier = _earlier_summary(self.out, harness.start_step) if self.resumed_from else {}
        self.history: list[dict[str, float]] = list(self.earlier.get("history", []))
        self.imagined = 0
        self.rollout_cpu_seconds = 0.0  # CPU time of this run's rollouts (dreaming, rewarding, acting)

    def optimizer(self) -> torch.optim.Optimizer:
        cfg, policy = self.cfg, self.model
        critic_params = list(policy.critic.parameters())
        critic_ids = {id(p) for p in critic_params}
        actor_params = [p for p in policy.parameters() if id(p) not in critic_ids]
        self.opt = torch.optim.Adam(
            [{"params": actor_params, "lr": cfg.lr}, {"params": critic_params, "lr": cfg.critic_lr}], eps=1e-5
        )
        return self.opt

    def batch(self, update: int) -> dict[str, Any]:
        """Collect num_steps imagined steps in every env; GAE advantages over them."""
        cfg, policy, buf = self.cfg, self.model, self.buf
        t_roll, cpu_roll = time.time(), time.process_time()
        self.obs = collect_rollout(policy, self.env, self.obs, buf, cfg.gamma, cfg.critic_detach, self.stats)
        roll_seconds = time.time() - t_roll
        self.rollout_cpu_seconds += time.process_time() - cpu_roll
        self.imagined += cfg.batch_size
        with torch.no_grad():
            next_value = policy_heads(policy, recent_frames(policy, self.obs["frames"]), cfg.critic_detach)[2]
        advantages, returns = compute_gae(buf.rewards, buf.values, buf.dones, next_value, cfg.gamma, cfg.gae_lambda)
        frames = buf.frames.flatten(0, 1)
        # The BC reference is frozen: its action distribution on these states, once per rollout rather
        # than in every epoch's mini-batches (a fifth of the update's CPU time at 4 epochs).
        with torch.no_grad():
            ref_mean, ref_log_std, _ = self.reference(frames)
        return {
            "frames": frames,
            "ref_mean": ref_mean,
            "ref_log_std": ref_log_std,
            "actions": buf.actions.flatten(0, 1),
            "logprobs": buf.logprobs.flatten(0, 1),
            "advantages": advantages.flatten(),
            "returns": returns.flatten(),
            "values": buf.values.flatten(),
            "roll_seconds": roll_seconds,
        }

    def update(self, flat: dict[str, Any], update: int) -> dict[str, float]:
        """One PPO update: epochs of shuffled mini-batches of the rollout; returns its TensorBoard scalars."""
        cfg, policy, optimizer = self.cfg, self.model, self.opt
        if cfg.anneal_lr:
            frac = 1.0 - update / cfg.num_updates
            optimizer.param_groups[0]["lr"] = frac * cfg.lr
            optimizer.param_groups[1]["lr"] = frac * cfg.critic_lr
        policy.train()
        warmup = update < cfg.value_warmup_updates
        mb_size = max(1, cfg.batch_size // cfg.num_minibatches)
        metrics: dict[str, list[float]] = {}
        stopped_early = False
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(cfg.batch_size, device=self.device)
            for start in range(0, cfg.batch_size, mb_size):
                idx = perm[start : start + mb_size]
                mean, log_std, new_value = policy_heads(policy, flat["frames"][idx], cfg.critic_detach)
                dist = torch.distributions.Normal(mean, log_std.exp())
                new_logprob = dist.log_prob(flat["actions"][idx]).sum(-1)
                entropy = dist.entropy().sum(-1).mean()
                parts = ppo_losses(
                    new_logprob,
                    flat["logprobs"][idx],
                    flat["advantages"][idx],
                    new_value,
                    flat["values"][idx],
                    flat["returns"][idx],
                    cfg.clip_coef,
                    cfg.clip_vloss,
                    cfg.norm_adv,
                )
                loss = cfg.vf_coef * parts["v_loss"]
                # Drift from BC on the visited states: always logged, a loss term if kl_bc_coef > 0.
                kl_bc = gaussian_kl(mean, log_std, flat["ref_mean"][idx], flat["ref_log_std"][idx]).mean()
                metrics.setdefault("kl_bc", []).append(float(kl_bc.detach()))
                if not warmup:
                    loss = loss + parts["pg_loss"] - cfg.ent_coef * entropy
                    if cfg.kl_bc_coef > 0:
                        loss = loss + cfg.kl_bc_coef * kl_bc
                    if self.bc_data is not None:
                        demo = self.bc_data.batch(self.bc_rng.integers(0, len(self.bc_data), size=cfg.bc_batch_size))
                        demo_mean, demo_log_std, _ = policy(demo["frames"].to(self.device))
                        demo_dist = torch.distributions.Normal(demo_mean, demo_log_std.exp())
                        bc_nll = -demo_dist.log_prob(demo["actions"].to(self.device)).sum(-1).mean()
                        loss = loss + cfg.bc_coef * bc_nll
                        metrics.setdefault("bc_nll", []).append(float(bc_nll.detach()))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                for k, v in parts.items():
                    metrics.setdefault(k, []).append(float(v.detach()))
                metrics.setdefault("entropy", []).append(float(entropy.detach()))
                metrics.setdefault("std", []).append(float(log_std.detach().exp().mean()))
            epoch_kl = np.mean(metrics["approx_kl"][-cfg.num_minibatches :])
            if cfg.target_kl is not None and not warmup and epoch_kl > cfg.target_kl:
                stopped_early = True
                break
        return self._log_row(update + 1, flat, metrics, warmup=warmup, stopped_early=stopped_early)

    def _log_row(
        self, update: int, flat: dict[str, Any], metrics: dict[str, list[float]], warmup: bool, stopped_early: bool
    ) -> dict[str, float]:
        """The update's row of summary.json's history; returned as TensorBoard tags (imagined/..., ppo/...)."""
        cfg, buf = self.cfg, self.buf
        row = {k: float(np.mean(v)) for k, v in metrics.items()}
        row.update(
            update=update,
            imagined_steps=update * cfg.batch_size,
            mean_reward=float(buf.raw_rewards.mean()),
            explained_variance=explained_variance(flat["values"], flat["returns"]),
            imagined_per_s=cfg.batch_size / max(flat["roll_seconds"], 1e-9),
            reward_threshold=self.env.threshold,
            warmup=float(warmup),
            stopped_early=float(stopped_early),
        )
        row.update({f"episode_{k}": v for k, v in self.stats.pop().items()})
        self.history.append(row)
        imagined = ("mean_reward", "imagined_per_s", "reward_threshold")
        return {
            f"{'imagined' if k.startswith('episode_') or k in imagined else 'ppo'}/{k}": v
            for k, v in row.items()
            if k not in ("update", "imagined_steps")
        }

    def checkpoint_config(self, update: int) -> dict[str, Any]:
        provenance = dict(self.provenance)
        rate = provenance.pop("control_rate_hz")
        return policy_checkpoint_config(self.model, rate, update=update, **provenance)


def _bc_regulariser_data(cfg: PPOConfig, dataset, task: str | None, bc_config: dict[str, Any], frame_history: int):
    """The demonstrations of the BC regulariser (None when bc_coef is 0)."""
    if cfg.bc_coef <= 0:
        return None
    from world4rl_policy.bc import BCData

    demo_eps = dataset.select(tasks=[task] if task else None, kinds=cfg.bc_kinds)
    demo_eps = [i for i in demo_eps if dataset.episodes[i]["success"]]
    if not demo_eps:
        raise ValueError(f"{cfg.dataset}: no successful {cfg.bc_kinds} episodes of {task} for the BC regulariser")
    post = bc_config.get("bc_config", {}).get("post_success_frames")
    return BCData(dataset, demo_eps, frame_history, use_proprio=False, post_success_frames=post)


def _provenance(cfg: PPOConfig, bc_config: dict[str, Any], dataset, task: str | None) -> dict[str, Any]:
    """What a refined checkpoint's config.json says about where it comes from."""
    from world4rl_model.dataset import manifest_hash

    return {
        "control_rate_hz": bc_config.get("action_space", {}).get("control_rate_hz", dataset.control_rate_hz),
        "trainer": TRAINER,
        "tasks": [task] if task else list(bc_config.get("tasks") or []),
        "refined_from": {
            "policy": str(Path(cfg.policy).absolute()),
            "policy_trainer": bc_config.get("trainer"),
            "world_model": str(Path(cfg.world_model).absolute()),
            "reward": str(Path(cfg.reward).absolute()),
        },
        "dataset": {"path": str(Path(cfg.dataset).absolute()), "manifest_sha256": manifest_hash(cfg.dataset)},
        "ppo_config": cfg.to_dict(),
    }


@torch.no_grad()
def write_imagined_video(cfg: PPOConfig, policy: GaussianPolicy, task, device, path: Path) -> str | None:
    """Dream `cfg.video_episodes` episodes side by side with the policy's mean action and write an
    mp4; frames the classifier calls success get a red border. Returns the path, or None if no
    video backend is available (the run's result does not depend on it)."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        return None
    env = make_env(cfg, task, device, num_envs=cfg.video_episodes, seed=derive_video_seed(cfg))
    env.terminate_on_success = False  # show what happens after the classifier fires, too
    env.horizon = cfg.horizon + 1  # no autoreset inside the clip
    obs, _ = env.reset(seed=derive_video_seed(cfg))
    policy.eval()
    clips = [obs["image"].cpu().numpy()]
    for _ in range(cfg.horizon):
        mean, _, _ = policy(recent_frames(policy, obs["frames"]))
        obs, _, _, _, info = env.step(mean.clamp(-1, 1))
        img = obs["image"].cpu().numpy().copy()
        hit = info["success"].cpu().numpy()
        for border in (np.s_[:, :2], np.s_[:, -2:], np.s_[:, :, :2], np.s_[:, :, -2:]):
            view = img[hit]
            view[border] = (255, 0, 0)
            img[hit] = view
        clips.append(img)
    scale = max(1, 256 // policy.config.image_size)
    try:
        with imageio.get_writer(str(path), fps=5, macro_block_size=1) as w:
            for frame in clips:
                row = np.concatenate(list(frame), axis=1)
                w.append_data(row.repeat(scale, 0).repeat(scale, 1))
    except Exception:  # no ffmpeg backend
        return None
    return str(path)


def derive_video_seed(cfg: PPOConfig) -> int:
    return derive_seed(cfg.seed, "video")


@torch.no_grad()
def imagined_success(
    policy_path: str,
    world_model: str,
    reward: str,
    dataset: str,
    task: str | None,
    episodes: int = 64,
    horizon: int = 50,
    batch: int = 32,
    deterministic: bool = True,
    bf16: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Success rate of a policy *inside* the world model (classifier success before the horizon),
    from `episodes` real start frames. Set against the true simulator's rate for the same policy,
    the gap measures how far the model (and classifier) mislead it: a refined policy whose imagined
    success rises far above its real one is exploiting model errors."""
    policy, _ = load_policy_module(policy_path)
    policy = policy.to(device).eval()
    cfg = PPOConfig(
        policy=policy_path, world_model=world_model, reward=reward, dataset=dataset, out="", horizon=horizon, bf16=bf16
    )
    done_succ, done_len = [], []
    env = make_env(cfg, task, torch.device(device), num_envs=batch, seed=seed)
    env.horizon = horizon
    gen = torch.Generator(device=device).manual_seed(seed)
    rounds = math.ceil(episodes / batch)
    for r in range(rounds):
        obs, _ = env.reset(seed=seed + r)
        finished = torch.zeros(batch, dtype=torch.bool)
        success = torch.zeros(batch, dtype=torch.bool)
        length = torch.full((batch,), horizon)
        for t in range(horizon):
            mean, log_std, _ = policy(recent_frames(policy, obs["frames"]))
            action = mean if deterministic else mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
            obs, _, terminated, truncated, _ = env.step(action.clamp(-1, 1))
            new = (terminated | truncated).cpu() & ~finished
            success |= terminated.cpu() & new
            length[new] = t + 1
            finished |= new
            if finished.all():
                break
        done_succ += success.tolist()
        done_len += [int(n) for n, s in zip(length, success, strict=True) if s]
    done_succ = done_succ[:episodes]
    return {
        "episodes": len(done_succ),
        "success_rate": float(np.mean(done_succ)),
        "mean_steps_to_success": float(np.mean(done_len)) if done_len else None,
        "horizon": horizon,
    }

"""WorldModelEnv: a batched environment that runs inside the frozen world model (DIAMOND-style).

The RL code sees an ordinary vectorised environment (gymnasium.vector-like, torch tensors):

    env = WorldModelEnv.from_checkpoints("runs/wm", "runs/reward", "data/ds", num_envs=64, task="push")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(actions)      # actions [B, 4] in [-1, 1]

Observation, a dict of tensors on `device`:
- "frames": uint8 [B, T, H, W, 3], the last T RGB frames, oldest first, obs["frames"][:, -1] is
  the current one (the layout world4rl_policy's policies take; `layout="chw"` gives [B, T, 3, H, W]);
- "image":  uint8 [B, H, W, 3] (or [B, 3, H, W]), the current frame alone (as the sim's "image");
- "task":   int64 [B], index into `env.tasks` (the dataset manifest's sorted task list).

Reset starts every env from real frames: an episode of the dataset (optionally of given tasks) and
a start step (default its first frame; `start="any"` draws any step), with that episode's real
frame and action history (padded before its first frame exactly as in training). Each step
samples the next frame with the diffusion model (Euler, `sampling_steps`), then asks the reward
classifier for P(success | next frame, task):
- reward = 1.0 if P >= threshold else 0.0 (`reward_mode="binary"`, World4RL), or P itself ("probability");
- terminated = success (if `terminate_on_success`), truncated = the episode reached `horizon` steps.
With `success_samples` K > 1, a success must also hold on K - 1 further samples of the same step.
Finished envs are reset in the same call (autoreset); their last observation is in
info["final_obs"] (a dict like obs, for those rows; rows not done hold the current frames) with
info["done"] the mask. Other info: "success_prob" [B], "elapsed_steps" [B], "source_episode" [B].

On CPU the batch is split by rows over `cpu_shards` worker threads, each with its share of the
torch threads (default: one shard per torch thread, at least 16 envs each, where OpenMP threads
sleep when idle; see default_cpu_shards). The networks' small convolutions split poorly inside one
op, and with OMP_WAIT_POLICY=PASSIVE every parallel op wakes sleeping threads; a shard's ops wake
none. Measured in bench/bench_world_model.py; the dreams are the same as without shards.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world4rl_model.data import EpisodeStore
from world4rl_model.dataset import Dataset, manifest_hash
from world4rl_model.reward import RewardClassifier
from world4rl_model.world_model import WorldModel, frames_to_uint8

MIN_ENVS_PER_SHARD = 16


class RowShards:
    """Runs a batched function on row slices of its tensors, one slice per worker thread, each thread
    with `threads_each` torch threads of its own."""

    def __init__(self, shards: int, threads_each: int):
        self.shards = shards
        self.pool = ThreadPoolExecutor(shards, thread_name_prefix="world_model_env")
        main_threads = torch.get_num_threads()
        everyone = threading.Barrier(shards)  # one init per worker: each waits until all exist

        def init() -> None:
            torch.set_num_threads(threads_each)  # this thread's team (torch also keeps it as its default)
            torch.ones(1 << 16).add_(1)  # a parallel op: torch fixes this thread's count now
            everyone.wait()

        for future in [self.pool.submit(init) for _ in range(shards)]:
            future.result()
        torch.set_num_threads(main_threads)  # torch's default for other threads, as it was

    def submit(self, fn: Callable[..., Any], *tensors: torch.Tensor) -> list[Future]:
        """fn(*row slices of tensors) in the workers, one future per slice, in row order."""
        bounds = np.linspace(0, len(tensors[0]), min(self.shards, len(tensors[0])) + 1).astype(int)
        parts = [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]
        return [self.pool.submit(fn, *(t[part] for t in tensors)) for part in parts]

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def default_cpu_shards(num_envs: int, threads: int, wait_policy: str | None = None) -> int:
    """One shard per torch thread (>= MIN_ENVS_PER_SHARD envs each) where idle OpenMP threads sleep
    (OMP_WAIT_POLICY=PASSIVE, our default: runtime.configure_openmp); 1 where they spin
    (WORLD4RL_CORES=dedicated), as the main thread's spinning team then takes the shards' cores:
    bench_world_model measured the student at 1,456-1,488/s whole against 1,206-1,240/s sharded there."""
    policy = os.environ.get("OMP_WAIT_POLICY", "") if wait_policy is None else wait_policy
    if policy.upper() != "PASSIVE":
        return 1
    return max(1, min(threads, num_envs // MIN_ENVS_PER_SHARD))


def row_shards(num_envs: int, device: torch.device, cpu_shards: int | None) -> RowShards | None:
    """The worker threads over an env's rows (cpu_shards None: default_cpu_shards); None where the
    whole batch runs in the calling thread (one shard, or not on CPU)."""
    threads = torch.get_num_threads()
    shards = default_cpu_shards(num_envs, threads) if cpu_shards is None else int(cpu_shards)
    if shards < 1:
        raise ValueError(f"cpu_shards must be >= 1, got {shards}")
    return RowShards(shards, max(1, threads // shards)) if shards > 1 and device.type == "cpu" else None


class WorldModelEnv:
    metadata = {"imagined": True}  # noqa: RUF012 (informational, like gymnasium's metadata)

    def __init__(
        self,
        world_model: WorldModel,
        reward_model: RewardClassifier | None,
        dataset: Dataset | str | Path,
        num_envs: int,
        horizon: int = 50,
        task: str | Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        start: str = "first",
        device: str | torch.device = "cpu",
        sampling_steps: int | None = None,
        reward_mode: str = "binary",
        threshold: float | None = None,
        terminate_on_success: bool = True,
        layout: str = "hwc",
        bf16: bool = False,
        channels_last: bool = True,
        seed: int | None = None,
        success_samples: int = 1,
        cpu_shards: int | None = None,
    ):
        if reward_mode not in ("binary", "probability"):
            raise ValueError(f"reward_mode must be 'binary' or 'probability', got {reward_mode!r}")
        if start not in ("first", "any"):
            raise ValueError(f"start must be 'first' or 'any', got {start!r}")
        if layout not in ("hwc", "chw"):
            raise ValueError(f"layout must be 'hwc' or 'chw', got {layout!r}")
        if success_samples < 1:
            raise ValueError(f"success_samples must be >= 1, got {success_samples}")
        self.device = torch.device(device)
        self.world_model = world_model.to(self.device).eval()
        if channels_last and self.device.type == "cpu":
            self.world_model.use_channels_last()
        self.reward_model = reward_model.to(self.device).eval() if reward_model is not None else None
        ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        cfg = world_model.config
        if ds.image_size != cfg.image_size:
            raise ValueError(f"{ds.root}: image_size {ds.image_size}, world model expects {cfg.image_size}")
        self.tasks: list[str] = list(ds.tasks)
        if reward_model is not None and reward_model.config.tasks and reward_model.config.tasks != self.tasks:
            raise ValueError(f"reward classifier tasks {reward_model.config.tasks} != dataset tasks {self.tasks}")
        task_filter = [task] if isinstance(task, str) else (list(task) if task is not None else None)
        if task_filter is not None and (unknown := sorted(set(task_filter) - set(self.tasks))):
            raise ValueError(f"{ds.root}: no task(s) {unknown}; the dataset has {self.tasks}")
        chosen = ds.select(episodes, tasks=task_filter)
        if not chosen:
            raise ValueError(f"{ds.root}: no episodes to start from (task={task}, episodes={episodes})")
        self.dataset = ds
        self.store = EpisodeStore(ds, chosen, self.device)
        self.num_envs = int(num_envs)
        self.horizon = int(horizon)
        self.start = start
        self.sampling_steps = sampling_steps
        self.reward_mode = reward_mode
        self.threshold = float(
            threshold if threshold is not None else (reward_model.config.threshold if reward_model else 0.5)
        )
        self.terminate_on_success = terminate_on_success
        # A success must hold on this many independent samples of the dreamt step: the classifier fires
        # on the sampled frame and on success_samples - 1 more drawn from the same frames and action.
        # Where the dream is uncertain (a near miss one sample shows as a hit), they disagree; a policy
        # that learnt to provoke lucky samples stops being credited. 1: the sampled frame alone.
        self.success_samples = int(success_samples)
        self.layout = layout
        self.bf16 = bf16
        self.context = cfg.context_frames
        self.image_size = cfg.image_size
        self.action_dim = cfg.action_dim
        self._generator = torch.Generator(device=self.device)
        self._cpu_generator = torch.Generator()
        self._seed(seed)
        b, t, s = self.num_envs, self.context, self.image_size
        self.frames = torch.zeros((b, t, 3, s, s), dtype=torch.uint8, device=self.device)
        self.actions = torch.zeros((b, t, self.action_dim), device=self.device)
        self.task = torch.zeros(b, dtype=torch.long, device=self.device)
        self.elapsed = torch.zeros(b, dtype=torch.long, device=self.device)
        self.source_episode = torch.zeros(b, dtype=torch.long, device=self.device)
        self._spaces()
        self._shards = row_shards(self.num_envs, self.device, cpu_shards)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(
        cls,
        world_model: str | Path,
        reward_model: str | Path | None,
        dataset: str | Path,
        num_envs: int,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> WorldModelEnv:
        wm, wm_config = WorldModel.from_checkpoint(world_model, device)
        rm = RewardClassifier.from_checkpoint(reward_model, device)[0] if reward_model is not None else None
        env = cls(wm, rm, dataset, num_envs, device=device, **kwargs)
        trained_on = (wm_config.get("dataset") or {}).get("manifest_sha256")
        env.dataset_matches_training = trained_on is None or trained_on == manifest_hash(env.dataset.root)
        return env

    dataset_matches_training = True

    def _spaces(self) -> None:
        try:
            from gymnasium import spaces
        except ImportError:  # gymnasium is optional for this class
            return
        s, t = self.image_size, self.context
        frame_shape = (t, s, s, 3) if self.layout == "hwc" else (t, 3, s, s)
        image_shape = frame_shape[1:]
        self.single_action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.num_envs, self.action_dim), np.float32)
        self.single_observation_space = spaces.Dict(
            {
                "frames": spaces.Box(0, 255, frame_shape, np.uint8),
                "image": spaces.Box(0, 255, image_shape, np.uint8),
                "task": spaces.Discrete(max(1, len(self.tasks))),
            }
        )

    def _seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self._generator.manual_seed(seed)
        self._cpu_generator.manual_seed(seed + 1)
        self._noise_ahead: torch.Tensor | None = None

    # ---- observation -------------------------------------------------------------------------
    def _obs(self, frames: torch.Tensor | None = None, task: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        frames = self.frames if frames is None else frames
        if self.layout == "hwc":
            frames = frames.permute(0, 1, 3, 4, 2)
        return {"frames": frames, "image": frames[:, -1], "task": self.task if task is None else task}

    # ---- reset / step -------------------------------------------------------------------------
    def _reset_rows(self, rows: torch.Tensor, episodes: torch.Tensor | None = None) -> None:
        n = len(rows)
        if n == 0:
            return
        store = self.store
        if episodes is not None:  # given start episodes (store-local indices), first frames
            positions = store.offsets[episodes.to(self.device)]
        elif self.start == "first":
            ep = torch.randint(len(store), (n,), generator=self._cpu_generator).to(self.device)
            positions = store.offsets[ep]
        else:
            valid = store.window_starts(1)
            positions = valid[torch.randint(len(valid), (n,), generator=self._cpu_generator).to(self.device)]
        frames, actions = store.history(positions, self.context)
        self.frames[rows] = frames
        self.actions[rows] = actions
        ep_local = store.frame_episode[positions]
        self.task[rows] = store.episode_task[ep_local]
        self.source_episode[rows] = torch.tensor(store.episode_indices, device=self.device)[ep_local]
        self.elapsed[rows] = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        if seed is not None:
            self._seed(seed)
        self._reset_rows(torch.arange(self.num_envs, device=self.device))
        return self._obs(), {"source_episode": self.source_episode.clone()}

    def reset_to(self, episodes: Sequence[int], seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        """Reset row i to the first frame of dataset episode `episodes[i]` (one per env; each must be
        among the env's start episodes): paired comparisons start two policies from the same frames."""
        if len(episodes) != self.num_envs:
            raise ValueError(f"reset_to needs one episode per env ({self.num_envs}), got {len(episodes)}")
        local = {int(e): i for i, e in enumerate(self.store.episode_indices)}
        if missing := sorted({int(e) for e in episodes} - set(local)):
            raise ValueError(f"episodes {missing[:5]} are not among this env's start episodes")
        if seed is not None:
            self._seed(seed)
        rows = torch.arange(self.num_envs, device=self.device)
        self._reset_rows(rows, torch.tensor([local[int(e)] for e in episodes], dtype=torch.long))
        return self._obs(), {"source_episode": self.source_episode.clone()}

    @torch.no_grad()
    def step(
        self, actions: torch.Tensor | np.ndarray
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if a.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions must be [{self.num_envs}, {self.action_dim}], got {list(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        self.actions[:, -1] = a.clamp(-1.0, 1.0)
        context_frames, context_actions = self.frames, self.actions
        nxt_u8, prob = self._dream(context_frames, context_actions, self.task)
        self.frames = torch.cat([self.frames[:, 1:], nxt_u8.unsqueeze(1)], dim=1)
        self.actions = torch.cat([self.actions[:, 1:], torch.zeros_like(self.actions[:, :1])], dim=1)
        self.elapsed += 1
        success = prob >= self.threshold
        if self.success_samples > 1 and bool(success.any()):
            success = self._confirmed(success, context_frames, context_actions)
        reward = success.float() if self.reward_mode == "binary" else prob
        terminated = success if self.terminate_on_success else torch.zeros_like(success)
        truncated = (self.elapsed >= self.horizon) & ~terminated
        done = terminated | truncated
        info: dict[str, Any] = {
            "success_prob": prob,
            "success": success,
            "elapsed_steps": self.elapsed.clone(),
            "source_episode": self.source_episode.clone(),
            "done": done,
        }
        if done.any():
            info["final_obs"] = {k: v.clone() for k, v in self._obs().items()}
            self._reset_rows(done.nonzero().flatten())
        return self._obs(), reward, terminated, truncated, info

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _noise(self, rows: int) -> torch.Tensor:
        """The sampler's starting noise, drawn whole here so that the shards do not change the samples."""
        size = self.world_model.config.image_size
        return torch.randn((rows, 3, size, size), device=self.device, generator=self._generator)

    def _dream(
        self, frames: torch.Tensor, actions: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next frame (uint8) of every row and the classifier's P(success) on it. With row shards each
        worker does both for its rows while this thread draws the next step's noise: the same draws in the
        same order, unless a success confirmation (success_samples > 1) would draw in between."""
        noise, self._noise_ahead = self._noise_ahead, None
        noise = self._noise(len(frames)) if noise is None else noise
        if self._shards is None:
            return self._dream_rows(frames, actions, noise, task)
        futures = self._shards.submit(self._dream_rows, frames, actions, noise, task)
        if self.success_samples == 1:
            self._noise_ahead = self._noise(len(frames))
        parts = [f.result() for f in futures]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _dream_rows(
        self, frames: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nxt = self._sample_uint8(frames, actions, noise)
        if self.reward_model is None:
            return nxt, torch.zeros(len(nxt), device=self.device)
        return nxt, self._probability(nxt, task)

    @torch.no_grad()
    def _sample_uint8(self, frames: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with self._autocast():  # autocast and no_grad are per thread: set in the worker itself
            # quantize=False: the uint8 conversion rounds to the same 256 levels in one pass, not three.
            nxt = self.world_model.sample(frames, actions, steps=self.sampling_steps, noise=noise, quantize=False)
        return frames_to_uint8(nxt)

    @torch.no_grad()
    def _probability(self, frames: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.reward_model.probability(frames, task).float()

    def _confirmed(self, success: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """success, kept only where the classifier also fires on success_samples - 1 further samples of
        the same step (same frames and action, other noise)."""
        rows = success.nonzero().flatten()
        agree = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        for _ in range(self.success_samples - 1):
            agree &= self._dream(frames[rows], actions[rows], self.task[rows])[1] >= self.threshold
        confirmed = success.clone()
        confirmed[rows] = agree
        return confirmed

    def close(self) -> None:
        if self._shards is not None:
            self._shards.close()

    def __repr__(self) -> str:
        return (
            f"WorldModelEnv(num_envs={self.num_envs}, image_size={self.image_size}, context={self.context}, "
            f"horizon={self.horizon}, tasks={self.tasks}, episodes={len(self.store)}, device={self.device})"
        )

"""Episodes in the true simulator through its direct Python API (no ROS): the shared core of
`world4rl eval policy` and `world4rl coverage`.

- `make_env(suite, task, ...)`: the embedded robot (FrankaSimEnv, suite "franka") or a Meta-World
  v3 task through world4rl_sim's adapter (suite "metaworld", any Meta-World task name).
- `run_episode(env, actor, seed)`: one seeded episode; returns the frames, the executed actions
  and the per-frame success flag in the dataset format's alignment (frame t, then action t).
- Actors: `PolicyActor` (a policy checkpoint; mean or sampled action), `ExpertActor` (the
  scripted expert with Gaussian noise), `RandomWalkActor` (temporally correlated random actions,
  which cover the workspace better than white noise).
- `episodes(...)`: one episode per seed in one env, yielded as each ends.
- `policy_episodes(...)`: the one direct-sim evaluator of a policy (episodes end at the first
  success): `world4rl eval policy` and `world4rl deploy --compare-direct` (`direct_api_outcomes`).
- `record_episodes(...)`: appends such episodes to a world4rl dataset, kind expert/policy/random;
  `top_up(...)` records only the seeds a dataset does not hold yet (an interrupted run continues).

Seeds: episode i of a run uses seed base + i, so two policies evaluated with the same base see the
same initial states.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from world4rl_bringup.runtime_timing import TIMINGS, RuntimeTimedControl

SUITES = ("franka", "metaworld")
# Seed ranges of recorded episodes (per task): episode i of a kind uses SEED0 + i, away from the
# evaluation seeds (`world4rl eval policy` and `world4rl deploy` start at 1000).
EXPERT_SEED0, POLICY_SEED0, RANDOM_SEED0 = 0, 10_000, 20_000


def make_env(
    suite: str,
    task: str,
    image_size: int,
    seed: int = 0,
    horizon: int | None = None,
    terminate_on_success=False,
    timing: str = "direct",
):
    """A gymnasium env of the true simulator with obs["image"] (uint8 RGB) and info["success"].
    timing (franka only): "direct" steps with the sim's own controller (FrankaSim.apply_action),
    "runtime" moves the arm as a deploy through ROS does (runtime_timing.RuntimeTimedControl)."""
    if timing not in TIMINGS:
        raise ValueError(f"unknown timing {timing!r}; choose from {', '.join(TIMINGS)}")
    if suite == "franka":
        from world4rl_sim.env import FrankaSimEnv

        control = RuntimeTimedControl() if timing == "runtime" else None
        return FrankaSimEnv(
            task,
            image_size=image_size,
            seed=seed,
            horizon=horizon,
            terminate_on_success=terminate_on_success,
            control=control,
        )
    if timing != "direct":
        raise ValueError(f"timing {timing!r} is the embedded robot's runtime; suite {suite!r} has only 'direct'")
    if suite == "metaworld":
        from world4rl_sim.metaworld_adapter import METAWORLD_DEFAULT_HORIZON, MetaWorldEnv

        return MetaWorldEnv(
            task,
            image_size=image_size,
            seed=seed,
            horizon=horizon or METAWORLD_DEFAULT_HORIZON,
            terminate_on_success=terminate_on_success,
        )
    raise ValueError(f"unknown suite {suite!r}; choose from {SUITES}")


def task_names(suite: str) -> list[str]:
    if suite == "franka":
        from world4rl_sim.tasks import TASKS

        return list(TASKS)
    from world4rl_sim.metaworld_adapter import metaworld_task_names

    return metaworld_task_names()


# ---------------------------------------------------------------------------------- actors


class ExpertActor:
    """The simulator's scripted expert, with Gaussian action noise of std `noise`."""

    def __init__(self, noise: float = 0.0) -> None:
        self.noise = float(noise)

    def reset(self, seed: int) -> None:
        pass

    def __call__(self, env, obs) -> np.ndarray:
        return np.asarray(env.expert_action(noise_std=self.noise), np.float32)


class RandomWalkActor:
    """a_t = smooth a_{t-1} + (1 - smooth) 3 u_t, u ~ U(-1, 1)^4, clipped; the gripper is open or closed."""

    def __init__(self, smooth: float = 0.8) -> None:
        self.smooth = float(smooth)
        self.rng = np.random.default_rng(0)
        self.a = np.zeros(4)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 1729])
        self.a = self.rng.uniform(-1, 1, 4)

    def __call__(self, env, obs) -> np.ndarray:
        self.a = np.clip(self.smooth * self.a + (1 - self.smooth) * 3.0 * self.rng.uniform(-1, 1, 4), -1, 1)
        out = self.a.astype(np.float32).copy()
        out[3] = 1.0 if out[3] >= 0 else -1.0
        return out


class PolicyActor:
    """A policy checkpoint acting on its frame history: the mean action (deterministic) or a sample."""

    def __init__(self, checkpoint, deterministic: bool = True, threads: int | None = 1) -> None:
        from world4rl_policy.policy import load_policy

        self.runner = load_policy(checkpoint, num_threads=threads)
        self.deterministic = deterministic
        self.history = self.runner.new_history()

    @property
    def image_size(self) -> int:
        return self.runner.image_size

    def reset(self, seed: int) -> None:
        from world4rl_policy.policy import PolicyRunner

        self.history.reset()
        # A fresh sampling generator per episode: sampled actions depend on the seed alone.
        self.runner = PolicyRunner(self.runner.module, self.runner.checkpoint_config, seed=int(seed))

    def __call__(self, env, obs) -> np.ndarray:
        self.history.push(obs["image"])
        return self.runner.act(self.history.array(), deterministic=self.deterministic)


# ---------------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    seed: int
    frames: np.ndarray  # uint8 [T, H, W, 3], o_0 .. o_{T-1}
    actions: np.ndarray  # float32 [T, 4]; the last one is what the actor would do next (never executed)
    success: np.ndarray  # bool [T], the simulator's success of each frame
    joint_positions: np.ndarray | None  # float32 [T, 9] (embedded robot only)
    steps: int  # executed actions
    solved: bool  # success at any step
    first_success: int | None  # the step whose frame first showed success

    @property
    def solved_after_start(self) -> bool:
        """Success at some frame after the first action (a start that is already solved does not count)."""
        return bool(self.success[1:].any())

    def as_dataset_arrays(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "actions": np.clip(self.actions, -1, 1).astype(np.float32),
            "success_per_frame": self.success,
            "joint_positions": self.joint_positions,
        }


def run_episode(env, actor, seed: int, stop_on_success: bool = False) -> Episode:
    """One episode from env.reset(seed=seed) to the env's horizon (or to the first success)."""
    actor.reset(seed)
    obs, info = env.reset(seed=seed)
    frames, actions, success = [obs["image"]], [], [bool(info["success"])]
    joints = [obs["joint_pos"]] if "joint_pos" in obs else None
    first = 0 if success[0] else None
    for _ in range(env.horizon):
        if stop_on_success and first is not None:
            break
        action = actor(env, obs)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        frames.append(obs["image"])
        success.append(bool(info["success"]))
        if joints is not None:
            joints.append(obs["joint_pos"])
        if first is None and success[-1]:
            first = len(frames) - 1
        if terminated or truncated:
            break
    actions.append(actor(env, obs))  # what the actor would do next: keeps actions aligned with frames
    return Episode(
        seed=int(seed),
        frames=np.stack(frames),
        actions=np.stack(actions).astype(np.float32),
        success=np.asarray(success, bool),
        joint_positions=np.stack(joints).astype(np.float32) if joints is not None else None,
        steps=len(frames) - 1,
        solved=first is not None,
        first_success=first,
    )


def episodes(
    actor,
    suite: str,
    task: str,
    seeds: list[int],
    image_size: int,
    horizon: int | None = None,
    *,
    terminate_on_success: bool = False,
    stop_on_success: bool = False,
    desc: str | None = None,
    progress: bool = False,
    timing: str = "direct",
) -> Iterator[Episode]:
    """One episode of `actor` per seed in one env of the true simulator (see `make_env` and
    `run_episode`), each yielded as soon as it ends; the env is closed when the seeds are done (or
    when the generator is closed: iterate inside `contextlib.closing` to close it on an error)."""
    from tqdm import tqdm

    first = seeds[0] if seeds else 0
    env = make_env(
        suite, task, image_size, seed=first, horizon=horizon, terminate_on_success=terminate_on_success, timing=timing
    )
    try:
        for seed in tqdm(seeds, desc=desc, disable=not progress, dynamic_ncols=True):
            yield run_episode(env, actor, seed, stop_on_success=stop_on_success)
    finally:
        env.close()


def policy_episodes(
    actor: PolicyActor,
    suite: str,
    task: str,
    seeds: list[int],
    horizon: int | None = None,
    *,
    stop_at_solved_start: bool = True,
    desc: str | None = None,
    progress: bool = False,
    timing: str = "direct",
) -> Iterator[Episode]:
    """The direct-sim evaluator of a policy: its episodes on `seeds` (at its image size), each ending
    at the first success or at the horizon. A start that is already solved ends the episode at once
    (`stop_at_solved_start`), or the policy acts until a later frame is solved (`solved_after_start`)."""
    return episodes(
        actor,
        suite,
        task,
        list(seeds),
        actor.image_size,
        horizon,
        terminate_on_success=True,
        stop_on_success=stop_at_solved_start,
        desc=desc,
        progress=progress,
        timing=timing,
    )


def direct_api_outcomes(checkpoint: str | Path, task: str, seeds, horizon: int, timing: str = "runtime") -> list[bool]:
    """The checkpoint on the simulator's direct API (world4rl_sim.env.FrankaSimEnv, no ROS): for each
    seed, success within `horizon` steps. The env renders the learning image directly (the view the
    ROS camera's centre square crop shows), the policy acts on its mean, one step per action, the arm
    moved as a deploy moves it (`timing` "runtime"; "direct": the sim's own controller); as through
    ROS, a solved start counts only if a frame after the first action is solved too."""
    actor = PolicyActor(checkpoint, deterministic=True, threads=1)
    runs = policy_episodes(actor, "franka", task, seeds, horizon, stop_at_solved_start=False, timing=timing)
    return [ep.solved_after_start for ep in runs]


def record_episodes(
    writer,
    suite: str,
    task: str,
    kind: str,
    actor,
    seeds: list[int],
    image_size: int,
    horizon: int | None = None,
    progress: bool = True,
    timing: str = "direct",
) -> list[Episode]:
    """Run one episode per seed (full horizon, so the frames after success are labelled too) and
    append each to the dataset as soon as it is done (a crash loses at most the open episode)."""
    done = []
    runs = episodes(
        actor, suite, task, seeds, image_size, horizon, desc=f"{task}/{kind}", progress=progress, timing=timing
    )
    with closing(runs):
        for ep in runs:
            arrays = ep.as_dataset_arrays()
            writer.add_episode(
                arrays["frames"],
                arrays["actions"],
                task=task,
                success=ep.solved,
                kind=kind,
                success_per_frame=arrays["success_per_frame"],
                joint_positions=arrays["joint_positions"],
                seed=ep.seed,
                timing=timing,
            )
            done.append(ep)
    return done


def recorded_seeds(dataset_root: str | Path, task: str, kind: str) -> set[int]:
    """The seeds of the dataset's episodes of (task, kind); empty when there is no dataset yet."""
    from world4rl_model.dataset import Dataset

    if not (Path(dataset_root) / "manifest.json").exists():
        return set()
    ds = Dataset(dataset_root)
    return {int(e["seed"]) for e in ds.episodes if e["task"] == task and e["kind"] == kind and e["seed"] is not None}


def top_up(
    dataset_root: str | Path,
    suite: str,
    task: str,
    kind: str,
    actor,
    seed0: int,
    count: int,
    image_size: int,
    horizon: int | None = None,
    progress: bool = True,
    timing: str = "direct",
) -> dict[str, Any]:
    """Top the dataset up to `count` episodes of (task, kind) with seeds seed0.. (recorded seeds are
    skipped, so a rerun continues an interrupted one); -> {"added": n, "solved": fraction or None}."""
    from world4rl_model.dataset import DatasetWriter
    from world4rl_spec import CONTROL_RATE_HZ

    have = recorded_seeds(dataset_root, task, kind)
    seeds = [s for s in range(seed0, seed0 + count) if s not in have]
    if not seeds:
        return {"added": 0, "solved": None}
    writer = DatasetWriter(dataset_root, image_size=image_size, control_rate_hz=CONTROL_RATE_HZ)
    eps = record_episodes(
        writer, suite, task, kind, actor, seeds, image_size, horizon=horizon, progress=progress, timing=timing
    )
    return {"added": len(eps), "solved": sum(e.solved for e in eps) / len(eps)}

"""Scripted experts for every task, with configurable Gaussian action noise.

The expert itself is each task's stateless `Task.expert(TaskState)`; this module adds noise and
episode helpers, so demonstration sources (a ROS node, a dataset generator) need only
`ScriptedExpert(task).act(sim.task_state())`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from world4rl_sim.tasks import TASK_REGISTRY, TASKS, TaskState


@dataclasses.dataclass
class ExpertConfig:
    noise_std: float = 0.0  # std of Gaussian noise added to dx, dy, dz (normalised units)
    gripper_noise_std: float = 0.0  # std of Gaussian noise added to the gripper command
    seed: int | None = None


class ScriptedExpert:
    """A task's scripted policy: `act(state)` returns an action in [-1, 1]^4."""

    def __init__(self, task: str, config: ExpertConfig | None = None, **overrides):
        if task not in TASK_REGISTRY:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        self.task = task
        self.config = dataclasses.replace(config or ExpertConfig(), **overrides)
        self._policy = TASK_REGISTRY[task].expert
        self.rng = np.random.default_rng(self.config.seed)

    def reseed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, state: TaskState) -> np.ndarray:
        action = np.asarray(self._policy(state), dtype=float).copy()
        if self.config.noise_std > 0:
            action[:3] += self.rng.normal(0.0, self.config.noise_std, 3)
        if self.config.gripper_noise_std > 0:
            action[3] += self.rng.normal(0.0, self.config.gripper_noise_std)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def run_expert_episode(sim, expert: ScriptedExpert, seed: int, max_steps: int | None = None) -> tuple[bool, int]:
    """Reset `sim` (a FrankaSim) with seed, run the expert until success or max_steps.

    Returns (success, steps taken). No rendering: the fast path for testing experts.
    """
    sim.reset(seed=seed)
    expert.reseed(seed)
    horizon = max_steps or TASK_REGISTRY[sim.task_name].horizon
    for step in range(1, horizon + 1):
        sim.apply_action(expert.act(sim.task_state()))
        if sim.success():
            return True, step
    return False, horizon

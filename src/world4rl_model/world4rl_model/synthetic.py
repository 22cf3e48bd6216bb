"""A procedurally rendered toy world for tests and benchmarks: a square that the actions move.

The "gripper" is a coloured square on a grey table; (dx, dy) move it by STEP * a pixels-fraction
per control step, `dz` is ignored and the gripper action changes its colour from green (open) to
red (closed). Each task draws a goal marker; success = the square's centre within GOAL_RADIUS of
the goal. It is a real, deterministic environment with the dataset's exact array formats, so the
world model, reward classifier and WorldModelEnv can be trained and checked end to end in
seconds, without the MuJoCo simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from world4rl_model.dataset import Dataset, DatasetWriter

STEP = 0.08  # position change per unit action per step, in image fractions
SQUARE = 0.22  # square side, in image fractions
GOAL_RADIUS = 0.1
TASK_GOALS = {"reach-left": (0.2, 0.5), "reach-right": (0.8, 0.5), "reach-top": (0.5, 0.2)}


class SquareWorld:
    def __init__(self, task: str = "reach-left", image_size: int = 32, seed: int = 0):
        if task not in TASK_GOALS:
            raise ValueError(f"unknown task {task!r}, choose from {sorted(TASK_GOALS)}")
        self.task, self.image_size = task, image_size
        self.goal = np.array(TASK_GOALS[task])
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> np.ndarray:
        self.pos = self.rng.uniform(0.3, 0.7, size=2)
        self.grip = -1.0
        return self.render()

    def success(self) -> bool:
        return bool(np.linalg.norm(self.pos - self.goal) < GOAL_RADIUS)

    def step(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64), -1, 1)
        half = SQUARE / 2
        self.pos = np.clip(self.pos + STEP * a[:2], half, 1 - half)
        self.grip = float(a[3])
        return self.render()

    def expert_action(self) -> np.ndarray:
        d = (self.goal - self.pos) / STEP
        return np.array([*np.clip(d, -1, 1), 0.0, 1.0 if self.success() else -1.0], dtype=np.float32)

    def render(self) -> np.ndarray:
        s = self.image_size
        img = np.full((s, s, 3), 90, np.uint8)
        yy, xx = np.mgrid[0:s, 0:s]
        gx, gy = self.goal * s
        img[(xx - gx) ** 2 + (yy - gy) ** 2 <= (GOAL_RADIUS * s) ** 2] = (230, 230, 60)
        x0, y0 = ((self.pos - SQUARE / 2) * s).round().astype(int)
        w = max(1, round(SQUARE * s))
        closed = (self.grip + 1) / 2
        img[y0 : y0 + w, x0 : x0 + w] = (int(40 + 200 * closed), int(200 - 160 * closed), 40)
        return img


def rollout(world: SquareWorld, length: int, policy: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frames, actions, success = [world.reset()], [], [world.success()]
    for _ in range(length - 1):
        a = world.expert_action() if policy == "expert" else rng.uniform(-1, 1, size=4).astype(np.float32)
        actions.append(a)
        frames.append(world.step(a))
        success.append(world.success())
    actions.append(world.expert_action() if policy == "expert" else rng.uniform(-1, 1, 4).astype(np.float32))
    return {"frames": np.stack(frames), "actions": np.stack(actions).astype(np.float32), "success": np.array(success)}


def make_dataset(
    root: str | Path,
    episodes_per_task: int = 6,
    length: int = 16,
    image_size: int = 32,
    tasks: tuple[str, ...] = ("reach-left", "reach-right"),
    expert_fraction: float = 0.5,
    seed: int = 0,
) -> Dataset:
    """Write a dataset of expert and random episodes of the square world (appends if it exists)."""
    writer = DatasetWriter(root, image_size=image_size)
    rng = np.random.default_rng(seed)
    for task in tasks:
        for i in range(episodes_per_task):
            ep_seed = int(rng.integers(1 << 31))
            kind = "expert" if i < round(expert_fraction * episodes_per_task) else "random"
            ep = rollout(SquareWorld(task, image_size, ep_seed), length, kind, rng)
            writer.add_episode(
                ep["frames"],
                ep["actions"],
                task=task,
                success=bool(ep["success"][-1]),
                kind=kind,
                success_per_frame=ep["success"],
                seed=ep_seed,
            )
    return Dataset(root)

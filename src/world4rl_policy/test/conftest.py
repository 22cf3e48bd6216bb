"""Fixtures for world4rl_policy's tests: a tiny synthetic dataset in the real dataset format."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def dot_frame(pos: np.ndarray, red: bool, size: int) -> np.ndarray:
    """A grey frame with a 3x3 dot at `pos` in [-1, 1]^2: red or blue."""
    img = np.full((size, size, 3), 96, np.uint8)
    c = np.clip(((pos + 1) / 2 * (size - 1)).round().astype(int), 1, size - 2)
    img[c[1] - 1 : c[1] + 2, c[0] - 1 : c[0] + 2] = (230, 30, 30) if red else (30, 30, 230)
    return img


def expert_action(pos: np.ndarray, red: bool) -> np.ndarray:
    """The synthetic expert: move the dot to the centre, dz = 0.5 * x, gripper closed for red."""
    dxy = np.clip(-2.0 * pos, -1, 1)
    return np.array([dxy[0], dxy[1], 0.5 * pos[0], 1.0 if red else -1.0], np.float32)


def write_dot_dataset(root, episodes: int, length: int, size: int, seed: int, tasks=("reach",), kind="expert"):
    from world4rl_model.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root, image_size=size)
    for e in range(episodes):
        red = bool(rng.random() < 0.5)
        pos = rng.uniform(-0.9, 0.9, 2)
        frames, actions = [], []
        for _ in range(length):
            frames.append(dot_frame(pos, red, size))
            a = expert_action(pos, red)
            actions.append(a)
            pos = np.clip(pos + 0.15 * a[:2] + rng.normal(0, 0.05, 2), -0.95, 0.95)
        joints = rng.normal(0, 1, (length, 9)).astype(np.float32)
        writer.add_episode(
            np.stack(frames),
            np.stack(actions),
            task=tasks[e % len(tasks)],
            success=True,
            kind=kind,
            joint_positions=joints,
            seed=e,
        )
    return root


@pytest.fixture
def dot_dataset(tmp_path):
    """Factory: dot_dataset(episodes=..., length=..., size=..., seed=..., tasks=...) -> dataset path."""

    def make(episodes=16, length=12, size=16, seed=0, tasks=("reach",), name="data", kind="expert"):
        return write_dot_dataset(tmp_path / name, episodes, length, size, seed, tasks, kind)

    return make


def dot_episodes(seed: int, episodes: int, length: int, size: int, change: str | None = None) -> list[np.ndarray]:
    """Frames [length, size, size, 3] of new dot episodes (the dataset's dynamics), optionally changed:
    "second_dot" adds a dot of the other colour (no new colour, a scene never seen), "twin" a dot of
    the same colour (more of a colour than any training frame showed), "green" paints the dot green
    (a colour never seen)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        red = bool(rng.random() < 0.5)
        pos, other = rng.uniform(-0.9, 0.9, 2), rng.uniform(-0.9, 0.9, 2)
        frames = []
        for _ in range(length):
            img = dot_frame(pos, red, size)
            if change in ("second_dot", "twin"):
                img = np.minimum(img, dot_frame(other, red == (change == "twin"), size))
            elif change == "green":
                img[(img != 96).any(-1)] = (30, 200, 30)
            frames.append(img)
            pos = np.clip(pos + 0.15 * expert_action(pos, red)[:2] + rng.normal(0, 0.05, 2), -0.95, 0.95)
        out.append(np.stack(frames))
    return out


@pytest.fixture(scope="session")
def dots():
    """The dot helpers for module-scoped fixtures: dots.write_dataset(root, ...), dots.episodes(...)."""
    return SimpleNamespace(write_dataset=write_dot_dataset, episodes=dot_episodes)

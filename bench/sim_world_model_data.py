"""Make a world-model training dataset straight from the simulator's Python API (no ROS, no bags).

The data-coverage recipe of World4RL in small: per task, scripted-expert episodes (with some
action noise, so they do not all look alike) plus random-action episodes (a temporally
correlated random walk, which covers the workspace better than white noise). Every frame keeps
the simulator's true success flag, so the same dataset trains the reward classifier.

    MUJOCO_GL=osmesa .venv/bin/python bench/sim_world_model_data.py data/sim_wm --expert 10 --random 5

Appends to an existing dataset (episode seeds continue), so it can be run again to grow it.
This lives in bench/ because world4rl_model must not depend on world4rl_sim (dependency rule).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")


def random_walk_actions(rng: np.random.Generator, length: int, smooth: float = 0.8) -> np.ndarray:
    """Correlated random actions in [-1, 1]^4: a_t = smooth a_{t-1} + (1 - smooth) u_t, u ~ U(-1, 1)^4 scaled."""
    out = np.zeros((length, 4), np.float32)
    a = rng.uniform(-1, 1, 4)
    for t in range(length):
        a = smooth * a + (1 - smooth) * rng.uniform(-1, 1, 4) * 3.0
        a = np.clip(a, -1, 1)
        out[t] = a
    out[:, 3] = np.sign(out[:, 3]) + (out[:, 3] == 0)  # the gripper is open or closed, as in demos
    return out


def record_episode(env, seed: int, kind: str, noise: float, rng: np.random.Generator) -> dict:
    obs, info = env.reset(seed=seed)
    frames, actions, success, joints = [obs["image"]], [], [info["success"]], [obs["joint_pos"]]
    walk = random_walk_actions(rng, env.horizon + 1) if kind == "random" else None
    for t in range(env.horizon):
        a = env.expert_action(noise_std=noise) if kind == "expert" else walk[t]
        obs, _, terminated, truncated, info = env.step(a)
        actions.append(np.asarray(a, np.float32))
        frames.append(obs["image"])
        success.append(info["success"])
        joints.append(obs["joint_pos"])
        if terminated or truncated:
            break
    # The action that would follow the last frame (never executed): keeps arrays aligned to frames.
    actions.append(env.expert_action(noise_std=noise) if kind == "expert" else walk[len(actions)])
    return {
        "frames": np.stack(frames),
        "actions": np.clip(np.stack(actions), -1, 1).astype(np.float32),
        "success": np.array(success, bool),
        "joint_positions": np.stack(joints).astype(np.float32),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="dataset directory (created or appended to)")
    p.add_argument("--tasks", default=None, help="comma-separated sim tasks (default: all)")
    p.add_argument("--expert", type=int, default=10, help="expert episodes per task")
    p.add_argument("--random", type=int, default=5, help="random-walk episodes per task")
    p.add_argument("--expert-noise", type=float, nargs=2, default=[0.05, 0.4], help="noise std range of experts")
    p.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the task's)")
    p.add_argument("--image-size", type=int, default=None, help="frame size (default: LEARNING_IMAGE_SIZE)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from world4rl_model.dataset import DatasetWriter
    from world4rl_sim.env import FrankaSimEnv
    from world4rl_sim.tasks import TASKS
    from world4rl_spec import CONTROL_RATE_HZ, LEARNING_IMAGE_SIZE

    size = args.image_size or LEARNING_IMAGE_SIZE
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    writer = DatasetWriter(args.out, image_size=size, control_rate_hz=CONTROL_RATE_HZ)
    start_index = len(writer)
    rng = np.random.default_rng(args.seed + start_index)
    t0 = time.monotonic()
    n_trans = 0
    for ti, task in enumerate(tasks):
        env = FrankaSimEnv(task, image_size=size, horizon=args.horizon)
        plan = ["expert"] * args.expert + ["random"] * args.random
        for k, kind in enumerate(plan):
            seed = args.seed + 100_000 * ti + start_index + k
            noise = float(rng.uniform(*args.expert_noise)) if kind == "expert" else 0.0
            ep = record_episode(env, seed, kind, noise, rng)
            writer.add_episode(
                ep["frames"],
                ep["actions"],
                task=task,
                success=bool(ep["success"].any()),
                kind=kind,
                success_per_frame=ep["success"],
                joint_positions=ep["joint_positions"],
                seed=seed,
            )
            n_trans += len(ep["frames"]) - 1
            print(
                f"{task} {kind:6s} seed {seed}: {len(ep['frames'])} frames, success {bool(ep['success'].any())}, "
                f"{n_trans} transitions, {time.monotonic() - t0:.0f} s",
                flush=True,
            )
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

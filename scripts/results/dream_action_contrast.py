"""Does imagination rank policies as the robot does? Imagined and real success of a BC policy and of
deliberate variations of it: its motion scaled (0.5x .. 2x), reversed, zero, uniformly random.

The same variations run in the world model's dreams (the classifier at the refine run's calibrated
threshold, dreams from real first frames, the same dream noise for every variation) and in the true
simulator (the same seeds for every variation). Where imagination's preference near BC disagrees with
the robot's (dreams rewarding faster motion that the robot does not), PPO in those dreams follows
the dreams. The gripper command stays BC's in every variation. Measured on a demo's artifacts
(docs/results.md, session 16):

    .venv/bin/python scripts/results/dream_action_contrast.py RUN --task reach
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

VARIATIONS = {  # motion (first three action dimensions) as a function of BC's mean motion m
    "bc": lambda m, rng: m,
    "0.5x": lambda m, rng: 0.5 * m,
    "0.75x": lambda m, rng: 0.75 * m,
    "1.25x": lambda m, rng: 1.25 * m,
    "1.5x": lambda m, rng: 1.5 * m,
    "2x": lambda m, rng: 2.0 * m,
    "reversed": lambda m, rng: -m,
    "zero": lambda m, rng: 0.0 * m,
    "uniform": lambda m, rng: rng(m.shape) * 2 - 1,
}


def vary(name: str, action, rng):
    out = action.clone() if isinstance(action, torch.Tensor) else np.array(action, dtype=np.float32)
    out[..., :3] = VARIATIONS[name](action[..., :3], rng)
    return out.clamp(-1, 1) if isinstance(out, torch.Tensor) else np.clip(out, -1, 1).astype(np.float32)


def imagined(run: Path, task: str, horizon: int, threshold: float, batches: int, num_envs: int) -> dict[str, float]:
    from world4rl_model.env import WorldModelEnv
    from world4rl_policy.policy import load_policy_module, recent_frames

    env = WorldModelEnv.from_checkpoints(
        run / "world_model", run / "reward", run / "coverage", num_envs, horizon=horizon + 1, task=task,
        threshold=threshold, bf16=True, terminate_on_success=False,
    )  # fmt: skip
    bc, _ = load_policy_module(run / "bc" / "best")
    bc.eval()
    out = {}
    for name in VARIATIONS:
        hits = []
        for b in range(batches):
            obs, _ = env.reset(seed=100 + b)  # the same first frames and dream noise for every variation
            gen = torch.Generator().manual_seed(7 + b)

            def uniform(shape, gen=gen):
                return torch.rand(shape, generator=gen)

            success = torch.zeros(num_envs, dtype=torch.bool)
            for _ in range(horizon):
                with torch.no_grad():
                    mean, _, _ = bc(recent_frames(bc, obs["frames"]))
                obs, _, _, _, info = env.step(vary(name, mean, uniform))
                success |= info["success"]
            hits.append(success.float().mean().item())
        out[name] = float(np.mean(hits))
        print(f"[dreams] {name}: {out[name]:.3f}", flush=True)
    return out


def real(run: Path, task: str, episodes: int, seed: int) -> dict[str, float]:
    from world4rl_bringup.sim_rollouts import PolicyActor
    from world4rl_bringup.sim_rollouts import episodes as sim_episodes

    bc = PolicyActor(run / "bc" / "best")

    class Variation:
        def __init__(self, name: str) -> None:
            self.name, self.rng = name, np.random.default_rng(0)

        def reset(self, seed: int) -> None:
            bc.reset(seed)
            self.rng = np.random.default_rng(seed)

        def __call__(self, env, obs):
            return vary(self.name, bc(env, obs), lambda shape: self.rng.uniform(0, 1, shape))

    seeds = list(range(seed, seed + episodes))
    out = {}
    for name in VARIATIONS:
        runs = list(sim_episodes(Variation(name), "franka", task, seeds, bc.image_size))
        out[name] = float(np.mean([e.solved_after_start for e in runs]))
        print(f"[robot] {name}: {out[name]:.3f}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a demo run directory (bc/, world_model/, reward/, coverage/, refined/)")
    parser.add_argument("--task", default="reach", help="embedded-sim task (default: reach)")
    parser.add_argument(
        "--horizon", type=int, help="dreamt steps from a first frame (default: the reward calibration's, the robot's)"
    )
    parser.add_argument("--batches", type=int, default=6, help="batches of dreams per variation (default: 6)")
    parser.add_argument("--num-envs", type=int, default=128, help="dreams per batch (default: 128)")
    parser.add_argument("--episodes", type=int, default=100, help="true-sim episodes per variation (default: 100)")
    parser.add_argument("--seed", type=int, default=1000, help="first true-sim seed (default: 1000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from world4rl_policy.reward_calibration import read_calibration

    calibration = read_calibration(args.run / "refined")
    if calibration is None:
        parser.error(f"{args.run / 'refined'}: no reward calibration (refine with --reward-calibration)")
    horizon = args.horizon or calibration["horizon"]
    dreams = imagined(args.run, args.task, horizon, calibration["threshold"], args.batches, args.num_envs)
    robot = real(args.run, args.task, args.episodes, args.seed)
    print(f"\n| variation | imagined ({args.batches * args.num_envs} dreams) | real ({args.episodes} episodes) |")
    print("|---|---|---|")
    for name in VARIATIONS:
        print(f"| {name} | {100 * dreams[name]:.1f} % | {100 * robot[name]:.0f} % |")
    names = list(VARIATIONS)
    r = np.corrcoef([dreams[n] for n in names], [robot[n] for n in names])[0, 1]
    print(f"\nPearson r of imagined and real success over the {len(names)} variations: {r:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

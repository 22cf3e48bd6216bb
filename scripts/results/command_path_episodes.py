"""A policy's episodes with its actions through the runtime's command path, without ROS.

The true simulator renders what the policy sees, as `world4rl eval policy` does, but each action goes
through world4rl_policy.command_path.CommandPath (the IK from the measured joints, the safety
filter, the jerk-limited smoother), as on the robot, and the simulator follows the joint command it
sends. Prints each safety fault (seed, step, message, joints) and a summary: successes, faults by
reason, and the largest joint change the IK asked for per episode (the filter faults beyond 0.5 rad).
It found the elbow-at-its-limit jumps that IKConfig.max_joint_step_rad now bounds (docs/results.md):

    .venv/bin/python scripts/results/command_path_episodes.py RUN/bc --task drawer --episodes 40
"""

from __future__ import annotations

import argparse
import collections

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="policy checkpoint or run directory")
    parser.add_argument("--task", default="drawer", help="embedded-sim task (default: drawer)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes, seeds SEED.. (default: 40)")
    parser.add_argument("--seed", type=int, default=1000, help="first episode's seed (default: 1000)")
    parser.add_argument("--horizon", type=int, default=50, help="policy steps per episode (default: 50)")
    args = parser.parse_args()

    from world4rl_bringup.sim_rollouts import PolicyActor
    from world4rl_policy.command_path import CommandPath
    from world4rl_sim.env import FrankaSimEnv

    actor = PolicyActor(args.policy)
    env = FrankaSimEnv(args.task, image_size=actor.image_size, seed=args.seed)
    sim = env.sim
    substeps = round(sim.control_dt / sim.model.opt.timestep)
    faults: collections.Counter[str] = collections.Counter()
    successes, largest_steps = 0, []
    for seed in range(args.seed, args.seed + args.episodes):
        actor.reset(seed)
        obs, _ = env.reset(seed=seed)
        path, now, largest = CommandPath(), 0.0, 0.0
        path.arm(now, sim.arm_positions())
        for step in range(args.horizon):
            q = sim.arm_positions()
            action = actor(env, obs)
            cycle = path.step(joint_positions=q, action=action, now=now, input_stamp=now, joint_state_stamp=now)
            largest = max(largest, cycle.ik_step_rad or 0.0)
            if cycle.result.fault is not None:
                faults[cycle.result.fault.value] += 1
                messages = [e.message for e in cycle.result.events if e.is_fault]
                print(f"seed {seed} step {step}: {messages}; joints {np.round(q, 2).tolist()}", flush=True)
                break
            if cycle.send_arm_command:
                sim.set_arm_targets(cycle.result.command)
            if cycle.gripper is not None:
                sim.set_gripper_width(cycle.gripper.width if cycle.gripper.kind == "move" else 0.0)
            sim.step_physics(substeps)
            now += sim.control_dt
            obs = {"image": env.render()}  # what the policy reads of an observation
            if sim.success():
                successes += 1
                break
        largest_steps.append(largest)
    steps = np.asarray(largest_steps)
    print(
        f"{args.task}: {successes}/{args.episodes} through the command path; faults {dict(faults) or 'none'}; "
        f"largest IK joint step per episode: median {np.median(steps):.3f} rad, max {steps.max():.3f} rad"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

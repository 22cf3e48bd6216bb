"""How closely the sim's own loop reproduces a deploy through ROS: replays the actions of
demonstrations recorded through the ROS graph (a demo run's bags and dataset) from the same seeds,
once with the sim's own controller (timing "direct") and once in lockstep through the runtime's
command path (timing "runtime", world4rl_bringup.runtime_timing), and compares the tool point the
replay reaches after each action with the one the robot's joint states recorded, and the outcomes.

    python scripts/results/runtime_parity.py RUN [RUN ...] [--episodes N]
    python scripts/results/runtime_parity.py RUN --fixture OUT.npz --pick 0,3   # a test fixture

RUN: a `world4rl demo` run directory (RUN/dataset built from RUN/bags; the expert's seed is read
from each bag's operator note). Results: docs/results.md, "The runtime's timing in the sim's own loop".
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import yaml

from world4rl_bringup.runtime_timing import TIMINGS, replay_tcp_errors


def recorded_episodes(run: Path, limit: int | None = None):
    """(task, seed, actions, joint positions, recorded success) of a demo run's expert episodes."""
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    found = []
    for ep in manifest["episodes"]:
        if ep.get("kind") != "expert" or "source" not in ep:
            continue
        meta = yaml.safe_load((Path(ep["source"]["bag"]) / "metadata.yaml").read_text())
        note = meta["rosbag2_bagfile_information"]["custom_data"].get("world4rl.operator_note", "")
        seed = re.search(r"seed (\d+)", note)
        if seed is None:
            continue
        d = run / "dataset" / ep["dir"]
        found.append(
            (
                ep["task"],
                int(seed.group(1)),
                np.load(d / "actions.npy"),
                np.load(d / "joint_positions.npy"),
                bool(np.load(d / "success.npy").any()),
            )
        )
        if limit is not None and len(found) >= limit:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="demo run directories")
    parser.add_argument("--episodes", type=int, default=None, help="at most this many episodes per run")
    parser.add_argument("--fixture", type=Path, default=None, help="write the --pick episodes of the first run here")
    parser.add_argument("--pick", default="0", help="comma-separated episode positions for --fixture")
    args = parser.parse_args()
    if args.fixture is not None:
        eps = recorded_episodes(args.runs[0])
        picked = [eps[int(i)] for i in args.pick.split(",")]
        arrays = {}
        for k, (task, seed, actions, joints, success) in enumerate(picked):
            arrays[f"ep{k}_task"] = np.array(task)
            arrays[f"ep{k}_seed"] = np.array(seed)
            arrays[f"ep{k}_actions"] = actions.astype(np.float32)
            arrays[f"ep{k}_joint_positions"] = joints.astype(np.float32)
            arrays[f"ep{k}_success"] = np.array(success)
        np.savez_compressed(args.fixture, **arrays)
        print(f"wrote {len(picked)} episodes to {args.fixture}")
        return
    print("| run | task | episodes | timing | start error mm | tool point error mm: median / mean / p90 | "
          "replayed successes | recorded | same outcome |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        eps = recorded_episodes(run, args.episodes)
        recorded = [e[4] for e in eps]
        for timing in TIMINGS:
            starts, errors, outcomes = [], [], []
            for task, seed, actions, joints, _ in eps:
                errs, success = replay_tcp_errors(task, seed, actions, joints, timing)
                starts.append(errs[0])
                errors.extend(errs[1:])
                outcomes.append(success)
            e = 1e3 * np.asarray(errors)
            same = sum(a == b for a, b in zip(outcomes, recorded, strict=True))
            print(
                f"| {run.name} | {eps[0][0]} | {len(eps)} | {timing} | {1e3 * np.mean(starts):.1f} | "
                f"{np.median(e):.1f} / {e.mean():.1f} / {np.percentile(e, 90):.1f} | {sum(outcomes)} | "
                f"{sum(recorded)} | {same}/{len(eps)} |"
            )


if __name__ == "__main__":
    main()

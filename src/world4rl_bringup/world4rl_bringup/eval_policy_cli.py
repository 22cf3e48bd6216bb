"""`world4rl eval policy`: success rates of policy checkpoints in the TRUE simulator, never the model.

Every policy runs the same N seeded episodes (episode i: seed SEED+i), so BC and refined policies
are compared on identical initial states. An episode succeeds if the simulator's success flag is
set at any step before the horizon (the episode stops there). The policies act with their mean
action (as the runtime node does) unless --stochastic. --timing runtime moves the embedded robot's
arm as a deploy through ROS does (the command path's smoothing, the trajectory one period ahead,
the gripper's goals), in simulated time; the default, direct, is the sim's own controller.

Reported per policy: successes / N, the 95 % Wilson score interval, mean steps to success.
Against the first policy (the baseline, e.g. BC): the difference with Newcombe's 95 % interval
(hybrid score), the paired counts (only-baseline / only-this successes on the same seeds) with
McNemar's exact p-value, and `beats_baseline_ci`: this policy's Wilson lower bound lies above the
baseline's Wilson upper bound (non-overlapping intervals, the strict reading).

Writes OUT/eval.json, OUT/eval.md and, for the first --videos seeds, OUT/videos/seed_S.mp4 with the
policies side by side (green border from the first success on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from world4rl_bringup.cli import run_alone
from world4rl_bringup.runtime_timing import TIMINGS
from world4rl_model.statistics import paired_difference, wilson_interval
from world4rl_spec import check_task_name

HELP = "success rate of policy checkpoints in the true sim (Wilson 95 % CI), compared on the same seeds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = " ".join(__doc__.split("\n\n")[:2])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  world4rl eval policy --task push --episodes 50 --policy runs/bc/best --policy runs/refine\n"
        "  world4rl eval policy --suite metaworld --task drawer-open-v3 --policy runs/mw_bc/best --videos 2\n"
    )
    parser.add_argument("--policy", action="append", required=True, help="policy checkpoint/run dir (repeatable)")
    parser.add_argument("--label", action="append", default=None, help="a name per --policy (default: the path)")
    parser.add_argument("--task", required=True, help="task name (franka: reach, push, drawer, pick_place)")
    parser.add_argument("--suite", choices=["franka", "metaworld"], default="franka", help="simulator")
    parser.add_argument("--episodes", type=int, default=50, help="seeded episodes per policy")
    parser.add_argument("--seed", type=int, default=1000, help="episode i uses seed SEED+i (away from data seeds)")
    parser.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the task's)")
    parser.add_argument(
        "--timing",
        choices=TIMINGS,
        default="direct",
        help="franka: 'direct' (the sim's own controller) or 'runtime' (the arm moves as a deploy moves it)",
    )
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean")
    parser.add_argument("--videos", type=int, default=3, help="seeds to film, policies side by side (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: world4rl_data/eval/TASK)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the policies")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _policy_result(label: str, path: str, actor, per_episode: list[dict], seconds: float) -> dict[str, Any]:
    episodes = len(per_episode)
    n_ok = sum(e["success"] for e in per_episode)
    low, high = wilson_interval(n_ok, episodes)
    to_success = [e["first_success"] for e in per_episode if e["success"]]
    return {
        "label": label,
        "policy": str(Path(path).absolute()),
        "trainer": actor.runner.checkpoint_config.get("trainer"),
        "successes": n_ok,
        "episodes": episodes,
        "success_rate": n_ok / episodes,
        "ci95_wilson": [low, high],
        "mean_steps_to_success": sum(to_success) / len(to_success) if to_success else None,
        "seconds": seconds,
        "per_episode": per_episode,
    }


def _versus(base: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """One policy's result against the baseline's on the same seeds."""
    paired = paired_difference([e["success"] for e in base["per_episode"]], [e["success"] for e in r["per_episode"]])
    return {
        "baseline": base["label"],
        **paired,
        "beats_baseline_ci": r["ci95_wilson"][0] > base["ci95_wilson"][1],
        "difference_ci_above_zero": paired["difference_ci95_newcombe"][0] > 0,
    }


def evaluate(
    policies: list[str],
    task: str,
    suite: str = "franka",
    episodes: int = 50,
    seed: int = 1000,
    horizon: int | None = None,
    labels: list[str] | None = None,
    stochastic: bool = False,
    videos: int = 0,
    out: Path | None = None,
    threads: int = 1,
    progress: bool = True,
    timing: str = "direct",
) -> dict[str, Any]:
    """Run every policy on seeds seed..seed+episodes-1; the result dict that eval.json holds."""
    from world4rl_bringup.sim_rollouts import PolicyActor, policy_episodes

    check_task_name(task, "--task")  # the default --out is world4rl_data/eval/TASK
    labels = list(labels) if labels else [str(p) for p in policies]
    if len(labels) != len(policies):
        raise ValueError(f"{len(labels)} --label for {len(policies)} --policy")
    seeds = [seed + i for i in range(episodes)]
    films: dict[int, list[list]] = {s: [] for s in seeds[:videos]}
    results = []
    for path, label in zip(policies, labels, strict=True):
        actor = PolicyActor(path, deterministic=not stochastic, threads=threads)
        t0 = time.time()
        per_episode = []
        runs = policy_episodes(actor, suite, task, seeds, horizon, desc=label, progress=progress, timing=timing)
        with closing(runs):
            for ep in runs:
                row = {"seed": ep.seed, "success": ep.solved, "steps": ep.steps, "first_success": ep.first_success}
                per_episode.append(row)
                if ep.seed in films:
                    films[ep.seed].append(ep)
        results.append(_policy_result(label, path, actor, per_episode, time.time() - t0))
    for r in results[1:]:
        r["vs_baseline"] = _versus(results[0], r)
    result = {
        "suite": suite,
        "task": task,
        "episodes": episodes,
        "seeds": [seeds[0], seeds[-1]] if seeds else [],
        "horizon": horizon,
        "timing": timing,
        "action": "sampled" if stochastic else "mean",
        "policies": results,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if films:
            result["videos"] = write_videos(films, labels, out / "videos")
        (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "eval.md").write_text(markdown(result))
    return result


def write_videos(films: dict[int, list], labels: list[str], directory: Path) -> list[str]:
    """One mp4 per seed: the policies side by side (shorter episodes hold their last frame),
    a green border from each episode's first success on."""
    import imageio.v2 as imageio
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for seed, episodes in films.items():
        length = max(len(ep.frames) for ep in episodes)
        size = episodes[0].frames.shape[1]
        scale = max(1, 192 // size)
        path = directory / f"seed_{seed}.mp4"
        with imageio.get_writer(str(path), fps=10, macro_block_size=1) as w:
            for t in range(length):
                tiles = []
                for ep in episodes:
                    k = min(t, len(ep.frames) - 1)
                    tile = np.array(ep.frames[k])
                    if tile.shape[0] != size:  # policies of another image size: nearest resize
                        idx = np.arange(size) * tile.shape[0] // size
                        tile = tile[idx][:, idx]
                    if ep.first_success is not None and k >= ep.first_success:
                        tile[:2], tile[-2:], tile[:, :2], tile[:, -2:] = (
                            (0, 220, 0),
                            (0, 220, 0),
                            (0, 220, 0),
                            (0, 220, 0),
                        )
                    tiles.append(tile)
                row = np.concatenate(tiles, axis=1)
                w.append_data(row.repeat(scale, 0).repeat(scale, 1))
        written.append(str(path))
    (directory / "README.txt").write_text("left to right: " + " | ".join(labels) + "\n")
    return written


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"## {result['suite']} / {result['task']}: {result['episodes']} seeded episodes per policy "
        f"(seeds {result['seeds'][0]}..{result['seeds'][-1]}, {result['action']} action, "
        f"{result.get('timing', 'direct')} timing)",
        "",
        "| policy | success | rate | 95 % Wilson CI | steps to success | vs first: diff (Newcombe 95 %) | "
        "only first / only this | McNemar p | CI beats first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["policies"]:
        lo, hi = r["ci95_wilson"]
        steps = f"{r['mean_steps_to_success']:.1f}" if r["mean_steps_to_success"] is not None else "-"
        v = r.get("vs_baseline")
        cmp = (
            f"{v['difference']:+.1%} ({v['difference_ci95_newcombe'][0]:+.1%}..{v['difference_ci95_newcombe'][1]:+.1%})"
            f" | {v['only_baseline_succeeded']} / {v['only_this_succeeded']} | {v['mcnemar_exact_p']:.3g} | "
            f"{'yes' if v['beats_baseline_ci'] else 'no'}"
            if v
            else "baseline | | |"
        )
        lines.append(
            f"| {r['label']} | {r['successes']}/{r['episodes']} | {r['success_rate']:.1%} | {lo:.1%}..{hi:.1%} "
            f"| {steps} | {cmp} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from world4rl_model.runtime import configure_openmp

    configure_openmp()
    try:
        check_task_name(args.task, "--task")  # before it becomes a folder: world4rl_data/eval/TASK
    except ValueError as e:
        print(f"world4rl eval policy: error: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("world4rl_data") / "eval" / args.task
    try:
        result = evaluate(
            args.policy,
            args.task,
            suite=args.suite,
            episodes=args.episodes,
            seed=args.seed,
            horizon=args.horizon,
            labels=args.label,
            stochastic=args.stochastic,
            videos=args.videos,
            out=out,
            threads=args.threads,
            progress=not args.quiet,
            timing=args.timing,
        )
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"world4rl eval policy: error: {e}", file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"wrote {Path(out) / 'eval.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_alone("world4rl eval policy", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

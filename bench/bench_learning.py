"""Learning benchmark: BC vs refined success in the TRUE simulator, per task, with 95 % intervals.

Runs `world4rl coverage` (expert demos -> BC -> BC/random rollouts -> one multi-task world model +
reward classifier -> PPO in imagination per task -> evaluation on the same seeds) with a named
profile, then writes bench/results/learning[_metaworld].json and .md: per task the BC baseline and
the refined policy (successes, Wilson 95 % CI), refined/BC as a ratio, Newcombe's interval of the
difference, McNemar's paired p-value, whether the refined CI lies above BC's, both policies' success
in imagination beside the real one, the calibrated reward threshold, the wall and CPU time of
every stage (the acceptance budget is 2 h of CPU time per task, shared stages split between tasks),
and how fast refinement imagined: imagined steps per CPU-hour of the PPO loops (refine's
summary.json `perf`; runs refined before it was recorded: the refine stage's CPU time, which also
holds the reward calibration, seed selection, OOD fit and video).

The default profile is the recipe (profiles/recipe.yaml): one preset, no per-task settings, for every
task of both suites. The default task lists are the benchmark's, fixed before any result was seen.

    .venv/bin/python bench/bench_learning.py --threads 1                     # the embedded robot's 4 tasks (hours)
    .venv/bin/python bench/bench_learning.py --threads 1 --suite metaworld   # Meta-World's 6 tasks (hours)
    .venv/bin/python bench/bench_learning.py --quick            # toy scale: checks the pipeline, minutes
    .venv/bin/python bench/bench_learning.py --tasks drawer --run runs/bench_learning_drawer
    .venv/bin/python bench/bench_learning.py --profile my.yaml   # another profile (see bench/profiles/)

Resumable: rerunning with the same --run skips finished stages (RUN/stages.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# The profiles: `world4rl coverage` settings (CoverageConfig) as YAML presets, read by
# world4rl_model.config (full: the results recipe, docs/results.md#the-results-recipe).
PROFILES = Path(__file__).resolve().parent / "profiles"
# The benchmark's task lists (issue 14), every task reported whether refinement helps on it or not.
FRANKA_TASKS = "reach,push,drawer,pick_place"
METAWORLD_TASKS = "drawer-open-v3,button-press-topdown-v3,plate-slide-v3,window-open-v3,door-open-v3,reach-v3"


def profile_path(quick: bool) -> Path:
    """The profile bench_learning runs by default: the recipe, or quick.yaml."""
    return PROFILES / ("quick.yaml" if quick else "recipe.yaml")


IMAGINATION_SOURCES = {
    "ppo": "the PPO loops",
    "stage": "the refine stage (with calibration, seed selection, OOD fit, video)",
}


def imagination_speed(run: Path, book: dict, task: str) -> dict | None:
    """Refinement's imagined steps per CPU-hour: from RUN/refine/TASK/summary.json's `perf` (the PPO
    loops alone), else (runs refined before it) the refine stage's booked CPU seconds; None: no record."""
    path = run / "refine" / task / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if perf := summary.get("perf"):
        steps, cpu, source = perf["imagined_steps"], perf["ppo_cpu_seconds"], "ppo"
    else:
        entry = book.get(f"refine/{task}") or {}
        cpu = entry.get("cpu_seconds")
        # the summary of several seeds is the chosen seed's: each seed imagined as many steps
        steps = summary.get("imagined_steps_this_run", 0) * entry.get("settings", {}).get("seeds", 1)
        source = "stage"
    if not cpu or not steps:
        return None
    return {
        "imagined_steps": steps,
        "cpu_seconds": cpu,
        "imagined_steps_per_cpu_hour": steps * 3600.0 / cpu,
        "sampling_steps": (perf or {}).get("sampling_steps"),
        "source": source,
    }


# Stages whose trainer counts its own CPU time across resumes (training_state.json `extra.cpu_s`): their
# output directory in the run, by stage key (bc/TASK -> bc/TASK).
TRAINED_OUTPUTS = {"world-model": "world_model", "distill": "world_model_student", "reward": "reward"}


def stage_cpu_seconds(run: Path, key: str, entry: dict) -> float:
    """A stage's CPU seconds: the booked figure, or its trainer's own count across resumes where that is
    larger (a stage stopped midway before the attempt clock booked only its last attempt); a stage booked
    before CPU time was recorded counts its wall time (an upper bound for one thread's work)."""
    from world4rl_model.checkpoint import CheckpointError, load_training_state

    counted = [entry["cpu_seconds"]] if entry.get("cpu_seconds") is not None else []
    output = TRAINED_OUTPUTS.get(key) or (key if key.startswith("bc/") else None)
    if output is not None and (run / output).exists():
        try:
            state = load_training_state(run / output)
        except (CheckpointError, FileNotFoundError):
            state = None
        if state is not None and "cpu_s" in state.extra:
            counted.append(float(state.extra["cpu_s"]))
    return max(counted) if counted else float(entry["seconds"])


def _task_row(run: Path, book: dict, task: str, num_tasks: int, prediction: dict) -> dict:
    """One task's result: BC vs refined in the true simulator and in imagination, and what its stages cost."""
    ev = json.loads((run / "eval" / task / "eval.json").read_text())
    bc, refined = ev["policies"]
    v = refined["vs_baseline"]

    def value(k: str, e: dict, key: str) -> float | None:
        return stage_cpu_seconds(run, k, e) if key == "cpu_seconds" else e.get(key)

    def cost(key: str) -> tuple[dict, dict]:
        stages = {k: book[k] for k in book if k.endswith("/" + task)}
        shared = {k: book[k] for k in ("world-model", "distill", "reward") if k in book}
        return {k: value(k, e, key) for k, e in stages.items()}, {k: value(k, e, key) for k, e in shared.items()}

    def per_task_minutes(key: str) -> float | None:
        own, shared = cost(key)
        if None in own.values() or None in shared.values():
            return None
        return (sum(own.values()) + sum(shared.values()) / num_tasks) / 60

    task_stages = cost("seconds")[0]
    return {
        "task": task,
        "episodes": ev["episodes"],
        "bc": {k: bc[k] for k in ("successes", "success_rate", "ci95_wilson")},
        "refined": {k: refined[k] for k in ("successes", "success_rate", "ci95_wilson")},
        "ratio_refined_vs_bc": refined["success_rate"] / bc["success_rate"] if bc["successes"] else None,
        "difference_ci95_newcombe": v["difference_ci95_newcombe"],
        "mcnemar_exact_p": v["mcnemar_exact_p"],
        "refined_ci_above_bc_ci": v["beats_baseline_ci"],
        "imagined": prediction.get("imagined", {}),
        "reward_calibration": prediction.get("reward_calibration"),
        "stage_seconds": task_stages,
        "stage_cpu_seconds": cost("cpu_seconds")[0],
        # The world model and classifier are shared by the tasks: each task is charged its share.
        "pipeline_minutes_per_task": per_task_minutes("seconds"),
        "pipeline_cpu_minutes_per_task": per_task_minutes("cpu_seconds"),
        "refine_imagination": imagination_speed(run, book, task),
    }


def coverage_config(args: argparse.Namespace):
    """(the `world4rl coverage` configuration of this benchmark run, its profile's settings, the results
    file's name) from bench_learning's arguments (also used by scripts/results/reselect_seeds.py)."""
    from world4rl_bringup.coverage_cli import CoverageConfig
    from world4rl_model.config import build, read_preset

    metaworld = args.suite == "metaworld"
    profile = read_preset(args.profile or profile_path(args.quick), CoverageConfig)
    name = "learning_metaworld" if metaworld else "learning"  # the results file and default run directory
    run = Path(args.run or (f"runs/bench_{name}_quick" if args.quick else f"runs/bench_{name}"))
    tasks = [t for t in (args.tasks or (METAWORLD_TASKS if metaworld else FRANKA_TASKS)).split(",") if t]
    profile = {**profile, "refine_by_task": {t: v for t, v in profile.get("refine_by_task", {}).items() if t in tasks}}
    run_settings = {"run": str(run), "tasks": tasks, "suite": args.suite, "threads": args.threads}
    return build(CoverageConfig, {**profile, **run_settings, "progress": not args.no_progress}), profile, name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="toy scale (minutes): checks the pipeline, not the learning")
    p.add_argument(
        "--tasks", default=None, help=f"comma-separated tasks (default: {FRANKA_TASKS}; Meta-World: {METAWORLD_TASKS})"
    )
    p.add_argument("--suite", choices=["franka", "metaworld"], default="franka")
    p.add_argument("--run", default=None, help="run directory (default: runs/bench_learning[_quick])")
    p.add_argument("--threads", type=int, default=None, help="torch threads per stage (1: two suites side by side)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for a log file)")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a YAML profile (default: profiles/recipe.yaml, quick.yaml with --quick)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()
    maybe_reexec_with_tcmalloc("cpu")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from world4rl_bringup.coverage_cli import run_pipeline
    from world4rl_bringup.prediction_report import across_tasks, markdown, task_summary

    cfg, profile, name = coverage_config(args)
    run, tasks = cfg.root, list(cfg.tasks)
    t0 = time.time()
    book = run_pipeline(cfg)
    predictions = [task_summary(run, task) for task in tasks]
    rows = [_task_row(run, book, task, len(tasks), p) for task, p in zip(tasks, predictions, strict=True)]
    result = {
        "profile": args.profile.stem if args.profile else "quick" if args.quick else "recipe",
        "settings": profile,
        "suite": args.suite,
        "run": str(run.absolute()),
        "shared_stage_seconds": {k: book[k]["seconds"] for k in ("world-model", "distill", "reward") if k in book},
        "this_invocation_seconds": time.time() - t0,
        "tasks": rows,
        "mean_over_tasks": _means(rows),
        "predicted_vs_measured": predictions,
        "prediction_across_tasks": across_tasks(predictions),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Learning ({result['profile']} profile, {args.suite}): BC vs refined in the true simulator, "
        "same seeds; baseline = BC measured in the same run.",
        "",
        "| task | episodes | BC | BC 95 % CI | refined | refined 95 % CI | refined / BC | diff 95 % CI (Newcombe) "
        "| McNemar p | CI above BC's | wall min/task | CPU min/task |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, f = r["bc"], r["refined"]
        ratio = f"{r['ratio_refined_vs_bc']:.2f}x" if r["ratio_refined_vs_bc"] is not None else "-"
        lo, hi = r["difference_ci95_newcombe"]
        lines.append(
            f"| {r['task']} | {r['episodes']} | {b['success_rate']:.0%} "
            f"| {b['ci95_wilson'][0]:.0%}..{b['ci95_wilson'][1]:.0%}"
            f" | {f['success_rate']:.0%} | {f['ci95_wilson'][0]:.0%}..{f['ci95_wilson'][1]:.0%} | {ratio}"
            f" | {lo:+.0%}..{hi:+.0%} | {r['mcnemar_exact_p']:.3g} | {'yes' if r['refined_ci_above_bc_ci'] else 'no'}"
            f" | {_minutes(r['pipeline_minutes_per_task'])} | {_minutes(r['pipeline_cpu_minutes_per_task'])} |"
        )
    m = result["mean_over_tasks"]
    lines += [
        "",
        f"Mean over the {len(rows)} tasks: BC {m['bc']:.1%}, refined {m['refined']:.1%} "
        f"({100 * m['difference']:+.1f} points); refined's CI above BC's on {m['refined_ci_above_bc_ci']} task(s), "
        f"below on {m['refined_ci_below_bc_ci']}.",
        "",
        "Imagination against reality (success from the same held-out start frames in dreams; the reward "
        "threshold calibrated on the BC policy's recorded rollouts, world4rl_policy.reward_calibration):",
        "",
        "| task | BC imagined | BC real | refined imagined | refined real | threshold | recorded rollouts: real "
        "| their dreams at the floor | at the threshold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        im, c = r["imagined"], r["reward_calibration"] or {}

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.0%}"

        threshold = f"{c['threshold']:.3f}" if c else "-"
        lines.append(
            f"| {r['task']} | {pct(im.get('bc'))} | {pct(r['bc']['success_rate'])} | {pct(im.get('refined'))} "
            f"| {pct(r['refined']['success_rate'])} | {threshold} "
            f"| {pct(c.get('real_success'))} | {pct(c.get('imagined_success_at_floor'))} "
            f"| {pct(c.get('imagined_success_at_threshold'))} |"
        )
    lines += imagination_lines(rows, result["mean_over_tasks"])
    lines += [
        "",
        "Predicted (from imagination, before any evaluation) against measured success, and the gate's choice:",
        "",
    ]
    lines += markdown(predictions)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def imagination_lines(rows: list[dict], means: dict) -> list[str]:
    """The markdown of refinement's imagination speed per task and its mean."""
    lines = [
        "",
        "Refinement's imagination: imagined steps per CPU-hour (CPU time of all the process's threads)",
        "",
        "| task | imagined steps | CPU s | imagined steps / CPU-hour | sampler steps | CPU time of |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if (im := r["refine_imagination"]) is None:
            lines.append(f"| {r['task']} | - | - | - | - | no record |")
            continue
        rate = f"{im['imagined_steps_per_cpu_hour']:,.0f}"
        lines.append(
            f"| {r['task']} | {im['imagined_steps']} | {im['cpu_seconds']:.0f} | {rate} "
            f"| {im['sampling_steps'] or '-'} | {IMAGINATION_SOURCES[im['source']]} |"
        )
    if (mean := means.get("imagined_steps_per_cpu_hour")) is not None:
        sources = ", ".join(IMAGINATION_SOURCES[s] for s in means["imagined_steps_per_cpu_hour_sources"])
        lines += ["", f"Mean over the tasks with a record: {mean:,.0f} imagined steps per CPU-hour ({sources})."]
    return lines


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _means(rows: list[dict]) -> dict:
    """The acceptance figures: mean success over the tasks and how many refined CIs lie above / below BC's."""
    bc = sum(r["bc"]["success_rate"] for r in rows) / len(rows)
    refined = sum(r["refined"]["success_rate"] for r in rows) / len(rows)
    speeds = [im for r in rows if (im := r.get("refine_imagination"))]
    return {
        "imagined_steps_per_cpu_hour": (
            sum(im["imagined_steps_per_cpu_hour"] for im in speeds) / len(speeds) if speeds else None
        ),
        "imagined_steps_per_cpu_hour_sources": sorted({im["source"] for im in speeds}),
        "bc": bc,
        "refined": refined,
        "difference": refined - bc,
        "refined_ci_above_bc_ci": sum(bool(r["refined_ci_above_bc_ci"]) for r in rows),
        "refined_ci_below_bc_ci": sum(r["refined"]["ci95_wilson"][1] < r["bc"]["ci95_wilson"][0] for r in rows),
    }


if __name__ == "__main__":
    sys.exit(main())

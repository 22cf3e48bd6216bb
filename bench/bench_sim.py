#!/usr/bin/env python3
"""Benchmark: embedded-robot env steps per second, each step including a 64x64 render, on one core.

One env step = the scripted expert's action -> DLS IK -> 0.1 s of physics (25 substeps) -> a
64x64 RGB render of the front camera. The process is pinned to one CPU core (MuJoCo and its
physics are single-threaded; Mesa's llvmpipe is limited to one thread as well).

Configurations, measured in the same run and interleaved (these machines are shared and noisy):
- fast: the package's default render settings (low-poly collision meshes, no anti-aliasing,
  no shadows, no reflections);
- baseline: MuJoCo's default render settings (the 134k-face visual meshes, 4x multisampling,
  shadows, reflections);
plus physics-only steps (no render) and, when metaworld is installed, Meta-World drawer-open-v3
with the adapter's 64x64 render as an outside reference.

Goal: fast >= 200 steps/s. Writes bench/results/bench_sim.json and bench_sim.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

GOAL_STEPS_PER_S = 200.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/bench_sim.py --steps 300 --repeats 3",
    )
    parser.add_argument("--tasks", default="all", help="comma-separated task names, or 'all' (default)")
    parser.add_argument("--steps", type=int, default=300, help="env steps per measurement (default 300)")
    parser.add_argument(
        "--baseline-steps", type=int, default=40, help="env steps per baseline measurement (it is ~30x slower)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per configuration; median kept")
    parser.add_argument("--cpu", type=int, default=None, help="CPU core to pin to (default: the first allowed one)")
    parser.add_argument("--no-metaworld", action="store_true", help="skip the Meta-World reference measurement")
    parser.add_argument(
        "--out-dir", type=Path, default=Path(__file__).resolve().parent / "results", help="where JSON + markdown go"
    )
    return parser.parse_args(argv)


def pin_to_one_core(cpu: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[0] if cpu is None else cpu
    os.sched_setaffinity(0, {core})
    return core


def measure_env(env, steps: int, render: bool) -> float:
    """Steps per second of expert-driven steps (with or without the observation's render)."""
    env.reset(seed=0)
    sim = env.sim
    t0 = time.perf_counter()
    for i in range(steps):
        if render:
            _, _, terminated, truncated, _ = env.step(env.expert_action())
            if terminated or truncated:
                env.reset(seed=i)
        else:
            sim.apply_action(sim.expert_action())
            if sim.steps >= env.horizon:
                sim.reset(seed=i)
    return steps / (time.perf_counter() - t0)


def measure_metaworld(steps: int) -> float | None:
    try:
        from world4rl_sim.metaworld_adapter import MetaWorldEnv
    except ImportError:
        return None
    env = MetaWorldEnv("drawer-open-v3", seed=0, horizon=500)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(env.expert_action())
        if terminated or truncated:
            env.reset(seed=i)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe would otherwise spawn a thread per core
    core = pin_to_one_core(args.cpu)

    from world4rl_sim.env import FrankaSimEnv
    from world4rl_sim.scene import RenderConfig
    from world4rl_sim.tasks import TASKS

    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    configs = {"fast": RenderConfig(), "baseline": RenderConfig.baseline()}
    envs = {(c, t): FrankaSimEnv(t, image_size=64, render_config=rc) for c, rc in configs.items() for t in tasks}
    for env in envs.values():  # warm up: GL context, first compile of the scene
        measure_env(env, 5, render=True)

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in envs}
    physics: dict[str, list[float]] = {t: [] for t in tasks}
    for _ in range(args.repeats):
        for task in tasks:
            for config in configs:
                steps = args.steps if config == "fast" else args.baseline_steps
                samples[(config, task)].append(measure_env(envs[(config, task)], steps, render=True))
            physics[task].append(measure_env(envs[("fast", task)], args.steps, render=False))
    for env in envs.values():
        env.close()

    rows = []
    for task in tasks:
        fast = statistics.median(samples[("fast", task)])
        base = statistics.median(samples[("baseline", task)])
        rows.append(
            {
                "task": task,
                "fast_steps_per_s": round(fast, 1),
                "baseline_steps_per_s": round(base, 1),
                "speedup": round(fast / base, 2),
                "physics_only_steps_per_s": round(statistics.median(physics[task]), 1),
                "meets_goal": fast >= GOAL_STEPS_PER_S,
            }
        )
    mean_fast = statistics.mean(r["fast_steps_per_s"] for r in rows)
    mean_base = statistics.mean(r["baseline_steps_per_s"] for r in rows)
    metaworld = None if args.no_metaworld else measure_metaworld(args.steps)

    result = {
        "benchmark": "sim steps per second, each with a 64x64 render, one core",
        "goal_steps_per_s": GOAL_STEPS_PER_S,
        "cpu_core": core,
        "steps_per_measurement": args.steps,
        "baseline_steps_per_measurement": args.baseline_steps,
        "repeats": args.repeats,
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "rows": rows,
        "mean_fast_steps_per_s": round(mean_fast, 1),
        "mean_baseline_steps_per_s": round(mean_base, 1),
        "mean_speedup": round(mean_fast / mean_base, 2),
        "metaworld_drawer_open_steps_per_s": None if metaworld is None else round(metaworld, 1),
        "unix_time": time.time(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench_sim.json").write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        "# bench_sim: env steps/s with a 64x64 render, one core",
        "",
        f"Goal: >= {GOAL_STEPS_PER_S:.0f} steps/s (fast settings). Baseline: MuJoCo's default render settings "
        f"(visual meshes, 4x MSAA, shadows, reflections), same run, interleaved. Core {core}, "
        f"MUJOCO_GL={result['mujoco_gl']}, load average {result['load_average'][0]:.2f}.",
        "",
        "| task | fast steps/s | baseline steps/s | speedup | physics only steps/s | goal met |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['fast_steps_per_s']:.1f} | {r['baseline_steps_per_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r['physics_only_steps_per_s']:.1f} | {'yes' if r['meets_goal'] else 'NO'} |"
        )
    lines.append(
        f"| **mean** | **{mean_fast:.1f}** | **{mean_base:.1f}** | **{mean_fast / mean_base:.2f}x** | | "
        f"{'yes' if mean_fast >= GOAL_STEPS_PER_S else 'NO'} |"
    )
    if metaworld is not None:
        lines += ["", f"Reference: Meta-World drawer-open-v3 through the adapter (64x64): {metaworld:.1f} steps/s."]
    markdown = "\n".join(lines) + "\n"
    (args.out_dir / "bench_sim.md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.out_dir / 'bench_sim.json'} and {args.out_dir / 'bench_sim.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

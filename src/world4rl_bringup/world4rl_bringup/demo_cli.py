"""`world4rl demo` (`make demo`): the whole loop on the embedded robot, with a report.

Stages, each a `world4rl` command run as a child process (so each one is exactly what a user
would type), run by the stage engine (world4rl_bringup.stages): a stage is skipped when a previous
run finished it with the same command line (RUN/stages.json); another --size, --task, --seed or
--demos changes the command lines, and the stages they change rerun, with the stages that build
on them (their earlier outputs moved to RUN/superseded/, never deleted). An interrupted stage
resumes where its command can:

  collect      scripted-expert demonstrations on the sim, through the ROS graph -> rosbag2 bags
  dataset      bags -> dataset (64x64 frames, actions, per-frame success): what BC imitates
  bc           behaviour-cloned Gaussian policy
  rollouts     World4RL's coverage data: the demonstrations plus the BC policy's own rollouts and
               random walks in the sim -> RUN/coverage, what the models below learn from (the world
               model sees the policy's mistakes; the gate calibrates on the rollouts' real outcomes)
  world_model  action-conditioned EDM diffusion world model
  reward       success classifier (BCE) on the frames and on the world model's dreams of them
  dream        open-loop evaluation of the world model and a dream-vs-real video
  refine       PPO inside the frozen world model, rewarded by the classifier; then the predicted
               real success of both policies and the gate's choice (RUN/refined/gate.json)
  deploy_bc    the BC policy on the sim through the runtime node (policy_runner)
  deploy_refined  the refined policy, same seeds (both are measured, whatever the gate chose)
  report       RUN/report.md: success with 95 % intervals, the gate's choice beside the measured
               success, curves, dream video, latency, stage times and speed settings; and RUN/report.html,
               the same as one self-contained page (videos play inline), whose path is the last line printed

The torch stages start with tcmalloc preloaded and OMP_WAIT_POLICY=PASSIVE, with bf16 autocast
where it measured faster (see `stages`); each logs what its processes ran with (RUN/demo.log).

`--size small` (default) is sized for ~20 minutes on 2 CPU cores; `--size full` uses the sizes of
the refinement benchmark's recipe (bench/profiles/recipe.yaml: the paper's 50 demonstrations, 150 BC
rollouts and 30 random walks, the default world model, three PPO seeds), for a task where refinement
paid (`--task pick_place`), in about 1.5 hours.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    """How big a demo run is; the sizes are YAML presets in config/demo/NAME.yaml (installed in the
    package's share folder), read by world4rl_model.config."""

    demos: int  # scripted-expert demonstrations collected
    expert_noise: float  # Gaussian noise std on the expert's xyz actions
    bc_steps: int  # BC gradient steps
    reward_minutes: float  # success-classifier training time
    world_model_minutes: float  # world-model training time
    world_model_size: str  # world-model size preset (tiny | small | default | medium | diamond)
    refine_steps: int  # imagined PPO transitions
    deploy_episodes: int  # sim episodes per deployed policy
    policy_episodes: int = 150  # BC-policy rollouts in the sim added to the coverage data (the paper's 150)
    random_episodes: int = 30  # random-walk episodes added to it (the paper's 30)
    world_model_target: str = "frame"  # what the world model diffuses: frame | residual (see world_model.py)
    world_model_lr: float = 3e-4  # world-model learning rate
    world_model_sampling_steps: int = 2  # Euler steps of its sampler (dreams, PPO, the dream evaluation)
    refine_seeds: int = 1  # PPO runs; the best in imagination on held-out starts is kept (the recipe's 3)


def sizes_dir() -> Path:
    from world4rl_bringup.graph import package_share

    return package_share("world4rl_bringup") / "config" / "demo"


def load_sizes(name: str) -> Sizes:
    """A size by name (config/demo/NAME.yaml) or a YAML file of Sizes' fields."""
    from world4rl_model.config import load_preset

    path = Path(name) if name.endswith((".yaml", ".yml")) else sizes_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in sizes_dir().glob("*.yaml")))
        raise ValueError(f"--size {name}: no such size (sizes: {known}; or a YAML file of Sizes' fields)")
    return load_preset(path, Sizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("world4rl_data/demo"), help="run directory")
    parser.add_argument("--task", default="drawer", help="sim task (default: drawer)")
    parser.add_argument(
        "--size", default="small", help="small (default): ~20 min on 2 cores; full: benchmark recipe sizes, ~1.5 h"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of collection and training")
    parser.add_argument("--redo", nargs="*", default=[], metavar="STAGE", help="run these stages again")
    parser.add_argument("--until", default=None, metavar="STAGE", help="stop after this stage")
    parser.add_argument("--demos", type=int, default=None, help="override the size's number of demonstrations")


def _world4rl(*args: object) -> list[str]:
    return [sys.executable, "-m", "world4rl_bringup.cli", *(str(a) for a in args)]


def stages(
    run: Path, task: str, sizes: Sizes, seed: int, bf16: bool | None = None
) -> list[tuple[str, list[list[str]]]]:
    """(name, commands) in order. Paths are inside RUN, so a run directory is self-contained.

    bf16 (None: where this machine computes it natively, world4rl_model.runtime.fast_bf16) turns on
    bf16 autocast where it measured faster than fp32 on the 2-core CPU with 2 threads: refine's
    imagination (world model and classifier forward, 1.3-1.8x). Training in bf16 measured slower
    there (world model 0.4-0.85x, classifier 0.04-0.5x, BC 0.2x), so those stages stay in fp32, as
    does the dream evaluation (its PSNR)."""
    from world4rl_model.runtime import fast_bf16

    bags, dataset, coverage = run / "bags", run / "dataset", run / "coverage"
    half = ["--bf16"] if (fast_bf16() if bf16 is None else bf16) else []
    return [
        ("collect", [_world4rl(
            "collect", "--task", task, "--episodes", sizes.demos, "--out", bags, "--seed", seed,
            "--expert-noise", sizes.expert_noise, "--no-keyboard")]),
        ("dataset", [_world4rl("dataset", "build", bags, "--out", dataset)]),
        # No random-shift augmentation: with one fixed camera, where things are in the picture is the signal.
        ("bc", [_world4rl(
            "train", "bc", "--dataset", dataset, "--out", run / "bc", "--steps", sizes.bc_steps, "--seed", seed,
            "--lr", 1e-3, "--augment-shift", 0, "--no-progress")]),
        # A copy of the demonstrations (rebuilt from the bags, so a rerun starts clean), topped up;
        # the arm moved as through ROS, as in the demonstrations and the deploys (runtime_timing).
        ("rollouts", [_world4rl("dataset", "build", bags, "--out", coverage), _world4rl(
            "dataset", "rollouts", coverage, "--policy", run / "bc", "--task", task, "--no-progress",
            "--policy-episodes", sizes.policy_episodes, "--random", sizes.random_episodes, "--timing", "runtime")]),
        ("world_model", [_world4rl(
            "train", "world-model", coverage, "--out", run / "world_model", "--seed", seed,
            "--max-minutes", sizes.world_model_minutes, "--size", sizes.world_model_size,
            "--target", sizes.world_model_target, "--lr", sizes.world_model_lr,
            "--sampling-steps", sizes.world_model_sampling_steps)]),
        ("reward", [_world4rl(
            "train", "reward", coverage, "--out", run / "reward", "--max-minutes", sizes.reward_minutes,
            "--dreams-from", run / "world_model")]),
        ("dream", [_world4rl(
            # Demonstrations stop a few steps after success (~10 frames): horizons that fit them.
            "eval", "world-model", run / "world_model", "--dataset", coverage, "--out", run / "dream",
            "--horizons", "1,3,5", "--stride", 2, "--gif")]),  # a gif shows inline in the report
        ("refine", [_world4rl(
            # The benchmark's recipe (bench/profiles/recipe.yaml): short dreams from any
            # recorded frame, the classifier's threshold calibrated on the BC rollouts' real outcomes,
            # a KL pull to BC; then the predicted success of both policies and the gate's choice, from
            # 2 dreams per start (the benchmark's 4 cost the small demo a minute).
            "refine", "--policy", run / "bc", "--world-model", run / "world_model", "--reward", run / "reward",
            "--dataset", coverage, "--out", run / "refined", "--task", task, "--total-steps", sizes.refine_steps,
            "--start", "any", "--horizon", 10, "--reward-calibration", "--kl-bc-coef", 0.1,
            "--prediction.repeats", 2, "--prediction.calibration-repeats", 2,
            "--seed", seed, "--seeds", sizes.refine_seeds, "--no-progress", *half)]),
        ("deploy_bc", [_world4rl(
            "deploy", "--policy", run / "bc", "--task", task, "--episodes", sizes.deploy_episodes,
            "--out", run / "deploy" / "bc.json")]),
        ("deploy_refined", [_world4rl(
            # Explicitly the refined policy: the demo measures both, whatever the gate chose.
            "deploy", "--policy", run / "refined", "--policy-choice", "refined", "--task", task,
            "--episodes", sizes.deploy_episodes, "--out", run / "deploy" / "refined.json")]),
    ]  # fmt: skip


# What each stage builds on, and the outputs a rerun must build from scratch (else it would resume them).
AFTER = {
    "collect": [],
    "dataset": ["collect"],
    "bc": ["dataset"],
    "rollouts": ["collect", "bc"],
    "world_model": ["rollouts"],
    "reward": ["rollouts", "world_model"],
    "dream": ["rollouts", "world_model"],
    "refine": ["rollouts", "bc", "world_model", "reward"],
    "deploy_bc": ["bc"],
    "deploy_refined": ["refine"],
}
OUTPUTS = {
    "collect": ["bags"],
    "dataset": ["dataset"],
    "bc": ["bc"],
    "rollouts": ["coverage"],
    "world_model": ["world_model"],
    "reward": ["reward"],
    "dream": ["dream"],
    "refine": ["refined"],
    "deploy_bc": ["deploy/bc.json"],
    "deploy_refined": ["deploy/refined.json"],
}


# The stages that run torch on the CPU: their commands start with tcmalloc preloaded and
# OMP_WAIT_POLICY=PASSIVE (world4rl_model.runtime.tcmalloc_env), and record their speed settings in
# their first output folder's runtime.json, which the demo logs (stdout and RUN/demo.log) and reports.
TORCH_STAGES = frozenset({"bc", "world_model", "reward", "dream", "refine"})


class StageFailed(RuntimeError):
    pass


def stage_runtime(run_dir: Path, name: str) -> dict[str, dict]:
    """What a torch stage's processes recorded about themselves (tcmalloc, bf16, threads), by process."""
    from world4rl_model.runtime import read_runtime

    return read_runtime(run_dir / OUTPUTS[name][0]) if name in TORCH_STAGES else {}


def runtime_lines(name: str, runtime: dict[str, dict]) -> list[str]:
    from world4rl_model.runtime import describe_runtime

    if name in TORCH_STAGES and not runtime:
        return [f"{name}: recorded no runtime settings"]
    return [f"{name}: {proc} ran with {describe_runtime(facts)}" for proc, facts in runtime.items()]


def _settings(commands: list[list[str]], run_dir: Path) -> dict:
    """A stage's settings: its command lines, with the run folder and interpreter named generically
    (a moved run folder or another venv changes nothing)."""
    lines = [shlex.join(c).replace(str(run_dir), "RUN").replace(sys.executable, "python") for c in commands]
    return {"commands": lines}


def run(args: argparse.Namespace) -> int:
    from world4rl_bringup.stages import Stages

    run_dir = args.out.resolve()
    try:
        sizes = load_sizes(args.size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.demos is not None:
        sizes = dataclasses.replace(sizes, demos=args.demos)
    plan = stages(run_dir, args.task, sizes, args.seed)
    names = [name for name, _ in plan] + ["report"]
    for name in [*args.redo, *([args.until] if args.until else [])]:
        if name not in names:
            print(f"error: unknown stage {name!r}; stages: {', '.join(names)}", file=sys.stderr)
            return 2
    log = run_dir / "demo.log"
    started = time.monotonic()
    timings: dict[str, float] = _load_timings(run_dir)
    position = {name: f"[{i}/{len(names)}]" for i, name in enumerate(names, 1)}

    def say(text: str) -> None:  # the engine's "STAGE: ..." lines, numbered
        print(f"{position[text.split(':')[0]]} {text}", flush=True)

    engine = Stages(run_dir, redo=args.redo, log=say)

    def body(name: str, commands: list[list[str]]):
        def run_commands() -> dict:
            from world4rl_model.runtime import tcmalloc_env

            env = tcmalloc_env() if name in TORCH_STAGES else None
            for command in commands:
                with log.open("a") as out:
                    out.write(f"\n$ {shlex.join(command)}\n")
                code = subprocess.call(command, stdin=subprocess.DEVNULL, env=env)
                if code != 0:
                    raise StageFailed(f"stage {name} failed (exit {code}): {shlex.join(command)}")
            for line in runtime_lines(name, stage_runtime(run_dir, name)):
                say(line)
                with log.open("a") as out:
                    out.write(line + "\n")
            return {}

        return run_commands

    for name, commands in plan:
        stage_start = time.monotonic()
        try:
            ran = engine.run(
                name,
                _settings(commands, run_dir),
                body(name, commands),
                after=AFTER[name],
                fresh=[run_dir / p for p in OUTPUTS[name]],
            )
        except StageFailed as exc:
            print(exc, file=sys.stderr)
            print("fix the cause and run the demo again: finished stages are kept", file=sys.stderr)
            return 1
        if ran:
            timings[name] = time.monotonic() - stage_start
            (run_dir / "timings.json").write_text(json.dumps(timings, indent=2))
        if args.until == name:
            return 0
    from world4rl_bringup.demo_report import write_report

    report = write_report(run_dir, args.task, timings)
    print(f"{position['report']} report: {report} (this run {time.monotonic() - started:.0f} s); as one page:")
    print(report.with_suffix(".html"), flush=True)  # the last line: the self-contained HTML report
    return 0


def _load_timings(run_dir: Path) -> dict[str, float]:
    path = run_dir / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}

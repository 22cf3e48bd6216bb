"""Imagined transitions per second of WorldModelEnv: 64x64 frames, 3 Euler steps, 64 envs, on this CPU.

The main table walks from a baseline to the default model, one measured change per row; every
ratio is against the baseline (diffusers' UNet2DModel with the default widths at full resolution,
fp32, NCHW) measured in the same run. Rounds are interleaved (each variant once per round) and
the best round counts, because the cores are shared and other jobs come and go. One env step =
one world-model sample (3 U-Net forwards for 64 frames) + one reward-classifier forward.

Process-level settings cannot change inside one process, so a second table measures the default
model in child processes of this run: OpenMP's default (spinning) wait policy instead of PASSIVE,
no tcmalloc, and 1 thread, each next to a child with the settings this benchmark uses.

    .venv/bin/python bench/bench_world_model.py [--quick] [--compile] [--rounds N] [--samplers-only]

A third table compares samplers in the same rounds: the old default (default size, 3 Euler steps),
the default size at 2 steps, and a one-step distilled student (world4rl_model.distillation).

Writes bench/results/world_model.json and bench/results/world_model.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (name, preset, unet overrides, channels_last, bf16, compile[, build_env keywords]); rows before the
# row-shards one run the whole batch in one thread's ops (cpu_shards 1), as before it existed.
ONE_SHARD = {"shards": 1}
MAIN_VARIANTS = [
    ("baseline: diffusers UNet2DModel, default widths at 64x64, fp32, NCHW", "default",
     {"backbone": "diffusers", "space_to_depth": 1}, False, False, False, ONE_SHARD),
    ("own AdaGN U-Net, same widths at 64x64", "default", {"space_to_depth": 1, "group_size": None}, False, False,
     False, ONE_SHARD),
    ("+ space-to-depth 4 (U-Net at 16x16): the default architecture", "default", {"group_size": None}, False, False,
     False, ONE_SHARD),
    ("+ channels_last", "default", {"group_size": None}, True, False, False, ONE_SHARD),
    ("+ bf16 autocast", "default", {"group_size": None}, True, True, False, ONE_SHARD),
    ("+ >= 16 channels per GroupNorm group (fast oneDNN bf16 path)", "default", {}, True, True, False, ONE_SHARD),
    ("+ rows split over one worker thread per torch thread (WorldModelEnv cpu_shards): default", "default", {},
     True, True, False),
    ("+ 1 torch thread instead of all cores (shared cores)", "default", {}, True, True, False, {"threads": 1}),
]  # fmt: skip
REFERENCE_VARIANTS = [
    ("reference: 'small' preset (bf16, channels_last)", "small", {}, True, True, False),
    ("reference: 'medium' preset, U-Net level at 32x32 (bf16, channels_last)", "medium", {}, True, True, False),
]
DEFAULT_ROW = len(MAIN_VARIANTS) - 2  # the default model with all cores
# The sampler table: (name, preset, unet overrides, Euler steps), each with bf16, channels_last and the
# classifier, like the default row. The student's architecture is the distilled one of docs/results.md
# (`world4rl train distill ... --size small --channels 32 64`); --student CKPT takes another's.
OLD_DEFAULT_SAMPLER = ("old default: default size, 3 Euler steps (DIAMOND)", "default", {}, 3)
SAMPLER_VARIANTS = [
    OLD_DEFAULT_SAMPLER,
    ("default size, 2 Euler steps (the teacher's default sampler)", "default", {}, 2),
    ("reference: default size, 1 Euler step (no distillation)", "default", {}, 1),
    ("one-step distilled student ('small', channels 32 64), 1 step", "small", {"channels": [32, 64]}, 1),
]
SAMPLER_GOAL = {"transitions_per_s": 1000, "vs_old_default": 4.0}
COMPILE_VARIANT = ("+ torch.compile of the U-Net (default, bf16, channels_last)", "default", {}, True, True, True)


def build_env(name, preset, unet, cl, bf16, comp, ds, rm, args, threads=None, steps=None, shards=None):
    import torch

    from world4rl_model.env import WorldModelEnv
    from world4rl_model.world_model import WorldModel, count_parameters, preset_config

    torch.manual_seed(0)
    steps = steps or args.denoise_steps
    cfg = preset_config(preset, image_size=args.image_size, sampling_steps=steps, unet=dict(unet))
    wm = WorldModel(cfg)
    shards = 1 if threads == 1 else shards  # None: WorldModelEnv's default for this process's threads
    env = WorldModelEnv(
        wm, rm, ds, num_envs=args.batch, horizon=10**9, channels_last=cl, bf16=bf16, seed=0, cpu_shards=shards
    )
    if comp:
        wm.net = torch.compile(wm.net)
    env.reset(seed=0)
    t0 = time.perf_counter()
    env.step(torch.zeros(args.batch, 4))  # warm-up (and compile)
    return {"name": name, "env": env, "params": count_parameters(wm), "best": float("inf"),
            "warmup_s": time.perf_counter() - t0, "threads": threads}  # fmt: skip


def measure(variants, args, rounds, steps, log=print):
    import torch

    gen = torch.Generator().manual_seed(0)
    all_cores = torch.get_num_threads()
    for r in range(rounds):
        for v in variants:
            torch.set_num_threads(v.get("threads") or all_cores)
            actions = torch.rand(args.batch, 4, generator=gen) * 2 - 1
            t0 = time.perf_counter()
            for _ in range(steps):
                v["env"].step(actions)
            dt = (time.perf_counter() - t0) / steps
            v["best"] = min(v["best"], dt)
            log(f"round {r}: {v['name']}: {args.batch / dt:.1f} transitions/s")
    torch.set_num_threads(all_cores)


def setup(args):
    import torch

    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_model.synthetic import make_dataset

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    tmp = tempfile.mkdtemp(prefix="bench_wm_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # every child process makes one
    ds = make_dataset(Path(tmp) / "ds", episodes_per_task=2, length=8, image_size=args.image_size)
    rm = RewardClassifier(RewardConfig(image_size=args.image_size, tasks=list(ds.tasks)))
    return ds, rm


def worker(args) -> int:
    """Child process: measure the default model only, print one JSON line."""
    ds, rm = setup(args)
    v = build_env(*MAIN_VARIANTS[DEFAULT_ROW], ds, rm, args)
    measure([v], args, args.rounds, args.steps, log=lambda *_: None)
    print(json.dumps({"transitions_per_s": args.batch / v["best"]}))
    return 0


def child(args, env_changes: dict[str, str | None], threads: int | None = None) -> float:
    env = dict(os.environ)
    for k, val in env_changes.items():
        if val is None:
            env.pop(k, None)
        else:
            env[k] = val
    env["WORLD4RL_NO_TCMALLOC"] = "1"  # the child keeps exactly the LD_PRELOAD given here
    cmd = [sys.executable, __file__, "--worker", "--rounds", str(args.rounds), "--steps", str(args.steps),
           "--threads", str(threads or args.threads or len(os.sched_getaffinity(0)))]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["transitions_per_s"]


def sampler_variants(args) -> list[tuple]:
    """SAMPLER_VARIANTS, with the student's architecture and steps from --student CKPT when given."""
    variants = list(SAMPLER_VARIANTS)
    if args.student:
        from world4rl_model.checkpoint import load_config

        model = load_config(args.student)["model"]
        unet = dict(model["unet"])
        name = f"student {args.student} ({model['sampling_steps']} step(s))"
        variants[-1] = (name, "default", unet, model["sampling_steps"])
    return variants


def sampler_rows(envs: list[dict], args) -> list[dict]:
    """Transitions/s of the sampler variants (measured in the same rounds), each against the old default."""
    old = envs[0]["best"]
    return [
        {
            "variant": v["name"],
            "params_M": round(v["params"] / 1e6, 3),
            "euler_steps": v["steps"],
            "transitions_per_s": round(args.batch / v["best"], 1),
            "ms_per_env_step": round(v["best"] * 1000, 1),
            "vs_old_default": round(old / v["best"], 2),
        }
        for v in envs
    ]


def sampler_lines(rows: list[dict], threads: int) -> list[str]:
    best = rows[-1]
    met = best["transitions_per_s"] >= SAMPLER_GOAL["transitions_per_s"]
    ratio_met = best["vs_old_default"] >= SAMPLER_GOAL["vs_old_default"]
    lines = [
        "",
        f"Samplers (same rounds, {threads} threads, bf16, channels_last, classifier included): the one-step student "
        f"reaches {best['transitions_per_s']} transitions/s, {best['vs_old_default']}x the old default (goal "
        f">= {SAMPLER_GOAL['transitions_per_s']}/s: {'met' if met else 'not met'} in this run; >= "
        f"{SAMPLER_GOAL['vs_old_default']}x: {'met' if ratio_met else 'not met'}). Quality of the same models: "
        "docs/results.md#one-step-distilled-student.",
        "",
        "| sampler | params (M) | Euler steps | transitions/s | ms/step | vs old default |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['params_M']} | {r['euler_steps']} | {r['transitions_per_s']} | "
        f"{r['ms_per_env_step']} | {r['vs_old_default']}x |"
        for r in rows
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round, 2 timed steps per variant")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best counts)")
    p.add_argument("--steps", type=int, default=3, help="timed env steps per variant per round")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--denoise-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores of this process)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes of compiling)")
    p.add_argument("--no-process-table", action="store_true", help="skip the child-process measurements")
    p.add_argument("--samplers-only", action="store_true", help="measure only the sampler table (and no processes)")
    p.add_argument("--student", help="a distilled world-model checkpoint: its architecture and steps for the table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 1, 2
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc, tcmalloc_active

    if args.worker:
        return worker(args)
    configure_openmp()
    maybe_reexec_with_tcmalloc("cpu")
    import torch

    ds, rm = setup(args)
    threads = torch.get_num_threads()
    variants = MAIN_VARIANTS + REFERENCE_VARIANTS + ([COMPILE_VARIANT] if args.compile else [])
    if args.samplers_only:
        variants, args.no_process_table = [], True
    envs, samplers = [], []
    for spec in variants:
        envs.append(build_env(*spec[:6], ds, rm, args, **(spec[6] if len(spec) > 6 else {})))
        print(f"ready: {spec[0]} ({envs[-1]['params'] / 1e6:.2f}M params, warm-up {envs[-1]['warmup_s']:.1f} s)")
    for name, preset, unet, steps in sampler_variants(args):
        samplers.append({**build_env(name, preset, unet, True, True, False, ds, rm, args, steps=steps), "steps": steps})
        print(f"ready: {name} ({samplers[-1]['params'] / 1e6:.2f}M params)")
    measure(envs + samplers, args, args.rounds, args.steps)
    if args.samplers_only:  # its own files: the full results stay as they were
        rows = sampler_rows(samplers, args)
        load = [round(x, 2) for x in os.getloadavg()]
        lines = ["# World model: imagined transitions/s per sampler", "", *sampler_lines(rows, threads)[1:]]
        lines += ["", f"Best of {args.rounds} interleaved rounds x {args.steps} steps; load average at the end {load}."]
        RESULTS.mkdir(exist_ok=True)
        result = {"benchmark": "world_model_samplers", "threads": threads, "rounds": args.rounds,
                  "steps_per_round": args.steps, "load_average_at_end": load, "goal": SAMPLER_GOAL,
                  "rows": rows}  # fmt: skip
        (RESULTS / "world_model_samplers.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "world_model_samplers.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0

    base = envs[0]["best"]
    rows = []
    for i, v in enumerate(envs):
        prev = envs[i - 1]["best"] if 0 < i < len(MAIN_VARIANTS) else None
        rows.append(
            {
                "variant": v["name"],
                "params_M": round(v["params"] / 1e6, 3),
                "transitions_per_s": round(args.batch / v["best"], 1),
                "ms_per_env_step": round(v["best"] * 1000, 1),
                "vs_baseline": round(base / v["best"], 2),
                "vs_previous_row": round(prev / v["best"], 2) if prev else None,
            }
        )
    default_rate = args.batch / envs[DEFAULT_ROW]["best"]
    one_thread_rate = args.batch / envs[len(MAIN_VARIANTS) - 1]["best"]

    process_rows = []
    if not args.no_process_table:
        lib = os.environ.get("LD_PRELOAD", "")
        ours = {"OMP_WAIT_POLICY": "PASSIVE", "LD_PRELOAD": lib or None}
        pairs = [
            ("OpenMP wait policy: libgomp default (spin) vs PASSIVE", {**ours, "OMP_WAIT_POLICY": None}, None),
            ("allocator: glibc malloc vs tcmalloc", {**ours, "LD_PRELOAD": None}, None),
            ("threads: 1 vs all cores", ours, 1),
        ]
        for label, changed, t in pairs:
            ref = child(args, ours)
            alt = child(args, changed, t)
            process_rows.append(
                {
                    "change": label,
                    "ours_transitions_per_s": round(ref, 1),
                    "changed_transitions_per_s": round(alt, 1),
                    "ours_vs_changed": round(ref / alt, 2),
                }
            )
            print(f"{label}: ours {ref:.1f}/s, changed {alt:.1f}/s", flush=True)

    load = [round(x, 2) for x in os.getloadavg()]
    result = {
        "benchmark": "world_model",
        "what": f"WorldModelEnv.step: {args.batch} envs, {args.image_size}x{args.image_size}, "
        f"{args.denoise_steps} Euler steps + reward classifier",
        "goal_transitions_per_s": 200,
        "default_transitions_per_s": round(default_rate, 1),
        "default_one_thread_transitions_per_s": round(one_thread_rate, 1),
        "goal_met": max(default_rate, one_thread_rate) >= 200,
        "threads": threads,
        "tcmalloc": tcmalloc_active(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "load_average_at_end": load,
        "torch": torch.__version__,
        "rows": rows,
        "process_rows": process_rows,
        "sampler_goal": SAMPLER_GOAL,
        "sampler_rows": sampler_rows(samplers, args),
    }
    lines = [
        "# World model: imagined transitions/s",
        "",
        f"{result['what']}; {threads} threads, tcmalloc {result['tcmalloc']}, OMP_WAIT_POLICY "
        f"{result['omp_wait_policy']}; best of {args.rounds} interleaved rounds x {args.steps} steps; load "
        f"average at the end {load} on {len(os.sched_getaffinity(0))} cores shared with other jobs (absolute "
        "numbers are noisy, ratios within the run are what counts).",
        "",
        f"**Default model: {default_rate:.0f} imagined transitions/s with {threads} threads, "
        f"{one_thread_rate:.0f}/s with 1 thread** (goal >= 200/s: {'met' if result['goal_met'] else 'not met'} "
        "in this run).",
        "",
        "| variant | params (M) | transitions/s | ms/step | vs baseline | vs previous row |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        prev = f"{r['vs_previous_row']}x" if r["vs_previous_row"] else ""
        lines.append(
            f"| {r['variant']} | {r['params_M']} | {r['transitions_per_s']} | {r['ms_per_env_step']} | "
            f"{r['vs_baseline']}x | {prev} |"
        )
    if process_rows:
        lines += [
            "",
            "Process settings (default model, child processes of this run, each pair measured back to back):",
            "",
            "| change | ours (transitions/s) | changed (transitions/s) | ours vs changed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['change']} | {r['ours_transitions_per_s']} | {r['changed_transitions_per_s']} | "
            f"{r['ours_vs_changed']}x |"
            for r in process_rows
        ]
    lines += sampler_lines(result["sampler_rows"], threads)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "world_model.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "world_model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

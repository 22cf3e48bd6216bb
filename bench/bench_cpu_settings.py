"""Threads and OpenMP wait policy, chosen by measurement: dedicated cores and cores shared with a CPU hog.

Each setting runs in child processes (libgomp reads its variables once, at load), alternating with the
others so that load drift hits all alike; every child measures two things on the default world model:

- imagination: WorldModelEnv.step, 64 envs, 64x64, the sampler's Euler steps + the classifier, bf16
  autocast and channels_last where the CPU has native bf16 (world4rl_model.runtime.fast_bf16), tcmalloc;
- the runtime node's call: the policy's act() at batch 1 (PolicyRunner, one frame history), p50 and p99.

Situations: "dedicated" gives the children nice -20 above everything else on the machine (the closest
this shared machine comes to cores of their own: the other jobs run only when our threads sleep);
"shared" runs them at nice 0 beside one busy loop per core (scripts/beside_cpu_hog.sh's hog), on top of
whatever else runs. Settings: OMP_WAIT_POLICY=PASSIVE (sleep at once), libgomp's default (spin
~300,000 iterations, then sleep), ACTIVE (spin only), GOMP_SPINCOUNT=N (spin N, then sleep), and
1 thread.

    .venv/bin/python bench/bench_cpu_settings.py [--quick] [--repeats N] [--situations dedicated,shared]

Writes bench/results/cpu_settings.{json,md}.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# (label, environment changes (None: unset), threads (0: all cores))
SETTINGS = [
    ("OMP_WAIT_POLICY=PASSIVE, all cores", {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}, 0),
    ("libgomp default wait (spin 300k), all cores", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}, 0),
    ("OMP_WAIT_POLICY=ACTIVE (spin without end), all cores", {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}, 0),
    ("GOMP_SPINCOUNT=100000, all cores", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "100000"}, 0),
    ("GOMP_SPINCOUNT=10000, all cores", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"}, 0),
    ("GOMP_SPINCOUNT=1000, all cores", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"}, 0),
    ("1 thread (OMP_WAIT_POLICY=PASSIVE)", {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}, 1),
]
NICE = {"dedicated": -20, "shared": 0}


def worker(args) -> int:
    """Child: env steps/s (best of its rounds) and policy act() latencies at batch 1; one JSON line."""
    import numpy as np
    import torch

    from world4rl_model.env import WorldModelEnv
    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_model.runtime import fast_bf16
    from world4rl_model.synthetic import make_dataset
    from world4rl_model.world_model import WorldModel, preset_config
    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, PolicyRunner

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="bench_cpu_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # every child process makes one
    ds = make_dataset(Path(tmp) / "ds", episodes_per_task=2, length=8, image_size=64)
    wm = WorldModel(preset_config("default", sampling_steps=args.denoise_steps))
    rm = RewardClassifier(RewardConfig(tasks=list(ds.tasks)))
    env = WorldModelEnv(wm, rm, ds, num_envs=args.batch, horizon=10**9, bf16=fast_bf16(), seed=0)
    env.reset(seed=0)
    actions = torch.rand(args.batch, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    env.step(actions)  # warm-up
    rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            env.step(actions)
        rates.append(args.batch * args.steps / (time.perf_counter() - t0))
    runner = PolicyRunner(GaussianPolicy(PolicyConfig()).eval(), {})
    frames = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    lat = []
    for i in range(args.act_calls + 10):
        t0 = time.perf_counter()
        runner.act(frames)
        if i >= 10:
            lat.append(time.perf_counter() - t0)
    print(json.dumps({"rate": max(rates), "act_ms": [x * 1e3 for x in lat]}))
    return 0


def child(args, changes: dict[str, str | None], threads: int, nice: int) -> dict:
    from world4rl_model.runtime import tcmalloc_env

    drop = ("WORLD4RL_NO_TCMALLOC", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    env = tcmalloc_env({k: v for k, v in os.environ.items() if k not in drop})
    env.pop("OMP_WAIT_POLICY", None)  # tcmalloc_env's PASSIVE: each setting says its own
    env.update({k: v for k, v in changes.items() if v is not None})
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--threads",
        str(threads or args.cores),
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
        "--act-calls",
        str(args.act_calls),
        "--denoise-steps",
        str(args.denoise_steps),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, preexec_fn=lambda: _renice(nice))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _renice(nice: int) -> None:
    """In the child before exec: raise its priority for "dedicated" (needs root or CAP_SYS_NICE; without
    it the child keeps the ambient priority, which the result's `what` says)."""
    with contextlib.suppress(PermissionError):
        os.nice(nice)


def can_renice() -> bool:
    try:
        done = subprocess.run([sys.executable, "-c", "import os; os.nice(-1)"], capture_output=True, check=False)
        return done.returncode == 0
    except OSError:
        return False


@contextlib.contextmanager
def hogs(n: int):
    """One busy loop per core (the processes are ours: ended by their pids afterwards)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure(args, situation: str, log=print) -> list[dict]:
    results: dict[str, list[dict]] = {label: [] for label, _, _ in SETTINGS}
    ctx = hogs(args.cores) if situation == "shared" else contextlib.nullcontext()
    with ctx:
        for r in range(args.repeats):
            for label, changes, threads in SETTINGS:
                res = child(args, changes, threads, NICE[situation])
                results[label].append(res)
                log(
                    f"{situation} {r}: {label}: {res['rate']:.1f} transitions/s, act p50 "
                    f"{statistics.median(res['act_ms']):.2f} ms"
                )
    return rows(results, situation)


def rows(results: dict[str, list[dict]], situation: str) -> list[dict]:
    import numpy as np

    base = statistics.median(r["rate"] for r in results[SETTINGS[0][0]])
    out = []
    for label, res in results.items():
        rates = [r["rate"] for r in res]
        lat = np.concatenate([r["act_ms"] for r in res])
        out.append(
            {
                "situation": situation,
                "setting": label,
                "rate_median": round(statistics.median(rates), 1),
                "rate_best": round(max(rates), 1),
                "rate_spread": round(max(rates) / min(rates), 2),
                "vs_passive": round(statistics.median(rates) / base, 2),
                "act_p50_ms": round(float(np.percentile(lat, 50)), 2),
                "act_p99_ms": round(float(np.percentile(lat, 99)), 2),
            }
        )
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Threads and OpenMP wait policy",
        "",
        result["what"],
        "",
        "| situation | setting | env transitions/s median | best | max/min | vs PASSIVE (median) | "
        "act() p50 ms | act() p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['situation']} | {r['setting']} | {r['rate_median']} | {r['rate_best']} | {r['rate_spread']} | "
        f"{r['vs_passive']}x | {r['act_p50_ms']} | {r['act_p99_ms']} |"
        for r in result["rows"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repeat, 1 round, few calls")
    p.add_argument("--repeats", type=int, default=3, help="child processes per setting and situation")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds of env steps per child (best counts)")
    p.add_argument("--steps", type=int, default=2, help="env steps per round")
    p.add_argument("--act-calls", type=int, default=300, help="timed policy act() calls per child")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--denoise-steps", type=int, default=2)
    p.add_argument("--situations", default="dedicated,shared")
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.repeats, args.rounds, args.steps, args.act_calls = 1, 1, 1, 50
    args.cores = len(os.sched_getaffinity(0))
    t0, load0 = time.time(), [round(x, 2) for x in os.getloadavg()]
    table = [row for s in args.situations.split(",") for row in measure(args, s)]
    load = [round(x, 2) for x in os.getloadavg()]
    if "dedicated" in args.situations and not can_renice():
        print("note: no permission to raise priority: 'dedicated' runs at the ambient priority")
    what = (
        f"Default world model, {args.batch} envs, {args.denoise_steps} Euler steps + classifier, tcmalloc; "
        f"policy act() at batch 1 ({args.act_calls} calls per child); {args.repeats} child processes per setting "
        f"and situation, alternating; {args.cores} cores; load average {load0} at the start, {load} at the end; "
        f"{time.time() - t0:.0f} s; 'dedicated' at nice -20: {can_renice()}."
    )
    result = {"benchmark": "cpu_settings", "what": what, "rows": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_settings.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "cpu_settings.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

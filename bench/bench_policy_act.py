"""Runtime cost of one control cycle's ROS-free core on CPU: policy.act() on the default
64x64, T=4 policy, the end-effector-delta -> joint-target IK step, and the safety filter.

Baseline, measured in the same run: the bare torch forward of the same network (no numpy
conversion, no checks), so the ratio act/forward shows what the runner's API adds, and the
absolute figures can be read against the aims: policy act() under 3 ms, and image -> command p99
under 10 ms (measured figures: docs/results.md#runtime-latency-and-deployment). Writes
bench/results/policy_act.{json,md}.

    .venv/bin/python bench/bench_policy_act.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from world4rl_policy import fr3_kinematics as kin
from world4rl_policy.policy import GaussianPolicy, load_policy, save_policy
from world4rl_policy.safety_filter import SafetyFilter, SafetyParams
from world4rl_spec import FR3_READY_POSE

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_ACT_MS = 3.0


def _time(fn, n: int, warmup: int = 20) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the policy")
    args = parser.parse_args()
    n = 200 if args.quick else 2000

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_policy(Path(tmp) / "policy", GaussianPolicy())
        runner = load_policy(path, num_threads=args.threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(frames)[None]

    def forward():
        with torch.inference_mode():
            runner.module(x)

    q = np.array(FR3_READY_POSE)
    # An episode limit beyond the run, so every call takes the full (armed, passing) path.
    filt = SafetyFilter(SafetyParams(episode_time_limit_s=1e9))
    filt.arm(0.0)
    clock = [0.0]

    def ik():
        kin.action_to_joint_target(q, [0.5, -0.3, 0.2, 1.0])

    target = kin.action_to_joint_target(q, [0.5, -0.3, 0.2, 1.0]).q_target

    def safety():
        clock[0] += 0.1
        res = filt.filter(
            joint_positions=q, target=target, now=clock[0], image_stamp=clock[0], joint_state_stamp=clock[0]
        )
        assert not res.held, res.events

    def cycle():
        a = runner.act(frames)
        t = kin.action_to_joint_target(q, a).q_target
        clock[0] += 0.1
        res = filt.filter(joint_positions=q, target=t, now=clock[0], image_stamp=clock[0], joint_state_stamp=clock[0])
        assert not res.held, res.events

    rows = {}
    for name, fn in (("torch_forward (baseline)", forward), ("policy.act", lambda: runner.act(frames)),
                     ("ik_step", ik), ("safety_filter", safety), ("act+ik+filter", cycle)):  # fmt: skip
        ms = _time(fn, n)
        rows[name] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": n}
    base = rows["torch_forward (baseline)"]["p50_ms"]
    for r in rows.values():
        r["ratio_vs_forward_p50"] = r["p50_ms"] / base
    result = {
        "threads": args.threads,
        "target_act_ms": TARGET_ACT_MS,
        "act_meets_target_p50": rows["policy.act"]["p50_ms"] < TARGET_ACT_MS,
        "params": sum(p.numel() for p in runner.module.parameters()),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy_act.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Policy runtime core on CPU ({args.threads} torch thread(s), {result['params']:,} parameters, "
        f"64x64 x 4 frames), n={n} calls each.",
        "",
        "| step | p50 ms | p99 ms | p50 / torch forward |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | {v['ratio_vs_forward_p50']:.2f} |" for k, v in rows.items()
    ]
    lines += ["", f"policy.act p50 {'<' if result['act_meets_target_p50'] else '>='} {TARGET_ACT_MS} ms target."]
    (RESULTS / "policy_act.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

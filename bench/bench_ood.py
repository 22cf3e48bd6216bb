"""Out-of-distribution benchmark: does the runtime OOD score (world4rl_policy.ood) tell episodes with
a changed scene (a moved camera, a recoloured object) from in-distribution ones? ROC AUC per variation.

Per task: a BC policy (trained here on scripted-expert episodes generated straight from the
simulator, or given with --policy and --dataset) with its OOD statistics (fitted at the end of BC;
a given checkpoint is copied and refitted), then --episodes episodes per condition in the true
simulator on new seeds (the same seeds for every condition): in-distribution, and each scene
variation (world4rl_sim.scene.SceneVariation). Each condition runs twice: driven by the BC policy
(what deployment sees) and by the scripted expert (the states of the training data). A step's
score is what the runtime node publishes (the policy's frame history, as FrameHistory builds
it); an episode's score is the mean over its steps. Reported per variation: ROC AUC of changed
vs in-distribution episodes (the Mann-Whitney rank statistic; also with the episode's max, per
frame, and each of the score's three measures alone), the episodes' scores, the policy's success,
and what the runtime rule (mean over a window of cycles above a threshold) would stop.

    .venv/bin/python bench/bench_ood.py                     # all four sim tasks, a small BC each (~40 min)
    .venv/bin/python bench/bench_ood.py --quick             # reach only, fewer demos and episodes
    .venv/bin/python bench/bench_ood.py --policy drawer=RUN/bc/drawer/best --dataset drawer=RUN/dataset

Writes bench/results/ood.json and ood.md (--out elsewhere). Resumable: data, BC runs and each
task's measurement (RUN/TASK/result.json) are kept under --run and reused (--fresh: measure again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TARGET_AUC = 0.9
# The variations measured (SceneVariation fields). Green is also the colour of the push pad and
# the pick_place platform: there it is a colour the scene already shows, the hard case.
VARIATIONS = {
    "camera_side_5cm": {"camera_shift_m": (0.0, 0.05, 0.0)},
    "camera_side_10cm": {"camera_shift_m": (0.0, 0.10, 0.0)},
    "camera_up_10cm": {"camera_shift_m": (0.0, 0.0, 0.10)},
    "colour_yellow": {"object_rgba": (0.95, 0.85, 0.1, 1.0)},
    "colour_green": {"object_rgba": (0.15, 0.75, 0.2, 1.0)},
}
# The runtime rules tabulated: (threshold, window of cycles); DEFAULT_RULE is the runner's
# (ood.threshold, ood.window in world4rl_policy/config/policy_runner.yaml).
RULES = ((1.25, 3), (1.5, 1), (1.5, 3), (2.0, 3), (3.0, 3))
DEFAULT_RULE = "2/3"
EVAL_SEED = 10_000  # away from the data's seeds (0 ...)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=None, help="sim tasks (default: all four; --quick: reach)")
    p.add_argument("--policy", action="append", default=[], help="TASK=CKPT: an existing BC checkpoint for TASK")
    p.add_argument("--dataset", action="append", default=[], help="TASK=DATASET: the dataset it was trained on")
    p.add_argument("--fresh", action="store_true", help="measure again even where RUN/TASK/result.json exists")
    p.add_argument("--demos", type=int, default=200, help="scripted-expert episodes per task for the BC policy")
    p.add_argument("--bc-steps", type=int, default=2000, help="BC training steps")
    p.add_argument("--episodes", type=int, default=30, help="evaluation episodes per condition and driver")
    p.add_argument("--run", type=Path, default=Path("world4rl_data/bench_ood"), help="data and BC runs (reused)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where ood.json and ood.md go")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="reach only, 60 demos, 800 BC steps, 12 episodes")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks = args.tasks or ["reach"]
        args.demos, args.bc_steps, args.episodes = 60, 800, 12
    args.policy = dict(item.split("=", 1) for item in args.policy)
    args.dataset = dict(item.split("=", 1) for item in args.dataset)
    if set(args.policy) != set(args.dataset):
        p.error("each --policy TASK=CKPT needs its --dataset TASK=DATASET")
    return args


# ---------------------------------------------------------------------------------- the policy


def make_dataset(task: str, root: Path, demos: int) -> Path:
    """Scripted-expert episodes of `task` from the simulator's Python API (noise std 0.05-0.3)."""
    from sim_world_model_data import record_episode

    from world4rl_model.dataset import DatasetWriter
    from world4rl_sim.env import FrankaSimEnv
    from world4rl_spec import CONTROL_RATE_HZ, LEARNING_IMAGE_SIZE

    writer = DatasetWriter(root, image_size=LEARNING_IMAGE_SIZE, control_rate_hz=CONTROL_RATE_HZ)
    rng = np.random.default_rng(len(writer))
    env = FrankaSimEnv(task, image_size=LEARNING_IMAGE_SIZE)
    for seed in range(len(writer), demos):
        ep = record_episode(env, seed, "expert", float(rng.uniform(0.05, 0.3)), rng)
        writer.add_episode(
            ep["frames"],
            ep["actions"],
            task=task,
            success=bool(ep["success"].any()),
            kind="expert",
            success_per_frame=ep["success"],
            joint_positions=ep["joint_positions"],
            seed=seed,
        )
    env.close()
    return root


def prepare_policy(task: str, args) -> tuple[Path, Path, dict]:
    """(checkpoint, dataset, facts): a BC policy with fitted OOD statistics."""
    from world4rl_policy.bc import BCConfig, train_bc
    from world4rl_policy.ood import fit_checkpoint

    root = args.run / task
    if task in args.policy:
        from world4rl_model.checkpoint import resolve_checkpoint

        copy = root / "policy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(resolve_checkpoint(args.policy[task]), copy)
        fit = fit_checkpoint(copy, args.dataset[task])
        return copy, Path(args.dataset[task]), {"source": str(Path(args.policy[task]).absolute()), "ood": fit}
    t0 = time.monotonic()
    dataset = make_dataset(task, root / "dataset", args.demos)
    t_data = time.monotonic() - t0
    cfg = BCConfig(dataset=str(dataset), out=str(root / "bc"), tasks=[task], steps=args.bc_steps, progress=False)
    summary = train_bc(cfg)
    facts = {
        "source": f"BC trained here: {args.demos} expert demos, {args.bc_steps} steps",
        "data_seconds": t_data,
        "bc_seconds": summary["seconds"],
        "bc_val": summary["final_val"],
    }
    return root / "bc" / "best", dataset, facts


# ---------------------------------------------------------------------------------- episodes


def run_episode(env, runner, seed: int, scene, driver: str) -> dict:
    """One episode; per-step scores (combined, and each measure) computed as the runtime does."""
    import torch

    from world4rl_policy import ood

    obs, info = env.reset(seed=seed, options={"scene": scene})
    history = runner.new_history()
    frames, success = [obs["image"]], bool(info["success"])
    runtime_scores = []
    for _ in range(env.horizon):
        history.push(obs["image"])
        action = runner.act(history.array())
        runtime_scores.append(runner.last_ood_score)
        if driver == "expert":
            action = env.expert_action(noise_std=0.1)
        obs, _, _, _, info = env.step(action)
        frames.append(obs["image"])
        success |= bool(info["success"])
    frames = np.stack(frames[:-1])  # the frames the runner scored
    samples = ood.episode_samples(runner.module, frames)
    parts = {k: v.numpy() for k, v in runner.module.ood.parts(torch.from_numpy(samples.features), frames).items()}
    combined = np.maximum.reduce(list(parts.values()))
    np.testing.assert_allclose(combined, runtime_scores, rtol=1e-4)  # the offline score is the runtime's
    return {"score": combined, **parts, "success": success}


def run_condition(task: str, runner, scene, driver: str, episodes: int) -> list[dict]:
    from world4rl_sim.env import FrankaSimEnv

    env = FrankaSimEnv(task, image_size=runner.image_size)
    try:
        return [run_episode(env, runner, EVAL_SEED + k, scene, driver) for k in range(episodes)]
    finally:
        env.close()


def stopped(scores: np.ndarray, threshold: float, window: int) -> int | None:
    """The step at which the runtime rule (OODMonitor) would stop the episode, None if never."""
    from world4rl_policy.ood import OODMonitor

    monitor = OODMonitor(threshold=threshold, window=window, action="hold")
    return next((t for t, s in enumerate(scores) if monitor.update(float(s)) is not None), None)


def compare(changed: list[dict], base: list[dict]) -> dict:
    """AUCs of changed vs in-distribution episodes, and what the runtime rules would stop."""
    from world4rl_policy.ood import PARTS, roc_auc

    def agg(eps, key="score", how=np.mean):
        return [float(how(e[key])) for e in eps]

    return {
        "auc": roc_auc(agg(changed), agg(base)),
        "auc_episode_max": roc_auc(agg(changed, how=np.max), agg(base, how=np.max)),
        "auc_per_frame": roc_auc(
            np.concatenate([e["score"] for e in changed]), np.concatenate([e["score"] for e in base])
        ),
        **{f"auc_{part}_only": roc_auc(agg(changed, part), agg(base, part)) for part in PARTS},
    }


def summarise(eps: list[dict]) -> dict:
    means = np.array([e["score"].mean() for e in eps])
    rules = {}
    for threshold, window in RULES:
        steps = [stopped(e["score"], threshold, window) for e in eps]
        hit = [s for s in steps if s is not None]
        rules[f"{threshold:g}/{window}"] = {
            "stopped": len(hit) / len(eps),
            "median_step": float(np.median(hit)) if hit else None,
        }
    return {
        "episodes": len(eps),
        "step_scores": [np.round(e["score"], 3).tolist() for e in eps],
        "success": float(np.mean([e["success"] for e in eps])),
        "episode_score_median": float(np.median(means)),
        "episode_score_min": float(means.min()),
        "episode_score_max": float(means.max()),
        "frame_score_max": float(max(e["score"].max() for e in eps)),
        "rules": rules,
    }


def measure_task(task: str, args) -> dict:
    import torch

    from world4rl_policy.policy import load_policy

    torch.set_num_threads(args.threads)
    cached = args.run / task / "result.json"
    if cached.exists() and not args.fresh:
        return json.loads(cached.read_text())
    ckpt, dataset, facts = prepare_policy(task, args)
    runner = load_policy(ckpt)
    if runner.ood is None or not runner.ood.matches_weights(runner.module):
        raise RuntimeError(f"{ckpt}: no OOD statistics fitted to its weights")
    out = {"task": task, "checkpoint": str(ckpt), "dataset": str(dataset), **facts, "drivers": {}}
    out["held_out_quantiles"] = runner.module.ood.summary()["held_out_quantiles"]
    out["act_overhead_us"] = act_overhead_us(runner)
    for driver in ("policy", "expert"):
        t0 = time.monotonic()
        base = run_condition(task, runner, None, driver, args.episodes)
        rows = {"in_distribution": summarise(base)}
        for name, scene in VARIATIONS.items():
            changed = run_condition(task, runner, scene, driver, args.episodes)
            rows[name] = {**summarise(changed), **compare(changed, base)}
            print(f"{task} {driver:6s} {name:18s} AUC {rows[name]['auc']:.3f}", flush=True)
        out["drivers"][driver] = {"seconds": time.monotonic() - t0, "conditions": rows}
    out["episodes"] = args.episodes
    out["command"] = " ".join([".venv/bin/python bench/bench_ood.py", *sys.argv[1:]])
    cached.write_text(json.dumps(out, indent=1) + "\n")
    return out


def act_overhead_us(runner, repeats: int = 300) -> dict:
    """Median time of one act() with the statistics and without (the score's cost), microseconds, on
    one torch thread (the runtime node's default), the two measured in turn so that load hits both."""
    import torch

    history = np.random.default_rng(0).integers(0, 255, (runner.frame_history, runner.image_size, runner.image_size, 3))
    history = history.astype(np.uint8)
    buffers = dict(runner.module.ood.named_buffers())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i in range(2 * repeats):
            with_stats = i % 2 == 0
            if with_stats:
                runner.module.ood.set(buffers)
            else:
                runner.module.ood.clear()
            t0 = time.perf_counter()
            runner.act(history)
            times[with_stats].append(time.perf_counter() - t0)
    finally:
        runner.module.ood.set(buffers)
        torch.set_num_threads(threads)
    return {
        "act_with_ood_us": float(np.median(times[True]) * 1e6),
        "act_without_ood_us": float(np.median(times[False]) * 1e6),
    }


# ---------------------------------------------------------------------------------- report


def summary_lines(results: list[dict]) -> list[str]:
    """The lowest AUC of each variation over the tasks, per driver."""
    lines = ["| variation | lowest AUC, policy acts (task) | lowest AUC, expert acts (task) |", "|---|---|---|"]
    for name in VARIATIONS:
        cells = []
        for driver in ("policy", "expert"):
            task, auc = min(
                ((r["task"], r["drivers"][driver]["conditions"][name]["auc"]) for r in results), key=lambda x: x[1]
            )
            cells.append(f"{auc:.3f} ({task})")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def markdown(results: list[dict], args) -> str:
    lines = [
        "# Out-of-distribution score: changed scenes vs in-distribution episodes",
        "",
        f"Per condition {args.episodes} episodes (seeds {EVAL_SEED}-{EVAL_SEED + args.episodes - 1}, the same for "
        "every condition) in the true simulator. AUC: changed vs in-distribution episodes, an episode scored by "
        f"the mean of its per-step scores (what the runner publishes), target >= {TARGET_AUC}. Policy acts: the BC "
        "policy drives (deployment); expert acts: the scripted expert drives (the training data's states). "
        "Features / colours / background only: each of the score's three measures alone; per frame: every "
        "frame counted alone (policy acting). Stopped: the share of episodes the runner's default rule "
        f"({DEFAULT_RULE}: the mean over 3 cycles above 2) would stop. Score unit: 1.0 = the 99th "
        "percentile of held-out training frames.",
        "",
        *summary_lines(results),
    ]
    for r in results:
        lines += [f"## {r['task']}", "", f"`{r.get('command', '')}`", ""]
        quantiles = ", ".join(f"{k}: {v:.2f}" for k, v in r["held_out_quantiles"].items())
        lines += [f"Policy: {r['source']}. Held-out frames' score quantiles: {quantiles}.", ""]
        lines += [
            "| variation | AUC (policy acts) | AUC (expert acts) | features only | colours only | background only | "
            "per frame | "
            f"episode score: in-dist / changed (median) | success: in-dist / changed | stopped ({DEFAULT_RULE}) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        pol, exp = r["drivers"]["policy"]["conditions"], r["drivers"]["expert"]["conditions"]
        base = pol["in_distribution"]
        for name in VARIATIONS:
            c, e = pol[name], exp[name]
            mark = "" if min(c["auc"], e["auc"]) >= TARGET_AUC else " (below target)"
            lines.append(
                f"| {name}{mark} | {c['auc']:.3f} | {e['auc']:.3f} | {c['auc_features_only']:.3f} | "
                f"{c['auc_colours_only']:.3f} | {c['auc_background_only']:.3f} | {c['auc_per_frame']:.3f} | "
                f"{base['episode_score_median']:.2f} / "
                f"{c['episode_score_median']:.2f} | {base['success']:.0%} / {c['success']:.0%} | "
                f"{c['rules'][DEFAULT_RULE]['stopped']:.0%} |"
            )
        rules = ", ".join(f"{k}: {v['stopped']:.0%}" for k, v in base["rules"].items())
        timing = r["act_overhead_us"]
        lines += [
            "",
            f"In-distribution episodes the runtime rule (threshold/window) would stop (policy acting): {rules}; "
            f"highest in-distribution frame score {base['frame_score_max']:.2f}. act() with / without the "
            f"score: {timing['act_with_ood_us']:.0f} / {timing['act_without_ood_us']:.0f} us.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from world4rl_sim.tasks import TASKS

    tasks = args.tasks or list(TASKS)
    t0 = time.monotonic()
    results = [measure_task(task, args) for task in tasks]
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"seconds": time.monotonic() - t0, "args": {k: str(v) for k, v in vars(args).items()}, "tasks": results}
    (args.out / "ood.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / "ood.md").write_text(markdown(results, args) + "\n")
    print((args.out / "ood.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

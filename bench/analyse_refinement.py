"""Why does (or doesn't) refinement in imagination help? Three measurements for one coverage run:

1. World-model error: open-loop dreams of held-out real episodes from their first frame, driven by
   the episodes' own actions; PSNR/SSIM at several horizons against copy-the-first-frame.
2. Reward-classifier error, on real frames (held-out) and on those *dreamed* frames: per frame
   against the real episode's success label at the same step, and per episode ("the classifier
   fires somewhere in the dream" vs "the real episode succeeded").
3. Exploitation: each policy's success rate inside the world model (same start-frame
   distribution, deterministic actions) next to its success rate in the true simulator (from
   RUN/eval/TASK/eval.json). A refined policy whose imagined success rises much more than its
   real success exploits model/classifier errors.

    .venv/bin/python bench/analyse_refinement.py runs/franka --task drawer
    .venv/bin/python bench/analyse_refinement.py runs/metaworld --task plate-slide-v3 --horizon 60

Writes RUN/analysis/TASK.json and RUN/analysis/TASK.md (and a real|dreamed video).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a `world4rl coverage` run directory")
    p.add_argument("--task", required=True)
    p.add_argument("--horizon", type=int, default=None, help="imagined episode length (default: the refine run's)")
    p.add_argument("--episodes", type=int, default=64, help="imagined episodes per policy")
    p.add_argument("--max-dreams", type=int, default=24, help="held-out episodes dreamed open loop")
    p.add_argument("--bf16", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()
    maybe_reexec_with_tcmalloc("cpu")
    os.environ.setdefault("MUJOCO_GL", "osmesa")

    from world4rl_model.data import EpisodeStore
    from world4rl_model.dataset import Dataset
    from world4rl_model.evaluation import horizon_metrics, open_loop_rollouts, side_by_side_video
    from world4rl_model.reward import RewardClassifier
    from world4rl_model.world_model import WorldModel
    from world4rl_policy.policy import load_policy_module

    run = Path(args.run)
    out = run / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    ds = Dataset(run / "dataset")
    wm, wm_config = WorldModel.from_checkpoint(run / "world_model")
    rm, rm_config = RewardClassifier.from_checkpoint(run / "reward")
    refined_dir = run / "refine" / args.task
    bc_dir = run / "bc" / args.task / "best"
    _, refined_config = load_policy_module(refined_dir)
    horizon = args.horizon or refined_config["ppo_config"]["horizon"]
    task_index = ds.task_index(args.task)

    # Held-out episodes of this task (the world model's own validation split).
    d = wm_config.get("dataset", {})
    _, val = ds.split(float(d.get("val_fraction", 0.1)), int(d.get("split_seed", 0)))
    val = ds.select(val, tasks=[args.task])
    result: dict = {"run": str(run.absolute()), "task": args.task, "horizon": horizon, "held_out_episodes": val}

    # 1 + 2. Open-loop dreams from the first frame along the real actions; classifier on both.
    store = EpisodeStore(ds, val)
    length = int(store.lengths.min()) - 1
    dream_h = min(horizon, length)
    rollouts = open_loop_rollouts(
        wm, store, horizon=dream_h, stride=10**6, max_rollouts=args.max_dreams, seed=0, bf16=args.bf16
    )
    horizons = [h for h in (1, 5, 15, 30, dream_h) if h <= dream_h]
    rows = horizon_metrics(rollouts, sorted(set(horizons)))
    result["world_model_open_loop"] = rows
    result.update(_reward_in_dreams(rm, rm_config, ds, rollouts, task_index))
    n = rollouts.real.shape[0]
    video = side_by_side_video(rollouts, out / f"{args.task}_real_vs_dream.mp4", count=min(4, n))

    # 3. Imagined vs real success of BC and refined.
    result["imagined_vs_real"] = _imagined_vs_real(run, args, {"bc": bc_dir, "refined": refined_dir}, horizon)
    (out / f"{args.task}.json").write_text(json.dumps(result, indent=1) + "\n")

    md = _markdown(result, rows, n, video, args.task, run)
    (out / f"{args.task}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _reward_in_dreams(rm, rm_config: dict, ds, rollouts, task_index: int) -> dict:
    """The classifier on the real and on the dreamed frames of the rollouts (per frame and per
    episode), and on the reward run's own held-out episodes of every task."""
    import torch

    from world4rl_model.data import EpisodeStore
    from world4rl_model.reward_report import calibration_report, evaluate_classifier

    result: dict = {}
    n, steps = rollouts.real.shape[:2]
    task_ids = torch.full((n * steps,), task_index, dtype=torch.long)
    with torch.no_grad():
        p_real = rm.probability(rollouts.real.flatten(0, 1), task_ids).view(n, steps)
        p_dream = rm.probability(rollouts.dreamed.flatten(0, 1), task_ids).view(n, steps)
    labels = torch.stack(
        [
            torch.from_numpy(ds.episode(e)["success"][s : s + steps].copy())
            for e, s in zip(rollouts.episodes, rollouts.starts, strict=True)
        ]
    )
    thr = rm.config.threshold
    keep = ("accuracy", "balanced_accuracy", "precision", "recall", "positives", "n")
    result["reward_on_real_frames"] = {k: calibration_report(p_real.flatten(), labels.flatten(), thr)[k] for k in keep}
    result["reward_on_dreamed_frames"] = {
        k: calibration_report(p_dream.flatten(), labels.flatten(), thr)[k] for k in keep
    }
    ep_real = labels.any(1)
    ep_dream = (p_dream >= thr).any(1)
    result["reward_episode_level_in_dreams"] = {
        "episodes": n,
        "real_successful": int(ep_real.sum()),
        "dream_fires_in_successful": int((ep_dream & ep_real).sum()),
        "dream_fires_in_failed": int((ep_dream & ~ep_real).sum()),
        "failed": int((~ep_real).sum()),
    }
    rm_val = rm_config.get("dataset", {}).get("val_episodes") or []
    if rm_val:
        held_out = evaluate_classifier(rm, EpisodeStore(ds, rm_val))["frames"]
        result["reward_held_out_all_tasks"] = {k: held_out[k] for k in keep}
    return result


def _imagined_vs_real(run: Path, args: argparse.Namespace, policies: dict[str, Path], horizon: int) -> dict:
    """Each policy's success rate in imagination next to its rate in the true sim (RUN/eval/TASK/eval.json)."""
    from world4rl_policy.ppo import imagined_success

    evaluation = json.loads((run / "eval" / args.task / "eval.json").read_text())
    real = {p["label"]: p for p in evaluation["policies"]}
    result = {}
    for label, path in policies.items():
        imagined = imagined_success(
            str(path), str(run / "world_model"), str(run / "reward"), str(run / "dataset"), args.task,
            episodes=args.episodes, horizon=horizon, bf16=args.bf16,
        )  # fmt: skip
        result[label] = {
            "imagined_success": imagined["success_rate"],
            "imagined_steps_to_success": imagined["mean_steps_to_success"],
            "real_success": real[label]["success_rate"],
            "real_ci95": real[label]["ci95_wilson"],
            "real_steps_to_success": real[label]["mean_steps_to_success"],
        }
    return result


def _markdown(result: dict, rows, n: int, video, task: str, run: Path) -> list[str]:
    from world4rl_model.evaluation import metrics_markdown

    md = [f"# Refinement analysis: {task} ({run})", ""]
    md.append(metrics_markdown(rows, f"World model open loop from the first frame, {n} held-out episodes"))
    rr, rd, el = (
        result["reward_on_real_frames"],
        result["reward_on_dreamed_frames"],
        result["reward_episode_level_in_dreams"],
    )
    md += [
        "## Reward classifier on the same steps: real frames vs dreamed frames",
        "",
        "| frames | n | success frames | accuracy | balanced acc. | precision | recall |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {r['n']} | {r['positives']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} "
            f"| {r['precision']:.3f} | {r['recall']:.3f} |"
            for name, r in (("real", rr), ("dreamed", rd))
        ),
        "",
        f"Episode level in dreams: fires in {el['dream_fires_in_successful']}/{el['real_successful']} really "
        f"successful episodes, false alarm in {el['dream_fires_in_failed']}/{el['failed']} really failed ones.",
        "",
        "## Imagined vs real success (deterministic actions)",
        "",
        "| policy | imagined success | imagined steps | real success | real 95 % CI | real steps |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in result["imagined_vs_real"].items():
        steps_i = f"{r['imagined_steps_to_success']:.1f}" if r["imagined_steps_to_success"] else "-"
        steps_r = f"{r['real_steps_to_success']:.1f}" if r["real_steps_to_success"] else "-"
        md.append(
            f"| {label} | {r['imagined_success']:.1%} | {steps_i} | {r['real_success']:.1%} "
            f"| {r['real_ci95'][0]:.1%}..{r['real_ci95'][1]:.1%} | {steps_r} |"
        )
    md += ["", f"Video (each row real | dreamed): {video}"]
    return md


if __name__ == "__main__":
    sys.exit(main())

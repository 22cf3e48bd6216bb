"""`world4rl eval world-model|reward`: measure a trained world model or reward classifier on held-out episodes.

world-model: open-loop rollouts at horizons 1, 5, 15 (PSNR, SSIM vs the real frames and vs a
copy-last-frame baseline), the action gain (the same rollouts dreamt with another episode's
actions: do the dreams answer the actions?), a printed table plus JSON/markdown, and a side-by-side
real | dreamed video. reward: accuracy, precision/recall and calibration (reliability table, ECE).
Held-out episodes are the checkpoint's own validation split (recomputed from its split seed and
fraction, which is stable when episodes were appended to the dataset since training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="MODEL", required=True)
    wm = sub.add_parser(
        "world-model",
        help="open-loop PSNR/SSIM at horizons 1/5/15 vs copy-last-frame; action gain; real|dreamed video",
        description=__doc__.splitlines()[0],
    )
    wm.add_argument("checkpoint", help="world-model checkpoint dir or run dir (follows 'latest')")
    wm.add_argument("--dataset", help="dataset (default: the one recorded in the checkpoint)")
    wm.add_argument("--episodes", default="val", help="'val' (held-out split, default), 'all', or 1,2,3")
    wm.add_argument("--horizons", type=_ints, default=[1, 5, 15], help="horizons to report (default 1,5,15)")
    wm.add_argument("--stride", type=int, default=10, help="a rollout starts every STRIDE steps of an episode")
    wm.add_argument("--max-rollouts", type=int, help="cap on the number of rollouts")
    wm.add_argument("--sampling-steps", type=int, help="Euler steps (default: the model's)")
    wm.add_argument("--sigma-min", type=float, help="the last denoising step's sigma (default: the model's)")
    wm.add_argument(
        "--still-levels",
        type=float,
        help="residual models: a sampled change below this many intensity levels is no change (default: the model's)",
    )
    wm.add_argument("--out", help="output dir for metrics JSON/markdown and the video (default: CHECKPOINT/eval)")
    wm.add_argument("--video", type=int, default=4, help="rollouts shown in the video (0: none)")
    wm.add_argument("--gif", action="store_true", help="write a gif instead of an mp4")
    wm.add_argument("--seed", type=int, default=0)
    wm.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    wm.add_argument(
        "--no-action-check",
        dest="action_check",
        action="store_false",
        help="skip the second pass that dreams the same starts with another rollout's actions "
        "(the 'action gain': whether the dreams answer the actions at all)",
    )
    wm.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    wm.set_defaults(_eval="world-model")

    rw = sub.add_parser(
        "reward",
        help="accuracy, precision/recall and calibration of the success classifier on held-out episodes",
        description="Evaluate the reward classifier on held-out episodes.",
    )
    rw.add_argument("checkpoint", help="reward checkpoint dir or run dir")
    rw.add_argument("--dataset", help="dataset (default: the one recorded in the checkpoint)")
    rw.add_argument("--episodes", default="val", help="'val' (default), 'all', or 1,2,3")
    rw.add_argument("--out", help="output dir (default: CHECKPOINT/eval)")
    rw.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    rw.set_defaults(_eval="reward")


def _episodes(spec: str, ds, config: dict) -> list[int]:
    if spec == "all":
        return list(range(len(ds)))
    if spec == "val":
        d = config.get("dataset", {})
        _, val = ds.split(float(d.get("val_fraction", 0.1)), int(d.get("split_seed", 0)))
        tasks = config.get("training", {}).get("tasks")
        return ds.select(val, tasks=tasks)
    return _ints(spec)


def run(args: argparse.Namespace) -> int:
    from world4rl_model.runtime import (
        configure_openmp,
        describe_runtime,
        maybe_reexec_with_tcmalloc,
        record_runtime,
        runtime_facts,
    )

    configure_openmp()
    if args.device == "cpu" or (args.device == "auto" and not Path("/dev/nvidia0").exists()):
        maybe_reexec_with_tcmalloc("cpu")
    import torch

    from world4rl_model.checkpoint import resolve_checkpoint
    from world4rl_model.data import EpisodeStore
    from world4rl_model.dataset import Dataset, manifest_hash

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    ckpt = resolve_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else ckpt / "eval"
    out.mkdir(parents=True, exist_ok=True)
    facts = runtime_facts(device, torch.get_num_threads(), getattr(args, "bf16", False))
    record_runtime(out, "eval", facts)
    print(f"[eval] runtime: {describe_runtime(facts)}", file=sys.stderr, flush=True)
    if args._eval == "world-model":
        from world4rl_model.world_model import WorldModel

        model, config = WorldModel.from_checkpoint(ckpt, device)
    else:
        from world4rl_model.reward import RewardClassifier

        model, config = RewardClassifier.from_checkpoint(ckpt, device)
    ds_path = args.dataset or config.get("dataset", {}).get("path")
    if not ds_path:
        print(f"{ckpt}: no dataset recorded in config.json; pass --dataset", file=sys.stderr)
        return 2
    ds = Dataset(ds_path)
    trained_hash = config.get("dataset", {}).get("manifest_sha256")
    if trained_hash and trained_hash != manifest_hash(ds.root):
        print(f"note: {ds.root} changed since training (manifest hash differs); the split is stable under appends")
    episodes = _episodes(args.episodes, ds, config)
    if not episodes:
        print(f"{ds.root}: no episodes selected by --episodes {args.episodes}", file=sys.stderr)
        return 2
    store = EpisodeStore(ds, episodes, device)

    if args._eval == "reward":
        return _report_reward(model, store, ckpt, ds, episodes, out)
    return _report_world_model(args, model, config, store, ckpt, ds, episodes, out)


def _report_reward(model, store, ckpt: Path, ds, episodes: list[int], out: Path) -> int:
    from world4rl_model.reward_report import evaluate_classifier, report_markdown

    report = evaluate_classifier(model, store)
    # "episodes" already holds the per-episode detection figures: the indices go beside them.
    report.update(checkpoint=str(ckpt), dataset=str(ds.root), eval_episodes=episodes)
    (out / "reward_eval.json").write_text(json.dumps(report, indent=1) + "\n")
    md = report_markdown(report)
    (out / "reward_eval.md").write_text(md)
    print(md)
    print(f"wrote {out / 'reward_eval.json'}")
    return 0


def _report_world_model(args, model, config: dict, store, ckpt: Path, ds, episodes: list[int], out: Path) -> int:
    from world4rl_model.dataset import manifest_hash
    from world4rl_model.evaluation import (
        action_gain,
        action_gain_markdown,
        horizon_metrics,
        metrics_markdown,
        open_loop_rollouts,
        side_by_side_video,
    )

    if args.sigma_min is not None:
        if args.sigma_min <= 0 or args.sigma_min >= model.config.sigma_max:
            print(f"--sigma-min must be in (0, {model.config.sigma_max}), got {args.sigma_min}", file=sys.stderr)
            return 2
        model.config.sigma_min = args.sigma_min
    if args.still_levels is not None:
        if args.still_levels < 0:
            print(f"--still-levels must be >= 0, got {args.still_levels}", file=sys.stderr)
            return 2
        model.config.still_levels = args.still_levels
    rollout_args = {
        "horizon": max(args.horizons),
        "stride": args.stride,
        "steps": args.sampling_steps,
        "seed": args.seed,
        "bf16": args.bf16,
        "max_rollouts": args.max_rollouts,
    }
    rollouts = open_loop_rollouts(model, store, **rollout_args)
    rows = horizon_metrics(rollouts, args.horizons)
    gains = None
    if args.action_check and len(rollouts.real) >= 2:
        swapped = open_loop_rollouts(model, store, swap_actions=True, **rollout_args)
        gains = action_gain(rollouts, swapped, args.horizons)
    sampling_steps = args.sampling_steps or model.config.sampling_steps
    title = (
        f"World model open loop on {len(episodes)} held-out episodes ({len(rollouts.real)} rollouts), "
        f"{sampling_steps} Euler steps, sigma_min {model.config.sigma_min:g}"
        + (f", still_levels {model.config.still_levels:g}" if model.config.target == "residual" else "")
    )
    md = metrics_markdown(rows, title) + ("\n" + action_gain_markdown(gains) if gains else "")
    result = {
        "checkpoint": str(ckpt),
        "step": config.get("step"),
        "dataset": str(ds.root),
        "manifest_sha256": manifest_hash(ds.root),
        "episodes": episodes,
        "rollouts": len(rollouts.real),
        "sampling_steps": sampling_steps,
        "sigma_min": model.config.sigma_min,
        "still_levels": model.config.still_levels if model.config.target == "residual" else None,
        "rows": rows,
        "action_gain": gains,
    }
    (out / "world_model_eval.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "world_model_eval.md").write_text(md)
    print(md)
    if args.video:
        video = side_by_side_video(rollouts, out / ("dream.gif" if args.gif else "dream.mp4"), count=args.video)
        print(f"video (each row: real | dreamed): {video}")
    print(f"wrote {out / 'world_model_eval.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

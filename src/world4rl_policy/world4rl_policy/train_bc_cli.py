"""`world4rl train bc`: behaviour cloning of the Gaussian image policy on a world4rl dataset.

A subcommand module in the style of world4rl_bringup.cli: `add_arguments(parser)` and
`run(args) -> int`; torch is imported only inside `run`. Also runs alone:
`python -m world4rl_policy.train_bc_cli --help` (and `ros2 run world4rl_policy train_bc`).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "behaviour cloning: fit the Gaussian image policy to a dataset's demonstrations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. Writes checkpoints (safetensors + config.json) to OUT/step_*/ with a `latest` pointer, "
        "the best validation checkpoint to OUT/best, and TensorBoard scalars to OUT/tb. Re-running with the "
        "same OUT resumes from OUT/latest."
    )
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--dataset", required=True, help="dataset directory (with manifest.json)")
    parser.add_argument("--out", required=True, help="run directory for checkpoints and TensorBoard logs")
    parser.add_argument(
        "--task", action="append", dest="tasks", metavar="TASK",
        help="train on this task's episodes (repeatable); default: every task in the dataset",
    )  # fmt: skip
    parser.add_argument(
        "--kinds", default="expert,human",
        help="comma-separated episode kinds to imitate (expert, human, policy, random)",
    )  # fmt: skip
    parser.add_argument("--include-failures", action="store_true", help="also imitate unsuccessful episodes")
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps in total (resume counts on)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of episodes held out")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, sampling and augmentation")
    parser.add_argument("--augment-shift", type=int, default=4, help="random-shift augmentation in pixels (0: off)")
    parser.add_argument(
        "--loss", choices=["decoupled", "nll"], default="decoupled",
        help="decoupled: the mean by squared error and the std by NLL around it; nll: the joint Gaussian NLL",
    )  # fmt: skip
    parser.add_argument(
        "--post-success-frames", type=int, default=3,
        help="imitate each episode up to this many frames after its first success frame (-1: whole episodes)",
    )  # fmt: skip
    parser.add_argument("--use-proprio", action="store_true", help="also feed joint positions (dataset must have them)")
    parser.add_argument("--frame-history", type=int, default=4, help="frames stacked as the policy's input (T)")
    parser.add_argument(
        "--log-std-max", type=float, default=0.0,
        help="upper bound of the policy log-std: 0 is World4RL's conservative exploration, 2 the usual",
    )  # fmt: skip
    parser.add_argument("--log-std-min", type=float, default=-5.0)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--val-every", "--eval-every", type=int, default=250, help="validation every N steps")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop and checkpoint after this much training")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the cores)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from world4rl_policy.bc import BCConfig

    return BCConfig(
        dataset=args.dataset,
        out=args.out,
        tasks=args.tasks,
        kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        successful_only=not args.include_failures,
        val_fraction=args.val_fraction,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        augment_shift=args.augment_shift,
        loss=args.loss,
        post_success_frames=None if args.post_success_frames < 0 else args.post_success_frames,
        use_proprio=args.use_proprio,
        frame_history=args.frame_history,
        log_std_max=args.log_std_max,
        log_std_min=args.log_std_min,
        hidden_dim=args.hidden_dim,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        max_minutes=args.max_minutes,
        threads=args.threads,
        resume=not args.no_resume,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from world4rl_policy.bc import train_bc

    try:
        summary = train_bc(config_from_args(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"world4rl train bc: error: {e}", file=sys.stderr)
        return 2
    summary.pop("history", None)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="world4rl train bc")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

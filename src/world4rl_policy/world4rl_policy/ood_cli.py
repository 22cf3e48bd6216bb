"""`world4rl ood`: out-of-distribution statistics of a policy checkpoint (world4rl_policy.ood).

`fit` adds them to a checkpoint (or refits them: after PPO refinement, whose checkpoints carry
the statistics of the BC policy's weights), from the dataset it was trained on: BC's own training
and validation episodes when the checkpoint lists them for that dataset, else the dataset's
episodes of the policy's tasks split by episode. `score` prints each episode's score (mean and
max over its steps, in units of the held-out frames' 99th percentile) as the runtime node
computes it. Also runs alone: `python -m world4rl_policy.ood_cli`.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "out-of-distribution statistics of a policy: fit them into its checkpoint, score a dataset's episodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="ood_command", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="fit the statistics to a checkpoint's weights and write them into it")
    fit.add_argument("--policy", required=True, help="policy checkpoint or run directory (rewritten in place)")
    fit.add_argument("--dataset", required=True, help="the dataset the policy was trained on")
    fit.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="held-out share of the episodes (calibration) when the checkpoint does not list BC's own split",
    )
    score = sub.add_parser("score", help="score episodes of a dataset (mean and max over each episode's steps)")
    score.add_argument("--policy", required=True, help="policy checkpoint or run directory with statistics")
    score.add_argument("--dataset", required=True, help="dataset whose episodes to score")
    score.add_argument("--episodes", type=int, nargs="*", default=None, help="episode indices (default: all)")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, IndexError) as e:  # CheckpointError and DatasetError are ValueErrors
        print(f"world4rl ood {args.ood_command}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from world4rl_policy import ood

    if args.ood_command == "fit":
        print(json.dumps(ood.fit_checkpoint(args.policy, args.dataset, args.val_fraction), indent=2))
        return 0
    from world4rl_model.dataset import Dataset
    from world4rl_policy.policy import load_policy_module

    policy, _ = load_policy_module(args.policy)
    if not policy.ood.fitted():
        raise ValueError(f"{args.policy} has no OOD statistics: world4rl ood fit --policy {args.policy} --dataset ...")
    if not policy.ood.matches_weights(policy):
        print("warning: the statistics were fitted to other weights (refit them: world4rl ood fit)", file=sys.stderr)
    dataset = Dataset(args.dataset)
    episodes = args.episodes if args.episodes is not None else range(len(dataset))
    print(f"{'episode':>7} {'task':<12} {'kind':<8} {'mean':>7} {'max':>7}")
    for i in episodes:
        ep = dataset.episode(i)
        proprio = ep["joint_positions"][:, : policy.config.proprio_dim] if policy.config.proprio_dim else None
        scores = ood.score_frames(policy, ep["frames"], proprio)
        meta = dataset.episodes[i]
        print(f"{i:>7} {meta['task']:<12} {meta['kind']:<8} {scores.mean():>7.2f} {scores.max():>7.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="world4rl ood")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

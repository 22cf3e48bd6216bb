"""`world4rl`: the stack's steps as subcommands of one command, for machines without `ros2`.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Those modules import heavy dependencies (torch, mujoco, rclpy) inside `run`, so that
`world4rl --help` stays fast. The trainers (`train world-model|reward|bc`, `refine`) and `coverage` are different:
their command lines are generated from their config dataclasses (world4rl_model.config.cli), so
they get the rest of the command line and parse it themselves (`main(argv, prog)`); `world4rl --help`
lists them without importing them. A subcommand is listed here only once it works.
"""

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable
from typing import Any

from world4rl_bringup import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("world4rl_bringup.doctor", "check that ROS 2, the messages, DDS, MuJoCo and torch work here"),
    "dataset": (
        "world4rl_bringup.dataset_cli",
        "episode bags -> training dataset; summary; episode as mp4; LeRobot export/import",
    ),
    "collect": ("world4rl_bringup.collect_cli", "record demonstration episodes into rosbag2 bags (sim or real arm)"),
    "demo": ("world4rl_bringup.demo_cli", "the whole loop on the sim robot: collect, train, refine, deploy, report"),
    "deploy": ("world4rl_bringup.deploy_cli", "run a policy on the sim through ROS: success rate with a 95 % CI"),
    "train": ("world4rl_model.train_cli", "train the diffusion world model, the success reward classifier or BC"),
    "refine": ("world4rl_policy.refine_cli", "refine a BC policy with PPO inside the frozen world model"),
    "predict": (
        "world4rl_policy.predict_cli",
        "predict a refine run's real success (BC vs refined); the gate's choice",
    ),
    "security": ("world4rl_bringup.security_cli", "SROS2: the graphs' policy and governance; the robot PC's keystore"),
    "coverage": ("world4rl_bringup.coverage_cli", "data-coverage recipe: demos, BC, rollouts, models, refine, eval"),
    "eval": ("world4rl_model.eval_cli", "evaluate the world model (open-loop PSNR/SSIM, dream video) or the reward"),
    "ood": ("world4rl_policy.ood_cli", "out-of-distribution statistics of a policy: fit them into it, score episodes"),
}

# Leaves attached under a subcommand another package owns.
EXTRA_LEAVES: dict[str, dict[str, tuple[str, str]]] = {
    "eval": {"policy": ("world4rl_bringup.eval_policy_cli", "success of policies in the true sim, Wilson 95 % CI")},
}

# The commands whose parsers are generated from their config dataclasses (the trainers, predict and
# the coverage recipe): each module's `main(argv, prog)` parses the rest of the command line.
TRAINERS = frozenset({"train", "refine", "predict", "coverage"})
# `world4rl train bc`: the learning core (world4rl_model) may not import world4rl_policy, so BC is
# joined to `world4rl train` here.
TRAIN_LEAVES: dict[str, tuple[str, str]] = {
    "bc": ("world4rl_policy.train_bc_cli", "behaviour cloning of the Gaussian image policy (NLL)"),
}


def flag_values(config_cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags named like a field of the dataclass `config_cls` (--eval-seed: eval_seed), by field."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}


def run_alone(
    prog: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
) -> int:
    """A subcommand module on its own (its `main`, `python -m MODULE`): its arguments under `prog`, then run."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="world4rl",
        description=(
            "World4RL for ROS 2: record demonstrations, train a diffusion world model, refine a "
            "behaviour-cloned policy with PPO inside it, and deploy it behind a safety filter."
        ),
    )
    parser.add_argument("--version", action="version", version=f"world4rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name in TRAINERS:  # listed only: main() hands them the rest of the command line
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(module_name)
        # argparse %-formats help strings (not descriptions): "95 % CI" must not break --help.
        sub_parser = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
        for leaf, (leaf_module_name, leaf_help) in EXTRA_LEAVES.get(name, {}).items():
            leaves = next(a for a in sub_parser._actions if isinstance(a, argparse._SubParsersAction))
            leaf_module = importlib.import_module(leaf_module_name)
            leaf_parser = leaves.add_parser(leaf, help=leaf_help.replace("%", "%%"), description=leaf_help)
            leaf_module.add_arguments(leaf_parser)
            leaf_parser.set_defaults(_module=leaf_module)
    return parser


def run_trainer(command: str, argv: list[str]) -> int:
    """`world4rl train ...` or `world4rl refine ...`: the trainer's generated parser takes the rest."""
    module_name, _ = SUBCOMMANDS[command]
    if command == "train" and argv and argv[0] in TRAIN_LEAVES:
        leaf_module_name, _ = TRAIN_LEAVES[argv[0]]
        return int(importlib.import_module(leaf_module_name).main(argv[1:], prog=f"world4rl train {argv[0]}") or 0)
    module = importlib.import_module(module_name)
    if command == "train" and (not argv or argv[0] not in module.MODELS):
        extra = {name: help_text for name, (_, help_text) in TRAIN_LEAVES.items()}
        module.listing_parser("world4rl train", extra, SUBCOMMANDS["train"][1]).parse_args(argv)  # --help, or an error
        return 2
    return int(module.main(argv, prog=f"world4rl {command}") or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINERS:
        return run_trainer(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

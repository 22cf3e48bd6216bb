"""`world4rl`: the stack's steps as subcommands of one command, for machines without `ros2`.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Those modules import heavy dependencies (torch, mujoco, rclpy) inside `run`, so that
`world4rl --help` stays fast. A subcommand is listed here only once it works.
"""

import argparse
import importlib
import sys

from world4rl_bringup import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("world4rl_bringup.doctor", "check that ROS 2, the messages, DDS, MuJoCo and torch work here"),
    "dataset": ("world4rl_bringup.bag_to_dataset", "episode bags -> training dataset; dataset summary; episode as mp4"),
    "collect": ("world4rl_bringup.collect_cli", "record demonstration episodes into rosbag2 bags (sim or real arm)"),
    "demo": ("world4rl_bringup.demo_cli", "the whole loop on the sim robot: collect, train, refine, deploy, report"),
    "deploy": ("world4rl_bringup.deploy_cli", "run a policy on the sim through ROS: success rate with a 95 % CI"),
    "train": ("world4rl_model.train_cli", "train the diffusion world model or the success reward classifier"),
    "refine": ("world4rl_policy.refine_cli", "refine a BC policy with PPO inside the frozen world model"),
    "coverage": ("world4rl_bringup.coverage_cli", "data-coverage recipe: demos, BC, rollouts, models, refine, eval"),
    "eval": ("world4rl_model.eval_cli", "evaluate the world model (open-loop PSNR/SSIM, dream video) or the reward"),
}

# Leaves attached under a subcommand another package owns: the learning core (world4rl_model)
# may not import world4rl_policy, so `world4rl train bc` is joined to `world4rl train` here.
EXTRA_LEAVES: dict[str, dict[str, tuple[str, str]]] = {
    "train": {"bc": ("world4rl_policy.train_bc_cli", "behaviour cloning of the Gaussian image policy (NLL)")},
    "eval": {"policy": ("world4rl_bringup.eval_policy_cli", "success of policies in the true sim, Wilson 95 % CI")},
}


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

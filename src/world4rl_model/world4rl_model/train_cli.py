"""`world4rl train world-model|reward|distill`: train the world model, the success classifier or a 1-step student.

Also the `train` executable of world4rl_model (`ros2 run world4rl_model train world-model ...`).
Both run unchanged under `torchrun --nproc_per_node N -m world4rl_model.train_cli ...` (DDP, gloo
on CPU). Each command line is generated from its config dataclass (WorldModelTrainConfig,
RewardTrainConfig, DistillConfig) by world4rl_model.config.cli: one flag per setting, with the help and default
declared there; `--preset FILE.yaml` starts from a preset. On CPU the command re-executes itself
with tcmalloc preloaded when available.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# model -> (module, config class, training function, one-line help, description)
MODELS: dict[str, tuple[str, str, str, str, str]] = {
    "world-model": (
        "world4rl_model.training",
        "WorldModelTrainConfig",
        "train_world_model",
        "the action-conditioned diffusion world model (EDM U-Net, frame history, two-hot actions)",
        "Train the diffusion world model on a dataset; checkpoints are safetensors + config.json.",
    ),
    "reward": (
        "world4rl_model.reward_training",
        "RewardTrainConfig",
        "train_reward",
        "the success classifier that rewards imagined rollouts",
        "Train the multi-task success classifier (BCE) and write a calibration/accuracy report.",
    ),
    "distill": (
        "world4rl_model.distillation",
        "DistillConfig",
        "train_distill",
        "a one-step (smaller) world model distilled from a trained one (fewer network evaluations per dream)",
        "Distill a world-model TEACHER into a student that samples in one network evaluation: it learns to map "
        "the teacher's starting noise, context frames and actions to the teacher's multi-step sample. The "
        "student is an ordinary world-model checkpoint (sampling_steps 1, 'distilled_from' the teacher) that "
        "WorldModelEnv, PPO and `world4rl eval world-model` use unchanged; it trains on the teacher's dataset "
        "and held-out split unless told otherwise.",
    ),
}
EPILOG = (
    "examples:\n"
    "  world4rl train world-model data/ds --out runs/wm --max-minutes 30\n"
    "  world4rl train reward data/ds --out runs/reward --dreams-from runs/wm\n"
    "  world4rl train distill runs/wm --out runs/wm_1step --size small --channels 32 64 --teacher-steps 2 --bf16\n"
    "  torchrun --nproc_per_node 2 -m world4rl_model.train_cli world-model data/ds --out runs/wm\n"
    "resume: run the same command again; it continues from RUN/latest.\n"
    "MODEL --help lists every setting with its default."
)


def listing_parser(prog: str, extra: dict[str, str] | None = None, description: str = "") -> argparse.ArgumentParser:
    """`train --help`: the models (and `extra` name -> help leaves another package adds), no settings."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or __doc__.splitlines()[0].split(": ", 1)[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", metavar="MODEL", required=True)
    for name, (*_, help_text, _description) in MODELS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, help_text in (extra or {}).items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _device_is_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not Path("/dev/nvidia0").exists())


def main(argv: Sequence[str] | None = None, prog: str = "train") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODELS:
        listing_parser(prog).parse_args(argv)  # --help, or a usage error naming the models
        return 2
    what, rest = argv[0], argv[1:]
    from world4rl_model.config import cli
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    module_name, config_name, train_name, _, description = MODELS[what]
    module = importlib.import_module(module_name)
    cfg = cli(getattr(module, config_name), rest, prog=f"{prog} {what}", description=description)
    if _device_is_cpu(cfg.device):
        maybe_reexec_with_tcmalloc("cpu")  # the same command line, with tcmalloc preloaded
    out = getattr(module, train_name)(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {out}/latest -> {(out / 'latest').read_text().strip() if (out / 'latest').exists() else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

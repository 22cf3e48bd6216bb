"""`world4rl train world-model|reward`: train the diffusion world model or the success classifier.

Also the `train` executable of world4rl_model (`ros2 run world4rl_model train world-model ...`).
Both run unchanged under `torchrun --nproc_per_node N -m world4rl_model.train_cli ...` (DDP, gloo
on CPU). On CPU the command re-executes itself with tcmalloc preloaded when available.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _csv(value: str) -> list[str]:
    return [v for v in (s.strip() for s in value.split(",")) if v]


def _ints(value: str) -> list[int]:
    return [int(v) for v in _csv(value)]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset directory (with manifest.json)")
    p.add_argument("--out", required=True, help="run directory: checkpoints step_*/, 'latest' pointer, tb/ logs")
    p.add_argument("--steps", type=int, help="total optimiser steps (a resumed run continues up to this)")
    p.add_argument("--max-minutes", type=float, help="stop and checkpoint after this much training time")
    p.add_argument("--batch-size", type=int, help="batch size per process")
    p.add_argument("--lr", type=float, help="learning rate (AdamW)")
    p.add_argument("--val-fraction", type=float, help="fraction of episodes held out (deterministic, by episode)")
    p.add_argument("--split-seed", type=int, help="seed of the train/val split")
    p.add_argument("--val-every", type=int, help="validate every N steps")
    p.add_argument("--checkpoint-every", "--ckpt-every", type=int, help="checkpoint every N steps")
    p.add_argument("--tasks", type=_csv, help="comma-separated task names to train on (default: all)")
    p.add_argument("--seed", type=int, help="random seed (model init and batches)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AMX/AVX512-BF16, or CUDA)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / local processes)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if --out has checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  world4rl train world-model data/ds --out runs/wm --max-minutes 30\n"
        "  world4rl train reward data/ds --out runs/reward\n"
        "  torchrun --nproc_per_node 2 -m world4rl_model.train_cli world-model data/ds --out runs/wm\n"
        "resume: run the same command again; it continues from RUN/latest."
    )
    sub = parser.add_subparsers(dest="what", metavar="MODEL", required=True)
    wm = sub.add_parser(
        "world-model",
        help="the action-conditioned diffusion world model (EDM U-Net, frame history, two-hot actions)",
        description="Train the diffusion world model on a dataset; checkpoints are safetensors + config.json.",
    )
    _common(wm)
    wm.add_argument("--size", choices=["tiny", "small", "default", "medium", "diamond"], help="model size preset")
    wm.add_argument("--channels", type=_ints, help="override the U-Net widths per level, e.g. 32,64,64")
    wm.add_argument("--space-to-depth", type=int, help="override the pixel-unshuffle factor (1, 2, 4)")
    wm.add_argument("--context-frames", type=int, help="frames (and actions) of history, T (default 4)")
    wm.add_argument("--sampling-steps", type=int, help="Euler denoising steps when sampling (default 3)")
    wm.add_argument(
        "--rollout-steps", type=int, help="train on L-step sequences feeding back own predictions (DIAMOND; default 1)"
    )
    wm.add_argument("--no-quantize", action="store_true", help="do not round dreamed frames to 8 bits")
    wm.add_argument("--kinds", type=_csv, help="episode kinds to train on, e.g. expert,policy,random (default all)")
    wm.add_argument("--no-channels-last", action="store_true", help="keep NCHW activations on CPU")
    wm.set_defaults(_train="world-model")

    rw = sub.add_parser(
        "reward",
        help="the success classifier that rewards imagined rollouts",
        description="Train the multi-task success classifier (BCE) and write a calibration/accuracy report.",
    )
    _common(rw)
    rw.add_argument(
        "--negatives", choices=["all", "non-expert"], help="failure frames from all episodes or non-expert ones"
    )
    rw.add_argument("--balance", type=float, help="fraction of success frames per batch (0: natural frequency)")
    rw.add_argument("--channels", type=_ints, help="conv widths, e.g. 32,64,64,128")
    rw.add_argument(
        "--dreams-from", metavar="WORLD_MODEL",
        help="also train on this world model's open-loop dreams of the training episodes, labelled with what "
        "really happened (the classifier then judges dreams as PPO will show them)",
    )  # fmt: skip
    rw.add_argument("--dream-fraction", type=float, help="share of each batch that is dreamed (default 0.5)")
    rw.add_argument("--dream-horizon", type=int, help="open-loop steps per dream (default 10)")
    rw.set_defaults(_train="reward")


def _device_is_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not Path("/dev/nvidia0").exists())


def _overrides(args: argparse.Namespace, names: dict[str, str]) -> dict:
    return {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg, None) is not None}


def run(args: argparse.Namespace) -> int:
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()
    if _device_is_cpu(args.device):
        maybe_reexec_with_tcmalloc("cpu")
    common = {
        "steps": "steps",
        "max_minutes": "max_minutes",
        "batch_size": "batch_size",
        "lr": "lr",
        "val_fraction": "val_fraction",
        "split_seed": "split_seed",
        "val_every": "val_every",
        "checkpoint_every": "checkpoint_every",
        "tasks": "tasks",
        "seed": "seed",
        "threads": "threads",
    }
    base = {"dataset": args.dataset, "out": args.out, "device": args.device, "bf16": args.bf16}
    base.update(resume=not args.no_resume, progress=not args.quiet)
    if args._train == "world-model":
        from world4rl_model.training import WorldModelTrainConfig, train_world_model

        extra = {
            "size": "size",
            "context_frames": "context_frames",
            "sampling_steps": "sampling_steps",
            "rollout_steps": "rollout_steps",
            "kinds": "kinds",
        }
        unet = {}
        if args.channels is not None:
            unet["channels"] = args.channels
        if args.space_to_depth is not None:
            unet["space_to_depth"] = args.space_to_depth
        cfg = WorldModelTrainConfig(
            **base,
            **_overrides(args, {**common, **extra}),
            quantize=not args.no_quantize,
            channels_last=not args.no_channels_last,
            model_overrides={"unet": unet} if unet else {},
        )
        out = train_world_model(cfg)
    else:
        from world4rl_model.reward import RewardTrainConfig, train_reward

        names = {
            **common,
            "negatives": "negatives",
            "balance": "balance",
            "channels": "channels",
            "dreams_from": "dream_world_model",
            "dream_fraction": "dream_fraction",
            "dream_horizon": "dream_horizon",
        }
        cfg = RewardTrainConfig(**base, **_overrides(args, names))
        out = train_reward(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {out}/latest -> {(out / 'latest').read_text().strip() if (out / 'latest').exists() else '?'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

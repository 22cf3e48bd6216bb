"""`world4rl refine`: PPO in imagination, from a BC checkpoint, inside a frozen world model.

A subcommand module in the style of world4rl_bringup.cli (`add_arguments(parser)`, `run(args)`);
torch is imported only inside `run`. Also `python -m world4rl_policy.refine_cli` and
`ros2 run world4rl_policy refine`.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "refine a BC policy with PPO inside the frozen world model, rewarded by the success classifier"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. Imagined episodes start from real frames of DATASET; the world model dreams the next "
        "frames, the classifier decides success (reward 1, episode ends), episodes are truncated at "
        "--horizon. Checkpoints (safetensors + config.json, loadable by the policy runner) go to "
        "OUT/step_*/ with a `latest` pointer, TensorBoard scalars to OUT/tb, a video of imagined episodes "
        "to OUT/imagined.mp4. Re-running with the same OUT resumes."
    )
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = (
        "example: world4rl refine --policy runs/bc/best --world-model runs/wm --reward runs/reward "
        "--dataset data/ds --task push --out runs/refine --total-steps 50000"
    )
    g = parser.add_argument_group("inputs")
    g.add_argument("--policy", required=True, help="BC policy checkpoint (or run directory) to start from")
    g.add_argument("--world-model", required=True, help="world-model checkpoint or run directory")
    g.add_argument("--reward", required=True, help="reward-classifier checkpoint or run directory")
    g.add_argument("--dataset", required=True, help="dataset whose real frames start the imagined episodes")
    g.add_argument("--out", required=True, help="run directory for checkpoints, TensorBoard and the video")
    g.add_argument("--task", default=None, help="task to refine (default: the policy's, if it has one)")
    r = parser.add_argument_group("imagined rollouts")
    r.add_argument("--num-envs", type=int, default=32, help="imagined episodes run in parallel")
    r.add_argument("--num-steps", type=int, default=16, help="imagined steps per env per PPO update")
    r.add_argument("--horizon", type=int, default=50, help="imagined episode length H (truncation)")
    r.add_argument("--total-steps", type=int, default=50_000, help="imagined transitions in total")
    r.add_argument("--start", choices=["first", "any"], default="first", help="start at episodes' first or any frame")
    r.add_argument("--start-kinds", type=_csv, default=None, help="episode kinds to start from, e.g. expert,policy")
    r.add_argument("--sampling-steps", type=int, default=None, help="world-model Euler steps (default: its own)")
    r.add_argument("--reward-mode", choices=["binary", "probability"], default="binary")
    r.add_argument("--reward-threshold", type=float, default=None, help="default: the classifier's threshold")
    r.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the world model and classifier")
    p = parser.add_argument_group("PPO")
    p.add_argument("--lr", type=float, default=3e-5, help="actor/encoder learning rate")
    p.add_argument("--critic-lr", type=float, default=3e-4, help="critic learning rate")
    p.add_argument("--anneal-lr", action="store_true", help="decay learning rates linearly to 0")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2, help="PPO ratio clip epsilon")
    p.add_argument("--clip-vloss", action="store_true", help="clip the value loss too (CleanRL's option)")
    p.add_argument("--no-norm-adv", action="store_true", help="do not normalise advantages per mini-batch")
    p.add_argument("--ent-coef", type=float, default=0.0, help="entropy bonus weight")
    p.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--target-kl", type=float, default=0.05, help="stop an update's epochs past this KL (<=0: never)")
    p.add_argument("--value-warmup-updates", type=int, default=3, help="first updates train the critic only")
    p.add_argument("--critic-shares-encoder", action="store_true", help="let the value loss train the encoder too")
    p.add_argument("--kl-bc-coef", type=float, default=0.0, help="weight of KL(pi || pi_BC) on imagined states")
    p.add_argument("--bc-coef", type=float, default=0.0, help="weight of the demonstrations' NLL (BC regulariser)")
    p.add_argument(
        "--log-std-max", type=float, default=0.0,
        help="log-std upper bound: 0 is World4RL's conservative exploration (std <= 1), 2 the usual",
    )  # fmt: skip
    p.add_argument("--log-std-min", type=float, default=None, help="log-std lower bound (default: the policy's)")
    x = parser.add_argument_group("run")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--device", default="cpu", help="cpu or cuda")
    x.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the cores)")
    x.add_argument("--max-minutes", type=float, default=None, help="stop and checkpoint after this much training")
    x.add_argument("--checkpoint-every", type=int, default=10, help="checkpoint every N updates")
    x.add_argument("--video-episodes", type=int, default=4, help="imagined episodes in OUT/imagined.mp4 (0: none)")
    x.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from world4rl_policy.ppo import PPOConfig

    return PPOConfig(
        policy=args.policy,
        world_model=args.world_model,
        reward=args.reward,
        dataset=args.dataset,
        out=args.out,
        task=args.task,
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        horizon=args.horizon,
        total_steps=args.total_steps,
        start=args.start,
        start_kinds=args.start_kinds,
        sampling_steps=args.sampling_steps,
        reward_mode=args.reward_mode,
        reward_threshold=args.reward_threshold,
        bf16=args.bf16,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        lr=args.lr,
        critic_lr=args.critic_lr,
        anneal_lr=args.anneal_lr,
        update_epochs=args.update_epochs,
        num_minibatches=args.num_minibatches,
        clip_coef=args.clip_coef,
        clip_vloss=args.clip_vloss,
        norm_adv=not args.no_norm_adv,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        target_kl=args.target_kl if args.target_kl and args.target_kl > 0 else None,
        value_warmup_updates=args.value_warmup_updates,
        critic_detach=not args.critic_shares_encoder,
        kl_bc_coef=args.kl_bc_coef,
        bc_coef=args.bc_coef,
        log_std_max=args.log_std_max,
        log_std_min=args.log_std_min,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every,
        video_episodes=args.video_episodes,
        resume=not args.no_resume,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from world4rl_model.checkpoint import CheckpointError
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    maybe_reexec_with_tcmalloc(args.device)
    from world4rl_policy.ppo import refine

    try:
        summary = refine(config_from_args(args))
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"world4rl refine: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="world4rl refine")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

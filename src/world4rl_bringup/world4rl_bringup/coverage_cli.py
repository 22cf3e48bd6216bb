"""`world4rl coverage`: World4RL's data-coverage recipe and refinement as one resumable command.

Stages (world4rl_bringup.stages: each skipped when RUN/stages.json says it finished with the
same settings; a changed setting, or a rerun of a stage it builds on, runs it again and says why;
`--redo STAGE` runs it again; a training stage's earlier output is moved to RUN/superseded/):

1. expert      scripted-expert demonstrations per task (noise configurable), straight from the
               simulator's Python API into RUN/dataset (kind "expert", per-frame success);
2. bc          a behaviour-cloning policy per task on its successful expert episodes -> RUN/bc/TASK;
3. rollouts    the BC policy's own rollouts (sampled actions, kind "policy") and random-walk
               rollouts (kind "random") per task, to widen the world model's coverage;
4. world-model the diffusion world model on the whole mixture (all tasks) -> RUN/world_model;
5. reward      the success classifier on the mixture and on the world model's dreams of it -> RUN/reward;
6. refine      PPO in imagination per task, from its BC policy -> RUN/refine/TASK;
7. eval        BC vs refined in the true simulator on the same seeds -> RUN/eval/TASK/eval.json.

Counts are per task; the paper's Meta-World recipe is 50 expert + 150 policy + 30 random
trajectories of 50 steps. Data stages top up what is missing (episode by episode, so an
interrupted stage continues where it stopped); training stages resume from their run's latest
checkpoint when interrupted, and start afresh when their settings or inputs changed. Any
setting of a stage's trainer can be overridden with --bc-set / --wm-set / --reward-set /
--refine-set KEY=VALUE (field names of BCConfig, WorldModelTrainConfig, RewardTrainConfig,
PPOConfig); --refine-set TASK:KEY=VALUE sets one task's PPO (e.g. a longer imagined horizon for a
task whose expert needs more steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from world4rl_bringup.stages import Stages

STAGES = ("expert", "bc", "rollouts", "world-model", "reward", "refine", "eval")
HELP = "data-coverage recipe: expert demos -> BC -> BC/random rollouts -> world model + reward -> refine -> eval"

# Seed ranges of the episodes each stage draws (per task), kept apart from evaluation seeds.
EXPERT_SEED0, POLICY_SEED0, RANDOM_SEED0 = 0, 10_000, 20_000
EVAL_SEED0 = 1000


@dataclass
class CoverageConfig:
    run: str
    tasks: list[str]
    suite: str = "franka"
    image_size: int = 64
    horizon: int | None = None  # episode length in the sim (None: the task's; Meta-World 60)
    expert_episodes: int = 50
    expert_noise: float = 0.3
    policy_episodes: int = 150
    policy_sampled: bool = True  # BC rollouts sample from the Gaussian (wider coverage) or use the mean
    random_episodes: int = 30
    random_smooth: float = 0.8
    eval_episodes: int = 50
    eval_seed: int = EVAL_SEED0
    eval_videos: int = 3
    threads: int | None = None
    progress: bool = True
    bc: dict[str, Any] = field(default_factory=dict)  # BCConfig overrides
    world_model: dict[str, Any] = field(default_factory=dict)  # WorldModelTrainConfig overrides
    reward: dict[str, Any] = field(default_factory=dict)  # RewardTrainConfig overrides
    refine: dict[str, Any] = field(default_factory=dict)  # PPOConfig overrides
    # PPOConfig overrides for one task, on top of `refine` (tasks differ in how long success takes)
    refine_by_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from world4rl_spec import check_task_name

        if not self.tasks:
            raise ValueError("at least one --task")
        for task in self.tasks:  # each becomes RUN/bc/TASK, RUN/refine/TASK and RUN/eval/TASK
            check_task_name(task, "--task")
        for task in self.refine_by_task:
            if task not in self.tasks:
                tasks = ", ".join(self.tasks)
                raise ValueError(f"--refine-set {task}:...: {task!r} is not one of this run's tasks ({tasks})")
        for name, n, seed0 in (
            ("expert", self.expert_episodes, EXPERT_SEED0),
            ("policy", self.policy_episodes, POLICY_SEED0),
            ("random", self.random_episodes, RANDOM_SEED0),
        ):
            if n < 0:
                raise ValueError(f"{name} episodes must be >= 0")
            if seed0 < self.eval_seed + self.eval_episodes and self.eval_seed < seed0 + n:
                raise ValueError(
                    f"evaluation seeds {self.eval_seed}..{self.eval_seed + self.eval_episodes - 1} overlap the "
                    f"{name} episodes' seeds {seed0}..{seed0 + n - 1}: choose another --eval-seed"
                )

    @property
    def root(self) -> Path:
        return Path(self.run)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"


# ---------------------------------------------------------------------------------- stages


def stage_keys(cfg: CoverageConfig) -> list[str]:
    """Book keys in order: per-task stages are 'bc/TASK' etc."""
    keys = []
    for stage in STAGES:
        if stage in ("world-model", "reward"):
            keys.append(stage)
        else:
            keys += [f"{stage}/{t}" for t in cfg.tasks]
    return keys


def parse_task_overrides(pairs: list[str] | None, config_cls) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Like parse_overrides, but TASK:KEY=VALUE applies to one task: -> (for all tasks, {task: for it})."""
    shared, by_task = [], {}
    for pair in pairs or []:
        if ":" in pair.partition("=")[0]:  # a colon in the value (e.g. a path) is not a task prefix
            task, rest = pair.split(":", 1)
            by_task.setdefault(task.strip(), []).append(rest)
        else:
            shared.append(pair)
    return parse_overrides(shared, config_cls), {t: parse_overrides(p, config_cls) for t, p in by_task.items()}


def parse_overrides(pairs: list[str] | None, config_cls) -> dict[str, Any]:
    """KEY=VALUE strings -> a dict of a dataclass's fields, values parsed as JSON where they parse."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"{pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise ValueError(f"{config_cls.__name__} has no setting {key!r}; known: {', '.join(sorted(fields))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------- stages


def _existing(dataset_root: Path, task: str, kind: str) -> set[int]:
    from world4rl_model.dataset import Dataset

    if not (dataset_root / "manifest.json").exists():
        return set()
    ds = Dataset(dataset_root)
    return {int(e["seed"]) for e in ds.episodes if e["task"] == task and e["kind"] == kind and e["seed"] is not None}


def _collect(cfg: CoverageConfig, task: str, kind: str, actor, seed0: int, count: int) -> dict[str, Any]:
    """Top the dataset up to `count` episodes of (task, kind) with seeds seed0.. (skipping recorded ones)."""
    from world4rl_bringup.sim_rollouts import record_episodes
    from world4rl_model.dataset import DatasetWriter
    from world4rl_spec import CONTROL_RATE_HZ

    have = _existing(cfg.dataset, task, kind)
    seeds = [s for s in range(seed0, seed0 + count) if s not in have]
    if not seeds:
        return {"added": 0, "solved": None}
    writer = DatasetWriter(cfg.dataset, image_size=cfg.image_size, control_rate_hz=CONTROL_RATE_HZ)
    eps = record_episodes(
        writer, cfg.suite, task, kind, actor, seeds, cfg.image_size, horizon=cfg.horizon, progress=cfg.progress
    )
    return {"added": len(eps), "solved": sum(e.solved for e in eps) / len(eps)}


def _bc_config(cfg: CoverageConfig, task: str):
    from world4rl_policy.bc import BCConfig

    base = {"dataset": str(cfg.dataset), "out": str(cfg.root / "bc" / task), "tasks": [task], "progress": cfg.progress}
    if cfg.threads:
        base["threads"] = cfg.threads
    return BCConfig(**{**base, **cfg.bc})


def _bc_checkpoint(cfg: CoverageConfig, task: str) -> Path:
    run = cfg.root / "bc" / task
    return run / "best" if (run / "best").exists() else run


def _wm_config(cfg: CoverageConfig):
    from world4rl_model.training import WorldModelTrainConfig

    base = {"dataset": str(cfg.dataset), "out": str(cfg.root / "world_model"), "progress": cfg.progress}
    if cfg.threads:
        base["threads"] = cfg.threads
    return WorldModelTrainConfig(**{**base, **cfg.world_model})


def _reward_config(cfg: CoverageConfig):
    from world4rl_model.reward import RewardTrainConfig

    base = {
        "dataset": str(cfg.dataset),
        "out": str(cfg.root / "reward"),
        "progress": cfg.progress,
        # The world model is trained first: the classifier learns on its dreams too (reward_set to turn off).
        "dream_world_model": str(cfg.root / "world_model"),
    }
    if cfg.threads:
        base["threads"] = cfg.threads
    return RewardTrainConfig(**{**base, **cfg.reward})


def _refine_config(cfg: CoverageConfig, task: str):
    from world4rl_bringup.sim_rollouts import make_env
    from world4rl_policy.ppo import PPOConfig

    env = make_env(cfg.suite, task, cfg.image_size, horizon=cfg.horizon)
    horizon = env.horizon
    env.close()
    base = {
        "policy": str(_bc_checkpoint(cfg, task)),
        "world_model": str(cfg.root / "world_model"),
        "reward": str(cfg.root / "reward"),
        "dataset": str(cfg.dataset),
        "out": str(cfg.root / "refine" / task),
        "task": task,
        "horizon": horizon,
        "progress": cfg.progress,
    }
    if cfg.threads:
        base["threads"] = cfg.threads
    return PPOConfig(**{**base, **cfg.refine, **cfg.refine_by_task.get(task, {})})


def _expert_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_bringup.sim_rollouts import ExpertActor

    return _collect(cfg, task, "expert", ExpertActor(cfg.expert_noise), EXPERT_SEED0, cfg.expert_episodes)


def _bc_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_policy.bc import train_bc

    summary = train_bc(_bc_config(cfg, task))
    return {"best_val_nll": summary["best_val_nll"], "train_episodes": summary["train_episodes"]}


def _rollouts_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_bringup.sim_rollouts import PolicyActor, RandomWalkActor

    policy = PolicyActor(_bc_checkpoint(cfg, task), deterministic=not cfg.policy_sampled, threads=cfg.threads)
    p = _collect(cfg, task, "policy", policy, POLICY_SEED0, cfg.policy_episodes)
    r = _collect(cfg, task, "random", RandomWalkActor(cfg.random_smooth), RANDOM_SEED0, cfg.random_episodes)
    return {"policy": p, "random": r}


def _world_model_stage(cfg: CoverageConfig) -> None:
    from world4rl_model.training import train_world_model

    train_world_model(_wm_config(cfg))


def _reward_stage(cfg: CoverageConfig) -> None:
    from world4rl_model.reward import train_reward

    train_reward(_reward_config(cfg))


def _refine_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_policy.ppo import refine as ppo_refine

    last = ppo_refine(_refine_config(cfg, task)).get("last", {})
    return {k: last.get(k) for k in ("episode_success", "episode_return", "kl_bc", "std")}


def _eval_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_bringup.eval_policy_cli import evaluate as eval_policies

    result = eval_policies(
        [str(_bc_checkpoint(cfg, task)), str(cfg.root / "refine" / task)],
        task,
        suite=cfg.suite,
        episodes=cfg.eval_episodes,
        seed=cfg.eval_seed,
        horizon=cfg.horizon,
        labels=["bc", "refined"],
        videos=cfg.eval_videos,
        out=cfg.root / "eval" / task,
        threads=cfg.threads or 1,
        progress=cfg.progress,
    )
    bc_r, ref_r = result["policies"]
    return {
        "bc": [bc_r["successes"], bc_r["episodes"], bc_r["ci95_wilson"]],
        "refined": [ref_r["successes"], ref_r["episodes"], ref_r["ci95_wilson"]],
        "vs_bc": ref_r["vs_baseline"],
    }


def run_pipeline(cfg: CoverageConfig, redo: list[str] | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Run the stages that are not done with these settings (in order); returns RUN/stages.json's content.
    Data stages top up the shared dataset (they are not redone when the BC policy changes); each
    training stage's output is built afresh when its settings or a stage it builds on changed."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / "coverage.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    for name in redo or []:
        if not any(k == name or k.split("/")[0] == name for k in stage_keys(cfg)):
            raise ValueError(f"--redo {name}: no such stage; stages: {', '.join(stage_keys(cfg))}")
    stages = Stages(cfg.root, redo=redo or (), only=only, log=lambda text: print(f"[coverage] {text}", flush=True))
    stage, root, tasks = stages.run, cfg.root, cfg.tasks
    data_stages = [f"{kind}/{t}" for kind in ("expert", "rollouts") for t in tasks]
    common = {"suite": cfg.suite, "image_size": cfg.image_size, "horizon": cfg.horizon}
    for t in tasks:
        stage(
            f"expert/{t}",
            {**common, "n": cfg.expert_episodes, "noise": cfg.expert_noise},
            partial(_expert_stage, cfg, t),
        )
    for t in tasks:
        bc_settings = _bc_config(cfg, t).to_dict()
        stage(f"bc/{t}", bc_settings, partial(_bc_stage, cfg, t), after=[f"expert/{t}"], fresh=[root / "bc" / t])
    rollout_settings = {**common, "policy": cfg.policy_episodes, "sampled": cfg.policy_sampled}
    for t in tasks:
        stage(f"rollouts/{t}", {**rollout_settings, "random": cfg.random_episodes}, partial(_rollouts_stage, cfg, t))
    wm_settings, reward_settings = dataclasses.asdict(_wm_config(cfg)), dataclasses.asdict(_reward_config(cfg))
    stage("world-model", wm_settings, partial(_world_model_stage, cfg), after=data_stages, fresh=[root / "world_model"])
    after_reward = [*data_stages, "world-model"]
    stage("reward", reward_settings, partial(_reward_stage, cfg), after=after_reward, fresh=[root / "reward"])
    for t in tasks:
        after = [f"bc/{t}", "world-model", "reward"]
        settings = _refine_config(cfg, t).to_dict()
        stage(f"refine/{t}", settings, partial(_refine_stage, cfg, t), after=after, fresh=[root / "refine" / t])
    eval_settings = {**common, "episodes": cfg.eval_episodes, "seed": cfg.eval_seed}
    for t in tasks:
        after = [f"bc/{t}", f"refine/{t}"]
        stage(f"eval/{t}", eval_settings, partial(_eval_stage, cfg, t), after=after, fresh=[root / "eval" / t])
    return stages.book.data


# ---------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example (small, CPU):\n"
        "  world4rl coverage --run runs/cov_push --task push --image-size 32 --expert 20 --policy-episodes 40 \\\n"
        "      --random 20 --wm-set size=small --wm-set steps=6000 --refine-set total_steps=40000\n"
        "rerun the same command to resume; a changed setting reruns its stage and what builds on it;\n"
        "--redo world-model retrains the world model, and the stages that build on it run again too."
    )
    parser.add_argument("--run", required=True, help="run directory (dataset, checkpoints, stages.json)")
    parser.add_argument("--task", action="append", dest="tasks", required=True, help="task (repeatable)")
    parser.add_argument("--suite", choices=["franka", "metaworld"], default="franka")
    parser.add_argument("--image-size", type=int, default=64, help="frame size of the dataset and models")
    parser.add_argument("--horizon", type=int, default=None, help="sim episode length in steps (default: the task's)")
    parser.add_argument("--expert", type=int, default=50, help="expert episodes per task")
    parser.add_argument("--expert-noise", type=float, default=0.3, help="Gaussian noise std on the expert's xyz")
    parser.add_argument("--policy-episodes", type=int, default=150, help="BC-policy rollouts per task")
    parser.add_argument("--policy-mean", action="store_true", help="BC rollouts use the mean action (no sampling)")
    parser.add_argument("--random", type=int, default=30, help="random-walk episodes per task")
    parser.add_argument("--eval-episodes", type=int, default=50, help="seeded true-sim episodes per policy")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED0, help="first evaluation seed")
    parser.add_argument("--eval-videos", type=int, default=3, help="evaluation seeds filmed")
    for name, what in (("bc", "BCConfig"), ("wm", "WorldModelTrainConfig"), ("reward", "RewardTrainConfig")):
        parser.add_argument(f"--{name}-set", action="append", metavar="KEY=VALUE", help=f"override a {what} field")
    parser.add_argument(
        "--refine-set",
        action="append",
        metavar="[TASK:]KEY=VALUE",
        help="override a PPOConfig field, for every task or (TASK:KEY=VALUE) for one, e.g. pick_place:horizon=40",
    )
    parser.add_argument("--redo", action="append", default=[], help="rerun this stage (e.g. world-model, bc/push)")
    parser.add_argument("--only", action="append", default=None, help="run only these stages (e.g. expert)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> CoverageConfig:
    from world4rl_model.reward import RewardTrainConfig
    from world4rl_model.training import WorldModelTrainConfig
    from world4rl_policy.bc import BCConfig
    from world4rl_policy.ppo import PPOConfig

    refine, refine_by_task = parse_task_overrides(args.refine_set, PPOConfig)
    return CoverageConfig(
        run=args.run,
        tasks=args.tasks,
        suite=args.suite,
        image_size=args.image_size,
        horizon=args.horizon,
        expert_episodes=args.expert,
        expert_noise=args.expert_noise,
        policy_episodes=args.policy_episodes,
        policy_sampled=not args.policy_mean,
        random_episodes=args.random,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        eval_videos=args.eval_videos,
        threads=args.threads,
        progress=not args.quiet,
        bc=parse_overrides(args.bc_set, BCConfig),
        world_model=parse_overrides(args.wm_set, WorldModelTrainConfig),
        reward=parse_overrides(args.reward_set, RewardTrainConfig),
        refine=refine,
        refine_by_task=refine_by_task,
    )


def run(args: argparse.Namespace) -> int:
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    maybe_reexec_with_tcmalloc("cpu")
    try:
        cfg = config_from_args(args)
        book = run_pipeline(cfg, redo=args.redo, only=args.only)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"world4rl coverage: error: {e}", file=sys.stderr)
        return 2
    total = sum(v.get("seconds", 0) for v in book.values())
    print(f"[coverage] stages done: {sum(1 for v in book.values() if v.get('done'))}, {total / 60:.1f} min in all")
    for task in cfg.tasks:
        ev = book.get(f"eval/{task}")
        if ev:
            (bs, bn, bci), (rs, rn, rci) = ev["bc"], ev["refined"]
            print(
                f"[coverage] {task}: BC {bs}/{bn} ({bci[0]:.0%}..{bci[1]:.0%}) -> refined {rs}/{rn} "
                f"({rci[0]:.0%}..{rci[1]:.0%}); beats BC's CI: {ev['vs_bc']['beats_baseline_ci']}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="world4rl coverage")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

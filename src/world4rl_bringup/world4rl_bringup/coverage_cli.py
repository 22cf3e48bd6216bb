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
   distill     (only with `imagination: distilled`) a one-step student of the world model
               (world4rl_model.distillation) -> RUN/world_model_student: the imagination the reward
               classifier's dreams, refine and predict then use (the kind of dreams PPO sees);
5. reward      the success classifier on the mixture and on the imagination's dreams of it -> RUN/reward;
6. refine      PPO in imagination per task, from its BC policy -> RUN/refine/TASK;
7. predict     BC's and the refined policy's real success predicted from imagination, calibrated on
               the BC rollouts' recorded outcomes, and the gate's choice -> RUN/refine/TASK/gate.json;
8. eval        BC vs refined in the true simulator on the same seeds -> RUN/eval/TASK/eval.json, set
               beside the prediction in the summary (predicted and measured success, the gate's choice).

Counts are per task; the paper's Meta-World recipe is 50 expert + 150 policy + 30 random
trajectories of 50 steps. Data stages top up what is missing (episode by episode, so an
interrupted stage continues where it stopped); training stages resume from their run's latest
checkpoint when interrupted, and start afresh when their settings or inputs changed. Any
setting of a stage's trainer can be overridden with --bc-set / --wm-set / --distill-set /
--reward-set / --refine-set KEY=VALUE (field names of BCConfig, WorldModelTrainConfig,
DistillConfig, RewardTrainConfig, PPOConfig; a nested group's dotted, e.g. --bc-set
policy.hidden_dim=128); --refine-set TASK:KEY=VALUE sets one task's PPO (e.g. a longer imagined
horizon for a task whose expert needs more steps). The results recipe's settings are the YAML
profiles in bench/profiles/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from world4rl_bringup.sim_rollouts import EXPERT_SEED0, POLICY_SEED0, RANDOM_SEED0
from world4rl_bringup.stages import Stages
from world4rl_model.config import meta
from world4rl_spec import LEARNING_IMAGE_SIZE

STAGES = ("expert", "bc", "rollouts", "world-model", "distill", "reward", "refine", "predict", "eval")
SHARED_STAGES = ("world-model", "distill", "reward")  # one for all tasks; the others are per task
HELP = "data-coverage recipe: expert demos -> BC -> BC/random rollouts -> world model + reward -> refine -> eval"

EVAL_SEED0 = 1000


_MODEL, _POLICY = "world4rl_model", "world4rl_policy"
_PPO = "world4rl_policy.ppo:PPOConfig"


@dataclass
class CoverageConfig:
    run: str  # run directory: dataset, checkpoints, stages.json (rerun the same command to resume)
    # tasks to run (--task reach --task drawer, or --tasks reach drawer)
    tasks: list[str] = field(default_factory=list, metadata=meta(aliases=("--task",), append=True, preset=False))
    suite: Literal["franka", "metaworld"] = "franka"  # simulator: the embedded Franka sim or Meta-World v3
    image_size: int = LEARNING_IMAGE_SIZE  # frame size of the dataset and the models [px]
    horizon: int | None = None  # episode length in the sim (None: the task's; Meta-World 60)
    # How the embedded robot's arm moves in every sim episode (expert, rollouts, evaluation): 'direct',
    # the sim's own controller, or 'runtime', as a deploy through ROS moves it (runtime_timing)
    timing: Literal["direct", "runtime"] = "direct"
    expert_episodes: int = field(default=50, metadata=meta(aliases=("--expert",)))  # expert episodes per task
    expert_noise: float = 0.3  # Gaussian noise std on the expert's xyz actions
    policy_episodes: int = 150  # BC-policy rollouts per task
    # BC rollouts sample from the Gaussian (wider coverage); --no-policy-sampled: the mean action
    policy_sampled: bool = True
    random_episodes: int = field(default=30, metadata=meta(aliases=("--random",)))  # random-walk episodes per task
    random_smooth: float = 0.8  # smoothing of the random walk's actions (0: white noise)
    eval_episodes: int = 50  # seeded true-sim episodes per policy
    eval_seed: int = EVAL_SEED0  # first evaluation seed (episode i: seed + i), away from the data seeds
    eval_videos: int = 3  # evaluation seeds filmed
    threads: int | None = None  # torch threads (None: torch's choice)
    progress: bool = True  # progress bars
    # The trainers' settings over their defaults, checked against their config classes (see
    # world4rl_model.config): from a YAML profile (nested groups nest, e.g. bc: {policy: {hidden_dim:
    # 32}}) and from --bc-set / --wm-set / --reward-set / --refine-set KEY=VALUE (no flag of their own).
    bc: dict[str, Any] = field(default_factory=dict, metadata=meta(overrides=f"{_POLICY}.bc:BCConfig", cli=False))
    world_model: dict[str, Any] = field(
        default_factory=dict, metadata=meta(overrides=f"{_MODEL}.training:WorldModelTrainConfig", cli=False)
    )
    reward: dict[str, Any] = field(
        default_factory=dict, metadata=meta(overrides=f"{_MODEL}.reward_training:RewardTrainConfig", cli=False)
    )
    refine: dict[str, Any] = field(default_factory=dict, metadata=meta(overrides=_PPO, cli=False))
    # the world model PPO dreams in (and the reward classifier learns on the dreams of): the trained
    # one, or a one-step student distilled from it by the distill stage (several times faster)
    imagination: Literal["teacher", "distilled"] = "teacher"
    # DistillConfig settings of the distill stage (with `imagination: distilled`; --distill-set KEY=VALUE)
    distill: dict[str, Any] = field(
        default_factory=dict, metadata=meta(overrides=f"{_MODEL}.distillation:DistillConfig", cli=False)
    )
    # PPOConfig settings for one task, on top of `refine` (tasks differ in how long success takes)
    refine_by_task: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=meta(overrides_by_key=_PPO, cli=False)
    )

    def validate(self) -> CoverageConfig:
        """Refuse settings that cannot make a run (before anything is written); -> self. Not in
        __post_init__: a preset is loaded before the command line names the tasks."""
        from world4rl_spec import check_task_name

        if not self.tasks:
            raise ValueError("at least one --task")
        if self.timing != "direct" and self.suite != "franka":
            raise ValueError(f"--timing {self.timing}: only the embedded robot (--suite franka) has a runtime timing")
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
        return self

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
        if stage == "distill" and not distilled(cfg):
            continue
        if stage in SHARED_STAGES:
            keys.append(stage)
        else:
            keys += [f"{stage}/{t}" for t in cfg.tasks]
    return keys


def parse_task_overrides(
    pairs: list[str] | None, config_cls, source: str = "KEY=VALUE"
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Like parse_overrides, but TASK:KEY=VALUE applies to one task: -> (for all tasks, {task: for it})."""
    shared, by_task = [], {}
    for pair in pairs or []:
        if ":" in pair.partition("=")[0]:  # a colon in the value (e.g. a path) is not a task prefix
            task, rest = pair.split(":", 1)
            by_task.setdefault(task.strip(), []).append(rest)
        else:
            shared.append(pair)
    return parse_overrides(shared, config_cls, source), {
        t: parse_overrides(p, config_cls, source) for t, p in by_task.items()
    }


def parse_overrides(pairs: list[str] | None, config_cls, source: str = "KEY=VALUE") -> dict[str, Any]:
    """KEY=VALUE strings -> a dict of a config dataclass's settings, values parsed as JSON where they
    parse; a nested group's settings are dotted (policy.hidden_dim=32 -> {"policy": {"hidden_dim": 32}}).
    Checked like a preset (world4rl_model.config.check_settings): names, types, derived settings."""
    from world4rl_model.config import check_settings

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{pair!r}: expected KEY=VALUE")
        *groups, name = key.strip().replace("-", "_").split(".")
        target = out
        for group in groups:
            target = target.setdefault(group, {})
            if not isinstance(target, dict):
                raise ValueError(f"{pair!r}: {group!r} is set as a whole and by its parts")
        try:
            target[name] = json.loads(value)
        except json.JSONDecodeError:
            target[name] = value
    check_settings(config_cls, out, source)
    return out


# ---------------------------------------------------------------------------------- stages


def _collect(cfg: CoverageConfig, task: str, kind: str, actor, seed0: int, count: int) -> dict[str, Any]:
    """Top the dataset up to `count` episodes of (task, kind) with seeds seed0.. (skipping recorded ones)."""
    from world4rl_bringup.sim_rollouts import top_up

    return top_up(
        cfg.dataset, cfg.suite, task, kind, actor, seed0, count, cfg.image_size, horizon=cfg.horizon,
        progress=cfg.progress, timing=cfg.timing,
    )  # fmt: skip


def _bc_config(cfg: CoverageConfig, task: str):
    from world4rl_model.config import build
    from world4rl_policy.bc import BCConfig

    base = {"dataset": str(cfg.dataset), "out": str(cfg.root / "bc" / task), "tasks": [task], "progress": cfg.progress}
    if cfg.threads:
        base["threads"] = cfg.threads
    return build(BCConfig, {**base, **cfg.bc})


def _bc_settings(bc) -> dict[str, Any]:
    """The BC stage's settings: BCConfig's, with its policy's own settings at top level as runs booked
    them before BCConfig nested PolicyConfig (their finished stages stay finished); the sizes the
    dataset decides are not settings, and init_log_std (settable since) counts only when changed."""
    from world4rl_policy.policy import PolicyConfig

    settings = bc.to_dict()
    policy = settings.pop("policy")
    for name in ("image_size", "action_dim", "proprio_dim"):
        del policy[name]
    if policy["init_log_std"] == PolicyConfig.init_log_std:
        del policy["init_log_std"]
    return {**settings, **policy}


def _wm_settings(wm) -> dict[str, Any]:
    """The world-model stage's settings: WorldModelTrainConfig's; channels, space_to_depth and
    max_cpu_minutes (settable since runs were first booked) count only when set, so those runs'
    finished stages stay finished."""
    settings = dataclasses.asdict(wm)
    later = ("channels", "space_to_depth", "max_cpu_minutes")
    return {k: v for k, v in settings.items() if not (k in later and v is None)}


def _bc_checkpoint(cfg: CoverageConfig, task: str) -> Path:
    run = cfg.root / "bc" / task
    return run / "best" if (run / "best").exists() else run


def distilled(cfg: CoverageConfig) -> bool:
    """Whether PPO dreams in the distill stage's student (`imagination: distilled`)."""
    return cfg.imagination == "distilled"


def imagination_world_model(cfg: CoverageConfig) -> Path:
    """The world model of the reward classifier's dreams, refine and predict: the student or the teacher."""
    return cfg.root / ("world_model_student" if distilled(cfg) else "world_model")


def imagination_stages(cfg: CoverageConfig) -> list[str]:
    """The stages the imagination comes from: what the reward, refine and predict stages build on."""
    return ["world-model", "distill"] if distilled(cfg) else ["world-model"]


def _distill_config(cfg: CoverageConfig):
    from world4rl_model.config import build
    from world4rl_model.distillation import DistillConfig

    base = {
        "teacher": str(cfg.root / "world_model"),
        "out": str(cfg.root / "world_model_student"),
        "dataset": str(cfg.dataset),
        "progress": cfg.progress,
    }
    if cfg.threads:
        base["threads"] = cfg.threads
    return build(DistillConfig, {**base, **cfg.distill})


def _wm_config(cfg: CoverageConfig):
    from world4rl_model.training import WorldModelTrainConfig

    base = {"dataset": str(cfg.dataset), "out": str(cfg.root / "world_model"), "progress": cfg.progress}
    if cfg.threads:
        base["threads"] = cfg.threads
    return WorldModelTrainConfig(**{**base, **cfg.world_model})


def _reward_config(cfg: CoverageConfig):
    from world4rl_model.reward_training import RewardTrainConfig

    base = {
        "dataset": str(cfg.dataset),
        "out": str(cfg.root / "reward"),
        "progress": cfg.progress,
        # The world model is trained first: the classifier learns on its dreams too (reward_set to turn off),
        # the student's when PPO dreams in it.
        "dream_world_model": str(imagination_world_model(cfg)),
    }
    if cfg.threads:
        base["threads"] = cfg.threads
    return RewardTrainConfig(**{**base, **cfg.reward})


def _refine_config(cfg: CoverageConfig, task: str):
    from world4rl_bringup.sim_rollouts import make_env
    from world4rl_model.config import build
    from world4rl_policy.ppo import PPOConfig

    env = make_env(cfg.suite, task, cfg.image_size, horizon=cfg.horizon)
    horizon = env.horizon
    env.close()
    base = {
        "policy": str(_bc_checkpoint(cfg, task)),
        "world_model": str(imagination_world_model(cfg)),
        "reward": str(cfg.root / "reward"),
        "dataset": str(cfg.dataset),
        "out": str(cfg.root / "refine" / task),
        "task": task,
        "horizon": horizon,
        "progress": cfg.progress,
    }
    if cfg.threads:
        base["threads"] = cfg.threads
    return build(PPOConfig, {**base, **cfg.refine, **cfg.refine_by_task.get(task, {})})


def _refine_settings(refine) -> dict[str, Any]:
    """The refine stage's settings: PPOConfig's without the prediction, which is a stage of its own
    (so runs booked before it existed keep their finished refine stages), and `seeds` only when > 1."""
    settings = refine.to_dict()
    del settings["predict"], settings["prediction"]
    if settings["seeds"] == 1:  # one seed is what runs booked before several seeds existed did
        del settings["seeds"]
    return settings


# Prediction settings added after runs were booked, with the value those runs used: left out of the
# predict stage's settings at that value, so that adding a setting does not redo finished stages.
_LATER_PREDICTION_SETTINGS = {"success_samples": 1, "rule": "calibrated", "rollout_starts": False}


def _prediction_settings(prediction) -> dict[str, Any]:
    """The predict stage's settings, without later settings at the value earlier runs used."""
    settings = dataclasses.asdict(prediction)
    for name, earlier in _LATER_PREDICTION_SETTINGS.items():
        if settings[name] == earlier:
            del settings[name]
    return settings


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


def _distill_stage(cfg: CoverageConfig) -> None:
    from world4rl_model.distillation import train_distill

    train_distill(_distill_config(cfg))


def _reward_stage(cfg: CoverageConfig) -> None:
    from world4rl_model.reward_training import train_reward

    train_reward(_reward_config(cfg))


def _refine_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_policy.ppo import refine as ppo_refine

    last = ppo_refine(dataclasses.replace(_refine_config(cfg, task), predict=False)).get("last", {})
    return {k: last.get(k) for k in ("episode_success", "episode_return", "kl_bc", "std")}


def _predict_stage(cfg: CoverageConfig, task: str) -> dict[str, Any]:
    from world4rl_policy.policy import load_policy_module
    from world4rl_policy.ppo import predict_after_refine

    refine = _refine_config(cfg, task)
    result = predict_after_refine(refine, task, int(load_policy_module(refine.out)[1].get("update") or 0))
    return {"deploy": result["deploy"]["policy"], "reason": result["deploy"]["reason"]}


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
        timing=cfg.timing,
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
    cfg.validate()
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / "coverage.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    for name in redo or []:
        if not any(k == name or k.split("/")[0] == name for k in stage_keys(cfg)):
            raise ValueError(f"--redo {name}: no such stage; stages: {', '.join(stage_keys(cfg))}")
    stages = Stages(cfg.root, redo=redo or (), only=only, log=lambda text: print(f"[coverage] {text}", flush=True))
    stage, root, tasks = stages.run, cfg.root, cfg.tasks
    data_stages = [f"{kind}/{t}" for kind in ("expert", "rollouts") for t in tasks]
    common = {"suite": cfg.suite, "image_size": cfg.image_size, "horizon": cfg.horizon}
    if cfg.timing != "direct":  # the default stays out: runs booked before the setting existed still count
        common["timing"] = cfg.timing
    for t in tasks:
        stage(
            f"expert/{t}",
            {**common, "n": cfg.expert_episodes, "noise": cfg.expert_noise},
            partial(_expert_stage, cfg, t),
        )
    for t in tasks:
        bc_settings = _bc_settings(_bc_config(cfg, t))
        stage(f"bc/{t}", bc_settings, partial(_bc_stage, cfg, t), after=[f"expert/{t}"], fresh=[root / "bc" / t])
    rollout_settings = {**common, "policy": cfg.policy_episodes, "sampled": cfg.policy_sampled}
    for t in tasks:
        stage(f"rollouts/{t}", {**rollout_settings, "random": cfg.random_episodes}, partial(_rollouts_stage, cfg, t))
    wm_settings, reward_settings = _wm_settings(_wm_config(cfg)), dataclasses.asdict(_reward_config(cfg))
    stage("world-model", wm_settings, partial(_world_model_stage, cfg), after=data_stages, fresh=[root / "world_model"])
    imagination = imagination_stages(cfg)
    if distilled(cfg):
        distill_settings = dataclasses.asdict(_distill_config(cfg))
        student = [imagination_world_model(cfg)]
        stage("distill", distill_settings, partial(_distill_stage, cfg), after=imagination[:1], fresh=student)
    after_reward = [*data_stages, *imagination]
    stage("reward", reward_settings, partial(_reward_stage, cfg), after=after_reward, fresh=[root / "reward"])
    for t in tasks:
        after = [f"bc/{t}", *imagination, "reward"]
        refine = _refine_config(cfg, t)
        stage(
            f"refine/{t}",
            _refine_settings(refine),
            partial(_refine_stage, cfg, t),
            after=after,
            fresh=[root / "refine" / t],
        )
    for t in tasks:
        settings = {"prediction": _prediction_settings(_refine_config(cfg, t).prediction)}
        stage(f"predict/{t}", settings, partial(_predict_stage, cfg, t), after=[f"refine/{t}"])
    eval_settings = {**common, "episodes": cfg.eval_episodes, "seed": cfg.eval_seed}
    for t in tasks:
        after = [f"bc/{t}", f"refine/{t}"]
        stage(f"eval/{t}", eval_settings, partial(_eval_stage, cfg, t), after=after, fresh=[root / "eval" / t])
    return stages.book.data


# ---------------------------------------------------------------------------------- CLI


EXAMPLE = """\
Rerun the same command to resume; a changed setting reruns its stage and what builds on it; --redo
world-model retrains the world model, and the stages that build on it run again too. Small, on a CPU:

  world4rl coverage --run runs/cov_push --task push --image-size 32 --expert 20 --random 20 --wm-set size=small

The results recipe (docs/results.md):

  world4rl coverage --preset bench/profiles/full.yaml --task drawer --task pick_place --run runs/results"""

RUN_OPTIONS_HELP = (
    "--bc-set / --wm-set / --distill-set / --reward-set KEY=VALUE (repeatable): a BCConfig / "
    "WorldModelTrainConfig / DistillConfig / RewardTrainConfig setting over the preset's and the defaults "
    "(`world4rl train bc|world-model|distill|reward --help` lists them; --distill-set counts with "
    "--imagination distilled; nested ones dotted, e.g. --bc-set policy.hidden_dim=128). --refine-set "
    "[TASK:]KEY=VALUE: a PPOConfig setting for every task or for one (e.g. pick_place:horizon=40). "
    "--redo STAGE: run a stage again (e.g. world-model, bc/push). --only STAGE: run only these stages."
)


def _run_options(prog: str) -> argparse.ArgumentParser:
    """The options beside CoverageConfig's own flags: trainer overrides and which stages to run."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    for name in ("bc", "wm", "distill", "reward", "refine"):
        parser.add_argument(f"--{name}-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--redo", action="append", default=[], metavar="STAGE")
    parser.add_argument("--only", action="append", default=None, metavar="STAGE")
    return parser


def parse_command_line(argv: list[str], prog: str = "world4rl coverage") -> tuple[CoverageConfig, argparse.Namespace]:
    """-> (the run's settings: preset, then flags, then --X-set overrides merged over the preset's; the
    run options --redo/--only). CoverageConfig's own flags are generated from it (world4rl_model.config)."""
    from world4rl_model.config import cli
    from world4rl_model.distillation import DistillConfig
    from world4rl_model.reward_training import RewardTrainConfig
    from world4rl_model.training import WorldModelTrainConfig
    from world4rl_policy.bc import BCConfig
    from world4rl_policy.ppo import PPOConfig

    options, rest = _run_options(prog).parse_known_args(argv)
    description = f"{__doc__}\n{RUN_OPTIONS_HELP}\n\n{EXAMPLE}"
    cfg = cli(CoverageConfig, rest, prog=prog, description=description)
    refine, refine_by_task = parse_task_overrides(options.refine_set, PPOConfig, "--refine-set")
    by_task = dict(cfg.refine_by_task)
    for task, values in refine_by_task.items():
        by_task[task] = {**by_task.get(task, {}), **values}
    cfg = dataclasses.replace(
        cfg,
        bc={**cfg.bc, **parse_overrides(options.bc_set, BCConfig, "--bc-set")},
        world_model={**cfg.world_model, **parse_overrides(options.wm_set, WorldModelTrainConfig, "--wm-set")},
        distill={**cfg.distill, **parse_overrides(options.distill_set, DistillConfig, "--distill-set")},
        reward={**cfg.reward, **parse_overrides(options.reward_set, RewardTrainConfig, "--reward-set")},
        refine={**cfg.refine, **refine},
        refine_by_task=by_task,
    )
    return cfg.validate(), options


def main(argv: list[str] | None = None, prog: str = "world4rl coverage") -> int:
    from world4rl_bringup.prediction_report import task_summary
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    try:
        cfg, options = parse_command_line(list(sys.argv[1:] if argv is None else argv), prog)
        maybe_reexec_with_tcmalloc("cpu")  # the same command line, with tcmalloc preloaded
        book = run_pipeline(cfg, redo=options.redo, only=options.only)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
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
        summary = task_summary(cfg.root, task)
        if "predicted" in summary:
            p, lo_hi = summary["predicted"], summary["predicted_difference_ci95"]
            print(
                f"[coverage] {task}: predicted BC {p['bc']:.0%}, refined {p['refined']:.0%} (difference "
                f"{summary['predicted_difference']:+.0%}, {lo_hi[0]:+.0%}..{lo_hi[1]:+.0%})"
            )
        if "gate" in summary:
            print(f"[coverage] {task}: the gate deploys {summary['gate']['deploy']}: {summary['gate']['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

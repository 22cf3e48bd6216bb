"""The trainers' and the coverage recipe's command lines are generated from their config dataclasses:
`world4rl train world-model|reward|bc --help`, `world4rl refine --help` and `world4rl coverage
--help` show every setting as its flag, with the
dataclass's default (nothing is declared twice); --preset loads a YAML preset that flags override;
the YAML profiles of bench/ and the demo load with exactly the values the recipes use."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from world4rl_bringup import cli as world4rl
from world4rl_model.config import on_cli

ROOT = Path(__file__).resolve().parents[3]
PROFILES = ROOT / "bench" / "profiles"


def _trainers():
    from world4rl_bringup.coverage_cli import CoverageConfig
    from world4rl_model.reward_training import RewardTrainConfig
    from world4rl_model.training import WorldModelTrainConfig
    from world4rl_policy.bc import BCConfig
    from world4rl_policy.ppo import PPOConfig
    from world4rl_policy.predict_cli import PredictConfig

    return {
        ("coverage",): CoverageConfig,
        ("train", "world-model"): WorldModelTrainConfig,
        ("train", "reward"): RewardTrainConfig,
        ("train", "bc"): BCConfig,
        ("refine",): PPOConfig,
        ("predict",): PredictConfig,
    }


def _help(argv: list[str], capsys, monkeypatch) -> dict[str, str]:
    """`world4rl ARGV --help` -> {each flag or positional metavar: its entry's text}."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per entry where it fits
    with pytest.raises(SystemExit) as e:
        world4rl.main([*argv, "--help"])
    assert e.value.code == 0
    entries: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        line = line.lstrip("│╭╰").rstrip().rstrip("│╮╯").rstrip()
        text = line.strip()
        if re.match(r" {0,3}(-{1,2}[a-z]|[A-Z_]+ )", line):  # an option, or a positional argument's metavar
            entries.append(text)
        elif entries and text and line.startswith(" " * 8):
            entries[-1] += " " + text  # the help of an entry whose flags fill the first column
    out = {}
    for entry in entries:
        names = re.findall(r"(?:^|, )(-{1,2}[\w.-]+|[A-Z_]+)", entry.split("  ")[0])
        for name in names:
            out[name] = entry
    return out


def _shown(value) -> str:
    """A default as tyro's help shows it."""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _settings(config_cls, prefix=""):
    """(flag or metavar, dataclass field, its default or None if required) of every CLI setting."""
    for f in dataclasses.fields(config_cls):
        if not on_cli(f):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if dataclasses.is_dataclass(default):  # a nested group: its own fields' flags
            group = "" if f.metadata.get("flat") else f"{prefix}{f.name}."
            yield from _settings(type(default), group)
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        name = f.metadata.get("metavar") if f.metadata.get("positional") else "--" + (prefix + f.name).replace("_", "-")
        yield name, f, None if required else default


@pytest.mark.parametrize("command", list(_trainers()), ids=" ".join)
def test_help_shows_every_setting_with_the_dataclass_default(command, capsys, monkeypatch):
    config_cls = _trainers()[command]
    shown = _help(list(command), capsys, monkeypatch)
    settings = list(_settings(config_cls))
    assert len(settings) >= 8  # every trainer has more; predict has 10
    for name, f, default in settings:
        assert name in shown, f"{' '.join(command)} --help lacks {name} ({config_cls.__name__}.{f.name})"
        entry = shown[name]
        if f.metadata.get("append"):
            assert entry.endswith("(repeatable)"), entry
        elif default is None and (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            assert entry.endswith("(required)"), entry
        else:
            assert entry.endswith(f"(default: {_shown(default)})"), (entry, default)
        if isinstance(default, bool):  # --no-x, in a nested group --group.no-x
            negation = re.sub(r"^(--(?:[\w-]+\.)*)", r"\1no-", name)
            assert negation in shown or negation in entry, entry
        for alias in f.metadata.get("aliases", ()):
            assert shown.get(alias) == entry
        assert re.search(r"\S\s+\S", entry.split(name, 1)[1]), f"{name} has no help: {entry}"


def test_world4rl_help_lists_every_subcommand_without_importing_the_trainers(capsys):
    import subprocess
    import sys

    with pytest.raises(SystemExit):
        world4rl.main(["--help"])
    out = capsys.readouterr().out
    for name in world4rl.SUBCOMMANDS:
        assert f"    {name} " in out
    with pytest.raises(SystemExit):
        world4rl.main(["train", "--help"])
    assert re.search(r"world-model.*reward.*bc", capsys.readouterr().out, re.S)
    probe = (
        "import sys; from world4rl_bringup import cli; cli.build_parser(); print({'torch', 'tyro'} & set(sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "set()"  # `world4rl --help` stays fast


def test_refine_preset_and_flags_over_it():
    from world4rl_model.config import cli
    from world4rl_policy.ppo import PPOConfig

    paths = ["--policy", "p", "--world-model", "w", "--reward", "r", "--dataset", "d", "--out", "o"]
    recipe = str(PROFILES / "refine_results.yaml")
    cfg = cli(PPOConfig, [*paths, "--preset", recipe])
    assert (cfg.total_steps, cfg.horizon, cfg.bf16, cfg.kl_bc_coef) == (40960, 30, True, 0.1)
    assert cfg.num_envs == PPOConfig.num_envs  # what the preset leaves alone keeps its default
    cfg = cli(PPOConfig, ["--preset", recipe, "--horizon", "40", "--no-bf16", "--target-kl", "None", *paths])
    assert (cfg.total_steps, cfg.horizon, cfg.bf16, cfg.target_kl) == (40960, 40, False, None)
    assert cli(PPOConfig, [*paths, "--target-kl", "0"]).target_kl is None  # the old "<= 0: never"


def test_bench_profiles_load_with_the_recipes_values():
    from world4rl_bringup.coverage_cli import CoverageConfig
    from world4rl_model.config import build, read_preset
    from world4rl_policy.ppo import PPOConfig

    refine = {"total_steps": 40960, "horizon": 30, "bf16": True, "kl_bc_coef": 0.1}
    full = {
        "image_size": 64,
        "expert_episodes": 400,
        "expert_noise": 0.1,
        "policy_episodes": 150,
        "random_episodes": 30,
        "eval_episodes": 100,
        "bc": {"steps": 3000, "lr": 1e-3, "val_every": 250, "augment_shift": 0},
        "world_model": {"size": "default", "steps": 100000, "lr": 5e-4, "bf16": True, "max_minutes": 50},
        "reward": {"steps": 2000, "bf16": True},
        "refine": refine,
        "refine_by_task": {"pick_place": {"horizon": 40, "reward_threshold": 0.9}},
    }
    metaworld = {
        **full,
        "world_model": {**full["world_model"], "max_minutes": 40},
        "refine": {k: v for k, v in refine.items() if k != "horizon"},
    }
    # The benchmark's recipe: the paper's data sizes, and not one per-task setting.
    recipe = {
        **{k: v for k, v in full.items() if k != "refine_by_task"},
        "expert_episodes": 50,
        "eval_episodes": 200,
        "world_model": {**{k: v for k, v in full["world_model"].items() if k != "max_minutes"}, "max_cpu_minutes": 90},
        "refine": {
            "total_steps": 40960, "start": "any", "horizon": 10, "reward_calibration": True, "seeds": 3,
            "bf16": True, "kl_bc_coef": 0.1,
        },
    }  # fmt: skip
    quick = {
        "image_size": 32,
        "expert_episodes": 3,
        "expert_noise": 0.2,
        "policy_episodes": 2,
        "random_episodes": 2,
        "eval_episodes": 5,
        "bc": {"steps": 30, "policy": {"channels": (8, 16, 16, 16), "hidden_dim": 32}, "val_every": 30},
        "world_model": {"size": "tiny", "steps": 20, "batch_size": 8, "val_every": 20},
        "reward": {"steps": 20, "channels": [8, 8]},
        "refine": {"total_steps": 256, "num_envs": 8, "num_steps": 8, "video_episodes": 1},
    }
    profiles = (("full", full), ("metaworld_full", metaworld), ("recipe", recipe), ("quick", quick))
    for name, expected in profiles:
        profile = read_preset(PROFILES / f"{name}.yaml", CoverageConfig)
        assert profile == expected, name
        assert [type(v) for v in _leaves(profile)] == [type(v) for v in _leaves(expected)], name  # 50, not 50.0
        cfg = build(CoverageConfig, {**profile, "run": "r", "tasks": ["drawer", "pick_place"]})
        assert cfg.refine == expected["refine"]
    assert read_preset(PROFILES / "refine_results.yaml", PPOConfig) == refine

    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "bench" / "bench_learning.py")
    bench_learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_learning)
    assert bench_learning.profile_path(True).name == "quick.yaml"
    assert bench_learning.profile_path(False).name == "recipe.yaml"
    # The benchmark's coverage configuration (also scripts/results/reselect_seeds.py's): the recipe, the suite's tasks.
    args = bench_learning.parser().parse_args(["--suite", "metaworld", "--run", "r", "--threads", "1"])
    cfg, profile, name = bench_learning.coverage_config(args)
    assert name == "learning_metaworld"
    assert list(cfg.tasks) == bench_learning.METAWORLD_TASKS.split(",")
    assert (cfg.suite, cfg.threads, str(cfg.root)) == ("metaworld", 1, "r")
    assert cfg.refine == read_preset(PROFILES / "recipe.yaml", CoverageConfig)["refine"] == profile["refine"]


def _leaves(d):
    for k in sorted(d):
        yield from _leaves(d[k]) if isinstance(d[k], dict) else [d[k]]


def test_demo_sizes_load_with_their_values():
    from world4rl_bringup.demo_cli import Sizes, load_sizes

    assert load_sizes("small") == Sizes(15, 0.1, 1200, 1.0, 5.0, "small", 8192, 40, 100, 30, "residual", 1e-3, 1)
    assert load_sizes("full") == Sizes(50, 0.1, 3000, 10.0, 45.0, "default", 40960, 100, 150, 30, "frame", 5e-4, 2, 3)
    assert isinstance(load_sizes("small").world_model_minutes, float)  # "5.0" in the command line, as before
    with pytest.raises(ValueError, match="no such size"):
        load_sizes("huge")


@pytest.mark.parametrize("size", ["small", "full"])
def test_the_demos_trainer_command_lines_parse_into_the_settings_it_means(size, tmp_path):
    from world4rl_bringup.demo_cli import load_sizes, stages
    from world4rl_model.config import cli

    sizes = load_sizes(size)
    commands = {name: cmds[-1][3:] for name, cmds in stages(tmp_path, "reach", sizes, 7)}  # after `python -m cli`
    trainers = _trainers()
    parsed = {}
    for name in ("bc", "world_model", "reward", "refine"):
        argv = commands[name]
        command = tuple(argv[:2]) if argv[0] == "train" else tuple(argv[:1])
        parsed[name] = cli(trainers[command], argv[len(command) :])
    assert (parsed["bc"].steps, parsed["bc"].lr, parsed["bc"].augment_shift, parsed["bc"].progress) == (
        sizes.bc_steps, 1e-3, 0, False
    )  # fmt: skip
    wm = parsed["world_model"]
    assert (wm.dataset, wm.size, wm.max_minutes, wm.seed) == (str(tmp_path / "coverage"), sizes.world_model_size,
                                                              sizes.world_model_minutes, 7)  # fmt: skip
    assert (wm.target, wm.lr, wm.sampling_steps) == (
        sizes.world_model_target, sizes.world_model_lr, sizes.world_model_sampling_steps
    )  # fmt: skip
    assert parsed["reward"].dream_world_model == str(tmp_path / "world_model")
    refine = parsed["refine"]
    assert (refine.total_steps, refine.task, refine.progress, refine.dataset, refine.seeds) == (
        sizes.refine_steps, "reach", False, str(tmp_path / "coverage"), sizes.refine_seeds
    )  # fmt: skip
    # the recipe: short dreams from any frame, a calibrated threshold, the gate judging from 2 dreams per start
    assert (refine.start, refine.horizon, refine.reward_calibration, refine.kl_bc_coef) == ("any", 10, True, 0.1)
    assert (refine.predict, refine.prediction.repeats, refine.prediction.calibration_repeats) == (True, 2, 2)
    rollouts = commands["rollouts"]  # the coverage data: the demonstrations' copy topped up with rollouts
    assert rollouts[:3] == ["dataset", "rollouts", str(tmp_path / "coverage")]
    assert rollouts[rollouts.index("--policy-episodes") + 1] == str(sizes.policy_episodes)
    assert rollouts[rollouts.index("--random") + 1] == str(sizes.random_episodes)
    assert rollouts[rollouts.index("--timing") + 1] == "runtime"  # one timing: the demonstrations' and the deploys'


def test_coverage_preset_then_flags_then_trainer_overrides_merged_over_the_preset(tmp_path, capsys):
    from world4rl_bringup.coverage_cli import parse_command_line

    full = str(PROFILES / "full.yaml")
    cfg, options = parse_command_line(
        ["--preset", full, "--task", "drawer", "--task", "pick_place", "--run", "r", "--expert", "10",
         "--wm-set", "max_minutes=5", "--refine-set", "pick_place:horizon=50", "--redo", "world-model"]
    )  # fmt: skip
    assert (cfg.tasks, cfg.expert_episodes, cfg.expert_noise, cfg.policy_episodes) == (
        ["drawer", "pick_place"],
        10,
        0.1,
        150,
    )
    assert cfg.world_model == {"size": "default", "steps": 100000, "lr": 0.0005, "bf16": True, "max_minutes": 5}
    assert cfg.refine == {"total_steps": 40960, "horizon": 30, "bf16": True, "kl_bc_coef": 0.1}
    assert cfg.refine_by_task == {"pick_place": {"horizon": 50, "reward_threshold": 0.9}}
    assert options.redo == ["world-model"]
    bad = tmp_path / "tasks.yaml"
    bad.write_text("tasks: [reach]\n")
    with pytest.raises(SystemExit) as e:
        parse_command_line(["--preset", str(bad), "--run", "r", "--task", "reach"])
    assert e.value.code == 2
    assert "'tasks' is given on the command line, not in a preset" in capsys.readouterr().err

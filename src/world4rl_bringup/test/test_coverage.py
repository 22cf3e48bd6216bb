"""`world4rl coverage`: stages run in order, finished stages are skipped on a rerun, data stages top
up episode by episode (an interrupted stage continues where it stopped), --redo reruns a stage,
overrides reach the trainers; (slow) the whole recipe end to end at toy scale."""

from __future__ import annotations

import argparse
import json

import pytest

from world4rl_bringup import coverage_cli as cov

S = 32
TINY_BC = ["steps=4", "policy.channels=[8,8,8,8]", "policy.hidden_dim=16", "val_every=2", "checkpoint_every=2"]


def _argv(run, *extra):
    base = ["--run", str(run), "--task", "reach", "--image-size", str(S), "--expert", "2", "--policy-episodes", "1",
            "--random", "1", "--eval-episodes", "2", "--eval-videos", "0", "--no-progress",
            "--threads", "1"]  # fmt: skip
    for item in TINY_BC:
        base += ["--bc-set", item]
    return [*base, *extra]


def _config(run, *extra):
    return cov.parse_command_line(_argv(run, *extra))[0]


def _episodes(run):
    from world4rl_model.dataset import Dataset

    return [(e["task"], e["kind"], e["seed"], e["success"]) for e in Dataset(run / "dataset").episodes]


def test_overrides_parse_by_field_and_reject_unknown_names():
    from world4rl_policy.ppo import PPOConfig

    got = cov.parse_overrides(["total_steps=100", "start=any", "log-std-max=2", 'start_kinds=["expert"]'], PPOConfig)
    assert got == {"total_steps": 100, "start": "any", "log_std_max": 2, "start_kinds": ["expert"]}
    with pytest.raises(ValueError, match="no setting 'totl_steps'"):
        cov.parse_overrides(["totl_steps=1"], PPOConfig)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cov.parse_overrides(["total_steps"], PPOConfig)
    with pytest.raises(ValueError, match="overlap"):
        cov.CoverageConfig(run="x", tasks=["reach"], expert_episodes=2000).validate()
    with pytest.raises(ValueError, match=r"total_steps = 'many': expected int"):
        cov.parse_overrides(["total_steps=many"], PPOConfig)


def test_bc_overrides_reach_the_nested_policy_config():
    from world4rl_policy.bc import BCConfig

    got = cov.parse_overrides(["steps=4", "policy.hidden_dim=16", "policy.channels=[8,8]"], BCConfig, "--bc-set")
    assert got == {"steps": 4, "policy": {"hidden_dim": 16, "channels": [8, 8]}}
    with pytest.raises(ValueError, match=r"--bc-set: BCConfig has no setting 'hidden_dim' \(did you mean 'policy"):
        cov.parse_overrides(["hidden_dim=16"], BCConfig, "--bc-set")
    with pytest.raises(ValueError, match=r"'policy\.image_size' cannot be set: it is taken from the dataset"):
        cov.parse_overrides(["policy.image_size=32"], BCConfig)


def test_refine_settings_per_task_override_the_shared_ones(tmp_path):
    from world4rl_policy.ppo import PPOConfig

    pairs = ["total_steps=512", "pick_place:horizon=40", "pick_place:reward_threshold=0.9", "reach:total_steps=64"]
    shared, by_task = cov.parse_task_overrides(pairs, PPOConfig)
    assert shared == {"total_steps": 512}
    assert by_task == {"pick_place": {"horizon": 40, "reward_threshold": 0.9}, "reach": {"total_steps": 64}}
    with pytest.raises(ValueError, match="no setting 'horizn'"):
        cov.parse_task_overrides(["reach:horizn=3"], PPOConfig)
    assert cov.parse_task_overrides(["out=runs/a:b"], PPOConfig) == ({"out": "runs/a:b"}, {})  # a colon in a value

    sets = ["total_steps=512", "pick_place:horizon=40", "pick_place:reward_threshold=0.9"]
    cfg = _config(tmp_path / "run", "--task", "pick_place", *(f"--refine-set={x}" for x in sets))
    reach, pick = cov._refine_config(cfg, "reach"), cov._refine_config(cfg, "pick_place")
    assert (reach.horizon, reach.total_steps, reach.reward_threshold) == (30, 512, None)  # reach's own horizon
    assert (pick.horizon, pick.total_steps, pick.reward_threshold) == (40, 512, 0.9)
    assert pick.out.endswith("refine/pick_place")
    with pytest.raises(ValueError, match="'push' is not one of this run's tasks"):
        _config(tmp_path / "run", "--refine-set", "push:horizon=40")


def test_data_and_bc_stages_resume_and_skip(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _config(run)
    assert cfg.bc["steps"] == 4
    assert cfg.bc["policy"] == {"channels": [8, 8, 8, 8], "hidden_dim": 16}
    assert cov._bc_config(cfg, "reach").policy.hidden_dim == 16

    # An interrupted expert stage: one of the two episodes is already in the dataset.
    from world4rl_bringup.sim_rollouts import ExpertActor, record_episodes
    from world4rl_model.dataset import DatasetWriter

    record_episodes(DatasetWriter(run / "dataset", image_size=S), "franka", "reach", "expert", ExpertActor(0.3), [1], S)
    book = cov.run_pipeline(cfg, only=["expert", "bc", "rollouts"])
    assert sorted(book) == ["bc/reach", "expert/reach", "rollouts/reach"]
    assert book["expert/reach"]["added"] == 1  # seed 1 was there; seed 0 was added
    eps = _episodes(run)
    assert sorted((k, s) for _, k, s, _ in eps) == [
        ("expert", 0),
        ("expert", 1),
        ("policy", 10_000),
        ("random", 20_000),
    ]
    assert all(ok for _, k, _, ok in eps if k == "expert")  # the noisy expert still solves reach
    assert (run / "bc" / "reach" / "best" / "config.json").exists()
    bc_config = json.loads((run / "bc" / "reach" / "best" / "config.json").read_text())
    assert bc_config["bc_config"]["steps"] == 4
    assert bc_config["tasks"] == ["reach"]

    # Rerun: every finished stage is skipped, nothing is added.
    capsys.readouterr()
    mtime = (run / "dataset" / "manifest.json").stat().st_mtime_ns
    cov.run_pipeline(cfg, only=["expert", "bc", "rollouts"])
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 3
    assert (run / "dataset" / "manifest.json").stat().st_mtime_ns == mtime

    # More expert episodes requested: the stage says what changed, reruns and tops up only the missing seed.
    cfg3 = _config(run, "--expert", "3")
    book = cov.run_pipeline(cfg3, only=["expert", "bc"])
    out = capsys.readouterr().out
    assert "expert/reach: changed since it ran: setting n: running again" in out
    assert book["expert/reach"]["added"] == 1
    assert sorted(s for _, k, s, _ in _episodes(run) if k == "expert") == [0, 1, 2]
    # BC builds on the expert data: it is trained again from scratch, its earlier run moved aside, not deleted.
    assert "bc/reach: changed since it ran: stage expert/reach ran again: running again (earlier output kept in" in out
    (superseded,) = (run / "superseded").iterdir()
    assert (superseded / "reach" / "best" / "config.json").is_file()
    assert (run / "bc" / "reach" / "best" / "config.json").is_file()
    book = cov.run_pipeline(cfg3, redo=["expert"], only=["expert"])
    assert book["expert/reach"]["added"] == 0  # --redo reruns it; nothing is missing
    stages = json.loads((run / "stages.json").read_text())
    assert stages["expert/reach"]["settings"]["n"] == 3
    assert stages["bc/reach"]["done"]
    with pytest.raises(ValueError, match="no such stage"):
        cov.run_pipeline(cfg3, redo=["fly"])


def test_dataset_rollouts_add_the_policys_and_random_episodes_to_a_recorded_dataset(tmp_path, capsys):
    """`world4rl dataset rollouts` (the demo's coverage data): the coverage recipe's seeds and kinds,
    topped up on a rerun; bad input refused naming the flag before anything is written."""
    from world4rl_bringup import dataset_cli

    run = tmp_path / "run"
    cov.run_pipeline(_config(run, "--policy-episodes", "0", "--random", "0"), only=["expert", "bc"])
    parser = argparse.ArgumentParser()
    dataset_cli.add_arguments(parser)

    def rollouts(*extra):
        base = ["rollouts", str(run / "dataset"), "--policy", str(run / "bc" / "reach"), "--task", "reach"]
        return dataset_cli.run(parser.parse_args([*base, "--no-progress", *extra]))

    assert rollouts("--policy-episodes", "2", "--random", "1") == 0
    assert "reach/policy: 2 episodes added" in capsys.readouterr().out
    kinds = sorted((k, s) for _, k, s, _ in _episodes(run) if k != "expert")
    assert kinds == [("policy", 10_000), ("policy", 10_001), ("random", 20_000)]
    # Each generated episode says how its arm moved: the rollouts as a deploy moves it (the default
    # here), the coverage run's expert episodes with the sim's own controller.
    from world4rl_model.dataset import Dataset

    timings = sorted((e["kind"], e.get("timing")) for e in Dataset(run / "dataset").episodes)
    assert set(timings) == {("expert", "direct"), ("policy", "runtime"), ("random", "runtime")}
    assert "the arm moved by the direct timing: " in dataset_cli.summary(run / "dataset")
    assert rollouts("--policy-episodes", "3", "--random", "1") == 0  # tops up: one more policy episode
    out = capsys.readouterr().out
    assert "reach/policy: 1 episodes added" in out
    assert "reach/random: 0 episodes added" in out
    assert len(_episodes(run)) == 2 + 3 + 1

    assert rollouts("--task", "fly") == 2
    assert "--task 'fly'" in capsys.readouterr().err
    assert rollouts("--random", "-1") == 2
    assert "--random must be >= 0" in capsys.readouterr().err
    from world4rl_model.dataset import DatasetWriter

    DatasetWriter(tmp_path / "other", image_size=64)  # a dataset of another frame size
    base = ["rollouts", str(tmp_path / "other"), "--policy", str(run / "bc" / "reach"), "--task", "reach"]
    assert dataset_cli.run(parser.parse_args(base)) == 2
    assert "sees 32 px frames" in capsys.readouterr().err
    assert len(_episodes(run)) == 6  # nothing lost, nothing added


@pytest.mark.slow
def test_whole_recipe_at_toy_scale(tmp_path, monkeypatch):
    """expert -> BC -> rollouts -> world model -> reward -> refine -> eval, then a rerun skips all."""
    monkeypatch.setenv("WORLD4RL_NO_TCMALLOC", "1")  # run() would re-exec this very process
    run = tmp_path / "run"
    extra = [
        "--wm-set", "size=tiny", "--wm-set", "steps=3", "--wm-set", "batch_size=4", "--wm-set", "val_every=3",
        "--reward-set", "steps=3", "--reward-set", "channels=[8,8]", "--reward-set", "val_fraction=0.0",
        "--refine-set", "total_steps=16", "--refine-set", "num_envs=4", "--refine-set", "num_steps=4",
        "--refine-set", "video_episodes=0", "--refine-set", "prediction.min_calibration=1",
        "--refine-set", "prediction.repeats=1", "--refine-set", "prediction.calibration_repeats=1",
        "--refine-set", "prediction.bootstrap=50",
    ]  # fmt: skip
    assert cov.main(_argv(run, *extra)) == 0
    stages = json.loads((run / "stages.json").read_text())
    assert [k for k in stages] == cov.stage_keys(_config(run, *extra))
    assert all(v["done"] for v in stages.values())
    from world4rl_policy.policy import load_policy_module

    _, config = load_policy_module(run / "refine" / "reach")
    assert config["trainer"] == "ppo-imagination"
    assert config["refined_from"]["world_model"] == str((run / "world_model").absolute())
    assert config["ppo_config"]["horizon"] == 30  # the task's horizon in the sim
    result = json.loads((run / "eval" / "reach" / "eval.json").read_text())
    assert [p["label"] for p in result["policies"]] == ["bc", "refined"]
    assert stages["eval/reach"]["refined"][1] == 2
    # The predict stage: both policies' predicted success beside the measured, and the gate's choice.
    assert stages["predict/reach"]["deploy"] in ("bc", "refined")
    from world4rl_bringup.prediction_report import markdown, task_summary

    summary = task_summary(run, "reach")
    assert set(summary["predicted"]) == set(summary["measured"]) == {"bc", "refined"}
    assert summary["gate"]["deploy"] == stages["predict/reach"]["deploy"]
    assert isinstance(summary["gate_choice_measurably_worse"], bool)
    assert markdown([summary])[2].startswith("| reach | ")
    # Rerun: all skipped (fast), same result.
    assert cov.main(_argv(run, *extra)) == 0
    assert json.loads((run / "stages.json").read_text()) == stages


def test_a_task_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """--task becomes RUN/bc/TASK, RUN/refine/TASK, RUN/eval/TASK: '../x' would leave those folders."""
    monkeypatch.setenv("WORLD4RL_NO_TCMALLOC", "1")
    run = tmp_path / "runs" / "run"
    for bad in ("../x", "../../escaped", "a/b"):
        code = cov.main(["--run", str(run), "--task", "reach", "--task", bad, "--expert", "1", "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("world4rl coverage: error: --task: ")
        assert f"{bad!r} is not a valid task name" in err
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing beside it
    with pytest.raises(ValueError, match="not a valid task name"):
        cov.run_pipeline(cov.CoverageConfig(run=str(run), tasks=["../x"]))
    assert list(tmp_path.iterdir()) == []


def test_stage_settings_keep_the_layout_earlier_runs_booked(tmp_path):
    """BCConfig nests PolicyConfig and WorldModelTrainConfig gained channels/space_to_depth; the BC and
    world-model stages still book the settings as before, so runs' finished stages stay finished."""
    cfg = _config(tmp_path / "run", "--wm-set", "size=tiny")
    bc = cov._bc_settings(cov._bc_config(cfg, "reach"))
    booked = {
        "dataset", "out", "tasks", "kinds", "successful_only", "val_fraction", "split_seed", "seed", "steps",
        "batch_size", "lr", "weight_decay", "grad_clip", "augment_shift", "loss", "use_proprio",
        "post_success_frames", "frame_history", "channels", "hidden_dim", "log_std_min", "log_std_max",
        "max_minutes", "log_every", "val_every", "checkpoint_every", "keep_checkpoints", "threads", "resume",
        "progress",
    }  # fmt: skip
    assert set(bc) == booked
    assert (bc["channels"], bc["hidden_dim"]) == ([8, 8, 8, 8], 16)
    assert "channels" not in cov._wm_settings(cov._wm_config(cfg))
    # The prediction is a stage of its own: the refine stage books PPOConfig's settings without it.
    refine = cov._refine_settings(cov._refine_config(cfg, "reach"))
    assert "prediction" not in refine
    assert "predict" not in refine
    assert refine["horizon"] == 30
    cfg = _config(tmp_path / "run", "--wm-set", "channels=[8,16]")
    assert cov._wm_settings(cov._wm_config(cfg))["channels"] == [8, 16]
    # The predict stage: settings added later are booked only away from the value earlier runs used.
    from world4rl_policy.prediction import PredictionSettings

    earlier = {"repeats", "calibration_repeats", "horizon", "batch", "bootstrap", "min_calibration"}
    plain = PredictionSettings(success_samples=1, rule="calibrated", rollout_starts=False)
    assert set(cov._prediction_settings(plain)) == earlier
    stricter = PredictionSettings(success_samples=4, rule="paired", rollout_starts=True)
    assert cov._prediction_settings(stricter) == {
        **cov._prediction_settings(plain),
        "success_samples": 4, "rule": "paired", "rollout_starts": True,
    }  # fmt: skip


def test_without_the_imagination_key_the_stages_book_what_they_booked_before(tmp_path):
    """`imagination` defaults to the teacher: no distill stage, and the reward and refine stages book the
    same settings (hence the same digests) and build on the same stages as before it existed, so
    finished runs stay finished; a `distill:` section alone changes nothing either."""
    import dataclasses

    from world4rl_bringup.stages import settings_digest

    run = tmp_path / "run"
    plain = _config(run)
    preset = tmp_path / "teacher.yaml"
    preset.write_text("imagination: teacher\ndistill: {steps: 7, size: tiny}\n")
    explicit = _config(run, "--preset", str(preset))
    assert (plain.imagination, explicit.distill) == ("teacher", {"steps": 7, "size": "tiny"})
    assert "distill" not in cov.stage_keys(plain)
    for cfg in (plain, explicit):
        assert cov.stage_keys(cfg) == cov.stage_keys(plain)
        assert cov.imagination_stages(cfg) == ["world-model"]
    reward = dataclasses.asdict(cov._reward_config(plain))
    assert reward["dream_world_model"] == str(run / "world_model")  # what the reward stage always booked
    assert reward == dataclasses.asdict(cov._reward_config(explicit))
    refine = cov._refine_settings(cov._refine_config(plain, "reach"))
    assert refine["world_model"] == str(run / "world_model")
    assert settings_digest(refine) == settings_digest(cov._refine_settings(cov._refine_config(explicit, "reach")))

    distilled = _config(run, "--imagination", "distilled", "--distill-set", "steps=7")
    assert cov.stage_keys(distilled)[3:6] == ["world-model", "distill", "reward"]
    assert cov.imagination_stages(distilled) == ["world-model", "distill"]
    student = str(run / "world_model_student")
    assert cov._reward_config(distilled).dream_world_model == student
    assert cov._refine_config(distilled, "reach").world_model == student
    d = cov._distill_config(distilled)
    assert (d.teacher, d.out, d.dataset, d.steps, d.threads) == (str(run / "world_model"), student,
                                                                 str(run / "dataset"), 7, 1)  # fmt: skip
    with pytest.raises(ValueError, match="--distill-set: DistillConfig has no setting 'stepz'"):
        _config(run, "--distill-set", "stepz=7")
    with pytest.raises(SystemExit):
        _config(run, "--imagination", "student")


def test_distilled_imagination_trains_a_student_that_the_classifier_and_ppo_dream_in(tmp_path, capsys):
    """imagination distilled at toy scale: world model -> distill -> reward on the student's dreams ->
    refine in the student; a changed distill setting reruns distill and what builds on it."""
    run = tmp_path / "run"
    extra = [
        "--imagination", "distilled",
        "--wm-set", "size=tiny", "--wm-set", "steps=3", "--wm-set", "batch_size=4", "--wm-set", "val_every=3",
        "--distill-set", "size=tiny", "--distill-set", "steps=3", "--distill-set", "batch_size=4",
        "--distill-set", "val_every=3", "--distill-set", "val_samples=4", "--distill-set", "warmup_steps=1",
        "--reward-set", "steps=3", "--reward-set", "channels=[8,8]", "--reward-set", "val_fraction=0.0",
        "--refine-set", "total_steps=16", "--refine-set", "num_envs=4", "--refine-set", "num_steps=4",
        "--refine-set", "video_episodes=0",
    ]  # fmt: skip
    until_refine = ["expert", "bc", "rollouts", "world-model", "distill", "reward", "refine"]
    book = cov.run_pipeline(_config(run, *extra), only=until_refine)
    assert list(book) == ["expert/reach", "bc/reach", "rollouts/reach", "world-model", "distill", "reward",
                          "refine/reach"]  # fmt: skip
    assert book["reward"]["after"].keys() >= {"world-model", "distill"}
    assert book["refine/reach"]["after"]["distill"] == book["distill"]["run_id"]
    from world4rl_model.checkpoint import load_config
    from world4rl_policy.policy import load_policy_module

    student = run / "world_model_student"
    config = load_config(student)
    assert config["model"]["sampling_steps"] == 1
    assert config["distilled_from"]["path"].startswith(str(run / "world_model"))
    assert load_config(run / "reward")["training"]["dream_world_model"] == str(student)
    _, policy = load_policy_module(run / "refine" / "reach")
    assert policy["refined_from"]["world_model"] == str(student.absolute())
    perf = json.loads((run / "refine" / "reach" / "summary.json").read_text())["perf"]
    assert (perf["sampling_steps"], perf["world_model_distilled"]) == (1, True)
    _check_the_benchmarks_imagination_speed(run, book)
    _check_the_benchmarks_cpu_per_stage(run, book)

    capsys.readouterr()
    cov.run_pipeline(_config(run, *extra, "--distill-set", "steps=4"), only=until_refine)
    out = capsys.readouterr().out
    assert "distill: changed since it ran: setting steps: running again" in out
    assert "reward: changed since it ran: stage distill ran again" in out
    assert "refine/reach: changed since it ran: stage distill ran again" in out
    assert load_config(student)["step"] == 4


def _bench_learning():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "bench_learning.py"
    spec = importlib.util.spec_from_file_location("bench_learning", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _check_the_benchmarks_cpu_per_stage(run, book):
    """bench_learning's CPU seconds per stage: the booked figure, the trainer's own count across resumes
    where that is larger, the wall time where no CPU was booked."""
    from world4rl_model.checkpoint import load_training_state

    bench = _bench_learning()
    trained = float(load_training_state(run / "world_model").extra["cpu_s"])
    assert trained > 0
    booked = book["world-model"]
    assert bench.stage_cpu_seconds(run, "world-model", booked) == max(booked["cpu_seconds"], trained)
    # A stage booked only its last resume: the trainer's count over all of them wins.
    assert bench.stage_cpu_seconds(run, "world-model", {**booked, "cpu_seconds": 0.0}) == trained
    assert bench.stage_cpu_seconds(run, "refine/reach", book["refine/reach"]) == book["refine/reach"]["cpu_seconds"]
    # Booked before CPU time was: its wall time, an upper bound.
    no_cpu = {k: v for k, v in book["expert/reach"].items() if k != "cpu_seconds"}
    assert bench.stage_cpu_seconds(run, "expert/reach", no_cpu) == no_cpu["seconds"]


def _check_the_benchmarks_imagination_speed(run, book):
    """bench_learning's imagined steps per CPU-hour: from the refine summary's perf (the PPO loop), or,
    for a run refined before it was recorded, from the refine stage's booked CPU seconds."""
    bench = _bench_learning()
    summary_path = run / "refine" / "reach" / "summary.json"
    summary = json.loads(summary_path.read_text())
    speed = bench.imagination_speed(run, book, "reach")
    perf = summary["perf"]
    assert speed["source"] == "ppo"
    assert (speed["imagined_steps"], speed["sampling_steps"]) == (16, 1)
    assert speed["imagined_steps_per_cpu_hour"] == pytest.approx(perf["imagined_steps_per_cpu_hour"])
    del summary["perf"]
    summary_path.write_text(json.dumps(summary))
    old = bench.imagination_speed(run, book, "reach")
    stage_cpu = book["refine/reach"]["cpu_seconds"]
    assert stage_cpu >= round(perf["ppo_cpu_seconds"], 1)  # the stage's CPU time holds the PPO loop's
    assert (old["source"], old["cpu_seconds"], old["imagined_steps"]) == ("stage", stage_cpu, 16)
    lines = bench.imagination_lines([{"task": "reach", "refine_imagination": old}], bench._means(
        [{"bc": {"success_rate": 0.5, "ci95_wilson": [0, 1]}, "refined": {"success_rate": 0.5, "ci95_wilson": [0, 1]},
          "refined_ci_above_bc_ci": False, "refine_imagination": old}]))  # fmt: skip
    assert "with calibration" in lines[-3]
    assert "with calibration" in lines[-1]
    summary_path.write_text(json.dumps({**summary, "perf": perf}))

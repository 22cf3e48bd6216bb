"""One-step distillation (world4rl_model.distillation): the student learns the teacher's samples, its
checkpoint carries its 1-step sampler and its teacher, resume is exact, a bad teacher is named."""

import json
import math

import pytest
import torch

from world4rl_model.checkpoint import checkpoint_fingerprint, list_checkpoints, load_checkpoint
from world4rl_model.data import EpisodeStore
from world4rl_model.distillation import DistillConfig, learning_rate, train_distill
from world4rl_model.env import WorldModelEnv
from world4rl_model.eval_cli import main as eval_main
from world4rl_model.synthetic import make_dataset
from world4rl_model.train_cli import main as train_main
from world4rl_model.training import WorldModelTrainConfig, train_world_model
from world4rl_model.world_model import WorldModel, frames_to_float


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny 2-step teacher trained a few steps on the square world, and its dataset."""
    root = tmp_path_factory.mktemp("distill")
    ds = make_dataset(root / "ds", episodes_per_task=5, length=10, image_size=16)
    cfg = WorldModelTrainConfig(
        dataset=str(ds.root), out=str(root / "teacher"), size="tiny", steps=30, batch_size=8, lr=2e-3,
        val_every=30, val_samples=8, val_fraction=0.2, progress=False, threads=1,
    )  # fmt: skip
    return train_world_model(cfg), ds


def _cfg(teacher_run, out, **kw):
    # pure distillation (real_weight 0): what the error-to-teacher test measures
    base = {"teacher": str(teacher_run), "out": str(out), "size": "tiny", "batch_size": 8, "lr": 3e-3,
            "warmup_steps": 1, "val_every": 100, "val_samples": 8, "checkpoint_every": 100, "progress": False,
            "threads": 1, "real_weight": 0.0}  # fmt: skip
    return DistillConfig(**{**base, **kw})


def _error_to_teacher(student_dir, teacher_run, ds) -> float:
    """MSE of the student's one-step samples to the teacher's from the same noise, on fixed contexts."""
    student, _ = WorldModel.from_checkpoint(student_dir)
    teach, _ = WorldModel.from_checkpoint(teacher_run)
    g = torch.Generator().manual_seed(123)
    store = EpisodeStore(ds, list(range(len(ds))))
    frames, actions = store.gather(store.sample_starts(16, 1, g), 4, 1)
    frames, actions = frames_to_float(frames[:, :4]), actions[:, :4]
    noise = torch.randn(16, 3, 16, 16, generator=g)
    target = teach.sample(frames, actions, quantize=False, noise=noise)
    return torch.nn.functional.mse_loss(student.sample(frames, actions, quantize=False, noise=noise), target).item()


def test_distillation_lowers_error_and_resumes_exactly(teacher, tmp_path):
    run, ds = teacher
    train_distill(_cfg(run, tmp_path / "resumed", steps=1))
    train_distill(_cfg(run, tmp_path / "resumed", steps=60))
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [1, 60]
    before = _error_to_teacher(tmp_path / "resumed" / "step_000000001", run, ds)
    after = _error_to_teacher(tmp_path / "resumed", run, ds)
    assert after < 0.5 * before, (before, after)
    # The resumed run is the uninterrupted one, weight for weight.
    train_distill(_cfg(run, tmp_path / "straight", steps=60))
    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "resumed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_student_checkpoint_carries_its_sampler_and_teacher(teacher, tmp_path):
    run, ds = teacher
    cfg = _cfg(run, tmp_path / "s", steps=2, channels=[8, 8], teacher_steps=3, teacher_sigma_min=0.01, real_weight=1.0)
    out = train_distill(cfg)
    student, config = WorldModel.from_checkpoint(out)
    teacher_config = json.loads((checkpoint_fingerprint(run).path / "config.json").read_text())
    assert student.config.sampling_steps == 1
    assert student.config.unet.channels == [8, 8]
    assert student.config.sigma_max == teacher_config["model"]["sigma_max"]
    fp = checkpoint_fingerprint(run)
    assert config["distilled_from"] == {
        "path": str(fp.path), "sha256": fp.sha256, "step": 30, "sampling_steps": 3, "sigma_min": 0.01
    }  # fmt: skip
    assert config["dataset"]["val_episodes"] == teacher_config["dataset"]["val_episodes"]  # the teacher's split
    assert config["training"]["real_weight"] == 1.0
    # One network evaluation per imagined step, through WorldModelEnv unchanged.
    calls = []
    student.net.register_forward_hook(lambda *_: calls.append(1))
    env = WorldModelEnv(student, None, ds, num_envs=3, seed=0)
    env.reset(seed=0)
    env.step(torch.zeros(3, 4))
    assert len(calls) == 1


def test_eval_cli_uses_the_student_sampler(teacher, tmp_path, capsys):
    run, _ = teacher
    out = train_distill(_cfg(run, tmp_path / "s", steps=2))
    ev = tmp_path / "ev"
    assert (
        eval_main(["world-model", str(out), "--horizons", "1,3", "--stride", "3", "--video", "0", "--out", str(ev)])
        == 0
    )
    result = json.loads((ev / "world_model_eval.json").read_text())
    assert result["sampling_steps"] == 1
    assert "1 Euler steps" in capsys.readouterr().out


def test_bad_teacher_is_named(teacher, tmp_path):
    missing = tmp_path / "no_such_teacher"
    with pytest.raises(ValueError, match="no_such_teacher"):
        train_distill(_cfg(missing, tmp_path / "s", steps=1))
    not_a_world_model = tmp_path / "reward_like"
    not_a_world_model.mkdir()
    (not_a_world_model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="reward_like"):
        train_distill(_cfg(not_a_world_model, tmp_path / "s2", steps=1))
    assert not (tmp_path / "s").exists()


def test_cli_help_explains_distill(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["distill", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("TEACHER", "--teacher-steps", "--max-cpu-minutes", "one network evaluation"):
        assert words in text
    with pytest.raises(SystemExit):
        train_main(["--help"])
    assert "distill" in capsys.readouterr().out


def test_learning_rate_warms_up_then_decays_to_the_final_fraction():
    cfg = DistillConfig(teacher="t", out="o", lr=1e-3, warmup_steps=10, steps=100, final_lr_fraction=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))))
    assert learning_rate(cfg, 50) == pytest.approx(1e-3 * 0.55)
    assert learning_rate(cfg, 100) == pytest.approx(1e-4)
    constant = DistillConfig(teacher="t", out="o", lr=1e-3, warmup_steps=10, steps=100, lr_schedule="constant")
    assert learning_rate(constant, 99) == pytest.approx(1e-3)

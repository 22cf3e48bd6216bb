"""Training CLIs: exact resume, checkpoint contents, tcmalloc re-exec, torchrun DDP, reward report."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from world4rl_model.checkpoint import list_checkpoints, load_checkpoint
from world4rl_model.dataset import manifest_hash
from world4rl_model.reward import RewardClassifier
from world4rl_model.reward_training import RewardTrainConfig, train_reward
from world4rl_model.runtime import find_tcmalloc
from world4rl_model.synthetic import make_dataset
from world4rl_model.training import WorldModelTrainConfig, train_world_model

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def square_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("square") / "ds"
    make_dataset(root, episodes_per_task=6, length=12, image_size=16)
    return root


def _cfg(ds, out, **kw):
    base = {
        "dataset": str(ds),
        "out": str(out),
        "size": "tiny",
        "batch_size": 8,
        "val_every": 4,
        "val_samples": 8,
        "checkpoint_every": 100,
        "progress": False,
        "threads": 1,
    }
    return WorldModelTrainConfig(**{**base, **kw})


def test_resume_continues_exactly(square_ds, tmp_path):
    train_world_model(_cfg(square_ds, tmp_path / "straight", steps=6))
    train_world_model(_cfg(square_ds, tmp_path / "resumed", steps=3))
    train_world_model(_cfg(square_ds, tmp_path / "resumed", steps=6))
    a, _ = load_checkpoint(tmp_path / "straight")
    b, config = load_checkpoint(tmp_path / "resumed")
    assert config["step"] == 6
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [3, 6]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_rollout_training_feeds_back_predictions(square_ds, tmp_path):
    run = train_world_model(_cfg(square_ds, tmp_path / "r", steps=2, rollout_steps=3))
    _, config = load_checkpoint(run)
    assert config["training"]["rollout_steps"] == 3


def _run(cmd, env=None, timeout=300):
    # Own session, so that a timeout also ends torchrun's worker processes, not only torchrun.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {out[-2000:]}{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out + err


def test_cli_checkpoint_has_everything_to_rebuild(square_ds, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LD_PRELOAD", None)
    env.pop("WORLD4RL_TCMALLOC_REEXEC", None)
    out = _run(
        [sys.executable, "-m", "world4rl_model.train_cli", "world-model", str(square_ds),
         "--out", str(tmp_path / "run"), "--size", "tiny", "--steps", "3", "--batch-size", "4",
         "--val-every", "3", "--threads", "1", "--no-progress"],
        env=env,
    )  # fmt: skip
    if find_tcmalloc():
        assert "tcmalloc True" in out  # re-executed itself with LD_PRELOAD
    _, config = load_checkpoint(tmp_path / "run", kind="world-model")
    assert config["dataset"]["manifest_sha256"] == manifest_hash(square_ds)
    assert config["dataset"]["tasks"] == ["reach-left", "reach-right"]
    assert config["model"]["image_size"] == 16
    assert config["model"]["context_frames"] == 4
    assert config["model"]["num_bins"] == 21
    assert config["action_space"]["dim"] == 4
    assert "frames" in config["normalisation"]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_torchrun_two_processes_gloo(square_ds, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD4RL_NO_TCMALLOC": "1"}
    out = _run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "world4rl_model.train_cli",
         "world-model", str(square_ds), "--out", str(tmp_path / "ddp"), "--size", "tiny", "--steps", "4",
         "--batch-size", "4", "--val-every", "4", "--no-progress"],
        env=env,
    )  # fmt: skip
    assert "world size 2" in out
    state, config = load_checkpoint(tmp_path / "ddp")
    assert config["step"] == 4
    assert all(torch.isfinite(v).all() for v in state.values())


def test_reward_classifier_learns_success_and_reports_calibration(tmp_path):
    ds = make_dataset(tmp_path / "ds", episodes_per_task=10, length=12, image_size=16, seed=1)
    cfg = RewardTrainConfig(
        dataset=str(ds.root), out=str(tmp_path / "rw"), steps=150, batch_size=32, val_every=150, progress=False,
        threads=1, val_fraction=0.3, channels=[16, 32, 32],
    )  # fmt: skip
    train_reward(cfg)
    report = json.loads((tmp_path / "rw" / "report.json").read_text())
    frames = report["frames"]
    assert frames["n"] > 0
    assert frames["positives"] > 0
    assert frames["accuracy"] > 0.85
    assert frames["recall"] > 0.6
    assert 0 <= frames["ece"] < 0.3
    assert len(frames["reliability"]) == 10
    assert sum(r["count"] for r in frames["reliability"]) == frames["n"]
    assert set(report["per_task"]) <= {"reach-left", "reach-right"}
    md = (tmp_path / "rw" / "report.md").read_text()
    assert "Reliability" in md
    assert "ECE" in md
    model, config = RewardClassifier.from_checkpoint(tmp_path / "rw")
    assert config["tasks"] == ["reach-left", "reach-right"]
    assert config["val_report"]["frames"]["accuracy"] == pytest.approx(frames["accuracy"])
    assert model.task_indices("reach-right", 2, "cpu").tolist() == [1, 1]


def test_reward_on_dreams_labels_each_dream_with_the_real_outcome_and_reports_on_held_out_dreams(tmp_path):
    from world4rl_model.data import EpisodeStore
    from world4rl_model.dataset import Dataset
    from world4rl_model.reward_dreams import dreamed_pool
    from world4rl_model.world_model import WorldModel, preset_config

    ds = make_dataset(tmp_path / "ds", episodes_per_task=4, length=12, image_size=16, seed=2)
    torch.manual_seed(0)
    WorldModel(preset_config("tiny", image_size=16, sampling_steps=1)).save(
        tmp_path / "wm", dataset={"manifest_sha256": manifest_hash(ds.root)}
    )
    store = EpisodeStore(Dataset(ds.root), [0, 1, 2])
    pool = dreamed_pool(str(tmp_path / "wm"), store, horizon=3, stride=4)
    # Episodes of 13 frames, starts every 4 steps that leave 3 real frames: t0 = 0, 4, 8 per episode.
    assert pool.frames.shape == (3 * 3 * 3, 3, 16, 16)
    assert pool.frames.dtype == torch.uint8
    assert pool.horizon.tolist() == [1, 2, 3] * 9
    expected = []
    for e in (0, 1, 2):
        success = Dataset(ds.root).episode(e)["success"]
        for t0 in (0, 4, 8):
            expected += success[t0 + 1 : t0 + 4].tolist()
    assert pool.success.tolist() == expected
    assert any(expected)
    assert not all(expected)

    cfg = RewardTrainConfig(
        dataset=str(ds.root), out=str(tmp_path / "rw"), steps=20, batch_size=16, val_every=20, progress=False,
        threads=1, val_fraction=0.3, channels=[8, 16], dream_world_model=str(tmp_path / "wm"), dream_horizon=3,
        dream_stride=4,
    )  # fmt: skip
    train_reward(cfg)
    report = json.loads((tmp_path / "rw" / "report.json").read_text())
    dreams = report["dreamed_frames"]
    assert dreams["frames"]["n"] == sum(r["n"] for r in dreams["per_horizon"].values()) > 0
    assert set(dreams["per_horizon"]) == {"1", "2", "3"}
    assert "World-model dreams of the held-out episodes" in (tmp_path / "rw" / "report.md").read_text()


def test_validation_reports_how_much_the_one_step_prediction_owes_to_the_action(square_ds, tmp_path):
    from contextlib import nullcontext

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from world4rl_model.data import EpisodeStore
    from world4rl_model.dataset import Dataset
    from world4rl_model.training import _validate
    from world4rl_model.world_model import WorldModel, preset_config

    run = train_world_model(_cfg(square_ds, tmp_path / "run", steps=4))
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    gains = [e.value for e in events.Scalars("val/action_gain_db")]
    assert len(gains) == 1
    assert torch.isfinite(torch.tensor(gains)).all()
    # A model blind to the actions predicts the same frame after any action: no gain, exactly (same noise).
    blind = WorldModel(preset_config("tiny", image_size=16, action_input=False))
    with torch.no_grad():
        for p in blind.parameters():
            p.add_(0.05 * torch.randn_like(p))
        torch.nn.init.zeros_(blind.action_emb.weight)
    store = EpisodeStore(Dataset(square_ds), list(range(4)))
    metrics, _ = _validate(blind, store, _cfg(square_ds, tmp_path / "v"), "cpu", nullcontext)
    assert metrics["val/action_gain_db"] == 0.0

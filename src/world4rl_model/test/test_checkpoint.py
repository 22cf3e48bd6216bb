"""Checkpoints: safetensors + JSON only, atomic replacement, training-state resume, `latest` pointer."""

import json
import random

import numpy as np
import pytest
import torch

from world4rl_model.checkpoint import (
    CheckpointError,
    capture_training_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_config,
    load_training_state,
    restore_training_state,
    save_checkpoint,
    save_run_checkpoint,
)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_roundtrip_and_only_safetensors_and_json(tmp_path):
    model = _model()
    config = {"kind": "test", "arch": {"hidden": 8}, "manifest_sha256": "ab" * 32}
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), config)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    state, loaded = load_checkpoint(path, kind="test")
    assert loaded["format"] == "world4rl-checkpoint"
    assert loaded["version"] == 1
    assert loaded["arch"] == {"hidden": 8}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v)
    with pytest.raises(CheckpointError, match="kind is 'test', expected 'reward'"):
        load_checkpoint(path, kind="reward")
    with pytest.raises(ValueError, match="kind"):
        save_checkpoint(tmp_path / "x", model.state_dict(), {"arch": 1})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x", model.state_dict(), {"kind": "t", "version": 7})
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_tied_tensors_are_saved(tmp_path):
    w = torch.randn(4, 4)
    save_checkpoint(tmp_path / "c", {"a": w, "b": w, "c": w[0]}, {"kind": "t"})
    state, _ = load_checkpoint(tmp_path / "c")
    torch.testing.assert_close(state["b"], w)
    torch.testing.assert_close(state["c"], w[0])


def test_replacement_keeps_old_until_new_is_complete(tmp_path):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {"w": torch.zeros(2)}, {"kind": "t", "n": 1})
    with pytest.raises(TypeError):
        save_checkpoint(path, {"w": "not a tensor"}, {"kind": "t", "n": 2})
    assert load_config(path)["n"] == 1  # failed write left the old checkpoint intact
    with pytest.raises(TypeError):  # not JSON-able: fails before touching anything
        save_checkpoint(path, {"w": torch.ones(2)}, {"kind": "t", "n": object()})
    save_checkpoint(path, {"w": torch.ones(2)}, {"kind": "t", "n": 3})
    state, config = load_checkpoint(path)
    assert config["n"] == 3
    assert state["w"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or old leftovers
    # Simulate a crash between "move old aside" and "rename new in": readers fall back to the old one.
    old = tmp_path / ".ckpt.old-abc"
    old.mkdir()
    path.rename(old / "x")
    assert load_config(path)["n"] == 3


def test_training_state_resume_is_exact(tmp_path):
    def run(model, opt, sched, steps):
        losses = []
        for _ in range(steps):
            x = torch.randn(16, 3)  # uses the global torch RNG: must be restored too
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        return losses

    def fresh():
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return model, opt, sched

    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    model, opt, sched = fresh()
    run(model, opt, sched, 3)
    state = capture_training_state(3, opt, sched, extra={"epoch": 1, "best": (0.5, "x")})
    save_checkpoint(tmp_path / "c", model.state_dict(), {"kind": "t"}, training_state=state)
    rng_probe = (torch.rand(1).item(), np.random.rand(), random.random())  # noqa: NPY002
    torch.manual_seed(99)  # scramble: the restore must bring the state back
    reference = run(model, opt, sched, 4)

    model2, opt2, sched2 = fresh()
    weights, _ = load_checkpoint(tmp_path / "c")
    model2.load_state_dict(weights)
    loaded = load_training_state(tmp_path / "c")
    assert loaded.extra == {"epoch": 1, "best": (0.5, "x")}
    assert restore_training_state(loaded, opt2, sched2) == 3
    probe = (torch.rand(1).item(), np.random.rand(), random.random())  # noqa: NPY002
    assert probe == rng_probe
    restore_training_state(loaded)  # RNG again, to undo the probe
    assert tuple(opt2.param_groups[0]["betas"]) == (0.9, 0.95)
    assert opt2.state_dict()["state"][0]["exp_avg"].shape == (8, 3)
    torch.manual_seed(99)
    assert run(model2, opt2, sched2, 4) == reference
    meta = json.loads((tmp_path / "c" / "training_state.json").read_text())
    assert meta["step"] == 3


def test_run_dir_latest_pointer_and_pruning(tmp_path):
    run = tmp_path / "run"
    assert latest_checkpoint(run) is None
    for step in (10, 20, 30, 40):
        save_run_checkpoint(run, step, {"w": torch.full((1,), float(step))}, {"kind": "t"}, keep=2)
    assert [s for s, _ in list_checkpoints(run)] == [30, 40]
    assert (run / "latest").read_text().strip() == "step_000000040"
    state, _ = load_checkpoint(run)  # a run dir resolves to its latest
    assert state["w"].item() == 40.0
    # A stale pointer (its target deleted) falls back to the newest complete checkpoint.
    (run / "latest").write_text("step_000000099\n")
    assert latest_checkpoint(run).name == "step_000000040"
    assert load_checkpoint(run)[0]["w"].item() == 40.0

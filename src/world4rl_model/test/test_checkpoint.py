"""Checkpoints: safetensors + JSON only, atomic replacement, training-state resume, `latest` pointer."""

import json
import os
import random
import shutil

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
    # Simulate a crash between "move old aside" and "rename new in": readers do not load the old one
    # in its place (it was being replaced), they refuse and say where it is.
    old = tmp_path / ".ckpt.old-abc"
    old.mkdir()
    path.rename(old / "x")
    with pytest.raises(CheckpointError, match=r"does not exist.*interrupted save.*\.ckpt\.old-abc/x"):
        load_config(path)


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
    # A stale pointer (its target deleted) is refused, not replaced by another checkpoint.
    (run / "latest").write_text("step_000000099\n")
    with pytest.raises(CheckpointError, match="step_000000099"):
        load_checkpoint(run)


# ---------------------------------------------------------------------------------- resolution


def _run(root, steps=(10, 20)):
    for step in steps:
        save_run_checkpoint(root, step, {"w": torch.full((1,), float(step))}, {"kind": "t"}, keep=0)
    return root


def _resolve(path):
    from world4rl_model.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


def _refused(path, *parts):
    """resolve_checkpoint(path) raises a CheckpointError whose message holds every part."""
    with pytest.raises(CheckpointError) as info:
        _resolve(path)
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)
    return message


def test_a_latest_pointer_that_leaves_the_run_is_refused(tmp_path):
    run = _run(tmp_path / "runs" / "run")
    other = _run(tmp_path / "runs" / "other_run", steps=(5,))
    latest = run / "latest"
    # A relative path out of the run, and an absolute one.
    latest.write_text("../other_run/step_000000005\n")
    _refused(run, str(latest), "../other_run/step_000000005", "outside the run", str(run))
    latest.write_text(f"{other / 'step_000000005'}\n")
    _refused(run, str(latest), str(other / "step_000000005"), "absolute")
    # A step directory inside the run that is a symlink to another run's checkpoint.
    os.symlink(other / "step_000000005", run / "step_000000030")
    latest.write_text("step_000000030\n")
    _refused(run, "step_000000030", "symlink", str(other / "step_000000005"), "outside the run")
    # `latest` itself as a symlink to a checkpoint directory elsewhere.
    latest.unlink()
    (run / "step_000000030").unlink()
    os.symlink(other / "step_000000005", latest)
    _refused(run, str(latest), str(other / "step_000000005"), "outside the run")
    # ... and as a symlink inside the run, which is fine.
    latest.unlink()
    os.symlink("step_000000010", latest)
    assert _resolve(run) == run / "step_000000010"


def test_a_pointer_to_a_missing_step_fails_even_with_leftovers_present(tmp_path):
    run = _run(tmp_path / "run")
    # An interrupted save of step 30 (its temp dir, complete-looking) and an interrupted
    # replacement of it (the old one moved aside): neither is step 30.
    save_checkpoint(tmp_path / "scratch", {"w": torch.full((1,), 99.0)}, {"kind": "t"})
    shutil.copytree(tmp_path / "scratch", run / ".step_000000030.tmp-abc123")
    (run / ".step_000000030.old-def456").mkdir()
    shutil.copytree(tmp_path / "scratch", run / ".step_000000030.old-def456" / "x")
    (run / "latest").write_text("step_000000030\n")
    message = _refused(run, str(run / "latest"), "step_000000030", "does not exist")
    assert ".step_000000030.tmp-abc123" in message
    assert ".step_000000030.old-def456/x" in message
    # Naming the missing step itself: refused too, the leftover is not loaded in its place.
    _refused(run / "step_000000030", str(run / "step_000000030"), "does not exist", ".step_000000030.old-def456/x")
    with pytest.raises(CheckpointError):
        load_checkpoint(run / "step_000000030")


def test_a_directory_with_only_leftovers_of_interrupted_saves_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(tmp_path / "scratch", {"w": torch.ones(1)}, {"kind": "t"})
    shutil.copytree(tmp_path / "scratch", run / ".step_000000010.tmp-k2j3h4")
    _refused(run, str(run), "only leftovers of interrupted saves", ".step_000000010.tmp-k2j3h4")
    assert latest_checkpoint(run) is None  # nothing to resume from: a trainer starts afresh
    (run / "step_000000020").mkdir()  # a step directory without its files
    (run / "step_000000020" / "config.json").write_text("{}")
    _refused(run, "step_000000020", "incomplete", "model.safetensors")


def test_a_checkpoint_without_its_weights_or_config_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(1)}, {"kind": "t"})
    (path / "model.safetensors").unlink()
    _refused(path, str(path), "incomplete", "no model.safetensors")
    run = _run(tmp_path / "run")
    (run / "step_000000020" / "config.json").unlink()
    _refused(run, str(run / "latest"), "step_000000020", "incomplete", "no config.json")
    _refused(tmp_path / "nothing", str(tmp_path / "nothing"), "does not exist")


def test_a_valid_run_resolves_to_its_latest_and_the_fingerprint_names_the_weights(tmp_path):
    from world4rl_model.checkpoint import checkpoint_fingerprint

    run = _run(tmp_path / "run", steps=(10, 20, 30))
    (run / "latest").write_text("step_000000020\n")  # latest need not be the highest step
    assert _resolve(run) == run / "step_000000020"
    assert _resolve(run / "step_000000030") == run / "step_000000030"
    (run / "latest").unlink()  # no pointer (a crash before the first one was written): the highest step
    assert _resolve(run) == run / "step_000000030"

    first = checkpoint_fingerprint(run)
    assert first.path == (run / "step_000000030").resolve()
    assert first.step == 30
    assert (
        first.sha256
        == __import__("hashlib").sha256((run / "step_000000030" / "model.safetensors").read_bytes()).hexdigest()
    )
    assert len(first.short) == 12
    assert first.sha256.startswith(first.short)
    assert checkpoint_fingerprint(run) == first  # stable
    for part in (str(first.path), first.short, "step 30"):
        assert part in str(first)
    # Other weights under the same name: another hash (the file's: `sha256sum model.safetensors` agrees).
    save_run_checkpoint(run, 30, {"w": torch.full((1,), 31.0)}, {"kind": "t"}, keep=0)
    assert checkpoint_fingerprint(run).sha256 != first.sha256

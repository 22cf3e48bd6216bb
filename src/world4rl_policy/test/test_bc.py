"""Behaviour cloning on a tiny synthetic dataset in the real format: the loss goes down, the
policy imitates a simple expert far better than chance, runs resume exactly, tasks filter."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from world4rl_policy import bc
from world4rl_policy import policy as pol

TINY = {"progress": False, "threads": 1}
TINY_POLICY = {"channels": (8, 16, 16, 16), "hidden_dim": 64}
POLICY_SETTINGS = {f.name for f in dataclasses.fields(pol.PolicyConfig)}


def _cfg(data, out, **kw):
    """BCConfig; the policy's settings among kw (hidden_dim=...) go to its nested PolicyConfig."""
    policy = {**TINY_POLICY, **{k: v for k, v in kw.items() if k in POLICY_SETTINGS}}
    rest = {k: v for k, v in kw.items() if k not in POLICY_SETTINGS}
    return bc.BCConfig(dataset=str(data), out=str(out), policy=pol.PolicyConfig(**policy), **{**TINY, **rest})


def test_bc_data_histories_repeat_the_first_frame_like_frame_history(dot_dataset):
    from world4rl_model.dataset import Dataset

    ds = Dataset(dot_dataset(episodes=3, length=5))
    data = bc.BCData(ds, [1, 2], frame_history=4, use_proprio=True)
    assert len(data) == 10
    ep = ds.episode(2)
    b = data.batch(np.array([5, 6, 9]))  # episode 2, t = 0, 1, 4
    hist = pol.FrameHistory(4)
    hist.push(ep["frames"][0])
    np.testing.assert_array_equal(b["frames"][0].numpy(), hist.array())
    hist.push(ep["frames"][1])
    np.testing.assert_array_equal(b["frames"][1].numpy(), hist.array())
    np.testing.assert_array_equal(b["frames"][2].numpy(), ep["frames"][1:5])
    np.testing.assert_array_equal(b["actions"].numpy(), ep["actions"][[0, 1, 4]])
    np.testing.assert_array_equal(b["proprio"].numpy(), ep["joint_positions"][[0, 1, 4]])


def test_bc_data_stops_a_few_frames_after_the_first_success(tmp_path):
    from world4rl_model.dataset import Dataset, DatasetWriter

    writer = DatasetWriter(tmp_path / "ds", image_size=16)
    rng = np.random.default_rng(0)
    for first in (3, None):  # a success at frame 3 (then held), and a failure
        success = np.zeros(10, bool)
        if first is not None:
            success[first:] = True
        writer.add_episode(
            rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8),
            rng.uniform(-1, 1, (10, 4)).astype(np.float32),
            task="reach",
            success=first is not None,
            kind="expert",
            success_per_frame=success,
        )
    ds = Dataset(tmp_path / "ds")
    assert len(bc.BCData(ds, [0], 4, False, post_success_frames=2)) == 3 + 2 + 1
    assert len(bc.BCData(ds, [0], 4, False, post_success_frames=None)) == 10
    assert len(bc.BCData(ds, [1], 4, False, post_success_frames=2)) == 10  # never succeeded: all of it
    trimmed = bc.BCData(ds, [0, 1], 4, False, post_success_frames=0)
    np.testing.assert_array_equal(trimmed.batch(np.array([4]))["actions"][0].numpy(), ds.episode(1)["actions"][0])


def test_random_shift_keeps_shape_and_content_scale():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 4, 16, 16, 3), dtype=torch.uint8)
    out = bc.random_shift(frames, 0, gen)
    torch.testing.assert_close(out, frames.float() / 255)
    shifted = bc.random_shift(frames, 2, gen)
    assert shifted.shape == (5, 4, 16, 16, 3)
    # The same shift for every frame of a sample: a frame pair equal before stays equal after.
    same = frames.clone()
    same[:, 1] = same[:, 0]
    s2 = bc.random_shift(same, 2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(s2[:, 0], s2[:, 1])

    # Content is moved, not invented: each output is the input translated by some (dy, dx) in
    # [-2, 2]^2 with edges replicated, and over many samples several shifts occur.
    def idx(d):
        return (torch.arange(16) + d).clamp(0, 15)

    shifts = []
    for i, sample in enumerate(bc.random_shift(frames, 2, torch.Generator().manual_seed(5))):
        src = frames[i].float() / 255
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(
                sample, src[:, (torch.arange(16) + dy).clamp(0, 15)][:, :, (torch.arange(16) + dx).clamp(0, 15)]
            )
        ]
        assert len(matches) == 1, i
        shifts.append(matches[0])
    assert len(set(shifts)) >= 2


def test_nll_loss_is_the_policys_gaussian_nll_and_decoupled_weighs_every_dimension_alike():
    torch.manual_seed(0)
    mean = torch.randn(16, 4, requires_grad=True)
    log_std = torch.tensor([-0.5, -0.5, -0.5, -5.0]).expand(16, 4).clone().requires_grad_(True)
    actions = torch.randn(16, 4)
    expected = -torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1).mean() / 4
    assert torch.allclose(bc.bc_loss(mean, log_std, actions, "nll"), expected)

    # NLL: a dimension with a collapsed std (the gripper at the floor) gets e^9 times the mean gradient.
    (g_nll,) = torch.autograd.grad(bc.bc_loss(mean, log_std, actions, "nll"), mean)
    # Decoupled: the mean's gradient is the squared error's, whatever the std ...
    (g_dec,) = torch.autograd.grad(bc.bc_loss(mean, log_std, actions, "decoupled"), mean)
    assert torch.allclose(g_dec, 2 * (mean - actions) / mean.numel())
    weight = (g_nll / (mean - actions)).abs().mean(0)  # the gradient's weight on each dimension's error
    ratio_nll = weight[3] / weight[0]
    assert ratio_nll > 1000
    # ... and the std is still fitted by the NLL around the (detached) mean: its optimum is the residual spread.
    resid = (actions - mean.detach()).abs().pow(2).mean(0).sqrt()
    ls = resid.log().expand(16, 4).clone().requires_grad_(True)
    (g_std,) = torch.autograd.grad(bc.bc_loss(mean, ls, actions, "decoupled"), ls)
    assert g_std.sum(0).abs().max() < 1e-5
    with pytest.raises(ValueError, match="unknown BC loss"):
        bc.bc_loss(mean, log_std, actions, "l1")


def test_decoupled_bc_trains_the_std_head_alone_so_a_collapsed_std_cannot_move_the_encoder(dot_dataset, tmp_path):
    """The std's NLL reaches the log-std head only. Through the shared encoder, a dimension the
    demonstrations never vary (the gripper, std at its floor) made each small error a gradient
    spike that the clipped step followed, and the image policy never learned (Meta-World BC 0 %)."""
    from torch.nn import functional as F

    from world4rl_model.harness import Harness, LoopSettings

    data = dot_dataset(episodes=4, length=8, seed=3)
    cfg = _cfg(data, tmp_path / "run", steps=1, batch_size=16)
    with Harness(LoopSettings.from_config(cfg)) as harness:
        training = bc._BCTraining(cfg, harness)
    policy = training.model
    torch.nn.init.constant_(policy.log_std_head.bias, policy.config.log_std_min)  # a collapsed std
    batch = training.batch(0)
    batch["actions"] = batch["actions"] + 0.05  # errors that the floor std turns into a large NLL

    def grads(loss, params):
        return torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)

    shared = [p for n, p in policy.named_parameters() if n.startswith(("encoder", "trunk", "actor"))]
    loss, _ = training.loss(batch)
    mean, log_std, _ = policy(batch["frames"], detach_std=True)
    mse_only = grads(F.mse_loss(mean, batch["actions"]), shared)
    for i, (got, want) in enumerate(zip(grads(loss, shared), mse_only, strict=True)):
        assert torch.allclose(got, want, atol=1e-7), i  # the mean's squared error alone
    (g_head,) = grads(loss, [policy.log_std_head.bias])
    assert g_head.abs().max() > 0.1  # the std is still fitted (pulled up from the floor)
    # Without detaching, the std's NLL would dominate the shared weights' gradient.
    _, log_std_attached, _ = policy(batch["frames"])
    nll_std = -torch.distributions.Normal(mean.detach(), log_std_attached.exp()).log_prob(batch["actions"]).mean()
    norm = lambda gs: torch.sqrt(sum((g**2).sum() for g in gs if g is not None))  # noqa: E731
    assert norm(grads(nll_std, shared)) > 10 * norm(mse_only)
    assert torch.equal(log_std_attached, log_std)  # detaching changes gradients, never values


def test_bc_loss_goes_down_and_imitates_the_expert_better_than_chance(dot_dataset, tmp_path):
    from world4rl_model.dataset import Dataset

    data = dot_dataset(episodes=24, length=16, seed=1)
    cfg = _cfg(data, tmp_path / "run", steps=500, batch_size=32, lr=1e-3, val_every=125, val_fraction=0.25,
               augment_shift=1, log_std_max=2.0, checkpoint_every=200)  # fmt: skip
    summary = bc.train_bc(cfg)
    hist = summary["history"]
    assert [h["step"] for h in hist] == [125, 250, 375, 500]
    assert hist[-1]["nll"] < hist[0]["nll"] - 0.3, hist

    # Chance: the best constant action (the training mean) on the validation episodes.
    ds = Dataset(data)
    train_eps, val_eps = bc._split(ds, bc.select_episodes(ds, cfg), cfg)
    assert val_eps
    train_mean = np.concatenate([ds.episode(i)["actions"] for i in train_eps]).mean(0)
    val_actions = np.concatenate([ds.episode(i)["actions"] for i in val_eps])
    chance_mse = float(((val_actions - train_mean) ** 2).mean())
    assert summary["final_val"]["mse"] < 0.25 * chance_mse, (summary["final_val"], chance_mse)

    # The saved best policy runs alone and reproduces the expert's gripper decision on held-out frames.
    runner = pol.load_policy(tmp_path / "run" / "best")
    gripper_right = 0
    total = 0
    for i in val_eps:
        ep = ds.episode(i)
        h = runner.new_history()
        for t in range(len(ep["actions"])):
            h.push(ep["frames"][t])
            a = runner.act(h.array())
            gripper_right += np.sign(a[3]) == np.sign(ep["actions"][t][3])
            total += 1
    assert gripper_right / total > 0.9
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["trainer"] == "bc"
    assert config["tasks"] == ["reach"]
    assert config["dataset"]["manifest_sha256"] == ds.hash
    assert config["val_episodes"] == val_eps
    assert (tmp_path / "run" / "latest").read_text().strip() == "step_000000500"
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard event file


def test_resume_continues_exactly_where_it_stopped(dot_dataset, tmp_path):
    data = dot_dataset(episodes=6, length=8, seed=2)
    straight = bc.train_bc(_cfg(data, tmp_path / "a", steps=16, checkpoint_every=8, val_every=8, batch_size=8))
    bc.train_bc(_cfg(data, tmp_path / "b", steps=8, checkpoint_every=8, val_every=8, batch_size=8))
    resumed = bc.train_bc(_cfg(data, tmp_path / "b", steps=16, checkpoint_every=8, val_every=8, batch_size=8))
    assert resumed["steps"] == 16
    wa, _ = pol.load_policy_module(tmp_path / "a")
    wb, _ = pol.load_policy_module(tmp_path / "b")
    for (name, ta), tb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0, msg=name)
    assert resumed["final_val"] == straight["final_val"]
    # A finished run is not trained further; a different architecture refuses to resume.
    assert bc.train_bc(_cfg(data, tmp_path / "b", steps=16))["steps"] == 16
    with pytest.raises(ValueError, match="existing run has architecture"):
        bc.train_bc(_cfg(data, tmp_path / "b", steps=20, hidden_dim=32))


def test_task_and_kind_filtering(dot_dataset, tmp_path):
    from world4rl_model.dataset import Dataset, DatasetWriter

    data = dot_dataset(episodes=8, length=6, tasks=("push", "reach"))
    DatasetWriter(data, image_size=16).add_episode(
        np.zeros((6, 16, 16, 3), np.uint8), np.zeros((6, 4), np.float32), task="push", success=True, kind="random"
    )
    ds = Dataset(data)
    chosen = bc.select_episodes(ds, _cfg(data, tmp_path / "x", tasks=["push"]))
    assert chosen == [0, 2, 4, 6]  # push episodes, the random one left out
    with_random = bc.select_episodes(ds, _cfg(data, tmp_path / "x", tasks=["push"], kinds=["expert", "random"]))
    assert with_random == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="not in the dataset's tasks"):
        bc.select_episodes(ds, _cfg(data, tmp_path / "x", tasks=["open-drawer"]))
    with pytest.raises(ValueError, match="no episodes match"):
        bc.select_episodes(ds, _cfg(data, tmp_path / "x", tasks=["push"], kinds=["human"]))
    with pytest.warns(UserWarning, match="no task was chosen"):
        bc.select_episodes(ds, _cfg(data, tmp_path / "x"))
    summary = bc.train_bc(_cfg(data, tmp_path / "push", tasks=["push"], steps=4, val_every=2, batch_size=4))
    config = json.loads((tmp_path / "push" / "best" / "config.json").read_text())
    assert config["tasks"] == ["push"]
    assert set(config["train_episodes"] + config["val_episodes"]) == {0, 2, 4, 6}
    assert summary["train_episodes"] + summary["val_episodes"] == 4


def test_policy_sizes_come_from_the_dataset_and_old_checkpoints_resume(dot_dataset, tmp_path):
    """BCConfig nests the policy's config; the sizes the data decide are the dataset's whatever
    cfg.policy holds. A run written before the nesting (flat bc_config in its checkpoints) loads and
    resumes: the checkpoint's policy config is what counts."""
    data = dot_dataset(episodes=4, length=6, size=16)
    cfg = _cfg(data, tmp_path / "r", steps=2, val_every=2, checkpoint_every=2, batch_size=4, frame_history=2)
    assert (cfg.policy.image_size, cfg.policy.action_dim) == (64, 4)  # PolicyConfig's defaults
    bc.train_bc(cfg)
    runner = pol.load_policy(tmp_path / "r")
    assert (runner.config.image_size, runner.config.frame_history, runner.config.hidden_dim) == (16, 2, 64)
    config_path = tmp_path / "r" / "latest"
    step_dir = tmp_path / "r" / config_path.read_text().strip()
    config = json.loads((step_dir / "config.json").read_text())
    assert config["bc_config"]["policy"]["hidden_dim"] == 64
    old = {k: v for k, v in config["bc_config"].items() if k != "policy"}
    old.update(frame_history=2, channels=[8, 16, 16, 16], hidden_dim=64, log_std_min=-5.0, log_std_max=0.0)
    (step_dir / "config.json").write_text(json.dumps({**config, "bc_config": old}))
    assert bc.train_bc(dataclasses.replace(cfg, steps=4))["steps"] == 4
    assert pol.load_policy(tmp_path / "r").config == runner.config
    assert bc.BCConfig("d", "o", post_success_frames=-1).post_success_frames is None  # the old CLI's "-1: all"


def test_proprio_policy_trains_and_stores_its_normaliser(dot_dataset, tmp_path):
    data = dot_dataset(episodes=4, length=6)
    bc.train_bc(_cfg(data, tmp_path / "p", steps=3, val_every=3, batch_size=4, use_proprio=True))
    runner = pol.load_policy(tmp_path / "p" / "best")
    assert runner.config.proprio_dim == 9
    std = np.array(runner.checkpoint_config["normaliser"]["proprio_std"])
    assert np.all(std > 0.3)
    assert np.all(std < 3)  # the fixture's joints are N(0, 1)
    a = runner.act(np.zeros((4, 16, 16, 3), np.uint8), proprio=np.zeros(9))
    assert a.shape == (4,)


def test_cli_trains_and_reports(dot_dataset, tmp_path, capsys):
    from world4rl_policy import train_bc_cli

    data = dot_dataset(episodes=4, length=6)
    rc = train_bc_cli.main(
        ["--dataset", str(data), "--out", str(tmp_path / "cli"), "--steps", "3", "--val-every", "3",
         "--batch-size", "4", "--no-progress", "--threads", "1", "--hidden-dim", "32"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3
    assert pol.load_policy(tmp_path / "cli").act(np.zeros((1, 16, 16, 3), np.uint8)).shape == (4,)
    rc = train_bc_cli.main(["--dataset", str(data), "--out", str(tmp_path / "bad"), "--task", "nope"])
    assert rc == 2
    assert "not in the dataset's tasks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_bc_cli.main(["--help"])
    assert "conservative exploration" in capsys.readouterr().out

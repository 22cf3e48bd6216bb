"""The Gaussian policy: distribution maths, log-std bounds, checkpoints, and the act() API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from world4rl_policy import policy as pol
from world4rl_spec import ACTION_DIM, LEARNING_IMAGE_SIZE

SMALL = {"image_size": 16, "channels": (8, 16, 16, 16), "hidden_dim": 32}


def _frames(b=3, t=4, s=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, t, s, s, 3), dtype=np.uint8))


def test_default_policy_shapes_and_spec():
    p = pol.GaussianPolicy()
    cfg = p.config
    assert (cfg.image_size, cfg.frame_history, cfg.action_dim) == (LEARNING_IMAGE_SIZE, 4, ACTION_DIM)
    assert cfg.log_std_max == 0.0
    mean, log_std, value = p(_frames(2, s=64))
    assert mean.shape == (2, ACTION_DIM)
    assert log_std.shape == (2, ACTION_DIM)
    assert value.shape == (2,)


def test_log_prob_is_the_gaussian_density_and_bc_nll_is_consistent():
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    x = _frames()
    actions = torch.tensor([[1.0, -1.0, 0.3, 1.0], [0.0, 0.5, -0.2, -1.0], [2.0, -3.0, 0.0, 1.0]])
    mean, log_std, _ = p(x)
    manual = (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(p.log_prob(x, actions), manual)
    # BC's loss is exactly PPO's log-prob, averaged per action dimension.
    torch.testing.assert_close(pol.gaussian_nll(p, x, actions), -manual.mean() / ACTION_DIM)
    # PPO's update: log-prob and entropy of the policy's Gaussian (what `distribution` returns).
    dist = p.distribution(x)
    torch.testing.assert_close(dist.log_prob(actions).sum(-1), manual)
    torch.testing.assert_close(dist.entropy().sum(-1), (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1))
    # Saturated demo actions (gripper exactly +-1) have finite NLL: no atanh anywhere.
    assert torch.isfinite(pol.gaussian_nll(p, x, actions.clamp(-1, 1)))


def test_sample_and_clip():
    torch.manual_seed(0)
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    x = _frames()
    mean, log_std, _ = p(x)
    dist = p.distribution(x)
    torch.testing.assert_close(dist.mean, mean)
    torch.testing.assert_close(dist.log_prob(mean).sum(-1), p.log_prob(x, mean))
    raw = dist.sample()  # what PPO's rollout executes (clipped) and scores (raw)
    assert raw.shape == mean.shape
    assert not torch.equal(raw, mean)
    torch.testing.assert_close(dist.log_prob(raw).sum(-1), p.log_prob(x, raw))
    torch.testing.assert_close(dist.stddev, log_std.exp())
    big = torch.tensor([[3.0, -3.0, 0.5, 1.5]])
    assert pol.clip_action(big).tolist() == [[1.0, -1.0, 0.5, 1.0]]
    np.testing.assert_array_equal(pol.clip_action(big.numpy()), [[1.0, -1.0, 0.5, 1.0]])


@pytest.mark.parametrize("log_std_max", [0.0, 2.0])
def test_log_std_stays_within_bounds_with_live_gradients(log_std_max):
    cfg = pol.PolicyConfig(**SMALL, log_std_min=-4.0, log_std_max=log_std_max)
    p = pol.GaussianPolicy(cfg)
    x = _frames()
    for bias in (-1e3, -10.0, 0.0, 10.0, 1e3):
        with torch.no_grad():
            p.log_std_head.bias.fill_(bias)
        _, log_std, _ = p(x)
        assert torch.all(log_std <= log_std_max)
        assert torch.all(log_std >= -4.0)
    raw = torch.tensor([-100.0, -4.0, 0.0, log_std_max, 100.0], requires_grad=True)
    out = pol.soft_clamp(raw, -4.0, log_std_max)
    out.sum().backward()
    assert torch.all(raw.grad >= 0)
    assert torch.all(raw.grad[1:4] > 0.05)  # alive at and around the bounds
    # Identity well inside.
    assert float(pol.soft_clamp(torch.tensor(-2.0), -20.0, 20.0)) == pytest.approx(-2.0, abs=1e-6)


def test_bad_frames_are_rejected_with_the_expected_shape():
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    with pytest.raises(ValueError, match=r"frames must be \[B, 4, 16, 16, 3\]"):
        p(_frames(s=32))


def test_config_validation():
    with pytest.raises(ValueError, match="log_std_min"):
        pol.PolicyConfig(log_std_min=1.0, log_std_max=0.0)
    with pytest.raises(ValueError, match="divisible"):
        pol.PolicyConfig(image_size=24)
    with pytest.raises(ValueError, match="unknown policy config"):
        pol.PolicyConfig.from_dict({"image_size": 64, "bogus": 1})


def test_checkpoint_round_trip_is_enough_to_run(tmp_path):
    torch.manual_seed(1)
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL, proprio_dim=9))
    p.set_proprio_normaliser(np.arange(9), np.full(9, 2.0))
    path = pol.save_policy(tmp_path / "ckpt", p, tasks=["push"])
    assert sorted(f.name for f in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "policy"
    assert config["frame_history"] == 4
    assert config["image_size"] == 16
    assert config["action_space"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert config["action_space"]["ee_delta_scale_m"] == 0.02
    assert config["normaliser"]["proprio_std"] == [2.0] * 9
    assert config["tasks"] == ["push"]

    runner = pol.load_policy(path)
    frames = _frames(1, s=16)[0].numpy()
    proprio = np.linspace(-1, 1, 9)
    with torch.no_grad():
        mean, _, _ = p(torch.from_numpy(frames)[None], torch.tensor(proprio, dtype=torch.float32)[None])
    a = runner.act(frames, proprio=proprio)
    assert a.dtype == np.float32
    assert a.shape == (4,)
    np.testing.assert_allclose(a, mean[0].clamp(-1, 1).numpy(), atol=1e-6)
    assert runner.checkpoint_config["tasks"] == ["push"]
    with pytest.raises(ValueError, match="proprioception"):
        runner.act(frames)


def test_loading_rejects_other_kinds_and_mismatched_weights(tmp_path):
    from world4rl_model import checkpoint

    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    checkpoint.save_checkpoint(tmp_path / "wm", p.state_dict(), {"kind": "world-model"})
    with pytest.raises(checkpoint.CheckpointError, match="kind is 'world-model'"):
        pol.load_policy(tmp_path / "wm")
    path = pol.save_policy(tmp_path / "ok", p)
    config = json.loads((path / "config.json").read_text())
    config["architecture"]["hidden_dim"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match="do not match the architecture"):
        pol.load_policy(path)


def test_act_pads_short_histories_like_frame_history(tmp_path):
    torch.manual_seed(2)
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    runner = pol.load_policy(pol.save_policy(tmp_path / "c", p))
    f = _frames(1, t=6, s=16)[0].numpy()
    # One frame = that frame repeated 4 times; 6 frames = the last 4.
    np.testing.assert_array_equal(runner.act(f[:1]), runner.act(np.repeat(f[:1], 4, axis=0)))
    np.testing.assert_array_equal(runner.act(f[0]), runner.act(f[:1]))
    np.testing.assert_array_equal(runner.act(f), runner.act(f[2:]))
    hist = runner.new_history()
    hist.push(f[0])
    hist.push(f[1])
    np.testing.assert_array_equal(hist.array(), np.stack([f[0], f[0], f[0], f[1]]))
    np.testing.assert_array_equal(runner.act(hist.array()), runner.act(f[:2]))
    hist.reset()
    with pytest.raises(ValueError, match="no frame"):
        hist.array()


def test_frame_history_is_a_ring_of_copies_written_into_a_reused_buffer():
    """The runtime node's history: frames are copied in (a caller reusing its buffer changes nothing),
    array(out=) fills the node's buffer with the same frames array() returns, oldest first."""
    hist = pol.FrameHistory(4)
    frame = np.zeros((8, 8, 3), np.uint8)
    out = np.empty((4, 8, 8, 3), np.uint8)
    pushed = []
    for k in range(1, 11):
        frame[:] = k  # the caller's one buffer, rewritten every frame
        hist.push(frame)
        pushed.append(np.full((8, 8, 3), k, np.uint8))
        want = np.stack(([pushed[0]] * 4 + pushed)[-4:])
        assert hist.array(out=out) is out
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(hist.array(), want)
        assert len(hist) == min(k, 4)
    fresh = hist.array()
    hist.push(np.zeros((8, 8, 3), np.uint8))
    assert fresh[-1, 0, 0, 0] == 10  # array() without out= is the caller's own copy
    hist.reset()
    hist.push(np.full((8, 8, 3), 99, np.uint8))
    np.testing.assert_array_equal(hist.array()[:, 0, 0, 0], [99, 99, 99, 99])
    with pytest.raises(ValueError, match="differs from the history"):
        hist.push(np.zeros((16, 16, 3), np.uint8))


def test_act_rejects_wrong_images_and_samples_reproducibly(tmp_path):
    runner = pol.load_policy(pol.save_policy(tmp_path / "c", pol.GaussianPolicy(pol.PolicyConfig(**SMALL))), seed=3)
    with pytest.raises(ValueError, match="16x16 RGB"):
        runner.act(np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="16x16 RGB"):
        runner.act(np.zeros((4, 16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        runner.act(np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="frame history"):
        runner.act(np.zeros((0, 16, 16, 3), np.uint8))
    f = _frames(1, s=16)[0].numpy()
    stochastic = [runner.act(f, deterministic=False) for _ in range(20)]
    assert all(np.all(np.abs(a) <= 1.0) for a in stochastic)
    assert np.std(np.stack(stochastic), axis=0).min() > 0.01
    again = pol.load_policy(tmp_path / "c", seed=3)
    np.testing.assert_array_equal(again.act(f, deterministic=False), stochastic[0])

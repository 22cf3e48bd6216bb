"""PPO in imagination: the update's math against hand-computed values, rollouts in a real
WorldModelEnv (truncation bootstrap), checkpoints and resume, the CLI, and (slow) that PPO raises
the imagined success rate in a world model trained on the synthetic square world."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from world4rl_policy import ppo
from world4rl_policy.policy import GaussianPolicy, PolicyConfig, load_policy, load_policy_module, save_policy

S = 16


# ---------------------------------------------------------------------------------- the math


def test_gae_matches_hand_computation():
    # Env 0: no episode end, reward at the last step. Env 1: its episode ends with step 0.
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2], [0.6, 0.3], [0.7, 0.1]])
    dones = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    next_value = torch.tensor([0.4, 0.5])
    adv, ret = ppo.compute_gae(rewards, values, dones, next_value, gamma=0.9, gae_lambda=0.8)
    # delta_t = r_t + 0.9 V_{t+1} (1 - done_t) - V_t;  A_t = delta_t + 0.72 (1 - done_t) A_{t+1}
    a0_2 = 1 + 0.9 * 0.4 - 0.7  # 0.66
    a0_1 = (0.9 * 0.7 - 0.6) + 0.72 * a0_2  # 0.5052
    a0_0 = (0.9 * 0.6 - 0.5) + 0.72 * a0_1  # 0.403744
    a1_2 = 0.9 * 0.5 - 0.1  # 0.35
    a1_1 = (0.9 * 0.1 - 0.3) + 0.72 * a1_2  # 0.042
    a1_0 = 1 - 0.2  # done: neither V_1 nor A_1 flows back
    expected = torch.tensor([[a0_0, a1_0], [a0_1, a1_1], [a0_2, a1_2]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)
    assert a0_0 == pytest.approx(0.403744)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.3], [0.2], [0.1]])
    _adv, ret = ppo.compute_gae(rewards, values, torch.zeros(3, 1), torch.tensor([10.0]), gamma=0.5, gae_lambda=1.0)
    torch.testing.assert_close(ret[:, 0], torch.tensor([1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 1.5 + 2.5, 3 + 5.0]))


def test_clipped_objective_value_loss_and_diagnostics_by_hand():
    new = torch.tensor([math.log(1.5), math.log(0.5), 0.0])
    old = torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 2.0])
    new_v, old_v, ret = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3), torch.ones(3)
    out = ppo.ppo_losses(new, old, adv, new_v, old_v, ret, clip_coef=0.2, norm_adv=False)
    # ratio 1.5 with A=1 clips to 1.2; ratio 0.5 with A=-1 clips to 0.8 (pessimistic: -A*0.8); ratio 1, A=2: -2.
    assert float(out["pg_loss"]) == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert float(out["v_loss"]) == pytest.approx(0.5 * (0 + 1 + 4) / 3)
    assert float(out["clipfrac"]) == pytest.approx(2 / 3)
    assert float(out["approx_kl"]) == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 3)
    clipped = ppo.ppo_losses(new, old, adv, new_v, old_v, ret, clip_coef=0.2, clip_vloss=True, norm_adv=False)
    # V clipped to old +- 0.2 = 0.2 everywhere: max((V-R)^2, 0.64) = [0.64, 1, 4].
    assert float(clipped["v_loss"]) == pytest.approx(0.5 * (0.64 + 1 + 4) / 3)
    # Inside the clip range the gradient is the plain policy gradient -A * dratio.
    x = torch.zeros(2, requires_grad=True)
    ppo.ppo_losses(x, torch.zeros(2), torch.tensor([1.0, -3.0]), old_v[:2], old_v[:2], old_v[:2], 0.2, norm_adv=False)[
        "pg_loss"
    ].backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, 1.5]))
    # Outside it (ratio 1.5, A > 0) the clipped branch is active: no gradient.
    y = torch.full((1,), math.log(1.5), requires_grad=True)
    ppo.ppo_losses(y, torch.zeros(1), torch.ones(1), old_v[:1], old_v[:1], old_v[:1], 0.2, norm_adv=False)[
        "pg_loss"
    ].backward()
    assert float(y.grad) == 0.0


def test_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    mp, mq = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    sp, sq = torch.randn(5, 4, generator=g) * 0.5, torch.randn(5, 4, generator=g) * 0.5
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mp, sp.exp()), torch.distributions.Normal(mq, sq.exp())
    ).sum(-1)
    torch.testing.assert_close(ppo.gaussian_kl(mp, sp, mq, sq), ref)
    assert torch.allclose(ppo.gaussian_kl(mp, sp, mp, sp), torch.zeros(5), atol=1e-6)


def test_policy_heads_is_the_policy_forward_and_detach_only_cuts_the_critic_gradient():
    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32))
    frames = torch.randint(0, 256, (3, 4, S, S, 3), dtype=torch.uint8)
    for got, want in zip(ppo.policy_heads(policy, frames, True), policy(frames), strict=True):
        torch.testing.assert_close(got, want)
    _, _, value = ppo.policy_heads(policy, frames, critic_detach=True)
    value.sum().backward()
    assert policy.encoder[0].weight.grad is None
    assert policy.critic[0].weight.grad is not None
    _, _, value = ppo.policy_heads(policy, frames, critic_detach=False)
    value.sum().backward()
    assert policy.encoder[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- in a WorldModelEnv


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    """Square-world dataset + an untrained tiny world model + reward classifier + an initial policy."""
    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_model.synthetic import make_dataset
    from world4rl_model.world_model import WorldModel, preset_config

    root = tmp_path_factory.mktemp("ppo")
    ds = make_dataset(root / "ds", episodes_per_task=4, length=8, image_size=S, tasks=("reach-left",))
    torch.manual_seed(0)
    WorldModel(preset_config("tiny", image_size=S, sampling_steps=1)).save(root / "wm")
    from world4rl_model.checkpoint import save_checkpoint

    rm = RewardClassifier(RewardConfig(image_size=S, tasks=list(ds.tasks), channels=[8]))
    save_checkpoint(root / "rw", rm.state_dict(), rm.checkpoint_config())
    save_policy(
        root / "bc",
        GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32, log_std_max=2.0)),
        tasks=["reach-left"],
        trainer="bc",
    )
    return root


def _cfg(root, out, **kw):
    base = dict(
        policy=str(root / "bc"),
        world_model=str(root / "wm"),
        reward=str(root / "rw"),
        dataset=str(root / "ds"),
        out=str(out),
        num_envs=4,
        num_steps=3,
        horizon=2,
        total_steps=24,
        update_epochs=2,
        num_minibatches=2,
        value_warmup_updates=1,
        progress=False,
        video_episodes=0,
        threads=1,
    )
    return ppo.PPOConfig(**{**base, **kw})


def test_rollout_bootstraps_truncated_steps_and_marks_episode_ends(square):
    cfg = _cfg(square, square / "unused", reward_threshold=2.0)  # the classifier never fires
    policy, _ = ppo._load_start_policy(cfg, torch.device("cpu"))
    env = ppo.make_env(cfg, "reach-left", torch.device("cpu"), seed=0)
    buf = ppo.RolloutBuffer.allocate(4, 4, policy.config, "cpu")
    obs, _ = env.reset(seed=0)
    first = obs["frames"].clone()
    ppo.collect_rollout(policy, env, obs, buf, gamma=0.9)
    assert torch.equal(buf.frames[0], first)
    # Horizon 2: every env truncates after steps 1 and 3; no reward but the bootstrap gamma * V(final).
    assert buf.dones[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert (buf.raw_rewards == 0).all()
    assert (buf.rewards[[0, 2]] == 0).all()
    # Replay the same dream (same env seed, same actions) to see the frames the episodes ended on:
    # the bootstrap is gamma * V(those frames), not V of the reset frames that follow them.
    replay = ppo.make_env(cfg, "reach-left", torch.device("cpu"), seed=0)
    replay.reset(seed=0)
    replay.step(buf.actions[0].clamp(-1, 1))
    _, _, _, truncated, info = replay.step(buf.actions[1].clamp(-1, 1))
    assert truncated.all()
    with torch.no_grad():
        v_final = policy(info["final_obs"]["frames"])[2]
        v_reset = policy(buf.frames[2])[2]
    torch.testing.assert_close(buf.rewards[1], 0.9 * v_final)
    assert not torch.allclose(buf.rewards[1], 0.9 * v_reset)
    # Actions are raw Gaussian samples (may leave the box) and their log-probs match the policy's.
    with torch.no_grad():
        lp = policy.log_prob(buf.frames.flatten(0, 1), buf.actions.flatten(0, 1))
    torch.testing.assert_close(lp, buf.logprobs.flatten(), atol=1e-4, rtol=1e-4)


def test_rollout_terminal_success_is_rewarded_without_bootstrap(square):
    cfg = _cfg(square, square / "unused", reward_threshold=0.0)  # every dreamed frame is a success
    policy, _ = ppo._load_start_policy(cfg, torch.device("cpu"))
    env = ppo.make_env(cfg, "reach-left", torch.device("cpu"), seed=0)
    buf = ppo.RolloutBuffer.allocate(3, 4, policy.config, "cpu")
    ppo.collect_rollout(policy, env, env.reset(seed=0)[0], buf, gamma=0.9)
    assert (buf.rewards == 1).all()
    assert (buf.dones == 1).all()


def test_imagined_success_counts_classifier_success_before_the_horizon(square, tmp_path):
    from world4rl_model.checkpoint import load_checkpoint, save_checkpoint
    from world4rl_model.reward import RewardClassifier, RewardConfig

    args = (str(square / "bc"), str(square / "wm"), str(square / "rw"), str(square / "ds"), "reach-left")
    never = ppo.imagined_success(*args, episodes=5, horizon=3, batch=4)
    assert never["episodes"] == 5
    assert 0.0 <= never["success_rate"] <= 1.0
    # A classifier whose bias says "success" everywhere: every episode succeeds at its first step.
    state, config = load_checkpoint(square / "rw")
    rm = RewardClassifier(RewardConfig(**config["model"]))
    rm.load_state_dict(state)
    with torch.no_grad():
        rm.head[-1].bias.fill_(50.0)
    save_checkpoint(tmp_path / "always", rm.state_dict(), rm.checkpoint_config())
    always = ppo.imagined_success(args[0], args[1], str(tmp_path / "always"), *args[3:], episodes=6, horizon=3, batch=4)
    assert always == {"episodes": 6, "success_rate": 1.0, "mean_steps_to_success": 1.0, "horizon": 3}
    with torch.no_grad():
        rm.head[-1].bias.fill_(-50.0)
    save_checkpoint(tmp_path / "never", rm.state_dict(), rm.checkpoint_config())
    none = ppo.imagined_success(args[0], args[1], str(tmp_path / "never"), *args[3:], episodes=4, horizon=3, batch=4)
    assert none["success_rate"] == 0.0
    assert none["mean_steps_to_success"] is None


def test_refine_writes_runnable_checkpoints_and_resumes(square, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(square, out, total_steps=24, checkpoint_every=1, kl_bc_coef=0.1, bc_coef=0.1, bc_batch_size=8)
    assert cfg.num_updates == 2
    summary = ppo.refine(cfg)
    assert summary["updates"] == 2
    assert summary["task"] == "reach-left"
    policy, config = load_policy_module(out)
    assert config["trainer"] == ppo.TRAINER
    assert config["update"] == 2
    assert config["tasks"] == ["reach-left"]
    assert config["refined_from"]["policy"] == str((square / "bc").absolute())
    # The BC checkpoint allowed log-std up to 2; refinement clamps to <= 0 (conservative) by default.
    assert policy.config.log_std_max == 0.0
    assert load_policy_module(square / "bc")[0].config.log_std_max == 2.0
    action = load_policy(out).act(np.zeros((4, S, S, 3), np.uint8))
    assert action.shape == (4,)
    assert np.all(np.abs(action) <= 1)
    hist = json.loads((out / "summary.json").read_text())["history"]
    assert [h["update"] for h in hist] == [1, 2]
    assert hist[0]["warmup"] == 1.0
    assert hist[1]["warmup"] == 0.0
    assert "bc_nll" in hist[1]
    # The KL to BC is taken against the frozen BC policy on the same imagined states: zero while only
    # the critic (on detached features) learns, positive once the actor has moved.
    assert hist[0]["kl_bc"] < 1e-9
    assert hist[1]["kl_bc"] > 1e-9
    assert "bc_nll" not in hist[0]
    assert all(math.isfinite(h["pg_loss"]) and math.isfinite(h["v_loss"]) for h in hist)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # Out-of-distribution statistics fitted to the refined weights, not the BC policy's.
    assert policy.ood.fitted()
    assert policy.ood.matches_weights(policy)
    # The closing step: no recorded BC rollouts in this dataset, so no prediction and the gate keeps BC.
    gate = json.loads((out / "gate.json").read_text())
    assert gate["deploy"] == "bc"
    assert "recorded rollouts" in gate["reason"]
    # The critic trained during warm-up; with the critic detached the actor weights stay BC's there.
    bc, _ = load_policy_module(square / "bc")
    assert not torch.equal(policy.critic[0].weight, bc.critic[0].weight)

    # Resume: the same command with more steps continues at update 2 with the saved weights.
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    again = ppo.refine(_cfg(square, out, total_steps=36, checkpoint_every=1))
    assert again["resumed_from"].endswith("step_000000002")
    assert again["updates"] == 3
    assert again["imagined_steps_this_run"] == 12
    after, config = load_policy_module(out)
    assert config["update"] == 3
    assert any(not torch.equal(before[k], v) for k, v in after.state_dict().items())
    # A different start policy for an existing run is refused.
    save_policy(tmp_path / "other_bc", GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32)))
    with pytest.raises(ValueError, match="existing run refines"):
        ppo.refine(_cfg(square, out, policy=str(tmp_path / "other_bc"), total_steps=48))


def test_refine_books_the_ppo_loops_cpu_time_imagined_steps_per_cpu_hour_and_sampler(square, tmp_path):
    """summary.json's perf: the PPO loop's CPU seconds (not the closing prediction's), imagined steps
    per CPU-hour from them, and the Euler steps the world model dreamt with; also in TensorBoard."""
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cpu0 = time.process_time()
    summary = ppo.refine(_cfg(square, out, total_steps=24))
    whole = time.process_time() - cpu0
    perf = json.loads((out / "summary.json").read_text())["perf"]
    assert perf == summary["perf"]
    assert perf["imagined_steps"] == summary["imagined_steps_this_run"] == 24
    assert 0 < perf["ppo_cpu_seconds"] < whole  # the loading, OOD fit and closing prediction are not in it
    assert 0 < perf["rollout_cpu_seconds"] < perf["ppo_cpu_seconds"]  # the rest: the PPO updates
    assert perf["imagined_steps_per_cpu_hour"] == pytest.approx(24 * 3600 / perf["ppo_cpu_seconds"])
    assert perf["imagined_steps_per_cpu_hour"] > 24 * 3600 / whole
    assert perf["sampling_steps"] == 1  # the world model's own sampler (saved with 1 step)
    assert perf["world_model"] == str(square / "wm")
    assert perf["world_model_distilled"] is False
    assert perf["threads"] == 1
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    (scalar,) = acc.Scalars("perf/imagined_steps_per_cpu_hour")
    assert scalar.step == 24
    assert scalar.value == pytest.approx(perf["imagined_steps_per_cpu_hour"], rel=1e-5)
    # An explicit sampler is what the summary books; a resumed run books only this run's steps.
    again = ppo.refine(_cfg(square, out, total_steps=36, sampling_steps=2, predict=False))
    assert again["perf"]["sampling_steps"] == 2
    assert again["perf"]["imagined_steps"] == 12


def test_several_seeds_book_the_cpu_time_of_all_their_ppo_loops():
    from world4rl_policy.seeds import combined_perf

    one = {"ppo_cpu_seconds": 10.0, "rollout_cpu_seconds": 4.0, "imagined_steps": 100, "sampling_steps": 1}
    two = {**one, "ppo_cpu_seconds": 30.0, "rollout_cpu_seconds": 6.0}
    both = combined_perf([one, two])
    assert (both["ppo_cpu_seconds"], both["rollout_cpu_seconds"], both["imagined_steps"]) == (40.0, 10.0, 200)
    assert both["seeds"] == 2
    assert both["imagined_steps_per_cpu_hour"] == pytest.approx(200 * 3600 / 40)
    assert both["sampling_steps"] == 1
    assert combined_perf([one, None]) is None  # a seed run from before the perf record: no total


def test_refine_rejects_mismatched_image_size_and_unknown_task(square, tmp_path):
    save_policy(tmp_path / "big", GaussianPolicy(PolicyConfig(image_size=32, channels=(8, 16), hidden_dim=32)))
    with pytest.raises(ValueError, match="image_size"):
        ppo.refine(_cfg(square, tmp_path / "a", policy=str(tmp_path / "big")))
    with pytest.raises(ValueError, match="no task"):
        ppo.refine(_cfg(square, tmp_path / "b", task="fly"))


def test_cli_help_and_run(square, tmp_path, monkeypatch):
    from world4rl_policy import refine_cli

    monkeypatch.setenv("WORLD4RL_NO_TCMALLOC", "1")  # run() would re-exec this very process with tcmalloc

    help_text = subprocess.run(
        [sys.executable, "-m", "world4rl_policy.refine_cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--log-std-max" in help_text
    assert "--kl-bc-coef" in help_text
    argv = [
        "--policy", str(square / "bc"), "--world-model", str(square / "wm"), "--reward", str(square / "rw"),
        "--dataset", str(square / "ds"), "--out", str(tmp_path / "cli"), "--num-envs", "2", "--num-steps", "2",
        "--horizon", "3", "--total-steps", "4", "--no-progress", "--video-episodes", "1", "--threads", "1",
        "--log-std-max", "2",
    ]  # fmt: skip
    assert refine_cli.main(argv) == 0
    policy, config = load_policy_module(tmp_path / "cli")
    assert policy.config.log_std_max == 2.0
    assert config["ppo_config"]["num_envs"] == 2
    assert (tmp_path / "cli" / "imagined.mp4").stat().st_size > 0
    assert refine_cli.main([*argv[:-2], "--task", "fly", "--out", str(tmp_path / "bad")]) == 2


# ---------------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_ppo_raises_imagined_success_in_a_trained_world_model(tmp_path):
    """Square world (move the square onto the left goal): a tiny world model trained for ~1 min on
    random and expert episodes, a success classifier, and a random initial policy. PPO must lift
    the imagined success rate well above the initial policy's."""
    from world4rl_model.reward_training import RewardTrainConfig, train_reward
    from world4rl_model.synthetic import make_dataset
    from world4rl_model.training import WorldModelTrainConfig, train_world_model

    make_dataset(
        tmp_path / "ds", episodes_per_task=24, length=16, image_size=S, tasks=("reach-left",), expert_fraction=0.25
    )
    train_world_model(
        WorldModelTrainConfig(
            dataset=str(tmp_path / "ds"), out=str(tmp_path / "wm"), size="tiny", steps=800, batch_size=32, lr=1e-3,
            warmup_steps=20, val_fraction=0.0, checkpoint_every=10**9, progress=False, threads=1,
            model_overrides={"unet": {"channels": [16, 32], "cond_dim": 64}},
        )
    )  # fmt: skip
    train_reward(
        RewardTrainConfig(
            dataset=str(tmp_path / "ds"), out=str(tmp_path / "rw"), steps=150, batch_size=32, val_every=10**9,
            progress=False, channels=[8, 16], threads=1,
        )
    )  # fmt: skip
    torch.manual_seed(0)
    start = GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32, init_log_std=0.0))
    save_policy(tmp_path / "init", start, tasks=["reach-left"])
    cfg = ppo.PPOConfig(
        policy=str(tmp_path / "init"), world_model=str(tmp_path / "wm"), reward=str(tmp_path / "rw"),
        dataset=str(tmp_path / "ds"), out=str(tmp_path / "ppo"), num_envs=16, num_steps=16, horizon=12,
        total_steps=16 * 16 * 24, lr=1e-3, critic_lr=1e-3, value_warmup_updates=1, progress=False,
        video_episodes=0, threads=1,
    )  # fmt: skip
    ppo.refine(cfg)
    hist = json.loads((tmp_path / "ppo" / "summary.json").read_text())["history"]
    first = np.mean([h["episode_success"] for h in hist[:3]])
    last = np.mean([h["episode_success"] for h in hist[-3:]])
    assert last > first + 0.3, (first, last)
    assert last > 0.6
    # Successes come sooner, too.
    assert np.mean([h["episode_length"] for h in hist[-3:]]) < np.mean([h["episode_length"] for h in hist[:3]])

"""WorldModelEnv: resets from real frames, shifts history, rewards, termination, autoreset, determinism."""

import numpy as np
import pytest
import torch

from world4rl_model.env import WorldModelEnv, default_cpu_shards
from world4rl_model.reward import RewardClassifier, RewardConfig
from world4rl_model.synthetic import make_dataset
from world4rl_model.world_model import WorldModel, preset_config

S = 16
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("env") / "ds", episodes_per_task=3, length=8, image_size=S)


def _env(ds, num_envs=4, device="cpu", **kw):
    torch.manual_seed(0)
    wm = WorldModel(preset_config("tiny", image_size=S, sampling_steps=2))
    rm = RewardClassifier(RewardConfig(image_size=S, tasks=list(ds.tasks), channels=[8, 8]))
    return WorldModelEnv(wm, rm, ds, num_envs=num_envs, device=device, seed=0, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_reset_starts_from_real_frames_and_step_shifts_history(ds, device):
    env = _env(ds, device=device)
    obs, info = env.reset(seed=1)
    assert obs["frames"].shape == (4, 4, S, S, 3)
    assert obs["frames"].dtype == torch.uint8
    assert obs["image"].shape == (4, S, S, 3)
    assert obs["frames"].device.type == device
    for row in range(4):
        ep = ds.episode(int(info["source_episode"][row]))
        first = torch.from_numpy(np.array(ep["frames"][0])).to(device)
        for k in range(4):  # history before the first frame is the first frame (training's padding)
            assert torch.equal(obs["frames"][row, k], first)
        assert obs["task"][row] == ds.task_index(ds.episodes[int(info["source_episode"][row])]["task"])
    env.threshold = 2.0  # never success: pure dynamics
    actions = torch.rand(4, 4, device=device) * 2 - 1
    obs2, reward, terminated, truncated, info2 = env.step(actions)
    assert torch.equal(obs2["frames"][:, :-1], obs["frames"][:, 1:])  # history shifted by one
    assert obs2["frames"].dtype == torch.uint8
    assert reward.shape == (4,)
    assert not terminated.any()
    assert not truncated.any()
    assert ((info2["success_prob"] >= 0) & (info2["success_prob"] <= 1)).all()
    assert info2["elapsed_steps"].tolist() == [1, 1, 1, 1]
    # The action just taken sits in the history as the newest-but-one... and is consumed: the slot rolls.
    assert torch.equal(env.actions[:, -2], actions.clamp(-1, 1))
    assert (env.actions[:, -1] == 0).all()


def test_horizon_truncates_and_autoresets(ds):
    env = _env(ds, horizon=3)
    env.threshold = 2.0
    env.reset(seed=0)
    for step in range(3):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 4))
        if step < 2:
            assert not truncated.any()
            assert "final_obs" not in info
    assert truncated.all()
    assert not terminated.any()
    assert (reward == 0).all()
    assert info["done"].all()
    assert info["final_obs"]["frames"].shape == (4, 4, S, S, 3)
    assert (env.elapsed == 0).all()  # reset in the same call
    # After the autoreset the history is real again: 4 copies of a first frame.
    assert all(torch.equal(obs["frames"][r, 0], obs["frames"][r, 3]) for r in range(4))


def test_success_terminates_and_rewards(ds):
    env = _env(ds, threshold=0.0)  # every frame counts as success
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(torch.zeros(4, 4))
    assert (reward == 1).all()
    assert terminated.all()
    assert not truncated.any()
    assert info["success"].all()
    env = _env(ds, threshold=0.0, terminate_on_success=False, reward_mode="probability")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(torch.zeros(4, 4))
    assert not terminated.any()
    torch.testing.assert_close(reward, info["success_prob"])


def test_a_success_must_hold_on_every_sample_of_the_step(ds):
    """success_samples K: the classifier must also fire on K - 1 further samples of the dreamt step."""
    env = _env(ds, num_envs=64, terminate_on_success=False)
    env.reset(seed=3)
    env.threshold = float(env.step(torch.zeros(64, 4))[4]["success_prob"].median())  # about half the samples fire
    env.reset(seed=3)
    obs1, _, _, _, single = env.step(torch.zeros(64, 4))
    strict = _env(ds, num_envs=64, terminate_on_success=False, threshold=env.threshold, success_samples=4)
    strict.reset(seed=3)
    obs4, reward, _, _, info4 = strict.step(torch.zeros(64, 4))
    # The dream itself is the same sample; only the verdict is stricter.
    assert torch.equal(obs1["frames"], obs4["frames"])
    torch.testing.assert_close(info4["success_prob"], single["success_prob"])
    assert bool((info4["success"] <= single["success"]).all())  # a subset of the single-sample successes
    assert 0 < int(info4["success"].sum()) < int(single["success"].sum())  # some lucky samples were not confirmed
    assert torch.equal(reward, info4["success"].float())
    # Where every sample fires (threshold 0) or none does, K changes nothing.
    sure = _env(ds, threshold=0.0, success_samples=3)
    sure.reset(seed=0)
    assert sure.step(torch.zeros(4, 4))[4]["success"].all()
    with pytest.raises(ValueError, match="success_samples"):
        _env(ds, success_samples=0)


def test_row_shards_dream_what_one_thread_dreams(ds):
    """cpu_shards splits the batch over worker threads: the same noise, frames and verdicts, other rows
    per op only; the caller's torch thread count is left as it was."""
    threads = torch.get_num_threads()
    for k in (1, 2):  # k = 1: the shards' step draws the next step's noise ahead
        whole = _env(ds, num_envs=10, terminate_on_success=False, success_samples=k, cpu_shards=1)
        split = _env(ds, num_envs=10, terminate_on_success=False, success_samples=k, cpu_shards=3)
        assert torch.get_num_threads() == threads
        assert split._shards.pool.submit(torch.get_num_threads).result() == max(1, threads // 3)
        for env in (whole, split):
            env.reset(seed=5)
            env.threshold = 0.5
        for i, a in enumerate(torch.linspace(-1, 1, 6)):
            if i in (2, 4):  # a reset without a seed keeps drawing on; one with a seed starts over
                for env in (whole, split):
                    env.reset(seed=7 if i == 4 else None)
            one, two = whole.step(torch.full((10, 4), float(a))), split.step(torch.full((10, 4), float(a)))
            assert torch.equal(one[0]["frames"], two[0]["frames"])
            torch.testing.assert_close(one[4]["success_prob"], two[4]["success_prob"])
            assert torch.equal(one[1], two[1])
        split.close()
    assert default_cpu_shards(64, 2, "PASSIVE") == 2
    assert default_cpu_shards(64, 8, "passive") == 4  # >= 16 envs per shard
    assert default_cpu_shards(8, 2, "PASSIVE") == 1  # too few envs to be worth a thread
    assert default_cpu_shards(64, 2, "") == 1  # spinning OpenMP threads would take the shards' cores
    with pytest.raises(ValueError, match="cpu_shards"):
        _env(ds, cpu_shards=0)


def test_task_filter_layout_determinism_and_errors(ds):
    env = _env(ds, task="reach-right", layout="chw")
    obs, info = env.reset(seed=3)
    assert obs["frames"].shape == (4, 4, 3, S, S)
    assert (obs["task"] == ds.task_index("reach-right")).all()
    assert all(ds.episodes[int(i)]["task"] == "reach-right" for i in info["source_episode"])
    a = torch.full((4, 4), 0.5)
    first = env.step(a)[0]["frames"].clone()
    env.reset(seed=3)
    again = env.step(a)[0]["frames"]
    assert torch.equal(first, again)  # same seed, same dream
    with pytest.raises(ValueError, match=r"actions must be \[4, 4\]"):
        env.step(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="no task"):
        _env(ds, task="fly")
    assert env.single_action_space.shape == (4,)
    assert env.single_observation_space["frames"].shape == (4, 3, S, S)


def test_from_checkpoints(ds, tmp_path):
    wm = WorldModel(preset_config("tiny", image_size=S))
    rm = RewardClassifier(RewardConfig(image_size=S, tasks=list(ds.tasks), channels=[8]))
    from world4rl_model.checkpoint import save_checkpoint
    from world4rl_model.dataset import manifest_hash

    wm.save(tmp_path / "wm", dataset={"manifest_sha256": manifest_hash(ds.root)})
    save_checkpoint(tmp_path / "rm", rm.state_dict(), rm.checkpoint_config())
    env = WorldModelEnv.from_checkpoints(tmp_path / "wm", tmp_path / "rm", ds.root, num_envs=2, horizon=5)
    assert env.dataset_matches_training
    _obs, _ = env.reset(seed=0)
    assert env.step(np.zeros((2, 4), np.float32))[0]["frames"].shape == (2, 4, S, S, 3)

"""The out-of-distribution score (world4rl_policy.ood), ROS-free: on a small BC policy trained on the
synthetic dot dataset, new in-distribution episodes score lower than changed ones (a second dot:
the features; a new dot colour: the colours); the statistics travel through checkpoints and state
dicts, notice other weights, are added to existing checkpoints, and the runtime rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world4rl_policy import bc, ood
from world4rl_policy import policy as pol

TINY = {"progress": False, "threads": 1}


def _train(data, out, steps=300):
    cfg = bc.BCConfig(
        dataset=str(data),
        out=str(out),
        steps=steps,
        batch_size=32,
        lr=1e-3,
        val_every=100,
        val_fraction=0.25,
        policy=pol.PolicyConfig(channels=(8, 16, 16, 16), hidden_dim=64),
        **TINY,
    )
    return bc.train_bc(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dots):
    root = tmp_path_factory.mktemp("ood")
    data = dots.write_dataset(root / "data", episodes=24, length=16, size=16, seed=1)
    return data, root / "run", _train(data, root / "run")


@pytest.fixture(scope="module")
def episodes(dots):
    """episodes(seed, n, change=None): new dot episodes of 16 frames, 16x16."""
    return lambda seed, n, change=None: dots.episodes(seed, n, 16, 16, change)


def test_bc_fits_the_statistics_and_they_separate_changed_episodes(trained, episodes):
    _, run, summary = trained
    assert set(summary["ood"]) == {"best", "latest"}
    policy, config = pol.load_policy_module(run / "best")
    assert policy.ood.fitted()
    assert policy.ood.matches_weights(policy)
    assert config["ood"]["weights_match"]
    assert config["ood"]["calibrated_on"] == "held-out episodes"
    assert config["ood"]["fit_episodes"] == len(config["train_episodes"])
    # The unit is the held-out 99th percentile; the stored quantiles rise with the level.
    quantiles = policy.ood.quantiles.numpy()
    assert np.all(np.diff(quantiles) >= 0)
    assert 0 < quantiles[0] <= 1.0 <= quantiles[-1] + 1e-9

    def mean_scores(episodes, part=None):
        scores = [ood.score_frames(policy, ep) for ep in episodes]
        if part is not None:
            feats = [ood.features(policy, ood.frame_histories(ep, 4)) for ep in episodes]
            scores = [getattr(policy.ood, part)(torch.from_numpy(f)).numpy() for f in feats]
        return [float(s.mean()) for s in scores]

    new = episodes(100, 20)
    second_dot = episodes(200, 20, "second_dot")
    green = episodes(300, 20, "green")
    # Features alone see the second dot (no colour is new there) ...
    auc = ood.roc_auc(mean_scores(second_dot, "feature_score"), mean_scores(new, "feature_score"))
    assert auc >= 0.9, auc
    assert ood.roc_auc(mean_scores(second_dot), mean_scores(new)) >= 0.9
    # ... and the colours a dot of a colour training never showed: every green frame is far out.
    assert ood.roc_auc(mean_scores(green), mean_scores(new)) == 1.0
    green_colour = policy.ood.colour_score(np.concatenate(green)).numpy()
    assert green_colour.min() >= 2.0, green_colour.min()
    new_colour = policy.ood.colour_score(np.concatenate(new)).numpy()
    assert new_colour.max() <= 1.0
    # ... and more of a colour than any training frame showed (a second dot of the same colour).
    twin = episodes(400, 20, "twin")
    assert ood.roc_auc(mean_scores(twin), mean_scores(new)) >= 0.9
    twin_colour = [float(policy.ood.colour_score(ep).numpy().mean()) for ep in twin]
    assert min(twin_colour) >= 1.0, twin_colour


def test_statistics_round_trip_through_checkpoints_and_state_dicts(trained, episodes, tmp_path):
    _, run, _ = trained
    policy, _ = pol.load_policy_module(run / "best")
    frames = episodes(7, 1)[0]
    expected = ood.score_frames(policy, frames)
    # The saved checkpoint: the same buffers, the same scores, the summary in config.json.
    saved = pol.save_policy(tmp_path / "copy", policy)
    again, config = pol.load_policy_module(saved)
    for name in ood.BUFFERS:
        torch.testing.assert_close(getattr(again.ood, name), getattr(policy.ood, name), rtol=0, atol=0)
    np.testing.assert_array_equal(ood.score_frames(again, frames), expected)
    assert config["ood"]["weights_match"] is True
    # What PPO does with a start policy: a fresh module, then load_state_dict: the statistics come along.
    fresh = pol.GaussianPolicy(policy.config)
    assert not fresh.ood.fitted()
    fresh.load_state_dict(policy.state_dict())
    np.testing.assert_array_equal(ood.score_frames(fresh, frames), expected)
    # Other weights (as after refinement): noticed, and said in config.json.
    with torch.no_grad():
        fresh.trunk[0].weight.mul_(1.01)
    assert not fresh.ood.matches_weights(fresh)
    assert pol.policy_checkpoint_config(fresh)["ood"]["weights_match"] is False
    # A state dict without statistics empties them; a checkpoint without them loads without them.
    fresh.load_state_dict(pol.GaussianPolicy(policy.config).state_dict())
    assert not fresh.ood.fitted()
    plain = pol.save_policy(tmp_path / "plain", pol.GaussianPolicy(policy.config))
    loaded, config = pol.load_policy_module(plain)
    assert not loaded.ood.fitted()
    assert "ood" not in config
    with pytest.raises(ValueError, match="no OOD statistics"):
        ood.score_frames(loaded, frames)
    # Statistics of an earlier definition (version 3 kept `colour_rare`): the policy loads without
    # them, with a warning that says how to fit them again; its weights load as before.
    earlier = {k: v for k, v in policy.state_dict().items() if k != "ood.colour_ceiling"}
    earlier["ood.colour_rare"] = torch.zeros(ood.COLOUR_BINS)
    older = pol.GaussianPolicy(policy.config)
    with pytest.warns(UserWarning, match="earlier definition.*world4rl ood fit"):
        older.load_state_dict(earlier)
    assert not older.ood.fitted()
    torch.testing.assert_close(older.trunk[0].weight, policy.trunk[0].weight)


def test_the_runner_scores_what_it_acts_on(trained, episodes):
    _, run, _ = trained
    runner = pol.load_policy(run / "best")
    frames = episodes(8, 1, "green")[0]
    offline = ood.score_frames(runner.module, frames)
    history = runner.new_history()
    for t, frame in enumerate(frames):
        history.push(frame)
        runner.act(history.array())
        assert math.isclose(runner.last_ood_score, offline[t], rel_tol=1e-5), t
    plain = pol.PolicyRunner(pol.GaussianPolicy(runner.config), {})
    plain.act(history.array())
    assert plain.ood is None
    assert math.isnan(plain.last_ood_score)


def test_fit_adds_statistics_to_an_existing_checkpoint_and_keeps_its_training_state(trained, tmp_path):
    from world4rl_model import checkpoint
    from world4rl_policy import ood_cli

    data, run, _ = trained
    latest = checkpoint.resolve_checkpoint(run)
    # A checkpoint of this run without statistics (as every checkpoint before this feature).
    tensors, config = checkpoint.load_checkpoint(latest)
    plain = {k: v for k, v in tensors.items() if not k.startswith("ood.")}
    config.pop("ood")
    state = checkpoint.load_training_state(latest)
    target = tmp_path / "old"
    checkpoint.save_checkpoint(
        target, plain, {k: v for k, v in config.items() if k not in ("format", "version")}, state
    )
    assert not pol.load_policy_module(target)[0].ood.fitted()

    assert ood_cli.main(["fit", "--policy", str(target), "--dataset", str(data)]) == 0
    policy, new_config = pol.load_policy_module(target)
    assert policy.ood.matches_weights(policy)
    assert new_config["ood"]["dataset"]["manifest_sha256"] == config["dataset"]["manifest_sha256"]
    assert new_config["train_episodes"] == config["train_episodes"]  # provenance kept
    assert checkpoint.load_training_state(target).step == state.step
    reference, _ = pol.load_policy_module(latest)
    for name in ood.BUFFERS:  # the same episodes and weights: the statistics BC fitted
        torch.testing.assert_close(getattr(policy.ood, name), getattr(reference.ood, name))
    assert ood_cli.main(["score", "--policy", str(target), "--dataset", str(data), "--episodes", "0"]) == 0
    assert ood_cli.main(["fit", "--policy", str(tmp_path / "nowhere"), "--dataset", str(data)]) == 2


def test_monitor_compares_the_window_mean_with_the_threshold():
    monitor = ood.OODMonitor(threshold=2.0, window=3, action="hold")
    assert monitor.update(1.0) is None
    assert monitor.update(math.nan) is None  # a cycle without a score does not count
    assert monitor.update(2.9) is None  # mean 1.95 of the two scores so far
    message = monitor.update(2.3)  # mean 2.07 of the last 3
    assert message is not None
    assert "the mean of the last 3 cycles' OOD score 2.07 > threshold 2.00" in message
    monitor.reset()  # a new episode: the window starts empty
    assert monitor.update(1.5) is None
    assert ood.OODMonitor(threshold=2.0, action="off").update(100.0) is None
    assert "this cycle's OOD score 3.00 > threshold 2.00" in ood.OODMonitor(threshold=2.0).update(3.0)
    bad = [
        ({"threshold": 0.0}, "positive"),
        ({"threshold": math.nan}, "positive"),
        ({"threshold": 1.0, "window": 0}, "at least 1"),
        ({"threshold": 1.0, "action": "stop"}, "one of"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            ood.OODMonitor(**kwargs)


def test_roc_auc_and_shrinkage():
    assert ood.roc_auc([3, 4], [1, 2]) == 1.0
    assert ood.roc_auc([1, 2], [3, 4]) == 0.0
    assert ood.roc_auc([1, 3], [1, 2]) == 0.625  # (0.5 + 0 + 1 + 1) / 4: a tie counts half
    with pytest.raises(ValueError, match="at least one positive"):
        ood.roc_auc([], [1])
    # Fewer samples than dimensions: the shrunk covariance is still positive definite.
    x = np.random.default_rng(0).normal(size=(5, 20))
    _, cov, shrinkage = ood.shrunk_covariance(x)
    assert 0 < shrinkage <= 1
    assert np.linalg.eigvalsh(cov).min() > 0

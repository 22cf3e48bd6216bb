"""Open-loop evaluation: rollout bookkeeping, metrics vs copy-last-frame, video, and the eval CLI."""

import json

import numpy as np
import pytest
import torch

from world4rl_model.data import EpisodeStore
from world4rl_model.eval_cli import main as eval_main
from world4rl_model.evaluation import (
    Rollouts,
    action_gain,
    action_gain_markdown,
    horizon_metrics,
    metrics_markdown,
    open_loop_rollouts,
    rollout_starts,
    side_by_side_video,
)
from world4rl_model.synthetic import make_dataset
from world4rl_model.training import WorldModelTrainConfig, train_world_model
from world4rl_model.world_model import WorldModel, preset_config

S = 16


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("eval") / "ds", episodes_per_task=3, length=12, image_size=S)


def test_rollouts_start_from_real_frames_and_follow_real_actions(ds):
    store = EpisodeStore(ds, [0, 1])
    starts = rollout_starts(store, horizon=5, stride=3)
    assert starts.tolist() == [0, 3, 6, 12, 15, 18]  # t0 + 5 <= 11 in each 12-frame episode
    model = WorldModel(preset_config("tiny", image_size=S, sampling_steps=1)).eval()
    r = open_loop_rollouts(model, store, horizon=5, stride=3, batch_size=4)
    assert r.real.shape == (6, 6, 3, S, S)
    assert r.dreamed.shape == (6, 6, 3, S, S)
    assert r.episodes == [0, 0, 0, 1, 1, 1]
    assert r.starts == [0, 3, 6, 0, 3, 6]
    ep1 = torch.from_numpy(np.array(ds.episode(1)["frames"])).permute(0, 3, 1, 2)
    assert torch.equal(r.real[4], ep1[3:9])  # real frames o_{t0} .. o_{t0+5}
    assert torch.equal(r.dreamed[:, 0], r.real[:, 0])  # the rollout starts from the real frame


def test_metrics_against_copy_last():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (8, 4, 3, S, S), dtype=torch.uint8, generator=g)
    perfect = Rollouts(real=real, dreamed=real.clone(), episodes=[0] * 8, starts=[0] * 8)
    rows = horizon_metrics(perfect, [1, 3])
    for row in rows:
        assert row["model_psnr"] > 58  # the 8-bit noise-floor cap
        assert row["copy_last_psnr"] < 15  # unrelated random frames
        assert row["psnr_gain_db"] > 40
        assert row["model_better_fraction"] == 1.0
        assert row["model_ssim"] == pytest.approx(1.0)
    copy = Rollouts(real=real, dreamed=real[:, :1].expand(-1, 4, -1, -1, -1).clone(), episodes=[0] * 8, starts=[0] * 8)
    row = horizon_metrics(copy, [2])[0]
    assert row["model_psnr"] == pytest.approx(row["copy_last_psnr"])
    assert row["model_better_fraction"] == 0.0
    md = metrics_markdown(rows, "t")
    assert "| 3 | 8 |" in md
    with pytest.raises(ValueError, match="horizon 9"):
        horizon_metrics(perfect, [9])


def test_pooled_psnr_is_not_dominated_by_still_frames_that_copy_last_reproduces():
    # Four still rollouts (copy-last exact, the model one intensity level off everywhere: invisible)
    # and four where the scene moves by 10 levels (the model 5 levels off, copy-last 10).
    g = torch.Generator().manual_seed(1)
    first = torch.randint(50, 200, (8, 3, S, S), dtype=torch.uint8, generator=g)
    moving = torch.arange(8) >= 4
    nxt = first.clone()
    nxt[moving] += 10
    dreamed = nxt + 1
    dreamed[moving] -= 6
    rollouts = Rollouts(real=torch.stack([first, nxt], 1), dreamed=torch.stack([first, dreamed], 1),
                        episodes=[0] * 8, starts=[0] * 8)  # fmt: skip
    row = horizon_metrics(rollouts, [1])[0]
    assert row["psnr_gain_db"] < -2.0  # the per-image mean: 58.9 vs 48.1 dB on the still four outweighs
    assert row["model_better_fraction"] == 0.5
    assert row["psnr_pooled_gain_db"] == pytest.approx(10 * np.log10(200 / 52), abs=0.01)  # +5.9 dB
    assert "| +5.85 |" in metrics_markdown([row], "t")


def test_swapped_actions_change_only_the_actions_from_the_start_on(ds):
    store = EpisodeStore(ds, [0, 1, 2, 3])
    kw = {"horizon": 4, "stride": 3, "batch_size": 3, "seed": 5}
    torch.manual_seed(0)
    model = WorldModel(preset_config("tiny", image_size=S, sampling_steps=1)).eval()
    with torch.no_grad():  # a fresh model's zero-initialised output layer answers nothing
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    own, swapped = open_loop_rollouts(model, store, **kw), open_loop_rollouts(model, store, swap_actions=True, **kw)
    assert torch.equal(own.real, swapped.real)
    assert not torch.equal(own.dreamed[:, 1:], swapped.dreamed[:, 1:])
    # A model blind to the actions dreams the same frames either way: the noise is paired, only actions differ.
    blind = WorldModel(preset_config("tiny", image_size=S, sampling_steps=1, action_input=False)).eval()
    torch.nn.init.zeros_(blind.action_emb.weight)
    own, swapped = open_loop_rollouts(blind, store, **kw), open_loop_rollouts(blind, store, swap_actions=True, **kw)
    assert torch.equal(own.dreamed, swapped.dreamed)
    rows = action_gain(own, swapped, [1, 4])
    assert [r["action_gain_db"] for r in rows] == [0.0, 0.0]
    assert "| 4 | " in action_gain_markdown(rows)
    assert "| +0.00 |" in action_gain_markdown(rows)
    with pytest.raises(ValueError, match="two rollouts"):
        open_loop_rollouts(model, store, swap_actions=True, max_rollouts=1, **kw)


def test_action_gain_is_how_much_closer_the_recorded_actions_dream():
    g = torch.Generator().manual_seed(2)
    real = torch.randint(60, 190, (6, 3, 3, S, S), dtype=torch.uint8, generator=g)
    recorded = Rollouts(real=real, dreamed=real + 2, episodes=[0] * 6, starts=[0] * 6)  # 2 levels off
    swapped = Rollouts(real=real, dreamed=real + 8, episodes=[0] * 6, starts=[0] * 6)  # 8 levels off
    row = action_gain(recorded, swapped, [2])[0]
    assert row["action_gain_db"] == pytest.approx(20 * np.log10(4), abs=1e-3)  # +12.04 dB
    assert row["recorded_better_fraction"] == 1.0
    other = Rollouts(real=real.flip(0), dreamed=real, episodes=[0] * 6, starts=[0] * 6)
    with pytest.raises(ValueError, match="same starts"):
        action_gain(recorded, other, [1])


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_side_by_side_video(tmp_path, suffix):
    import imageio.v2 as imageio

    real = torch.randint(0, 256, (3, 5, 3, S, S), dtype=torch.uint8)
    r = Rollouts(real=real, dreamed=255 - real, episodes=[0] * 3, starts=[0] * 3)
    path = side_by_side_video(r, tmp_path / f"v{suffix}", count=2, scale=2)
    assert path.exists()
    frames = imageio.mimread(path)
    assert len(frames) == 5
    assert frames[0].shape[:2] == ((S + 2) * 2 * 2, (2 * S + 2) * 2)  # 2 rows of real | dreamed, scaled 2x


def test_eval_cli_on_held_out_split(ds, tmp_path, capsys):
    run = train_world_model(
        WorldModelTrainConfig(
            dataset=str(ds.root), out=str(tmp_path / "run"), size="tiny", steps=2, batch_size=4, val_fraction=0.3,
            progress=False, threads=1,
        )
    )  # fmt: skip
    code = eval_main(
        ["world-model", str(run), "--horizons", "1,5", "--stride", "5", "--video", "2", "--gif",
         "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "PSNR copy-last" in printed
    result = json.loads((tmp_path / "ev" / "world_model_eval.json").read_text())
    _, val = ds.split(0.3, 0)
    assert result["episodes"] == val
    assert [r["horizon"] for r in result["rows"]] == [1, 5]
    assert all(np.isfinite(r["model_psnr"]) for r in result["rows"])
    assert (tmp_path / "ev" / "dream.gif").exists()
    assert result["sigma_min"] == 0.05  # the model's own
    assert [r["horizon"] for r in result["action_gain"]] == [1, 5]
    assert all(np.isfinite(r["action_gain_db"]) for r in result["action_gain"])
    assert "Do the dreams answer the actions?" in (tmp_path / "ev" / "world_model_eval.md").read_text()
    # Another sampler on the same rollouts (docs/results.md#the-sampler was measured this way).
    args = ["world-model", str(run), "--horizons", "1", "--video", "0", "--out", str(tmp_path / "ev2")]
    assert eval_main([*args, "--sampling-steps", "3", "--sigma-min", "0.002"]) == 0
    other = json.loads((tmp_path / "ev2" / "world_model_eval.json").read_text())
    assert (other["sampling_steps"], other["sigma_min"]) == (3, 0.002)
    assert eval_main([*args, "--no-action-check", "--out", str(tmp_path / "ev3")]) == 0
    assert json.loads((tmp_path / "ev3" / "world_model_eval.json").read_text())["action_gain"] is None
    assert "3 Euler steps, sigma_min 0.002" in capsys.readouterr().out
    assert eval_main([*args, "--sigma-min", "9"]) == 2
    assert eval_main([*args, "--still-levels", "-1"]) == 2


def test_eval_cli_reward_classifier_on_held_out_split(ds, tmp_path, capsys):
    from world4rl_model.reward_training import RewardTrainConfig, train_reward

    train_reward(
        RewardTrainConfig(
            dataset=str(ds.root), out=str(tmp_path / "rw"), steps=4, batch_size=8, val_every=4, progress=False,
            threads=1, val_fraction=0.3, channels=[8, 16],
        )
    )  # fmt: skip
    assert eval_main(["reward", str(tmp_path / "rw"), "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "reward_eval.json").read_text())
    _, val = ds.split(0.3, 0)
    assert report["eval_episodes"] == val
    assert report["episodes"]["n"] == len(val)  # the per-episode figures, not overwritten by the indices
    assert report["dataset"] == str(ds.root)
    assert (tmp_path / "ev" / "reward_eval.md").read_text() in capsys.readouterr().out

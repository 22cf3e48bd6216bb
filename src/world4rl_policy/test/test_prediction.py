"""Predicted real success and the do-no-harm gate: the calibration's math, the gate's rule, the
dreams from given start frames in a real WorldModelEnv, the gate record and what deploy resolves."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from world4rl_policy import prediction as pred
from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy

S = 16


# ---------------------------------------------------------------------------------- the math


def test_logistic_calibration_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 5, 20000) / 4.0  # fractions of 4 dreams, as `imagine` gives them
    y = rng.random(20000) < 1 / (1 + np.exp(-(-1.0 + 3.0 * f)))
    a, b = pred.fit_calibration(f, y)
    assert a == pytest.approx(-1.0, abs=0.1)
    assert b == pytest.approx(3.0, abs=0.15)
    # Every rollout failed: the ridge keeps the fit finite and the prediction low, not NaN.
    w = pred.fit_calibration(f[:50], np.zeros(50, bool))
    assert np.all(np.isfinite(w))
    assert pred.calibrated(w, np.array([0.0, 1.0])).max() < 0.1


def _imagined(fractions, dreams=4):
    fractions = np.asarray(fractions, dtype=float)
    return pred.Imagined(np.arange(len(fractions)), fractions, dreams, 0.0)


def _informative_calibration(n=200, seed=1):
    """Rollouts whose real outcome follows imagination closely: P(real) = 0.1 + 0.8 f."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 5, n) / 4.0
    return _imagined(f), rng.random(n) < 0.1 + 0.8 * f


def test_gate_ships_the_refined_policy_only_for_a_predicted_gain_beyond_the_interval():
    calibration, real = _informative_calibration()
    rng = np.random.default_rng(2)
    bc = _imagined(rng.integers(0, 2, 60) / 4.0)  # dreams succeed rarely
    better = _imagined(np.minimum(1.0, bc.success_fraction + 0.75))
    result = pred.predict(calibration, real, {"bc": bc, "refined": better}, bootstrap=400, seed=0, rule="calibrated")
    d = result["difference"]
    assert d["predicted"] > 0.3
    assert d["predicted_ci95"][0] > 0
    assert result["policies"]["bc"]["predicted_ci95"][0] <= result["policies"]["bc"]["predicted_success"]
    assert pred.gate(result)["policy"] == "refined"
    # The same dreams for both: no gain, BC stays.
    same = pred.predict(calibration, real, {"bc": bc, "refined": bc}, bootstrap=400, seed=0, rule="calibrated")
    assert same["difference"]["predicted"] == 0.0
    decision = pred.gate(same)
    assert decision["policy"] == "bc"
    assert "not above zero" in decision["reason"]


def test_an_imagination_that_cannot_tell_real_outcomes_apart_earns_no_deployment():
    """Real outcomes independent of the dreams: however much better the refined policy dreams, the
    calibrated difference is indistinguishable from zero and the gate keeps BC."""
    f = np.repeat(np.arange(5) / 4.0, 30)  # every verdict 30 times, and 18 of each 30 succeeded for real
    calibration = _imagined(f)
    real = np.tile(np.arange(30) < 18, 5)
    bc, refined = _imagined(np.zeros(55)), _imagined(np.ones(55))
    result = pred.predict(calibration, real, {"bc": bc, "refined": refined}, bootstrap=400, seed=0, rule="calibrated")
    lo, hi = result["difference"]["predicted_ci95"]
    assert lo <= 0 <= hi
    assert pred.gate(result)["policy"] == "bc"
    assert pred.gate(None, "no rollouts")["policy"] == "bc"


def test_the_paired_rule_carries_an_imagined_gain_that_the_flat_calibration_cannot_see():
    """Dreams blind to single rollouts' outcomes (the calibration above, flat) but a refined policy that
    dreams better on the same starts: "calibrated" keeps BC, "paired" predicts BC's level plus the gain
    and ships; with no gain, or a loss, "paired" keeps BC too."""
    f = np.repeat(np.arange(5) / 4.0, 30)
    calibration, real = _imagined(f), np.tile(np.arange(30) < 18, 5)
    rng = np.random.default_rng(3)
    bc = _imagined(rng.integers(0, 2, 150) / 4.0)
    refined = _imagined(np.minimum(1.0, bc.success_fraction + (rng.random(150) < 0.4) * 0.25))
    gain = refined.rate - bc.rate
    flat = pred.predict(calibration, real, {"bc": bc, "refined": refined}, bootstrap=400, seed=0, rule="calibrated")
    assert pred.gate(flat)["policy"] == "bc"
    paired = pred.predict(calibration, real, {"bc": bc, "refined": refined}, bootstrap=400, seed=0, rule="paired")
    assert paired["rule"] == "paired"
    assert paired["policies"]["bc"]["predicted_success"] == flat["policies"]["bc"]["predicted_success"]

    # BC's predicted level plus the imagined gain, in points.
    assert paired["difference"]["predicted"] == pytest.approx(gain)
    assert paired["policies"]["refined"]["predicted_success"] == pytest.approx(
        paired["policies"]["bc"]["predicted_success"] + gain
    )
    assert paired["difference"]["predicted_ci95"][0] > 0
    assert pred.gate(paired)["policy"] == "refined"
    for worse in (bc, _imagined(np.maximum(0.0, bc.success_fraction - 0.25))):
        kept = pred.predict(calibration, real, {"bc": bc, "refined": worse}, bootstrap=400, seed=0, rule="paired")
        assert kept["difference"]["predicted"] <= 0
        assert pred.gate(kept)["policy"] == "bc"
    # A gain cannot predict more than certainty; a dream's difference near the floor moves a high
    # level by that dream's points, not by its odds ratio (1 success in 600 dreams against none).
    top = pred.predict(
        calibration, real, {"bc": _imagined(np.zeros(150)), "refined": _imagined(np.ones(150))}, 100, 0, rule="paired"
    )
    assert top["policies"]["refined"]["predicted_success"] == 1.0
    assert top["policies"]["refined"]["predicted_ci95"][1] == 1.0
    rare = np.zeros(150)
    rare[0] = 0.25
    floor = pred.predict(
        calibration, real, {"bc": _imagined(rare), "refined": _imagined(np.zeros(150))}, 100, 0, rule="paired"
    )
    assert floor["difference"]["predicted"] == pytest.approx(-0.25 / 150)
    with pytest.raises(ValueError, match=r"prediction\.rule: 'median'"):
        pred.PredictionSettings(rule="median")


# ---------------------------------------------------------------------------------- dreams and the gate file


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Square-world dataset with recorded "policy" rollouts, an untrained tiny world model, a reward
    classifier that always says success, and two policies."""
    from world4rl_model.checkpoint import save_checkpoint
    from world4rl_model.dataset import DatasetWriter
    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_model.synthetic import make_dataset
    from world4rl_model.world_model import WorldModel, preset_config

    root = tmp_path_factory.mktemp("prediction")
    ds = make_dataset(root / "ds", episodes_per_task=12, length=6, image_size=S, tasks=("reach-left",))
    writer = DatasetWriter(root / "ds", image_size=S)
    for i in range(12):  # the BC policy's recorded rollouts, half of them successful
        ep = ds.episode(i)
        writer.add_episode(ep["frames"], ep["actions"], "reach-left", success=i % 2 == 0, kind="policy")
    torch.manual_seed(0)
    WorldModel(preset_config("tiny", image_size=S, sampling_steps=1)).save(root / "wm")
    rm = RewardClassifier(RewardConfig(image_size=S, tasks=list(ds.tasks), channels=[8]))
    with torch.no_grad():
        rm.head[-1].bias.fill_(50.0)
    save_checkpoint(root / "rw", rm.state_dict(), rm.checkpoint_config())
    for name, seed in (("bc", 0), ("refined", 1)):
        torch.manual_seed(seed)
        policy = GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32))
        save_policy(root / name, policy, tasks=["reach-left"], trainer="bc")
    return root


def test_reset_to_starts_each_env_from_the_given_episodes_first_frame(world):
    from world4rl_model.dataset import Dataset
    from world4rl_model.env import WorldModelEnv

    ds = Dataset(world / "ds")
    env = WorldModelEnv.from_checkpoints(world / "wm", world / "rw", world / "ds", num_envs=3, task="reach-left")
    obs, info = env.reset_to([5, 0, 5])
    assert info["source_episode"].tolist() == [5, 0, 5]
    for row, episode in enumerate([5, 0, 5]):
        assert torch.equal(obs["image"][row], torch.from_numpy(ds.episode(episode)["frames"][0].copy()))
    with pytest.raises(ValueError, match="one episode per env"):
        env.reset_to([0])
    small = WorldModelEnv.from_checkpoints(world / "wm", world / "rw", world / "ds", 2, episodes=[0, 1])
    with pytest.raises(ValueError, match=r"\[7\] are not among"):
        small.reset_to([0, 7])


def test_predict_and_gate_end_to_end_is_deterministic_and_writes_the_gate(world, tmp_path):
    args = (world / "bc", world / "refined", world / "wm", world / "rw", world / "ds", "reach-left")
    settings = pred.PredictionSettings(repeats=2, calibration_repeats=2, horizon=3, batch=5, bootstrap=200)
    first = pred.predict_and_gate(*args, settings, seed=4)
    p = first["prediction"]
    assert p["horizon"] == 3
    assert p["calibration"]["rollouts"] == 12
    assert p["calibration"]["real_success"] == 0.5
    # The classifier fires on every dreamed frame: every dream of every policy succeeds.
    assert p["calibration"]["imagined_success"] == 1.0
    assert p["policies"]["bc"]["imagined_success"] == p["policies"]["refined"]["imagined_success"] == 1.0
    # By default both policies are judged from the held-out starts and the 12 recorded rollouts' first frames.
    assert p["judging_starts"]["held_out"] >= 1
    assert p["judging_starts"]["recorded_rollouts"] == 12
    assert p["policies"]["bc"]["starts"] == p["judging_starts"]["held_out"] + 12
    assert p["rule"] == "paired"
    # Imagination says "success" for every start, so the calibration can only return the real rate.
    assert p["policies"]["refined"]["predicted_success"] == pytest.approx(0.5, abs=0.02)
    assert first["deploy"]["policy"] == "bc"  # no predicted difference
    # How far the refined policy acts from BC, on the judged episodes' recorded frames (two random nets: far).
    assert p["policy_shift"]["frames"] > 0
    assert p["policy_shift"]["mean_abs"] > 0.0
    again = pred.predict_and_gate(*args, settings, seed=4)["prediction"]
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in p.items() if k != "seconds"}
    # Too few recorded rollouts: no prediction, and the gate says why it keeps BC.
    few = pred.predict_and_gate(*args, pred.PredictionSettings(min_calibration=13), seed=4)
    assert few["prediction"] is None
    assert "12 recorded rollouts" in few["deploy"]["reason"]
    assert "plus its imagined gain" in first["method"]
    per_start = p["per_start"]
    judged_starts = p["policies"]["bc"]["starts"]
    assert len(per_start["episodes"]) == len(per_start["bc"]) == len(per_start["refined"]) == judged_starts
    assert per_start["bc"] == [1.0] * judged_starts
    # The earlier rule, on the held-out starts alone.
    narrow = dataclasses.replace(settings, rollout_starts=False, rule="calibrated")
    n = pred.predict_and_gate(*args, narrow, seed=4)
    assert n["prediction"]["judging_starts"] == {"held_out": p["judging_starts"]["held_out"], "recorded_rollouts": 0}
    assert n["prediction"]["rule"] == "calibrated"
    assert n["method"] == pred.METHOD
    assert n["prediction"]["policies"]["refined"]["predicted_success"] == pytest.approx(0.5, abs=0.02)


def test_policy_shift_measures_how_far_refinement_moved_the_mean_action(world):
    import copy

    from world4rl_model.dataset import Dataset
    from world4rl_policy.policy import load_policy_module

    ds = Dataset(world / "ds")
    rollouts = ds.select(kinds=["policy"])
    bc, _ = load_policy_module(world / "bc")
    same = pred.policy_shift(bc, copy.deepcopy(bc), ds, rollouts)
    assert same["frames"] == sum(int(ds.episodes[e]["length"]) for e in rollouts)  # fewer than the cap: all
    assert same["mean_abs"] == same["max_abs"] == same["mean_in_bc_std"] == 0.0
    # Moving every mean by 0.05 (inside the action range, where nothing is clipped) reads as 0.05.
    moved = copy.deepcopy(bc)
    with torch.no_grad():
        moved.mean_head.bias += 0.05
    from world4rl_policy.bc import BCData

    data = BCData(ds, rollouts, bc.config.frame_history, use_proprio=False)
    frames = data.batch(np.arange(len(data)))["frames"]
    assert bc(frames)[0].abs().max() < 0.9
    shift = pred.policy_shift(bc, moved, ds, rollouts, max_frames=10)
    assert shift["frames"] == 10
    assert shift["mean_abs"] == pytest.approx(0.05, abs=1e-5)
    assert shift["per_dimension"] == pytest.approx([0.05] * 4, abs=1e-5)
    bc_std = bc(frames)[1].exp().mean().item()
    assert shift["mean_in_bc_std"] == pytest.approx(0.05 / bc_std, rel=0.2)
    assert "moved the mean action by 0.0500" in pred.shift_line(shift)
    # A policy pushed beyond the range acts at its edge, as on the robot: the shift is what it would do.
    with torch.no_grad():
        moved.mean_head.bias += 10.0
    clipped = pred.policy_shift(bc, moved, ds, rollouts)
    assert clipped["max_abs"] <= 2.0
    with pytest.raises(ValueError, match="no frames"):
        pred.policy_shift(bc, moved, ds, [])


def test_deploy_resolves_the_gates_choice_and_refuses_a_stale_record(world, tmp_path):
    from world4rl_policy.policy import load_policy_module

    refined = tmp_path / "refine_run"  # a run directory: step_000000001/ and `latest`, as refine writes
    save_policy(refined, load_policy_module(world / "refined")[0], run_step=1)
    decision = {"policy": "bc", "reason": "predicted gain over BC +1.0 points (...) is not above zero; keeping BC"}
    path = pred.write_gate(refined, {"prediction": None, "deploy": decision}, world / "bc")
    record = json.loads(path.read_text())
    assert record["deploy"] == "bc"
    chosen, note = pred.resolve_deploy_policy(refined)
    assert chosen == (world / "bc").resolve()
    assert "as the gate chose" in note
    chosen, note = pred.resolve_deploy_policy(refined, choice="refined")
    assert chosen == (refined / "step_000000001").resolve()
    assert "against the gate's choice" in note
    assert pred.resolve_deploy_policy(world / "bc") == (world / "bc", None)  # a plain checkpoint
    with pytest.raises(ValueError, match=r"no gate\.json"):
        pred.resolve_deploy_policy(world / "bc", choice="bc")
    # The refined checkpoint changes after the decision: the old decision must not pick for it.
    save_policy(refined, GaussianPolicy(PolicyConfig(image_size=S, channels=(8, 16), hidden_dim=32)), run_step=2)
    with pytest.raises(ValueError, match="refined policy changed since the gate decided"):
        pred.resolve_deploy_policy(refined)
    (refined / "gate.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        pred.resolve_deploy_policy(refined)


# ---------------------------------------------------------------------------------- several PPO seeds


def test_seed_choice_and_the_split_of_held_out_starts():
    from world4rl_policy import seeds

    assert seeds.choose({3: 0.4, 4: 0.7, 5: 0.7}) == 4  # the best; a tie goes to the lower seed
    with pytest.raises(ValueError, match="no seeds"):
        seeds.choose({})
    picking, judging = seeds.split_held_out([9, 1, 5, 7, 3])
    assert (picking, judging) == ([1, 5, 9], [3, 7])


def test_several_ppo_seeds_keep_the_best_and_the_gate_judges_it_on_other_starts(world, tmp_path):
    from world4rl_model.checkpoint import resolve_checkpoint
    from world4rl_model.world_model import WorldModel
    from world4rl_policy import ppo, seeds
    from world4rl_policy.policy import load_policy_module

    out = tmp_path / "refine"
    torch.manual_seed(0)  # a world model that held out 30 % of the episodes: a few starts for each half
    wm = WorldModel.from_checkpoint(world / "wm")[0]
    wm.save(tmp_path / "wm", dataset={"val_fraction": 0.3, "split_seed": 0})
    cfg = ppo.PPOConfig(
        policy=str(world / "bc"), world_model=str(tmp_path / "wm"), reward=str(world / "rw"), dataset=str(world / "ds"),
        out=str(out), num_envs=4, num_steps=3, horizon=2, total_steps=12, value_warmup_updates=1, progress=False,
        video_episodes=0, threads=1, seeds=2, seed=5,
        prediction=pred.PredictionSettings(repeats=2, calibration_repeats=2, batch=5, bootstrap=200),
    )  # fmt: skip
    summary = ppo.refine(cfg)
    record = json.loads((out / seeds.SELECTION_FILE).read_text())
    # Seeds are judged over the robot's episode length (the recorded rollouts': 6 frames, 5 steps), as the
    # gate judges, not over PPO's 2-step training dreams.
    assert record["horizon"] == 5
    assert set(record["imagined_success"]) == {"5", "6"}  # both seeds were judged in imagination
    assert record["chosen_seed"] == seeds.choose({int(s): r for s, r in record["imagined_success"].items()})
    chosen = seeds.seed_run_dir(out, record["chosen_seed"])
    # OUT is the chosen seed's policy for everything that loads, deploys or predicts it.
    assert resolve_checkpoint(out) == resolve_checkpoint(chosen)
    assert load_policy_module(out)[1]["ppo_config"]["seed"] == record["chosen_seed"]
    for seed in (5, 6):
        assert load_policy_module(seeds.seed_run_dir(out, seed))[1]["update"] == 1
    # The gate never judges the winner on the starts that picked it.
    gate = json.loads((out / "gate.json").read_text())
    picking = set(record["selection_starts"])
    assert picking
    assert set(gate["excluded_starts"]) == picking
    judged = gate["prediction"]["judging_starts"]["held_out"]
    assert judged == len(seeds.split_held_out(pred.held_out_starts(*_held_out_inputs(world, tmp_path / "wm")))[1])
    assert gate["prediction"]["horizon"] == record["horizon"]
    assert summary["selection"]["chosen_seed"] == record["chosen_seed"]
    # The PPO loops' cost is both seeds': CPU seconds and imagined steps summed.
    by_seed = [json.loads((seeds.seed_run_dir(out, s) / "summary.json").read_text())["perf"] for s in (5, 6)]
    assert summary["perf"]["imagined_steps"] == 24
    assert summary["perf"]["ppo_cpu_seconds"] == pytest.approx(sum(p["ppo_cpu_seconds"] for p in by_seed))
    assert json.loads((out / "summary.json").read_text())["perf"] == summary["perf"]
    # Rerunning resumes every seed (nothing left to do) and chooses the same one; each seed's record of
    # its training (history, the loop's cost) survives the no-op attempt.
    histories = [json.loads((seeds.seed_run_dir(out, s) / "summary.json").read_text())["history"] for s in (5, 6)]
    again = ppo.refine(cfg)
    assert again["selection"]["chosen_seed"] == record["chosen_seed"]
    assert again["selection"]["training_imagined_success"] == record["training_imagined_success"]
    assert again["perf"] == summary["perf"]
    for s, history in zip((5, 6), histories, strict=True):
        assert len(history) == 1
        assert json.loads((seeds.seed_run_dir(out, s) / "summary.json").read_text())["history"] == history
    with pytest.raises(ValueError, match="several PPO seeds"):
        ppo.refine(ppo.PPOConfig(**{**cfg.to_dict(), "seeds": 1, "prediction": cfg.prediction}))


def _held_out_inputs(world, wm):
    from world4rl_model.dataset import Dataset
    from world4rl_model.world_model import WorldModel

    return Dataset(world / "ds"), WorldModel.from_checkpoint(wm, "cpu")[1], "reach-left"


def test_with_one_held_out_start_the_seed_is_chosen_by_training_and_the_gate_keeps_the_start(world, tmp_path):
    from world4rl_policy import ppo, seeds

    out = tmp_path / "refine"
    cfg = ppo.PPOConfig(
        policy=str(world / "bc"), world_model=str(world / "wm"), reward=str(world / "rw"), dataset=str(world / "ds"),
        out=str(out), num_envs=4, num_steps=3, horizon=2, total_steps=12, value_warmup_updates=1, progress=False,
        video_episodes=0, threads=1, seeds=2,
        prediction=pred.PredictionSettings(repeats=2, calibration_repeats=2, horizon=3, batch=5, bootstrap=200),
    )  # fmt: skip
    assert len(pred.held_out_starts(*_held_out_inputs(world, world / "wm"))) == 1
    record = ppo.refine(cfg)["selection"]
    assert record["imagined_success"] == {}
    assert record["selection_starts"] == []
    assert "training-time imagined success" in record["note"]
    trained = {int(s): r for s, r in record["training_imagined_success"].items()}
    assert record["chosen_seed"] == seeds.choose(trained)
    gate = json.loads((out / "gate.json").read_text())
    assert "excluded_starts" not in gate
    assert gate["prediction"]["judging_starts"]["held_out"] == 1


# ---------------------------------------------------------------------------------- calibrated reward threshold


def test_discrimination_is_the_roc_auc_of_dream_scores_against_real_outcomes():
    rng = np.random.default_rng(0)
    real = np.arange(100) % 2 == 0
    peaks = np.where(real[:, None], 0.6, 0.2) + 0.3 * rng.random((100, 4))  # successes 0.6-0.9, failures 0.2-0.5
    separated = pred.Imagined(np.arange(100), real.astype(float), 4, 0.0, peaks)
    d = pred.discrimination(separated, real, bootstrap=300)
    assert (d["auc"], d["ci95"], d["informative"]) == (1.0, [1.0, 1.0], True)
    assert (d["successes"], d["failures"]) == (50, 50)
    noise = pred.Imagined(np.arange(100), np.zeros(100), 4, 0.0, rng.random((100, 4)))
    d = pred.discrimination(noise, real, bootstrap=300)
    assert d["ci95"][0] < 0.5 < d["ci95"][1]
    assert d["informative"] is False
    assert "chance" in pred.discrimination_line(d)
    # Without kept peaks the fraction of successful dreams scores each rollout.
    fractions = pred.Imagined(np.arange(100), np.where(real, 0.75, 0.25), 4, 0.0)
    assert pred.discrimination(fractions, real, bootstrap=100)["auc"] == 1.0
    # One outcome only: nothing to tell apart.
    assert pred.discrimination(noise, np.ones(100, bool))["auc"] is None
    assert "undefined" in pred.discrimination_line(pred.discrimination(noise, np.ones(100, bool)))


def test_the_calibrated_threshold_is_the_lowest_at_which_dreams_do_not_flatter_the_record():
    from world4rl_policy.reward_calibration import MAX_THRESHOLD, calibrated_threshold

    peaks = np.array([[0.6, 0.95], [0.7, 0.55], [0.3, 0.2]])
    real = np.array([True, False, False])  # 1/3 real; at 0.5 the dreams say 4/6
    t = calibrated_threshold(peaks, real, floor=0.5)
    assert 0.6 < t <= 0.6 + 1e-12  # just above 0.6: 0.7 and 0.95 remain, 2/6
    assert (peaks >= t).mean() <= real.mean() < (peaks >= 0.6).mean()
    assert calibrated_threshold(peaks, np.array([True, True, False]), floor=0.5) == 0.5  # honest at the floor
    assert calibrated_threshold(peaks, real, floor=0.8) == 0.8  # never below the floor: 0.95 alone is 1/6
    # A classifier certain about the failures too: the threshold gives up at its cap.
    assert calibrated_threshold(np.ones((3, 2)), real, floor=0.5) == MAX_THRESHOLD
    with pytest.raises(ValueError, match="one outcome per rollout"):
        calibrated_threshold(peaks, real[:2], floor=0.5)


def test_refine_calibrates_the_threshold_once_rewards_with_it_and_the_gate_judges_with_it(world, tmp_path):
    from world4rl_policy import ppo
    from world4rl_policy.reward_calibration import CALIBRATION_FILE, MAX_THRESHOLD

    out = tmp_path / "refine"
    cfg = ppo.PPOConfig(
        policy=str(world / "bc"), world_model=str(world / "wm"), reward=str(world / "rw"), dataset=str(world / "ds"),
        out=str(out), num_envs=4, num_steps=3, horizon=2, total_steps=12, value_warmup_updates=1, progress=False,
        video_episodes=0, threads=1, reward_calibration=True,
        prediction=pred.PredictionSettings(repeats=2, calibration_repeats=2, batch=5, bootstrap=200),
    )  # fmt: skip
    summary = ppo.refine(cfg)
    record = json.loads((out / CALIBRATION_FILE).read_text())
    # The fixture's classifier fires on every frame, the record says half the rollouts failed: the
    # dreams cannot be made honest, so the threshold stops at its cap and the record says so.
    assert record["rollouts"] == 12
    assert record["real_success"] == 0.5
    assert record["imagined_success_at_floor"] == 1.0
    assert record["threshold"] == MAX_THRESHOLD
    assert record["floor"] == 0.5
    assert record["honest"] is False
    # A classifier that fires on everything cannot tell the real successes from the failures: chance.
    assert record["discrimination"] == {
        "successes": 6, "failures": 6, "auc": 0.5, "ci95": [0.5, 0.5], "informative": False
    }  # fmt: skip
    assert summary["reward_threshold"] == pytest.approx(MAX_THRESHOLD)  # PPO was rewarded with it
    assert summary["last"]["reward_threshold"] == pytest.approx(MAX_THRESHOLD)
    gate = json.loads((out / "gate.json").read_text())
    assert gate["prediction"]["reward_threshold"] == pytest.approx(MAX_THRESHOLD)
    # The prediction's calibration pass is the calibration's dreams, not dreamt a second time.
    assert gate["prediction"]["calibration"]["dreams_reused"] is True
    assert gate["prediction"]["calibration"]["discrimination"]["auc"] == 0.5
    # Judged on several samples per step, the calibration's one-sample dreams cannot stand in.
    strict = dataclasses.replace(cfg, prediction=dataclasses.replace(cfg.prediction, success_samples=2))
    judged = ppo.predict_after_refine(strict, "reach-left", 1)
    assert judged["prediction"]["calibration"]["dreams_reused"] is False
    assert judged["prediction"]["policies"]["bc"]["imagined_success"] == 1.0  # the classifier fires on every sample
    assert record["episodes"] == sorted(record["episodes"])
    assert len(record["peak_probability"]) == 12
    assert len(record["peak_probability"][0]) == 2
    # A rerun reuses the record (the dreams are not dreamt again) ...
    stamp = (out / CALIBRATION_FILE).stat().st_mtime_ns
    ppo.refine(cfg)
    assert (out / CALIBRATION_FILE).stat().st_mtime_ns == stamp
    # ... and too few recorded rollouts is an error that names the fix, before anything is trained.
    too_few = pred.PredictionSettings(min_calibration=13)
    few = ppo.PPOConfig(**{**cfg.to_dict(), "out": str(tmp_path / "few"), "prediction": too_few})
    with pytest.raises(ValueError, match="12 recorded rollouts of the BC policy"):
        ppo.refine(few)
    assert not (tmp_path / "few" / "latest").exists()


def test_calibration_against_a_graded_classifier_makes_bc_dreams_no_better_than_its_record(world, tmp_path):
    from world4rl_model.checkpoint import save_checkpoint
    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_policy import ppo
    from world4rl_policy.reward_calibration import calibrate

    torch.manual_seed(3)  # an untrained classifier: probabilities spread around one half
    rm = RewardClassifier(RewardConfig(image_size=S, tasks=["reach-left"], channels=[8]))
    with torch.no_grad():
        rm.head[-1].weight.mul_(40.0)
    save_checkpoint(tmp_path / "rw", rm.state_dict(), rm.checkpoint_config())
    cfg = ppo.PPOConfig(
        policy=str(world / "bc"), world_model=str(world / "wm"), reward=str(tmp_path / "rw"), dataset=str(world / "ds"),
        out=str(tmp_path / "refine"), num_envs=4, reward_calibration=True, progress=False, reward_threshold=0.2,
        prediction=pred.PredictionSettings(calibration_repeats=3, batch=6),
    )  # fmt: skip
    record = calibrate(cfg, "reach-left")
    assert record["floor"] == 0.2
    assert record["imagined_success_at_floor"] > 0.0  # the classifier is not silent
    assert record["honest"]
    assert record["imagined_success_at_threshold"] <= record["real_success"] == 0.5
    assert record["imagined_success_at_floor"] > 0.5  # at the floor the dreams flatter the record ...
    assert record["threshold"] > record["floor"]  # ... so the threshold was raised

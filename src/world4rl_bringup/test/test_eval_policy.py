"""`world4rl eval policy`: interval statistics against published values, episodes in the true sim
(scripted expert and policy checkpoints), same seeds for every policy, JSON/markdown/videos."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from world4rl_bringup import eval_policy_cli as ev
from world4rl_bringup.sim_rollouts import ExpertActor, PolicyActor, RandomWalkActor, make_env, run_episode
from world4rl_model.statistics import wilson_interval

S = 32


def test_run_episode_labels_success_per_frame_and_aligns_actions():
    env = make_env("franka", "reach", S, seed=3)
    full = run_episode(env, ExpertActor(0.0), seed=3)
    assert full.solved
    assert len(full.frames) == env.horizon + 1  # reset frame + one per step, to the horizon
    assert full.actions.shape == (len(full.frames), 4)
    assert full.success.shape == (len(full.frames),)
    assert not full.success[0]
    assert full.success[full.first_success]
    assert not full.success[: full.first_success].any()
    assert full.joint_positions.shape == (len(full.frames), 9)
    # Stopping at success: the same seed gives the same trajectory up to the first success.
    short = run_episode(env, ExpertActor(0.0), seed=3, stop_on_success=True)
    assert short.steps == full.first_success == short.first_success
    np.testing.assert_array_equal(short.frames, full.frames[: short.steps + 1])
    # A random walk from the same seed is reproducible, and differs for another seed.
    a = run_episode(env, RandomWalkActor(), seed=5)
    b = run_episode(env, RandomWalkActor(), seed=5)
    c = run_episode(env, RandomWalkActor(), seed=6)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.array_equal(a.actions, c.actions)
    assert set(np.unique(a.actions[:, 3])) <= {-1.0, 1.0}
    env.close()


@pytest.fixture(scope="module")
def two_policies(tmp_path_factory):
    import torch

    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy

    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    small = {"image_size": S, "channels": (8, 8, 8, 8), "hidden_dim": 16}
    a = GaussianPolicy(PolicyConfig(**small))
    save_policy(root / "a", a, trainer="bc", tasks=["reach"])
    b = GaussianPolicy(PolicyConfig(**small))
    with torch.no_grad():
        b.mean_head.bias.copy_(torch.tensor([-1.0, 0.0, 1.0, -1.0]))  # drive back and up, away from the goals
    save_policy(root / "b", b, trainer="ppo-imagination", tasks=["reach"])
    return root


def test_policy_actor_acts_on_its_frame_history(two_policies):
    env = make_env("franka", "reach", S, seed=0)
    actor = PolicyActor(two_policies / "b")
    ep = run_episode(env, actor, seed=0)
    assert len(actor.history) == 4
    np.testing.assert_array_equal(actor.history.array()[-1], ep.frames[-1])
    # The mean action of policy b: its bias dominates the tiny initial weights.
    assert np.all(ep.actions[:, 0] < -0.5)
    assert np.all(ep.actions[:, 2] > 0.5)
    env.close()


def test_evaluate_runs_every_policy_on_the_same_seeds(two_policies, tmp_path):
    out = tmp_path / "eval"
    result = ev.evaluate(
        [str(two_policies / "a"), str(two_policies / "b"), str(two_policies / "a")],
        "reach",
        episodes=3,
        seed=40,
        labels=["bc", "pushy", "bc-again"],
        videos=1,
        out=out,
        progress=False,
    )
    bc, pushy, again = result["policies"]
    assert [e["seed"] for e in bc["per_episode"]] == [40, 41, 42]
    assert [e["seed"] for e in pushy["per_episode"]] == [40, 41, 42]
    assert bc["per_episode"] == again["per_episode"]  # deterministic mean actions, same seeds
    assert pushy["trainer"] == "ppo-imagination"
    for r in (bc, pushy):
        assert r["successes"] == sum(e["success"] for e in r["per_episode"])
        assert r["ci95_wilson"] == pytest.approx(wilson_interval(r["successes"], 3))
        assert all(e["steps"] == 30 for e in r["per_episode"] if not e["success"])  # reach's horizon
    v = pushy["vs_baseline"]
    assert v["baseline"] == "bc"
    assert v["difference"] == pytest.approx(pushy["success_rate"] - bc["success_rate"])
    assert "vs_baseline" not in bc
    saved = json.loads((out / "eval.json").read_text())
    assert saved["policies"][1]["label"] == "pushy"
    md = (out / "eval.md").read_text()
    assert "| pushy | " in md
    assert "95 % Wilson CI" in md
    videos = saved["videos"]
    assert len(videos) == 1
    import imageio.v2 as imageio

    frames = [f for f in imageio.get_reader(videos[0])]  # list() asks len(): inf for ffmpeg
    assert len(frames) == 31  # the longest episode (30 steps + reset frame)
    assert frames[0].shape[1] == 3 * frames[0].shape[0]  # three policies side by side
    assert math.isclose(result["episodes"], 3)


def test_cli_and_world4rl_eval_dispatch(two_policies, tmp_path, capsys):
    from world4rl_bringup import cli

    code = cli.main(
        ["eval", "policy", "--task", "reach", "--episodes", "2", "--policy", str(two_policies / "a"),
         "--videos", "0", "--out", str(tmp_path / "o"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "| " in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["episodes"] == 2
    assert ev.main(["--task", "fly", "--policy", str(two_policies / "a"), "--out", str(tmp_path / "x")]) == 2
    # The arm moved as a deploy moves it: said in the result and its table.
    runtime = ["--task", "reach", "--episodes", "1", "--policy", str(two_policies / "a"), "--videos", "0", "--quiet"]
    assert ev.main([*runtime, "--timing", "runtime", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["timing"] == "runtime"
    assert "runtime timing" in (tmp_path / "r" / "eval.md").read_text()
    capsys.readouterr()
    assert ev.main([*runtime, "--suite", "metaworld", "--timing", "runtime", "--out", str(tmp_path / "m")]) == 2
    assert "only 'direct'" in capsys.readouterr().err


def test_a_task_name_that_is_a_path_is_refused(two_policies, tmp_path, monkeypatch, capsys):
    """--task becomes world4rl_data/eval/TASK (the default --out): '../x' would leave that folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for bad in ("../x", "../../escaped"):
        assert ev.main(["--task", bad, "--policy", str(two_policies / "a"), "--episodes", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("world4rl eval policy: error: --task: ")
        assert f"{bad!r} is not a valid task name" in err
    with pytest.raises(ValueError, match=r"'\.\./x' is not a valid task name"):
        ev.evaluate([str(two_policies / "a")], "../x", episodes=1, out=tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]
    assert list(cwd.iterdir()) == []

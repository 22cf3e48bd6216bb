"""The deploy graph and `world4rl deploy`: a policy checkpoint on the sim through ROS, compared
with the same checkpoint evaluated through the simulator's direct API."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from world4rl_bringup.graph import GraphError, load_graph, resolve
from world4rl_bringup.graph_runner import check_runnable_here
from world4rl_bringup.sim_rollouts import direct_api_outcomes

ROOT = Path(__file__).resolve().parents[1]


def deploy(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", "deploy", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------- graph


def test_deploy_graph_runs_the_sim_and_the_runner_with_the_robot_profile():
    resolved = resolve(load_graph("deploy"), {"policy": "/data/ckpt", "task": "reach", "seed": "7"})
    assert [n.name for n in resolved.nodes] == ["sim_robot", "policy_runner"]
    sim, runner = resolved.nodes
    assert sim.parameters == {"task": "reach", "seed": 7, "real_time_factor": 1.0, "expert_action_rate_hz": 0.0}
    assert runner.module == "world4rl_policy.policy_runner_node"
    live_view = {"live_view.enabled": False, "live_view.host": "127.0.0.1", "live_view.port": 8765}  # off, loopback
    assert runner.parameters == {
        "policy": "/data/ckpt",
        "policy_choice": "gate",
        **live_view,
        "live_view.world_model": "",
    }
    files = runner.params_file_paths()
    assert [p.name for p in files] == ["policy_runner.yaml", "sim.yaml"]  # the profile last: it wins
    assert all(p.is_file() for p in files + sim.params_file_paths())
    assert resolved.includes == ()
    check_runnable_here(resolved)  # everything has a module: the CLI can run it


def test_deploy_graph_on_the_real_arm_needs_ros2_launch():
    resolved = resolve(load_graph("deploy"), {"robot": "franka", "camera": "realsense", "policy": "/p"})
    assert [n.name for n in resolved.nodes] == ["camera", "fr3_arm_controller_spawner", "policy_runner"]
    assert resolved.nodes[2].params_files[-1] == "world4rl_bringup/config/robots/franka.yaml"
    (include,) = resolved.includes
    assert (include.package, include.launch) == ("franka_bringup", "franka.launch.py")
    assert include.arguments["robot_type"] == "fr3"
    with pytest.raises(GraphError, match=r"ros2 launch world4rl_bringup deploy.launch.py robot:=franka"):
        check_runnable_here(resolved)
    with pytest.raises(GraphError, match="robot:='ur5'"):
        resolve(load_graph("deploy"), {"robot": "ur5"})


def test_launch_file_is_the_deploy_graph_and_is_installed():
    source = (ROOT / "src/world4rl_bringup/launch/deploy.launch.py").read_text()
    assert 'generate_graph_launch_description("deploy")' in source
    from world4rl_bringup.graph import package_share

    share = package_share("world4rl_bringup")
    assert (share / "launch" / "deploy.launch.py").is_file()
    assert (share / "config" / "graphs" / "deploy.yaml").is_file()
    assert (package_share("world4rl_policy") / "config" / "policy_runner.yaml").is_file()


# ---------------------------------------------------------------------------------- CLI


def test_cli_refuses_the_real_arm_and_a_missing_checkpoint(tmp_path, constant_policy):
    ckpt = constant_policy(tmp_path / "p", [0, 0, 0, 0])
    franka = deploy("--robot", "franka", "--policy", str(ckpt))
    assert franka.returncode == 2
    assert "ros2 launch world4rl_bringup deploy.launch.py robot:=franka" in franka.stderr
    assert "/policy_runner/arm" in franka.stderr
    missing = deploy("--policy", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert "nothing" in missing.stderr
    bad_task = deploy("--policy", str(ckpt), "--task", "juggle")
    assert bad_task.returncode == 2
    assert "not a sim task" in bad_task.stderr


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.ros
@pytest.mark.slow  # the sim renders 640x480 at 30 Hz beside the runner: ~20 s
def test_deploy_on_the_sim_matches_the_direct_api_seed_by_seed(ros_domain, tmp_path, constant_policy):
    """A checkpoint that steers at one seed's reach goal: through ROS it succeeds exactly on the
    seeds where the direct API says it does, and the CLI reports the rate with its CI."""
    from world4rl_sim.env import FrankaSimEnv

    env = FrankaSimEnv("reach", image_size=16)
    # The seed whose goal is nearest the start, and the constant action that passes through it
    # at step ~15 of 30 (slowly: ~1 s inside the 3 cm success sphere).
    distances = []
    for seed in range(1000, 1040):
        obs, _ = env.reset(seed=seed)
        goal = env.sim.task.goal_position(env.sim)
        distances.append((float(np.linalg.norm(goal - obs["ee_pos"])), seed, goal - obs["ee_pos"]))
    env.close()
    _, seed, offset = min(distances)
    from world4rl_spec import EE_DELTA_SCALE_M

    ckpt = constant_policy(tmp_path / "policy", [*(offset / 15 / EE_DELTA_SCALE_M), -1.0])
    seeds = [seed, seed + 1, seed + 2]
    expected = direct_api_outcomes(ckpt, "reach", seeds, horizon=30)
    assert expected[0], "the aimed checkpoint must solve its seed through the direct API"

    out = tmp_path / "deploy.json"
    run = deploy(
        "--policy", str(ckpt), "--task", "reach", "--episodes", "3", "--seed", str(seed), "--out", str(out),
        "--compare-direct",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    got = [r["success"] for r in result["results"]]
    assert [r["seed"] for r in result["results"]] == seeds
    assert got == expected, (result, expected)
    assert result["successes"] == sum(expected)
    low, high = result["ci95_wilson"]
    assert low <= result["success_rate"] <= high
    assert result["faults"] == 0
    assert result["checkpoint"].startswith(f"{ckpt} (step ")
    assert "model.safetensors sha256 " in result["checkpoint"]
    latency = result["latency_ms"]  # the runner's image -> command latency, from its PolicyStatus
    assert latency["cycles"] >= 3
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    for r in result["results"]:
        # Failures run the whole horizon (in policy steps and in simulated time); a success ends its episode early.
        assert r["outcome"] == ("success" if r["success"] else "horizon"), r
        assert r["steps"] >= 30 if r["outcome"] == "horizon" else r["steps"] < 30, r
    assert f"success rate {sum(expected)}/3" in run.stdout
    # --compare-direct ran the direct API itself, on the same seeds.
    assert result["direct_api"]["results"] == expected
    assert result["direct_api"]["same_outcome_seeds"] == 3
    assert result["direct_api"]["agree_within_ci"]
    assert "rates agree within the confidence intervals" in run.stdout

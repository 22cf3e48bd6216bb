"""The runtime out-of-distribution rule over real DDS: the policy runner drives the sim robot (real
MuJoCo) with a policy whose OOD statistics were fitted on the sim camera's frames as the runner
sees them. In distribution it runs and publishes its score every cycle; beyond `ood.threshold`
with `ood.action` hold it holds position and disarms with an out_of_distribution fault naming the
score and the threshold; with warn it only logs; and it refuses to start `hold` without
statistics that fit the checkpoint's weights."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from world4rl_testing import wait_until

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
RUNNER = "world4rl_policy.policy_runner_node"
SIM = "world4rl_sim.sim_robot_node"
# As the deploy graph starts them: the node defaults, then the sim robot's profile.
RUNNER_FILES = [
    ROOT / "src/world4rl_policy/config/policy_runner.yaml",
    ROOT / "src/world4rl_bringup/config/robots/sim.yaml",
]
SIM_FILE = ROOT / "src/world4rl_sim/config/sim_robot.yaml"
TASK, SEED = "reach", 3


def _write_sim_dataset(root: Path, episodes: int = 8, steps: int = 15) -> Path:
    """Scripted-expert reach episodes whose frames are the sim's 640x480 camera image converted as
    the runner converts it (world4rl_model.images.to_learning_image): the runner's view."""
    from world4rl_model.dataset import DatasetWriter
    from world4rl_model.images import to_learning_image
    from world4rl_sim.env import FrankaSimEnv
    from world4rl_spec import CAMERA_HEIGHT, CAMERA_WIDTH

    writer = DatasetWriter(root, image_size=64)
    env = FrankaSimEnv(TASK, image_size=16)
    for seed in range(episodes):
        env.reset(seed=seed)
        frames, actions = [], []
        for _ in range(steps):
            frames.append(to_learning_image(env.sim.render(CAMERA_WIDTH, CAMERA_HEIGHT), 64))
            actions.append(env.expert_action(noise_std=0.1).astype(np.float32))
            env.step(actions[-1])
        writer.add_episode(np.stack(frames), np.stack(actions), task=TASK, success=True, kind="expert", seed=seed)
    env.close()
    return root


@pytest.fixture(scope="module")
def fitted_policy(tmp_path_factory) -> Path:
    """A small (untrained: its mean action is ~0) policy with OOD statistics fitted on such frames."""
    import torch

    from world4rl_model.dataset import Dataset
    from world4rl_policy import ood
    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy

    root = tmp_path_factory.mktemp("ood_runtime")
    dataset = Dataset(_write_sim_dataset(root / "data"))
    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    ood.fit_policy(policy, dataset, fit_episodes=range(6), held_out=[6, 7])
    return save_policy(root / "policy", policy)


class Operator:
    """The test's side: PolicyStatus and the sim's arm joints as they come, and the arm service."""

    def __init__(self, node):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_srvs.srv import SetBool

        from world4rl_msgs.msg import PolicyStatus
        from world4rl_spec import topics

        self.lock = threading.Lock()
        self.statuses: list = []
        self.joints: np.ndarray | None = None
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(PolicyStatus, topics.POLICY_STATUS, self._on_status, reliable)
        node.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, 10)
        self.client = node.create_client(SetBool, topics.POLICY_ARM)
        self.request = SetBool.Request

    def _on_status(self, msg) -> None:
        with self.lock:
            self.statuses.append(msg)

    def _on_joints(self, msg) -> None:
        from world4rl_spec import ARM_JOINT_NAMES

        if all(n in msg.name for n in ARM_JOINT_NAMES):
            self.joints = np.array([msg.position[list(msg.name).index(n)] for n in ARM_JOINT_NAMES])

    def since(self, start: int) -> list:
        with self.lock:
            return self.statuses[start:]

    def count(self) -> int:
        with self.lock:
            return len(self.statuses)

    def call(self, on: bool, runner):
        assert wait_until(self.client.service_is_ready, timeout=60.0, nodes=[runner])
        future = self.client.call_async(self.request(data=on))
        assert wait_until(future.done, timeout=20.0, nodes=[runner])
        return future.result()

    def arm(self, runner, timeout: float = 60.0) -> int:
        """Arm (retrying while the runner refuses, e.g. until discovery forgets a stopped runner's
        command publisher); returns the status count at arming."""
        deadline = time.monotonic() + timeout
        while True:
            start = self.count()
            response = self.call(True, runner)
            if response.success or time.monotonic() > deadline:
                assert response.success, response.message
                return start
            time.sleep(0.5)


def _default_threshold() -> float:
    """ood.threshold as the deploy graph gives it to the runner (policy_runner.yaml)."""
    import yaml

    return float(yaml.safe_load(RUNNER_FILES[0].read_text())["/**"]["ros__parameters"]["ood.threshold"])


@contextlib.contextmanager
def _runner(policy: Path, log_dir: Path, **params):
    """A policy_runner process for one part of a test (stopped at its end, unlike launch_node's)."""
    from world4rl_testing import NodeProcess

    node = NodeProcess(
        RUNNER, "policy_runner", params_files=RUNNER_FILES, params={"policy": str(policy), **params}, log_dir=log_dir
    ).start()
    try:
        yield node
    finally:
        node.stop()


def test_the_runner_holds_and_disarms_beyond_the_ood_threshold(launch_node, ros_node, fitted_policy, tmp_path):
    sim = launch_node(SIM, "sim_robot", params_file=SIM_FILE, params={"task": TASK, "seed": SEED})
    op = Operator(ros_node)
    assert wait_until(lambda: op.joints is not None, 60.0, nodes=[sim]), sim.stderr_tail()

    # In distribution, `hold` at the default threshold: it runs, scoring every decision.
    with _runner(fitted_policy, tmp_path / "logs_in", **{"ood.action": "hold"}) as runner:
        start = op.arm(runner)
        ok = wait_until(lambda: sum(s.armed and s.step >= 1 for s in op.since(start)) >= 15, 60.0, nodes=[runner, sim])
        assert ok, runner.stderr_tail()
        armed = [s for s in op.since(start) if s.armed]
        scores = [s.ood_score for s in armed if not math.isnan(s.ood_score)]
        assert len(scores) >= 10, [s.ood_score for s in armed]
        assert max(scores) < _default_threshold(), scores
        assert all(s.fault == "" for s in op.since(start))
        assert op.call(False, runner).success

    # A threshold every frame exceeds: the first decision holds position and disarms, saying why.
    params = {"ood.action": "hold", "ood.threshold": 0.05, "ood.window": 1}
    with _runner(fitted_policy, tmp_path / "logs_hold", **params) as runner:
        start = op.arm(runner)
        q_armed = op.joints.copy()
        ok = wait_until(lambda: any(s.fault for s in op.since(start)), 60.0, nodes=[runner, sim])
        assert ok, runner.stderr_tail()
        fault = next(s for s in op.since(start) if s.fault)
        assert not fault.armed
        assert fault.fault.startswith("out_of_distribution: observation out of distribution: this cycle's OOD score")
        assert fault.ood_score > 0.05  # the score of the cycle that faulted, in that cycle's status
        assert f"{fault.ood_score:.2f} > threshold 0.05" in fault.fault
        assert fault.last_refusal == "out_of_distribution"
        time.sleep(1.0)  # the arm holds: it stays where it was armed
        assert np.abs(op.joints - q_armed).max() < 0.01, op.joints - q_armed
        later = op.since(start)[-1]
        assert not later.armed
        assert later.fault.startswith("out_of_distribution")
        assert "[out_of_distribution]" in runner.stderr_tail(20000)

    # `warn`: the same scores only log; the runner stays armed and keeps commanding.
    with _runner(fitted_policy, tmp_path / "logs_warn", **{"ood.action": "warn", "ood.threshold": 0.05}) as runner:
        start = op.arm(runner)
        ok = wait_until(lambda: any(s.armed and s.step >= 10 for s in op.since(start)), 60.0, nodes=[runner, sim])
        assert ok, runner.stderr_tail()
        assert all(s.fault == "" for s in op.since(start))
        logged = "[out_of_distribution] observation out of distribution"
        assert wait_until(lambda: logged in runner.stderr_tail(20000), 10.0)
        assert op.call(False, runner).success


def test_hold_needs_statistics_fitted_to_the_checkpoint(ros_domain, fitted_policy, tmp_path):
    import torch

    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, load_policy_module, save_policy

    def run(policy: Path, action: str) -> subprocess.CompletedProcess:
        args = ["-p", f"policy:={policy}", "-p", f"ood.action:={action}"]
        return subprocess.run(
            [sys.executable, "-m", RUNNER, "--ros-args", *args], capture_output=True, text=True, timeout=120
        )

    plain = save_policy(tmp_path / "plain", GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32)))
    refused = run(plain, "hold")
    assert refused.returncode == 2
    assert "ood.action is 'hold' but" in refused.stderr
    assert "has no OOD statistics" in refused.stderr
    assert f"world4rl ood fit --policy {plain}" in refused.stderr
    # Statistics of other weights (a refined policy carries its BC policy's): refused too.
    policy, _ = load_policy_module(fitted_policy)
    with torch.no_grad():
        policy.trunk[0].weight.mul_(1.01)
    stale = save_policy(tmp_path / "stale", policy)
    refused = run(stale, "hold")
    assert refused.returncode == 2
    assert "has OOD statistics fitted to other weights" in refused.stderr
    bad = run(fitted_policy, "stop")
    assert bad.returncode == 2
    assert "parameter ood.action must be one of" in bad.stderr

"""policy_runner as a process over real DDS: images and joint states in, checked commands out.

The test process plays the robot: it publishes camera frames (640x480 rgb8 at 30 Hz) and
/joint_states (100 Hz), and, as a perfect position-controlled arm, reports the last commanded
joint positions as its state. It serves franka_gripper-style move/grasp actions and calls
~/arm. The policies are real checkpoints whose weights are set to produce a known action, NaN,
or huge image-dependent (sign-flipping) outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.action import ActionServer
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from world4rl_msgs.action import GripperGrasp, GripperMove
from world4rl_msgs.msg import PolicyStatus
from world4rl_policy import fr3_kinematics
from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy
from world4rl_policy.safety_filter import SafetyParams
from world4rl_spec import (
    ARM_JOINT_NAMES,
    EE_DELTA_SCALE_M,
    FINGER_JOINT_NAMES,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_READY_POSE,
    topics,
)
from world4rl_testing import wait_until

pytestmark = pytest.mark.ros

MODULE = "world4rl_policy.policy_runner_node"
STEP = SafetyParams().step_bound()
LO, HI = np.array(FR3_JOINT_POSITION_MIN), np.array(FR3_JOINT_POSITION_MAX)


def write_policy(directory, bias=(0.0, 0.0, 0.0, 0.0), weight_scale=0.0, nan=False, seed=0, run_step=None):
    """A tiny real checkpoint whose mean action is `bias` (+ weight_scale x image features); with
    run_step, `directory` is a run and this is its step_<run_step>/ checkpoint, `latest` names it."""
    torch.manual_seed(seed)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    with torch.no_grad():
        policy.mean_head.weight.normal_(0.0, 1.0).mul_(weight_scale)
        policy.mean_head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
        if nan:
            policy.mean_head.bias[0] = math.nan
    return save_policy(directory, policy, run_step=run_step)


def write_flipping_policy(directory, frames: list[bytes], scale: float = 1e6):
    """A checkpoint with huge outputs of opposite sign for the camera's two alternating frames:
    every action entry saturates and flips sign from one control cycle to the next."""
    from world4rl_model.images import to_learning_image

    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    a, b = (to_learning_image(np.frombuffer(f, np.uint8).reshape(480, 640, 3)) for f in frames)
    histories = torch.from_numpy(np.stack([np.stack([a, b, a, b]), np.stack([b, a, b, a])]))
    with torch.no_grad():
        policy.mean_head.weight.normal_(0.0, 1.0).mul_(scale)
        policy.mean_head.bias.zero_()
        out = policy(histories)[0]
        policy.mean_head.bias.copy_(-(out[0] + out[1]) / 2)
        out = policy(histories)[0]
    assert torch.all(torch.sign(out[0]) == -torch.sign(out[1])), out
    assert torch.all(out.abs() > 100), out
    return save_policy(directory, policy)


def stamp_now(msg, offset_s: float = 0.0) -> None:
    t = time.time() + offset_s
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int((t - int(t)) * 1e9)


class Robot:
    """The robot side of the node, in the test process: camera, joint states, arm, gripper."""

    def __init__(self, node, mode: str = "trajectory"):
        self.node = node
        self.lock = threading.Lock()
        self.q = np.array(FR3_READY_POSE)
        self.published_q = self.q.copy()  # the last joint state sent to the node
        self.images_on = True
        self.joints_on = True
        self.track = True  # the arm moves to each command at once
        self.image_offset_s = 0.0  # added to the camera stamp: negative = stale, positive = future
        self.frames = [
            np.random.default_rng(s).integers(0, 256, 640 * 480 * 3, dtype=np.uint8).tobytes() for s in (1, 2)
        ]
        self.image = dict(width=640, height=480, encoding="rgb8", step=640 * 3)
        self.image_data: bytes | None = None  # None: alternate the two good frames
        self.frame_count = 0
        self.commands: list[tuple[float, np.ndarray]] = []
        self.statuses: list[PolicyStatus] = []
        self.grasps: list[GripperGrasp.Goal] = []
        self.moves: list[GripperMove.Goal] = []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        if mode == "trajectory":
            node.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, reliable)
        else:
            node.create_subscription(Float64MultiArray, topics.ARM_FORWARD_POSITION, self._on_forward, reliable)
        self.trajectories: list[JointTrajectory] = []
        node.create_subscription(PolicyStatus, topics.POLICY_STATUS, self._on_status, reliable)
        self.image_pub = node.create_publisher(Image, topics.CAMERA_IMAGE, 2)
        self.joint_pub = node.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.arm_client = node.create_client(SetBool, topics.POLICY_ARM)
        self.servers = [
            ActionServer(node, GripperGrasp, topics.GRIPPER_GRASP, self._on_grasp),
            ActionServer(node, GripperMove, topics.GRIPPER_MOVE, self._on_move),
        ]
        node.create_timer(0.01, self._publish_joints)
        node.create_timer(1.0 / 30.0, self._publish_image)

    # ------------------------------------------------------------------ robot side
    def _publish_joints(self) -> None:
        if not self.joints_on:
            return
        with self.lock:
            q = self.q.copy()
            self.published_q = q
        # Fingers first: the node must pick the arm joints by name.
        msg = JointState(name=[*FINGER_JOINT_NAMES, *ARM_JOINT_NAMES], position=[0.04, 0.04, *map(float, q)])
        stamp_now(msg)
        self.joint_pub.publish(msg)

    def _publish_image(self) -> None:
        if not self.images_on:
            return
        self.frame_count += 1
        data = self.image_data if self.image_data is not None else self.frames[self.frame_count % 2]
        msg = Image(**self.image, data=data)
        stamp_now(msg, self.image_offset_s)
        self.image_pub.publish(msg)

    def _command(self, positions) -> None:
        q = np.array(positions)
        with self.lock:
            self.commands.append((time.monotonic(), q))
            if self.track:
                self.q = q.copy()

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self.trajectories.append(msg)
        self._command(msg.points[0].positions)

    def _on_forward(self, msg: Float64MultiArray) -> None:
        self._command(msg.data)

    def _on_status(self, msg: PolicyStatus) -> None:
        self.statuses.append(msg)

    def _on_grasp(self, handle):
        self.grasps.append(handle.request)
        handle.succeed()
        return GripperGrasp.Result(success=True)

    def _on_move(self, handle):
        self.moves.append(handle.request)
        handle.succeed()
        return GripperMove.Result(success=True)

    # ------------------------------------------------------------------ operator side
    def arm(self, on: bool, runner) -> SetBool.Response:
        assert wait_until(self.arm_client.service_is_ready, timeout=20.0, nodes=[runner])
        future = self.arm_client.call_async(SetBool.Request(data=on))
        assert wait_until(future.done, timeout=10.0, nodes=[runner])
        return future.result()

    def arm_once_joints_arrive(self, runner, timeout=20.0) -> SetBool.Response:
        """Arm, asking again while the node has no joint state yet: on a loaded machine (or with the
        node pinned to one CPU) its first joint state can come after its arming service and status."""
        deadline = time.monotonic() + timeout
        while not (response := self.arm(True, runner)).success and "no joint state" in response.message:
            if time.monotonic() > deadline:
                break
            wait_until(lambda: False, 0.2, nodes=[runner])
        return response

    def status(self) -> PolicyStatus | None:
        return self.statuses[-1] if self.statuses else None

    def command_count(self) -> int:
        with self.lock:
            return len(self.commands)


def start(launch_node, ckpt, **params):
    # The test's own joint-state publisher shares a loaded 2-core machine: give it 0.5 s instead of
    # the robot's 0.1 s, so only the tests that stop it trip the joint-state watchdog.
    params = {"policy": str(ckpt), "safety.joint_state_timeout_s": 0.5, **params}
    return launch_node(MODULE, "policy_runner", params=params)


def run_standalone(*params: str) -> subprocess.CompletedProcess:
    """The node as its own process (`python -m`) with these `NAME:=VALUE` parameters: how it refuses to start."""
    ros_args = ["--ros-args", *(arg for param in params for arg in ("-p", param))] if params else []
    return subprocess.run([sys.executable, "-m", MODULE, *ros_args], capture_output=True, text=True, timeout=60)


def wait_status(robot, runner, predicate, timeout=10.0) -> PolicyStatus:
    assert wait_until(lambda: robot.status() is not None and predicate(robot.status()), timeout, nodes=[runner]), (
        robot.status()
    )
    return robot.status()


def arm_and_run(robot, runner, commands=5) -> None:
    response = robot.arm_once_joints_arrive(runner)
    assert response.success, response.message
    start_count = robot.command_count()
    assert wait_until(lambda: robot.command_count() >= start_count + commands, 20.0, nodes=[runner]), (
        f"{robot.command_count() - start_count} commands since arming; last status {robot.status()}\n"
        + runner.stderr_tail()
    )


# ---------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("mode", ["trajectory", "forward_position"])
def test_policy_moves_the_arm_only_when_armed(mode, launch_node, ros_node, tmp_path):
    # +x at half speed, close the gripper; named by its run directory, which resolves to step 7.
    ckpt = write_policy(tmp_path / "run", bias=(0.5, 0.0, 0.0, 1.0), run_step=7)
    robot = Robot(ros_node, mode)
    runner = start(launch_node, tmp_path / "run", command_mode=mode)

    # Disarmed at start: images and joint states flow, status says disarmed, no command is sent.
    status = wait_status(robot, runner, lambda s: True, timeout=20.0)
    assert not status.armed
    assert status.policy == str(ckpt.resolve())  # the checkpoint it loaded, not only the name given
    # The start log names what was loaded: the resolved checkpoint, its step and its weights' hash.
    digest = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()[:12]
    log = runner.stderr_tail(20000)
    assert f"{ckpt.resolve()} (step 7, model.safetensors sha256 {digest})" in log, log
    assert str(tmp_path / "run") in log  # and the name the user gave
    time.sleep(1.0)
    assert robot.command_count() == 0

    start_ee = fr3_kinematics.forward_kinematics(robot.q)[:3, 3]
    arm_and_run(robot, runner, commands=10)
    with robot.lock:
        commands = list(robot.commands)
    times = np.array([c[0] for c in commands])
    # Image-driven at the control rate: ~10 Hz, commands from frames one period apart.
    assert 0.08 < np.median(np.diff(times)) < 0.12, np.diff(times)
    ee = fr3_kinematics.forward_kinematics(commands[-1][1])[:3, 3]
    moved = ee - start_ee
    # Every command moves the end effector 0.5 x 2 cm along +x (the arm tracks perfectly).
    np.testing.assert_allclose(moved[0] / len(commands), 0.5 * EE_DELTA_SCALE_M, rtol=0.1)
    assert abs(moved[1]) < 2e-3
    assert abs(moved[2]) < 2e-3
    if mode == "trajectory":
        msg = robot.trajectories[-1]
        assert list(msg.joint_names) == list(ARM_JOINT_NAMES)
        assert msg.points[0].time_from_start.nanosec == 100_000_000
        # The points carry the velocities to follow (the arm is moving) and end at rest.
        assert np.any(msg.points[0].velocities)
        assert len(msg.points) > 1
        assert not np.any(msg.points[-1].velocities)
    # The gripper: one grasp goal when the policy first says close, none repeated.
    assert wait_until(lambda: len(robot.grasps) == 1, 5.0)
    assert robot.moves == []
    status = wait_status(robot, runner, lambda s: s.armed and s.step >= 10)
    assert status.fault == ""
    assert 0.0 < status.latency_ms < 100.0

    assert robot.arm(False, runner).success
    wait_status(robot, runner, lambda s: not s.armed)
    # A command published just before the disarm may still be on its way (topics are not ordered
    # with each other): let it land, then nothing more may come.
    time.sleep(0.3)
    count = robot.command_count()
    time.sleep(0.5)
    assert robot.command_count() == count


def test_arming_needs_a_joint_state_and_a_policy_is_required(launch_node, ros_node, tmp_path):
    robot = Robot(ros_node)
    robot.joints_on = False
    runner = start(launch_node, write_policy(tmp_path / "policy"))
    response = robot.arm(True, runner)
    assert not response.success
    assert "no joint state on /joint_states" in response.message
    missing = run_standalone()
    assert missing.returncode == 2
    assert "parameter 'policy' is required" in missing.stderr
    broken = run_standalone(f"policy:={tmp_path / 'nowhere'}")
    assert broken.returncode == 2
    assert "nowhere" in broken.stderr


def test_a_policy_trained_at_another_control_rate_is_refused(ros_domain, tmp_path):
    """Each action moves the arm up to EE_DELTA_SCALE_M per cycle: at another rate, another speed."""
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    path = save_policy(tmp_path / "policy30", policy, control_rate_hz=30.0)
    assert json.loads((path / "config.json").read_text())["action_space"]["control_rate_hz"] == 30.0
    refused = run_standalone(f"policy:={path}")
    assert refused.returncode == 2
    assert "trained at 30 Hz, but parameter 'control_rate_hz' is 10 Hz" in refused.stderr


# ---------------------------------------------------------------------------------- watchdogs


def expect_hold_and_disarm(robot, runner, code: str, timeout: float = 5.0) -> PolicyStatus:
    """The fault `code` is reported, the motion ramps down to a hold, and no command follows."""
    status = wait_status(robot, runner, lambda s: not s.armed and s.fault.startswith(code), timeout)
    time.sleep(0.5)
    with robot.lock:
        commands = list(robot.commands)
        measured = robot.published_q.copy()
    count = len(commands)
    # The hold ramps the motion down (jerk-limited, smoothing.py) and ends at rest, no more than one
    # step from the last measured position (a stale joint state included).
    assert np.all(np.abs(commands[-1][1] - measured) <= SafetyParams().step_bound() + 1e-9)
    if robot.trajectories:
        assert not np.any(robot.trajectories[-1].points[0].velocities)
    time.sleep(0.5)
    assert robot.command_count() == count, "commands kept coming after the fault"
    assert wait_until(lambda: f"[{code}]" in runner.stderr_tail(20000), 5.0), runner.stderr_tail()
    return status


def test_stale_image_holds_and_disarms(launch_node, ros_node, tmp_path):
    robot = Robot(ros_node)
    runner = start(launch_node, write_policy(tmp_path / "policy", bias=(0.3, 0.0, 0.0, 0.0)))
    wait_status(robot, runner, lambda s: True, timeout=20.0)
    arm_and_run(robot, runner)
    stopped = time.monotonic()
    robot.images_on = False
    status = expect_hold_and_disarm(robot, runner, "stale_image")
    assert "image is" in status.fault
    # The exact bound (timeout + one control period) is the filter's, tested with explicit clocks in
    # test_safety_filter.py; over DDS on a loaded 2-core machine, allow scheduling delays, but the
    # arm must stop within about a second, not keep going.
    assert robot.commands[-1][0] - stopped < 1.0


def test_stale_joint_state_holds_and_disarms(launch_node, ros_node, tmp_path):
    robot = Robot(ros_node)
    runner = start(launch_node, write_policy(tmp_path / "policy", bias=(0.3, 0.0, 0.0, 0.0)))
    wait_status(robot, runner, lambda s: True, timeout=20.0)
    arm_and_run(robot, runner)
    robot.joints_on = False
    expect_hold_and_disarm(robot, runner, "stale_joint_state")


def test_camera_that_stops_being_usable_trips_the_image_watchdog(launch_node, ros_node, tmp_path):
    """Message-level bad input over DDS, one node: each is dropped with its own log line, the
    image watchdog holds and disarms, and re-arming with a good camera works again."""
    robot = Robot(ros_node)
    runner = start(launch_node, write_policy(tmp_path / "policy", bias=(0.3, 0.0, 0.0, 0.0)))
    wait_status(robot, runner, lambda s: True, timeout=20.0)
    good_image = dict(robot.image)
    cases = [
        ("image_encoding", dict(encoding="mono8", step=640), bytes(640 * 480)),
        ("image_size", dict(width=320, height=240, step=960), bytes(320 * 240 * 3)),
        ("image_data", {}, bytes(640 * 480 * 3 - 7)),
    ]
    for log_code, fields, data in cases:
        robot.image, robot.image_data, robot.image_offset_s = good_image, None, 0.0
        arm_and_run(robot, runner)
        robot.image, robot.image_data = {**good_image, **fields}, data
        expect_hold_and_disarm(robot, runner, "stale_image")
        assert f"[{log_code}] image on /camera/camera/color/image_raw dropped" in runner.stderr_tail(20000)
    # Stamps: from the future, stale, and going back by more than a control period (out of order).
    for offset, fault in ((5.0, "image_from_future"), (-2.0, "stale_image"), (-0.2, "image_out_of_order")):
        robot.image, robot.image_data, robot.image_offset_s = good_image, None, 0.0
        arm_and_run(robot, runner)
        robot.image_offset_s = offset
        expect_hold_and_disarm(robot, runner, fault)


def test_nan_policy_holds_and_disarms_at_once(launch_node, ros_node, tmp_path):
    robot = Robot(ros_node)
    runner = start(launch_node, write_policy(tmp_path / "policy", nan=True))
    wait_status(robot, runner, lambda s: True, timeout=20.0)
    assert robot.arm_once_joints_arrive(runner).success
    expect_hold_and_disarm(robot, runner, "nonfinite_target")
    assert "[policy_error] policy gave no usable action (FloatingPointError" in runner.stderr_tail(20000)
    assert robot.command_count() == 1  # only the hold


def test_wild_policy_never_jumps_or_leaves_the_limits(launch_node, ros_node, tmp_path):
    """Huge image-dependent outputs (saturating, flipping sign each cycle) for several seconds,
    the arm following every command: all commands stay finite, in the limits, one step apart."""
    robot = Robot(ros_node)
    runner = start(
        launch_node,
        write_flipping_policy(tmp_path / "policy", robot.frames),
        **{"safety.episode_time_limit_s": 60.0},
    )
    wait_status(robot, runner, lambda s: True, timeout=20.0)
    armings = 0
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        if not robot.status().armed:
            assert robot.arm(True, runner).success
            armings += 1
        time.sleep(0.2)
    with robot.lock:
        commands = np.array([c[1] for c in robot.commands])
    assert len(commands) > 30
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= LO)
    assert np.all(commands <= HI)
    # Each command is within one step of the joint state the runner last measured. Over DDS on a
    # loaded machine that state can still be the one before the previous command (the test arm
    # jumps to each command at once), so consecutive commands may differ by up to two steps; the
    # exact one-step bound against the measured state is checked in-process by the 10,000-cycle
    # fuzz (test_policy_runner_fuzz.py), where the measurement is known.
    assert np.all(np.abs(np.diff(commands, axis=0)) <= 2 * STEP + 1e-9)
    # The gripper was switched back and forth: the flips reach it too, one goal per change.
    assert len(robot.grasps) >= 3
    assert len(robot.moves) >= 3
    print(f"{len(commands)} commands, {armings} armings, status {robot.status()}")


def test_a_refine_run_runs_what_its_gate_chose_unless_told_otherwise(launch_node, ros_node, tmp_path):
    """policy:=REFINE_RUN loads the policy its gate.json chose (here BC), says so in its log, and
    policy_choice:=refined loads the refined one; PolicyStatus names the checkpoint it runs."""
    from world4rl_policy.prediction import write_gate

    bc = write_policy(tmp_path / "bc", bias=(0.5, 0.0, 0.0, 0.0))
    refined = write_policy(tmp_path / "refine_run", bias=(-0.5, 0.0, 0.0, 0.0), seed=1, run_step=3)
    reason = "predicted gain over BC -2.0 points (95 % interval -9.0 to +5.0) is not above zero; keeping BC"
    write_gate(tmp_path / "refine_run", {"prediction": None, "deploy": {"policy": "bc", "reason": reason}}, bc)
    robot = Robot(ros_node)
    runner = start(launch_node, tmp_path / "refine_run")
    assert wait_status(robot, runner, lambda s: True, timeout=20.0).policy == str(bc.resolve())
    assert "deploying the bc policy, as the gate chose" in runner.stderr_tail(20000)
    # A second runner beside it (another node name), told to run the refined policy.
    params = {"policy": str(tmp_path / "refine_run"), "policy_choice": "refined"}
    other = launch_node(MODULE, "policy_runner_refined", params=params)
    wait_status(robot, other, lambda s: s.policy == str(refined.resolve()), timeout=20.0)
    assert "against the gate's choice of bc" in other.stderr_tail(20000)


# ---------------------------------------------------------------------------------- scheduling


def fifo_allowed() -> bool:
    """Whether a process started like the node's may use SCHED_FIFO on this machine."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0


def node_threads(pid: int) -> dict[int, tuple[str, str, tuple[str, int]]]:
    """Each thread of a process: (name, Cpus_allowed_list, (scheduling policy, priority))."""
    from world4rl_policy.realtime import scheduling_of

    threads = {}
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            cpus = next(
                line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list")
            )
            threads[tid] = (name, cpus, scheduling_of(tid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return threads


def test_cpu_affinity_and_realtime_priority_apply_to_the_node_process(launch_node, ros_node, tmp_path):
    """The node's process and every thread of it (DDS's included) run on the CPU given and, where this
    machine allows SCHED_FIFO, at the real-time priority given; elsewhere one warning says how to allow it.
    The node works as before either way."""
    cpu = max(os.sched_getaffinity(0))
    robot = Robot(ros_node)
    runner = start(
        launch_node,
        write_policy(tmp_path / "policy", bias=(0.2, 0.0, 0.0, 0.0)),
        cpu_affinity=[cpu],
        realtime_priority=10,
    )
    arm_and_run(robot, runner, commands=5)
    log = runner.stderr_tail(20000)
    threads = node_threads(runner.process.pid)
    assert any(name.startswith("dds.") for name, _, _ in threads.values()), threads  # the middleware's are there
    assert {cpus for _, cpus, _ in threads.values()} == {str(cpu)}, threads
    assert f"threads pinned to CPUs [{cpu}]" in log, log
    if fifo_allowed():
        # The control thread (the process's main thread, which spins the executor) and the middleware's.
        control_and_dds = [t for tid, t in threads.items() if tid == runner.process.pid or t[0].startswith("dds.")]
        assert {sched for _, _, sched in control_and_dds} == {("SCHED_FIFO", 10)}, threads
        assert "realtime_priority: SCHED_FIFO 10" in log, log
    else:
        assert "realtime_priority 10 (SCHED_FIFO) refused by the OS" in log, log
        assert threads[runner.process.pid][2][0] == "SCHED_OTHER"


def test_a_refused_realtime_priority_is_one_warning_and_the_node_runs_on(ros_node, tmp_path):
    """Without CAP_SYS_NICE and with an rtprio limit of 0 (an ordinary user on a stock robot PC), the
    node warns once, naming the parameter and how to allow it, and runs at normal priority."""
    import shutil

    from world4rl_ros.node_process import NodeProcess

    if not (shutil.which("setpriv") and shutil.which("prlimit")):
        pytest.skip("needs util-linux's setpriv and prlimit to drop the right to real-time scheduling")
    ckpt = write_policy(tmp_path / "policy", bias=(0.2, 0.0, 0.0, 0.0))
    params = {"policy": str(ckpt), "safety.joint_state_timeout_s": 0.5, "realtime_priority": 20}
    runner = NodeProcess(MODULE, "policy_runner", params=params, log_dir=tmp_path / "logs")
    drop = ["prlimit", "--rtprio=0:0", "setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
    runner.argv = [*drop, *runner.argv]  # both wrappers exec: the node keeps their pid
    robot = Robot(ros_node)
    runner.start()
    try:
        arm_and_run(robot, runner, commands=5)
        log = runner.stderr_tail(20000)
        warnings = [line for line in log.splitlines() if "realtime_priority 20 (SCHED_FIFO) refused by the OS" in line]
        assert len(warnings) == 1, log
        for hint in ("rtprio limit 0", "/etc/security/limits.conf", "ulimit -r", "CAP_SYS_NICE"):
            assert hint in warnings[0], warnings[0]
        assert "[WARN]" in warnings[0]
        assert node_threads(runner.process.pid)[runner.process.pid][2] == ("SCHED_OTHER", 0)
    finally:
        runner.stop()


def test_bad_scheduling_parameters_stop_the_node_naming_them():
    too_high = run_standalone("realtime_priority:=100")
    assert too_high.returncode == 2
    assert "parameter realtime_priority must be 0 (off) or a SCHED_FIFO priority in [1, 99]" in too_high.stderr
    no_such_cpu = run_standalone(f"cpu_affinity:=[{os.cpu_count()}]")
    assert no_such_cpu.returncode == 2
    assert "parameter cpu_affinity must be CPU ids in" in no_such_cpu.stderr

"""The sim_robot node over real DDS: rates, camera messages, trajectories, gripper actions, reset, success."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration

from world4rl_sim.sim import FrankaSim
from world4rl_spec import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, FR3_READY_POSE, topics

pytestmark = pytest.mark.ros

MODULE = "world4rl_sim.sim_robot_node"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "sim_robot.yaml"


class Recorder:
    """Collects (arrival time, message) per topic; (sent time, message) for the clock."""

    def __init__(self, node):
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image, JointState
        from std_msgs.msg import Bool

        from world4rl_sim.sim_robot_node import CLOCK_QOS, IMAGE_QOS, LATCHED_QOS, STATE_QOS

        self.lock = threading.Lock()
        self.msgs = {"joints": [], "image": [], "info": [], "success": [], "clock": []}
        for key, msg_type, topic, qos in (
            ("joints", JointState, topics.JOINT_STATES, STATE_QOS),
            ("image", Image, topics.CAMERA_IMAGE, IMAGE_QOS),
            ("info", CameraInfo, topics.CAMERA_INFO, IMAGE_QOS),
            ("success", Bool, topics.SIM_SUCCESS, LATCHED_QOS),
            ("clock", Clock, topics.SIM_CLOCK, CLOCK_QOS),
        ):
            node.create_subscription(msg_type, topic, lambda m, info, k=key: self._add(k, m, info), qos)

    def _add(self, key, msg, info):
        # The clock is timed by when the sim wrote each message (DDS source timestamp, wall clock):
        # its arrival here is late by however long a loaded test process took to take it.
        stamp = (info.get("source_timestamp") or time.time_ns()) * 1e-9 if key == "clock" else time.monotonic()
        with self.lock:
            self.msgs[key].append((stamp, msg))

    def clear(self):
        with self.lock:
            for v in self.msgs.values():
                v.clear()

    def count(self, key):
        with self.lock:
            return len(self.msgs[key])

    def last(self, key):
        with self.lock:
            return self.msgs[key][-1][1] if self.msgs[key] else None

    def arm_positions(self):
        msg = self.last("joints")
        return np.array([msg.position[list(msg.name).index(n)] for n in ARM_JOINT_NAMES])


def start(launch_node, ros_node, **params):
    from world4rl_testing import wait_until

    node = launch_node(MODULE, "sim_robot", params_file=CONFIG, params=params)
    rec = Recorder(ros_node)
    assert wait_until(lambda: rec.count("joints") > 0 and rec.count("success") > 0, 60, nodes=[node]), (
        node.stderr_tail()
    )
    return node, rec


def wait_future(future, timeout, nodes=()):
    from world4rl_testing import wait_until

    assert wait_until(future.done, timeout, nodes=nodes), "no answer in time"
    return future.result()


def send_trajectory(ros_node, names, points):
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from world4rl_sim.sim_robot_node import STATE_QOS

    pub = ros_node.create_publisher(JointTrajectory, topics.ARM_TRAJECTORY, STATE_QOS)
    from world4rl_testing import wait_until

    assert wait_until(lambda: pub.get_subscription_count() > 0, 20)
    msg = JointTrajectory()
    msg.joint_names = list(names)
    for t, positions in points:
        msg.points.append(
            JointTrajectoryPoint(
                positions=[float(x) for x in positions], time_from_start=Duration(sec=int(t), nanosec=int(t % 1 * 1e9))
            )
        )
    pub.publish(msg)


def test_publish_rates_and_camera_messages(launch_node, ros_node):
    node, rec = start(launch_node, ros_node, camera_rate_hz=15.0, joint_state_rate_hz=50.0, success_rate_hz=5.0)
    from world4rl_testing import wait_until

    assert wait_until(lambda: rec.count("image") > 0, 30, nodes=[node])
    time.sleep(1.0)
    rec.clear()
    time.sleep(4.0)
    node.check_alive()
    rates = {k: rec.count(k) / 4.0 for k in rec.msgs}
    # A shared 2-core machine: allow for scheduling jitter, never for a wrong rate.
    assert 50.0 * 0.75 <= rates["joints"] <= 50.0 * 1.1, rates
    assert 15.0 * 0.75 <= rates["image"] <= 15.0 * 1.1, rates
    assert 15.0 * 0.75 <= rates["info"] <= 15.0 * 1.1, rates
    assert 5.0 * 0.6 <= rates["success"] <= 5.0 * 1.2, rates

    joints = rec.last("joints")
    assert list(joints.name) == [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES]
    assert len(joints.position) == len(joints.velocity) == len(joints.effort) == 9
    image, info = rec.last("image"), rec.last("info")
    assert (image.width, image.height, image.encoding, image.step) == (640, 480, "rgb8", 640 * 3)
    assert len(image.data) == 640 * 480 * 3
    assert image.header.frame_id == info.header.frame_id == "camera_color_optical_frame"
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3)
    assert pixels.std() > 10
    assert (info.width, info.height, info.distortion_model) == (640, 480, "plumb_bob")
    assert info.k[2] == pytest.approx(319.5)
    assert info.k[5] == pytest.approx(239.5)
    assert info.k[0] == pytest.approx(info.k[4])
    assert info.k[0] > 100
    # Image and camera_info of one frame share a stamp, as realsense2_camera publishes them.
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in rec.msgs["image"]}
    assert (info.header.stamp.sec, info.header.stamp.nanosec) in stamps
    assert rec.last("success").data is False


def test_joint_trajectory_moves_the_arm(launch_node, ros_node):
    node, rec = start(launch_node, ros_node, camera_rate_hz=0.0)
    start_q = rec.arm_positions()
    target = np.array(FR3_READY_POSE) + np.array([0.3, 0.1, -0.2, 0.15, 0.2, -0.2, 0.3])
    # Joint names in another order than franka_ros2's, as a trajectory controller must accept.
    order = [6, 2, 0, 5, 1, 3, 4]
    names = [ARM_JOINT_NAMES[i] for i in order]
    send_trajectory(ros_node, names, [(1.5, target[order])])
    time.sleep(0.75)
    mid = rec.arm_positions()
    progress = (mid - start_q) / (target - start_q)
    assert np.all((progress > 0.2) & (progress < 0.8)), f"not interpolated over time: progress {progress}"
    time.sleep(1.5)
    node.check_alive()
    np.testing.assert_allclose(rec.arm_positions(), target, atol=0.01)

    # A trajectory that lacks a joint is rejected and the arm stays where it is.
    send_trajectory(ros_node, ARM_JOINT_NAMES[:6], [(0.5, target[:6] + 0.3)])
    time.sleep(1.0)
    np.testing.assert_allclose(rec.arm_positions(), target, atol=0.01)


def test_gripper_actions(launch_node, ros_node):
    from rclpy.action import ActionClient

    from world4rl_msgs.action import GripperGrasp, GripperHoming, GripperMove

    node, rec = start(launch_node, ros_node, camera_rate_hz=0.0)

    def run(action_type, topic, goal):
        client = ActionClient(ros_node, action_type, topic)
        assert client.wait_for_server(timeout_sec=20)
        handle = wait_future(client.send_goal_async(goal), 10, nodes=[node])
        assert handle.accepted
        return wait_future(handle.get_result_async(), 20, nodes=[node]).result

    def width():
        msg = rec.last("joints")
        return sum(msg.position[list(msg.name).index(n)] for n in FINGER_JOINT_NAMES)

    result = run(GripperMove, topics.GRIPPER_MOVE, GripperMove.Goal(width=0.03, speed=0.1))
    assert result.success, result.error
    assert width() == pytest.approx(0.03, abs=0.005)
    # Nothing between the fingers: a grasp expecting a 4 cm object fails, one expecting ~0 succeeds.
    result = run(GripperGrasp, topics.GRIPPER_GRASP, GripperGrasp.Goal(width=0.04, epsilon_inner=0.005, speed=0.1))
    assert not result.success
    assert "outside" in result.error
    result = run(
        GripperGrasp, topics.GRIPPER_GRASP, GripperGrasp.Goal(width=0.0, epsilon_inner=0.01, epsilon_outer=0.01)
    )
    assert result.success, result.error
    result = run(GripperHoming, topics.GRIPPER_HOMING, GripperHoming.Goal())
    assert result.success, result.error
    assert width() == pytest.approx(0.08, abs=0.005)
    result = run(GripperMove, topics.GRIPPER_MOVE, GripperMove.Goal(width=0.2, speed=0.1))
    assert not result.success


def test_reset_service_and_true_success_flag(launch_node, ros_node):
    from world4rl_msgs.srv import ResetSim
    from world4rl_testing import wait_until

    node, rec = start(launch_node, ros_node, camera_rate_hz=0.0, task="push")
    client = ros_node.create_client(ResetSim, topics.SIM_RESET)
    assert client.wait_for_service(timeout_sec=20)
    bad = wait_future(client.call_async(ResetSim.Request(task="juggle", seed=1)), 20, nodes=[node])
    assert not bad.ok
    assert "unknown task" in bad.message
    reply = wait_future(client.call_async(ResetSim.Request(task="reach", seed=5)), 20, nodes=[node])
    assert reply.ok
    assert (reply.task, reply.seed) == ("reach", 5)
    fresh = wait_future(client.call_async(ResetSim.Request(task="", seed=-1)), 20, nodes=[node])
    assert fresh.ok
    assert fresh.task == "reach"
    assert fresh.seed >= 0
    reply = wait_future(client.call_async(ResetSim.Request(task="reach", seed=5)), 20, nodes=[node])
    assert wait_until(lambda: rec.last("success") is not None and rec.last("success").data is False, 5)

    # The same seed gives the same goal here as in the node: solve the reach by IK, send it as a trajectory.
    local = FrankaSim("reach", seed=5)
    goal = local.task.goal_position(local)
    q, err = local.ik.solve(local.data.qpos[local._arm_qadr], goal, local.tcp_target_mat, iterations=50)
    assert err < 1e-3
    from world4rl_sim.robot import model_to_fr3

    send_trajectory(ros_node, ARM_JOINT_NAMES, [(1.5, model_to_fr3(q))])
    assert wait_until(lambda: rec.last("success").data is True, 10, nodes=[node])
    local.close()


def test_clock_is_the_simulated_time_and_never_goes_back(launch_node, ros_node):
    from world4rl_msgs.srv import ResetSim

    node, rec = start(launch_node, ros_node, camera_rate_hz=0.0, task="reach")
    client = ros_node.create_client(ResetSim, topics.SIM_RESET)
    assert client.wait_for_service(timeout_sec=20)
    time.sleep(1.0)
    for seed in (1, 2, 3):
        assert wait_future(client.call_async(ResetSim.Request(task="reach", seed=seed)), 20, nodes=[node]).ok
        time.sleep(0.3)
    time.sleep(1.0)
    with rec.lock:
        clock = [(sent, m.clock.sec + m.clock.nanosec * 1e-9) for sent, m in rec.msgs["clock"]]
    # A new publisher's first writes can leave ~0.1 s after the sim time they carry (measured): the
    # pacing is judged on the messages after the first half second.
    clock = [(sent, t) for sent, t in clock if sent >= clock[0][0] + 0.5]
    sim_times = np.array([t for _, t in clock])
    assert np.all(np.diff(sim_times) >= 0), "the simulated time went back (at a reset?)"
    wall_span, sim_span = clock[-1][0] - clock[0][0], sim_times[-1] - sim_times[0]
    assert len(clock) > 50 * wall_span, f"{len(clock)} clock messages in {wall_span:.1f} s (100 Hz expected)"
    # Real time at most (it never runs ahead), and it advanced (it slows down only under load).
    assert 0.3 * wall_span < sim_span <= wall_span + 0.05, (sim_span, wall_span)


def test_yaml_defaults_equal_the_declared_parameters():
    import yaml

    from world4rl_sim.sim_robot_node import PARAMETERS

    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS)
    for name, (default, description) in PARAMETERS.items():
        assert values[name] == default, name
        assert description


def _trajectory_msg(names, points, velocities=None):
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory(joint_names=list(names))
    for k, (t, positions) in enumerate(points):
        point = JointTrajectoryPoint(positions=[float(x) for x in positions])
        point.time_from_start = Duration(sec=int(t), nanosec=round(t % 1 * 1e9))
        if velocities is not None:
            point.velocities = [float(v) for v in velocities[k]]
        msg.points.append(point)
    return msg


def test_trajectory_parsing_reorders_and_interpolates():
    from world4rl_sim.sim_commands import parse_trajectory

    current = np.zeros(7)
    names = list(reversed(ARM_JOINT_NAMES))
    target = np.arange(1, 8) * 0.1  # in ARM_JOINT_NAMES order
    traj = parse_trajectory(_trajectory_msg(names, [(2.0, target[::-1])]), current, start=10.0)
    np.testing.assert_allclose(traj.sample(9.0)[0], current)
    np.testing.assert_allclose(traj.sample(11.0)[0], target / 2)  # linear without velocities
    q, finished = traj.sample(12.5)
    np.testing.assert_allclose(q, target)
    assert finished

    # With velocities (all zero here): cubic Hermite, which eases in and out.
    hermite = parse_trajectory(
        _trajectory_msg(ARM_JOINT_NAMES, [(2.0, target)], velocities=[np.zeros(7)]), current, start=0.0
    )
    np.testing.assert_allclose(hermite.sample(1.0)[0], target / 2)
    assert np.all(hermite.sample(0.5)[0] < target / 4)


def test_a_trajectory_with_velocities_continues_the_running_velocity():
    """Like the joint trajectory controller, a new trajectory starts from the current desired state,
    velocity included: a stream of smoothed commands (one per control period, each carrying its
    velocity) moves the arm without stopping at every point."""
    from world4rl_sim.sim_commands import parse_trajectory

    velocity = np.full(7, 0.4)
    first = parse_trajectory(
        _trajectory_msg(ARM_JOINT_NAMES, [(0.1, 0.04 * np.ones(7)), (0.2, 0.06 * np.ones(7))], [velocity, np.zeros(7)]),
        np.zeros(7),
        start=0.0,
    )
    np.testing.assert_allclose(first.velocity(0.1), velocity)  # the point's velocity, at its time
    np.testing.assert_allclose(first.velocity(0.0), np.zeros(7))  # from rest: nothing was running
    # The next command arrives halfway: it starts at the running velocity, not from rest.
    running = first.velocity(0.05)
    second = parse_trajectory(
        _trajectory_msg(ARM_JOINT_NAMES, [(0.1, 0.06 * np.ones(7))], [velocity]),
        first.sample(0.05)[0],
        start=0.05,
        current_velocity=running,
    )
    np.testing.assert_allclose(second.velocity(0.05 + 1e-9), running, atol=1e-6)
    assert np.all(running > 0.1)
    # Without velocities, linear: the velocity is the slope.
    linear = parse_trajectory(_trajectory_msg(ARM_JOINT_NAMES, [(2.0, np.ones(7))]), np.zeros(7), start=0.0)
    np.testing.assert_allclose(linear.velocity(1.0), 0.5 * np.ones(7))


@pytest.mark.parametrize(
    ("names", "points", "error"),
    [
        (ARM_JOINT_NAMES[:6], [(1.0, np.zeros(6))], "lacks"),
        ((*ARM_JOINT_NAMES, "fr3_joint8"), [(1.0, np.zeros(8))], "unknown joints"),
        (ARM_JOINT_NAMES, [(1.0, np.zeros(6))], "positions for"),
        (ARM_JOINT_NAMES, [(1.0, np.zeros(7)), (1.0, np.ones(7))], "not after"),
        (ARM_JOINT_NAMES, [(1.0, np.full(7, np.nan))], "non-finite"),
    ],
)
def test_bad_trajectories_are_rejected_with_the_reason(names, points, error):
    from world4rl_sim.sim_commands import parse_trajectory

    with pytest.raises(ValueError, match=error):
        parse_trajectory(_trajectory_msg(names, points), np.zeros(7), start=0.0)

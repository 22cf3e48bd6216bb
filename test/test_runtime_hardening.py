"""Real-arm readiness of the runtime (issue 16): network isolation, arming refusals, and the
runtime fixes, over real DDS and with the real nodes.

- The sim graph the CLI starts listens on the loopback (and shared memory) only, and a participant
  configured like one on another host (bound to this host's non-loopback address, this address as
  its static peer) discovers none of its nodes, while it does discover a participant set up as
  before (the default transports with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST): the check can fail.
- policy_runner and action_executor refuse to arm while a second node publishes the joint states or
  another node publishes on their command topic, and say why.
- One test per runtime fix: the watchdog judged after inference, checked and read-only
  parameters, the executor's arming checks, gripper goals cancelled and retried, finger-state
  stamps, the episode time limit across re-arms, actions of the wrong shape.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from world4rl_msgs.action import GripperGrasp, GripperMove
from world4rl_msgs.msg import Action, PolicyStatus
from world4rl_spec import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, FR3_READY_POSE, topics
from world4rl_testing import wait_until

pytestmark = pytest.mark.ros

RUNNER = "world4rl_policy.policy_runner_node"
EXECUTOR = "world4rl_policy.action_executor_node"
# A loaded 2-core machine delays the test's own publishers: watchdogs at the sim profile's values.
LENIENT = {"safety.joint_state_timeout_s": 0.5, "safety.image_timeout_s": 1.0}


# ---------------------------------------------------------------------------------- helpers


def stamp(msg, t: float) -> None:
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int((t - int(t)) * 1e9)


def joint_state(q, t: float, names=(*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES), fingers=(0.02, 0.02)) -> JointState:
    positions = [*map(float, q), *fingers][: len(names)]
    msg = JointState(name=list(names), position=positions)
    stamp(msg, t)
    return msg


def camera_image(t: float, seed: int = 0) -> Image:
    data = np.random.default_rng(seed).integers(0, 256, 640 * 480 * 3, dtype=np.uint8).tobytes()
    msg = Image(width=640, height=480, encoding="rgb8", step=640 * 3, data=data)
    stamp(msg, t)
    return msg


class World:
    """The robot and the operator around a node under test, in this process: a node in its own
    context, spun by a multi-threaded executor (a gripper server may block on a goal until it is
    cancelled). Publishes joint states (100 Hz) and, when `actions_on`, demonstrator actions (10 Hz)."""

    def __init__(self, domain: int, name: str = "robot"):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.group = ReentrantCallbackGroup()
        self.q = np.array(FR3_READY_POSE, dtype=float)
        self.joint_offset_s = 0.0  # added to the joint-state stamps (negative: stale)
        self.joints_on = True
        self.action = [0.0, 0.0, 0.0, -1.0]
        self.actions_on = False
        self.statuses: list[PolicyStatus] = []
        self.goals: list[str] = []  # gripper goals received ("grasp" / "move")
        self.cancelled: list[str] = []  # gripper goals whose cancel was requested
        self.servers: list[ActionServer] = []
        self.joint_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, 10)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.action_pub = self.node.create_publisher(Action, topics.ACTION, reliable)
        self.node.create_subscription(
            PolicyStatus, topics.POLICY_STATUS, self.statuses.append, reliable, callback_group=self.group
        )
        self.node.create_timer(0.01, self._publish_joints, callback_group=self.group)
        self.node.create_timer(0.1, self._publish_action, callback_group=self.group)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def now(self) -> float:
        return time.time()

    def _publish_joints(self) -> None:
        if self.joints_on:
            self.joint_pub.publish(joint_state(self.q, self.now() + self.joint_offset_s))

    def _publish_action(self) -> None:
        if self.actions_on:
            msg = Action(values=list(self.action), source="test")
            stamp(msg, self.now())
            self.action_pub.publish(msg)

    def serve_gripper(self, hold_s: float = 0.0) -> None:
        """franka_gripper-style grasp and move servers; each goal runs `hold_s` seconds unless cancelled."""

        def execute(kind, result_type):
            def run(handle):
                self.goals.append(kind)
                deadline = time.monotonic() + hold_s
                while time.monotonic() < deadline:
                    if handle.is_cancel_requested:
                        self.cancelled.append(kind)
                        handle.canceled()
                        return result_type(success=False, error="canceled")
                    time.sleep(0.01)
                handle.succeed()
                return result_type(success=True)

            return run

        for action_type, name, kind in (
            (GripperGrasp, topics.GRIPPER_GRASP, "grasp"),
            (GripperMove, topics.GRIPPER_MOVE, "move"),
        ):
            self.servers.append(
                ActionServer(
                    self.node,
                    action_type,
                    name,
                    execute_callback=execute(kind, action_type.Result),
                    goal_callback=lambda _goal: GoalResponse.ACCEPT,
                    cancel_callback=lambda _handle: CancelResponse.ACCEPT,
                    callback_group=self.group,
                )
            )

    def call(self, srv_type, name: str, request, node_process, timeout: float = 20.0):
        client = self.node.create_client(srv_type, name, callback_group=self.group)
        assert wait_until(client.service_is_ready, timeout, nodes=[node_process]), f"no service {name}"
        future = client.call_async(request)
        assert wait_until(future.done, timeout, nodes=[node_process]), f"{name} did not answer"
        self.node.destroy_client(client)
        return future.result()

    def arm(self, service: str, on: bool, node_process) -> SetBool.Response:
        return self.call(SetBool, service, SetBool.Request(data=on), node_process)

    def arm_until(self, service: str, node_process, accept, timeout: float = 30.0) -> SetBool.Response:
        """Ask to arm until the answer satisfies `accept` (DDS discovery and the first joint states
        take a while on a loaded machine); the last answer."""
        answers = []

        def answered() -> bool:
            answers.append(self.arm(service, True, node_process))
            return accept(answers[-1])

        wait_until(answered, timeout, interval=0.3, nodes=[node_process])
        return answers[-1]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


@pytest.fixture
def world(ros_domain):
    w = World(ros_domain)
    yield w
    w.close()


def start_executor(launch_node, **params):
    return launch_node(EXECUTOR, "action_executor", params={**LENIENT, **params})


def start_runner(launch_node, ckpt, **params):
    return launch_node(RUNNER, "policy_runner", params={"policy": str(ckpt), **LENIENT, **params})


@pytest.fixture
def in_process(ros_domain):
    """make(node_class, **parameter overrides) -> the node in this process, in its own context,
    its handlers called directly with chosen times (as test_policy_runner_fuzz.py does)."""
    import rclpy
    from rclpy.parameter import Parameter

    made = []

    def make(node_class, **params):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=ros_domain)
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        node = node_class(context=context, parameter_overrides=overrides)
        made.append((node, context))
        return node

    yield make
    for node, context in made:
        node.destroy_node()
        context.try_shutdown()


def spy_commands(node) -> list:
    """Every arm command the node publishes (the message is still published)."""
    sent = []
    real = node.commands.publisher.publish

    def publish(msg):
        sent.append(msg)
        real(msg)

    node.commands.publisher.publish = publish
    return sent


# ---------------------------------------------------------------------------------- 1. network


def udp_addresses(pid: int) -> set[str]:
    """The local addresses of every UDP socket process `pid` holds (IPv4 dotted, IPv6 as hex)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                address = fields[1].split(":")[0]
                found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))) if len(address) == 8 else address)
    return found


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in raw if b"=" in entry)


def non_loopback_interface() -> tuple[str, str] | None:
    """(name, IPv4 address) of an up interface other than the loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            except OSError:
                continue
            return name, socket.inet_ntoa(packed[20:24])
    return None


PROFILES_NS = "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"
# A participant as it would be on another host: UDP on `ADDRESS` only (no shared memory, no loopback),
# that address as its static peer (what ROS_STATIC_PEERS does) besides the default multicast.
INTRUDER_PROFILE = f"""<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="{PROFILES_NS}"><profiles>
  <transport_descriptors><transport_descriptor>
    <transport_id>intruder_udp</transport_id><type>UDPv4</type>
    <interfaceWhiteList><address>ADDRESS</address></interfaceWhiteList>
    <maxInitialPeersRange>32</maxInitialPeersRange>
  </transport_descriptor></transport_descriptors>
  <participant profile_name="intruder" is_default_profile="true"><rtps>
    <builtin><initialPeersList>
      <locator><udpv4><address>ADDRESS</address></udpv4></locator>
      <locator><udpv4><address>239.255.0.1</address></udpv4></locator>
    </initialPeersList></builtin>
    <userTransports><transport_id>intruder_udp</transport_id></userTransports>
    <useBuiltinTransports>false</useBuiltinTransports>
  </rtps></participant>
</profiles></dds>
"""
# No profile at all: Fast DDS's default transports (UDP on every interface, shared memory).
EMPTY_PROFILE = f'<?xml version="1.0" encoding="UTF-8"?>\n<dds xmlns="{PROFILES_NS}"><profiles/></dds>\n'

INTRUDER = """
import json, sys, time
import rclpy
control_topic, graph_topic, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
rclpy.init()
node = rclpy.create_node("intruder")
deadline, control_seen = time.monotonic() + timeout, None
while time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
    if control_seen is None and node.count_publishers(control_topic):
        control_seen = time.monotonic()
        deadline = min(deadline, control_seen + 6.0)  # the graph has had as long, and runs since before
print(json.dumps({"control": node.count_publishers(control_topic), "graph": node.count_publishers(graph_topic),
                  "nodes": sorted(name for name, _ in node.get_node_names_and_namespaces())}))
"""

TALKER = """
import sys
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node(sys.argv[2])
publisher = node.create_publisher(String, sys.argv[1], 10)
node.create_timer(0.2, lambda: publisher.publish(String(data="here")))
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def python(code: str, *args: str, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **env}, **kwargs)


def test_the_sim_graph_is_reachable_from_this_host_only(ros_node, tmp_path, constant_policy):
    from world4rl_bringup.dds_network import workspace_profile
    from world4rl_bringup.graph import load_graph, resolve
    from world4rl_bringup.graph_runner import run_graph

    policy = constant_policy(tmp_path / "policy", [0.0, 0.0, 0.0, -1.0])
    resolved = resolve(load_graph("deploy"), {"robot": "sim", "policy": str(policy), "task": "reach"})
    with run_graph(resolved, tmp_path / "logs") as nodes:
        processes = list(nodes.values())
        assert wait_until(
            lambda: ros_node.count_publishers("/joint_states") and "policy_runner" in ros_node.get_node_names(),
            90.0,
            interval=0.2,
            nodes=processes,
        ), "the graph did not come up"
        # What the graph runner gave each node, and what its sockets are bound to.
        for name, process in nodes.items():
            env = process_environment(process.process.pid)
            assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(workspace_profile()), name
            assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT", name
            addresses = udp_addresses(process.process.pid)
            assert addresses, f"{name} holds no UDP socket: nothing checked"
            assert addresses == {"127.0.0.1"}, f"{name} listens beyond the loopback: {addresses}"
        interface = non_loopback_interface()
        if interface is None:
            pytest.skip("this host has no network interface besides the loopback to discover from")
        # A participant on another interface discovers a participant set up as before this change,
        # (so discovery from there works here), but none of the graph's nodes.
        intruder_profile = tmp_path / "intruder.xml"
        intruder_profile.write_text(INTRUDER_PROFILE.replace("ADDRESS", interface[1]))
        empty_profile = tmp_path / "empty.xml"
        empty_profile.write_text(EMPTY_PROFILE)
        before = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(empty_profile), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        control = python(TALKER, "/control_chatter", "control_talker", env=before)
        try:
            intruder = python(
                INTRUDER,
                "/control_chatter",
                "/joint_states",
                "40",
                env={
                    "FASTRTPS_DEFAULT_PROFILES_FILE": str(intruder_profile),
                    "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = intruder.communicate(timeout=90)
        finally:
            control.terminate()
            control.wait(10)
        for process in processes:
            process.check_alive()
    seen = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert seen.get("control") == 1, (
        f"the intruder discovered nothing at all, so this check proves nothing: {seen} {err}"
    )
    assert seen["graph"] == 0, f"a participant on {interface} discovered the graph's /joint_states: {seen}"
    assert set(seen["nodes"]) <= {"intruder", "control_talker"}, f"it discovered {seen['nodes']}"


def test_a_robot_profile_naming_an_interface_binds_dds_to_it(tmp_path):
    """The franka path: a robot profile's interfaces (by name) become the only ones DDS binds to."""
    from world4rl_bringup.dds_network import LOOPBACK, profile_xml, robot_interfaces

    assert robot_interfaces("sim") == ("lo",)
    assert set(robot_interfaces("franka")) <= LOOPBACK  # the shipped default: the robot PC alone
    interface = non_loopback_interface()
    if interface is None:
        pytest.skip("this host has no network interface besides the loopback")
    profile = tmp_path / "robot.xml"
    profile.write_text(profile_xml(["lo", interface[0]]))
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(profile), "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"}
    talker = python(TALKER, "/chatter", "robot_talker", env=env)
    try:
        addresses: set[str] = set()
        assert wait_until(lambda: addresses.update(udp_addresses(talker.pid)) or interface[1] in addresses, 30.0)
        time.sleep(1.0)
        addresses |= udp_addresses(talker.pid)
    finally:
        talker.terminate()
        talker.wait(10)
    # The named interface, the loopback and Fast DDS's multicast group; no wildcard (0.0.0.0).
    assert addresses <= {"127.0.0.1", interface[1], "239.255.0.1"}, addresses


# ---------------------------------------------------------------------------------- 1. arming refusals


@pytest.mark.parametrize("which", ["executor", "runner"])
def test_arming_is_refused_while_another_node_publishes_joint_states_or_commands(
    which, world, launch_node, ros_domain, tmp_path, constant_policy
):
    from world4rl_ros.ros_session import RosSession

    # One episode throughout (re-arming continues it): long enough for a loaded machine.
    params = {"safety.episode_time_limit_s": 600.0}
    if which == "runner":
        node = start_runner(launch_node, constant_policy(tmp_path / "p", [0.0, 0.0, 0.0, -1.0]), **params)
        service = "/" + topics.POLICY_ARM
    else:
        node = start_executor(launch_node, **params)
        service = "/" + topics.EXECUTOR_ARM
    ok = world.arm_until(service, node, lambda r: r.success)
    assert ok.success, ok.message  # the baseline: with the robot alone, it arms
    assert world.arm(service, False, node).success

    spoofer = RosSession("spoofer", domain_id=ros_domain)
    try:
        spoofer.node.create_publisher(JointState, topics.JOINT_STATES, 10)
        # (Until DDS has told it the spoofer's node name, the refusal calls it unidentified.)
        refused = world.arm_until(service, node, lambda r: not r.success and "/spoofer" in r.message)
        assert not refused.success
        assert "2 publishers on /joint_states" in refused.message, refused.message
        assert "(/robot, /spoofer)" in refused.message, refused.message
    finally:
        spoofer.close()
    ok = world.arm_until(service, node, lambda r: r.success)  # the spoofer gone: arms again
    assert ok.success, ok.message
    assert world.arm(service, False, node).success

    world.node.create_publisher(JointTrajectory, topics.ARM_TRAJECTORY, 10)  # another commander
    refused = world.arm_until(service, node, lambda r: not r.success)
    assert not refused.success
    assert "/robot also publish on the arm's command topic /fr3_arm_controller/joint_trajectory" in refused.message
    assert wait_until(lambda: f"arm request True: {refused.message}" in node.stderr_tail(20000), 5.0)


# ---------------------------------------------------------------------------------- 3. runtime fixes


def test_the_watchdog_judges_the_joint_state_after_inference(in_process, tmp_path, constant_policy):
    """A policy slower than the joint-state timeout: its command would go out against a joint state
    older than the limit. The filter now judges the inputs when the command is published."""
    from world4rl_policy.policy_runner_node import PolicyRunnerNode

    ckpt = constant_policy(tmp_path / "p", [0.5, 0.0, 0.0, -1.0])
    # The image may be older than the slow decision: only the joint state's age is at stake here.
    params = {"safety.joint_state_timeout_s": 0.1, "safety.image_timeout_s": 1.0}
    node = in_process(PolicyRunnerNode, policy=str(ckpt), **params)
    real = node.action_source
    delay = {"s": 0.0}

    def slow(frames, proprio):
        time.sleep(delay["s"])
        return real(frames, proprio)

    node.action_source = slow
    t0 = 1000.0
    node._on_joints(joint_state(FR3_READY_POSE, t0))
    assert node.arm(t0) == (True, "armed")
    node.handle_image(camera_image(t0), t0 + 0.01, time.time())  # a fast decision: it moves
    assert node.path.filter.status().step == 1
    assert node.path.armed
    node._on_joints(joint_state(FR3_READY_POSE, t0 + 0.1))
    delay["s"] = 0.3  # three times the joint-state timeout
    node.handle_image(camera_image(t0 + 0.1, seed=1), t0 + 0.11, time.time())
    status = node.path.filter.status()
    assert status.fault == "stale_joint_state", status
    assert status.step == 1  # the slow decision was not sent
    assert not node.path.armed


def run_standalone(module: str, *params: str) -> subprocess.Popen:
    args = [arg for param in params for arg in ("-p", param)]
    return subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_bad_safety_parameters_stop_the_node_naming_the_parameter_and_all_are_read_only(world, launch_node):
    cases = [
        (RUNNER, "cycle_tolerance_s:=.nan", "cycle_tolerance_s"),
        (RUNNER, "cycle_tolerance_s:=0.1", "cycle_tolerance_s"),  # = the period: every image a cycle
        (RUNNER, "safety.workspace_max:=[.inf, 0.5, 0.8]", "workspace_max"),
        (RUNNER, "safety.workspace_min:=[-.inf, -0.5, 0.02]", "workspace_min"),
        (RUNNER, "safety.image_timeout_s:=0.0", "image_timeout_s"),
        (RUNNER, "safety.episode_time_limit_s:=.inf", "episode_time_limit_s"),
        (RUNNER, "control_rate_hz:=.inf", "control_rate_hz"),
        (RUNNER, "finger_state_timeout_s:=-1.0", "finger_state_timeout_s"),
        (EXECUTOR, "safety.joint_state_timeout_s:=-0.1", "joint_state_timeout_s"),
        (EXECUTOR, "safety.tcp_offset_m:=.nan", "tcp_offset_m"),
        (EXECUTOR, "gripper_speed:=0.0", "gripper_speed"),
    ]
    started = [(run_standalone(module, param, "policy:=/nowhere"), param, name) for module, param, name in cases]
    for process, param, name in started:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2, f"{param}: exit code {process.returncode}\n{err}"
        assert f"parameter {name}" in err, f"{param}: the message does not name the parameter:\n{err}"
        assert "Traceback" not in err, err

    # Read-only at run time: `ros2 param set` is refused, the value unchanged.
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter

    executor = start_executor(launch_node)
    request = SetParameters.Request(
        parameters=[
            Parameter("safety.max_step_rad", value=1.0).to_parameter_msg(),
            Parameter("control_rate_hz", value=50.0).to_parameter_msg(),
        ]
    )
    reply = world.call(SetParameters, "/action_executor/set_parameters", request, executor)
    assert [r.successful for r in reply.results] == [False, False], reply
    assert all("read-only parameter" in r.reason for r in reply.results), reply
    values = world.call(
        GetParameters, "/action_executor/get_parameters", GetParameters.Request(names=["safety.max_step_rad"]), executor
    )
    assert values.values[0].double_value == pytest.approx(0.1)


def test_the_executor_arms_only_on_a_good_joint_state_and_survives_a_nan_one(world, launch_node):
    executor = start_executor(launch_node)
    service = "/" + topics.EXECUTOR_ARM
    world.joint_offset_s = -2.0  # stale
    refused = world.arm_until(service, executor, lambda r: "no joint state" not in r.message)
    assert not refused.success
    assert refused.message.startswith("the joint state is 2."), refused.message
    world.joint_offset_s = 0.0
    world.q[2] = np.nan
    refused = world.arm_until(service, executor, lambda r: "not finite" in r.message)
    assert not refused.success, refused.message
    executor.check_alive()  # the NaN killed the node before
    world.q[2] = FR3_READY_POSE[2]
    ok = world.arm_until(service, executor, lambda r: r.success)
    assert ok.success, ok.message
    assert wait_until(lambda: "arm request True: the joint state is not finite" in executor.stderr_tail(20000), 5.0)


def test_gripper_goals_are_cancelled_on_disarm_and_on_a_fault(world, launch_node):
    world.serve_gripper(hold_s=30.0)  # a goal runs until cancelled
    # The fault under test is the stopped demonstrator's; joint states may lag on a loaded machine,
    # and a stale-joint fault there would disarm first and hide it.
    executor = start_executor(launch_node, **{"safety.joint_state_timeout_s": 3.0})
    arm, new_episode = "/" + topics.EXECUTOR_ARM, "/" + topics.EXECUTOR_NEW_EPISODE
    world.action, world.actions_on = [0.0, 0.0, 0.0, 1.0], True
    assert world.arm_until(arm, executor, lambda r: r.success).success
    assert wait_until(lambda: world.goals == ["grasp"], 20.0, nodes=[executor]), world.goals
    assert world.arm(arm, False, executor).success
    assert wait_until(lambda: world.cancelled == ["grasp"], 10.0, nodes=[executor]), world.cancelled

    # A fault: the demonstrator stops, the action watchdog holds and disarms.
    assert world.call(Trigger, new_episode, Trigger.Request(), executor).success
    world.action = [0.0, 0.0, 0.0, -1.0]
    assert world.arm_until(arm, executor, lambda r: r.success).success
    assert wait_until(lambda: world.goals == ["grasp", "move"], 20.0, nodes=[executor]), world.goals
    world.actions_on = False
    # Any status since, not only the newest: a later cycle's status may no longer carry the fault.
    assert wait_until(lambda: any(s.fault.startswith("stale_image") for s in world.statuses), 20.0, nodes=[executor]), (
        sorted({s.fault for s in world.statuses})
    )
    assert wait_until(lambda: world.cancelled == ["grasp", "move"], 10.0, nodes=[executor]), world.cancelled


def test_a_gripper_goal_is_sent_once_its_server_is_ready(world, launch_node):
    executor = start_executor(launch_node)
    world.action, world.actions_on = [0.0, 0.0, 0.0, 1.0], True
    assert world.arm_until("/" + topics.EXECUTOR_ARM, executor, lambda r: r.success).success
    assert wait_until(lambda: "gripper grasp server not available" in executor.stderr_tail(20000), 20.0)
    world.serve_gripper()
    assert wait_until(lambda: world.goals == ["grasp"], 20.0, nodes=[executor]), world.goals
    time.sleep(1.0)
    assert world.goals == ["grasp"]  # sent once, not again every cycle


def test_a_stale_finger_state_is_refused(in_process, tmp_path):
    import torch

    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy
    from world4rl_policy.policy_runner_node import PolicyRunnerNode

    torch.manual_seed(0)
    config = PolicyConfig(channels=(8, 8), hidden_dim=32, proprio_dim=9)
    ckpt = save_policy(tmp_path / "p", GaussianPolicy(config))
    node = in_process(PolicyRunnerNode, policy=str(ckpt), finger_state_timeout_s=0.5)
    t0 = 1000.0
    node._on_joints(joint_state(FR3_READY_POSE, t0, names=ARM_JOINT_NAMES))  # franka_ros2: arm only
    node._on_gripper_joints(joint_state([], t0 - 2.0, names=FINGER_JOINT_NAMES, fingers=(0.01, 0.01)))
    ok, message = node.arm(t0)
    assert not ok
    assert message == "the finger state is 2.000 s old (limit 0.5 s)"
    node._on_gripper_joints(joint_state([], t0, names=FINGER_JOINT_NAMES, fingers=(0.01, 0.01)))
    assert node.arm(t0) == (True, "armed")
    node.handle_image(camera_image(t0), t0 + 0.01, time.time())
    assert node.path.filter.status().step == 1  # fresh fingers: the policy acts
    node._on_joints(joint_state(FR3_READY_POSE, t0 + 1.0, names=ARM_JOINT_NAMES))  # the fingers' stay at t0
    node.handle_image(camera_image(t0 + 1.0, seed=1), t0 + 1.01, time.time())
    status = node.path.filter.status()
    assert status.step == 1
    assert not status.armed, status
    assert node.refusals.counts.get("stale_finger_state") == 1


def test_re_arming_does_not_restart_the_episode_time_limit(in_process, tmp_path, constant_policy):
    from world4rl_policy.policy_runner_node import PolicyRunnerNode

    ckpt = constant_policy(tmp_path / "p", [0.0, 0.0, 0.0, -1.0])
    node = in_process(PolicyRunnerNode, policy=str(ckpt), **{"safety.episode_time_limit_s": 2.0})
    t0 = 1000.0
    node._on_joints(joint_state(FR3_READY_POSE, t0))
    assert node.arm(t0) == (True, "armed")
    node.disarm()
    node._on_joints(joint_state(FR3_READY_POSE, t0 + 1.5))
    assert node.arm(t0 + 1.5) == (True, "armed")  # within the episode: continues it
    node.disarm()
    node._on_joints(joint_state(FR3_READY_POSE, t0 + 2.5))
    ok, message = node.arm(t0 + 2.5)
    assert not ok
    assert "episode time limit is reached: the episode has run 2.50 s (limit 2.00 s)" in message
    assert node.new_episode()[0]
    assert node.arm(t0 + 2.5) == (True, "armed")
    assert node.new_episode() == (False, "disarm before starting a new episode")


def test_an_action_of_the_wrong_length_is_refused(in_process):
    from world4rl_policy.action_executor_node import ActionExecutor

    node = in_process(ActionExecutor)
    sent = spy_commands(node)
    now = node._now()
    node._on_joints(joint_state(FR3_READY_POSE, now))
    response = node._on_arm(SetBool.Request(data=True), SetBool.Response())
    assert response.success, response.message
    action = Action(values=[0.5, 0.0, 0.0, 1.0, 0.3, 0.2, 0.1, 0.0], source="test")  # 8 values
    stamp(action, node._now())
    node._on_joints(joint_state(FR3_READY_POSE, node._now()))
    node._on_action(action)
    status = node.path.filter.status()
    assert status.fault == "bad_action_shape", status
    assert "action has shape (8,), expected (4,)" in status.fault_message
    assert status.step == 0
    assert not status.armed
    assert len(sent) <= 1  # at most the hold

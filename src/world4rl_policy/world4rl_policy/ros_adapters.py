"""Message <-> array conversions and the command publishers shared by the nodes that move the arm
(action_executor, policy_runner). Thin: no decisions are made here, only conversions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from world4rl_msgs.action import GripperGrasp, GripperMove
from world4rl_msgs.msg import PolicyStatus
from world4rl_policy.command_messages import command_message
from world4rl_policy.command_path import CommandPath, CommandPathParams, Cycle, GripperCommand
from world4rl_policy.safety_filter import SafetyParams
from world4rl_policy.smoothing import Motion
from world4rl_spec import (
    ARM_JOINT_NAMES,
    CONTROL_RATE_HZ,
    FINGER_JOINT_NAMES,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    GRIPPER_GRASP_FORCE_N,
    GRIPPER_OPEN_WIDTH_M,
    GRIPPER_SPEED_M_S,
    topics,
)

# Commands: reliable and shallow; a command that cannot be delivered now is worthless later.
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


def describe(text: str) -> ParameterDescriptor:
    """A read-only parameter: the nodes that move the arm read their parameters once, at start-up,
    so `ros2 param set` is refused (instead of changing a value that no longer has any effect)."""
    return ParameterDescriptor(description=text, read_only=True)


def checked(name: str, value, ok: bool, expected: str):
    """`value`, or ValueError naming the parameter if not `ok`: stops the node at start-up."""
    if not ok:
        raise ValueError(f"parameter {name} must be {expected}, got {value!r}")
    return value


def is_number(value) -> bool:
    """A finite int or float (not a bool, NaN or inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def arm_joint_positions(msg: JointState) -> np.ndarray | None:
    """The 7 arm joints in world4rl_spec order, whatever order the message lists them in;
    None if any is missing (a gripper-only JointState, say)."""
    index = {name: i for i, name in enumerate(msg.name)}
    if not all(name in index for name in ARM_JOINT_NAMES) or len(msg.position) < len(msg.name):
        return None
    return np.array([msg.position[index[name]] for name in ARM_JOINT_NAMES], dtype=np.float64)


def finger_positions(msg: JointState) -> np.ndarray | None:
    """The two finger joints (franka_gripper's halves of the width), or None if not in the message."""
    index = {name: i for i, name in enumerate(msg.name)}
    if not all(name in index for name in FINGER_JOINT_NAMES) or len(msg.position) < len(msg.name):
        return None
    return np.array([msg.position[index[name]] for name in FINGER_JOINT_NAMES], dtype=np.float64)


class ArmStateNode(Node):
    """A node that moves the arm (action_executor, policy_runner): the ROS clock in seconds, and
    the newest arm joint positions (`joints`) with their stamp (`joint_stamp`); disarming and new
    episodes of its command path (`path`, a CommandPath) and command publisher (`commands`)."""

    joints: np.ndarray | None = None
    joint_stamp: float | None = None
    path: CommandPath
    commands: ArmCommandPublisher

    def arm_path(self, now: float, extra_refusal=None) -> tuple[bool, str] | None:
        """Arm the command path after the arming checks (then `extra_refusal(now)`, a node's own);
        None when armed, else (False, why not)."""
        problem = self.arming_refusal(now, self.path.filter.params, self.commands.publisher.topic_name)
        if problem is None and extra_refusal is not None:
            problem = extra_refusal(now)
        if problem is not None:
            return False, problem
        try:
            self.path.arm(now, self.joints)
        except ValueError as e:
            return False, str(e)
        return None

    def arm(self, now: float) -> tuple[bool, str]:
        raise NotImplementedError

    def _on_arm(self, request, response):
        response.success, response.message = self.arm(self._now()) if request.data else self.disarm()
        self.get_logger().info(f"arm request {request.data}: {response.message}")
        return response

    def disarm(self) -> tuple[bool, str]:
        self.path.disarm()
        self.commands.cancel_gripper("disarm requested")
        return True, "disarmed"

    def new_episode(self) -> tuple[bool, str]:
        """End the episode, so the next arming starts a new episode time limit (refused while armed)."""
        try:
            self.path.new_episode()
        except ValueError as e:
            return False, str(e)
        return True, "new episode: its time limit starts at the next arming"

    def _on_new_episode(self, _request, response):
        response.success, response.message = self.new_episode()
        self.get_logger().info(f"new episode request: {response.message}")
        return response

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joints(self, msg: JointState) -> bool:
        """Keep the message's arm joint positions and stamp; False (nothing kept) if it lacks an arm joint."""
        q = arm_joint_positions(msg)
        if q is None:
            return False
        self.joints, self.joint_stamp = q, stamp_seconds(msg.header.stamp)
        return True

    def arming_refusal(self, now: float, params: SafetyParams, command_topic: str) -> str | None:
        """Why the node must not arm now, or None. What steers the arm must be the robot's alone (one
        joint-state publisher, no other commander on `command_topic`), and arming latches the
        end-effector orientation and target from the joint state: it must be current, finite and
        inside the FR3 limits, or the first commands would steer towards a pose the arm is not in."""
        joint_topic = self.resolve_topic_name(topics.JOINT_STATES)
        problem = self._publisher_refusal(joint_topic, command_topic)
        if problem is not None:
            return problem
        if self.joints is None:
            return f"no joint state on {joint_topic} yet"
        if not np.all(np.isfinite(self.joints)):
            return f"the joint state is not finite: {self.joints.tolist()}"
        age = now - self.joint_stamp
        if not abs(age) <= max(params.joint_state_timeout_s, params.future_tolerance_s):
            return f"the joint state is {age:.3f} s old (limit {params.joint_state_timeout_s} s)"
        tol = params.joint_state_limit_tolerance_rad
        beyond = (self.joints < np.asarray(FR3_JOINT_POSITION_MIN) - tol) | (
            self.joints > np.asarray(FR3_JOINT_POSITION_MAX) + tol
        )
        if np.any(beyond):
            joints = ", ".join(f"joint{i + 1}={self.joints[i]:.3f}" for i in np.flatnonzero(beyond))
            return f"the joint state is beyond the FR3 limits: {joints}"
        return None

    def _publisher_refusal(self, joint_topic: str, command_topic: str) -> str | None:
        """A second joint-state publisher (a spoofer, or a forgotten sim beside the robot) or another
        node commanding the arm: DDS discovery (the ROS graph) names them."""
        joint_publishers = self.get_publishers_info_by_topic(joint_topic)
        if len(joint_publishers) > 1:
            return (
                f"{len(joint_publishers)} publishers on {joint_topic} ({_node_names(joint_publishers)}): "
                "the joint state must come from the robot alone"
            )
        me = (self.get_namespace(), self.get_name())
        others = [i for i in self.get_publishers_info_by_topic(command_topic) if (i.node_namespace, i.node_name) != me]
        if others:
            return (
                f"{_node_names(others)} also publish on the arm's command topic {command_topic}: "
                f"{self.get_fully_qualified_name()} must be its only commander"
            )
        return None


def _node_names(endpoints) -> str:
    """The endpoints' nodes (DDS may know an endpoint before its node's name: 'unidentified')."""
    names = {
        "an unidentified participant"
        if i.node_name == "_NODE_NAME_UNKNOWN_"
        else f"{i.node_namespace.rstrip('/')}/{i.node_name}"
        for i in endpoints
    }
    return ", ".join(sorted(names))


def declare_safety_params(node: Node, prefix: str = "safety.") -> SafetyParams:
    """Declare every SafetyParams field as a node parameter (defaults from the dataclass)."""
    defaults = SafetyParams()
    values = {}
    for name, default in vars(defaults).items():
        value = list(default) if isinstance(default, tuple) else default
        values[name] = node.declare_parameter(prefix + name, value, describe(f"safety filter: {name}")).value
    return SafetyParams.from_dict(values)  # ValueError naming the parameter for a bad value


# Above this the command path could not keep up (IK and the filter take milliseconds) [Hz].
MAX_CONTROL_RATE_HZ = 1000.0


@dataclass
class CommandParams:
    """The parameters every arm-moving node shares (declared by declare_command_params)."""

    control_rate_hz: float
    command_mode: str
    command_topic: str
    gripper_speed: float
    grasp_force: float
    path: CommandPathParams
    safety: SafetyParams


def declare_command_params(node: Node) -> CommandParams:
    """Declare the control rate, command output, gripper and safety.* parameters of an arm-moving node.
    The safety filter's control period follows the control rate."""
    rate = float(
        node.declare_parameter("control_rate_hz", float(CONTROL_RATE_HZ), describe("command cycles per second")).value
    )
    checked("control_rate_hz", rate, 0 < rate <= MAX_CONTROL_RATE_HZ, f"in (0, {MAX_CONTROL_RATE_HZ:g}] Hz")
    mode = node.declare_parameter(
        "command_mode", "trajectory", describe("'trajectory' (JointTrajectory) or 'forward_position'")
    ).value
    default_topic = topics.ARM_TRAJECTORY if mode == "trajectory" else topics.ARM_FORWARD_POSITION
    topic = (
        node.declare_parameter(
            "command_topic",
            "",
            describe(
                f"arm command topic; empty: {topics.ARM_TRAJECTORY} (trajectory) or "
                f"{topics.ARM_FORWARD_POSITION} (forward_position)"
            ),
        ).value
        or default_topic
    )
    threshold = node.declare_parameter(
        "gripper_threshold", CommandPathParams.gripper_threshold, describe("|gripper action| that switches it")
    ).value
    speed = node.declare_parameter("gripper_speed", GRIPPER_SPEED_M_S, describe("gripper finger speed [m/s]")).value
    force = node.declare_parameter("grasp_force", GRIPPER_GRASP_FORCE_N, describe("grasp force [N]")).value
    checked("gripper_threshold", threshold, is_number(threshold) and 0 <= threshold < 1, "in [0, 1)")
    checked("gripper_speed", speed, is_number(speed) and speed > 0, "a finite number > 0 [m/s]")
    checked("grasp_force", force, is_number(force) and force > 0, "a finite number > 0 [N]")
    safety = declare_safety_params(node)
    safety.control_period_s = 1.0 / rate
    return CommandParams(rate, mode, topic, speed, force, CommandPathParams(gripper_threshold=threshold), safety)


class ArmCommandPublisher:
    """Publishes checked joint targets as a JointTrajectory (franka_ros2's trajectory controller;
    trajectory_message) or a Float64MultiArray (forward position controllers: the smoothed
    positions alone, one per cycle), and gripper goals."""

    def __init__(
        self,
        node: Node,
        mode: str,
        topic: str,
        period_s: float,
        gripper_speed: float = GRIPPER_SPEED_M_S,
        grasp_force: float = GRIPPER_GRASP_FORCE_N,
    ):
        if mode not in ("trajectory", "forward_position"):
            raise ValueError(f"parameter command_mode must be 'trajectory' or 'forward_position', got {mode!r}")
        self.node = node
        self.mode = mode
        self.period_s = period_s
        msg_type = JointTrajectory if mode == "trajectory" else Float64MultiArray
        self.publisher = node.create_publisher(msg_type, topic, COMMAND_QOS)
        self.move_client = ActionClient(node, GripperMove, topics.GRIPPER_MOVE)
        self.grasp_client = ActionClient(node, GripperGrasp, topics.GRIPPER_GRASP)
        self.gripper_speed = gripper_speed
        self.grasp_force = grasp_force
        self.pending_gripper: GripperCommand | None = None  # decided while armed, not sent yet
        self._goals: list = []  # accepted gripper goals still running (ClientGoalHandle)
        self._generation = 0  # counts cancellations: a goal accepted after one is cancelled at once

    def send_arm(self, command: np.ndarray, motion: Motion | None = None) -> None:
        self.publisher.publish(command_message(self.mode, command, motion, self.period_s))

    def send_gripper(self, command: GripperCommand) -> bool:
        """Send a gripper goal; False (nothing sent) while its action server is not ready."""
        client = self.grasp_client if command.kind == "grasp" else self.move_client
        if not client.server_is_ready():
            self.node.get_logger().warn(
                f"gripper {command.kind} server not available: {command.kind} not sent yet, retried every cycle",
                throttle_duration_sec=5.0,
            )
            return False
        if command.kind == "grasp":
            goal = GripperGrasp.Goal(
                width=command.width,
                epsilon_inner=GRIPPER_OPEN_WIDTH_M,
                epsilon_outer=GRIPPER_OPEN_WIDTH_M,
                speed=self.gripper_speed,
                force=self.grasp_force,
            )
        else:
            goal = GripperMove.Goal(width=command.width, speed=self.gripper_speed)
        future = client.send_goal_async(goal)
        generation = self._generation
        future.add_done_callback(lambda done: self._on_goal_response(done, generation, command))
        return True

    def _on_goal_response(self, future, generation: int, command: GripperCommand) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.node.get_logger().error(f"gripper {command.kind} goal rejected by its server")
            return
        if generation != self._generation:
            handle.cancel_goal_async()  # disarmed while the goal was on its way
            return
        self._goals.append(handle)
        handle.get_result_async().add_done_callback(lambda _done: self._forget(handle))

    def _forget(self, handle) -> None:
        """A goal that finished: nothing left to cancel."""
        if handle in self._goals:
            self._goals.remove(handle)

    def cancel_gripper(self, why: str) -> None:
        """Cancel the gripper goals still running and forget one not sent yet (a fault or a disarm)."""
        self._generation += 1
        dropped, self.pending_gripper = self.pending_gripper, None
        goals, self._goals = self._goals, []
        for handle in goals:
            handle.cancel_goal_async()
        if goals or dropped is not None:
            self.node.get_logger().info(
                f"{why}: cancelled {len(goals)} running gripper goal(s)" + (", dropped one not sent" if dropped else "")
            )

    def apply(self, cycle: Cycle) -> None:
        if cycle.send_arm_command:
            self.send_arm(cycle.result.command, cycle.motion)
        if not cycle.result.armed:
            self.cancel_gripper("disarmed")
            return
        # A gripper change that could not be sent (no server yet) is sent as soon as it can be.
        if cycle.gripper is not None:
            self.pending_gripper = cycle.gripper
        if self.pending_gripper is not None and self.send_gripper(self.pending_gripper):
            self.pending_gripper = None


class RefusalLogger:
    """One clear log line per kind of refusal (then at most one every few seconds per kind).

    Lines start with the refusal's code in brackets, e.g. `[stale_image] image is 0.31 s old ...`:
    the safety filter's Reason codes, plus the node's own (e.g. a dropped image)."""

    def __init__(self, node: Node, every_s: float = 5.0):
        self.logger = node.get_logger()
        self.every_s = every_s
        self.last: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def log(self, cycle: Cycle, now: float) -> None:
        for event in cycle.result.events:
            code = event.reason.value
            if code == "disarmed":
                continue
            self.note(code, event.message, now, error=event.is_fault)

    def note(self, code: str, message: str, now: float, error: bool = False) -> None:
        """Log `[code] message` unless the same code was logged less than every_s ago."""
        self.counts[code] = self.counts.get(code, 0) + 1
        # Compare the other way round too: a clock that jumped back must not silence a kind for good.
        last = self.last.get(code)
        if last is None or not (0.0 <= now - last < self.every_s):
            self.last[code] = now
            # Two call sites on purpose: rclpy ties a logging call site to one severity.
            if error:
                self.logger.error(f"[{code}] {message}")
            else:
                self.logger.warn(f"[{code}] {message}")


def status_message(cycle: Cycle | None, status, latency_ms: float, policy: str, stamp) -> PolicyStatus:
    msg = PolicyStatus(
        armed=status.armed,
        fault=status.fault if not status.fault_message else f"{status.fault}: {status.fault_message}",
        last_refusal=status.last_refusal,
        latency_ms=float(latency_ms),
        step=status.step,
        refused_commands=status.refused_commands,
        policy=policy,
    )
    msg.header.stamp = stamp
    return msg

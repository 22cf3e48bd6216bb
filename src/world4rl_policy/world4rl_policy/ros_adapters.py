"""Message <-> array conversions and the command publishers shared by the nodes that move the arm
(action_executor, policy_runner). Thin: no decisions are made here, only conversions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world4rl_msgs.action import GripperGrasp, GripperMove
from world4rl_msgs.msg import PolicyStatus
from world4rl_policy.command_path import CommandPathParams, Cycle, GripperCommand
from world4rl_policy.safety_filter import SafetyParams
from world4rl_spec import (
    ARM_JOINT_NAMES,
    CONTROL_RATE_HZ,
    FINGER_JOINT_NAMES,
    GRIPPER_GRASP_FORCE_N,
    GRIPPER_OPEN_WIDTH_M,
    GRIPPER_SPEED_M_S,
    topics,
)

# Commands: reliable and shallow; a command that cannot be delivered now is worthless later.
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


def describe(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


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
    the newest arm joint positions (`joints`) with their stamp (`joint_stamp`)."""

    joints: np.ndarray | None = None
    joint_stamp: float | None = None

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joints(self, msg: JointState) -> bool:
        """Keep the message's arm joint positions and stamp; False (nothing kept) if it lacks an arm joint."""
        q = arm_joint_positions(msg)
        if q is None:
            return False
        self.joints, self.joint_stamp = q, stamp_seconds(msg.header.stamp)
        return True


def declare_safety_params(node: Node, prefix: str = "safety.") -> SafetyParams:
    """Declare every SafetyParams field as a node parameter (defaults from the dataclass)."""
    defaults = SafetyParams()
    values = {}
    for name, default in vars(defaults).items():
        value = list(default) if isinstance(default, tuple) else default
        values[name] = node.declare_parameter(prefix + name, value, describe(f"safety filter: {name}")).value
    return SafetyParams.from_dict(values)


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
    if not rate > 0:
        raise ValueError(f"parameter control_rate_hz must be positive, got {rate}")
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
    safety = declare_safety_params(node)
    safety.control_period_s = 1.0 / rate
    return CommandParams(rate, mode, topic, speed, force, CommandPathParams(gripper_threshold=threshold), safety)


class ArmCommandPublisher:
    """Publishes checked joint targets as a one-point JointTrajectory (franka_ros2's trajectory
    controller) or a Float64MultiArray (forward position controllers), and gripper goals."""

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

    def send_arm(self, command: np.ndarray) -> None:
        values = [float(v) for v in command]
        if self.mode == "forward_position":
            self.publisher.publish(Float64MultiArray(data=values))
            return
        seconds = int(self.period_s)
        point = JointTrajectoryPoint(
            positions=values,
            time_from_start=Duration(sec=seconds, nanosec=int((self.period_s - seconds) * 1e9)),
        )
        # A zero header stamp means "start now" to the trajectory controller.
        self.publisher.publish(JointTrajectory(joint_names=list(ARM_JOINT_NAMES), points=[point]))

    def send_gripper(self, command: GripperCommand) -> None:
        if command.kind == "grasp":
            if not self.grasp_client.server_is_ready():
                self.node.get_logger().warn(
                    "gripper grasp server not available: grasp not sent", throttle_duration_sec=5.0
                )
                return
            goal = GripperGrasp.Goal(
                width=command.width,
                epsilon_inner=GRIPPER_OPEN_WIDTH_M,
                epsilon_outer=GRIPPER_OPEN_WIDTH_M,
                speed=self.gripper_speed,
                force=self.grasp_force,
            )
            self.grasp_client.send_goal_async(goal)
        else:
            if not self.move_client.server_is_ready():
                self.node.get_logger().warn(
                    "gripper move server not available: move not sent", throttle_duration_sec=5.0
                )
                return
            self.move_client.send_goal_async(GripperMove.Goal(width=command.width, speed=self.gripper_speed))

    def apply(self, cycle: Cycle) -> None:
        if cycle.send_arm_command:
            self.send_arm(cycle.result.command)
        if cycle.gripper is not None:
            self.send_gripper(cycle.gripper)


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

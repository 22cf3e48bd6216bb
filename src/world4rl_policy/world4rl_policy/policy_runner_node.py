"""policy_runner: the deployed policy. Camera images in, checked joint commands out.

Each control cycle the node takes the newest camera frame, converts it exactly as training did
(world4rl_model.images: decode, centre square crop, area resize to the checkpoint's image size),
appends it to the episode's frame history, runs the policy's mean action, and sends that
end-effector delta through the shared command path (FR3 IK with the orientation latched at
arming, then the safety filter) to the arm controller and the gripper.

Cycle timing: image-driven at the control rate. A cycle runs inside the callback of the first
good image that arrives once the cycle is due (control period after the previous one, less
`cycle_tolerance_s` for camera jitter). So the command is computed from a frame that is
milliseconds old instead of up to one camera period old (a free-running timer would sample the
newest frame at a random phase), and the frames in the history are one control period apart, as
in the recorded episodes the policy learned from. A timer at the control rate is the fallback:
while disarmed it publishes the status; while armed, if no image-driven cycle ran for two
periods, it runs a cycle without a decision, which holds position and, once the last image is
older than `safety.image_timeout_s`, faults and disarms (the image watchdog).

Safety: disarmed at start; `policy_runner/arm` (std_srvs/SetBool) arms (clearing the frame history, so
every episode starts from its own first frame, and latching the end-effector orientation) or
disarms. Any fault (stale, future or out-of-order image or joint state, a non-finite or failing
policy output, a target jump, the episode time limit) holds position and disarms. Images that
cannot be used (wrong encoding or size, truncated data) are dropped with a log line, so a
broken camera trips the image watchdog instead of feeding the policy garbage. The image's
header stamp is the filter's image stamp: the watchdog judges the age of what the policy saw.

Every refusal kind is logged once as `[code] message` (then at most every 5 s), and
world4rl_msgs/PolicyStatus (armed, fault, latency from image arrival (DDS reception) to command
publish, 0 in cycles without an image; step) is published every cycle on world4rl/policy_status.
Every topic and service name is relative (world4rl_spec.topics): the node works in any namespace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool

from world4rl_model.images import ENCODINGS, decode_image, to_learning_image
from world4rl_msgs.msg import PolicyStatus
from world4rl_policy.command_path import CommandPath, Cycle
from world4rl_policy.ros_adapters import (
    ArmCommandPublisher,
    ArmStateNode,
    RefusalLogger,
    declare_command_params,
    describe,
    finger_positions,
    stamp_seconds,
    status_message,
)
from world4rl_ros.node_main import run_node
from world4rl_spec import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    CONTROL_RATE_HZ,
    EE_DELTA_SCALE_M,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    topics,
)

# Only the newest image and joint state matter: keep one, best effort (matches reliable
# publishers such as realsense2_camera and the sim as well as best-effort ones).
LATEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)

# The node's own refusal codes (the safety filter's are world4rl_policy.safety_filter.Reason).
IMAGE_ENCODING = "image_encoding"
IMAGE_SIZE = "image_size"
IMAGE_DATA = "image_data"
IMAGE_BEFORE_ARMING = "image_before_arming"
POLICY_ERROR = "policy_error"
ACTION_CLIPPED = "action_clipped"

# Proprioception layouts a checkpoint may ask for (PolicyConfig.proprio_dim).
PROPRIO_ARM = 7  # fr3_joint1..7
PROPRIO_ARM_AND_FINGERS = 9  # + fr3_finger_joint1..2


class PolicyRunnerNode(ArmStateNode):
    def __init__(self, **node_kwargs):
        super().__init__("policy_runner", **node_kwargs)
        policy_path, image_topic, threads = self._declare_node_params()
        params = declare_command_params(self)
        self.period_s = 1.0 / params.control_rate_hz
        if not policy_path:
            raise ValueError("parameter 'policy' is required: a policy checkpoint directory")
        self._load_policy(policy_path, threads, params.control_rate_hz)
        # What decides the action from the frame history (and proprioception). The policy's mean;
        # the node-level fuzz test replaces it with an adversarial source.
        self.action_source: Callable[[np.ndarray, np.ndarray | None], np.ndarray] = lambda frames, proprio: (
            self.policy.act(frames, proprio, deterministic=True)
        )

        self.path = CommandPath(params.safety, params=params.path)
        self.commands = ArmCommandPublisher(
            self, params.command_mode, params.command_topic, self.period_s, params.gripper_speed, params.grasp_force
        )
        self.refusals = RefusalLogger(self)
        self.history = self.policy.new_history()
        self.joints: np.ndarray | None = None
        self.fingers: np.ndarray | None = None
        self.joint_stamp: float | None = None
        self.image_stamp: float | None = None  # newest good image, any time (the disarmed watchdog view)
        self.episode_image_stamp: float | None = None  # newest good image of this armed episode
        self.armed_at = 0.0
        self.next_due: float | None = None  # when the next image-driven cycle is due
        self.last_image_cycle_at: float | None = None
        self.images_received = 0
        self.images_dropped = 0

        self.image_subscription = self.create_subscription(Image, image_topic, self._on_image, LATEST_QOS)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, LATEST_QOS)
        # franka_ros2 publishes the fingers separately (the sim puts them into joint_states).
        self.create_subscription(JointState, topics.GRIPPER_JOINT_STATES, self._on_gripper_joints, LATEST_QOS)
        self.status_publisher = self.create_publisher(PolicyStatus, topics.POLICY_STATUS, 10)
        arm_service = self.create_service(SetBool, topics.POLICY_ARM, self._on_arm)
        self.create_timer(self.period_s, self._on_timer)
        cfg = self.policy.config
        self.get_logger().info(
            f"policy {self.checkpoint} as asked by policy:={policy_path} "
            f"({cfg.frame_history} frames of {cfg.image_size}x{cfg.image_size}, "
            f"proprio {cfg.proprio_dim}); images from {self.image_subscription.topic_name}; commands to "
            f"{self.commands.publisher.topic_name} ({params.command_mode}) at {params.control_rate_hz:g} Hz; "
            f"disarmed: call {arm_service.service_name} to start"
        )

    def _declare_node_params(self) -> tuple[str, str, int]:
        """The runner's own parameters (the command path's are declare_command_params'); keeps the
        image checks as attributes, returns (policy path, image topic, torch threads)."""
        policy_path = self.declare_parameter(
            "policy", "", describe("policy checkpoint directory (model.safetensors + config.json) or a run directory")
        ).value
        image_topic = self.declare_parameter(
            "image_topic", topics.CAMERA_IMAGE, describe("camera image topic (relative: inside the node's namespace)")
        ).value
        self.expected_width = int(
            self.declare_parameter(
                "image_width", CAMERA_WIDTH, describe("expected camera image width; 0 accepts any")
            ).value
        )
        self.expected_height = int(
            self.declare_parameter(
                "image_height", CAMERA_HEIGHT, describe("expected camera image height; 0 accepts any")
            ).value
        )
        self.cycle_tolerance_s = float(
            self.declare_parameter(
                "cycle_tolerance_s",
                0.01,
                describe("an image this much before the next cycle is due still starts it (camera jitter) [s]"),
            ).value
        )
        threads = int(self.declare_parameter("torch_threads", 1, describe("torch intra-op threads")).value)
        return policy_path, image_topic, threads

    def _load_policy(self, policy_path: str, threads: int, control_rate_hz: float) -> None:
        """Load the checkpoint and refuse one this node cannot run as it was trained."""
        from world4rl_model.checkpoint import checkpoint_fingerprint
        from world4rl_policy.policy import load_policy  # torch: only once the parameters are sane

        self.policy = load_policy(policy_path, num_threads=threads)
        # What was loaded, not only what was asked for: a run directory resolves to one step.
        self.checkpoint = checkpoint_fingerprint(self.policy.checkpoint_dir)
        self.policy_name = str(self.checkpoint.path)
        proprio_dim = self.policy.config.proprio_dim
        if proprio_dim not in (0, PROPRIO_ARM, PROPRIO_ARM_AND_FINGERS):
            raise ValueError(
                f"{policy_path}: proprio_dim {proprio_dim} is not a layout this node can feed "
                f"(0, {PROPRIO_ARM} arm joints, or {PROPRIO_ARM_AND_FINGERS} arm + finger joints)"
            )
        if self.policy.config.action_dim != ACTION_DIM:
            raise ValueError(f"{policy_path}: action_dim {self.policy.config.action_dim}, expected {ACTION_DIM}")
        # The command path scales actions by world4rl_spec's step size: the policy must mean the same.
        scale = self.policy.checkpoint_config.get("action_space", {}).get("ee_delta_scale_m", EE_DELTA_SCALE_M)
        if abs(float(scale) - EE_DELTA_SCALE_M) > 1e-12:
            raise ValueError(
                f"{policy_path}: trained for {scale} m per action unit, this stack moves {EE_DELTA_SCALE_M} m"
            )
        # Older checkpoints carry no rate: they were trained at the spec's.
        rate = float(self.policy.checkpoint_config.get("action_space", {}).get("control_rate_hz", CONTROL_RATE_HZ))
        if abs(rate - control_rate_hz) > 1e-6:
            raise ValueError(
                f"{policy_path}: trained at {rate:g} Hz, but parameter 'control_rate_hz' is "
                f"{control_rate_hz:g} Hz (each action moves up to {EE_DELTA_SCALE_M} m per cycle)"
            )

    # ------------------------------------------------------------------ inputs
    def _on_joints(self, msg: JointState) -> bool:
        """The arm joints and, in the same message (the sim's joint_states), the fingers."""
        kept = super()._on_joints(msg)
        if kept:
            self._on_gripper_joints(msg)
        return kept

    def _on_gripper_joints(self, msg: JointState) -> None:
        fingers = finger_positions(msg)
        if fingers is not None:
            self.fingers = fingers

    def _on_image(self, msg: Image, info) -> None:
        # Arrival = when DDS received the frame (rmw's received_timestamp, system clock), so the
        # latency includes rclpy's take and deserialisation and any wait for the executor.
        received_ns = info.get("received_timestamp") if info else None
        self.handle_image(msg, self._now(), received_ns * 1e-9 if received_ns else time.time())

    def _on_timer(self) -> None:
        self.handle_tick(self._now())

    def check_image(self, msg: Image, now: float) -> np.ndarray | None:
        """The image as uint8 [H, W, 3] RGB, or None after logging why it cannot be used."""
        where = f"image on {self.image_subscription.topic_name} dropped"
        if msg.encoding not in ENCODINGS:
            problem = (IMAGE_ENCODING, f"{where}: encoding {msg.encoding!r}, expected one of {list(ENCODINGS)}")
        elif (self.expected_width and msg.width != self.expected_width) or (
            self.expected_height and msg.height != self.expected_height
        ):
            problem = (
                IMAGE_SIZE,
                f"{where}: {msg.width}x{msg.height}, expected {self.expected_width}x{self.expected_height} "
                "(another resolution changes the field of view the policy learned)",
            )
        else:
            try:
                return decode_image(msg.data, msg.width, msg.height, msg.encoding, msg.step)
            except ValueError as e:
                problem = (IMAGE_DATA, f"{where}: {e}")
        self.images_dropped += 1
        self.refusals.note(*problem, now)
        return None

    def handle_image(self, msg: Image, now: float, arrival: float) -> None:
        """One camera frame; runs the control cycle if one is due. `arrival`: time.time() at receipt."""
        self.images_received += 1
        rgb = self.check_image(msg, now)
        if rgb is None:
            return
        stamp = stamp_seconds(msg.header.stamp)
        self.image_stamp = stamp
        if not self.path.armed:
            return
        if stamp < self.armed_at:
            # Taken before this episode began (e.g. before the sim reset): never feed it to the policy.
            self.refusals.note(
                IMAGE_BEFORE_ARMING, f"image stamped {self.armed_at - stamp:.3f} s before arming ignored", now
            )
            return
        self.episode_image_stamp = stamp
        last = self.last_image_cycle_at
        clock_ok = last is None or now >= last  # a clock that ran back: cycle now, so the filter faults
        if clock_ok and self.next_due is not None and now < self.next_due - self.cycle_tolerance_s:
            return
        self.history.push(to_learning_image(rgb, self.policy.image_size))
        action = self._decide(now)
        self.last_image_cycle_at = now
        # Re-phased on every cycle: frames in the history stay at least a period (less the tolerance) apart.
        self.next_due = now + self.period_s
        self._run_cycle(now, arrival, action, stamp)

    def _decide(self, now: float) -> np.ndarray:
        """The policy's action for the current history: float64 [ACTION_DIM], finite and in [-1, 1],
        or all NaN (which the safety filter refuses: hold and disarm) after logging why."""
        dim = self.policy.config.proprio_dim
        try:
            proprio = None
            if dim:
                parts = [self.joints] if dim == PROPRIO_ARM else [self.joints, self.fingers]
                if any(p is None for p in parts):
                    joint_states = self.resolve_topic_name(topics.JOINT_STATES)
                    raise ValueError(f"the policy needs arm and finger joint states on {joint_states}")
                proprio = np.concatenate(parts)
            action = np.asarray(self.action_source(self.history.array(), proprio), dtype=np.float64)
            if action.shape != (ACTION_DIM,):
                raise ValueError(f"action has shape {action.shape}, expected ({ACTION_DIM},)")
            if not np.all(np.isfinite(action)):
                raise FloatingPointError(f"action is not finite: {action.tolist()}")
        except Exception as e:  # whatever the policy does wrong, the arm holds and the node lives
            self.refusals.note(POLICY_ERROR, f"policy gave no usable action ({type(e).__name__}: {e})", now, error=True)
            return np.full(ACTION_DIM, math.nan)
        if np.any(np.abs(action) > ACTION_HIGH):
            self.refusals.note(ACTION_CLIPPED, f"action {action.tolist()} clipped to [-1, 1]", now)
            action = np.clip(action, ACTION_LOW, ACTION_HIGH)
        return action

    def handle_tick(self, now: float) -> None:
        """The control-rate timer: status while disarmed; hold and the image watchdog while armed."""
        if self.joints is None:
            self._publish_status(None, 0.0)
            return
        if self.path.armed:
            last = self.last_image_cycle_at
            if last is not None and 0.0 <= now - last < 1.5 * self.period_s:
                return  # images drive the cycles
            if last is None and now - self.armed_at < self.path.filter.params.image_timeout_s:
                self._publish_status(None, 0.0)
                return  # armed, the first image of the episode is not here yet: send nothing
            # No image-driven cycle lately: hold, and let the filter's watchdog judge the last image's age.
            self._run_cycle(now, None, None, self.episode_image_stamp)
        else:
            self._run_cycle(now, None, None, self.image_stamp)

    # ------------------------------------------------------------------ the cycle
    def _run_cycle(self, now: float, arrival: float | None, action, image_stamp: float | None) -> Cycle:
        """`arrival`: time.time() the image arrived, None for a cycle without an image (latency 0)."""
        joints = self.joints if self.joints is not None else np.full(7, math.nan)
        cycle = self.path.step(
            joint_positions=joints,
            action=action,
            now=now,
            input_stamp=image_stamp,
            joint_state_stamp=self.joint_stamp,
        )
        self.commands.apply(cycle)
        latency_ms = (time.time() - arrival) * 1e3 if arrival is not None else 0.0
        self.refusals.log(cycle, now)
        self._publish_status(cycle, latency_ms)
        return cycle

    def _publish_status(self, cycle: Cycle | None, latency_ms: float) -> None:
        status = self.path.filter.status()
        self.status_publisher.publish(
            status_message(cycle, status, latency_ms, self.policy_name, self.get_clock().now().to_msg())
        )

    # ------------------------------------------------------------------ arming
    def arm(self, now: float) -> tuple[bool, str]:
        if self.joints is None:
            return False, f"no joint state on {self.resolve_topic_name(topics.JOINT_STATES)} yet"
        # Arming latches the end-effector orientation and target from this state: it must be current
        # and inside the limits, or the first commands would steer towards a pose the arm is not in.
        params = self.path.filter.params
        age = now - self.joint_stamp
        if not abs(age) <= max(params.joint_state_timeout_s, params.future_tolerance_s):
            return False, f"the joint state is {age:.3f} s old (limit {params.joint_state_timeout_s} s)"
        tol = params.joint_state_limit_tolerance_rad
        beyond = (self.joints < np.asarray(FR3_JOINT_POSITION_MIN) - tol) | (
            self.joints > np.asarray(FR3_JOINT_POSITION_MAX) + tol
        )
        if np.any(beyond):
            joints = ", ".join(f"joint{i + 1}={self.joints[i]:.3f}" for i in np.flatnonzero(beyond))
            return False, f"the joint state is beyond the FR3 limits: {joints}"
        try:
            self.path.arm(now, self.joints)
        except ValueError as e:
            return False, str(e)
        # A new episode: its own frame history, and only frames taken from now on.
        self.history.reset()
        self.armed_at = now
        self.episode_image_stamp = None
        self.next_due = None
        self.last_image_cycle_at = None
        return True, "armed"

    def disarm(self) -> tuple[bool, str]:
        self.path.disarm()
        return True, "disarmed"

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self.arm(self._now()) if request.data else self.disarm()
        self.get_logger().info(f"arm request {request.data}: {response.message}")
        return response


def main(args=None) -> None:
    # A bad parameter or checkpoint: one clear line, not a traceback.
    run_node(PolicyRunnerNode, args=args, setup_errors=(Exception,), setup_exit_code=2, logger_name="policy_runner")


if __name__ == "__main__":
    main()

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
the policy sees only frames taken from then on, and latching the end-effector orientation) or
disarms. It refuses to arm, saying why in its answer and the log, unless the joint state is
current, finite and inside the limits, exactly one node publishes the joint states, and no other
node publishes on the arm's command topic (DDS discovery names them). Episodes: the first arming
starts an episode and its time limit (`safety.episode_time_limit_s`); arming again after a
disarm or a fault continues it, so re-arming cannot extend the limit, and once it is reached
arming is refused until `policy_runner/new_episode` (std_srvs/Trigger, refused while armed)
ends the episode. A disarm or a fault also cancels the gripper goals still running; a gripper
goal its server was not ready for is sent again every cycle while armed.

Any fault (stale, future or out-of-order image or joint state, a non-finite or failing policy
output, a target jump, the episode time limit) holds position and disarms. The watchdog judges
the inputs' ages at the time the command is published, after inference. A policy that needs the
finger joints refuses finger states older than `finger_state_timeout_s`. Every parameter is
checked at start-up (a bad value stops the node, naming the parameter) and read-only. Images that
cannot be used (wrong encoding or size, truncated data) are dropped with a log line, so a
broken camera trips the image watchdog instead of feeding the policy garbage. The image's
header stamp is the filter's image stamp: the watchdog judges the age of what the policy saw.

Out of distribution: every cycle's policy decision also scores how far its frame history lies
from the training data (world4rl_policy.ood: the policy's feature distance, never-seen colours
and the static background; 1.0 = the 99th percentile of held-out training frames), published as
PolicyStatus ood_score. When the mean over the last `ood.window` cycles exceeds `ood.threshold`,
`ood.action` decides: 'warn' (default) logs `[out_of_distribution] ...`, 'hold' holds position
and disarms with the out_of_distribution fault naming the score and the threshold, 'off' does
neither. 'hold' needs statistics fitted to the checkpoint's weights (`world4rl ood fit`), or the
node refuses to start.

Live view (`live_view.enabled`, off by default; `world4rl deploy --live-view`): a local Foxglove
WebSocket (`live_view.host` 127.0.0.1, `live_view.port`) shows the camera, the frames the policy
decided on, at its learning size, the world model's one-step prediction from them and the chosen
action, the frame that came next, and PolicyStatus (world4rl_policy.live_view). Once a cycle's
command went out, the node hands references to a sender thread; the server and the prediction (at
most `live_view.prediction_rate_hz`) run in a child process at the lowest priority, dropping what
they cannot keep up with: the control cycle never waits for the view. A live view that cannot
start (the port is taken) stops the node at start-up, naming the reason; one that dies later is
logged and the node goes on.

Scheduling: `cpu_affinity` pins the node's threads to CPUs and `realtime_priority` runs its control
and middleware threads under SCHED_FIFO (world4rl_policy.realtime); where the OS refuses, one
warning says how to allow it and the node runs on. The cycle reuses pre-allocated buffers for the
learning image and the policy's input, and the objects of start-up are frozen out of the garbage
collector (gc.freeze), whose full collections otherwise stall a cycle by ~200 ms.

Every refusal kind is logged once as `[code] message` (then at most every 5 s), and
world4rl_msgs/PolicyStatus (armed, fault, latency from image arrival (DDS reception) to command
publish, 0 in cycles without an image; step) is published every cycle on world4rl/policy_status.
Every topic and service name is relative (world4rl_spec.topics): the node works in any namespace.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable

import numpy as np
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool, Trigger

from world4rl_model.images import ENCODINGS, decode_image, to_learning_image
from world4rl_msgs.msg import PolicyStatus
from world4rl_policy import live_view, ood, realtime
from world4rl_policy.command_path import CommandPath, Cycle
from world4rl_policy.ros_adapters import (
    ArmCommandPublisher,
    ArmStateNode,
    RefusalLogger,
    checked,
    declare_command_params,
    describe,
    finger_positions,
    is_number,
    stamp_seconds,
    status_message,
)
from world4rl_policy.safety_filter import Event, Reason
from world4rl_ros.node_main import run_node
from world4rl_spec import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    CONTROL_RATE_HZ,
    EE_DELTA_SCALE_M,
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
STALE_FINGER_STATE = "stale_finger_state"

# Proprioception layouts a checkpoint may ask for (PolicyConfig.proprio_dim).
PROPRIO_ARM = 7  # fr3_joint1..7
PROPRIO_ARM_AND_FINGERS = 9  # + fr3_finger_joint1..2


class PolicyRunnerNode(ArmStateNode):
    def __init__(self, **node_kwargs):
        super().__init__("policy_runner", **node_kwargs)
        policy_path, image_topic, threads = self._declare_node_params()
        cpus, rt_priority = self._declare_scheduling_params()
        params = declare_command_params(self)
        self.period_s = 1.0 / params.control_rate_hz
        # A tolerance of a period or more (or NaN) would let every image start a cycle.
        tolerance = self.cycle_tolerance_s
        checked(
            "cycle_tolerance_s", tolerance, 0 <= tolerance < self.period_s, f"in [0, {self.period_s:g}) s (a period)"
        )
        if not policy_path:
            raise ValueError("parameter 'policy' is required: a policy checkpoint directory")
        self._load_policy(policy_path, threads, params.control_rate_hz)
        self.ood = self._declare_ood_params(policy_path)
        self.ood_score = math.nan  # this cycle's, for the status
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
        # Pre-allocated, reused every cycle: the learning image and the policy's input [T, S, S, 3].
        size = self.policy.image_size
        self._learning_frame = np.empty((size, size, 3), dtype=np.uint8)
        self._policy_frames = np.empty((self.policy.frame_history, size, size, 3), dtype=np.uint8)
        self.joints: np.ndarray | None = None
        self.fingers: np.ndarray | None = None
        self.finger_stamp: float | None = None
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
        self.create_service(Trigger, topics.POLICY_NEW_EPISODE, self._on_new_episode)
        self.create_timer(self.period_s, self._on_timer)
        self.policy_input: np.ndarray | None = None  # the frames of the last decision
        self.live_view: live_view.LiveView | None = None
        self.live_view = self._start_live_view(policy_path)  # last: nothing after it can fail and leave its process
        self._apply_scheduling(cpus, rt_priority)  # after every thread of the node is up; warns, never fails
        cfg = self.policy.config
        self.get_logger().info(
            f"policy {self.checkpoint} as asked by policy:={policy_path} "
            f"({cfg.frame_history} frames of {cfg.image_size}x{cfg.image_size}, "
            f"proprio {cfg.proprio_dim}, runs on {self.policy.backend}); images from "
            f"{self.image_subscription.topic_name}; commands to "
            f"{self.commands.publisher.topic_name} ({params.command_mode}) at {params.control_rate_hz:g} Hz; "
            f"disarmed: call {arm_service.service_name} to start"
        )

    def _declare_node_params(self) -> tuple[str, str, int]:
        """The runner's own parameters (the command path's are declare_command_params'); keeps the
        image checks as attributes, returns (policy path, image topic, torch threads)."""
        policy_path = self.declare_parameter(
            "policy", "", describe("policy checkpoint directory (model.safetensors + config.json) or a run directory")
        ).value
        self.policy_choice = self.declare_parameter(
            "policy_choice",
            "gate",
            describe("policy is a refine run: 'gate' runs what its gate.json chose, 'bc' or 'refined' either one"),
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
        self.finger_state_timeout_s = float(
            self.declare_parameter(
                "finger_state_timeout_s",
                0.5,
                describe("a policy that needs the finger joints refuses finger states older than this [s]"),
            ).value
        )
        threads = int(self.declare_parameter("torch_threads", 1, describe("torch intra-op threads")).value)
        self.inference_backend = self.declare_parameter(
            "inference_backend",
            "auto",
            describe(
                "what runs the policy: 'torch', 'onnxruntime' (~2x faster per call, exported from the checkpoint "
                "on the fly) or 'auto' (onnxruntime where installed); torch is the fallback"
            ),
        ).value
        for name, size in (("image_width", self.expected_width), ("image_height", self.expected_height)):
            checked(name, size, size >= 0, "0 (any) or a size in pixels")
        timeout = self.finger_state_timeout_s
        checked("finger_state_timeout_s", timeout, is_number(timeout) and timeout > 0, "a finite number > 0 [s]")
        checked("torch_threads", threads, threads >= 1, "at least 1")
        return policy_path, image_topic, threads

    def _declare_scheduling_params(self) -> tuple[list[int], int]:
        """cpu_affinity and realtime_priority (world4rl_policy.realtime), checked; applied at the end
        of start-up by _apply_scheduling."""
        cpus = self.declare_parameter(
            "cpu_affinity",
            Parameter.Type.INTEGER_ARRAY,
            describe(
                "CPU ids the node's process and threads run on (os.sched_setaffinity); empty: unchanged. "
                "Where the OS refuses, a warning and the node runs on"
            ),
        ).value
        cpus = list(cpus or [])
        n_cpus = os.cpu_count() or 1
        checked("cpu_affinity", cpus, all(0 <= c < n_cpus for c in cpus), f"CPU ids in [0, {n_cpus - 1}]")
        priority = self.declare_parameter(
            "realtime_priority",
            0,
            describe(
                "0: normal scheduling; 1-99: SCHED_FIFO at this priority for the node's control and middleware "
                "threads (needs CAP_SYS_NICE or an rtprio limit; where the OS refuses, a warning and the node runs on)"
            ),
        ).value
        top = realtime.max_realtime_priority()
        whole = isinstance(priority, int) and not isinstance(priority, bool)
        checked(
            "realtime_priority",
            priority,
            whole and 0 <= priority <= top,
            f"0 (off) or a SCHED_FIFO priority in [1, {top}]",
        )
        return cpus, int(priority)

    def _apply_scheduling(self, cpus: list[int], priority: int) -> None:
        """Pin and prioritise the process's threads (a warning where the OS refuses)."""
        log = self.get_logger()
        if cpus:
            done, warning = realtime.set_cpu_affinity(cpus)
            if warning:
                log.warn(warning)
            else:
                log.info(f"cpu_affinity: {done} threads pinned to CPUs {cpus}")
        if priority:
            done, warning = realtime.set_realtime_priority(priority)
            if warning:
                log.warn(warning)
            else:
                log.info(f"realtime_priority: SCHED_FIFO {priority} on {done} threads")

    def _load_policy(self, policy_path: str, threads: int, control_rate_hz: float) -> None:
        """Load the checkpoint and refuse one this node cannot run as it was trained."""
        from world4rl_model.checkpoint import checkpoint_fingerprint
        from world4rl_policy.policy import load_policy  # torch: only once the parameters are sane
        from world4rl_policy.prediction import resolve_deploy_policy

        chosen, gate_note = resolve_deploy_policy(policy_path, self.policy_choice)
        if gate_note:
            self.get_logger().info(f"{policy_path}: {gate_note}")
        self.policy = load_policy(chosen, num_threads=threads, backend=self.inference_backend)
        if self.policy.backend_note:
            self.get_logger().warn(f"inference_backend {self.inference_backend}: {self.policy.backend_note}")
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

    def _declare_ood_params(self, policy_path: str) -> ood.OODMonitor:
        """The out-of-distribution rule (world4rl_policy.ood): ood.action, ood.threshold, ood.window.
        Refuses `hold` without statistics fitted to the loaded weights: a refined checkpoint carries
        its BC policy's until `world4rl ood fit` refits them."""
        action = self.declare_parameter(
            "ood.action",
            ood.DEFAULT_ACTION,
            describe(
                "out-of-distribution rule: 'off', 'warn' (log when the score is beyond ood.threshold) or 'hold' "
                "(hold position and disarm with an out_of_distribution fault)"
            ),
        ).value
        threshold = self.declare_parameter(
            "ood.threshold",
            ood.DEFAULT_THRESHOLD,
            describe("OOD score beyond which ood.action applies (1.0: the held-out training frames' 99th percentile)"),
        ).value
        window = self.declare_parameter(
            "ood.window", ood.DEFAULT_WINDOW, describe("cycles whose mean OOD score is compared with ood.threshold")
        ).value
        checked("ood.action", action, action in ood.ACTIONS, f"one of {list(ood.ACTIONS)}")
        checked("ood.threshold", threshold, is_number(threshold) and threshold > 0, "a finite number > 0")
        whole = isinstance(window, int) and not isinstance(window, bool)
        checked("ood.window", window, whole and window >= 1, "an integer >= 1 (cycles)")
        stats, log = self.policy.ood, self.get_logger()
        fix = f"world4rl ood fit --policy {policy_path} --dataset DATASET"
        if stats is None or not stats.matches_weights(self.policy.module):
            why = "has no OOD statistics" if stats is None else "has OOD statistics fitted to other weights"
            if action == "hold":
                raise ValueError(f"parameter ood.action is 'hold' but {policy_path} {why}: {fix}")
            if action == "warn":
                log.warn(f"{policy_path} {why}: ood_score is {'NaN' if stats is None else 'unreliable'}; {fix}")
        return ood.OODMonitor(threshold=float(threshold), window=window, action=action)

    def _check_ood(self, now: float) -> Event | None:
        """This cycle's OOD score (kept for the status) against the rule: logged with ood.action
        'warn'; with 'hold', the fault that holds position and disarms."""
        self.ood_score = self.policy.last_ood_score
        message = self.ood.update(self.ood_score)
        if message is None:
            return None
        if self.ood.action == "warn":
            self.refusals.note(Reason.OUT_OF_DISTRIBUTION.value, message, now)
            return None
        return Event(Reason.OUT_OF_DISTRIBUTION, message)

    def _start_live_view(self, policy_path: str) -> live_view.LiveView | None:
        """The live view's parameters (declared whether it is on or not); its server when enabled."""

        def param(name: str, default, text: str):
            return self.declare_parameter(f"live_view.{name}", default, describe(text)).value

        enabled = param(
            "enabled", False, "serve the live view on a local Foxglove WebSocket (world4rl_policy.live_view)"
        )
        host = param("host", live_view.DEFAULT_HOST, "address the live view binds to: 127.0.0.1 is this host only")
        port = param("port", live_view.DEFAULT_PORT, "the live view's WebSocket port (0: any free one, logged)")
        world_model = param(
            "world_model", "", "world model for the one-step prediction; empty: the one a refined policy was refined in"
        )
        rate = param(
            "prediction_rate_hz", live_view.DEFAULT_PREDICTION_RATE_HZ, "most one-step predictions per second [Hz]"
        )
        camera_rate = param(
            "camera_rate_hz", live_view.DEFAULT_CAMERA_RATE_HZ, "most camera frames sent per second [Hz]"
        )
        checked("live_view.enabled", enabled, isinstance(enabled, bool), "true or false")
        checked("live_view.host", host, isinstance(host, str) and host.strip() != "", "an address, e.g. 127.0.0.1")
        whole = isinstance(port, int) and not isinstance(port, bool)
        checked("live_view.port", port, whole and 0 <= port <= 65535, "a port number in [0, 65535]")
        for name, value in (("live_view.prediction_rate_hz", rate), ("live_view.camera_rate_hz", camera_rate)):
            checked(name, value, is_number(value) and value > 0, "a finite number > 0 [Hz]")
        if not enabled:
            return None
        world_model = world_model or live_view.default_world_model(self.policy.checkpoint_config, policy_path)
        try:
            context = (
                live_view.world_model_context(world_model, self.policy.image_size, ACTION_DIM) if world_model else 0
            )
        except Exception as exc:
            raise ValueError(f"parameter live_view.world_model: {exc}") from exc
        settings = live_view.LiveViewSettings(host, port, world_model, context, float(rate), float(camera_rate))
        view = live_view.LiveView(settings)
        bound = view.start()  # LiveViewError (e.g. the port is taken) stops the node, naming it
        predicted = f"the world model {world_model}'s prediction" if world_model else "no prediction (no world model)"
        self.get_logger().info(
            f"live view on ws://{host}:{bound} (Foxglove WebSocket): camera, policy input, {predicted}"
        )
        return view

    def shutdown(self) -> None:
        """run_node calls this before destroying the node: stop the live view's process, and hand the
        objects frozen at start-up back to the collector (so extension objects are released at exit)."""
        if self.live_view is not None:
            self.live_view.close()
        gc.unfreeze()

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
            self.fingers, self.finger_stamp = fingers, stamp_seconds(msg.header.stamp)

    def finger_state_refusal(self, now: float) -> str | None:
        """Why the finger joints cannot be used now (missing, old, from the future), or None."""
        topic = self.resolve_topic_name(topics.GRIPPER_JOINT_STATES)
        if self.fingers is None:
            joint_states = self.resolve_topic_name(topics.JOINT_STATES)
            return f"the policy needs the finger joints: none on {joint_states} or {topic} yet"
        age = now - self.finger_stamp
        future = self.path.filter.params.future_tolerance_s
        if not -future <= age <= self.finger_state_timeout_s:
            return f"the finger state is {age:.3f} s old (limit {self.finger_state_timeout_s} s)"
        return None

    def _on_image(self, msg: Image, info) -> None:
        # Arrival = when DDS received the frame (rmw's received_timestamp, system clock), so the
        # latency includes rclpy's take and deserialisation and any wait for the executor.
        received_ns = info.get("received_timestamp") if info else None
        self.handle_image(msg, self._now(), received_ns * 1e-9 if received_ns else time.time())
        if self.live_view is not None:
            self.live_view.flush()  # the cycle is over: the live view's sender may run now

    def _on_timer(self) -> None:
        self.handle_tick(self._now())
        if self.live_view is not None:
            self.live_view.flush()

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
        started = time.monotonic()
        self.images_received += 1
        rgb = self.check_image(msg, now)
        if rgb is None:
            return
        stamp = stamp_seconds(msg.header.stamp)
        self.image_stamp = stamp
        if not self.path.armed:
            if self.live_view is not None:  # disarmed: the camera alone (armed, each decision carries its frame)
                self.live_view.camera(rgb, stamp)
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
        self.history.push(to_learning_image(rgb, self.policy.image_size, out=self._learning_frame))
        self.policy.last_ood_score = math.nan
        action = self._decide(now)
        ood_fault = self._check_ood(now)
        self.last_image_cycle_at = now
        # Re-phased on every cycle: frames in the history stay at least a period (less the tolerance) apart.
        self.next_due = now + self.period_s
        # The watchdog judges the inputs' age when the command goes out, after decoding and inference:
        # a slow policy or a GC pause must not send a command against a joint state older than the limit.
        self._run_cycle(now + (time.monotonic() - started), arrival, action, stamp, ood_fault)
        if self.live_view is not None:  # after the command went out: references into slots, no I/O
            # A copy: the node reuses its input buffer next cycle, the view sends these frames later.
            self.live_view.decision(self.policy_input.copy(), action, stamp, camera=rgb)

    def _decide(self, now: float) -> np.ndarray:
        """The policy's action for the current history: float64 [ACTION_DIM], finite and in [-1, 1],
        or all NaN (which the safety filter refuses: hold and disarm) after logging why."""
        dim = self.policy.config.proprio_dim
        fingers_refused = self.finger_state_refusal(now) if dim == PROPRIO_ARM_AND_FINGERS else None
        if fingers_refused is not None:
            self.refusals.note(STALE_FINGER_STATE, fingers_refused, now, error=True)
            return np.full(ACTION_DIM, math.nan)
        try:
            proprio = None
            if dim:
                parts = [self.joints] if dim == PROPRIO_ARM else [self.joints, self.fingers]
                if any(p is None for p in parts):
                    joint_states = self.resolve_topic_name(topics.JOINT_STATES)
                    raise ValueError(f"the policy needs arm and finger joint states on {joint_states}")
                proprio = np.concatenate(parts)
            self.policy_input = self.history.array(out=self._policy_frames)
            action = np.asarray(self.action_source(self.policy_input, proprio), dtype=np.float64)
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
    def _run_cycle(
        self, now: float, arrival: float | None, action, image_stamp: float | None, input_fault: Event | None = None
    ) -> Cycle:
        """`arrival`: time.time() the image arrived, None for a cycle without an image (latency 0);
        `input_fault`: a fault found in the decision's input (out of distribution), refused like the filter's."""
        joints = self.joints if self.joints is not None else np.full(7, math.nan)
        cycle = self.path.step(
            joint_positions=joints,
            action=action,
            now=now,
            input_stamp=image_stamp,
            joint_state_stamp=self.joint_stamp,
            input_fault=input_fault,
        )
        self.commands.apply(cycle)
        latency_ms = (time.time() - arrival) * 1e3 if arrival is not None else 0.0
        self.refusals.log(cycle, now)
        self._publish_status(cycle, latency_ms)
        return cycle

    def _publish_status(self, cycle: Cycle | None, latency_ms: float) -> None:
        status = self.path.filter.status()
        msg = status_message(cycle, status, latency_ms, self.policy_name, self.get_clock().now().to_msg())
        msg.ood_score, self.ood_score = self.ood_score, math.nan  # NaN in cycles without a decision
        self.status_publisher.publish(msg)
        if self.live_view is not None:
            self.live_view.status({name: getattr(msg, name) for name in live_view.STATUS_FIELDS})
            if self.live_view.error is not None:  # its process died: say so once, run on without it
                self.get_logger().error(f"live view: {self.live_view.error}; the policy runs on without it")
                self.live_view.close()
                self.live_view = None

    # ------------------------------------------------------------------ arming
    def arm(self, now: float) -> tuple[bool, str]:
        """Arm (continuing the episode; see new_episode), or (False, why not)."""
        fingers = self.finger_state_refusal if self.policy.config.proprio_dim == PROPRIO_ARM_AND_FINGERS else None
        if (refused := self.arm_path(now, fingers)) is not None:
            return refused
        # Its own frame history, and only frames taken from now on (an episode's frames are one
        # control period apart: after a disarm the history starts again).
        self.history.reset()
        self.ood.reset()
        if self.live_view is not None:
            self.live_view.new_episode()
        self.armed_at = now
        self.episode_image_stamp = None
        self.next_due = None
        self.last_image_cycle_at = None
        return True, "armed"


def make_node() -> PolicyRunnerNode:
    """The node, then what start-up allocated moved out of the garbage collector's way: gc.freeze()
    keeps the ~185k objects of torch, rclpy and the policy out of every later collection (a full one
    took ~200 ms on the 2 shared cores, a stalled cycle). The node's process only (main), not a test's."""
    node = PolicyRunnerNode()
    gc.collect()
    gc.freeze()
    return node


def main(args=None) -> None:
    # A bad parameter or checkpoint: one clear line, not a traceback.
    run_node(make_node, args=args, setup_errors=(Exception,), setup_exit_code=2, logger_name="policy_runner")


if __name__ == "__main__":
    main()

"""ROS 2 node `sim_robot`: the embedded robot, on the topics the real Franka and RealSense use.

It runs FrankaSim in real time and looks to the rest of the stack like the hardware. Every name
is world4rl_spec.topics' relative one, so in the root namespace it is what the real drivers use,
and in a namespace (e.g. /robot_a) the whole robot moves there:
- publishes sensor_msgs/JointState on joint_states (fr3_joint1..7 in Franka's convention, plus
  fr3_finger_joint1/2, each half the gripper width, as franka_gripper publishes them);
- publishes the fixed camera as realsense2_camera does: sensor_msgs/Image (rgb8) on
  camera/camera/color/image_raw and sensor_msgs/CameraInfo on .../camera_info, same stamp,
  frame_id `camera_color_optical_frame`;
- takes trajectory_msgs/JointTrajectory on fr3_arm_controller/joint_trajectory like the
  franka_ros2 joint trajectory controller: all seven arm joints, in any order; positions are
  interpolated over time_from_start (linearly, or cubic Hermite when every point has
  velocities), starting from the current command at header.stamp (zero stamp: on receipt);
  a new trajectory replaces the running one; an empty one holds the current command;
- offers the franka_gripper actions move / grasp / homing (world4rl_msgs/action/Gripper*, the
  same fields as franka_msgs) on franka_gripper/{move,grasp,homing} (gripper_action_servers.py);
- publishes the simulated time on clock (rosgraph_msgs/Clock, as Gazebo does; /clock in the root
  namespace), counted from the node's start and monotonic across resets: a sim that falls behind
  real time slows this clock, and the drivers (`world4rl collect`, `world4rl deploy`) measure
  episode lengths on it;
- sim only, under sim_only/: the ResetSim service (task + seed), the true success flag
  (std_msgs/Bool), and the task's scripted-expert action for the current state
  (world4rl_msgs/Action on sim_only/expert_action, for expert_demonstrator), which never exist
  on the real robot.

Parts: this node is the ROS interface (parameters, endpoints, message conversion); the simulation
thread, which owns MuJoCo and its OpenGL context and paces physics to the wall clock, is
sim_stepper.SimStepper; the commands it carries out are sim_commands; the gripper actions are
gripper_action_servers. ROS callbacks (executor threads) only hand commands over.

QoS (chosen to match what the real drivers offer and to connect with any subscriber):
- camera image and info: RELIABLE, KEEP_LAST depth 2, volatile. A reliable publisher matches
  both reliable subscribers (the episode recorder must not lose frames) and best-effort ones
  (rviz, sensor-data QoS); on one host the workspace's Fast DDS profile moves frames through
  shared memory (3 ms p50, no drops at 30-200 Hz measured), so reliability costs little, and
  depth 2 bounds the memory a slow subscriber can hold up. realsense2_camera's default
  (SYSTEM_DEFAULT) is reliable as well.
- joint_states: RELIABLE, KEEP_LAST 10 (what joint_state_broadcaster uses).
- trajectory input: RELIABLE, KEEP_LAST 10 (the controller's subscription).
- clock: RELIABLE, KEEP_LAST 1 (only the latest time matters; matches rclpy's best-effort clock
  subscription too).
- sim_only/success: RELIABLE, TRANSIENT_LOCAL, depth 1: a late subscriber (an evaluator that
  starts after the episode) gets the last value at once.
"""

from __future__ import annotations

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from world4rl_msgs.msg import Action
from world4rl_msgs.srv import ResetSim
from world4rl_ros.node_main import run_node
from world4rl_sim.gripper_action_servers import GripperActionServers
from world4rl_sim.robot import ALL_JOINT_NAMES
from world4rl_sim.scene import FRONT_CAMERA, RenderConfig
from world4rl_sim.sim_commands import GRIPPER_WIDTH_TOLERANCE_M, PHYSICS_CHUNK_S
from world4rl_sim.sim_stepper import SimOutputs, SimStepper, StepperConfig
from world4rl_sim.tasks import TASKS
from world4rl_spec import (
    CAMERA_FPS,
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    CONTROL_RATE_HZ,
    GRIPPER_SPEED_M_S,
    topics,
)

IMAGE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=2)
STATE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
CLOCK_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)
LATCHED_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# name: (default, description). Defaults here equal config/sim_robot.yaml.
PARAMETERS: dict[str, tuple[object, str]] = {
    "task": (TASKS[0], f"task loaded at start, one of {', '.join(TASKS)}"),
    "seed": (0, "seed of the first episode's randomisation; negative draws a fresh one"),
    "real_time_factor": (1.0, "simulated seconds per wall-clock second"),
    "physics_chunk_s": (
        PHYSICS_CHUNK_S,
        "physics advances in chunks of this length (rounded to whole 4 ms steps); commands are sampled per chunk",
    ),
    "joint_state_rate_hz": (100.0, "rate of joint_states"),
    "camera_rate_hz": (CAMERA_FPS, "rate of the camera image and camera_info; 0 disables the camera"),
    "camera_width": (CAMERA_WIDTH, "camera image width [px]"),
    "camera_height": (CAMERA_HEIGHT, "camera image height [px]"),
    "camera_name": (FRONT_CAMERA, "MuJoCo camera to publish: 'front' (fixed) or 'wrist'"),
    "camera_frame_id": ("camera_color_optical_frame", "frame_id of image and camera_info (realsense2_camera's)"),
    "success_rate_hz": (10.0, "rate of the sim-only success flag"),
    "clock_rate_hz": (
        100.0,
        "rate of clock (/clock in the root namespace), the simulated time since the node started (monotonic "
        "across resets), which the drivers measure episodes on; 0 disables",
    ),
    "expert_action_rate_hz": (
        CONTROL_RATE_HZ,
        "rate of the scripted expert's action on the sim-only expert topic (for expert_demonstrator); 0 disables",
    ),
    "low_poly": (True, "draw the arm's low-poly collision meshes (~10x faster on CPU) instead of visual meshes"),
    "gripper_default_speed": (GRIPPER_SPEED_M_S, "finger speed [m/s] when a goal gives speed <= 0"),
    "gripper_width_tolerance": (
        GRIPPER_WIDTH_TOLERANCE_M,
        "a move succeeds when the width ends within this of the goal [m]",
    ),
}


class SimRobotNode(Node):
    """The sim robot's ROS interface: parameters, topics, the reset service and the gripper
    actions in front of the simulation thread."""

    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.params = p
        if p["task"] not in TASKS:
            raise ValueError(f"parameter task={p['task']!r} is not one of {', '.join(TASKS)}")
        self._camera_k: np.ndarray | None = None  # the intrinsics self._camera_info was made from
        self._camera_info: CameraInfo | None = None
        self.stepper = SimStepper(
            self._stepper_config(p),
            publish=self._publish,
            now_s=lambda: self.get_clock().now().nanoseconds * 1e-9,
            logger=self.get_logger(),
            trajectory_topic=self.resolve_topic_name(topics.ARM_TRAJECTORY),
        )

        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, STATE_QOS)
        self.image_pub = self.create_publisher(Image, topics.CAMERA_IMAGE, IMAGE_QOS)
        self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO, IMAGE_QOS)
        self.success_pub = self.create_publisher(Bool, topics.SIM_SUCCESS, LATCHED_QOS)
        self.expert_pub = self.create_publisher(Action, topics.SIM_EXPERT_ACTION, STATE_QOS)
        self.clock_pub = self.create_publisher(Clock, topics.SIM_CLOCK, CLOCK_QOS)
        group = ReentrantCallbackGroup()
        self.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self.stepper.command_trajectory, STATE_QOS)
        self.create_service(ResetSim, topics.SIM_RESET, self._on_reset, callback_group=group)
        self.gripper = GripperActionServers(
            self, self.stepper, p["gripper_default_speed"], p["gripper_width_tolerance"], group
        )

        sim = self.stepper.start(timeout=60.0)
        self.get_logger().info(
            f"sim_robot: task '{sim.task_name}' seed {sim.seed}; camera {p['camera_width']}x"
            f"{p['camera_height']} at {p['camera_rate_hz']} Hz, joint states at {p['joint_state_rate_hz']} Hz"
        )

    @staticmethod
    def _stepper_config(p: dict) -> StepperConfig:
        rates = {
            "joints": p["joint_state_rate_hz"],
            "camera": p["camera_rate_hz"],
            "success": p["success_rate_hz"],
            "expert": p["expert_action_rate_hz"],
            "clock": p["clock_rate_hz"],
        }
        return StepperConfig(
            task=p["task"],
            seed=None if int(p["seed"]) < 0 else int(p["seed"]),
            render=RenderConfig(low_poly=bool(p["low_poly"])),
            real_time_factor=float(p["real_time_factor"]),
            physics_chunk_s=float(p["physics_chunk_s"]),
            rates_hz={k: float(v) for k, v in rates.items()},
            camera_width=int(p["camera_width"]),
            camera_height=int(p["camera_height"]),
            camera_name=p["camera_name"],
        )

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        result = self.stepper.reset(request.task, int(request.seed), timeout=30.0)
        response.ok, response.message = result.ok, result.message
        response.task, response.seed = result.task, result.seed
        return response

    # ----------------------------------------------------------------------------- outputs (sim thread)
    def _publish(self, out: SimOutputs) -> None:
        """What the simulation thread found due, as messages. Once ROS has shut down (Ctrl-C reaches
        rclpy before the node's shutdown() stops this thread) the thread ends quietly."""
        try:
            self._publish_outputs(out)
        except Exception:
            if self.context.ok():
                raise
            self.stepper.request_stop()

    def _publish_outputs(self, out: SimOutputs) -> None:
        stamp = self.get_clock().now().to_msg()  # one stamp for this pass
        if out.clock_ns is not None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(out.clock_ns, 1_000_000_000)
            self.clock_pub.publish(clock)
        if out.joints is not None:
            self.joint_pub.publish(self._joint_state_msg(*out.joints, stamp))
        if out.image is not None:
            self._publish_image(out.image, out.camera_k, stamp)
        if out.success is not None:
            self.success_pub.publish(Bool(data=bool(out.success)))
        if out.expert is not None:
            msg = Action(values=[float(v) for v in out.expert], source="expert")
            msg.header.stamp = stamp
            self.expert_pub.publish(msg)

    @staticmethod
    def _joint_state_msg(positions, velocities, efforts, stamp) -> JointState:
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(ALL_JOINT_NAMES)
        msg.position = positions.tolist()
        msg.velocity = velocities.tolist()
        msg.effort = efforts.tolist()
        return msg

    def _make_camera_info(self, k: np.ndarray) -> CameraInfo:
        p = self.params
        info = CameraInfo()
        info.header.frame_id = p["camera_frame_id"]
        info.width, info.height = int(p["camera_width"]), int(p["camera_height"])
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = k.reshape(-1).tolist()
        info.r = np.eye(3).reshape(-1).tolist()
        info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
        return info

    def _publish_image(self, image: np.ndarray, k: np.ndarray, stamp) -> None:
        msg = Image()
        msg.header.stamp = stamp
        msg.header.frame_id = self.params["camera_frame_id"]
        msg.height, msg.width = image.shape[:2]
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = image.shape[1] * 3
        # bytes, never a numpy array: rclpy converts an array element by element (~50 ms a frame).
        msg.data = image.tobytes()
        self.image_pub.publish(msg)
        if k is not self._camera_k:  # the stepper makes new intrinsics only at a reset
            self._camera_k, self._camera_info = k, self._make_camera_info(k)
        self._camera_info.header.stamp = stamp
        self.info_pub.publish(self._camera_info)

    def shutdown(self) -> None:
        self.stepper.stop(timeout=5.0)


def main(args=None) -> None:
    run_node(SimRobotNode, args=args, threads=4)


if __name__ == "__main__":
    main()

"""ROS 2 node `sim_robot`: the embedded robot, on the topics the real Franka and RealSense use.

It runs FrankaSim in real time and looks to the rest of the stack like the hardware:
- publishes sensor_msgs/JointState on /joint_states (fr3_joint1..7 in Franka's convention, plus
  fr3_finger_joint1/2, each half the gripper width, as franka_gripper publishes them);
- publishes the fixed camera as realsense2_camera does: sensor_msgs/Image (rgb8) on
  /camera/camera/color/image_raw and sensor_msgs/CameraInfo on .../camera_info, same stamp,
  frame_id `camera_color_optical_frame`;
- takes trajectory_msgs/JointTrajectory on /fr3_arm_controller/joint_trajectory like the
  franka_ros2 joint trajectory controller: all seven arm joints, in any order; positions are
  interpolated over time_from_start (linearly, or cubic Hermite when every point has
  velocities), starting from the current command at header.stamp (zero stamp: on receipt);
  a new trajectory replaces the running one; an empty one holds the current command;
- offers the franka_gripper actions move / grasp / homing (world4rl_msgs/action/Gripper*, the
  same fields as franka_msgs) on /franka_gripper/{move,grasp,homing};
- publishes the simulated time on /clock (rosgraph_msgs/Clock, as Gazebo does), counted from the
  node's start and monotonic across resets: a sim that falls behind real time slows this clock,
  and the drivers (`world4rl collect`, `world4rl deploy`) measure episode lengths on it;
- sim only, under /sim_only: the ResetSim service (task + seed), the true success flag
  (std_msgs/Bool), and the task's scripted-expert action for the current state
  (world4rl_msgs/Action on /sim_only/expert_action, for expert_demonstrator), which never exist
  on the real robot.

Threads: one simulation thread owns MuJoCo and its OpenGL context. It advances physics to
the wall clock (times real_time_factor), samples the active trajectory and the gripper ramp
every physics chunk, and publishes at the configured rates. ROS callbacks (executor threads)
only hand commands over, under one lock.

QoS (chosen to match what the real drivers offer and to connect with any subscriber):
- camera image and info: RELIABLE, KEEP_LAST depth 2, volatile. A reliable publisher matches
  both reliable subscribers (the episode recorder must not lose frames) and best-effort ones
  (rviz, sensor-data QoS); on one host the workspace's Fast DDS profile moves frames through
  shared memory (3 ms p50, no drops at 30-200 Hz measured), so reliability costs little, and
  depth 2 bounds the memory a slow subscriber can hold up. realsense2_camera's default
  (SYSTEM_DEFAULT) is reliable as well.
- /joint_states: RELIABLE, KEEP_LAST 10 (what joint_state_broadcaster uses).
- trajectory input: RELIABLE, KEEP_LAST 10 (the controller's subscription).
- /clock: RELIABLE, KEEP_LAST 1 (only the latest time matters; matches rclpy's best-effort clock
  subscription too).
- /sim_only/success: RELIABLE, TRANSIENT_LOCAL, depth 1: a late subscriber (an evaluator that
  starts after the episode) gets the last value at once.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from world4rl_msgs.action import GripperGrasp, GripperHoming, GripperMove
from world4rl_msgs.msg import Action
from world4rl_msgs.srv import ResetSim
from world4rl_sim.robot import ALL_JOINT_NAMES
from world4rl_sim.scene import FRONT_CAMERA, RenderConfig, camera_intrinsics
from world4rl_sim.sim import FrankaSim
from world4rl_sim.tasks import TASKS
from world4rl_spec import (
    ARM_JOINT_NAMES,
    CAMERA_FPS,
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    CONTROL_RATE_HZ,
    GRIPPER_OPEN_WIDTH_M,
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
        0.008,
        "physics advances in chunks of this length (rounded to whole 4 ms steps); commands are sampled per chunk",
    ),
    "joint_state_rate_hz": (100.0, "rate of /joint_states"),
    "camera_rate_hz": (CAMERA_FPS, "rate of the camera image and camera_info; 0 disables the camera"),
    "camera_width": (CAMERA_WIDTH, "camera image width [px]"),
    "camera_height": (CAMERA_HEIGHT, "camera image height [px]"),
    "camera_name": (FRONT_CAMERA, "MuJoCo camera to publish: 'front' (fixed) or 'wrist'"),
    "camera_frame_id": ("camera_color_optical_frame", "frame_id of image and camera_info (realsense2_camera's)"),
    "success_rate_hz": (10.0, "rate of the sim-only success flag"),
    "clock_rate_hz": (
        100.0,
        "rate of /clock, the simulated time since the node started (monotonic across resets), which the "
        "drivers measure episodes on; 0 disables",
    ),
    "expert_action_rate_hz": (
        CONTROL_RATE_HZ,
        "rate of the scripted expert's action on the sim-only expert topic (for expert_demonstrator); 0 disables",
    ),
    "low_poly": (True, "draw the arm's low-poly collision meshes (~10x faster on CPU) instead of visual meshes"),
    "gripper_default_speed": (0.1, "finger speed [m/s] when a goal gives speed <= 0"),
    "gripper_width_tolerance": (0.005, "a move succeeds when the width ends within this of the goal [m]"),
}


@dataclass
class Trajectory:
    """A joint trajectory in sim time, arm joints in ARM_JOINT_NAMES order (FR3 convention)."""

    start: float  # sim time of time_from_start = 0
    times: np.ndarray  # (N + 1,) seconds, times[0] = 0 (the current command)
    positions: np.ndarray  # (N + 1, 7)
    velocities: np.ndarray | None  # (N + 1, 7) for cubic Hermite, else linear

    def sample(self, t: float) -> tuple[np.ndarray, bool]:
        """Position command at sim time t, and whether the trajectory has ended."""
        s = t - self.start
        if s <= 0.0:
            return self.positions[0], False
        if s >= self.times[-1]:
            return self.positions[-1], True
        i = int(np.searchsorted(self.times, s, side="right")) - 1
        h = self.times[i + 1] - self.times[i]
        u = (s - self.times[i]) / h
        p0, p1 = self.positions[i], self.positions[i + 1]
        if self.velocities is None:
            return p0 + (p1 - p0) * u, False
        v0, v1 = self.velocities[i] * h, self.velocities[i + 1] * h
        h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
        return h00 * p0 + h10 * v0 + h01 * p1 + h11 * v1, False


@dataclass
class GripperGoal:
    """An active gripper motion; the sim thread ramps the width target and reports the outcome."""

    kind: str  # "move", "grasp" or "homing"
    target: float  # width the finger target ramps to [m]
    speed: float  # [m/s]
    accept_low: float  # success if the settled width is within [accept_low, accept_high]
    accept_high: float
    deadline: float  # sim time after which the goal fails
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    error: str = ""
    width: float = 0.0
    settled_since: float | None = None


def parse_trajectory(msg: JointTrajectory, current: np.ndarray, start: float) -> Trajectory:
    """Validate a JointTrajectory and reorder it to ARM_JOINT_NAMES; raises ValueError with the reason."""
    names = list(msg.joint_names)
    missing = [n for n in ARM_JOINT_NAMES if n not in names]
    if missing:
        raise ValueError(f"joint_names lacks {missing} (got {names})")
    unknown = [n for n in names if n not in ARM_JOINT_NAMES]
    if unknown:
        raise ValueError(f"unknown joints {unknown}; this controller commands {list(ARM_JOINT_NAMES)}")
    order = [names.index(n) for n in ARM_JOINT_NAMES]
    times, positions, velocities = [0.0], [np.asarray(current, float)], []
    use_velocities = all(len(p.velocities) == len(names) for p in msg.points)
    for k, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise ValueError(f"point {k} has {len(point.positions)} positions for {len(names)} joints")
        t = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        if t <= times[-1]:
            raise ValueError(
                f"point {k}: time_from_start {t:.3f} s is not after the previous point's {times[-1]:.3f} s"
            )
        p = np.asarray(point.positions, float)[order]
        if not np.all(np.isfinite(p)):
            raise ValueError(f"point {k} has non-finite positions")
        times.append(t)
        positions.append(p)
        if use_velocities:
            velocities.append(np.asarray(point.velocities, float)[order])
    vel = np.array([np.zeros(7), *velocities]) if use_velocities else None
    return Trajectory(start=start, times=np.array(times), positions=np.array(positions), velocities=vel)


class SimRobotNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.params = p
        if p["task"] not in TASKS:
            raise ValueError(f"parameter task={p['task']!r} is not one of {', '.join(TASKS)}")
        seed = None if int(p["seed"]) < 0 else int(p["seed"])

        self.lock = threading.Lock()
        self.sim: FrankaSim | None = None  # created on the sim thread (it owns the GL context)
        self._init_args = (p["task"], seed, RenderConfig(low_poly=bool(p["low_poly"])))
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._stop = threading.Event()
        self._trajectory: Trajectory | None = None
        self._pending_trajectory: JointTrajectory | None = None
        self._gripper_goal: GripperGoal | None = None
        self._reset_requests: list[tuple[ResetSim.Request, threading.Event, dict]] = []

        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, STATE_QOS)
        self.image_pub = self.create_publisher(Image, topics.CAMERA_IMAGE, IMAGE_QOS)
        self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO, IMAGE_QOS)
        self.success_pub = self.create_publisher(Bool, topics.SIM_SUCCESS, LATCHED_QOS)
        self.expert_pub = self.create_publisher(Action, topics.SIM_EXPERT_ACTION, STATE_QOS)
        self.clock_pub = self.create_publisher(Clock, topics.SIM_CLOCK, CLOCK_QOS)
        self._clock_ns = 0  # simulated time since start; data.time restarts at every reset
        group = ReentrantCallbackGroup()
        self.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, STATE_QOS)
        self.create_service(ResetSim, topics.SIM_RESET, self._on_reset, callback_group=group)
        self._action_servers = [
            ActionServer(
                self,
                action_type,
                topic,
                execute_callback=execute,
                goal_callback=lambda _goal: GoalResponse.ACCEPT,
                cancel_callback=lambda _handle: CancelResponse.ACCEPT,
                callback_group=group,
            )
            for action_type, topic, execute in (
                (GripperMove, topics.GRIPPER_MOVE, self._execute_move),
                (GripperGrasp, topics.GRIPPER_GRASP, self._execute_grasp),
                (GripperHoming, topics.GRIPPER_HOMING, self._execute_homing),
            )
        ]

        self._thread = threading.Thread(target=self._run, name="sim_robot_physics", daemon=True)
        self._thread.start()
        if not self._ready.wait(60.0) or self._init_error is not None:
            raise RuntimeError(f"the simulation failed to start: {self._init_error!r}")
        self.get_logger().info(
            f"sim_robot: task '{self.sim.task_name}' seed {self.sim.seed}; camera {p['camera_width']}x"
            f"{p['camera_height']} at {p['camera_rate_hz']} Hz, joint states at {p['joint_state_rate_hz']} Hz"
        )

    # ----------------------------------------------------------------------------- callbacks
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.lock:
            self._pending_trajectory = msg

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        done, result = threading.Event(), {}
        with self.lock:
            self._reset_requests.append((request, done, result))
        if not done.wait(30.0):
            response.ok, response.message = False, "the simulation thread did not answer within 30 s"
            return response
        response.ok = result["ok"]
        response.message = result["message"]
        response.task = result["task"]
        response.seed = result["seed"]
        return response

    def _execute_move(self, goal_handle):
        g = goal_handle.request
        width = float(g.width)
        if not 0.0 <= width <= GRIPPER_OPEN_WIDTH_M:
            return self._finish(goal_handle, GripperMove.Result(), False, f"width {width} outside [0, 0.08] m")
        tol = float(self.params["gripper_width_tolerance"])
        return self._run_gripper_goal(goal_handle, GripperMove, "move", width, g.speed, width - tol, width + tol)

    def _execute_grasp(self, goal_handle):
        g = goal_handle.request
        # Like franka_gripper: close on the object (fingers driven to zero width, the position servo
        # then squeezes), success if the width where the fingers stop is within the epsilons.
        low, high = float(g.width) - float(g.epsilon_inner), float(g.width) + float(g.epsilon_outer)
        return self._run_gripper_goal(goal_handle, GripperGrasp, "grasp", 0.0, g.speed, low, high)

    def _execute_homing(self, goal_handle):
        tol = float(self.params["gripper_width_tolerance"])
        w = GRIPPER_OPEN_WIDTH_M
        return self._run_gripper_goal(goal_handle, GripperHoming, "homing", w, 0.0, w - tol, w + tol)

    def _run_gripper_goal(self, goal_handle, action_type, kind, target, speed, low, high):
        speed = float(speed) if speed > 0 else float(self.params["gripper_default_speed"])
        with self.lock:
            t_now = self.sim.time
            previous = self._gripper_goal
            if previous is not None and not previous.done.is_set():
                previous.error = f"preempted by a new {kind} goal"
                previous.done.set()
            span = abs(target - self.sim.gripper_width())
            goal = GripperGoal(kind, target, speed, low, high, deadline=t_now + span / speed + 3.0)
            self._gripper_goal = goal
        feedback = action_type.Feedback()
        while not goal.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                with self.lock:
                    goal.error = "canceled"
                    goal.done.set()
                    self.sim.set_gripper_width(self.sim.gripper_width())
                goal_handle.canceled()
                result = action_type.Result(success=False, error="canceled")
                return result
            if self._stop.is_set():
                break
            feedback.current_width = float(goal.width)
            goal_handle.publish_feedback(feedback)
        return self._finish(goal_handle, action_type.Result(), goal.success, goal.error)

    @staticmethod
    def _finish(goal_handle, result, success: bool, error: str):
        result.success = bool(success)
        result.error = error
        if success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # ----------------------------------------------------------------------------- sim thread
    def _run(self) -> None:
        try:
            task, seed, render = self._init_args
            self.sim = FrankaSim(task, seed=seed, render=render)
            self._camera_info = self._make_camera_info()
        except BaseException as err:
            self._init_error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except Exception as err:
            self.get_logger().fatal(f"simulation thread died: {err!r}")
            raise
        finally:
            self.sim.close()

    def _loop(self) -> None:
        p = self.params
        sim = self.sim
        dt = sim.model.opt.timestep
        chunk = max(1, round(float(p["physics_chunk_s"]) / dt))
        rtf = float(p["real_time_factor"])
        periods = {
            "joints": 1.0 / float(p["joint_state_rate_hz"]) if p["joint_state_rate_hz"] > 0 else math.inf,
            "camera": 1.0 / float(p["camera_rate_hz"]) if p["camera_rate_hz"] > 0 else math.inf,
            "success": 1.0 / float(p["success_rate_hz"]) if p["success_rate_hz"] > 0 else math.inf,
            "expert": 1.0 / float(p["expert_action_rate_hz"]) if p["expert_action_rate_hz"] > 0 else math.inf,
            "clock": 1.0 / float(p["clock_rate_hz"]) if p["clock_rate_hz"] > 0 else math.inf,
        }
        chunk_ns = round(chunk * dt * 1e9)
        wall0, sim0 = time.monotonic(), sim.time
        next_pub = dict.fromkeys(periods, wall0)
        behind_warned = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            target = sim0 + (now - wall0) * rtf
            with self.lock:
                if self._handle_commands():
                    # A reset restarts data.time at 0: re-anchor, so the new episode starts in real time
                    # instead of racing through 20 chunks to catch up with the old anchor.
                    wall0, sim0 = now, sim.time
                    target = sim0
                steps = 0
                while sim.time + chunk * dt <= target + 1e-9 and steps < 20:
                    self._apply_commands(sim.time + chunk * dt)
                    sim.step_physics(chunk)
                    self._clock_ns += chunk_ns
                    steps += 1
                if sim.time + 0.1 < target:
                    # Fell behind by > 0.1 s (an overloaded machine): re-anchor instead of racing.
                    wall0, sim0 = now, sim.time
                    if now - behind_warned > 5.0:
                        self.get_logger().warning("simulation cannot keep up with real time; slowing down")
                        behind_warned = now
                publish = {k for k, t in next_pub.items() if now >= t}
                joints = self._joint_state_msg() if "joints" in publish else None
                image = None
                if "camera" in publish:
                    image = sim.render(int(p["camera_width"]), int(p["camera_height"]), p["camera_name"])
                success = sim.success() if "success" in publish else None
                clock_ns = self._clock_ns
                expert = None
                if "expert" in publish:
                    # The arm is driven through joint trajectories here: the expert steers from the
                    # end-effector position the last trajectory is heading for.
                    goal = self._trajectory.positions[-1] if self._trajectory is not None else sim.arm_targets()
                    sim.aim_ee_target_at(goal)
                    expert = sim.expert_action()
            stamp = self.get_clock().now().to_msg()
            if "clock" in publish:
                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(clock_ns, 1_000_000_000)
                self.clock_pub.publish(clock)
            if joints is not None:
                joints.header.stamp = stamp
                self.joint_pub.publish(joints)
            if image is not None:
                self._publish_image(image, stamp)
            if success is not None:
                self.success_pub.publish(Bool(data=bool(success)))
            if expert is not None:
                msg = Action(values=[float(v) for v in expert], source="expert")
                msg.header.stamp = stamp
                self.expert_pub.publish(msg)
            for k in publish:
                # Keep the phase; skip missed ticks rather than bursting.
                next_pub[k] = max(next_pub[k] + periods[k], now)
            wake = min(min(next_pub.values()), wall0 + (sim.time + chunk * dt - sim0) / rtf)
            time.sleep(max(0.0, wake - time.monotonic()))

    def _handle_commands(self) -> bool:
        """Resets and new trajectories (called with the lock held); True if the sim was reset."""
        sim = self.sim
        was_reset = False
        while self._reset_requests:
            request, done, result = self._reset_requests.pop(0)
            task = request.task or sim.task_name
            if task not in TASKS:
                result.update(ok=False, message=f"unknown task {task!r}; known: {', '.join(TASKS)}")
                result.update(task=sim.task_name, seed=sim.seed)
            else:
                seed = None if request.seed < 0 else int(request.seed)
                used = sim.reset(seed=seed, task=task)
                was_reset = True
                self._trajectory = None
                if self._gripper_goal is not None and not self._gripper_goal.done.is_set():
                    self._gripper_goal.error = "aborted by a simulation reset"
                    self._gripper_goal.done.set()
                self._gripper_goal = None
                self._camera_info = self._make_camera_info()
                result.update(ok=True, message=f"reset to task '{task}' with seed {used}", task=task, seed=used)
            done.set()
        if self._pending_trajectory is not None:
            msg, self._pending_trajectory = self._pending_trajectory, None
            if not msg.points:
                self._trajectory = None  # hold the current command
                sim.set_arm_targets(sim.arm_targets())
                return was_reset
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            delay = 0.0
            if stamp > 0.0:
                now = self.get_clock().now().nanoseconds * 1e-9
                delay = max(0.0, stamp - now) * float(self.params["real_time_factor"])
            try:
                self._trajectory = parse_trajectory(msg, sim.arm_targets(), sim.time + delay)
            except ValueError as err:
                self.get_logger().error(f"rejected trajectory on {topics.ARM_TRAJECTORY}: {err}")
        return was_reset

    def _apply_commands(self, t: float) -> None:
        """Set the joint and finger targets for the physics chunk that ends at sim time t."""
        sim = self.sim
        if self._trajectory is not None:
            q, finished = self._trajectory.sample(t)
            sim.set_arm_targets(q)
            if finished:
                self._trajectory = None
        goal = self._gripper_goal
        if goal is None or goal.done.is_set():
            return
        width = sim.gripper_width()
        goal.width = width
        current = sim.gripper_target_width()
        step = goal.speed * (t - sim.time)
        ramp_done = abs(goal.target - current) <= step
        sim.set_gripper_width(goal.target if ramp_done else current + math.copysign(step, goal.target - current))
        finger_speed = float(np.abs(sim.joint_velocities()[7:]).sum())
        if ramp_done and finger_speed < 0.002:
            goal.settled_since = goal.settled_since if goal.settled_since is not None else t
        else:
            goal.settled_since = None
        settled = goal.settled_since is not None and t - goal.settled_since >= 0.1
        if settled or t > goal.deadline:
            goal.success = goal.accept_low <= width <= goal.accept_high
            if not goal.success:
                goal.error = (
                    f"{goal.kind}: fingers stopped at width {width:.4f} m, outside "
                    f"[{goal.accept_low:.4f}, {goal.accept_high:.4f}] m"
                )
            if goal.kind == "move" and not goal.success:
                sim.set_gripper_width(width)  # like franka_gripper: a blocked move stops where it is
            goal.done.set()

    def _joint_state_msg(self) -> JointState:
        sim = self.sim
        msg = JointState()
        msg.name = list(ALL_JOINT_NAMES)
        msg.position = sim.joint_positions().tolist()
        msg.velocity = sim.joint_velocities().tolist()
        msg.effort = sim.joint_efforts().tolist()
        return msg

    def _make_camera_info(self) -> CameraInfo:
        p = self.params
        w, h = int(p["camera_width"]), int(p["camera_height"])
        k = camera_intrinsics(self.sim.model, p["camera_name"], w, h)
        info = CameraInfo()
        info.header.frame_id = p["camera_frame_id"]
        info.width, info.height = w, h
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = k.reshape(-1).tolist()
        info.r = np.eye(3).reshape(-1).tolist()
        info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
        return info

    def _publish_image(self, image: np.ndarray, stamp) -> None:
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
        self._camera_info.header.stamp = stamp
        self.info_pub.publish(self._camera_info)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = SimRobotNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()

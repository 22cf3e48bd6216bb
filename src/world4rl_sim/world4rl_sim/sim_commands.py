"""The commands the sim robot carries out, without ROS: joint trajectories (as franka_ros2's joint
trajectory controller takes them) and gripper goals (as franka_gripper's move / grasp / homing
actions). Both are sampled once per physics chunk, in sim time, by a CommandPlayer: the sim robot
node's simulation thread (sim_stepper) plays them in real time, the bringup package's lockstep
runtime (world4rl_bringup.runtime_timing) in simulated time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from world4rl_spec import ARM_JOINT_NAMES

# The sim robot node's defaults (its parameters physics_chunk_s and gripper_width_tolerance).
PHYSICS_CHUNK_S = 0.008  # commands are sampled once per chunk of physics this long (two 4 ms steps)
GRIPPER_WIDTH_TOLERANCE_M = 0.005  # a move goal succeeds when the fingers stop within this of its width


@dataclass
class Trajectory:
    """A joint trajectory in sim time, arm joints in ARM_JOINT_NAMES order (FR3 convention)."""

    start: float  # sim time of time_from_start = 0
    times: np.ndarray  # (N + 1,) seconds, times[0] = 0 (the current command)
    positions: np.ndarray  # (N + 1, 7)
    velocities: np.ndarray | None  # (N + 1, 7) for cubic Hermite, else linear

    def velocity(self, t: float) -> np.ndarray:
        """The commanded joint velocity at sim time t (zero outside the trajectory)."""
        s = t - self.start
        if s <= 0.0 or s >= self.times[-1]:
            return np.zeros(self.positions.shape[1])
        i = int(np.searchsorted(self.times, s, side="right")) - 1
        h = self.times[i + 1] - self.times[i]
        p0, p1 = self.positions[i], self.positions[i + 1]
        if self.velocities is None:
            return (p1 - p0) / h
        u = (s - self.times[i]) / h
        v0, v1 = self.velocities[i] * h, self.velocities[i + 1] * h
        d00, d10, d01, d11 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
        return (d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1) / h

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


def parse_trajectory(msg, current: np.ndarray, start: float, current_velocity: np.ndarray | None = None) -> Trajectory:
    """Validate a trajectory_msgs/JointTrajectory and reorder it to ARM_JOINT_NAMES; raises
    ValueError with the reason. It starts from the current command and, when its points carry
    velocities, from `current_velocity` (the running trajectory's), as the joint trajectory
    controller starts a new trajectory from its current desired state."""
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
    start_velocity = np.zeros(7) if current_velocity is None else np.asarray(current_velocity, float)
    vel = np.array([start_velocity, *velocities]) if use_velocities else None
    return Trajectory(start=start, times=np.array(times), positions=np.array(positions), velocities=vel)


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

    def advance(self, sim, t: float) -> None:
        """Ramp the finger target for the physics chunk that ends at sim time t; once the fingers
        have settled for 0.1 s (or the deadline passed) judge the width and set `done`."""
        width = sim.gripper_width()
        self.width = width
        ramp_done = sim.ramp_gripper_width(self.target, self.speed * (t - sim.time))
        finger_speed = float(np.abs(sim.joint_velocities()[7:]).sum())
        if ramp_done and finger_speed < 0.002:
            self.settled_since = self.settled_since if self.settled_since is not None else t
        else:
            self.settled_since = None
        settled = self.settled_since is not None and t - self.settled_since >= 0.1
        if settled or t > self.deadline:
            self.success = self.accept_low <= width <= self.accept_high
            if not self.success:
                self.error = (
                    f"{self.kind}: fingers stopped at width {width:.4f} m, outside "
                    f"[{self.accept_low:.4f}, {self.accept_high:.4f}] m"
                )
            if self.kind == "move" and not self.success:
                sim.set_gripper_width(width)  # like franka_gripper: a blocked move stops where it is
            self.done.set()


class CommandPlayer:
    """The running joint trajectory and gripper goal of one FrankaSim, sampled once per physics chunk.
    Not thread-safe: its owner serialises the calls (the sim stepper holds its lock)."""

    def __init__(self) -> None:
        self.trajectory: Trajectory | None = None
        self.gripper_goal: GripperGoal | None = None

    def take_trajectory(self, sim, msg, start: float) -> None:
        """A trajectory_msgs/JointTrajectory starting at sim time `start` replaces the running one
        (empty: hold the current command); ValueError (nothing changed) if it is malformed."""
        if not msg.points:
            self.trajectory = None
            sim.set_arm_targets(sim.arm_targets())
            return
        running = self.trajectory.velocity(sim.time) if self.trajectory is not None else None
        self.trajectory = parse_trajectory(msg, sim.arm_targets(), start, running)

    def begin_gripper_goal(self, sim, kind: str, target: float, speed: float, low: float, high: float) -> GripperGoal:
        """Start a gripper motion, preempting the running one."""
        previous = self.gripper_goal
        if previous is not None and not previous.done.is_set():
            previous.error = f"preempted by a new {kind} goal"
            previous.done.set()
        span = abs(target - sim.gripper_width())
        self.gripper_goal = GripperGoal(kind, target, speed, low, high, deadline=sim.time + span / speed + 3.0)
        return self.gripper_goal

    def abort(self, why: str) -> None:
        """Forget the trajectory and end a running gripper goal as failed (e.g. a reset)."""
        self.trajectory = None
        goal, self.gripper_goal = self.gripper_goal, None
        if goal is not None and not goal.done.is_set():
            goal.error = why
            goal.done.set()

    def commanded_arm_targets(self, sim) -> np.ndarray:
        """Where the running trajectory leaves the arm at rest: its last point (the end of the stop
        the command path appends, in case no further command comes; without one, the command
        itself), else the current joint targets. The scripted experts steer from there: the arm is
        headed for it, as it is for the sim's own controller's end-effector target. (Steering from
        the command one period ahead, which trails the command path's target by the smoothing's lag,
        made pick_place's expert overshoot near the cube: 106/150 within 50 steps under the runtime
        timing against 138/150 from the stop's end; drawer 150 and 149, push and reach all.)"""
        return self.trajectory.positions[-1] if self.trajectory is not None else sim.arm_targets()

    def apply(self, sim, t: float) -> None:
        """Set the joint and finger targets for the physics chunk that ends at sim time t."""
        if self.trajectory is not None:
            q, finished = self.trajectory.sample(t)
            sim.set_arm_targets(q)
            if finished:
                self.trajectory = None
        goal = self.gripper_goal
        if goal is not None and not goal.done.is_set():
            goal.advance(sim, t)

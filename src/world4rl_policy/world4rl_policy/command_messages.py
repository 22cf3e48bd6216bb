"""The arm's command messages, built without rclpy: a JointTrajectory for franka_ros2's joint
trajectory controller or a Float64MultiArray for forward position controllers. The policy nodes
publish them (ros_adapters.ArmCommandPublisher); the bringup package's lockstep runtime
(world4rl_bringup.runtime_timing) plays them in simulated time."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world4rl_policy.smoothing import Motion
from world4rl_spec import ARM_JOINT_NAMES


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=min(round((seconds - whole) * 1e9), 999_999_999))


def trajectory_message(command: np.ndarray, motion: Motion | None, period_s: float) -> JointTrajectory:
    """The JointTrajectory for franka_ros2's joint trajectory controller: the command one period
    from now and, with its motion (the command path's smoothing), its velocity and acceleration
    followed by its stop, so the controller interpolates a continuous, jerk-limited signal and
    ends at rest (Jazzy's controller refuses a trajectory ending in motion). Without a motion,
    one point with positions only. A zero header stamp means "start now" to the controller."""
    point = JointTrajectoryPoint(positions=[float(v) for v in command], time_from_start=_duration(period_s))
    points = [point]
    if motion is not None:
        point.velocities = [float(v) for v in motion.velocity]
        point.accelerations = [float(v) for v in motion.acceleration]
        for k, t in enumerate(motion.stop_times):
            points.append(
                JointTrajectoryPoint(
                    positions=[float(v) for v in motion.stop_positions[k]],
                    velocities=[float(v) for v in motion.stop_velocities[k]],
                    accelerations=[float(v) for v in motion.stop_accelerations[k]],
                    time_from_start=_duration(period_s + float(t)),
                )
            )
    return JointTrajectory(joint_names=list(ARM_JOINT_NAMES), points=points)


def command_message(mode: str, command: np.ndarray, motion: Motion | None, period_s: float):
    """The arm command message of `mode`: 'trajectory' (trajectory_message) or 'forward_position'
    (Float64MultiArray of the positions: the smoothed command, one per cycle)."""
    if mode == "forward_position":
        return Float64MultiArray(data=[float(v) for v in command])
    return trajectory_message(command, motion, period_s)

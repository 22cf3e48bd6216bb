"""Franka Research 3 joint names and limits, from Franka's published datasheet (franka_ros2 v3.x names)."""

import math

ARM_JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("fr3_finger_joint1", "fr3_finger_joint2")

# Joint position limits [rad].
FR3_JOINT_POSITION_MIN = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_JOINT_POSITION_MAX = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
# Joint velocity [rad/s], acceleration [rad/s^2] and jerk [rad/s^3] limits: Franka's "Limits for
# Franka Research 3" table (https://frankaemika.github.io/docs/control_parameters.html, from
# control-parameters-joint-fr3.csv in github.com/frankaemika/docs). libfranka aborts a motion whose
# commanded signal exceeds any of them (its "necessary conditions"); the command path keeps every
# command within them times the robot profile's scales (SafetyParams, world4rl_policy.smoothing).
FR3_JOINT_VELOCITY_MAX = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
FR3_JOINT_ACCELERATION_MAX = (10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0)
FR3_JOINT_JERK_MAX = (5000.0, 5000.0, 5000.0, 5000.0, 5000.0, 5000.0, 5000.0)

# franka_ros2's "ready" pose.
FR3_READY_POSE = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)

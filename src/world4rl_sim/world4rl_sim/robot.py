"""The simulated arm's joints and how they map to the FR3 convention used at every ROS boundary.

The MuJoCo model is the Franka Panda from gymnasium-robotics (kitchen_franka/franka_assets). Its
joint 6 is offset by -pi/2 from Franka's convention (its ready pose has q6 = 0 where franka_ros2
has pi/2); every other joint matches. Inside the simulator we work in model coordinates; the
functions here convert at the boundary, so nothing outside this package sees the offset.
The joint limits of the simulated arm are set to the FR3's (world4rl_spec) at build time.
"""

from __future__ import annotations

import math

import numpy as np

from world4rl_spec import (
    ARM_JOINT_NAMES,
    FINGER_JOINT_NAMES,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_READY_POSE,
)

# Joint names inside the MuJoCo model, in the order of ARM_JOINT_NAMES / FINGER_JOINT_NAMES.
MODEL_ARM_JOINTS = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
MODEL_FINGER_JOINTS = ("robot:panda0_finger_joint1", "robot:panda0_finger_joint2")
MODEL_ARM_ACTUATORS = tuple(f"panda0_joint{i}" for i in range(1, 8))
MODEL_FINGER_ACTUATORS = ("r_gripper_finger_joint", "l_gripper_finger_joint")

# fr3 = model + FR3_FROM_MODEL_OFFSET (only joint 6 differs).
FR3_FROM_MODEL_OFFSET = np.array([0.0, 0.0, 0.0, 0.0, 0.0, math.pi / 2, 0.0])

FR3_Q_MIN = np.array(FR3_JOINT_POSITION_MIN)
FR3_Q_MAX = np.array(FR3_JOINT_POSITION_MAX)
FR3_READY = np.array(FR3_READY_POSE)

ALL_JOINT_NAMES = (*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES)

# Each finger moves half the gripper width; a finger joint reads 0 closed .. 0.04 m open.
FINGER_MAX_M = 0.04


def model_to_fr3(q_model) -> np.ndarray:
    """Arm joint positions (7,) or (..., 7): MuJoCo model convention -> FR3 convention."""
    return np.asarray(q_model, dtype=float) + FR3_FROM_MODEL_OFFSET


def fr3_to_model(q_fr3) -> np.ndarray:
    """Arm joint positions (7,) or (..., 7): FR3 convention -> MuJoCo model convention."""
    return np.asarray(q_fr3, dtype=float) - FR3_FROM_MODEL_OFFSET


def model_q_limits() -> tuple[np.ndarray, np.ndarray]:
    """The FR3 joint position limits expressed in model coordinates."""
    return fr3_to_model(FR3_Q_MIN), fr3_to_model(FR3_Q_MAX)

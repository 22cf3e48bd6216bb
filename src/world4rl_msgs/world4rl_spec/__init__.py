"""The ROS-free specification of the robot interface, one source of truth for the whole stack.

Topic and service names, FR3 joint names and limits, the normalised action space, image sizes
and the control rate live here. Every package may import this module, the learning core
included: it depends on nothing but the standard library. It ships inside world4rl_msgs
because that is the one package every other package is allowed to depend on.
"""

from world4rl_spec import topics
from world4rl_spec.action import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    ACTION_NAMES,
    CONTROL_RATE_HZ,
    EE_DELTA_SCALE_M,
    EE_TARGET_MAX_LEAD_M,
    GRIPPER_CLOSED_WIDTH_M,
    GRIPPER_GRASP_FORCE_N,
    GRIPPER_OPEN_WIDTH_M,
    GRIPPER_SPEED_M_S,
    GRIPPER_SWITCH_THRESHOLD,
    gripper_state_after,
)
from world4rl_spec.camera import CAMERA_FPS, CAMERA_HEIGHT, CAMERA_WIDTH, LEARNING_IMAGE_SIZE
from world4rl_spec.names import check_task_name
from world4rl_spec.robot import (
    ARM_JOINT_NAMES,
    FINGER_JOINT_NAMES,
    FR3_JOINT_ACCELERATION_MAX,
    FR3_JOINT_JERK_MAX,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_JOINT_VELOCITY_MAX,
    FR3_READY_POSE,
)

__all__ = [
    "ACTION_DIM",
    "ACTION_HIGH",
    "ACTION_LOW",
    "ACTION_NAMES",
    "ARM_JOINT_NAMES",
    "CAMERA_FPS",
    "CAMERA_HEIGHT",
    "CAMERA_WIDTH",
    "CONTROL_RATE_HZ",
    "EE_DELTA_SCALE_M",
    "EE_TARGET_MAX_LEAD_M",
    "FINGER_JOINT_NAMES",
    "FR3_JOINT_ACCELERATION_MAX",
    "FR3_JOINT_JERK_MAX",
    "FR3_JOINT_POSITION_MAX",
    "FR3_JOINT_POSITION_MIN",
    "FR3_JOINT_VELOCITY_MAX",
    "FR3_READY_POSE",
    "GRIPPER_CLOSED_WIDTH_M",
    "GRIPPER_GRASP_FORCE_N",
    "GRIPPER_OPEN_WIDTH_M",
    "GRIPPER_SPEED_M_S",
    "GRIPPER_SWITCH_THRESHOLD",
    "LEARNING_IMAGE_SIZE",
    "check_task_name",
    "gripper_state_after",
    "topics",
]

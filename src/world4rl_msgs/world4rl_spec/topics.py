"""Topic, service and action names. Real-hardware names follow franka_ros2 and realsense2_camera."""

# Robot and camera (the names the real drivers use).
JOINT_STATES = "/joint_states"
CAMERA_IMAGE = "/camera/camera/color/image_raw"
CAMERA_INFO = "/camera/camera/color/camera_info"
ARM_TRAJECTORY = "/fr3_arm_controller/joint_trajectory"
ARM_FORWARD_POSITION = "/forward_position_controller/commands"
GRIPPER_MOVE = "/franka_gripper/move"
GRIPPER_GRASP = "/franka_gripper/grasp"
GRIPPER_HOMING = "/franka_gripper/homing"
# sensor_msgs/JointState of the two fingers from franka_ros2's gripper node (the sim puts its
# fingers into JOINT_STATES instead); recorded by the episode recorder when published.
GRIPPER_JOINT_STATES = "/franka_gripper/joint_states"

# The stack's own.
# world4rl_msgs/msg/Action at the control rate: what a demonstrator (scripted expert, teleoperator)
# or a policy decided. The recorder records it; an executor turns it into arm and gripper commands.
ACTION = "/world4rl/action"
EPISODE_INFO = "/world4rl/episode_info"
POLICY_STATUS = "/world4rl/policy_status"
RECORDER_START = "/episode_recorder/start"
RECORDER_STOP = "/episode_recorder/stop"
RECORDER_DISCARD = "/episode_recorder/discard"
# std_msgs/String holding JSON with DiagnosticStatus's fields (level, message, values): the
# recorder's health, published every second and after each service call.
RECORDER_STATUS = "/episode_recorder/status"
POLICY_ARM = "/policy_runner/arm"

# Simulation only: never present on the real robot, so nothing in a deploy graph can rely on them.
SIM_RESET = "/sim_only/reset"
SIM_SUCCESS = "/sim_only/success"
# world4rl_msgs/msg/Action: the sim's scripted expert's action for the current state (it needs the
# true object poses), which the sim's demonstration node republishes on ACTION like a teleoperator.
SIM_EXPERT_ACTION = "/sim_only/expert_action"
# rosgraph_msgs/Clock: the simulated time (ROS's standard clock topic; monotonic across resets). The
# sim drivers (collect, deploy) measure episodes on it, so a sim that falls behind real time on a
# loaded machine still gives every episode its full simulated length.
SIM_CLOCK = "/clock"

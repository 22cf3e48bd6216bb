"""Topic, service and action names. Real-hardware names follow franka_ros2 and realsense2_camera.

Every name is relative (no leading slash): a node resolves it inside its own namespace, so a
namespace moves a whole graph. Started in the root namespace (the default) a node uses
/joint_states, /camera/camera/color/image_raw, ... exactly as the real drivers publish them; started
in /robot_a (`world4rl deploy --namespace robot_a`, `ros2 launch ... namespace:=robot_a`) it uses
/robot_a/joint_states and so on, and two robots share one ROS domain without crosstalk.

Episode bags store topics under `bag_topic(name)`: the name rooted at '/', without the recording
graph's namespace, so a bag and the dataset built from it look the same whichever namespace the
robot ran in.
"""

import re

# Robot and camera (the names the real drivers use, relative to the robot's namespace).
JOINT_STATES = "joint_states"
CAMERA_IMAGE = "camera/camera/color/image_raw"
CAMERA_INFO = "camera/camera/color/camera_info"
ARM_TRAJECTORY = "fr3_arm_controller/joint_trajectory"
ARM_FORWARD_POSITION = "forward_position_controller/commands"
GRIPPER_MOVE = "franka_gripper/move"
GRIPPER_GRASP = "franka_gripper/grasp"
GRIPPER_HOMING = "franka_gripper/homing"
# sensor_msgs/JointState of the two fingers from franka_ros2's gripper node (the sim puts its
# fingers into JOINT_STATES instead); recorded by the episode recorder when published.
GRIPPER_JOINT_STATES = "franka_gripper/joint_states"

# The stack's own.
# world4rl_msgs/msg/Action at the control rate: what a demonstrator (scripted expert, teleoperator)
# or a policy decided. The recorder records it; an executor turns it into arm and gripper commands.
ACTION = "world4rl/action"
EPISODE_INFO = "world4rl/episode_info"
POLICY_STATUS = "world4rl/policy_status"
RECORDER_START = "episode_recorder/start"
RECORDER_STOP = "episode_recorder/stop"
RECORDER_DISCARD = "episode_recorder/discard"
# std_msgs/String holding JSON with DiagnosticStatus's fields (level, message, values): the
# recorder's health, published every second and after each service call.
RECORDER_STATUS = "episode_recorder/status"
# std_srvs/SetBool: arm (true) or disarm (false) the policy runner / the action executor.
POLICY_ARM = "policy_runner/arm"
EXECUTOR_ARM = "action_executor/arm"
# std_srvs/Trigger: end the episode (refused while armed), so the next arming starts a new episode
# time limit; arming again without it continues the episode, whose limit keeps counting.
POLICY_NEW_EPISODE = "policy_runner/new_episode"
EXECUTOR_NEW_EPISODE = "action_executor/new_episode"

# Simulation only: never present on the real robot, so nothing in a deploy graph can rely on them.
SIM_RESET = "sim_only/reset"
SIM_SUCCESS = "sim_only/success"
# world4rl_msgs/msg/Action: the sim's scripted expert's action for the current state (it needs the
# true object poses), which the sim's demonstration node republishes on ACTION like a teleoperator.
SIM_EXPERT_ACTION = "sim_only/expert_action"
# rosgraph_msgs/Clock: the simulated time (monotonic across resets). The sim drivers (collect,
# deploy) measure episodes on it, so a sim that falls behind real time on a loaded machine still
# gives every episode its full simulated length. Relative like the rest, on purpose: in the root
# namespace it is ROS's standard /clock (what use_sim_time subscribes to); in a namespace every sim
# has its own clock, and the graph runner and the launch files remap /clock to it for the graph's
# nodes (two sims on one /clock would interleave their times).
SIM_CLOCK = "clock"
# The global name rclpy's and rclcpp's time sources subscribe to with use_sim_time (absolute on
# purpose: it is remapped, per node, to the graph's SIM_CLOCK when the graph runs in a namespace).
ROS_CLOCK = "/clock"

_NAMESPACE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def normalize_namespace(namespace: str) -> str:
    """'' (the root namespace) or an absolute namespace without a trailing slash ('robot_a' and
    '/robot_a/' both give '/robot_a'); ValueError for a name ROS would refuse."""
    text = (namespace or "").strip()
    if text in ("", "/"):
        return ""
    tokens = text.strip("/").split("/")
    bad = [t for t in tokens if not _NAMESPACE_TOKEN.fullmatch(t)]
    if bad or "//" in text:
        raise ValueError(
            f"namespace {namespace!r} is not a valid ROS namespace: tokens of letters, digits and '_' "
            "(not starting with a digit) separated by '/', e.g. robot_a or lab/robot_a"
        )
    return "/" + "/".join(tokens)


def qualified(name: str, namespace: str = "") -> str:
    """The fully qualified name a node in `namespace` resolves the relative `name` to (an absolute
    name stays as it is): what to type into `ros2 topic echo` or `ros2 service call`."""
    if name.startswith("/"):
        return name
    return f"{normalize_namespace(namespace)}/{name}"


def bag_topic(name: str) -> str:
    """The name an episode bag stores a recorded topic under: a relative name rooted at '/' (the
    recording graph's namespace dropped), an absolute one as it is. A private name ('~/x') names
    one node's topic and is not a recordable graph topic: ValueError."""
    if name.startswith("~"):
        raise ValueError(f"{name!r} is a private (node-local) name; record a graph topic instead")
    return name if name.startswith("/") else "/" + name

"""ros2 launch world4rl_bringup deploy.launch.py robot:=sim|franka policy:=CHECKPOINT camera:=... task:=...
[namespace:=robot_a]

The graph itself is config/graphs/deploy.yaml, which `world4rl deploy` runs too. The policy
runner starts disarmed: arm it with `ros2 service call /policy_runner/arm std_srvs/srv/SetBool
"{data: true}"`, disarm with data: false; its status is on /world4rl/policy_status. With
namespace:=robot_a every node (and the included drivers) runs in /robot_a: the service is then
/robot_a/policy_runner/arm, the status /robot_a/world4rl/policy_status.
"""

from world4rl_bringup.launch_support import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("deploy")

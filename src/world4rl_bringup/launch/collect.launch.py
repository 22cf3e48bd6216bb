"""ros2 launch world4rl_bringup collect.launch.py robot:=sim|franka camera:=sim|realsense|realsense_apt|usb ...
[namespace:=robot_a]

The graph itself is config/graphs/collect.yaml, which `world4rl collect` runs too. With
namespace:=robot_a every node (and the included drivers) runs in /robot_a; drive it with
`world4rl collect --attach --namespace robot_a ...`.
"""

from world4rl_bringup.launch_support import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("collect")

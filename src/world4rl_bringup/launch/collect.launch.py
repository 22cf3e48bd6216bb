"""ros2 launch world4rl_bringup collect.launch.py robot:=sim|franka camera:=sim|realsense|realsense_apt|usb ...

The graph itself is config/graphs/collect.yaml, which `world4rl collect` runs too.
"""

from world4rl_bringup.launch_support import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("collect")

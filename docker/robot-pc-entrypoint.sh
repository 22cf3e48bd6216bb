#!/bin/bash
# Source ROS 2, franka_ros2 and this workspace, then run the command (ros2 launch world4rl_bringup ...).
set -e
source /opt/ros/jazzy/setup.bash
source /opt/franka_ws/install/setup.bash
source /opt/world4rl_ws/install/setup.bash
exec "$@"

"""The embedded default robot: a MuJoCo Franka with a camera, on the real robot's ROS 2 topics."""

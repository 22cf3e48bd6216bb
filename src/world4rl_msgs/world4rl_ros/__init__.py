"""Small rclpy runtime helpers that every ROS-facing package may use (policy, sim, bringup, tests).

- `world4rl_ros.node_main.run_node`: the body of every node module's `main()` (init, build the
  node, spin, clean shutdown, exit code).
- `world4rl_ros.node_process.NodeProcess`: a node as a child process of this Python (what the
  `world4rl` CLI runs a graph with, and what the tests start nodes with).
- `world4rl_ros.ros_session.RosSession`: an rclpy node in its own context, spun in the background
  (how the CLI and the tests talk to a running graph).

It ships inside world4rl_msgs, beside world4rl_spec, because that is the one package every other
package may depend on. Unlike world4rl_spec it is not for the learning core: the modules that need
rclpy import it (node_main lazily, inside run_node), so nothing here is imported eagerly.
"""

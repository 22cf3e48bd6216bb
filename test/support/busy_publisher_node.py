"""A test peer for world4rl_ros.node_main.run_node: publishes from a fast timer until it is stopped.

argv[1] chooses how its timer callback ends the run:
- "publish": it only publishes (stop it with SIGINT, which may land while a callback publishes);
- "context-dies": the context is shut down under the callback, which then publishes (what Ctrl-C
  does when it lands mid-callback, made deterministic);
- "fails": the callback raises while the context is valid (a real failure).
"""

import sys

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from world4rl_ros.node_main import run_node


class BusyPublisher(Node):
    def __init__(self, mode: str):
        super().__init__("busy_publisher")
        self.mode = mode
        self.publisher = self.create_publisher(String, "busy", 10)
        self.create_timer(0.0005, self._tick)
        self.get_logger().info("ready")

    def _tick(self) -> None:
        if self.mode == "context-dies":
            rclpy.try_shutdown()
        elif self.mode == "fails":
            raise RuntimeError("a callback failed for real")
        self.publisher.publish(String(data="x"))


if __name__ == "__main__":
    run_node(lambda: BusyPublisher(sys.argv[1]))

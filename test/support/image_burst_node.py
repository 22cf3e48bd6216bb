"""A test peer: publishes COUNT camera-sized rgb8 frames at RATE Hz with reliable QoS, then idles.

Each frame carries its sequence number in header.frame_id and its send time in header.stamp,
so the receiver can count drops and measure latency.
"""

import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from world4rl_ros.node_main import run_node
from world4rl_spec import CAMERA_HEIGHT, CAMERA_WIDTH, topics


class ImageBurst(Node):
    def __init__(self):
        super().__init__("image_burst")
        self.count = self.declare_parameter("count", 150).value
        self.rate = self.declare_parameter("rate_hz", 30.0).value
        self.subscribers = self.declare_parameter("wait_for_subscribers", 1).value
        qos = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.publisher = self.create_publisher(Image, topics.CAMERA_IMAGE, qos)
        rng = np.random.default_rng(0)
        # Noise, so that no transport can get away with compressing it.
        self.payload = rng.integers(0, 256, size=(CAMERA_HEIGHT, CAMERA_WIDTH, 3), dtype=np.uint8).tobytes()

    def run(self) -> None:
        while self.publisher.get_subscription_count() < self.subscribers:
            time.sleep(0.05)
        time.sleep(0.5)  # let the reliable handshake settle before the timed burst
        period = 1.0 / self.rate
        start = time.monotonic()
        for seq in range(self.count):
            msg = Image(height=CAMERA_HEIGHT, width=CAMERA_WIDTH, encoding="rgb8", step=CAMERA_WIDTH * 3)
            msg.header.frame_id = str(seq)
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.data = self.payload
            self.publisher.publish(msg)
            time.sleep(max(0.0, start + (seq + 1) * period - time.monotonic()))
        self.get_logger().info(f"published {self.count} frames in {time.monotonic() - start:.2f} s")


def _burst_then_idle(node: ImageBurst) -> None:
    node.run()
    rclpy.spin(node)


def main() -> None:
    run_node(ImageBurst, spin=_burst_then_idle)


if __name__ == "__main__":
    main()

"""Camera-sized images keep up across processes with the workspace's shared-memory DDS profile."""

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from world4rl_spec import CAMERA_HEIGHT, CAMERA_WIDTH, topics
from world4rl_testing import wait_until

SUPPORT = str(Path(__file__).parent / "support")
RATE_HZ = 30.0
SECONDS = 5.0

pytestmark = pytest.mark.ros


def test_workspace_dds_profile_is_the_default():
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")
    assert profile.endswith("world4rl_bringup/config/fastdds_shm.xml"), profile
    text = Path(profile).read_text()
    assert "<type>SHM</type>" in text
    assert "<segment_size>16777216</segment_size>" in text


def test_640x480_rgb8_at_30hz_for_5s_reliable_drops_nothing(launch_node, ros_node):
    count = int(RATE_HZ * SECONDS)
    received: dict[int, float] = {}
    layouts: set[tuple] = set()
    lock = threading.Lock()

    def on_image(msg: Image) -> None:
        latency = time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        with lock:
            layouts.add((msg.width, msg.height, msg.encoding, len(msg.data)))
            received[int(msg.header.frame_id)] = latency

    qos = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    ros_node.create_subscription(Image, topics.CAMERA_IMAGE, on_image, qos)
    publisher = launch_node(
        "image_burst_node",
        "image_burst",
        params={"count": count, "rate_hz": RATE_HZ},
        env={"PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    assert wait_until(lambda: len(received) >= count, timeout=SECONDS + 30.0, interval=0.1, nodes=[publisher])
    time.sleep(0.3)  # anything more than `count` would be a duplicate
    assert sorted(received) == list(range(count)), f"missing frames: {sorted(set(range(count)) - set(received))}"
    assert layouts == {(CAMERA_WIDTH, CAMERA_HEIGHT, "rgb8", CAMERA_WIDTH * CAMERA_HEIGHT * 3)}
    latencies_ms = np.array(list(received.values())) * 1e3
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    print(f"{count} frames, latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")

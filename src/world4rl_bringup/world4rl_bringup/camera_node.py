"""camera: colour images and camera_info on realsense2_camera's topic names.

Sources (parameter `source`): `realsense` (pyrealsense2), `usb` (any V4L2 camera, or a video file,
through OpenCV), `test_pattern` (no device). realsense2_camera from apt stays the alternative on
the robot PC: it publishes the same topics.

Topics: world4rl_spec.topics.CAMERA_IMAGE (sensor_msgs/Image, rgb8) and CAMERA_INFO
(sensor_msgs/CameraInfo, same stamp); remap them for a second camera. QoS: reliable, keep last
`qos_depth` (a reliable publisher serves both reliable and best-effort subscribers; the recorder
subscribes reliably). Stamps: the ROS clock when the frame arrived.

Without a device the node logs what it looked for and exits with code 1.
"""

from __future__ import annotations

import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from world4rl_bringup.camera_sources import SOURCES, CameraConfig, CameraError, open_source
from world4rl_ros.node_main import run_node
from world4rl_spec import CAMERA_FPS, CAMERA_HEIGHT, CAMERA_WIDTH, topics

EXIT_NO_CAMERA = 1
EXIT_CAMERA_FAILED = 3


def _describe(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def camera_info_msg(source, config: CameraConfig, frame_id: str) -> CameraInfo:
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = config.width, config.height
    intr = source.intrinsics
    if intr is None:  # uncalibrated: all-zero K, as camera_info_manager publishes
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info
    info.distortion_model = intr.distortion_model
    info.d = list(intr.d)
    info.k = intr.k()
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = intr.p()
    return info


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        p = self.declare_parameter
        self.config = CameraConfig(
            source=p("source", "realsense", _describe(f"frame source: {', '.join(SOURCES)}")).value,
            device=p(
                "device", "", _describe("realsense: serial; usb: /dev/videoN, index or video file; '' = first")
            ).value,
            width=p("width", CAMERA_WIDTH, _describe("image width [px]")).value,
            height=p("height", CAMERA_HEIGHT, _describe("image height [px]")).value,
            fps=float(p("fps", CAMERA_FPS, _describe("frames per second")).value),
            timeout_s=p("timeout_s", 2.0, _describe("a frame later than this is an error [s]")).value,
            calibration_file=p("calibration_file", "", _describe("ROS camera calibration YAML (optional)")).value,
        )
        self.frame_id = p("frame_id", "camera_color_optical_frame", _describe("header.frame_id")).value
        depth = p("qos_depth", 5, _describe("publisher history depth")).value
        self.max_failures = p("max_failures", 5, _describe("consecutive frame failures before exiting")).value
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, topics.CAMERA_IMAGE, qos)
        self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO, qos)
        self.source = open_source(self.config)  # NoCameraError propagates to main()
        for warning in self.source.warnings:
            self.get_logger().warning(warning)
        if self.source.intrinsics is None:
            self.get_logger().warning("no intrinsics (uncalibrated camera): camera_info has an all-zero K")
        self.info = camera_info_msg(self.source, self.config, self.frame_id)
        self.frames = 0
        self.failure: CameraError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"{self.source.name}: {self.config.width}x{self.config.height}@{self.config.fps:g} rgb8 on "
            f"{self.image_pub.topic_name}"
        )

    def _capture_loop(self) -> None:
        failures = 0
        width, height, step = self.config.width, self.config.height, self.config.width * 3
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except CameraError as exc:
                failures += 1
                self.get_logger().error(f"{exc} ({failures}/{self.max_failures})")
                if failures >= self.max_failures:
                    self.failure = exc
                    return
                time.sleep(0.1)
                continue
            failures = 0
            stamp = self.get_clock().now().to_msg()
            msg = Image()
            msg.header.stamp = stamp
            msg.header.frame_id = self.frame_id
            msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = height, width, "rgb8", 0, step
            msg.data = frame.tobytes()  # bytes: assigning the numpy array costs ~50 ms per frame
            self.info.header.stamp = stamp
            try:
                self.image_pub.publish(msg)
                self.info_pub.publish(self.info)
            except Exception:
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return
                raise
            self.frames += 1

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.config.timeout_s + 1.0)
        self.source.close()


def _spin_until_failure(node: CameraNode) -> int:
    while rclpy.ok() and node.failure is None:
        rclpy.spin_once(node, timeout_sec=0.2)
    if node.failure is not None:
        node.get_logger().fatal(f"camera stopped: {node.failure}")
        return EXIT_CAMERA_FAILED
    return 0


def main(args=None) -> None:
    # No camera (or a bad one) is the first thing an operator sees: one plain line, no traceback.
    run_node(
        CameraNode,
        args=args,
        spin=_spin_until_failure,
        setup_errors=(CameraError,),
        setup_exit_code=EXIT_NO_CAMERA,
        logger_name="camera",
    )


if __name__ == "__main__":
    main()

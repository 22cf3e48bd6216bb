"""Camera sources and node: every path that needs no device, for real (this machine has no camera:
the no-device errors are exercised against the real pyrealsense2 and /dev)."""

from __future__ import annotations

import glob
import threading

import numpy as np
import pytest

from world4rl_bringup.camera_sources import (
    CameraConfig,
    CameraError,
    Intrinsics,
    NoCameraError,
    OpenCVSource,
    TestPatternSource,
    decode_frame_number,
    load_calibration,
    open_source,
    realsense_intrinsics,
)
from world4rl_spec import CAMERA_HEIGHT, CAMERA_WIDTH, topics
from world4rl_testing import NodeProcess, wait_until


def _realsense_count() -> int:
    import pyrealsense2 as rs

    return len(rs.context().query_devices())


@pytest.mark.skipif(_realsense_count() > 0, reason="a RealSense is connected")
def test_no_realsense_is_a_clear_error():
    with pytest.raises(NoCameraError, match=r"no RealSense camera found: pyrealsense2 .* sees 0 devices") as info:
        open_source(CameraConfig(source="realsense"))
    assert "source:=usb" in str(info.value)


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a V4L2 device exists")
def test_no_v4l2_camera_is_a_clear_error():
    with pytest.raises(NoCameraError, match=r"no V4L2 camera found: /dev/video\* does not exist"):
        open_source(CameraConfig(source="usb"))
    with pytest.raises(NoCameraError, match="no camera at /dev/video97: the device does not exist"):
        open_source(CameraConfig(source="usb", device="/dev/video97"))


def test_unknown_source_is_named():
    with pytest.raises(CameraError, match="unknown camera source 'kinect'"):
        open_source(CameraConfig(source="kinect"))


def test_realsense_intrinsics_follow_realsense2_camera():
    import pyrealsense2 as rs

    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = 640, 480, 615.0, 616.0, 321.5, 238.25
    intr.model = rs.distortion.inverse_brown_conrady
    intr.coeffs = [0.1, -0.2, 0.001, 0.002, 0.05]
    got = realsense_intrinsics(intr)
    assert got.distortion_model == "plumb_bob"
    np.testing.assert_allclose(got.d, [0.1, -0.2, 0.001, 0.002, 0.05], rtol=1e-6)
    assert got.k() == [615.0, 0.0, 321.5, 0.0, 616.0, 238.25, 0.0, 0.0, 1.0]
    intr.model = rs.distortion.kannala_brandt4
    assert realsense_intrinsics(intr).distortion_model == "equidistant"
    assert len(realsense_intrinsics(intr).d) == 4


def test_calibration_file_is_read_and_scaled(tmp_path):
    path = tmp_path / "usb.yaml"
    path.write_text(
        "image_width: 1280\nimage_height: 960\ncamera_name: usb\n"
        "camera_matrix: {rows: 3, cols: 3, data: [1000.0, 0, 640.0, 0, 1002.0, 480.0, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\ndistortion_coefficients: {rows: 1, cols: 5, data: [0.1, 0, 0, 0, 0]}\n"
    )
    calib = load_calibration(path)
    assert (calib.fx, calib.fy, calib.cx, calib.cy) == (1000.0, 1002.0, 640.0, 480.0)
    half = calib.scaled(640, 480)
    assert (half.fx, half.fy, half.cx, half.cy, half.d[0]) == (500.0, 501.0, 320.0, 240.0, 0.1)
    (tmp_path / "bad.yaml").write_text("image_width: 3\n")
    with pytest.raises(CameraError, match=r"bad\.yaml: not a readable ROS camera calibration file"):
        load_calibration(tmp_path / "bad.yaml")


def test_opencv_source_reads_a_video_file_as_rgb_and_resizes(tmp_path):
    import cv2

    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    bgr_red, bgr_blue = np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)
    bgr_red[..., 2], bgr_blue[..., 0] = 255, 255
    for frame in (bgr_red, bgr_blue, bgr_red):
        writer.write(frame)
    writer.release()

    with OpenCVSource(CameraConfig(source="usb", device=path, width=32, height=24, fps=200.0)) as source:
        assert "delivers 64x48, not the configured 32x24" in source.warnings[0]
        assert source.intrinsics is None  # uncalibrated
        first, second = source.read(), source.read()
        assert first.shape == (24, 32, 3)
        assert first.dtype == np.uint8
        assert first.flags.c_contiguous
        assert first[..., 0].mean() > 200
        assert first[..., 2].mean() < 50
        assert second[..., 2].mean() > 200
        assert second[..., 0].mean() < 50
        source.read()
        with pytest.raises(CameraError, match="frame grab failed"):
            source.read()


def test_test_pattern_numbers_its_frames():
    source = TestPatternSource(CameraConfig(source="test_pattern", width=160, height=120, fps=1000.0))
    frames = [source.read() for _ in range(5)]
    assert [decode_frame_number(f[0]) for f in frames] == [0, 1, 2, 3, 4]
    assert frames[0].shape == (120, 160, 3)
    assert not np.array_equal(frames[1][1:], frames[2][1:])  # the bars move
    assert isinstance(source.intrinsics, Intrinsics)
    assert source.intrinsics.cx == pytest.approx(79.5)


@pytest.mark.ros
def test_camera_node_publishes_images_and_camera_info(launch_node, ros_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    images, infos = [], []
    lock = threading.Lock()
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

    def on_image(msg):
        with lock:
            images.append(msg)

    ros_node.create_subscription(Image, topics.CAMERA_IMAGE, on_image, qos)
    ros_node.create_subscription(CameraInfo, topics.CAMERA_INFO, lambda m: infos.append(m), qos)
    node = launch_node("world4rl_bringup.camera_node", "camera", params={"source": "test_pattern"})
    assert wait_until(lambda: len(images) >= 30 and len(infos) >= 30, timeout=30, nodes=[node])

    with lock:
        got = list(images)
    first = got[0]
    assert (first.width, first.height, first.encoding, first.step) == (CAMERA_WIDTH, CAMERA_HEIGHT, "rgb8", 1920)
    assert first.header.frame_id == "camera_color_optical_frame"
    frames = [np.frombuffer(m.data, np.uint8).reshape(CAMERA_HEIGHT, CAMERA_WIDTH, 3) for m in got]
    numbers = [decode_frame_number(f[0]) for f in frames]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # none dropped, in order
    image_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got}
    assert {(i.header.stamp.sec, i.header.stamp.nanosec) for i in infos[:10]} <= image_stamps
    info = infos[0]
    assert (info.width, info.height, info.distortion_model) == (CAMERA_WIDTH, CAMERA_HEIGHT, "plumb_bob")
    assert info.k[0] > 0
    assert info.k[2] == pytest.approx((CAMERA_WIDTH - 1) / 2)
    # ~30 fps (loose: this machine is shared).
    span = (got[-1].header.stamp.sec - got[0].header.stamp.sec) + (
        got[-1].header.stamp.nanosec - got[0].header.stamp.nanosec
    ) * 1e-9
    assert 10 < (len(got) - 1) / span < 45


@pytest.mark.ros
@pytest.mark.parametrize(
    ("source", "expected"),
    [("realsense", "no RealSense camera found"), ("usb", "no V4L2 camera found")],
)
def test_camera_node_without_a_device_exits_with_the_reason(ros_domain, tmp_path, source, expected):
    if (source == "realsense" and _realsense_count() > 0) or (source == "usb" and glob.glob("/dev/video*")):
        pytest.skip("a camera is connected")
    node = NodeProcess("world4rl_bringup.camera_node", "camera", params={"source": source}, log_dir=tmp_path).start()
    try:
        assert wait_until(lambda: not node.is_running(), timeout=30)
    finally:
        node.stop()
    assert node.returncode == 1
    stderr = node.stderr_tail()
    assert expected in stderr
    assert "Traceback" not in stderr

"""Camera frame sources, ROS-free: an Intel RealSense through pyrealsense2, any V4L2/USB camera
(or a video file) through OpenCV, and a moving test pattern. Each yields RGB frames of the
configured size and, where known, the lens intrinsics for sensor_msgs/CameraInfo.

`open_source(config)` raises NoCameraError with a message saying what was looked for, what was
found and what to try, when no usable device is present.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from world4rl_spec import CAMERA_FPS, CAMERA_HEIGHT, CAMERA_WIDTH

SOURCES = ("realsense", "usb", "test_pattern")


class CameraError(RuntimeError):
    """The camera failed while streaming (unplugged, timed out, ...)."""


class NoCameraError(CameraError):
    """No usable camera device: the message says what was looked for and what to try."""


@dataclass
class CameraConfig:
    source: str = "realsense"  # one of SOURCES
    device: str = ""  # realsense: serial number; usb: /dev/videoN, an index or a video file; "" = first found
    width: int = CAMERA_WIDTH
    height: int = CAMERA_HEIGHT
    fps: float = CAMERA_FPS
    timeout_s: float = 2.0  # a frame later than this is an error
    calibration_file: str = ""  # ROS camera_calibration YAML; overrides the device's intrinsics


@dataclass
class Intrinsics:
    """Pinhole intrinsics in ROS CameraInfo terms (k row-major 3x3, d per distortion_model)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    d: list[float] = field(default_factory=lambda: [0.0] * 5)

    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def p(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same lens seen at another resolution (the source resized its frames)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          self.distortion_model, list(self.d))  # fmt: skip


def realsense_intrinsics(intr) -> Intrinsics:
    """pyrealsense2.intrinsics -> Intrinsics, with realsense2_camera's distortion model names."""
    import pyrealsense2 as rs

    model = "equidistant" if intr.model == rs.distortion.kannala_brandt4 else "plumb_bob"
    coeffs = [float(c) for c in intr.coeffs]
    d = coeffs[:4] if model == "equidistant" else coeffs[:5]
    return Intrinsics(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy),
                      float(intr.ppx), float(intr.ppy), model, d)  # fmt: skip


def load_calibration(path: str | os.PathLike) -> Intrinsics:
    """Read a ROS camera_calibration YAML (camera_info_manager's format)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
        k = data["camera_matrix"]["data"]
        return Intrinsics(
            width=int(data["image_width"]),
            height=int(data["image_height"]),
            fx=float(k[0]),
            fy=float(k[4]),
            cx=float(k[2]),
            cy=float(k[5]),
            distortion_model=str(data.get("distortion_model", "plumb_bob")),
            d=[float(x) for x in data.get("distortion_coefficients", {}).get("data", [])],
        )
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CameraError(f"{path}: not a readable ROS camera calibration file ({exc!r})") from exc


class FrameSource:
    """Base: `read()` returns one RGB uint8 frame [height, width, 3], C-contiguous."""

    name = "camera"
    intrinsics: Intrinsics | None = None

    def __init__(self, config: CameraConfig):
        self.config = config
        self.warnings: list[str] = []

    def read(self) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RealSenseSource(FrameSource):
    """Colour stream of a RealSense (D4xx/L5xx) through pyrealsense2, rgb8 as realsense2_camera."""

    def __init__(self, config: CameraConfig):
        super().__init__(config)
        try:
            import pyrealsense2 as rs
        except ImportError as exc:  # pragma: no cover - pinned in requirements.lock
            raise NoCameraError(f"pyrealsense2 is not installed ({exc}); pip install pyrealsense2") from exc
        self._rs = rs
        context = rs.context()
        devices = list(context.query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if not devices:
            raise NoCameraError(
                f"no RealSense camera found: pyrealsense2 {rs.__version__} sees 0 devices. Check that the camera "
                "is plugged into a USB 3 port (`lsusb | grep 8086`), that librealsense's udev rules are installed "
                "(99-realsense-libusb.rules), and that no other process (realsense2_camera, realsense-viewer) holds "
                "it. Or choose another source: source:=usb for a V4L2 camera, source:=test_pattern without camera."
            )
        if config.device and config.device not in serials:
            raise NoCameraError(f"no RealSense with serial {config.device!r}; connected: {', '.join(serials)}")
        serial = config.device or serials[0]
        device = devices[serials.index(serial)]
        self.name = f"{device.get_info(rs.camera_info.name)} ({serial})"
        self._pipeline = rs.pipeline(context)
        rs_config = rs.config()
        rs_config.enable_device(serial)
        rs_config.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, round(config.fps))
        try:
            profile = self._pipeline.start(rs_config)
        except RuntimeError as exc:
            raise NoCameraError(
                f"{self.name} cannot stream colour {config.width}x{config.height}@{config.fps:g} rgb8 ({exc}); "
                f"supported colour modes: {', '.join(_realsense_color_modes(device)) or 'none listed'}"
            ) from exc
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self.intrinsics = realsense_intrinsics(stream.get_intrinsics())

    def read(self) -> np.ndarray:
        try:
            frames = self._pipeline.wait_for_frames(int(self.config.timeout_s * 1000))
        except RuntimeError as exc:
            raise CameraError(f"{self.name}: no frame within {self.config.timeout_s:g} s ({exc})") from exc
        color = frames.get_color_frame()
        return np.array(color.get_data(), dtype=np.uint8, copy=True)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._pipeline.stop()


def _realsense_color_modes(device) -> list[str]:
    import pyrealsense2 as rs

    modes = set()
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == rs.stream.color and profile.is_video_stream_profile():
                video = profile.as_video_stream_profile()
                modes.add(f"{video.width()}x{video.height()}@{profile.fps()} {profile.format()}")
    return sorted(modes)


class OpenCVSource(FrameSource):
    """A V4L2/USB camera (or a video file, for replays and tests) through OpenCV; BGR -> RGB.
    Frames of another size than configured are resized (and the intrinsics scaled), with a warning."""

    def __init__(self, config: CameraConfig):
        super().__init__(config)
        import cv2

        self._cv2 = cv2
        device = config.device
        if not device:
            candidates = sorted(glob.glob("/dev/video*"), key=lambda p: int(p[len("/dev/video") :] or 0))
            if not candidates:
                raise NoCameraError(
                    "no V4L2 camera found: /dev/video* does not exist. Plug in a USB camera (`v4l2-ctl "
                    "--list-devices`), pass it through to the container (--device /dev/video0), or choose "
                    "another source: source:=realsense, source:=test_pattern."
                )
            device = candidates[0]
        is_file = os.path.isfile(device)
        if device.isdigit():
            target, backend = int(device), cv2.CAP_V4L2
        else:
            target, backend = device, (cv2.CAP_ANY if is_file else cv2.CAP_V4L2)
        if not is_file and not device.isdigit() and not os.path.exists(device):
            raise NoCameraError(f"no camera at {device}: the device does not exist")
        self._capture = cv2.VideoCapture(target, backend)
        if not self._capture.isOpened():
            raise NoCameraError(
                f"cannot open camera {device} with OpenCV (busy, no permission - is the user in group 'video'? - "
                "or not a capture device)"
            )
        self.name = str(device)
        if not is_file:
            self._capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))  # USB 2 bandwidth at 640x480@30
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            self._capture.set(cv2.CAP_PROP_FPS, config.fps)
        self.native_size = (
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        if self.native_size != (config.width, config.height):
            self.warnings.append(
                f"{device} delivers {self.native_size[0]}x{self.native_size[1]}, not the configured "
                f"{config.width}x{config.height}: frames are resized"
            )
        if config.calibration_file:
            calib = load_calibration(config.calibration_file)
            self.intrinsics = calib.scaled(config.width, config.height)
        self._period = 1.0 / config.fps if is_file else 0.0  # a file is paced like a camera
        self._next = time.monotonic()

    def read(self) -> np.ndarray:
        cv2 = self._cv2
        if self._period:
            self._next += self._period
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraError(f"{self.name}: frame grab failed (unplugged, or the end of the file)")
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if frame.shape[1] != self.config.width or frame.shape[0] != self.config.height:
            frame = cv2.resize(frame, (self.config.width, self.config.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        self._capture.release()


class TestPatternSource(FrameSource):
    """Moving colour bars with the frame number encoded in the first row (for tests, benchmarks and
    running the graph without a camera), paced at the configured fps."""

    __test__ = False  # not a pytest class

    def __init__(self, config: CameraConfig):
        super().__init__(config)
        self.name = "test pattern"
        w, h = config.width, config.height
        self._bars = np.zeros((h, w, 3), np.uint8)
        palette = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                            [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], np.uint8)  # fmt: skip
        self._bars[:] = palette[(np.arange(w) * 8) // w][None, :, :]
        self.frame_index = 0
        # A plausible pinhole: 69 deg horizontal field of view, like a RealSense D435's colour camera.
        fx = w / (2 * np.tan(np.radians(69.0) / 2))
        self.intrinsics = Intrinsics(w, h, fx, fx, (w - 1) / 2, (h - 1) / 2)
        if config.calibration_file:
            self.intrinsics = load_calibration(config.calibration_file).scaled(w, h)
        self._next = time.monotonic()

    def read(self) -> np.ndarray:
        self._next += 1.0 / self.config.fps
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next = time.monotonic()  # running late: do not burst to catch up
        frame = np.roll(self._bars, self.frame_index * 4, axis=1)
        frame[0, :32] = encode_frame_number(self.frame_index)
        self.frame_index += 1
        return frame


def encode_frame_number(index: int) -> np.ndarray:
    """32 pixels [32, 3] that carry a frame number (one bit per pixel, 0 or 255), for drop checks."""
    bits = (index >> np.arange(32)) & 1
    return np.repeat((bits * 255).astype(np.uint8)[:, None], 3, axis=1)


def decode_frame_number(row: np.ndarray) -> int:
    bits = (np.asarray(row[:32, 0]) > 127).astype(np.int64)
    return int((bits << np.arange(32)).sum())


def open_source(config: CameraConfig) -> FrameSource:
    """Open the configured source; NoCameraError (a clear message) when there is no device."""
    if config.source == "realsense":
        return RealSenseSource(config)
    if config.source == "usb":
        return OpenCVSource(config)
    if config.source == "test_pattern":
        return TestPatternSource(config)
    raise CameraError(f"unknown camera source {config.source!r}; choose one of {', '.join(SOURCES)}")

"""Helpers for the bringup tests: serialized messages built with rosbags' typestore (the same CDR
bytes rclpy publishes), and a reader that summarises a bag through the rosbags reader."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest


class Msgs:
    """CDR-serialized sensor_msgs/Image, JointState and world4rl_msgs/Action for tests."""

    def __init__(self):
        from world4rl_bringup.bag_writer import ensure_msgtype, episode_typestore

        self.store = episode_typestore()
        ensure_msgtype(self.store, "world4rl_msgs/msg/Action")
        self.types = self.store.types

    def _header(self, stamp_ns: int, frame_id: str = ""):
        time_type = self.types["builtin_interfaces/msg/Time"]
        header = self.types["std_msgs/msg/Header"]
        return header(stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def image(self, stamp_ns: int, pixels: np.ndarray, encoding: str = "rgb8") -> bytes:
        h, w = pixels.shape[:2]
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        msg = self.types["sensor_msgs/msg/Image"](
            header=self._header(stamp_ns, "camera_color_optical_frame"),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * channels * pixels.dtype.itemsize,
            data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8),
        )
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def joint_state(self, stamp_ns: int, positions) -> bytes:
        from world4rl_spec import ARM_JOINT_NAMES, FINGER_JOINT_NAMES

        names = [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES][: len(positions)]
        msg = self.types["sensor_msgs/msg/JointState"](
            header=self._header(stamp_ns),
            name=list(names),
            position=np.asarray(positions, dtype=np.float64),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/JointState"))

    def action(self, stamp_ns: int, values, source: str = "expert") -> bytes:
        msg = self.types["world4rl_msgs/msg/Action"](
            header=self._header(stamp_ns, "fr3_link0"), values=np.asarray(values, dtype=np.float32), source=source
        )
        return bytes(self.store.serialize_cdr(msg, "world4rl_msgs/msg/Action"))


@pytest.fixture(scope="session")
def msgs() -> Msgs:
    return Msgs()


def read_bag(path) -> dict:
    """Open a bag with the rosbags reader: {'topics': {topic: (msgtype, count)}, 'custom':
    metadata.yaml's custom_data, 'messages': {topic: [(log time ns, deserialized msg)]}}."""
    import yaml
    from rosbags.rosbag2 import Reader

    from world4rl_bringup.bag_writer import ensure_msgtype, episode_typestore

    store = episode_typestore()
    out = {"topics": {}, "messages": {}}
    metadata = yaml.safe_load((Path(path) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    out["custom"] = metadata.get("custom_data") or {}
    with Reader(path) as reader:
        for conn in reader.connections:
            out["topics"][conn.topic] = (conn.msgtype, conn.msgcount)
            out["messages"].setdefault(conn.topic, [])
            ensure_msgtype(store, conn.msgtype)
        for conn, stamp, raw in reader.messages():
            out["messages"][conn.topic].append((stamp, store.deserialize_cdr(raw, conn.msgtype)))
    return out


@pytest.fixture
def bag_reader():
    return read_bag


@pytest.fixture
def tiny_tmpfs():
    """A real, tiny filesystem that runs full: a tmpfs mount (needs root). Yields a factory
    size_kib -> directory; skipped where mounting is not allowed (then the RLIMIT_FSIZE test covers
    the error path)."""
    mounts = []

    def _make(size_kib: int) -> Path:
        mount_dir = Path(tempfile.mkdtemp(prefix="world4rl-tmpfs-"))
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            mount_dir.rmdir()
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
        mounts.append(mount_dir)
        return mount_dir

    yield _make
    for mount_dir in mounts:
        subprocess.run(["umount", "-l", str(mount_dir)], check=False)
        os.rmdir(mount_dir)

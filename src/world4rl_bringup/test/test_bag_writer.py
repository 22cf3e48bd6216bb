"""Episode bags: written with rosbags' MCAP writer, read back with the rosbags reader; crash recovery
after a real SIGKILL; a real full disk (tmpfs) and a real file size limit (RLIMIT_FSIZE)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from world4rl_bringup.bag_writer import (
    INCOMPLETE_SUFFIX,
    PARTIAL_SUFFIX,
    STATUS_COMPLETE,
    STATUS_DISK_FULL,
    STATUS_RECOVERED,
    BagWriteError,
    DiskFullError,
    EpisodeBagWriter,
    EpisodeMeta,
    episode_dir_name,
    episode_typestore,
    next_episode_index,
    recover_all_incomplete,
    recover_incomplete,
    scan_mcap,
)
from world4rl_bringup.node_process import wait_until
from world4rl_spec import topics

IMAGE = topics.CAMERA_IMAGE
JOINTS = topics.JOINT_STATES
ACTION = topics.ACTION


def _frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = i % 256
    frame[: i % h, :, 1] = 255
    return frame


def _open_writer(out_dir: Path, index: int, **kwargs) -> EpisodeBagWriter:
    meta = EpisodeMeta(index=index, task="push", robot="sim", operator_note="first try", start_ns=time.time_ns())
    writer = EpisodeBagWriter(out_dir / episode_dir_name(index), meta, episode_typestore(), **kwargs).start()
    writer.add_topic(IMAGE, "sensor_msgs/msg/Image")
    writer.add_topic(JOINTS, "sensor_msgs/msg/JointState")
    writer.add_topic(ACTION, "world4rl_msgs/msg/Action")
    return writer


def _record(writer: EpisodeBagWriter, msgs, steps: int, t0: int, image_hw=(48, 64)) -> None:
    for i in range(steps):
        stamp = t0 + i * 100_000_000
        assert writer.write(IMAGE, stamp, msgs.image(stamp, _frame(i, *image_hw)))
        for k in range(3):
            writer.write(JOINTS, stamp + k, msgs.joint_state(stamp + k, [0.1 * i] * 9))
        writer.write(ACTION, stamp + 5, msgs.action(stamp + 5, [0.1, -0.2, 0.0, 1.0]))


def test_episode_round_trip_through_the_rosbags_reader(tmp_path, msgs, bag_reader):
    writer = _open_writer(tmp_path, 0, flush_period_s=0.05)
    assert writer.path.name == "ep_000000" + INCOMPLETE_SUFFIX
    assert writer.path.is_dir()
    t0 = time.time_ns()
    _record(writer, msgs, 20, t0)
    meta = writer.meta
    meta.success, meta.stop_ns, meta.operator_note = True, t0 + 3_000_000_000, "clean push"
    result = writer.close(meta)

    assert result.path == tmp_path / "ep_000000"
    assert result.status == STATUS_COMPLETE
    assert not (tmp_path / ("ep_000000" + INCOMPLETE_SUFFIX)).exists()
    assert sorted(p.name for p in result.path.iterdir()) == ["ep_000000.mcap", "metadata.yaml"]
    assert result.topic_counts == {IMAGE: 20, JOINTS: 60, ACTION: 20, topics.EPISODE_INFO: 1}
    assert result.message_count == 101

    bag = bag_reader(result.path)
    assert bag["topics"] == {
        IMAGE: ("sensor_msgs/msg/Image", 20),
        JOINTS: ("sensor_msgs/msg/JointState", 60),
        ACTION: ("world4rl_msgs/msg/Action", 20),
        topics.EPISODE_INFO: ("world4rl_msgs/msg/EpisodeInfo", 1),
    }
    ((_, info),) = bag["messages"][topics.EPISODE_INFO]
    assert (info.task, info.episode_index, info.success, info.operator_note, info.robot) == (
        "push",
        0,
        True,
        "clean push",
        "sim",
    )
    assert info.stop_stamp.sec * 10**9 + info.stop_stamp.nanosec == t0 + 3_000_000_000
    assert bag["custom"]["world4rl.success"] == "true"
    assert bag["custom"]["world4rl.task"] == "push"
    assert bag["custom"]["world4rl.status"] == STATUS_COMPLETE
    stamp, image = bag["messages"][IMAGE][7]
    assert stamp == t0 + 7 * 100_000_000
    pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
    np.testing.assert_array_equal(pixels, _frame(7))
    np.testing.assert_allclose(bag["messages"][ACTION][0][1].values, [0.1, -0.2, 0.0, 1.0], rtol=1e-6)
    # Stamps are preserved and ordered per topic.
    joint_stamps = [s for s, _ in bag["messages"][JOINTS]]
    assert joint_stamps == sorted(joint_stamps)


def test_discard_deletes_the_bag_and_indices_continue(tmp_path, msgs):
    assert next_episode_index(tmp_path) == 0
    writer = _open_writer(tmp_path, 0)
    _record(writer, msgs, 3, time.time_ns())
    writer.discard()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ep_000004.partial").mkdir()
    (tmp_path / "ep_000002").mkdir()
    (tmp_path / "notes").mkdir()
    assert next_episode_index(tmp_path) == 5
    with pytest.raises(BagWriteError, match="exists already"):
        _open_writer(tmp_path, 2)


def test_unknown_message_type_is_named(tmp_path):
    writer = _open_writer(tmp_path, 0)
    with pytest.raises(BagWriteError, match="franka_msgs/msg/NoSuchThing is unknown"):
        writer.add_topic("/franka/x", "franka_msgs/msg/NoSuchThing")
    writer.discard()


_CHILD_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path[:0] = {paths!r}
    from conftest import Msgs
    from test_bag_writer import _open_writer, _record
    from pathlib import Path
    msgs = Msgs()
    writer = _open_writer(Path({out!r}), 3, flush_period_s=0.1)
    _record(writer, msgs, 10, 1_000_000_000)          # 10 steps, then wait for a flush
    while writer.flushed_messages < 50:
        time.sleep(0.01)
    print("flushed", flush=True)
    _record(writer, msgs, 1000, 9_000_000_000)        # more, killed while writing
    time.sleep(60)
    """
)


def test_sigkill_mid_episode_leaves_a_recoverable_bag(tmp_path, msgs, bag_reader):
    # An earlier, complete episode must survive untouched.
    earlier = _open_writer(tmp_path, 2)
    _record(earlier, msgs, 5, 100)
    earlier.close()
    before = (tmp_path / "ep_000002" / "ep_000002.mcap").read_bytes()

    here = str(Path(__file__).parent)
    script = _CHILD_WRITER.format(paths=[here], out=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "flushed"
        time.sleep(0.3)  # mid-way through the second burst
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    incomplete = tmp_path / ("ep_000003" + INCOMPLETE_SUFFIX)
    assert incomplete.is_dir()
    assert not (incomplete / "metadata.yaml").exists()
    scan = scan_mcap(incomplete / "ep_000003.mcap")
    assert scan.complete_chunks >= 1

    results = recover_all_incomplete(tmp_path)
    assert results == [(incomplete, tmp_path / ("ep_000003" + PARTIAL_SUFFIX))]
    assert not incomplete.exists()
    bag = bag_reader(tmp_path / ("ep_000003" + PARTIAL_SUFFIX))
    # Everything flushed before the pause is there; no EpisodeInfo (the episode was never labelled).
    assert bag["topics"][IMAGE][1] >= 10
    assert bag["topics"][JOINTS][1] >= 30
    assert bag["topics"][ACTION][1] >= 10
    assert topics.EPISODE_INFO not in bag["topics"]
    assert bag["custom"]["world4rl.status"] == STATUS_RECOVERED
    assert bag["custom"]["world4rl.task"] == "push"
    assert bag["custom"]["world4rl.episode_index"] == "3"
    first_images = [m for _, m in bag["messages"][IMAGE][:10]]
    for i, image in enumerate(first_images):
        np.testing.assert_array_equal(np.frombuffer(image.data, np.uint8).reshape(48, 64, 3), _frame(i))

    assert (tmp_path / "ep_000002" / "ep_000002.mcap").read_bytes() == before
    assert bag_reader(tmp_path / "ep_000002")["topics"][IMAGE][1] == 5
    assert next_episode_index(tmp_path) == 4


def test_truncated_file_is_scanned_up_to_the_last_complete_chunk(tmp_path, msgs):
    writer = _open_writer(tmp_path, 0, flush_period_s=0.0)  # a chunk after every message
    _record(writer, msgs, 6, 1000)
    writer.close()
    data = (tmp_path / "ep_000000" / "ep_000000.mcap").read_bytes()
    full = scan_mcap(tmp_path / "ep_000000" / "ep_000000.mcap")
    assert len(full.messages) == 6 * 5 + 1
    assert not full.truncated
    # Cut in the middle: fewer messages, marked truncated, the same leading messages, no exception.
    cut_path = tmp_path / "cut.mcap"
    cut_path.write_bytes(data[: len(data) // 2])
    cut = scan_mcap(cut_path)
    assert cut.truncated
    assert 0 < len(cut.messages) < len(full.messages)
    assert cut.messages == full.messages[: len(cut.messages)]
    cut_path.write_bytes(b"not an mcap")
    with pytest.raises(BagWriteError, match="not an MCAP file"):
        scan_mcap(cut_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_gives_a_clear_error_and_keeps_earlier_episodes(tmp_path, msgs, bag_reader, tiny_tmpfs):
    disk = tiny_tmpfs(2048)  # 2 MiB: about two 640x480 frames
    earlier = _open_writer(disk, 0)
    _record(earlier, msgs, 3, 100)
    earlier.close()

    writer = _open_writer(disk, 1, flush_period_s=0.05)
    frame_hw = (480, 640)
    for i in range(6):
        writer.write(IMAGE, i, msgs.image(i, _frame(i, *frame_hw)))
        time.sleep(0.1)
    assert wait_until(lambda: writer.error is not None, timeout=10)
    assert isinstance(writer.error, DiskFullError)
    assert "the disk is full" in str(writer.error)
    assert "ep_000001.incomplete" in str(writer.error)
    assert not writer.write(IMAGE, 99, msgs.image(99, _frame(1)))  # further messages are refused
    with pytest.raises(DiskFullError, match="earlier episodes are intact"):
        writer.close()
    assert bag_reader(disk / "ep_000000")["topics"][IMAGE][1] == 3

    # No room for the recovered copy: reported, and the raw bag is kept.
    (result,) = recover_all_incomplete(disk)
    assert isinstance(result[1], OSError)
    assert (disk / "ep_000001.incomplete").is_dir()
    # With room again (a grown tmpfs), the flushed frames come back.
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    partial = recover_incomplete(disk / "ep_000001.incomplete")
    bag = bag_reader(partial)
    assert bag["topics"][IMAGE][1] >= 1
    assert bag["custom"]["world4rl.status"] == STATUS_RECOVERED


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_reserve_stops_the_episode_readable(tmp_path, msgs, bag_reader, tiny_tmpfs):
    disk = tiny_tmpfs(4096)
    writer = _open_writer(disk, 0, flush_period_s=0.05, min_free_bytes=1_500_000)
    for i in range(5):
        writer.write(IMAGE, i, msgs.image(i, _frame(i, 480, 640)))
        time.sleep(0.1)
    assert wait_until(lambda: writer.error is not None, timeout=10)
    assert isinstance(writer.error, DiskFullError)
    assert "below the reserve" in str(writer.error)
    partial = disk / ("ep_000000" + PARTIAL_SUFFIX)
    bag = bag_reader(partial)
    assert bag["custom"]["world4rl.status"] == STATUS_DISK_FULL
    assert 1 <= bag["topics"][IMAGE][1] < 5
    # The failed writer's thread waits for close/discard without spinning (a spinning thread
    # once held the GIL for the rest of the test session): this process stays idle while it waits.
    cpu0 = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu0 < 0.2
    # A new episode is refused up front while the disk is below the reserve.
    with pytest.raises(DiskFullError, match="below the recorder's reserve"):
        _open_writer(disk, 1, min_free_bytes=1_500_000)
    with pytest.raises(DiskFullError):
        writer.close()


_CHILD_FSIZE = textwrap.dedent(
    """
    import resource, sys, time
    sys.path[:0] = {paths!r}
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
    from conftest import Msgs
    from test_bag_writer import _open_writer, _frame, IMAGE
    from pathlib import Path
    msgs = Msgs()
    writer = _open_writer(Path({out!r}), 0, flush_period_s=0.05)
    for i in range(4):
        writer.write(IMAGE, i, msgs.image(i, _frame(i, 480, 640)))
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    print(type(writer.error).__name__, writer.error, flush=True)
    """
)


def test_file_size_limit_gives_a_clear_error(tmp_path):
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_FSIZE.format(paths=[here], out=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("DiskFullError"), out.stdout + out.stderr
    assert "the file size limit was reached" in out.stdout

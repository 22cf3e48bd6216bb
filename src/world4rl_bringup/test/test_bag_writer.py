"""Episode bags: written with rosbags' MCAP writer, read back with the rosbags reader; crash recovery
after a real SIGKILL; a real full disk (tmpfs) and a real file size limit (RLIMIT_FSIZE); errors inside
the writer thread; the fsync/rename order that makes every published file durable."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from world4rl_bringup import bag_writer
from world4rl_bringup.bag_recovery import recover_all_incomplete, recover_incomplete, scan_mcap
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
)
from world4rl_spec import topics
from world4rl_testing import wait_until

# The names the recorder stores these topics under (rooted at '/', world4rl_spec.topics.bag_topic).
IMAGE = topics.bag_topic(topics.CAMERA_IMAGE)
JOINTS = topics.bag_topic(topics.JOINT_STATES)
ACTION = topics.bag_topic(topics.ACTION)
EPISODE_INFO = topics.bag_topic(topics.EPISODE_INFO)


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
    assert result.topic_counts == {IMAGE: 20, JOINTS: 60, ACTION: 20, EPISODE_INFO: 1}
    assert result.message_count == 101

    bag = bag_reader(result.path)
    assert bag["topics"] == {
        IMAGE: ("sensor_msgs/msg/Image", 20),
        JOINTS: ("sensor_msgs/msg/JointState", 60),
        ACTION: ("world4rl_msgs/msg/Action", 20),
        EPISODE_INFO: ("world4rl_msgs/msg/EpisodeInfo", 1),
    }
    ((_, info),) = bag["messages"][EPISODE_INFO]
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
    assert EPISODE_INFO not in bag["topics"]
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


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path: proof that a bag was not touched."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _counts(bag: dict) -> dict[str, int]:
    return {t: n for t, (_, n) in bag["topics"].items() if n}


def _earlier_episode(out_dir: Path, msgs) -> tuple[Path, dict[str, str]]:
    earlier = _open_writer(out_dir, 0)
    _record(earlier, msgs, 3, 100)
    path = earlier.close().path
    return path, tree_hashes(path)


def test_a_message_on_an_undeclared_topic_fails_the_episode_loudly_and_loses_nothing(tmp_path, msgs, bag_reader):
    # A KeyError in the writer thread (no connection for the topic) once ended the thread silently:
    # no error, and close() returned None.
    earlier, before = _earlier_episode(tmp_path, msgs)
    writer = _open_writer(tmp_path, 1, flush_period_s=60.0)  # no periodic flush: what is kept comes from the failure
    _record(writer, msgs, 5, 1000)
    assert writer.write("/never/declared", 2000, b"\x00" * 8)  # the caller side takes it; the thread cannot
    for i in range(5):
        writer.write(JOINTS, 3000 + i, msgs.joint_state(3000 + i, [0.0] * 9))  # queued behind it
    assert wait_until(lambda: writer.error is not None, timeout=5), "the writer thread's failure was not recorded"
    error = writer.error
    assert isinstance(error, BagWriteError)
    assert "ep_000001.incomplete" in str(error)
    assert "/never/declared" in str(error)
    assert "KeyError" in str(error)
    assert "25 messages" in str(error)  # what was kept
    assert isinstance(error.__cause__, KeyError)
    # The thread drains what was queued behind the failure and refuses (and counts) anything new.
    assert wait_until(lambda: writer.queued_bytes == 0, timeout=5)
    dropped = writer.dropped
    assert not writer.write(IMAGE, 4000, msgs.image(4000, _frame(0)))
    assert writer.dropped == dropped + 1
    t0 = time.monotonic()
    with pytest.raises(BagWriteError) as raised:
        writer.close()
    assert time.monotonic() - t0 < 2.0
    assert raised.value is error
    # Every message written before the failure is recoverable; the earlier episode is untouched.
    bag = bag_reader(recover_incomplete(tmp_path / "ep_000001.incomplete"))
    assert _counts(bag) == {IMAGE: 5, JOINTS: 15, ACTION: 5}
    assert bag["custom"]["world4rl.status"] == STATUS_RECOVERED
    assert tree_hashes(earlier) == before


def test_a_rosbags_error_in_the_writer_thread_is_reported_with_topic_and_cause(tmp_path, msgs, bag_reader):
    earlier, before = _earlier_episode(tmp_path, msgs)
    writer = _open_writer(tmp_path, 1, flush_period_s=0.05)
    _record(writer, msgs, 5, 1000)
    assert wait_until(lambda: writer.flushed_messages == 25, timeout=10)
    # A negative stamp (a broken clock): rosbags' MCAP writer raises OverflowError packing it.
    assert writer.write(JOINTS, -1, msgs.joint_state(0, [0.0] * 9))
    assert wait_until(lambda: writer.error is not None, timeout=5), "the writer thread's failure was not recorded"
    error = writer.error
    assert JOINTS in str(error)
    assert "OverflowError" in str(error)
    assert "ep_000001.incomplete" in str(error)
    assert isinstance(error.__cause__, OverflowError)
    t0 = time.monotonic()
    with pytest.raises(BagWriteError):
        writer.close()
    assert time.monotonic() - t0 < 2.0
    bag = bag_reader(recover_incomplete(tmp_path / "ep_000001.incomplete"))
    assert _counts(bag) == {IMAGE: 5, JOINTS: 15, ACTION: 5}  # everything flushed before the failure
    assert tree_hashes(earlier) == before


def test_a_failure_while_closing_is_raised_not_swallowed(tmp_path, msgs, bag_reader):
    # The close path itself failing (here: EpisodeInfo cannot be serialized) once killed the thread
    # and close() returned None as if all was well.
    writer = _open_writer(tmp_path, 0, flush_period_s=60.0)
    _record(writer, msgs, 4, 1000)
    t0 = time.monotonic()
    with pytest.raises(BagWriteError) as raised:
        writer.close(EpisodeMeta(index=0, task=None))
    assert time.monotonic() - t0 < 2.0
    assert "closing" in str(raised.value)
    assert "ep_000000.incomplete" in str(raised.value)
    assert isinstance(raised.value.__cause__, AttributeError)
    assert writer.error is raised.value
    assert not (tmp_path / "ep_000000").exists()  # never published as complete
    bag = bag_reader(recover_incomplete(tmp_path / "ep_000000.incomplete"))
    assert _counts(bag) == {IMAGE: 4, JOINTS: 12, ACTION: 4}


def test_start_refuses_a_name_taken_after_the_index_was_chosen_and_deletes_nothing(tmp_path, msgs):
    # The name is taken between next_episode_index() and start(): a dangling link is invisible to the
    # directory listing (and to Path.exists()) but takes the name for the atomic mkdir.
    taken = tmp_path / "ep_000000.incomplete"
    taken.symlink_to(tmp_path / "elsewhere")
    assert next_episode_index(tmp_path) == 0
    with pytest.raises(bag_writer.EpisodeExistsError, match="ep_000000"):
        _open_writer(tmp_path, 0)
    assert taken.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep_000000.incomplete"]
    writer = _open_writer(tmp_path, 1)
    _record(writer, msgs, 2, 100)
    assert writer.close().path == tmp_path / "ep_000001"


def test_the_writer_queue_is_bounded_and_overflow_is_counted(tmp_path, msgs):
    meta = EpisodeMeta(index=9, task="push")
    for bad in (0, -5):
        with pytest.raises(ValueError, match="max_queue_bytes"):
            EpisodeBagWriter(tmp_path / "ep_000009", meta, msgs.store, max_queue_bytes=bad)
    frame = msgs.image(0, _frame(0, 480, 640))
    bound = int(2.5 * len(frame))
    writer = _open_writer(tmp_path, 0, max_queue_bytes=bound, fsync=False)
    accepted = sum(writer.write(IMAGE, i, frame) for i in range(200))  # far faster than any disk
    assert 0 < accepted < 200
    assert writer.dropped == 200 - accepted
    result = writer.close()
    assert 0 < result.max_queue_bytes_seen <= bound
    assert result.dropped_queue_full == 200 - accepted
    assert result.topic_counts[IMAGE] == accepted


class _FsLog:
    """Records os.fsync / os.rename / os.replace / os.mkdir / os.unlink / shutil.rmtree, in order, as
    (operation, path, ...) while still doing them."""

    def __init__(self, monkeypatch):
        self.entries: list[tuple] = []
        self._lock = threading.Lock()
        self._in_rmtree = threading.local()
        real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace
        real_mkdir, real_unlink, real_rmtree = os.mkdir, os.unlink, shutil.rmtree

        def add(*entry):
            if not getattr(self._in_rmtree, "on", False):
                with self._lock:
                    self.entries.append(entry)

        def fsync(fd):
            add("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            return real_fsync(fd)

        def published(op, real):
            def wrapper(src, dst, *args, **kwargs):
                real(src, dst, *args, **kwargs)
                dst = str(dst)
                add(op, str(src), dst, sorted(os.listdir(dst)) if os.path.isdir(dst) else None)

            return wrapper

        def mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            add("mkdir", str(path))

        def unlink(path, *args, **kwargs):
            real_unlink(path, *args, **kwargs)
            if kwargs.get("dir_fd") is None:
                add("unlink", str(path))

        def rmtree(path, *args, **kwargs):
            add("rmtree", str(path))
            self._in_rmtree.on = True
            try:
                return real_rmtree(path, *args, **kwargs)
            finally:
                self._in_rmtree.on = False

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", published("rename", real_rename))
        monkeypatch.setattr(os, "replace", published("replace", real_replace))
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(shutil, "rmtree", rmtree)

    def mark(self, phase: str) -> None:
        self.entries.append(("phase", phase))

    def index(self, *entry) -> int:
        return next(i for i, e in enumerate(self.entries) if e[: len(entry)] == entry)

    def check_published(self) -> int:
        """Every rename/replace is preceded by fsyncs of what it publishes (a file; or a directory's
        files, then the directory itself after its last change) and followed, before the next one,
        by an fsync of the destination's parent. Returns how many were checked."""
        log = self.entries
        publishes = [i for i, e in enumerate(log) if e[0] in ("rename", "replace")]
        for n, i in enumerate(publishes):
            op, src, dst, listing = log[i]
            if os.path.basename(dst) == "metadata.yaml":
                # rosbags' own temp file + replace, inside a bag directory not yet published: that
                # directory's rename (checked here too) requires metadata.yaml fsynced before it.
                continue
            synced = [(j, e[1]) for j, e in enumerate(log[:i]) if e[0] == "fsync"]
            if listing is None:  # a file
                assert any(p == src for _, p in synced), f"{op} {src} -> {dst}: {src} never fsynced before"
            else:  # a directory: its files, then the directory after its last change
                for name in listing:
                    assert any(p == os.path.join(src, name) for _, p in synced), (
                        f"{op} {src} -> {dst}: {name} not fsynced before"
                    )
                changes = [
                    j for j, e in enumerate(log[:i]) if e[0] in ("unlink", "replace", "rename", "mkdir")
                    and os.path.dirname(e[2] if e[0] in ("replace", "rename") else e[1]) == src
                ]  # fmt: skip
                last_change = max(changes, default=-1)
                assert any(j > last_change and p == src for j, p in synced), (
                    f"{op} {src} -> {dst}: the directory was not fsynced after its last change"
                )
            end = publishes[n + 1] if n + 1 < len(publishes) else len(log)
            parent = os.path.dirname(dst)
            assert ("fsync", parent) in log[i + 1 : end], f"{op} {src} -> {dst}: no fsync of {parent} after it"
        return len(publishes)


def test_every_published_file_and_directory_is_durable_before_and_after_its_rename(tmp_path, msgs, monkeypatch):
    out = tmp_path / "bags"
    fs = _FsLog(monkeypatch)
    fs.mark("start")
    writer = _open_writer(out, 0, flush_period_s=0.05)  # start + three sidecar updates
    fs.mark("started")
    episode_dir = str(out / "ep_000000.incomplete")
    # The new episode directory is made durable in its parent before start() returns.
    assert fs.index("mkdir", episode_dir) < fs.index("fsync", str(out)) < fs.index("phase", "started")
    _record(writer, msgs, 5, 1000)
    fs.mark("close")
    writer.close()

    # A crashed episode (its flushed copy) and its recovery.
    crashed = _open_writer(out, 1, flush_period_s=0.05)
    _record(crashed, msgs, 5, 1000)
    assert wait_until(lambda: crashed.flushed_messages == 25, timeout=10)
    shutil.copytree(crashed.path, out / "ep_000002.incomplete")
    crashed.discard()
    fs.mark("recover")
    partial = recover_incomplete(out / "ep_000002.incomplete")
    fs.mark("recovered")

    replaced = [e for e in fs.entries if e[0] == "replace"]
    assert len(replaced) >= 4  # the sidecar: at start and for each of the three topics
    assert fs.check_published() >= len(replaced) + 2
    # Recovery deletes its source only after the .partial bag is durable.
    source = str(out / "ep_000002.incomplete")
    published = fs.index("rename", str(out / "ep_000002.recovering"), str(partial))
    durable = next(j for j in range(published + 1, len(fs.entries)) if fs.entries[j] == ("fsync", str(out)))
    assert durable < fs.index("rmtree", source)
    assert not Path(source).exists()

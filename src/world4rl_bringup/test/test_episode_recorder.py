"""The episode recorder node over real DDS: services, bag contents read back with rosbags, a real
kill -9 mid-episode, a real full disk (tmpfs), the one-recorder-per-directory lock, failures reported
in the replies and the status topic, and the memory bounds' parameters."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from world4rl_bringup.bag_recovery import recover_incomplete
from world4rl_bringup.bag_writer import PARTIAL_SUFFIX, STATUS_INTERRUPTED, STATUS_RECOVERED
from world4rl_bringup.camera_sources import decode_frame_number
from world4rl_spec import ARM_JOINT_NAMES, topics
from world4rl_testing import NodeProcess, wait_until

pytestmark = pytest.mark.ros

RECORDER = "world4rl_bringup.episode_recorder_node"
CAMERA = "world4rl_bringup.camera_node"
SMALL_CAMERA = {"source": "test_pattern", "width": 160, "height": 120}
# The names the recorder stores these topics under in bags (rooted at '/', world4rl_spec.topics.bag_topic).
IMAGE = topics.bag_topic(topics.CAMERA_IMAGE)
CAMERA_INFO = topics.bag_topic(topics.CAMERA_INFO)
JOINTS = topics.bag_topic(topics.JOINT_STATES)
ACTION = topics.bag_topic(topics.ACTION)
EPISODE_INFO = topics.bag_topic(topics.EPISODE_INFO)


def call(node, srv_type, name, timeout=20.0, **fields):
    """Call a service; re-send while unanswered. After a kill -9 the dead server's endpoints linger in
    the DDS graph until their lease expires, so the service can look ready before the restarted
    server has matched this client, and a request sent then reaches no one (volatile QoS)."""
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            future = client.call_async(srv_type.Request(**fields))
            if wait_until(future.done, timeout=min(3.0, max(0.1, deadline - time.monotonic()))):
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"no answer from {name} within {timeout} s")
    finally:
        node.destroy_client(client)


def start(node, **fields):
    from world4rl_msgs.srv import StartEpisode

    return call(node, StartEpisode, topics.RECORDER_START, **fields)


def stop(node, **fields):
    from world4rl_msgs.srv import StopEpisode

    return call(node, StopEpisode, topics.RECORDER_STOP, **fields)


def discard(node):
    from world4rl_msgs.srv import DiscardEpisode

    return call(node, DiscardEpisode, topics.RECORDER_DISCARD)


def wait_subscribed(ros_node, wanted, nodes=(), timeout=30.0):
    def ready():
        return all(
            any(i.node_name == "episode_recorder" for i in ros_node.get_subscriptions_info_by_topic(t)) for t in wanted
        )

    assert wait_until(ready, timeout=timeout, nodes=nodes), f"recorder did not subscribe to {wanted}"


class Publishers:
    """Joint states and actions from the test process, counted exactly."""

    def __init__(self, ros_node):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState

        from world4rl_msgs.msg import Action

        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node = ros_node
        self.joints = ros_node.create_publisher(JointState, topics.JOINT_STATES, qos)
        self.actions = ros_node.create_publisher(Action, topics.ACTION, qos)
        self.JointState, self.Action = JointState, Action

    def burst(self, n: int, start: int = 0, period: float = 0.005) -> None:
        for i in range(start, start + n):
            self.joints.publish(self.JointState(name=list(ARM_JOINT_NAMES), position=[float(i)] * 7))
            self.actions.publish(self.Action(values=[0.1, 0.0, -0.1, float(i % 2)], source="test"))
            time.sleep(period)


def _assert_first_bag(bag, stopped) -> None:
    """The first episode's bag: every message of the burst, the frames without a gap, its EpisodeInfo."""
    counts = {t: n for t, (_, n) in bag["topics"].items()}
    assert counts[JOINTS] == 60
    assert counts[ACTION] == 60
    assert counts[EPISODE_INFO] == 1
    assert counts[IMAGE] >= 10
    assert abs(counts[CAMERA_INFO] - counts[IMAGE]) <= 1
    assert stopped.message_count == sum(counts.values())
    assert bag["topics"][IMAGE][0] == "sensor_msgs/msg/Image"
    assert bag["topics"][ACTION][0] == "world4rl_msgs/msg/Action"
    assert [m.position[0] for _, m in bag["messages"][JOINTS]] == [float(i) for i in range(60)]
    numbers = [
        decode_frame_number(np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3)[0])
        for _, m in bag["messages"][IMAGE]
    ]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no frame lost
    (_, info), = bag["messages"][EPISODE_INFO]  # fmt: skip
    assert (info.task, info.episode_index, info.success, info.operator_note, info.robot) == (
        "push", 0, True, "clean", "sim")  # fmt: skip
    assert bag["custom"]["world4rl.success"] == "true"
    stamps = [s for s, _ in bag["messages"][JOINTS]]
    assert stamps == sorted(stamps)
    assert abs(stamps[0] / 1e9 - time.time()) < 60


def test_start_stop_discard_and_the_bag_contents(launch_node, ros_node, tmp_path, bag_reader):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from world4rl_msgs.msg import EpisodeInfo

    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    camera = launch_node(CAMERA, "camera", params=SMALL_CAMERA)
    recorder = launch_node(RECORDER, "episode_recorder", params={"output_dir": str(out), "robot": "sim"})
    infos = []
    ros_node.create_subscription(
        EpisodeInfo,
        topics.EPISODE_INFO,
        infos.append,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    wait_subscribed(ros_node, [topics.CAMERA_IMAGE, topics.CAMERA_INFO, topics.JOINT_STATES, topics.ACTION],
                    nodes=[camera, recorder])  # fmt: skip

    assert not stop(ros_node, success=True).ok  # nothing to stop yet
    refused = start(ros_node, task="")
    assert not refused.ok
    assert "no task given" in refused.message
    traversal = start(ros_node, task="../x")
    assert not traversal.ok
    assert "StartEpisode.task: '../x' is not a valid task name" in traversal.message
    assert [p.name for p in out.iterdir()] == [".episode_recorder.lock"]  # no episode folder
    assert not (tmp_path / "x").exists()

    started = start(ros_node, task="push", operator_note="first demo")
    assert started.ok, started.message
    assert started.episode_index == 0
    assert started.bag_path == str(out / "ep_000000")
    assert "no publisher yet on /franka_gripper/joint_states" in started.message
    again = start(ros_node, task="push")
    assert not again.ok
    assert "still recording" in again.message

    pubs.burst(60)
    time.sleep(0.5)  # let the last messages arrive before the stop
    stopped = stop(ros_node, success=True, operator_note="clean")
    assert stopped.ok, stopped.message
    assert stopped.bag_path == str(out / "ep_000000")
    assert "dropped: 0 (writer queue), 0 (publisher sequence gaps)" in stopped.message

    _assert_first_bag(bag_reader(out / "ep_000000"), stopped)
    assert wait_until(lambda: len(infos) == 1, timeout=5)
    assert infos[0].task == "push"
    assert infos[0].success

    # Re-record: discard deletes the bag and the index is reused.
    assert start(ros_node, task="push").episode_index == 1
    pubs.burst(5)
    discarded = discard(ros_node)
    assert discarded.ok
    assert not (out / "ep_000001.incomplete").exists()
    failed = start(ros_node, task="push", operator_note="retry")
    assert failed.ok
    assert failed.episode_index == 1
    pubs.burst(5)
    time.sleep(0.3)
    stopped = stop(ros_node, success=False)
    assert stopped.ok
    bag = bag_reader(out / "ep_000001")
    assert bag["custom"]["world4rl.success"] == "false"
    assert bag["topics"][JOINTS][1] == 5
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["ep_000000", "ep_000001"]


def test_kill_minus_9_mid_episode_keeps_earlier_episodes_and_recovers_the_current(
    ros_domain, launch_node, ros_node, tmp_path, bag_reader
):
    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    params = {"output_dir": str(out), "flush_period_s": 0.2}
    recorder = NodeProcess(RECORDER, "episode_recorder", params=params, log_dir=tmp_path).start()
    try:
        wait_subscribed(ros_node, [topics.JOINT_STATES, topics.ACTION], nodes=[recorder])
        assert start(ros_node, task="push").ok
        pubs.burst(40)
        time.sleep(0.3)
        assert stop(ros_node, success=True).ok
        before = (out / "ep_000000" / "ep_000000.mcap").read_bytes()

        assert start(ros_node, task="push", operator_note="will crash").episode_index == 1
        pubs.burst(50)
        time.sleep(0.8)  # several flush periods: these 50 are on disk
        pubs.burst(20, start=50, period=0.0)
        os.kill(recorder.process.pid, signal.SIGKILL)
        recorder.process.wait(10)
        assert recorder.returncode == -signal.SIGKILL
    finally:
        recorder.stop()

    assert (out / "ep_000001.incomplete").is_dir()
    assert (out / "ep_000000" / "ep_000000.mcap").read_bytes() == before
    assert bag_reader(out / "ep_000000")["topics"][JOINTS][1] == 40

    # A new recorder recovers the crashed episode and continues after it.
    restarted = launch_node(RECORDER, "episode_recorder", params=params)
    # (The killed node's subscriptions linger in the DDS graph until their lease expires: wait for
    # the new node's own log line, not for the graph.)
    assert wait_until(lambda: "recording into" in restarted.stderr_tail(), timeout=30, nodes=[restarted])
    partial = out / ("ep_000001" + PARTIAL_SUFFIX)
    assert partial.is_dir()
    assert not (out / "ep_000001.incomplete").exists()
    bag = bag_reader(partial)
    positions = [m.position[0] for _, m in bag["messages"][JOINTS]]
    assert positions[:50] == [float(i) for i in range(50)]
    assert bag["custom"]["world4rl.status"] == STATUS_RECOVERED
    assert bag["custom"]["world4rl.operator_note"] == "will crash"
    assert "recovered an interrupted episode: ep_000001.incomplete -> ep_000001.partial" in restarted.stderr_tail()
    assert start(ros_node, task="push").episode_index == 2
    assert stop(ros_node, success=True).ok


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_is_reported_and_loses_no_earlier_episode(launch_node, ros_node, tiny_tmpfs, bag_reader):
    disk = tiny_tmpfs(3072)
    pubs = Publishers(ros_node)
    recorder = launch_node(
        RECORDER, "episode_recorder", params={"output_dir": str(disk), "min_free_mb": 0.0, "flush_period_s": 0.1}
    )
    wait_subscribed(ros_node, [topics.JOINT_STATES, topics.ACTION], nodes=[recorder])
    assert start(ros_node, task="push").ok
    pubs.burst(20)
    time.sleep(0.3)
    assert stop(ros_node, success=True).ok

    # Full-size frames now: 3 MiB fill within a few frames.
    camera = launch_node(CAMERA, "camera", params={"source": "test_pattern"})
    wait_subscribed(ros_node, [topics.CAMERA_IMAGE], nodes=[recorder, camera])
    assert start(ros_node, task="push").ok
    assert wait_until(lambda: "recording stopped" in recorder.stderr_tail(), timeout=20, nodes=[recorder])
    assert "the disk is full" in recorder.stderr_tail()
    stopped = stop(ros_node, success=True)
    assert not stopped.ok
    assert "episode 1 was not saved as a complete bag" in stopped.message
    assert "the disk is full" in stopped.message
    assert "earlier episodes are intact" in stopped.message
    assert bag_reader(disk / "ep_000000")["topics"][JOINTS][1] == 20
    refused = start(ros_node, task="push")
    assert not refused.ok
    assert "disk is full" in refused.message or "No space left" in refused.message
    assert recorder.is_running()


def test_one_recorder_per_directory_and_shutdown_keeps_the_episode(ros_domain, ros_node, tmp_path, bag_reader):
    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    first = NodeProcess(RECORDER, "episode_recorder", params={"output_dir": str(out)}, log_dir=tmp_path).start()
    # Only once the first holds the directory's lock: started together, either could win it.
    assert wait_until(lambda: "recording into" in first.stderr_tail(), timeout=30, nodes=[first])
    second = NodeProcess(RECORDER, "recorder2", params={"output_dir": str(out)}, log_dir=tmp_path).start()
    try:
        assert wait_until(lambda: not second.is_running(), timeout=30)
        assert second.returncode == 1
        assert "another episode_recorder is writing into this directory" in second.stderr_tail()
        wait_subscribed(ros_node, [topics.JOINT_STATES], nodes=[first])
        assert start(ros_node, task="stack").ok
        pubs.burst(10)
        time.sleep(0.3)
        assert first.stop() == 0  # SIGINT mid-episode
    finally:
        first.stop()
        second.stop()
    bag = bag_reader(out / ("ep_000000" + PARTIAL_SUFFIX))
    assert bag["custom"]["world4rl.status"] == STATUS_INTERRUPTED
    assert bag["topics"][JOINTS][1] == 10
    assert EPISODE_INFO not in bag["topics"]


def test_lock_is_released_by_a_crash(ros_domain, tmp_path):
    # flock dies with the process: a recorder killed with -9 never blocks its successor.
    out = tmp_path / "bags"
    first = NodeProcess(RECORDER, "episode_recorder", params={"output_dir": str(out)}, log_dir=tmp_path).start()
    try:
        assert wait_until(lambda: (out / ".episode_recorder.lock").exists(), timeout=30, nodes=[first])
        time.sleep(0.5)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.stop()
    second = NodeProcess(RECORDER, "episode_recorder", params={"output_dir": str(out)}, log_dir=tmp_path).start()
    try:
        assert wait_until(lambda: "recording into" in second.stderr_tail(), timeout=30, nodes=[second])
    finally:
        second.stop()


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def status_topic() -> str:
    from world4rl_bringup import episode_recorder_node

    return episode_recorder_node.STATUS_TOPIC


def subscribe_status(ros_node) -> list[dict]:
    """The recorder's status messages (std_msgs/String, JSON), decoded, as they arrive."""
    from std_msgs.msg import String

    statuses: list[dict] = []
    ros_node.create_subscription(String, status_topic(), lambda m: statuses.append(json.loads(m.data)), 10)
    return statuses


def test_start_survives_an_unusable_output_directory(launch_node, ros_node, tmp_path):
    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    recorder = launch_node(RECORDER, "episode_recorder", params={"output_dir": str(out)})
    wait_subscribed(ros_node, [topics.JOINT_STATES], nodes=[recorder])
    # The output directory is replaced by a file (a drive unmounted and its mount point reused, a
    # script gone wrong): creating the episode's bag fails with an OSError.
    for entry in out.iterdir():
        entry.unlink()
    out.rmdir()
    out.write_text("not a directory")
    refused = start(ros_node, task="push")
    assert not refused.ok
    assert str(out / "ep_000000") in refused.message  # the bag
    assert "File exists" in refused.message  # and the cause
    assert recorder.is_running()
    # Once the directory is back, recording works: the node survived.
    out.unlink()
    out.mkdir()
    started = start(ros_node, task="push")
    assert started.ok, started.message
    pubs.burst(5)
    time.sleep(0.3)
    stopped = stop(ros_node, success=True)
    assert stopped.ok, stopped.message
    assert stopped.bag_path == str(out / "ep_000000")


def test_a_name_taken_between_index_and_start_moves_on_to_the_next_index(launch_node, ros_node, tmp_path, bag_reader):
    out = tmp_path / "bags"
    out.mkdir()
    # Taken for the atomic mkdir, invisible to the listing that chose the index: the same outcome as
    # another process creating ep_000000.incomplete between the two.
    taken = out / "ep_000000.incomplete"
    taken.symlink_to(tmp_path / "nowhere")
    pubs = Publishers(ros_node)
    recorder = launch_node(RECORDER, "episode_recorder", params={"output_dir": str(out)})
    wait_subscribed(ros_node, [topics.JOINT_STATES], nodes=[recorder])
    started = start(ros_node, task="push")
    assert started.ok, started.message
    assert started.episode_index == 1
    assert started.bag_path == str(out / "ep_000001")
    pubs.burst(5)
    time.sleep(0.3)
    assert stop(ros_node, success=True).ok
    assert taken.is_symlink()
    assert bag_reader(out / "ep_000001")["topics"][JOINTS][1] == 5
    assert recorder.is_running()


def test_a_discard_that_outlasts_its_timeout_is_answered_and_finished_later(ros_domain, ros_node, tmp_path):
    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    statuses = subscribe_status(ros_node)
    params = {"output_dir": str(out), "close_timeout_s": 0.01}
    recorder = NodeProcess(RECORDER, "episode_recorder", params=params, log_dir=tmp_path).start()
    try:
        wait_subscribed(ros_node, [topics.JOINT_STATES], nodes=[recorder])
        assert start(ros_node, task="push").ok
        pubs.burst(5)
        # A slow disk: deleting this bag takes far longer (~0.1-1 s) than the 10 ms the node waits.
        junk = out / "ep_000000.incomplete" / "junk"
        junk.mkdir()
        for i in range(20_000):
            (junk / str(i)).touch()
        seen = len(statuses)
        discarded = discard(ros_node)
        assert not discarded.ok
        assert "ep_000000" in discarded.message
        assert "did not finish within" in discarded.message
        assert recorder.is_running()
        # The writer finishes in the background; the status and the next reply say so.
        assert wait_until(lambda: any(s["values"]["pending_writers"] == "1" for s in statuses[seen:]), timeout=10)
        assert wait_until(lambda: not (out / "ep_000000.incomplete").exists(), timeout=30, nodes=[recorder])
        assert wait_until(lambda: statuses[-1]["values"]["pending_writers"] == "0", timeout=10, nodes=[recorder])
        started = start(ros_node, task="push")
        assert started.ok, started.message
        assert started.episode_index == 0
        assert "episode 0 was discarded" in started.message
        assert "episode 0 was discarded" not in stop(ros_node, success=True).message  # reported once
        # A close that may still be pending (10 ms is short for a close with fsync) ends cleanly at shutdown.
        assert recorder.stop() == 0, recorder.stderr_tail()
    finally:
        recorder.stop()
    assert "Traceback" not in recorder.stderr_tail(20_000)
    assert (out / "ep_000000" / "metadata.yaml").is_file()


def test_a_writer_failure_is_reported_in_the_status_and_the_next_replies(launch_node, ros_node, tmp_path, bag_reader):
    out = tmp_path / "bags"
    pubs = Publishers(ros_node)
    statuses = subscribe_status(ros_node)
    recorder = launch_node(RECORDER, "episode_recorder", params={"output_dir": str(out), "flush_period_s": 0.1})
    wait_subscribed(ros_node, [topics.JOINT_STATES, topics.ACTION], nodes=[recorder])
    assert wait_until(lambda: statuses, timeout=10, nodes=[recorder]), "no status published"
    idle = statuses[-1]
    assert (idle["name"], idle["level"]) == ("episode_recorder", "OK")
    assert idle["values"]["recording"] == "false"
    assert start(ros_node, task="push").ok
    pubs.burst(20)
    time.sleep(0.3)
    assert wait_until(lambda: statuses[-1]["values"]["recording"] == "true", timeout=5, nodes=[recorder])
    recording = statuses[-1]
    assert recording["values"]["recording"] == "true"
    assert recording["values"]["episode_index"] == "0"
    assert recording["values"]["bag_path"] == str(out / "ep_000000")
    assert {"queued_bytes", "dropped_messages", "last_error"} <= set(recording["values"])
    assert stop(ros_node, success=True).ok
    before = tree_hashes(out / "ep_000000")

    # From now on the recorder may not write a file over 2 MB (RLIMIT_FSIZE: as a full disk would).
    soft, hard = resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE, (2_000_000, hard))
    camera = launch_node(CAMERA, "camera", params={"source": "test_pattern"})  # 640x480 at 30 fps: 2 MB in 0.1 s
    wait_subscribed(ros_node, [topics.CAMERA_IMAGE], nodes=[recorder, camera])
    assert start(ros_node, task="push").episode_index == 1

    def failed():
        return statuses and statuses[-1]["level"] == "ERROR"

    assert wait_until(failed, timeout=20, nodes=[recorder]), f"no ERROR status: {statuses[-1:]}"
    values = statuses[-1]["values"]
    assert values["recording"] == "true"
    assert values["episode_index"] == "1"
    assert "the file size limit was reached" in values["last_error"]
    assert "the file size limit was reached" in statuses[-1]["message"]
    stopped = stop(ros_node, success=True)
    assert not stopped.ok
    assert "episode 1 was not saved as a complete bag" in stopped.message
    assert "the file size limit was reached" in stopped.message
    assert "ep_000001.incomplete" in stopped.message  # what was kept
    assert wait_until(lambda: statuses[-1]["values"]["recording"] == "false", timeout=5, nodes=[recorder])
    assert statuses[-1]["level"] == "WARN"  # idle, the last episode failed
    assert "the file size limit was reached" in statuses[-1]["values"]["last_error"]

    # The limit lifted, the next episode records; its start mentions the failure, once.
    resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE, (soft, hard))
    again = start(ros_node, task="push")
    assert again.ok, again.message
    assert again.episode_index == 2
    assert "episode 1 failed" in again.message
    assert wait_until(lambda: statuses[-1]["level"] == "OK", timeout=5, nodes=[recorder])
    time.sleep(0.3)
    assert stop(ros_node, success=True).ok
    third = start(ros_node, task="push")
    assert third.ok
    assert "failed" not in third.message
    assert stop(ros_node, success=True).ok
    assert recorder.is_running()
    assert tree_hashes(out / "ep_000000") == before
    assert bag_reader(out / "ep_000000")["topics"][JOINTS][1] == 20
    recovered = bag_reader(recover_incomplete(out / "ep_000001.incomplete"))  # the failed episode is readable
    assert recovered["topics"][IMAGE][1] >= 1


def test_memory_bounds_are_parameters_with_checked_ranges(launch_node, ros_node, tmp_path):
    out = tmp_path / "bags"
    for name, value in (("max_queue_mb", 0.0), ("image_history_s", -1.0), ("qos_depth", 0)):
        node = NodeProcess(RECORDER, f"recorder_{name}", params={"output_dir": str(out), name: value}, log_dir=tmp_path)
        node.start()
        try:
            assert wait_until(lambda n=node: not n.is_running(), timeout=15), f"{name}={value} was accepted"
            assert node.returncode == 1
            assert f"parameter {name}" in node.stderr_tail()
        finally:
            node.stop()
    # Defaults: image topics keep 1 s of 30 fps frames (0.92 MB each), other topics 1000 messages.
    camera = launch_node(CAMERA, "camera", params=SMALL_CAMERA)
    recorder = launch_node(RECORDER, "episode_recorder", params={"output_dir": str(out)})
    for line in (
        f"subscribed {topics.CAMERA_IMAGE} (sensor_msgs/msg/Image, reliable, depth 30)",
        f"subscribed {topics.CAMERA_INFO} (sensor_msgs/msg/CameraInfo, reliable, depth 1000)",
    ):
        assert wait_until(
            lambda text=line: text in recorder.stderr_tail(20_000), timeout=30, nodes=[camera, recorder]
        ), f"not in the log: {line}\n{recorder.stderr_tail()}"

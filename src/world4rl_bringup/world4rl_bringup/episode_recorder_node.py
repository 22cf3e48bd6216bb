"""episode_recorder: one rosbag2 bag (MCAP) per demonstration episode, under service control.

Services (world4rl_msgs/srv):
  topics.RECORDER_START   StartEpisode(task, operator_note) -> ok, message, episode_index, bag_path
  topics.RECORDER_STOP    StopEpisode(success, operator_note) -> ok, message, bag_path, message_count
  topics.RECORDER_DISCARD DiscardEpisode() -> ok, message
Publishes: topics.EPISODE_INFO (world4rl_msgs/EpisodeInfo, reliable, transient local, depth 10)
once per stopped episode; the same message is the last one in the episode's bag.

What is recorded: the topics in parameter `topics` (default: camera image and camera_info, joint
states, the action, the gripper's joint states, and the sim's success flag where a sim publishes
it). A topic is subscribed once a publisher appears (polled every `discovery_period_s`), with that
publisher's type, so the recorder can start before or after the drivers. Messages are taken
serialized (raw CDR, never deserialized) and stamped with their receive time (rmw's
received_timestamp, system clock), as `ros2 bag record` does.

QoS (parameter `reliability`, default "auto"): reliable when every publisher of the topic offers
reliable (the camera node, sim and the stack's nodes do), else best effort, since a reliable
subscription never matches a best-effort publisher; durability transient local only if every
publisher is transient local. History: keep last `qos_depth` (default 1000) per topic: one
second of 1 kHz joint states, 33 s of 30 Hz images, so a busy executor or a bag close (< 0.5 s)
drops nothing. The history only holds messages not yet taken, so the depth costs memory only
while the node is behind.

Bag layout and crash safety: see bag_writer.py (ep_NNNNNN.incomplete/ while recording, renamed
to ep_NNNNNN/ on stop; .partial/ for recovered or disk-full bags). On start the node recovers
any .incomplete bag a crash left behind, and it holds a lock file so two recorders never write
into the same directory.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import sys
import time
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from world4rl_bringup.bag_writer import (
    STATUS_INTERRUPTED,
    BagWriteError,
    EpisodeBagWriter,
    EpisodeMeta,
    ensure_msgtype,
    episode_dir_name,
    episode_typestore,
    next_episode_index,
    recover_all_incomplete,
)
from world4rl_msgs.msg import EpisodeInfo
from world4rl_msgs.srv import DiscardEpisode, StartEpisode, StopEpisode
from world4rl_spec import topics

DEFAULT_TOPICS = [
    topics.CAMERA_IMAGE,
    topics.CAMERA_INFO,
    topics.JOINT_STATES,
    topics.ACTION,
    topics.GRIPPER_JOINT_STATES,
    # Sim only (never published on the robot): the true success flag, for per-frame success labels.
    topics.SIM_SUCCESS,
]
LOCK_NAME = ".episode_recorder.lock"


def _describe(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _qos_time(duration) -> QosTime:
    ns = duration.nanoseconds
    return QosTime(sec=ns // 1_000_000_000, nsec=ns % 1_000_000_000)


def offered_qos(profile) -> Qos:
    """rclpy QoSProfile -> rosbags Qos, for the bag's offered_qos_profiles (enum values match rmw)."""
    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=_qos_time(profile.deadline),
        lifespan=_qos_time(profile.lifespan),
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


class EpisodeRecorderNode(Node):
    def __init__(self):
        super().__init__("episode_recorder")
        p = self.declare_parameter
        self.output_dir = Path(
            os.path.expanduser(p("output_dir", "world4rl_bags", _describe("directory of the episode bags")).value)
        ).resolve()
        self.topic_names = [
            t
            for t in p("topics", DEFAULT_TOPICS, _describe("topics to record (subscribed once published)")).value
            if t != topics.EPISODE_INFO  # the recorder writes that one itself
        ]
        self.robot = p("robot", "sim", _describe("robot profile written into EpisodeInfo: sim or franka")).value
        self.default_task = p("default_task", "", _describe("task when StartEpisode gives none")).value
        self.reliability = p("reliability", "auto", _describe("auto (match publishers), reliable, best_effort")).value
        self.qos_depth = p("qos_depth", 1000, _describe("subscription history depth per topic")).value
        discovery_period = p("discovery_period_s", 0.5, _describe("poll for new publishers [s]")).value
        self.flush_period_s = p("flush_period_s", 1.0, _describe("flush the open MCAP chunk this often [s]")).value
        self.fsync = p("fsync", True, _describe("fsync at each flush and at close (power-loss safety)")).value
        self.min_free_mb = p("min_free_mb", 1024.0, _describe("refuse/stop episodes below this free space")).value
        self.max_queue_mb = p("max_queue_mb", 1024.0, _describe("writer queue bound; beyond it drop+count")).value
        recover = p("recover_on_start", True, _describe("recover .incomplete bags left by a crash")).value
        if self.reliability not in ("auto", "reliable", "best_effort"):
            raise ValueError(f"parameter reliability: {self.reliability!r} is not auto, reliable or best_effort")

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.output_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the node's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"{self.output_dir}: another episode_recorder is writing into this directory") from exc
        self._lock_file.truncate(0)
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()
        if recover:
            for bag_dir, result in recover_all_incomplete(self.output_dir):
                if isinstance(result, Exception):
                    self.get_logger().error(f"could not recover {bag_dir} (kept as is): {result}")
                else:
                    self.get_logger().warning(f"recovered an interrupted episode: {bag_dir.name} -> {result.name}")

        self.store = episode_typestore()
        self.subscriptions_by_topic: dict[str, object] = {}
        self.topic_types: dict[str, str] = {}
        self.topic_qos: dict[str, list[Qos]] = {}
        self.publisher_counts: dict[str, int] = {}
        self._reported: set[str] = set()
        self.received: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self.sequence_gaps: dict[str, int] = {}
        self.writer: EpisodeBagWriter | None = None
        self.meta: EpisodeMeta | None = None
        self._error_reported = False

        self.create_service(StartEpisode, topics.RECORDER_START, self._on_start)
        self.create_service(StopEpisode, topics.RECORDER_STOP, self._on_stop)
        self.create_service(DiscardEpisode, topics.RECORDER_DISCARD, self._on_discard)
        latched = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.info_pub = self.create_publisher(EpisodeInfo, topics.EPISODE_INFO, latched)
        self.create_timer(discovery_period, self._discover)
        self.create_timer(0.25, self._watch_writer)
        self._discover()
        self.get_logger().info(
            f"recording into {self.output_dir} (next episode {next_episode_index(self.output_dir)}); "
            f"topics: {', '.join(self.topic_names)}"
        )

    # -- subscriptions ------------------------------------------------------------------------

    def _qos_for(self, infos) -> QoSProfile:
        if self.reliability == "reliable":
            reliability = ReliabilityPolicy.RELIABLE
        elif self.reliability == "best_effort":
            reliability = ReliabilityPolicy.BEST_EFFORT
        else:
            all_reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            reliability = ReliabilityPolicy.RELIABLE if all_reliable else ReliabilityPolicy.BEST_EFFORT
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.qos_depth,
            reliability=reliability,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _discover(self) -> None:
        for topic in self.topic_names:
            infos = self.get_publishers_info_by_topic(topic)
            self.publisher_counts[topic] = len(infos)
            if topic in self.subscriptions_by_topic or not infos:
                continue
            types = sorted({i.topic_type for i in infos})
            if len(types) > 1:
                self._report_once(topic, f"{topic}: publishers disagree on the type ({', '.join(types)}); not recorded")
                continue
            msgtype = types[0]
            try:
                ensure_msgtype(self.store, msgtype)
                msg_cls = message_class(msgtype)
            except (BagWriteError, ImportError, AttributeError, ValueError) as exc:
                self._report_once(topic, f"{topic}: cannot record type {msgtype}: {exc}")
                continue
            qos = self._qos_for(infos)
            self.topic_types[topic] = msgtype
            self.topic_qos[topic] = [offered_qos(i.qos_profile) for i in infos]
            self.received[topic] = 0
            self.subscriptions_by_topic[topic] = self.create_subscription(
                msg_cls, topic, self._make_callback(topic), qos, raw=True
            )
            self.get_logger().info(f"subscribed {topic} ({msgtype}, {qos.reliability.name.lower()}, depth {qos.depth})")
            if self.writer is not None:
                self.writer.add_topic(topic, msgtype, self.topic_qos[topic])
                self.get_logger().warning(f"{topic} appeared mid-episode: recorded from now on")

    def _report_once(self, key: str, text: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.get_logger().error(text)

    def _make_callback(self, topic: str):
        received = self.received
        last_seq = self._last_seq
        gaps = self.sequence_gaps
        counts = self.publisher_counts

        def on_message(data: bytes, info) -> None:
            received[topic] += 1
            writer = self.writer
            if writer is None:
                return
            # Publisher sequence numbers expose messages lost on the way (one publisher only).
            seq = info.get("publication_sequence_number")
            if seq and counts.get(topic) == 1:
                last = last_seq.get(topic)
                if last is not None and seq > last + 1:
                    gaps[topic] = gaps.get(topic, 0) + seq - last - 1
                last_seq[topic] = seq
            writer.write(topic, info.get("received_timestamp") or time.time_ns(), data)

        return on_message

    # -- services -----------------------------------------------------------------------------

    def _on_start(self, request, response):
        if self.writer is not None:
            response.ok = False
            response.message = (
                f"episode {self.meta.index} is still recording into {self.writer.path}: stop or discard it first"
            )
            response.episode_index, response.bag_path = self.meta.index, str(self.writer.final_path)
            return response
        task = request.task or self.default_task
        if not task:
            response.ok, response.message = False, "no task given (StartEpisode.task) and no default_task parameter"
            return response
        index = next_episode_index(self.output_dir)
        meta = EpisodeMeta(
            index=index,
            task=task,
            robot=self.robot,
            operator_note=request.operator_note,
            start_ns=self.get_clock().now().nanoseconds,
        )
        writer = EpisodeBagWriter(
            self.output_dir / episode_dir_name(index),
            meta,
            self.store,
            flush_period_s=self.flush_period_s,
            fsync=self.fsync,
            min_free_bytes=int(self.min_free_mb * 1e6),
            max_queue_bytes=int(self.max_queue_mb * 1e6),
        )
        try:
            writer.start()
            for topic, msgtype in self.topic_types.items():
                writer.add_topic(topic, msgtype, self.topic_qos[topic])
        except BagWriteError as exc:
            if writer.path.exists():
                writer.discard()
            response.ok, response.message = False, str(exc)
            self.get_logger().error(f"cannot start episode {index}: {exc}")
            return response
        self._last_seq.clear()
        self.sequence_gaps.clear()
        self._error_reported = False
        self.meta, self.writer = meta, writer
        missing = [t for t in self.topic_names if t not in self.topic_types]
        response.ok = True
        response.episode_index = index
        response.bag_path = str(writer.final_path)
        response.message = f"recording episode {index} ({task}) into {writer.path}"
        if missing:
            response.message += f"; no publisher yet on {', '.join(missing)}"
        self.get_logger().info(response.message)
        return response

    def _on_stop(self, request, response):
        writer, meta = self.writer, self.meta
        if writer is None:
            response.ok, response.message = False, "no episode is recording"
            return response
        self.writer = None  # from here on, callbacks record nothing
        meta.success = bool(request.success)
        if request.operator_note:
            meta.operator_note = request.operator_note
        meta.stop_ns = self.get_clock().now().nanoseconds
        t0 = time.monotonic()
        try:
            result = writer.close(meta)
        except BagWriteError as exc:
            response.ok = False
            response.message = f"episode {meta.index} was not saved as a complete bag: {exc}"
            response.bag_path = str(writer.partial_path or writer.path)
            response.message_count = writer.message_count()
            self.get_logger().error(response.message)
            return response
        seconds = time.monotonic() - t0
        gaps = sum(self.sequence_gaps.values())
        response.ok = True
        response.bag_path = str(result.path)
        response.message_count = result.message_count
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(result.topic_counts.items()))
        response.message = (
            f"episode {meta.index} ({meta.task}, {'success' if meta.success else 'failure'}) saved to {result.path} "
            f"in {seconds:.3f} s: {result.message_count} messages ({per_topic}); "
            f"dropped: {result.dropped_queue_full} (writer queue), {gaps} (publisher sequence gaps); "
            f"peak writer queue {result.max_queue_bytes_seen / 1e6:.1f} MB"
        )
        self.get_logger().info(response.message)
        self.info_pub.publish(self._episode_info_msg(meta))
        return response

    def _on_discard(self, request, response):
        writer, meta = self.writer, self.meta
        if writer is None:
            response.ok, response.message = False, "no episode is recording"
            return response
        self.writer = None
        writer.discard()
        response.ok, response.message = True, f"episode {meta.index} discarded ({writer.path} deleted)"
        self.get_logger().info(response.message)
        return response

    def _episode_info_msg(self, meta: EpisodeMeta) -> EpisodeInfo:
        msg = EpisodeInfo(
            task=meta.task,
            episode_index=meta.index,
            success=meta.success,
            operator_note=meta.operator_note,
            robot=meta.robot,
        )
        msg.start_stamp.sec, msg.start_stamp.nanosec = divmod(meta.start_ns, 1_000_000_000)
        msg.stop_stamp.sec, msg.stop_stamp.nanosec = divmod(meta.stop_ns, 1_000_000_000)
        return msg

    # -- health -------------------------------------------------------------------------------

    def _watch_writer(self) -> None:
        writer = self.writer
        if writer is not None and writer.error is not None and not self._error_reported:
            self._error_reported = True
            # Say it at once, not only when the operator presses stop.
            self.get_logger().error(f"recording stopped: {writer.error}")

    def shutdown(self) -> None:
        """Close a running episode readable (as .partial, unlabelled) rather than leave it raw."""
        writer, self.writer = self.writer, None
        if writer is not None:
            self.meta.stop_ns = self.get_clock().now().nanoseconds
            try:
                result = writer.close(self.meta, status=STATUS_INTERRUPTED)
                self.get_logger().warning(
                    f"shut down mid-episode: episode {self.meta.index} kept unlabelled as {result.path}"
                )
            except BagWriteError as exc:
                self.get_logger().error(f"shut down mid-episode: {exc}")
        self._lock_file.close()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = EpisodeRecorderNode()
        except (RuntimeError, ValueError, OSError) as exc:
            rclpy.logging.get_logger("episode_recorder").fatal(str(exc))
            code = 1
            return
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()

"""episode_recorder: one rosbag2 bag (MCAP) per demonstration episode, under service control.

Services (world4rl_msgs/srv):
  topics.RECORDER_START   StartEpisode(task, operator_note) -> ok, message, episode_index, bag_path
  topics.RECORDER_STOP    StopEpisode(success, operator_note) -> ok, message, bag_path, message_count
  topics.RECORDER_DISCARD DiscardEpisode() -> ok, message
Publishes: topics.EPISODE_INFO (world4rl_msgs/EpisodeInfo, reliable, transient local, depth 10)
once per stopped episode; the same message is the last one in the episode's bag.
STATUS_TOPIC (std_msgs/String, JSON; reliable, transient local, depth 1) every `status_period_s`
and after every service call: {"name", "level": "OK"|"WARN"|"ERROR", "level_value": 0|1|2,
"message", "hardware_id", "values": {recording, episode_index, bag_path, queued_bytes,
dropped_messages, last_error, pending_writers, free_mb}}, the fields of a
diagnostic_msgs/DiagnosticStatus (that package is not in this workspace's environment).

Failures are never silent: a failed writer (disk full, any exception in its thread) is logged at
once, turns the status to ERROR, and is named in the reply of the next service call (stop replies
ok=false with the cause and what was kept; the next start mentions it once). A service never takes
the node down: an unexpected error becomes ok=false with the bag and the cause. A stop or discard
whose writer is still busy after `close_timeout_s` replies ok=false; the writer finishes in the
background and its outcome is reported in the status and the next reply. If another process takes
the episode's name between choosing the index and creating the bag, the next index is used.

What is recorded: the topics in parameter `topics` (default: camera image and camera_info, joint
states, the action, the gripper's joint states, and the sim's success flag where a sim publishes
it). A topic is subscribed once a publisher appears (polled every `discovery_period_s`), with that
publisher's type, so the recorder can start before or after the drivers. Messages are taken
serialized (raw CDR, never deserialized) and stamped with their receive time (rmw's
received_timestamp, system clock), as `ros2 bag record` does. Relative names (the defaults) are
resolved in the recorder's namespace and stored in the bag under world4rl_spec.topics.bag_topic's
name, rooted at '/' without the namespace: a bag recorded under /robot_a has /joint_states, as one
recorded in the root namespace, so the dataset tools read both alike.

QoS (parameter `reliability`, default "auto"): reliable when every publisher of the topic offers
reliable (the camera node, sim and the stack's nodes do), else best effort, since a reliable
subscription never matches a best-effort publisher; durability transient local only if every
publisher is transient local. History: keep last, see the memory bounds.

Memory bounds (the defaults are sized for the benchmark's two 640x480 rgb8 cameras at 30 fps:
640 x 480 x 3 B = 0.92 MB a frame, 27.6 MB/s a camera, 55 MB/s for both):
  - image topics (sensor_msgs Image, CompressedImage): keep last ceil(image_history_s x
    image_rate_hz) = 1.0 s x 30 Hz = 30 frames = 27.6 MB per camera, 55 MB for two;
  - every other topic: keep last `qos_depth` = 1000 messages: 1 s of 1 kHz joint states (~0.3 kB
    each, 0.3 MB), camera_info (~0.4 kB, 0.4 MB);
  - the writer queue (messages taken, not yet written): `max_queue_mb` = 200 MB = 3.6 s of both
    cameras; beyond it messages are dropped and counted (status, stop reply), never blocking;
  - the MCAP chunk being assembled: at most 1 MiB plus one message, ~2 MB.
Worst case, reached only while the disk stalls for more than 3.6 s: 55 + 1 + 200 + 2 = ~260 MB
above the node's own ~100 MB (Python, rclpy, Fast DDS). The histories only hold messages not yet
taken, so they cost memory only while the executor is behind (e.g. during a stop's close, < 0.5 s).
Out-of-range values are refused at start with a message naming the parameter.

Bag layout and crash safety: see bag_writer.py (ep_NNNNNN.incomplete/ while recording, renamed
to ep_NNNNNN/ on stop; .partial/ for recovered or disk-full bags). On start the node recovers
any .incomplete bag a crash left behind (streaming, memory independent of the bag's size), and it
holds a lock file so two recorders never write into the same directory.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from std_msgs.msg import String

from world4rl_bringup.bag_recovery import recover_all_incomplete
from world4rl_bringup.bag_writer import (
    STATUS_COMPLETE,
    STATUS_INTERRUPTED,
    BagWriteError,
    EpisodeBagWriter,
    EpisodeExistsError,
    EpisodeMeta,
    WriterTimeoutError,
    ensure_msgtype,
    episode_dir_name,
    episode_typestore,
    free_bytes,
    next_episode_index,
)
from world4rl_msgs.msg import EpisodeInfo
from world4rl_msgs.srv import DiscardEpisode, StartEpisode, StopEpisode
from world4rl_ros.node_main import run_node
from world4rl_spec import check_task_name, topics

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
STATUS_TOPIC = topics.RECORDER_STATUS
IMAGE_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})
NAME_ATTEMPTS = 20  # episode indices tried when names are taken under the recorder's feet
SHUTDOWN_WAIT_S = 10.0  # at shutdown, the least time given to writers to close their bags
LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2}


def _describe(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def _check(name: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"parameter {name}: {value!r} is out of range ({rule})")


def _exception_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BagWriteError) else f"{type(exc).__name__}: {exc}"


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


@dataclass
class _Pending:
    """A writer asked to close or discard that had not finished within close_timeout_s."""

    writer: EpisodeBagWriter
    meta: EpisodeMeta
    kind: str  # "close" or "discard"


class EpisodeRecorderNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("episode_recorder", **node_kwargs)
        image_history_s, image_rate_hz, discovery_period, status_period, recover = self._declare_parameters()
        self._lock_output_dir()
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
        self._pending: list[_Pending] = []
        self._notices: list[str] = []  # told in the reply of the next service call, once
        self._last_error = ""  # the latest failure, for the status
        self._last_episode_failed = False

        if recover:
            for bag_dir, result in recover_all_incomplete(self.output_dir):
                if isinstance(result, Exception):
                    self._record_failure(f"could not recover {bag_dir} (kept as is): {_exception_text(result)}")
                else:
                    self.get_logger().warning(f"recovered an interrupted episode: {bag_dir.name} -> {result.name}")

        self._create_interfaces(discovery_period, status_period)
        self._discover()
        self.get_logger().info(
            f"recording into {self.output_dir} (next episode {next_episode_index(self.output_dir)}); "
            f"topics: {', '.join(self.topic_names)}; memory bounds: image topics keep {self.image_depth} frames "
            f"({image_history_s:g} s at {image_rate_hz:g} Hz), other topics {self.qos_depth} messages, "
            f"writer queue {self.max_queue_mb:g} MB"
        )
        self._publish_status()

    def _declare_parameters(self) -> tuple[float, float, float, float, bool]:
        """Declares and checks every parameter; keeps most as attributes, returns the rest."""
        p = self.declare_parameter
        self.output_dir = Path(
            os.path.expanduser(p("output_dir", "world4rl_bags", _describe("directory of the episode bags")).value)
        ).resolve()
        self.topic_names = [
            t
            for t in p(
                "topics",
                DEFAULT_TOPICS,
                _describe("topics to record (subscribed once published); relative names: in the node's namespace"),
            ).value
            if t != topics.EPISODE_INFO  # the recorder writes that one itself
        ]
        self.bag_names = {t: self._bag_name(t) for t in self.topic_names}
        self.robot = p("robot", "sim", _describe("robot profile written into EpisodeInfo: sim or franka")).value
        self.default_task = p("default_task", "", _describe("task when StartEpisode gives none")).value
        self.reliability = p("reliability", "auto", _describe("auto (match publishers), reliable, best_effort")).value
        self.qos_depth = p("qos_depth", 1000, _describe("keep-last depth of non-image topics [messages]")).value
        image_history_s = p(
            "image_history_s", 1.0, _describe("image topics keep this much history while the node is behind [s]")
        ).value
        image_rate_hz = p("image_rate_hz", 30.0, _describe("the highest image rate, for image_history_s [Hz]")).value
        discovery_period = p("discovery_period_s", 0.5, _describe("poll for new publishers [s]")).value
        self.flush_period_s = p("flush_period_s", 1.0, _describe("flush the open MCAP chunk this often [s]")).value
        self.fsync = p("fsync", True, _describe("fsync at each flush and at close (power-loss safety)")).value
        self.min_free_mb = p("min_free_mb", 1024.0, _describe("refuse/stop episodes below this free space")).value
        self.max_queue_mb = p("max_queue_mb", 200.0, _describe("writer queue bound [MB]; beyond it drop+count")).value
        self.close_timeout_s = p(
            "close_timeout_s", 30.0, _describe("how long stop/discard wait for the writer before replying [s]")
        ).value
        status_period = p("status_period_s", 1.0, _describe("publish the status this often [s]")).value
        recover = p("recover_on_start", True, _describe("recover .incomplete bags left by a crash")).value
        if self.reliability not in ("auto", "reliable", "best_effort"):
            raise ValueError(f"parameter reliability: {self.reliability!r} is not auto, reliable or best_effort")
        _check("qos_depth", self.qos_depth, self.qos_depth >= 1, "at least 1 message")
        _check("image_history_s", image_history_s, image_history_s > 0, "> 0 s")
        _check("image_rate_hz", image_rate_hz, image_rate_hz > 0, "> 0 Hz")
        _check("max_queue_mb", self.max_queue_mb, self.max_queue_mb > 0, "> 0 MB")
        _check("flush_period_s", self.flush_period_s, self.flush_period_s >= 0, ">= 0 s")
        _check("min_free_mb", self.min_free_mb, self.min_free_mb >= 0, ">= 0 MB")
        _check("close_timeout_s", self.close_timeout_s, self.close_timeout_s > 0, "> 0 s")
        _check("discovery_period_s", discovery_period, discovery_period > 0, "> 0 s")
        _check("status_period_s", status_period, status_period > 0, "> 0 s")
        self.image_depth = max(1, math.ceil(image_history_s * image_rate_hz))
        return image_history_s, image_rate_hz, discovery_period, status_period, recover

    def _bag_name(self, topic: str) -> str:
        """The name `topic` is stored under in bags; ValueError naming the parameter if unusable."""
        try:
            self.resolve_topic_name(topic)
            return topics.bag_topic(topic)
        except Exception as exc:
            raise ValueError(f"parameter topics: {topic!r} cannot be recorded: {exc}") from exc

    def _lock_output_dir(self) -> None:
        """One recorder per output directory: an exclusive lock held for the node's life."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.output_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the node's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"{self.output_dir}: another episode_recorder is writing into this directory") from exc
        self._lock_file.truncate(0)
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    def _create_interfaces(self, discovery_period: float, status_period: float) -> None:
        self.create_service(StartEpisode, topics.RECORDER_START, self._guarded("start", self._on_start))
        self.create_service(StopEpisode, topics.RECORDER_STOP, self._guarded("stop", self._on_stop))
        self.create_service(DiscardEpisode, topics.RECORDER_DISCARD, self._guarded("discard", self._on_discard))
        latched = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.info_pub = self.create_publisher(EpisodeInfo, topics.EPISODE_INFO, latched)
        status_qos = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.status_pub = self.create_publisher(String, STATUS_TOPIC, status_qos)
        self.create_timer(discovery_period, self._discover)
        self.create_timer(0.25, self._watch_writers)
        self.create_timer(status_period, self._publish_status)

    # -- subscriptions ------------------------------------------------------------------------

    def _qos_for(self, infos, depth: int) -> QoSProfile:
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
            depth=depth,
            reliability=reliability,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _discover(self) -> None:
        try:
            self._discover_topics()
        except Exception as exc:  # a timer never takes the node down
            self._report_once("discovery", f"discovering publishers failed: {_exception_text(exc)}")

    def _discover_topics(self) -> None:
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
            qos = self._qos_for(infos, self.image_depth if msgtype in IMAGE_TYPES else self.qos_depth)
            self.topic_types[topic] = msgtype
            self.topic_qos[topic] = [offered_qos(i.qos_profile) for i in infos]
            self.received[topic] = 0
            self.subscriptions_by_topic[topic] = self.create_subscription(
                msg_cls, topic, self._make_callback(topic), qos, raw=True
            )
            self.get_logger().info(f"subscribed {topic} ({msgtype}, {qos.reliability.name.lower()}, depth {qos.depth})")
            if self.writer is not None:
                self.writer.add_topic(self.bag_names[topic], msgtype, self.topic_qos[topic])
                self.get_logger().warning(f"{topic} appeared mid-episode: recorded from now on")

    def _report_once(self, key: str, text: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.get_logger().error(text)

    def _make_callback(self, topic: str):
        bag_name = self.bag_names[topic]
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
            writer.write(bag_name, info.get("received_timestamp") or time.time_ns(), data)

        return on_message

    # -- services -----------------------------------------------------------------------------

    def _guarded(self, name: str, handler):
        """A service callback that never raises (an exception in a callback ends rclpy's spin, and
        the node with it) and that tells the caller what happened since the last call, once."""

        def callback(request, response):
            notices, self._notices = self._notices, []
            try:
                response = handler(request, response)
            except Exception as exc:
                self.get_logger().error(f"{name}: unexpected error\n{traceback.format_exc()}")
                response.ok = False
                response.message = f"{name} failed unexpectedly: {_exception_text(exc)}"
                self._last_error = response.message
            if notices:
                response.message += " | since the last call: " + "; ".join(notices)
            self._publish_status()
            return response

        return callback

    def _record_failure(self, text: str, notice: str | None = None) -> None:
        """Log a failure, keep it for the status, and tell it in the next service reply."""
        self.get_logger().error(text)
        self._last_error = text
        self._notices.append(notice or text)

    def _new_writer(self, index: int, meta: EpisodeMeta) -> EpisodeBagWriter:
        return EpisodeBagWriter(
            self.output_dir / episode_dir_name(index),
            meta,
            self.store,
            flush_period_s=self.flush_period_s,
            fsync=self.fsync,
            min_free_bytes=int(self.min_free_mb * 1e6),
            max_queue_bytes=int(self.max_queue_mb * 1e6),
        )

    def _refuse(self, response, message: str):
        """Reply ok=false with `message`, remembered for the status, and log it."""
        response.ok, response.message = False, message
        self._last_error = message
        self.get_logger().error(message)
        return response

    def _start_failed(self, response, index: int, writer: EpisodeBagWriter, exc: BaseException):
        response.episode_index, response.bag_path = index, str(writer.final_path)
        return self._refuse(response, f"cannot start episode {index} ({writer.final_path}): {_exception_text(exc)}")

    def _on_start(self, request, response):
        if self.writer is not None:
            response.ok = False
            response.message = (
                f"episode {self.meta.index} is still recording into {self.writer.path}: stop or discard it first"
            )
            if self.writer.error is not None:
                response.message += f" (its recording has failed: {self.writer.error})"
            response.episode_index, response.bag_path = self.meta.index, str(self.writer.final_path)
            return response
        task = request.task or self.default_task
        if not task:
            response.ok, response.message = False, "no task given (StartEpisode.task) and no default_task parameter"
            return response
        try:  # refused now, not after a whole episode that no dataset would take
            check_task_name(task, "StartEpisode.task")
        except ValueError as exc:
            response.ok, response.message = False, str(exc)
            return response
        writer = meta = None
        index = next_episode_index(self.output_dir)
        for _ in range(NAME_ATTEMPTS):
            meta = EpisodeMeta(
                index=index,
                task=task,
                robot=self.robot,
                operator_note=request.operator_note,
                start_ns=self.get_clock().now().nanoseconds,
            )
            candidate = self._new_writer(index, meta)
            try:
                candidate.start()
            except EpisodeExistsError as exc:
                # Taken since next_episode_index() looked (another process, a stray link): move on.
                self.get_logger().warning(f"episode {index}: {exc}; trying the next index")
                index = max(index + 1, next_episode_index(self.output_dir))
                continue
            except Exception as exc:
                return self._start_failed(response, index, candidate, exc)
            writer = candidate
            break
        if writer is None:
            return self._refuse(
                response,
                f"cannot start an episode: {NAME_ATTEMPTS} episode names up to {episode_dir_name(index)} "
                f"were taken in {self.output_dir} while the recorder tried them",
            )
        try:
            for topic, msgtype in self.topic_types.items():
                writer.add_topic(self.bag_names[topic], msgtype, self.topic_qos[topic])
        except Exception as exc:
            self._discard_quietly(writer, meta)
            return self._start_failed(response, index, writer, exc)
        self._last_seq.clear()
        self.sequence_gaps.clear()
        self._error_reported = False
        self._last_episode_failed = False
        self.meta, self.writer = meta, writer
        missing = [t for t in self.topic_names if t not in self.topic_types]
        response.ok = True
        response.episode_index = index
        response.bag_path = str(writer.final_path)
        response.message = f"recording episode {index} ({task}) into {writer.path}"
        if missing:
            response.message += f"; no publisher yet on {', '.join(self.resolve_topic_name(t) for t in missing)}"
        self.get_logger().info(response.message)
        return response

    def _discard_quietly(self, writer: EpisodeBagWriter, meta: EpisodeMeta) -> None:
        try:
            writer.discard(timeout=self.close_timeout_s)
        except WriterTimeoutError:
            self._pending.append(_Pending(writer, meta, "discard"))
        except BagWriteError as exc:
            self._record_failure(f"episode {meta.index}: discarding its bag failed: {exc}")

    def _take_episode(self, response) -> tuple[EpisodeBagWriter, EpisodeMeta] | None:
        """The recording episode's writer and meta, detached (from here on, callbacks record nothing);
        None, with the refusal in `response`, when no episode is recording."""
        writer, meta = self.writer, self.meta
        if writer is None:
            response.ok, response.message = False, "no episode is recording"
            return None
        self.writer = None
        return writer, meta

    def _deferred(self, response, pending: _Pending, exc: WriterTimeoutError, later: str):
        """The reply when the writer did not finish within close_timeout_s: it finishes later (`later`
        says what then happens), and the status and the next reply tell."""
        self._pending.append(pending)
        response.ok = False
        response.message = (
            f"episode {pending.meta.index} is not {'saved' if pending.kind == 'close' else 'discarded'} yet: {exc}; "
            f"{later} when the writer finishes (told in the status and the next reply)"
        )
        self.get_logger().warning(response.message)
        return response

    def _on_stop(self, request, response):
        if (episode := self._take_episode(response)) is None:
            return response
        writer, meta = episode
        meta.success = bool(request.success)
        if request.operator_note:
            meta.operator_note = request.operator_note
        meta.stop_ns = self.get_clock().now().nanoseconds
        t0 = time.monotonic()
        try:
            result = writer.close(meta, timeout=self.close_timeout_s)
        except WriterTimeoutError as exc:
            response.bag_path = str(writer.final_path)
            response.message_count = writer.message_count()
            return self._deferred(response, _Pending(writer, meta, "close"), exc, f"it is saved to {writer.final_path}")
        except BagWriteError as exc:
            response.ok = False
            response.message = f"episode {meta.index} was not saved as a complete bag: {exc}"
            response.bag_path = str(writer.partial_path or writer.path)
            response.message_count = writer.message_count()
            self._last_episode_failed = True
            self._record_failure(response.message, notice=f"the previous episode {meta.index} failed: {exc}")
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
        self._publish_episode_info(meta)
        return response

    def _on_discard(self, request, response):
        if (episode := self._take_episode(response)) is None:
            return response
        writer, meta = episode
        failure = writer.error
        try:
            writer.discard(timeout=self.close_timeout_s)
        except WriterTimeoutError as exc:
            return self._deferred(response, _Pending(writer, meta, "discard"), exc, f"{writer.path} is deleted")
        except BagWriteError as exc:
            response.ok = False
            response.message = f"episode {meta.index} could not be discarded: {exc}"
            self._record_failure(response.message)
            return response
        response.ok, response.message = True, f"episode {meta.index} discarded ({writer.path} deleted)"
        if failure is not None:
            response.message += f"; its recording had failed: {failure}"
        self.get_logger().info(response.message)
        return response

    def _publish_episode_info(self, meta: EpisodeMeta) -> None:
        if not self.context.ok():  # at shutdown: the bag holds the same EpisodeInfo
            return
        try:
            self.info_pub.publish(self._episode_info_msg(meta))
        except Exception as exc:
            self.get_logger().error(f"episode {meta.index}: publishing EpisodeInfo failed: {_exception_text(exc)}")

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

    def _watch_writers(self) -> None:
        try:
            writer = self.writer
            if writer is not None and writer.error is not None and not self._error_reported:
                self._error_reported = True
                self._last_error = f"episode {self.meta.index}: {writer.error}"
                # Say it at once, not only when the operator presses stop.
                self.get_logger().error(f"recording stopped: {writer.error}")
                self._publish_status()
            for pending in [p for p in self._pending if p.writer.finished]:
                self._pending.remove(pending)
                self._settle(pending)
                self._publish_status()
        except Exception as exc:  # a timer never takes the node down
            self._report_once("watch", f"watching the writers failed: {_exception_text(exc)}")

    def _settle(self, pending: _Pending) -> None:
        """A close or discard that outlasted its service call has finished: say how."""
        writer, meta = pending.writer, pending.meta
        if pending.kind == "discard":
            if writer.end_error is not None:
                self._record_failure(f"episode {meta.index}: discarding its bag failed: {writer.end_error}")
            else:
                text = f"episode {meta.index} was discarded ({writer.path} deleted)"
                self.get_logger().info(text)
                self._notices.append(text)
            return
        if writer.error is not None or writer.result is None:
            self._last_episode_failed = True
            self._record_failure(
                f"episode {meta.index} was not saved as a complete bag: {writer.error}",
                notice=f"the previous episode {meta.index} failed: {writer.error}",
            )
            return
        result = writer.result
        text = f"episode {meta.index} was saved to {result.path} after its stop ({result.message_count} messages)"
        self.get_logger().info(text)
        self._notices.append(text)
        if result.status == STATUS_COMPLETE:
            self._publish_episode_info(meta)

    def status(self) -> dict:
        """The recorder's health, shaped like a diagnostic_msgs/DiagnosticStatus."""
        writer, meta = self.writer, self.meta
        gaps = sum(self.sequence_gaps.values())
        if writer is not None and writer.error is not None:
            level, message = "ERROR", f"episode {meta.index}: recording stopped: {writer.error}"
        elif writer is not None:
            dropped = writer.dropped + gaps
            level = "WARN" if dropped else "OK"
            message = f"recording episode {meta.index} into {writer.path}"
            if dropped:
                message += f"; {writer.dropped} messages dropped (writer queue full), {gaps} lost on the way"
        elif self._last_episode_failed:
            level, message = "WARN", f"idle; the last episode failed: {self._last_error}"
        else:
            level, message = "OK", "idle"
        if self._pending:
            level = "WARN" if level == "OK" else level
            message += f"; {len(self._pending)} earlier episode(s) still being closed or discarded"
        try:
            free_mb = f"{free_bytes(self.output_dir) / 1e6:.0f}"
        except OSError as exc:
            free_mb = f"unknown ({exc.strerror})"
        values = {
            "recording": "true" if writer is not None else "false",
            "episode_index": str(meta.index) if writer is not None else "",
            "bag_path": str(writer.final_path) if writer is not None else "",
            "queued_bytes": str(writer.queued_bytes if writer is not None else 0),
            "dropped_messages": str((writer.dropped + gaps) if writer is not None else 0),
            "last_error": self._last_error,
            "pending_writers": str(len(self._pending)),
            "free_mb": free_mb,
        }
        return {
            "name": self.get_name(),
            "level": level,
            "level_value": LEVELS[level],
            "message": message,
            "hardware_id": str(self.output_dir),
            "values": values,
        }

    def _publish_status(self) -> None:
        if not self.context.ok():
            return
        try:
            self.status_pub.publish(String(data=json.dumps(self.status())))
        except Exception as exc:  # a timer never takes the node down
            self._report_once("status", f"publishing the status failed: {_exception_text(exc)}")

    def shutdown(self) -> None:
        """Close a running episode readable (as .partial, unlabelled) rather than leave it raw, and
        let writers still closing or discarding finish."""
        writer, self.writer = self.writer, None
        wait = max(self.close_timeout_s, SHUTDOWN_WAIT_S)
        if writer is not None:
            self.meta.stop_ns = self.get_clock().now().nanoseconds
            try:
                result = writer.close(self.meta, timeout=wait, status=STATUS_INTERRUPTED)
                self.get_logger().warning(
                    f"shut down mid-episode: episode {self.meta.index} kept unlabelled as {result.path}"
                )
            except BagWriteError as exc:
                self.get_logger().error(f"shut down mid-episode: {exc}")
        for pending in self._pending:
            if pending.writer.wait(wait):
                self._settle(pending)
            else:
                self.get_logger().error(
                    f"episode {pending.meta.index}: the writer did not finish; {pending.writer.path} is recovered "
                    f"(or left for deletion) when the recorder next starts"
                )
        self._pending.clear()
        self._lock_file.close()


def main(args=None) -> None:
    run_node(
        EpisodeRecorderNode, args=args, setup_errors=(RuntimeError, ValueError, OSError), logger_name="episode_recorder"
    )


if __name__ == "__main__":
    main()

"""Episode bags: one rosbag2 directory (MCAP storage) per episode, written with the pure-Python
`rosbags` library so that it opens in `ros2 bag info`, Foxglove and PlotJuggler. ROS-free: the
recorder node feeds it serialized (CDR) messages, tests and tools use it directly.

Layout in the recorder's output directory (N = episode index, 6 digits):

    ep_00000N.incomplete/   being written, or left behind by a crash: MCAP without a summary
                            (not readable by rosbags as is) + world4rl_episode.json (sidecar)
    ep_00000N/              a cleanly stopped episode: metadata.yaml + ep_00000N.mcap, with one
                            world4rl_msgs/msg/EpisodeInfo on /world4rl/episode_info and the same
                            fields in metadata.yaml's custom_data (keys "world4rl.*")
    ep_00000N.partial/      readable, but not a labelled episode: recovered from an .incomplete
                            bag (every message up to its last flushed chunk) or stopped because the
                            disk ran low; custom_data "world4rl.status" says which, no EpisodeInfo

Crash safety: a bag is only renamed to its final name after its summary, metadata.yaml and an
fsync, so a name without a suffix always means a complete bag. While recording, the pending MCAP
chunk is closed and written out every `flush_period_s` (and whenever it exceeds 1 MiB), so a
`kill -9` loses at most that period; `recover_incomplete(dir)` (bag_recovery.py) turns what was
flushed into a readable `.partial` bag, streaming (one MCAP chunk, about 1 MiB, in memory at a time).

Durability (power loss, with fsync on): every file is fsynced before the rename or replace that
publishes it (a directory: its files, then the directory itself), and the parent directory is
fsynced after it; a new episode directory is fsynced into its parent before start() returns; the
sidecar is replaced atomically (world4rl_model.atomic_io); recovery deletes its source only after
the `.partial` bag is durable.

Messages arrive in the caller's thread and are written by a writer thread, so a slow disk never
blocks the ROS executor (the queue is bounded by `max_queue_bytes`; overflow is counted, not hidden).
Any exception in the writer thread becomes `error` (a BagWriteError naming the bag, the topic and
the cause, chained), the thread keeps draining until close/discard, and close() raises it at once.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import CompressionMode, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from world4rl_model.atomic_io import atomic_write_bytes, fsync_path
from world4rl_spec import topics

EPISODE_INFO_TYPE = "world4rl_msgs/msg/EpisodeInfo"
INCOMPLETE_SUFFIX = ".incomplete"
RECOVERING_SUFFIX = ".recovering"
PARTIAL_SUFFIX = ".partial"
SIDECAR_NAME = "world4rl_episode.json"
EPISODE_PREFIX = "ep_"
CUSTOM_PREFIX = "world4rl."
ROSBAG_VERSION = 9  # Jazzy's; rosbags also writes 8 (Humble-readable)
# The writer queue's default bound: ~3.6 s of two 640x480 rgb8 cameras at 30 fps (2 x 27.6 MB/s).
DEFAULT_MAX_QUEUE_BYTES = 200_000_000

STATUS_COMPLETE = "complete"
STATUS_RECOVERED = "recovered"  # rebuilt from an .incomplete bag after a crash or a write error
STATUS_DISK_FULL = "disk_full"  # stopped because free space fell below the reserve
STATUS_INTERRUPTED = "interrupted"  # the recorder was shut down mid-episode


class BagWriteError(RuntimeError):
    """Writing an episode bag failed; the message names the bag and the cause."""


class DiskFullError(BagWriteError):
    """The disk (or the file size limit) ran out while recording."""


class EpisodeExistsError(BagWriteError):
    """The episode's name is taken (e.g. it appeared between choosing the index and start())."""


class WriterTimeoutError(BagWriteError):
    """close()/discard() stopped waiting for the writer thread; it goes on and finishes on its own
    (check `finished`, then `error` / `result`)."""


def episode_dir_name(index: int) -> str:
    return f"{EPISODE_PREFIX}{index:06d}"


def parse_episode_index(name: str) -> int | None:
    """`ep_000012`, `ep_000012.incomplete`, `ep_000012.partial` -> 12; anything else -> None."""
    stem = name.split(".", 1)[0]
    if not stem.startswith(EPISODE_PREFIX):
        return None
    digits = stem[len(EPISODE_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def next_episode_index(output_dir: str | os.PathLike) -> int:
    """One past the highest index of any episode directory (complete, partial or incomplete)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return 0
    indices = [parse_episode_index(p.name) for p in output_dir.iterdir() if p.is_dir()]
    return 1 + max((i for i in indices if i is not None), default=-1)


def free_bytes(path: str | os.PathLike) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _describe_exception(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {exc}"


def _publish_dir(src: Path, dst: Path, files: Iterable[Path] = ()) -> None:
    """Rename a finished bag directory into place durably: fsync its files and the directory (its
    entries), rename, fsync the parent (the rename)."""
    for file in files:
        fsync_path(file)
    fsync_path(src)
    src.rename(dst)
    fsync_path(dst.parent)


# --------------------------------------------------------------------------------------------
# Message types


def _ament_share_dirs(package: str) -> Iterator[Path]:
    """share/PACKAGE directories: on AMENT_PREFIX_PATH, then above the package's Python module
    (PREFIX/lib/pythonX/site-packages/PACKAGE -> PREFIX/share/PACKAGE), which also finds packages
    whose prefix is not on AMENT_PREFIX_PATH."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share" / package).is_dir():
            yield Path(prefix) / "share" / package
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for parent in list(Path(location).resolve().parents)[:6]:
                if (parent / "share" / package).is_dir():
                    yield parent / "share" / package
                    break


def _register_package_msgs(store: Typestore, package: str) -> bool:
    """Register every .msg of an installed ROS package (found through AMENT_PREFIX_PATH)."""
    for share in _ament_share_dirs(package):
        msg_dir = share / "msg"
        if not msg_dir.is_dir():
            continue
        types = {}
        for msg_file in sorted(msg_dir.glob("*.msg")):
            types.update(get_types_from_msg(msg_file.read_text(), f"{package}/msg/{msg_file.stem}"))
        store.register(types)
        return True
    return False


def ensure_msgtype(store: Typestore, msgtype: str) -> None:
    """Make `msgtype` (and the types it uses) known to the typestore, from the installed .msg files
    when rosbags' built-in Jazzy store lacks it (world4rl_msgs, franka_msgs, ...)."""
    pending = [msgtype]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in store.fielddefs:
            package = name.split("/", 1)[0]
            if not _register_package_msgs(store, package) or name not in store.fielddefs:
                raise BagWriteError(
                    f"message type {name} is unknown: neither rosbags' Jazzy typestore nor any "
                    f"share/{package}/msg/ on AMENT_PREFIX_PATH defines it"
                )
        _, fields = store.fielddefs[name]
        for _, node in fields:
            pending.extend(_named_types(node))


def _named_types(node) -> list[str]:
    """The message types a field definition refers to (through arrays and sequences)."""
    nodetype, detail = node
    if nodetype == Nodetype.NAME:
        return [detail]
    if nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        return _named_types(detail[0])
    return []


def episode_typestore() -> Typestore:
    """rosbags' ROS 2 Jazzy typestore plus the world4rl_msgs messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    ensure_msgtype(store, EPISODE_INFO_TYPE)
    return store


# --------------------------------------------------------------------------------------------
# The episode's description


@dataclass
class EpisodeMeta:
    """What the recorder knows about an episode; becomes EpisodeInfo and custom_data at stop."""

    index: int
    task: str
    robot: str = ""
    operator_note: str = ""
    start_ns: int = 0
    stop_ns: int = 0
    success: bool = False

    def custom_data(self, status: str) -> dict[str, str]:
        data = {
            "task": self.task,
            "episode_index": str(self.index),
            "robot": self.robot,
            "operator_note": self.operator_note,
            "start_ns": str(self.start_ns),
            "status": status,
            "format_version": "1",
        }
        if status == STATUS_COMPLETE:
            data["success"] = "true" if self.success else "false"
            data["stop_ns"] = str(self.stop_ns)
        return {CUSTOM_PREFIX + key: value for key, value in data.items()}


def episode_info_cdr(store: Typestore, meta: EpisodeMeta) -> bytes:
    """Serialize the episode's world4rl_msgs/msg/EpisodeInfo (CDR, as rclpy would)."""
    time_type = store.types["builtin_interfaces/msg/Time"]
    info_type = store.types[EPISODE_INFO_TYPE]

    def stamp(ns: int):
        return time_type(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    msg = info_type(
        task=meta.task,
        episode_index=int(meta.index),
        success=bool(meta.success),
        operator_note=meta.operator_note,
        robot=meta.robot,
        start_stamp=stamp(meta.start_ns),
        stop_stamp=stamp(meta.stop_ns),
    )
    return bytes(store.serialize_cdr(msg, EPISODE_INFO_TYPE))


@dataclass
class CloseResult:
    path: Path
    status: str
    message_count: int
    topic_counts: dict[str, int]
    close_seconds: float
    dropped_queue_full: int = 0
    max_queue_bytes_seen: int = 0


# --------------------------------------------------------------------------------------------
# Writing


class _FlushableMcapWriter(McapWriter):
    """rosbags' MCAP storage, plus: the file is named after the episode (not the temporary
    directory), and the pending chunk can be flushed to the OS (and the disk) on demand."""

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        stem = path.name
        for suffix in (INCOMPLETE_SUFFIX, RECOVERING_SUFFIX):
            stem = stem.removesuffix(suffix)
        # rosbags' McapWriter.__init__ opens `path / f"{path.name}.mcap"`: give it the final stem.
        super().__init__(_StemDir(path, stem), compression)  # type: ignore[arg-type]

    def flush(self, fsync: bool) -> None:
        if self.chunk.bio.tell():
            self.close_chunk()
        self.bio.flush()
        if fsync:
            os.fsync(self.bio.fileno())

    def abort_quietly(self) -> None:
        # Drop whatever the buffered file still holds: its flush would fail again on a full disk.
        with contextlib.suppress(OSError, ValueError):
            os.close(self.bio.fileno())
        with contextlib.suppress(OSError, ValueError):
            self.bio.close()


class _StemDir:
    """Stands in for the bag directory in McapWriter.__init__, which only uses `path.name` and
    `path / file`: the name is the episode's stem, the files land in the real directory."""

    def __init__(self, real: Path, name: str):
        self.real = real
        self.name = name

    def __truediv__(self, other: str) -> Path:
        return self.real / other


class _EpisodeWriter(Writer):
    STORAGE_PLUGINS = {StoragePlugin.MCAP: _FlushableMcapWriter}  # noqa: RUF012 (rosbags' own mapping type)
    claimed = False  # True once open() created the directory: only then is it ours to delete

    def open(self) -> None:
        """rosbags' open(), but the bag directory is claimed with one atomic mkdir (its parent must
        exist): FileExistsError if anything, even a dangling link, has the name."""
        self.path.mkdir(mode=0o755)
        self.claimed = True
        self.storage = self.STORAGE_PLUGINS[self.storage_plugin](self.path, self.compression_mode)


_CLOSE = "close"
_DISCARD = "discard"
_CONN = "conn"


@dataclass
class _Sidecar:
    """Written at start (and when a topic is added) so that recovery needs no typestore."""

    format: str = "world4rl-episode-sidecar"
    meta: dict = field(default_factory=dict)
    connections: list[dict] = field(default_factory=list)


class EpisodeBagWriter:
    """Writes one episode bag from a writer thread. Use: start(); add_topic()/write() from any
    thread; then exactly one of close(meta) or discard(). Errors surface through `error` at once
    and as an exception from close()."""

    def __init__(
        self,
        final_path: str | os.PathLike,
        meta: EpisodeMeta,
        store: Typestore,
        *,
        flush_period_s: float = 1.0,
        fsync: bool = True,
        min_free_bytes: int = 0,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    ):
        if int(max_queue_bytes) <= 0:
            raise ValueError(f"max_queue_bytes must be > 0 (got {max_queue_bytes}): it bounds the writer queue")
        if float(flush_period_s) < 0:
            raise ValueError(f"flush_period_s must be >= 0 (got {flush_period_s})")
        self.final_path = Path(final_path)
        self.path = self.final_path.with_name(self.final_path.name + INCOMPLETE_SUFFIX)
        self.meta = meta
        self.store = store
        self.flush_period_s = float(flush_period_s)
        self.fsync = bool(fsync)
        self.min_free_bytes = int(min_free_bytes)
        self.max_queue_bytes = int(max_queue_bytes)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._max_queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._dropped = 0
        self._topics: dict[str, str] = {}  # topic -> msgtype (caller side)
        self._connections: dict[str, object] = {}  # topic -> rosbags Connection (writer thread)
        self._counts: dict[str, int] = {}
        self._sidecar = _Sidecar(meta=asdict(meta))
        self._writer: _EpisodeWriter | None = None
        self._thread: threading.Thread | None = None
        self._result: CloseResult | None = None
        self.error: BagWriteError | None = None
        self._end_error: BagWriteError | None = None  # close/discard itself failed
        self.partial_path: Path | None = None  # set when the disk reserve stopped the episode
        self.flushed_messages = 0  # messages that a kill -9 can no longer lose (recoverable)
        self._finished = threading.Event()
        self._close_log_ns = 0

    # -- caller side ------------------------------------------------------------------------

    def start(self) -> EpisodeBagWriter:
        """Create NAME.incomplete/ (atomically: EpisodeExistsError if the name is taken) and start
        the writer thread. Any failure is a BagWriteError naming the bag and the cause."""
        partial = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        for taken in (self.final_path, partial):
            if taken.exists() or taken.is_symlink():
                raise EpisodeExistsError(f"{taken}: an episode bag with this name exists already")
        parent = self.final_path.parent
        try:
            created_parent = not parent.is_dir()
            parent.mkdir(parents=True, exist_ok=True)
            if created_parent and self.fsync:
                fsync_path(parent.parent)
            free = free_bytes(parent) if self.min_free_bytes else 0
        except OSError as exc:
            raise BagWriteError(f"{self.final_path}: cannot use the output directory {parent}: {exc}") from exc
        if self.min_free_bytes and free < self.min_free_bytes:
            raise DiskFullError(
                f"{parent}: only {free / 1e6:.0f} MB free, "
                f"below the recorder's reserve of {self.min_free_bytes / 1e6:.0f} MB; free some space"
            )
        writer = None
        try:
            writer = _EpisodeWriter(self.path, version=ROSBAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            writer.open()
            self._writer = writer
            self._write_sidecar()
            if self.fsync:  # the MCAP header, the directory's entries, the directory in its parent
                writer.storage.flush(fsync=True)
                fsync_path(self.path)
                fsync_path(parent)
        except Exception as exc:
            self._writer = None
            claimed = writer is not None and writer.claimed
            if getattr(writer, "storage", None) is not None:
                writer.storage.abort_quietly()
            if claimed:  # never delete what another writer (or anything else) owns
                shutil.rmtree(self.path, ignore_errors=True)
            name_taken = isinstance(exc, FileExistsError) or (
                isinstance(exc, WriterError) and os.path.lexists(self.path)
            )
            if name_taken and not claimed:
                raise EpisodeExistsError(
                    f"{self.path}: the name was taken before this episode could claim it ({exc})"
                ) from exc
            if isinstance(exc, OSError):
                raise self._os_error(exc, "creating the bag") from exc
            raise BagWriteError(f"{self.path}: creating the bag failed: {_describe_exception(exc)}") from exc
        self._thread = threading.Thread(target=self._run, name=f"bag-writer-{self.meta.index}", daemon=True)
        self._thread.start()
        return self

    def add_topic(self, topic: str, msgtype: str, offered_qos_profiles: Iterable = ()) -> None:
        """Declare a topic (idempotent). Raises BagWriteError if the type is unknown."""
        if topic in self._topics:
            return
        ensure_msgtype(self.store, msgtype)
        self._topics[topic] = msgtype
        self._queue.put((_CONN, topic, msgtype, tuple(offered_qos_profiles)))

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one serialized message; False if it was dropped (writer failed or queue full)."""
        if self.error is not None or self._finished.is_set():
            self._dropped += 1
            return False
        size = len(data)
        with self._bytes_lock:
            if self._queued_bytes + size > self.max_queue_bytes:
                self._dropped += 1
                return False
            self._queued_bytes += size
            self._max_queued_bytes = max(self._max_queued_bytes, self._queued_bytes)
        self._queue.put((topic, timestamp_ns, data))
        return True

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def finished(self) -> bool:
        """The writer thread is done (closed, discarded, or failed while closing)."""
        return self._finished.is_set()

    @property
    def result(self) -> CloseResult | None:
        return self._result

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a close()/discard() that timed out to finish; True once the thread is done."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._finished.is_set()

    @property
    def end_error(self) -> BagWriteError | None:
        """Why close()/discard() itself failed, once finished (None: it did what was asked)."""
        return self._end_error

    def message_count(self) -> int:
        return sum(self._counts.copy().values())  # a snapshot: the writer thread may be adding a topic

    def close(
        self, meta: EpisodeMeta | None = None, timeout: float = 60.0, status: str = STATUS_COMPLETE
    ) -> CloseResult:
        """Write EpisodeInfo, the summary and metadata.yaml, fsync, rename to the final name.
        With another status (e.g. STATUS_INTERRUPTED) the bag is closed readable but unlabelled:
        no EpisodeInfo, renamed to NAME.partial. Raises the writer's error (BagWriteError) if it
        failed, WriterTimeoutError if it is still busy after `timeout` seconds."""
        if meta is not None:
            self.meta = meta
        self._close_log_ns = time.time_ns()  # EpisodeInfo's log time: the recorder's clock, like every message
        return self._finish((_CLOSE, status), timeout)

    def discard(self, timeout: float = 60.0) -> None:
        """Stop and delete the bag (messages still queued are dropped, not written)."""
        self._finish((_DISCARD,), timeout)

    def _finish(self, op: tuple, timeout: float) -> CloseResult | None:
        if self._thread is None:
            raise BagWriteError(f"{self.path}: writer was never started")
        if not self._finished.is_set():
            if op[0] == _DISCARD:
                self._discarding = True
            self._queue.put(op)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise WriterTimeoutError(
                f"{self.path}: the writer did not finish within {timeout:g} s "
                f"({self._queued_bytes / 1e6:.1f} MB still queued); it goes on in the background"
            )
        if op[0] == _DISCARD:
            if self._end_error is not None:
                raise self._end_error
            return None
        if self.error is not None:
            raise self.error
        return self._result

    # -- writer thread ----------------------------------------------------------------------

    _discarding = False  # set by discard(): queued messages are dropped, not written

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never die silently, whatever happened
            self._fail(self._error_for(exc, "running the writer thread"), flush=not isinstance(exc, OSError))
            self._end_error = self._end_error or self.error
        finally:
            self._finished.set()

    def _loop(self) -> None:
        next_flush = time.monotonic() + self.flush_period_s
        while True:
            # A failed writer only drains until close/discard: block, never spin on an overdue flush.
            idle = self.error is not None or self._discarding
            timeout = None if idle else max(0.0, next_flush - time.monotonic())
            try:
                op = self._queue.get(timeout=timeout)
            except queue.Empty:
                op = None
            if op is not None and op[0] in (_CLOSE, _DISCARD):
                self._end_safely(*op)
                return
            if op is not None and op[0] != _CONN:
                self._release(len(op[2]))
            if self.error is not None or self._discarding:
                continue  # failed or being discarded: drain until close/discard
            topic = None
            try:
                if op is not None:
                    topic = op[1] if op[0] == _CONN else op[0]
                    if op[0] == _CONN:
                        self._add_connection(*op[1:])
                    else:
                        _, stamp, data = op
                        self._writer.write(self._connections[topic], stamp, data)
                        self._counts[topic] += 1
                    topic = None
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.flush_period_s
                    self._writer.storage.flush(self.fsync)
                    self.flushed_messages = sum(self._counts.values())
                    self._check_free_space()
            except Exception as exc:
                doing = f"writing a message on {topic}" if topic else "writing"
                self._fail(self._error_for(exc, doing), flush=not isinstance(exc, OSError))

    def _release(self, size: int) -> None:
        with self._bytes_lock:
            self._queued_bytes -= size

    def _add_connection(self, topic: str, msgtype: str, qos: tuple) -> None:
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=list(qos)
        )
        self._counts.setdefault(topic, 0)
        self._sidecar.connections.append(
            {"topic": topic, "msgtype": msgtype, "rihs01": self._connections[topic].digest}
        )
        self._write_sidecar()

    def _write_sidecar(self) -> None:
        data = json.dumps(asdict(self._sidecar), indent=1).encode()
        if self.fsync:
            atomic_write_bytes(self.path / SIDECAR_NAME, data)  # fsync temp file, replace, fsync the directory
        else:
            tmp = self.path / (SIDECAR_NAME + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(self.path / SIDECAR_NAME)

    def _check_free_space(self) -> None:
        if not self.min_free_bytes:
            return
        free = free_bytes(self.path)
        if free < self.min_free_bytes:
            # Stop while there is still room for the summary: the bag stays readable.
            self._writer.custom_data.update(self.meta.custom_data(STATUS_DISK_FULL))
            mcap_file = self._writer.storage.path
            self._writer.close()
            self._writer = None
            partial = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
            (self.path / SIDECAR_NAME).unlink(missing_ok=True)
            if self.fsync:
                _publish_dir(self.path, partial, (mcap_file, self.path / "metadata.yaml"))
            else:
                self.path.rename(partial)
            self.partial_path = partial
            raise DiskFullError(
                f"disk almost full: {free / 1e6:.1f} MB left on {self.final_path.parent}, below the reserve "
                f"of {self.min_free_bytes / 1e6:.1f} MB; episode {self.meta.index} was stopped and kept, "
                f"unlabelled, as {partial} ({self.message_count()} messages); earlier episodes are intact"
            )

    def _error_for(self, exc: BaseException, doing: str) -> BagWriteError:
        """The BagWriteError that `exc` means here: names the bag, what was being done (and the
        topic), the cause; the original is chained. The writer's own errors pass through."""
        if isinstance(exc, BagWriteError):
            return exc
        if isinstance(exc, OSError):
            error = self._os_error(exc, doing)
        else:
            error = BagWriteError(f"{self.path}: {doing} failed ({_describe_exception(exc)})")
        error.__cause__ = exc
        return error

    def _fail(self, exc: BagWriteError, *, flush: bool = False) -> None:
        """Record the writer's error and stop writing. With flush (the failure was not the file's
        I/O), what was written so far is first flushed to the file, so recovery keeps all of it."""
        storage = self._writer.storage if self._writer is not None else None
        if storage is not None:
            if flush:
                with contextlib.suppress(Exception):
                    storage.flush(self.fsync)
                    self.flushed_messages = sum(self._counts.values())
            storage.abort_quietly()
            self._writer.storage = None
        if not isinstance(exc, DiskFullError) and self.path.is_dir():
            kept = (
                f" Episode {self.meta.index} was stopped; its first {self.flushed_messages} messages are kept in "
                f"{self.path.name} and recovered into a .partial bag when the recorder next starts (or by "
                f"recover_incomplete); earlier episodes are intact"
            )
            cause = exc.__cause__
            exc = BagWriteError(str(exc) + "." + kept)
            exc.__cause__ = cause
        self.error = exc

    def _os_error(self, exc: OSError, doing: str) -> BagWriteError:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            cause = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file size limit was reached"}.get(
                exc.errno, "the disk quota is exhausted"
            )
            return DiskFullError(
                f"{self.path}: {cause} while {doing} ({exc.strerror}). Episode {self.meta.index} was stopped "
                f"and left as {self.path.name}: its flushed chunks are recovered into a .partial bag when the "
                f"recorder next starts (or by recover_incomplete); earlier episodes are intact"
            )
        return BagWriteError(f"{self.path}: {doing} failed: {exc}")

    def _end_safely(self, kind: str, status: str = STATUS_COMPLETE) -> None:
        """close/discard in the writer thread; whatever fails is recorded, never lost."""
        try:
            self._end(kind, status)
        except Exception as exc:
            doing = "discarding" if kind == _DISCARD else "closing"
            error = self._error_for(exc, doing)
            if kind == _CLOSE and self.error is None:
                self._fail(error, flush=not isinstance(exc, OSError))
                error = self.error
            self._end_error = error

    def _end(self, kind: str, status: str = STATUS_COMPLETE) -> None:
        t0 = time.monotonic()
        if kind == _DISCARD:
            if self._writer is not None and self._writer.storage is not None:
                self._writer.storage.abort_quietly()
                self._writer.storage = None
            for path in (self.path, self.partial_path):
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True)
                    if os.path.lexists(path):
                        raise BagWriteError(f"{path}: could not be deleted")
            if self.fsync:
                with contextlib.suppress(OSError):
                    fsync_path(self.path.parent)
            return
        if self.error is not None:
            return
        target = self.final_path
        if status != STATUS_COMPLETE:
            target = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        if os.path.lexists(target):
            raise EpisodeExistsError(f"{target}: exists already; the episode stays in {self.path.name}")
        if status == STATUS_COMPLETE:
            info_topic = topics.bag_topic(topics.EPISODE_INFO)  # rooted at '/', as the recorder names topics
            if info_topic not in self._connections:
                self._add_connection(info_topic, EPISODE_INFO_TYPE, ())
            info = episode_info_cdr(self.store, self.meta)
            self._writer.write(self._connections[info_topic], self._close_log_ns, info)
            self._counts[info_topic] += 1
        self._writer.custom_data.update(self.meta.custom_data(status))
        mcap_file = self._writer.storage.path
        self._writer.close()
        (self.path / SIDECAR_NAME).unlink(missing_ok=True)
        if self.fsync:
            _publish_dir(self.path, target, (mcap_file, self.path / "metadata.yaml"))
        else:
            self.path.rename(target)
        self._result = CloseResult(
            path=target,
            status=status,
            message_count=sum(self._counts.values()),
            topic_counts=dict(self._counts),
            close_seconds=time.monotonic() - t0,
            dropped_queue_full=self._dropped,
            max_queue_bytes_seen=self._max_queued_bytes,
        )

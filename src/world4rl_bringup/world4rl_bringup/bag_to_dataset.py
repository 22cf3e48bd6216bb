"""Episode bags -> the training dataset (world4rl_model.dataset). ROS-free: bags are read with the
pure-Python rosbags library. The `world4rl dataset` command line is in dataset_cli.py.

Conversion of one episode bag (one dataset episode):
- Control steps are the messages on the action topic (world4rl_msgs/Action, published at the
  control rate by every demonstration source). For each action, the observation o_t is the latest
  image whose receive time (the bag's log time, one clock for every topic) is at or before the
  action's: the image the demonstrator or policy saw when it decided a_t. Actions before the
  first image are dropped. The action rate must be within 25 % of the dataset's control rate.
- Images (rgb8 or bgr8) are centre-cropped to a square and area-resized to the image size with
  world4rl_model.images, the same conversion the runtime policy node uses (BuildConfig.resize=False
  keeps the camera's recorded frames: the LeRobot export, world4rl_bringup.lerobot_bags).
- joint_positions (fr3_joint1..7 + the 2 fingers): the latest joint states at or before each
  action, merged from the joint and gripper joint-state topics; stored only if all 9 are known
  at every step. Actions logged before the first complete joint state get that state when it came
  within JOINT_LEAD_S of the first action (the arm is at rest after a reset, and on a loaded
  machine the recorder may log the first action before the first joint state).
- Success labels: the episode's label is EpisodeInfo.success. Per frame: if the bag has the
  sim's true success topic (/sim_only/success, std_msgs/Bool), frame t is labelled with its latest
  value at or before a_t (when o_t was acted on); otherwise (real robot) a successful episode labels
  its last `success_tail_s` seconds of frames (at least the last frame) as success and the rest not,
  since the operator stops an episode shortly after the task is done; a failed episode labels none.
  The two agree by construction (`world4rl collect` ends a sim episode only after the solved task
  has been recorded for a few actions, and labels it with the flag's value then): an episode whose
  label differs from its last frame's is converted as recorded and reported as a disagreement.
- Episode kind from Action.source (expert -> expert, teleop -> human, policy -> policy,
  random -> random; anything else -> human), unless --kind is given.
- A bag already converted (same sha256 over its metadata.yaml and storage files) is skipped.
- A bad bag (not a bag, truncated, a topic missing or of the wrong type, an unsupported image
  encoding, malformed actions, no EpisodeInfo) is reported with the bag and the topic, and the
  other bags are still converted; the exit code is then 1.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from world4rl_spec import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    ARM_JOINT_NAMES,
    CONTROL_RATE_HZ,
    FINGER_JOINT_NAMES,
    LEARNING_IMAGE_SIZE,
    topics,
)

KIND_BY_SOURCE = {"expert": "expert", "teleop": "human", "policy": "policy", "random": "random"}
IMAGE_TYPE = "sensor_msgs/msg/Image"
ACTION_TYPE = "world4rl_msgs/msg/Action"
JOINT_TYPE = "sensor_msgs/msg/JointState"
SUCCESS_TYPE = "std_msgs/msg/Bool"
EPISODE_INFO_TYPE = "world4rl_msgs/msg/EpisodeInfo"
RATE_TOLERANCE = 0.25
JOINT_LEAD_S = 0.5  # how late the first complete joint state may come for the steps before it

if TYPE_CHECKING:
    import numpy as np


class BagError(ValueError):
    """A bag cannot be converted; the message starts with the bag and names the topic."""


# The names bags store the stack's topics under (rooted at '/', whatever namespace recorded them).
EPISODE_INFO_TOPIC = topics.bag_topic(topics.EPISODE_INFO)


@dataclass
class BuildConfig:
    image_topic: str = topics.bag_topic(topics.CAMERA_IMAGE)
    action_topic: str = topics.bag_topic(topics.ACTION)
    joint_topic: str = topics.bag_topic(topics.JOINT_STATES)
    gripper_topic: str = topics.bag_topic(topics.GRIPPER_JOINT_STATES)
    success_topic: str = topics.bag_topic(topics.SIM_SUCCESS)
    image_size: int = LEARNING_IMAGE_SIZE
    control_rate_hz: float = CONTROL_RATE_HZ
    success_tail_s: float = 0.5
    kind: str = "auto"  # or one of world4rl_model.dataset.EPISODE_KINDS
    min_steps: int = 2
    resize: bool = True  # False: frames at the camera's recorded resolution (image_size unused)


@dataclass
class ConvertedEpisode:
    frames: np.ndarray
    actions: np.ndarray
    success_per_frame: np.ndarray
    joint_positions: np.ndarray | None
    task: str
    success: bool
    kind: str
    robot: str
    action_rate_hz: float
    success_source: str  # "sim_success_topic" or "episode_label_tail"
    dropped_leading_actions: int = 0
    operator_note: str = ""

    @property
    def label_disagreement(self) -> str:
        """Why the episode's label and its last frame's label differ ("" when they agree)."""
        last = bool(self.success_per_frame[-1])
        if last == self.success:
            return ""
        return (
            f"EpisodeInfo.success is {self.success} but the last frame's label ({self.success_source}) is {last}; "
            f"{int(self.success_per_frame.sum())} of {len(self.success_per_frame)} frames are labelled successes"
        )


@dataclass
class BuildReport:
    converted: list[tuple[Path, int]] = field(default_factory=list)  # (bag, dataset episode index)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # Converted, but the episode's success label and its last frame's label differ.
    label_disagreements: list[tuple[Path, str]] = field(default_factory=list)


def bag_sha256(bag_dir: str | Path) -> str:
    """sha256 over metadata.yaml and the storage files (names and contents, sorted by name)."""
    bag_dir = Path(bag_dir)
    digest = hashlib.sha256()
    files = sorted(p for p in bag_dir.iterdir() if p.is_file() and (p.name == "metadata.yaml" or p.suffix == ".mcap"))
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def find_bags(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Bag directories among `paths`: a bag itself, or a directory of bags (e.g. the recorder's
    output directory, whose .partial and .incomplete bags are skipped with a reason)."""
    from world4rl_bringup.bag_writer import INCOMPLETE_SUFFIX, PARTIAL_SUFFIX

    bags: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).resolve()
        if (path / "metadata.yaml").is_file() or path.name.endswith(INCOMPLETE_SUFFIX):
            bags.append(path)  # given explicitly: converted, or reported
            continue
        if not path.is_dir():
            skipped.append((path, "not a directory"))
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        before = (len(bags), len(skipped))
        for child in children:
            if child.name.endswith(INCOMPLETE_SUFFIX):
                skipped.append((child, "left by a crash (recover it first: bag_recovery.recover_incomplete)"))
            elif child.name.endswith(PARTIAL_SUFFIX):
                skipped.append((child, "partial recording, without a success label"))
            elif (child / "metadata.yaml").is_file():
                bags.append(child)
        if (len(bags), len(skipped)) == before:
            skipped.append((path, "no bags in this directory"))
    return bags, skipped


def _typestore():
    from world4rl_bringup.bag_writer import ensure_msgtype, episode_typestore

    store = episode_typestore()
    ensure_msgtype(store, ACTION_TYPE)
    return store


def _describe_truncation(bag: Path) -> str:
    """What a linear scan finds in a bag's MCAP files that rosbags cannot open."""
    from world4rl_bringup.bag_recovery import scan_mcap
    from world4rl_bringup.bag_writer import BagWriteError

    notes = []
    for mcap in sorted(bag.glob("*.mcap")):
        try:
            scan = scan_mcap(mcap, keep_messages=False)  # counts only: a long bag must not fill the memory
        except (BagWriteError, OSError) as exc:
            notes.append(f"{mcap.name}: {exc}")
            continue
        if scan.truncated:
            counts = Counter()
            for cid, n in scan.message_counts.items():
                if cid in scan.channels:
                    counts[scan.channels[cid][0]] += n
            per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items())) or "no messages"
            notes.append(f"{mcap.name} is truncated: {scan.complete_chunks} complete chunks survive ({per_topic})")
    return "; ".join(notes)


def read_episode(bag: str | Path, config: BuildConfig | None = None, store=None) -> ConvertedEpisode:
    """Convert one episode bag; BagError names the bag and the topic when something is wrong."""
    config = config or BuildConfig()
    bag = Path(bag)
    reader = _open_bag(bag)
    try:
        connections = _episode_connections(reader, bag, config)
        steps = _EpisodeSteps(bag, config, store or _typestore())
        current_topic = ""
        try:
            for conn, stamp, raw in reader.messages(connections=connections):
                current_topic = conn.topic
                steps.add(conn.topic, stamp, raw)
        except BagError:
            raise
        except Exception as exc:
            raise BagError(
                f"{bag}: topic {current_topic}: cannot read a message ({type(exc).__name__}: {exc})"
            ) from exc
    finally:
        reader.close()
    return steps.finish()


def _open_bag(bag: Path):
    from rosbags.rosbag2 import Reader

    from world4rl_bringup.bag_writer import INCOMPLETE_SUFFIX

    if bag.name.endswith(INCOMPLETE_SUFFIX):
        raise BagError(f"{bag}: left by a crash and never closed; recover it first (bag_recovery.recover_incomplete)")
    if not (bag / "metadata.yaml").is_file():
        raise BagError(f"{bag}: not a rosbag2 bag directory (no metadata.yaml)")
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:
        truncation = _describe_truncation(bag)
        raise BagError(f"{bag}: cannot open the bag ({exc}){'; ' + truncation if truncation else ''}") from exc
    return reader


def _episode_connections(reader, bag: Path, config: BuildConfig) -> list:
    """The connections conversion reads: the required ones (checked: present, typed, not empty)
    and the optional joint-state and success topics of the right type."""
    by_topic: dict[str, list] = {}
    for conn in reader.connections:
        by_topic.setdefault(conn.topic, []).append(conn)
    available = ", ".join(sorted(by_topic)) or "none"

    def require(topic: str, msgtype: str, why: str) -> list:
        conns = by_topic.get(topic)
        if not conns:
            raise BagError(f"{bag}: topic {topic} is missing ({why}); the bag has: {available}")
        wrong = [c.msgtype for c in conns if c.msgtype != msgtype]
        if wrong:
            raise BagError(f"{bag}: topic {topic} has type {wrong[0]}, expected {msgtype}")
        if sum(c.msgcount for c in conns) == 0:
            raise BagError(f"{bag}: topic {topic} has no messages ({why})")
        return conns

    required = (
        require(config.image_topic, IMAGE_TYPE, "the camera images")
        + require(config.action_topic, ACTION_TYPE, "the actions")
        + require(EPISODE_INFO_TOPIC, EPISODE_INFO_TYPE, "the episode's task and success label: a partial recording?")
    )
    optional = [
        c
        for topic, msgtype in (
            (config.joint_topic, JOINT_TYPE),
            (config.gripper_topic, JOINT_TYPE),
            (config.success_topic, SUCCESS_TYPE),
        )
        for c in by_topic.get(topic, [])
        if c.msgtype == msgtype
    ]
    return required + optional


def action_rate_hz(stamps_ns: list[int]) -> float:
    """The rate actions were recorded at: one over their median period. The median, not the span:
    one stall of a loaded machine (a sim behind real time, a starved process) in a short episode
    would otherwise read as another control rate, while a recording at another rate still shows."""
    import numpy as np

    periods = np.diff(np.asarray(stamps_ns, dtype=np.int64)) / 1e9
    period = float(np.median(periods)) if len(periods) else 0.0
    return 1.0 / period if period > 0 else math.inf


class _EpisodeSteps:
    """Builds an episode's control steps from its messages in log-time order: each action becomes
    a step with the latest image, joint states and success flag before it."""

    JOINT_NAMES = (*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES)

    def __init__(self, bag: Path, config: BuildConfig, store) -> None:
        self.bag, self.config, self.store = bag, config, store
        self.frames: list = []
        self.actions: list = []
        self.action_stamps: list[int] = []
        self.sources: Counter = Counter()
        self.joints_now: dict[str, float] = {}
        self.joint_rows: list[list[float] | None] = []
        self.first_joints: tuple[int, list[float]] | None = None  # (log time, row) of the first complete one
        self.success_now: bool | None = None
        self.success_rows: list[bool | None] = []
        self.info = None
        self.latest_image = None  # (index, raw) of the latest image so far
        self.decoded = None  # (index, learning image) of the last decoded one
        self.image_count = self.action_count = self.dropped_leading = 0

    def add(self, topic: str, stamp: int, raw) -> None:
        config, store = self.config, self.store
        if topic == config.image_topic:
            self.latest_image = (self.image_count, raw)
            self.image_count += 1
        elif topic == config.action_topic:
            self._action(stamp, store.deserialize_cdr(raw, ACTION_TYPE))
        elif topic == EPISODE_INFO_TOPIC:
            self.info = store.deserialize_cdr(raw, EPISODE_INFO_TYPE)
        elif topic in (config.joint_topic, config.gripper_topic):
            msg = store.deserialize_cdr(raw, JOINT_TYPE)
            self.joints_now.update(zip(msg.name, (float(p) for p in msg.position), strict=False))
            if self.first_joints is None and all(n in self.joints_now for n in self.JOINT_NAMES):
                self.first_joints = (stamp, [self.joints_now[n] for n in self.JOINT_NAMES])
        elif topic == config.success_topic:
            self.success_now = bool(store.deserialize_cdr(raw, SUCCESS_TYPE).data)

    def _action(self, stamp: int, msg) -> None:
        import numpy as np

        values = np.asarray(msg.values, dtype=np.float64)
        where = f"{self.bag}: topic {self.config.action_topic}: message {self.action_count}"
        self.action_count += 1
        if values.shape != (ACTION_DIM,):
            raise BagError(f"{where} has {values.size} values, expected {ACTION_DIM} (dx, dy, dz, gripper)")
        if not np.all(np.isfinite(values)):
            raise BagError(f"{where} contains NaN or inf")
        if values.min() < ACTION_LOW - 1e-4 or values.max() > ACTION_HIGH + 1e-4:
            raise BagError(f"{where} is outside [{ACTION_LOW}, {ACTION_HIGH}]: {values.tolist()}")
        if self.latest_image is None:
            self.dropped_leading += 1
            return
        self.frames.append(self._frame())
        self.actions.append(np.clip(values, ACTION_LOW, ACTION_HIGH).astype(np.float32))
        self.action_stamps.append(stamp)
        self.sources[msg.source] += 1
        now = self.joints_now
        self.joint_rows.append([now[n] for n in self.JOINT_NAMES] if all(n in now for n in self.JOINT_NAMES) else None)
        self.success_rows.append(self.success_now)

    def _frame(self):
        """The latest image as a learning image (decoded once, however many actions use it)."""
        from world4rl_model.images import decode_image, to_learning_image

        index, raw = self.latest_image
        if self.decoded is None or self.decoded[0] != index:
            image = self.store.deserialize_cdr(raw, IMAGE_TYPE)
            try:
                pixels = decode_image(bytes(image.data), image.width, image.height, image.encoding, image.step)
            except ValueError as exc:
                raise BagError(f"{self.bag}: topic {self.config.image_topic}: image {index}: {exc}") from exc
            frame = to_learning_image(pixels, self.config.image_size) if self.config.resize else pixels
            self.decoded = (index, frame)
        return self.decoded[1]

    def finish(self) -> ConvertedEpisode:
        """Checks (EpisodeInfo, enough steps, the action rate), then labels and arrays."""
        import numpy as np

        bag, config, info, steps = self.bag, self.config, self.info, len(self.frames)
        if info is None:  # pragma: no cover - required above; kept for clarity
            raise BagError(f"{bag}: topic {EPISODE_INFO_TOPIC}: no EpisodeInfo message")
        if steps < config.min_steps:
            raise BagError(
                f"{bag}: topic {config.action_topic}: only {steps} actions after the first image on "
                f"{config.image_topic}; an episode needs at least {config.min_steps}"
            )
        rate = action_rate_hz(self.action_stamps)
        if abs(rate - config.control_rate_hz) > RATE_TOLERANCE * config.control_rate_hz:
            raise BagError(
                f"{bag}: topic {config.action_topic}: actions arrive at {rate:.1f} Hz, but the dataset's control rate "
                f"is {config.control_rate_hz:g} Hz (allowed: +-{RATE_TOLERANCE:.0%})"
            )
        success = bool(info.success)
        success_per_frame, success_source = self._frame_labels(success)
        rows = self._joint_rows_with_lead()
        joint_positions = np.asarray(rows, dtype=np.float32) if all(r is not None for r in rows) else None
        source = self.sources.most_common(1)[0][0]
        return ConvertedEpisode(
            frames=np.stack(self.frames),
            actions=np.stack(self.actions),
            success_per_frame=success_per_frame,
            joint_positions=joint_positions,
            task=info.task,
            success=success,
            kind=config.kind if config.kind != "auto" else KIND_BY_SOURCE.get(source, "human"),
            robot=info.robot,
            operator_note=info.operator_note,
            action_rate_hz=rate,
            success_source=success_source,
            dropped_leading_actions=self.dropped_leading,
        )

    def _joint_rows_with_lead(self) -> list[list[float] | None]:
        """The steps' joint rows; leading steps without one take the first complete joint state
        when it was logged within JOINT_LEAD_S of the first action."""
        rows = list(self.joint_rows)
        lead = next((i for i, r in enumerate(rows) if r is not None), len(rows))
        if lead and self.first_joints is not None:
            stamp, row = self.first_joints
            if stamp - self.action_stamps[0] <= JOINT_LEAD_S * 1e9:
                rows[:lead] = [row] * lead
        return rows

    def _frame_labels(self, success: bool):
        import numpy as np

        if any(v is not None for v in self.success_rows):
            return np.array([bool(v) for v in self.success_rows], dtype=bool), "sim_success_topic"
        labels = np.zeros(len(self.frames), dtype=bool)
        if success:
            tail = max(1, math.ceil(self.config.success_tail_s * self.config.control_rate_hz))
            labels[-tail:] = True
        return labels, "episode_label_tail"


def build(bags: list[str | Path], out: str | Path, config: BuildConfig | None = None, log=None) -> BuildReport:
    """Convert every bag (skipping those already in the dataset) into the dataset at `out`."""
    from tqdm import tqdm

    log = log or tqdm.write  # keeps the progress bar intact
    from world4rl_model.dataset import DatasetWriter

    config = config or BuildConfig()
    report = BuildReport()
    found, skipped = find_bags(list(bags))
    report.skipped.extend(skipped)
    writer = DatasetWriter(out, image_size=config.image_size, control_rate_hz=config.control_rate_hz)
    store = _typestore()
    for bag in tqdm(found, desc="bags", unit="bag", disable=len(found) < 2):
        try:
            sha = bag_sha256(bag) if (bag / "metadata.yaml").is_file() else None
            if sha is not None and writer.has_source(sha):
                report.skipped.append((bag, "already in the dataset (same sha256)"))
                continue
            episode = read_episode(bag, config, store)
            index = writer.add_episode(
                episode.frames,
                episode.actions,
                task=episode.task,
                success=episode.success,
                kind=episode.kind,
                success_per_frame=episode.success_per_frame,
                joint_positions=episode.joint_positions,
                source_bag=str(bag),
                source_sha256=sha,
            )
        except (BagError, ValueError, OSError) as exc:
            report.failed.append((bag, str(exc)))
            log(f"error: {exc}")
            continue
        report.converted.append((bag, index))
        if episode.label_disagreement:
            report.label_disagreements.append((bag, episode.label_disagreement))
            log(f"warning: {bag}: labels disagree: {episode.label_disagreement}")
        log(
            f"{bag.name} -> episode {index}: {episode.task}, {'success' if episode.success else 'failure'}, "
            f"{len(episode.frames)} steps at {episode.action_rate_hz:.1f} Hz, kind {episode.kind}"
        )
    return report

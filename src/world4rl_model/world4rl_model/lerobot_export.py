"""World4RL episodes -> LeRobotDataset v3.0 (lerobot_format.py describes the layout). ROS-free.

`export(source, out)` takes episodes one at a time from a source (a world4rl dataset here; episode
bags in world4rl_bringup.lerobot_bags) and writes them to OUT:

- Streaming, bounded memory: one episode is in memory at a time (its frames at the source's
  resolution). Each episode becomes a segment (its rows as a parquet file, its frames as an mp4)
  in OUT/.world4rl_export/; segments are joined into LeRobot's files as soon as a file is full
  (rows appended as row groups, videos remuxed without re-encoding), so the staging area holds at
  most one file's worth of episodes.
- Resumable: an episode is done once OUT/.world4rl_export/ep_NNNNNN.json exists (written
  atomically after its segments are on disk). A rerun with the same source and settings continues
  after the last done episode; which episodes share a file depends only on the episodes' sizes, so
  an interrupted and resumed export writes the same files as an uninterrupted one. A rerun with
  another source or settings is refused; a finished OUT is only re-validated.
- Validated: after the metadata is written, `lerobot_format.validate` re-opens every file; only
  then is the staging area removed and success reported.
- An episode the source cannot provide (ExportSourceError: a bad bag) is reported and left out;
  the others are exported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from world4rl_model import lerobot_format as fmt
from world4rl_model.atomic_io import atomic_write_bytes, fsync_path
from world4rl_model.lerobot_config import ExportConfig
from world4rl_spec import ACTION_DIM
from world4rl_spec.action import describe_action_space

STAGING = ".world4rl_export"
STATE = "state.json"
STATE_FORMAT = "world4rl-lerobot-export"
STATE_VERSION = 1
_EPISODE_ROWS_PER_WRITE = 256


class ExportSourceError(ValueError):
    """One episode of a source cannot be exported (e.g. a bad bag); the export goes on without it."""


class ExportError(ValueError):
    """The export cannot go on (OUT holds something else, nothing to export, ...); names the path."""


@dataclass
class ExportEpisode:
    """One episode as export takes it. frames: uint8 [T, H, W, 3] RGB (a memory map is fine);
    actions float32 [T, 4]; success_per_frame bool [T]; joint_positions float32 [T, 9] or None."""

    frames: np.ndarray
    actions: np.ndarray
    success_per_frame: np.ndarray
    joint_positions: np.ndarray | None
    task: str
    success: bool
    kind: str
    operator_note: str = ""
    robot: str = ""
    source_bag: str | None = None
    source_sha256: str | None = None
    seed: int | None = None


class ExportSource(Protocol):
    """What export reads: a fixed sequence of episodes. `fingerprint` identifies the source (a
    resumed export checks it); `has_state` is None when only loading an episode tells."""

    fingerprint: dict[str, Any]
    control_rate_hz: float
    has_state: bool | None

    def __len__(self) -> int: ...

    def describe(self, position: int) -> str: ...

    def load(self, position: int) -> ExportEpisode: ...


@dataclass
class ExportReport:
    out: Path
    episodes: int = 0
    frames: int = 0
    resumed: int = 0  # episodes an earlier, interrupted run had already exported
    already_complete: bool = False
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source episode, why)
    summary: dict[str, int] = field(default_factory=dict)  # lerobot_format.validate's


class DatasetSource:
    """A world4rl dataset (world4rl_model.dataset) as an export source, episode by episode."""

    def __init__(self, root: str | os.PathLike) -> None:
        from world4rl_model.dataset import Dataset

        self.dataset = Dataset(root)
        self.fingerprint = {
            "type": "world4rl-dataset",
            "path": str(Path(root).resolve()),
            "manifest_sha256": self.dataset.hash,
        }
        self.control_rate_hz = self.dataset.control_rate_hz
        self.has_state = all(
            (self.dataset.root / ep["dir"] / "joint_positions.npy").is_file() for ep in self.dataset.episodes
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, position: int) -> str:
        return f"{self.dataset.root / self.dataset.episodes[position]['dir']}"

    def load(self, position: int) -> ExportEpisode:
        arrays = self.dataset.episode(position)
        self.dataset._cache.pop(position, None)  # one episode's memory maps at a time, not all of them
        meta = self.dataset.episodes[position]
        source = meta.get("source") or {}
        return ExportEpisode(
            frames=arrays["frames"],
            actions=np.asarray(arrays["actions"]),
            success_per_frame=np.asarray(arrays["success"]),
            joint_positions=None if "joint_positions" not in arrays else np.asarray(arrays["joint_positions"]),
            task=meta["task"],
            success=bool(meta["success"]),
            kind=meta["kind"],
            source_bag=source.get("bag"),
            source_sha256=source.get("sha256"),
            seed=meta.get("seed"),
        )


def export(
    source: ExportSource,
    out: str | os.PathLike,
    config: ExportConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export every episode of `source` to the LeRobotDataset v3.0 folder `out` (see the module doc)."""
    from tqdm import tqdm

    config = config or ExportConfig()
    config.check()
    log = log or tqdm.write
    writer = _Writer(source, Path(out), config)
    report = ExportReport(out=Path(out))
    if writer.complete:
        report.already_complete = True
        report.summary = fmt.validate(out)
        report.episodes, report.frames = report.summary["episodes"], report.summary["frames"]
        return report
    report.resumed = len(writer.episodes)
    start = writer.next_position()
    bar = tqdm(
        range(start, len(source)), total=len(source), initial=start, desc="episodes", unit="ep", disable=not progress
    )
    for position in bar:
        try:
            episode = source.load(position)
            writer.add(position, episode)
        except ExportSourceError as exc:
            log(f"error: {writer.fail(position, str(exc))}")
    report.failed = [(f["source"], f["error"]) for f in writer.state["failed"]]
    report.summary = writer.finish()
    report.episodes, report.frames = report.summary["episodes"], report.summary["frames"]
    return report


@dataclass
class _Stream:
    """A kind of LeRobot file (data parquet, or one camera's mp4) that episodes' segments join."""

    name: str  # "data" or "videos/<video key>"
    suffix: str  # the segment's file suffix
    limit_bytes: float


class _Writer:
    """The export's state on disk (OUT/.world4rl_export) and the steps that change it."""

    def __init__(self, source: ExportSource, out: Path, config: ExportConfig) -> None:
        self.source, self.out, self.config = source, out, config
        self.staging = out / STAGING
        self.fps = fmt.fps_of(source.control_rate_hz)
        self.key = fmt.video_key(config.camera)
        self.streams = [
            _Stream("data", ".parquet", config.data_files_size_in_mb * fmt.MB),
            _Stream(f"videos/{self.key}", ".mp4", config.video_files_size_in_mb * fmt.MB),
        ]
        self.identity = {"source": source.fingerprint, "config": dataclasses.asdict(config)}
        self.complete = False
        self.episodes: list[dict[str, Any]] = []  # per committed episode: its JSON without the stats
        self.tasks: list[str] = []
        if (self.staging / STATE).is_file():
            self._resume()
        elif (out / fmt.INFO_PATH).is_file():
            info = fmt.read_json(out / fmt.INFO_PATH)
            if (info.get("world4rl") or {}).get("export") != self.identity:
                raise ExportError(
                    f"{out}: already holds a LeRobot dataset of another source or other settings; choose another --out"
                )
            self.complete = True
        elif out.exists() and any(out.iterdir()):
            raise ExportError(f"{out}: not empty and not an export in progress; choose an empty or new folder")
        else:
            self.staging.mkdir(parents=True, exist_ok=True)
            self.state: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION, **self.identity,
                                          "fps": self.fps, "layout": None, "failed": [],
                                          "files": {s.name: [] for s in self.streams}}  # fmt: skip
            self._save_state()

    # -- state ----------------------------------------------------------------------------------

    def _save_state(self) -> None:
        atomic_write_bytes(self.staging / STATE, (json.dumps(self.state, indent=1) + "\n").encode())

    def _episode_json(self, index: int) -> Path:
        return self.staging / f"ep_{index:06d}.json"

    def _segment(self, stream: _Stream, index: int) -> Path:
        tag = "" if stream.name == "data" else "." + stream.name.split("/", 1)[1]
        return self.staging / f"ep_{index:06d}{tag}{stream.suffix}"

    def _resume(self) -> None:
        self.state = fmt.read_json(self.staging / STATE)
        if self.state.get("format") != STATE_FORMAT or self.state.get("version") != STATE_VERSION:
            raise ExportError(
                f"{self.staging / STATE}: not a world4rl export state (version {self.state.get('version')!r})"
            )
        if {k: self.state.get(k) for k in self.identity} != self.identity:
            raise ExportError(
                f"{self.out}: holds an interrupted export of another source or with other settings "
                f"({self.state.get('source')}); rerun it with those, or choose another --out"
            )
        index = 0
        while self._episode_json(index).is_file():
            record = fmt.read_json(self._episode_json(index))
            record.pop("stats", None)
            self.episodes.append(record)
            if record["task"] not in self.tasks:
                self.tasks.append(record["task"])
            index += 1
        for path in self.staging.glob("ep_*"):  # segments of the episode that was being written
            if int(path.name[3:9]) >= index:
                path.unlink()
        for stream in self.streams:
            self._drop_joined_segments(stream)
            self._join_full_files(stream)

    def next_position(self) -> int:
        done = [e["position"] for e in self.episodes] + [f["position"] for f in self.state["failed"]]
        return max(done) + 1 if done else 0

    def fail(self, position: int, error: str) -> str:
        """Record that the source's episode at `position` is left out; returns "SOURCE: why"."""
        where = self.source.describe(position)
        error = error.removeprefix(f"{where}: ")  # a BagError already starts with its bag
        self.state["failed"].append({"position": position, "source": where, "error": error})
        self._save_state()
        return f"{where}: {error}"

    # -- one episode ----------------------------------------------------------------------------

    def _check(self, episode: ExportEpisode) -> None:
        frames = episode.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) < 1:
            raise ExportSourceError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        length = len(frames)
        if episode.actions.shape != (length, ACTION_DIM) or episode.success_per_frame.shape != (length,):
            raise ExportSourceError(
                f"actions {list(episode.actions.shape)} / labels {list(episode.success_per_frame.shape)} "
                f"do not fit {length} frames"
            )
        height, width = frames.shape[1:3]
        if self.config.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise ExportSourceError(
                f"{width}x{height} frames: yuv420p needs an even width and height (--pix-fmt yuv444p)"
            )
        if self.state["layout"] is None:
            with_state = {"yes": True, "no": False}.get(self.config.state)
            if with_state is None:
                with_state = (
                    self.source.has_state if self.source.has_state is not None else episode.joint_positions is not None
                )
            self.state["layout"] = {
                "height": int(frames.shape[1]),
                "width": int(frames.shape[2]),
                "with_state": bool(with_state),
            }
            self._save_state()
        layout = self.state["layout"]
        if (frames.shape[1], frames.shape[2]) != (layout["height"], layout["width"]):
            raise ExportSourceError(
                f"frames are {frames.shape[2]}x{frames.shape[1]}, but the export's camera is "
                f"{layout['width']}x{layout['height']} "
                "(a LeRobot video feature has one resolution)"
            )
        if layout["with_state"] and episode.joint_positions is None:
            raise ExportSourceError(
                "no joint states, but the export has observation.state (export with --state no to leave it out)"
            )

    def add(self, position: int, episode: ExportEpisode) -> None:
        """Write one episode's segments, then its JSON (the episode is done), then join full files."""
        self._check(episode)
        index = len(self.episodes)
        start = self.episodes[-1]["dataset_to_index"] if self.episodes else 0
        length = len(episode.frames)
        task_index = self.tasks.index(episode.task) if episode.task in self.tasks else len(self.tasks)
        columns = self._columns(episode, index, start, task_index)
        table = _table(columns, self.features)
        stats = {self.key: fmt.image_stats(episode.frames)}
        stats.update({k: fmt.vector_stats(v) for k, v in columns.items()})
        stats["timestamp"] = fmt.vector_stats(np.arange(length) / self.fps)  # LeRobot's are float64 before storage
        data_path = self._segment(self.streams[0], index)
        _write_parquet(table, data_path)
        video_path = self._segment(self.streams[1], index)
        duration = encode_video(video_path, episode.frames, self.fps, self.config)
        record = {
            "episode_index": index, "position": position, "source": self.source.describe(position),
            "task": episode.task, "length": length, "dataset_from_index": start, "dataset_to_index": start + length,
            "sizes": {"data": data_path.stat().st_size, self.streams[1].name: video_path.stat().st_size},
            "video_duration_ticks": duration, "extra": _extra_columns(episode),
        }  # fmt: skip
        atomic_write_bytes(
            self._episode_json(index), json.dumps({**record, "stats": fmt.stats_to_json(stats)}).encode()
        )
        self.episodes.append(record)
        if task_index == len(self.tasks):  # a task enters tasks.parquet with its first exported episode
            self.tasks.append(episode.task)
        for stream in self.streams:
            self._join_full_files(stream)

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        layout = self.state["layout"]
        return fmt.build_features(self.config.camera, layout["height"], layout["width"], layout["with_state"])

    def _columns(self, episode: ExportEpisode, index: int, start: int, task_index: int) -> dict[str, np.ndarray]:
        length = len(episode.frames)
        success = np.asarray(episode.success_per_frame, dtype=bool)
        following = np.concatenate([success[1:], success[-1:]])
        columns: dict[str, np.ndarray] = {}
        if self.state["layout"]["with_state"]:
            columns[fmt.STATE_KEY] = np.asarray(episode.joint_positions, dtype=np.float32)
        columns[fmt.ACTION_KEY] = np.asarray(episode.actions, dtype=np.float32)
        columns[fmt.NEXT_SUCCESS_KEY] = following
        columns[fmt.SUCCESS_KEY] = success
        columns["timestamp"] = fmt.frame_times(self.fps, length)
        columns["frame_index"] = np.arange(length, dtype=np.int64)
        columns["episode_index"] = np.full(length, index, dtype=np.int64)
        columns["index"] = np.arange(start, start + length, dtype=np.int64)
        columns["task_index"] = np.full(length, task_index, dtype=np.int64)
        return columns

    # -- joining segments into LeRobot's files ---------------------------------------------------

    def _joined_until(self, stream: _Stream) -> int:
        files = self.state["files"][stream.name]
        return files[-1]["episodes"][1] if files else 0

    def _drop_joined_segments(self, stream: _Stream) -> None:
        for index in range(self._joined_until(stream)):
            self._segment(stream, index).unlink(missing_ok=True)

    def _join_full_files(self, stream: _Stream, everything: bool = False) -> None:
        """Join the pending episodes into files: a file takes episodes until the next would reach the
        size limit (LeRobot's rule); the last group waits for more episodes unless `everything`."""
        first = self._joined_until(stream)
        size = 0
        for index in range(first, len(self.episodes)):
            grow = self.episodes[index]["sizes"][stream.name]
            if index > first and size + grow >= stream.limit_bytes:
                self._join(stream, first, index)
                first, size = index, 0
            size += grow
        if everything and first < len(self.episodes):
            self._join(stream, first, len(self.episodes))

    def _join(self, stream: _Stream, first: int, stop: int) -> None:
        number = len(self.state["files"][stream.name])
        chunk, file = fmt.chunk_file(number, self.config.chunks_size)
        if stream.name == "data":
            path = self.out / fmt.DATA_PATH.format(chunk_index=chunk, file_index=file)
            _join_parquet([self._segment(stream, i) for i in range(first, stop)], path, fmt.data_schema(self.features))
        else:
            path = self.out / fmt.VIDEO_PATH.format(video_key=self.key, chunk_index=chunk, file_index=file)
            join_videos([self._segment(stream, i) for i in range(first, stop)], path)
        self.state["files"][stream.name].append({"file": number, "episodes": [first, stop]})
        self._save_state()
        self._drop_joined_segments(stream)

    # -- the end --------------------------------------------------------------------------------

    def finish(self) -> dict[str, int]:
        """Join the last files, write meta/, validate everything, remove the staging area."""
        if not self.episodes:
            failed = "; ".join(f"{f['source']}: {f['error']}" for f in self.state["failed"][:3])
            raise ExportError(f"{self.out}: no episode could be exported{' (' + failed + ')' if failed else ''}")
        for stream in self.streams:
            self._join_full_files(stream, everything=True)
        fmt.write_tasks(self.out / fmt.TASKS_PATH, self.tasks)
        stats, robots = self._write_episodes_meta()
        fmt.write_json(self.out / fmt.STATS_PATH, fmt.stats_to_json(stats))
        fmt.write_json(self.out / fmt.INFO_PATH, self._info(robots))
        summary = fmt.validate(self.out)
        shutil.rmtree(self.staging)
        return summary

    def _positions(self, stream: _Stream) -> Iterator[tuple[int, int, int]]:
        """(chunk, file, ticks before the episode in its file) per episode, in order."""
        for record in self.state["files"][stream.name]:
            chunk, file = fmt.chunk_file(record["file"], self.config.chunks_size)
            ticks = 0
            for index in range(*record["episodes"]):
                yield chunk, file, ticks
                ticks += self.episodes[index]["video_duration_ticks"][0]

    def _write_episodes_meta(self) -> tuple[dict[str, Any], set[str]]:

        stats: dict[str, Any] | None = None
        robots: set[str] = set()
        writer, number, rows = None, 0, []
        positions = zip(self._positions(self.streams[0]), self._positions(self.streams[1]), strict=True)
        for record, (data_pos, video_pos) in zip(self.episodes, positions, strict=True):
            episode_stats = fmt.read_json(self._episode_json(record["episode_index"]))["stats"]
            stats = episode_stats if stats is None else fmt.aggregate_stats([stats, episode_stats])
            robots.add(record["extra"]["world4rl/robot"])
            if (
                writer is not None
                and len(rows) == 0
                and os.path.getsize(writer.where) >= self.config.data_files_size_in_mb * fmt.MB
            ):
                writer.close()
                writer, number = None, number + 1
            rows.append(self._episode_row(record, data_pos, video_pos, episode_stats, number))
            if len(rows) == _EPISODE_ROWS_PER_WRITE or record is self.episodes[-1]:
                writer = _write_rows(writer, rows, self.out, number, self.config.chunks_size)
                rows = []
        writer.close()
        return stats, robots

    def _episode_row(self, record, data_pos, video_pos, stats, meta_file: int) -> dict[str, Any]:
        """One meta/episodes row, columns in the order LeRobot 0.4 writes them."""
        ticks, tick = video_pos[2], Fraction(*record["video_duration_ticks"][1])
        start, stop = float(ticks * tick), float((ticks + record["video_duration_ticks"][0]) * tick)
        row = {"episode_index": record["episode_index"], "tasks": [record["task"]], "length": record["length"],
               "data/chunk_index": data_pos[0], "data/file_index": data_pos[1],
               "dataset_from_index": record["dataset_from_index"], "dataset_to_index": record["dataset_to_index"],
               f"videos/{self.key}/chunk_index": video_pos[0], f"videos/{self.key}/file_index": video_pos[1],
               f"videos/{self.key}/from_timestamp": start,
               f"videos/{self.key}/to_timestamp": stop}  # fmt: skip
        for key, feature_stats in stats.items():
            for name, value in feature_stats.items():
                row[f"stats/{key}/{name}"] = value
        chunk, file = fmt.chunk_file(meta_file, self.config.chunks_size)
        row.update({"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
        row.update(record["extra"])
        return row

    def _info(self, robots: set[str]) -> dict[str, Any]:
        features = self.features
        first = self.out / fmt.VIDEO_PATH.format(video_key=self.key, chunk_index=0, file_index=0)
        features[self.key]["info"] = fmt.video_stream_info(first)
        total_frames = self.episodes[-1]["dataset_to_index"]
        return {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": next(iter(robots)) if len(robots) == 1 and "" not in robots else None,
            "total_episodes": len(self.episodes),
            "total_frames": total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.config.chunks_size,
            "data_files_size_in_mb": self.config.data_files_size_in_mb,
            "video_files_size_in_mb": self.config.video_files_size_in_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": fmt.DATA_PATH,
            "video_path": fmt.VIDEO_PATH,
            "features": features,
            "world4rl": {"export": self.identity, "action_space": describe_action_space()},
        }


def _extra_columns(episode: ExportEpisode) -> dict[str, Any]:
    return {
        "world4rl/success": bool(episode.success),
        "world4rl/kind": episode.kind,
        "world4rl/operator_note": episode.operator_note,
        "world4rl/robot": episode.robot,
        "world4rl/source_bag": episode.source_bag,
        "world4rl/source_sha256": episode.source_sha256,
        "world4rl/seed": None if episode.seed is None else int(episode.seed),
    }


def _table(columns: dict[str, np.ndarray], features: dict[str, dict[str, Any]]):
    import pyarrow as pa

    schema = fmt.data_schema(features)
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_fixed_size_list(f.type):
            arrays.append(
                pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), f.type.value_type), f.type.list_size)
            )
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="snappy", use_dictionary=True)
    fsync_path(tmp)
    os.replace(tmp, path)


def _join_parquet(segments: list[Path], path: Path, schema) -> None:
    """The segments' rows, one row group per episode (as LeRobot's writer appends them)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, schema=schema, compression="snappy", use_dictionary=True) as writer:
        for segment in segments:
            writer.write_table(pq.read_table(segment, schema=schema))
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def _write_rows(writer, rows: list[dict[str, Any]], out: Path, number: int, chunks_size: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    extra_types = {"world4rl/success": pa.bool_(), "world4rl/seed": pa.int64()}
    if writer is None:
        inferred = pa.Table.from_pylist(rows).schema
        fields = [
            pa.field(f.name, extra_types.get(f.name, pa.string())) if f.name.startswith(fmt.EXTRA_PREFIX) else f
            for f in inferred
        ]
        chunk, file = fmt.chunk_file(number, chunks_size)
        path = out / fmt.EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(path, schema=pa.schema(fields), compression="snappy", use_dictionary=True)
    writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
    return writer


def _codec_options(config: ExportConfig) -> dict[str, str]:
    options = {"g": str(config.gop), "crf": str(config.crf)}
    if config.vcodec == "libsvtav1":
        options["preset"] = "12"
    else:
        options["bf"] = "0"  # no B-frames: decode order = display order, segments join by offsetting timestamps
    return options


def encode_video(path: Path, frames: np.ndarray, fps: int, config: ExportConfig) -> list:
    """Encode frames (uint8 [T, H, W, 3]) as an mp4 at `fps`; returns [duration in ticks, [tick
    numerator, denominator]] of its video stream."""
    import av

    fmt.quiet_av_logs()
    height, width = frames.shape[1:3]
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(config.vcodec, rate=fps, options=_codec_options(config))
        stream.width, stream.height, stream.pix_fmt = width, height, config.pix_fmt
        stream.time_base = Fraction(1, fps)
        for t in range(len(frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[t]), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(tmp)) as container:
        video = container.streams.video[0]
        ticks = [int(video.duration), [video.time_base.numerator, video.time_base.denominator]]
    fsync_path(tmp)
    os.replace(tmp, path)
    return ticks


def join_videos(segments: list[Path], path: Path) -> None:
    """Concatenate mp4 segments of one encoding without re-encoding: each segment's packets are
    shifted by the durations before it (LeRobot's concatenate_video_files does the same)."""
    import av

    fmt.quiet_av_logs()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as output:
        out_stream, offset = None, 0
        for segment in segments:
            with av.open(str(segment)) as source:
                stream = source.streams.video[0]
                if out_stream is None:
                    out_stream = output.add_stream_from_template(stream, opaque=True)
                    out_stream.time_base = stream.time_base
                elif stream.time_base != out_stream.time_base:
                    raise ExportError(f"{segment}: time base {stream.time_base}, the others' {out_stream.time_base}")
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = out_stream
                    output.mux(packet)
                offset += int(stream.duration)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)

"""LeRobotDataset v3.0 -> a world4rl dataset (world4rl_model.dataset) that the world model, the
reward classifier and BC train on. ROS-free.

What is read, and the options that choose it (ImportConfig; `world4rl dataset import --help`):
- images: one camera (`image_key`; needed when there are several), a video feature (decoded from
  its mp4 at each frame's timestamp) or an image feature (PNG bytes in the parquet), centre-cropped
  and area-resized to the learning size with world4rl_model.images (as `dataset build` does);
- actions: `action_key` (default "action") mapped to the stack's (dx, dy, dz, gripper) in [-1, 1]
  by `action_map`: "identity" when the feature already is that, or four comma-separated terms
  SRC[*SCALE][+OFFSET] (SRC an index or a name of the feature's names), e.g. "x*50,y*50,z*50,
  gripper*2-1". Values outside [-1, 1] are an error naming the file, episode and frame, unless
  `clip_actions`;
- success labels (`success`): frame:COLUMN (per-frame label of the frame itself, what world4rl
  exports as `success`), next:COLUMN (LeRobot's next.success: solved after the frame's action),
  reward:COLUMN (next.reward; > 0 counts as solved), episode:COLUMN (a meta/episodes column) or
  unknown (every episode labelled a failure: train the world model and BC on it, not the reward
  classifier). auto: a world4rl export's own `success`, else next.success, else next.reward;
- fps: must equal the control rate (default the stack's), else an error names info.json;
- tasks: LeRobot's task strings become task names (letters, digits, '_', '-', '.'), or `task`;
- the episode's label, kind, operator source and seed come from a world4rl export's world4rl/*
  columns when present; observation.state becomes joint_positions when its names are the FR3's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from world4rl_model import lerobot_format as fmt
from world4rl_model.lerobot_config import SUCCESS_MODES, ImportConfig
from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW, ACTION_NAMES, CONTROL_RATE_HZ

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(
    rf"\s*(?P<src>[A-Za-z_][\w.]*|\d+)\s*(?:\*\s*(?P<scale>{_NUMBER}))?\s*(?P<offset>[-+]\s*(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)?\s*"
)


class LeRobotImportError(ValueError):
    """The LeRobot dataset does not fit the options; names the file, the key or the field."""


@dataclass
class ImportReport:
    out: Path
    episodes: int = 0
    frames: int = 0
    image_key: str = ""
    action_key: str = ""
    success: str = ""
    tasks: dict[str, str] = field(default_factory=dict)  # LeRobot task string -> world4rl task name
    clipped_values: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ActionMap:
    """mapped[:, j] = actions[:, columns[j]] * scales[j] + offsets[j]."""

    columns: list[int]
    scales: list[float]
    offsets: list[float]

    def apply(self, actions: np.ndarray) -> np.ndarray:
        return (actions[:, self.columns] * np.asarray(self.scales) + np.asarray(self.offsets)).astype(np.float32)


def feature_names(feature: dict[str, Any]) -> list[str] | None:
    names = feature.get("names")
    if isinstance(names, dict):  # older LeRobot datasets: {"motors": [...]}
        names = next(iter(names.values()), None)
    return [str(n) for n in names] if isinstance(names, list) else None


def parse_action_map(text: str, key: str, feature: dict[str, Any]) -> ActionMap:
    """--action-map against the action feature `key` (its shape and names)."""
    dim = int(feature["shape"][0]) if len(feature["shape"]) == 1 else -1
    names = feature_names(feature) or []
    shown = f"{key} has shape {list(feature['shape'])}" + (f" ({', '.join(names)})" if names else "")
    if dim < 1:
        raise LeRobotImportError(f"{shown}: expected a vector of actions")
    if text.strip() == "identity":
        if dim != ACTION_DIM:
            raise LeRobotImportError(
                f"{shown}, the stack's action is {ACTION_DIM} values ({', '.join(ACTION_NAMES)}): pass --action-map, "
                "e.g. 'x*50,y*50,z*50,gripper*2-1' (SRC[*SCALE][+OFFSET], SRC a name or an index)"
            )
        return ActionMap(list(range(ACTION_DIM)), [1.0] * ACTION_DIM, [0.0] * ACTION_DIM)
    terms = text.split(",")
    if len(terms) != ACTION_DIM:
        raise LeRobotImportError(
            f"--action-map {text!r}: {len(terms)} terms, expected {ACTION_DIM} ({', '.join(ACTION_NAMES)})"
        )
    mapping = ActionMap([], [], [])
    for name, term in zip(ACTION_NAMES, terms, strict=True):
        match = _TERM.fullmatch(term)
        if match is None:
            raise LeRobotImportError(
                f"--action-map term for {name} {term!r}: expected SRC[*SCALE][+OFFSET], e.g. x*50 or gripper*2-1"
            )
        src = match["src"]
        column = int(src) if src.isdigit() else (names.index(src) if src in names else -1)
        if not 0 <= column < dim:
            raise LeRobotImportError(
                f"--action-map term for {name}: {src!r} is not an index below {dim} nor a name of {shown}"
            )
        mapping.columns.append(column)
        mapping.scales.append(float(match["scale"]) if match["scale"] else 1.0)
        mapping.offsets.append(float(match["offset"].replace(" ", "")) if match["offset"] else 0.0)
    return mapping


def task_name(text: str) -> str:
    """A LeRobot task string as a world4rl task name (it becomes a folder name)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.strip()).strip("_.-").replace("..", ".")[:64].rstrip("_.-")
    return name or "task"


def import_dataset(
    root: str | os.PathLike,
    out: str | os.PathLike,
    config: ImportConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ImportReport:
    """Read the LeRobotDataset v3.0 at `root` into the world4rl dataset at `out` (module doc)."""
    from tqdm import tqdm

    from world4rl_model.dataset import DatasetWriter

    config = config or ImportConfig()
    log = log or tqdm.write
    plan = _Plan(Path(root), config)
    report = plan.report(Path(out))
    if (Path(out) / "manifest.json").is_file() and not config.append:
        from world4rl_model.dataset import Dataset

        if len(Dataset(out)):
            raise LeRobotImportError(f"{out}: a world4rl dataset with episodes already; pass --append to add to it")
    writer = DatasetWriter(out, image_size=config.image_size, control_rate_hz=plan.fps)
    reader = _Frames(plan)
    try:
        for ep in tqdm(plan.episodes, desc="episodes", unit="ep", disable=not progress):
            episode = reader.episode(ep)
            report.clipped_values += episode.pop("clipped")
            writer.add_episode(**episode)
            report.episodes += 1
            report.frames += len(episode["frames"])
    finally:
        reader.close()
    if report.clipped_values:
        report.notes.append(f"{report.clipped_values} action values outside [{ACTION_LOW}, {ACTION_HIGH}] were clipped")
    for note in report.notes:
        log(note)
    return report


class _Plan:
    """What to read: info, tasks, episodes and the checked options."""

    def __init__(self, root: Path, config: ImportConfig) -> None:
        self.root, self.config = root, config
        self.info = fmt.read_info(root)
        self.info_path = root / fmt.INFO_PATH
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.tasks = fmt.read_tasks(root)
        self.episodes = fmt.read_episodes(root)
        self.fps = self._fps()
        self.image_key = self._image_key()
        self.action_key = config.action_key
        if self.action_key not in self.features:
            raise LeRobotImportError(
                f"{self.info_path}: no action feature {self.action_key!r}; features: {self._list()}"
            )
        action = self.features[self.action_key]
        if action["dtype"] not in ("float32", "float64"):
            raise LeRobotImportError(
                f"{self.info_path}: {self.action_key} is {action['dtype']}, expected float32 actions"
            )
        self.action_map = parse_action_map(config.action_map, self.action_key, action)
        self.success_mode, self.success_column = self._success()
        state = self.features.get(fmt.STATE_KEY)
        self.with_state = state is not None and feature_names(state) == list(fmt.STATE_NAMES)
        self.task_names = {t: config.task or task_name(t) for t in self.tasks}
        if config.task is not None:
            from world4rl_spec import check_task_name

            check_task_name(config.task, "--task")

    def _list(self) -> str:
        return ", ".join(f"{k} ({f['dtype']})" for k, f in self.features.items())

    def _fps(self) -> float:
        fps = float(self.info["fps"])
        want = float(self.config.control_rate_hz or CONTROL_RATE_HZ)
        if abs(fps - want) > 1e-6:
            raise LeRobotImportError(
                f"{self.info_path}: fps {fps:g}, but the control rate is {want:g} Hz (the world model and the policy "
                f"step at the dataset's rate); pass --control-rate-hz {fps:g} to import it at {fps:g} Hz"
            )
        return fps

    def _image_key(self) -> str:
        cameras = [k for k, f in self.features.items() if f["dtype"] in ("video", "image")]
        key = self.config.image_key
        if key is None:
            if len(cameras) != 1:
                raise LeRobotImportError(
                    f"{self.info_path}: {len(cameras)} cameras ({', '.join(cameras) or 'none'}); pass --image-key"
                )
            key = cameras[0]
        if key not in self.features:
            raise LeRobotImportError(f"{self.info_path}: no feature {key!r}; cameras: {', '.join(cameras) or 'none'}")
        feature = self.features[key]
        if feature["dtype"] not in ("video", "image"):
            raise LeRobotImportError(
                f"{self.info_path}: {key} is a {feature['dtype']} feature, not a camera; "
                f"cameras: {', '.join(cameras) or 'none'}"
            )
        shape, names = list(feature["shape"]), feature_names(feature) or []
        channels = None if len(shape) != 3 else shape[0] if names[:1] in (["channel"], ["channels"]) else shape[2]
        if channels != 3 or (feature.get("info") or {}).get("video.is_depth_map"):
            raise LeRobotImportError(
                f"{self.info_path}: {key} has shape {shape} ({', '.join(names)}); world4rl needs RGB frames"
            )
        return key

    def _success(self) -> tuple[str, str]:
        text = self.config.success
        if text == "unknown":
            return "unknown", ""
        if text == "auto":
            candidates = ([("frame", fmt.SUCCESS_KEY)] if "world4rl" in self.info else []) + [
                ("next", fmt.NEXT_SUCCESS_KEY), ("reward", "next.reward")
            ]  # fmt: skip
            found = next(((m, c) for m, c in candidates if c in self.features), None)
            if found is None:
                raise LeRobotImportError(
                    f"{self.info_path}: no success label (no next.success or next.reward feature): pass --success "
                    "frame:COLUMN, next:COLUMN, reward:COLUMN, episode:COLUMN (a meta/episodes column) or unknown"
                )
            return found
        mode, _, column = text.partition(":")
        if mode not in SUCCESS_MODES or not column:
            raise LeRobotImportError(
                f"--success {text!r}: expected auto, unknown or MODE:COLUMN with MODE in {SUCCESS_MODES}"
            )
        if mode == "episode":
            if column not in self.episodes[0]:
                raise LeRobotImportError(
                    f"{self.root / 'meta' / 'episodes'}: no column {column!r}; columns: {', '.join(self.episodes[0])}"
                )
        elif column not in self.features:
            raise LeRobotImportError(
                f"{self.info_path}: no feature {column!r} for --success {text}; features: {self._list()}"
            )
        elif list(self.features[column]["shape"]) != [1]:
            raise LeRobotImportError(
                f"{self.info_path}: {column} has shape {self.features[column]['shape']}, expected one value per frame"
            )
        return mode, column

    def report(self, out: Path) -> ImportReport:
        success = self.success_mode + (f":{self.success_column}" if self.success_column else "")
        report = ImportReport(
            out=out, image_key=self.image_key, action_key=self.action_key, success=success, tasks=dict(self.task_names)
        )
        if self.success_mode == "unknown":
            report.notes.append(
                "success labels unknown: every episode is labelled a failure; train the world model and BC on it, "
                "not the reward classifier"
            )
        return report


class _Frames:
    """Reads one episode at a time: its rows (one data file cached), its camera frames (one video
    file kept open), labels and the world4rl episode fields."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.cached: tuple[Path, dict[str, np.ndarray]] | None = None
        self.video: tuple[Path, Any] | None = None

    def close(self) -> None:
        if self.video is not None:
            self.video[1].close()
            self.video = None

    def _columns(self, path: Path) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        if self.cached is not None and self.cached[0] == path:
            return self.cached[1]
        plan = self.plan
        wanted = [plan.action_key, "episode_index", "frame_index", "timestamp", "task_index"]
        wanted += [plan.success_column] if plan.success_mode in ("frame", "next", "reward") else []
        wanted += [fmt.STATE_KEY] if plan.with_state else []
        try:
            table = pq.read_table(path, columns=wanted)
        except FileNotFoundError:
            raise LeRobotImportError(f"{path}: missing") from None
        except Exception as e:
            raise LeRobotImportError(f"{path}: cannot read columns {wanted} ({e})") from None
        columns = {name: _to_numpy(table.column(name), path, name) for name in wanted}
        self.cached = (path, columns)
        return columns

    def episode(self, ep: dict[str, Any]) -> dict[str, Any]:
        plan = self.plan
        index = ep["episode_index"]
        path = plan.root / plan.info["data_path"].format(
            chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
        )
        columns = self._columns(path)
        rows = np.flatnonzero(columns["episode_index"] == index)
        where = f"{path}: episode {index}"
        if len(rows) != ep["length"] or not np.array_equal(columns["frame_index"][rows], np.arange(len(rows))):
            raise LeRobotImportError(f"{where}: {len(rows)} rows in frame order expected {ep['length']}")
        actions, clipped = self._actions(columns[plan.action_key][rows], where)
        per_frame, success = self._labels(columns, rows, ep, where)
        extra = {k[len(fmt.EXTRA_PREFIX) :]: v for k, v in ep.items() if k.startswith(fmt.EXTRA_PREFIX)}
        if plan.success_mode == "frame" and extra.get("success") is not None:
            success = bool(extra["success"])
        kind = plan.config.kind if plan.config.kind != "auto" else (extra.get("kind") or "human")
        task = plan.task_names[plan.tasks[int(columns["task_index"][rows[0]])]]
        return {
            "frames": self._images(ep, path, columns["timestamp"][rows]),
            "actions": actions,
            "task": task,
            "success": success,
            "kind": kind,
            "success_per_frame": per_frame,
            "joint_positions": columns[fmt.STATE_KEY][rows].astype(np.float32) if plan.with_state else None,
            "source_bag": extra.get("source_bag") or f"{plan.root}#episode_index={index}",
            "source_sha256": extra.get("source_sha256"),
            "seed": extra.get("seed"),
            "clipped": clipped,
        }

    def _actions(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, int]:
        plan = self.plan
        actions = plan.action_map.apply(np.asarray(raw, dtype=np.float64))
        bad = ~np.isfinite(actions)
        if bad.any():
            frame, dim = np.argwhere(bad)[0]
            raise LeRobotImportError(
                f"{where}, frame {frame}: {plan.action_key} -> {ACTION_NAMES[dim]} is {actions[frame, dim]}"
            )
        outside = (actions < ACTION_LOW - 1e-6) | (actions > ACTION_HIGH + 1e-6)
        if outside.any() and not plan.config.clip_actions:
            frame, dim = np.argwhere(outside)[0]
            raise LeRobotImportError(
                f"{where}, frame {frame}: {plan.action_key} mapped to {ACTION_NAMES[dim]} = "
                f"{actions[frame, dim]:.4g}, outside [{ACTION_LOW}, {ACTION_HIGH}] ({int(outside.sum())} values "
                "in this episode); scale it with --action-map or pass --clip-actions"
            )
        return np.clip(actions, ACTION_LOW, ACTION_HIGH), int(outside.sum())

    def _labels(self, columns, rows, ep, where: str) -> tuple[np.ndarray, bool]:
        mode, column = self.plan.success_mode, self.plan.success_column
        length = len(rows)
        if mode in ("unknown", "episode"):
            success = mode == "episode" and bool(ep[column])
            labels = np.zeros(length, dtype=bool)
            labels[-1] = success
            return labels, success
        values = np.asarray(columns[column][rows]).reshape(length)
        if mode == "reward":
            solved = values.astype(np.float64) > 0
        elif values.dtype == np.bool_ or np.isin(values, (0, 1)).all():
            solved = values.astype(bool)
        else:
            raise LeRobotImportError(
                f"{where}: {column} holds values other than 0/1/true/false ({np.unique(values)[:5]}); "
                f"use reward:{column}"
            )
        if mode == "frame":
            return solved, bool(solved[-1])
        return np.concatenate([[False], solved[:-1]]), bool(solved[-1])

    def _images(self, ep: dict[str, Any], data_path: Path, timestamps: np.ndarray) -> np.ndarray:
        from world4rl_model.images import to_learning_image

        plan = self.plan
        key, size = plan.image_key, plan.config.image_size
        if plan.features[key]["dtype"] == "image":
            return np.stack([to_learning_image(img, size) for img in _png_frames(data_path, key, ep["episode_index"])])
        path = plan.root / plan.info["video_path"].format(
            video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"], file_index=ep[f"videos/{key}/file_index"]
        )
        wanted = ep[f"videos/{key}/from_timestamp"] + timestamps.astype(np.float64)
        return np.stack(self._decode(path, wanted, f"{path}: episode {ep['episode_index']}"))

    def _container(self, path: Path):
        import av

        if self.video is not None and self.video[0] == path:
            return self.video[1]
        self.close()
        fmt.quiet_av_logs()
        try:
            container = av.open(str(path))
        except FileNotFoundError:
            raise LeRobotImportError(f"{path}: missing") from None
        except Exception as e:
            raise LeRobotImportError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
        self.video = (path, container)
        return container

    def _decode(self, path: Path, wanted: np.ndarray, where: str) -> list[np.ndarray]:
        """Frames nearest each wanted time (within half a frame), as learning images."""
        from world4rl_model.images import to_learning_image

        container = self._container(path)
        stream = container.streams.video[0]
        tolerance = max(0.5 / self.plan.fps, fmt.TOLERANCE_S)
        times, images = [], []
        try:
            container.seek(max(0, math.floor(wanted[0] / stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t > wanted[-1] + tolerance:
                    break
                if t >= wanted[0] - tolerance:
                    times.append(t)
                    images.append(to_learning_image(frame.to_ndarray(format="rgb24"), self.plan.config.image_size))
        except Exception as e:
            raise LeRobotImportError(f"{where}: cannot decode ({type(e).__name__}: {e})") from None
        if not times:
            raise LeRobotImportError(f"{where}: no frames between {wanted[0]:.4f} s and {wanted[-1]:.4f} s")
        times_array = np.asarray(times)
        nearest = np.abs(times_array[None, :] - wanted[:, None]).argmin(axis=1)
        gap = np.abs(times_array[nearest] - wanted)
        if gap.max() > tolerance:
            bad = int(gap.argmax())
            raise LeRobotImportError(
                f"{where}: no frame within {tolerance:.3f} s of frame {bad} at {wanted[bad]:.4f} s"
            )
        return [images[i] for i in nearest]


def _to_numpy(column, path: Path, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars [N], fixed or variable lists [N, D]."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        if len(column) and len(flat) % len(column):
            raise LeRobotImportError(f"{path}: column {name} has rows of different lengths")
        return flat.reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _png_frames(path: Path, key: str, episode: int) -> list[np.ndarray]:
    """An image feature's frames of one episode (PNG/JPEG bytes in the parquet) as RGB arrays."""
    import cv2
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[key, "frame_index"], filters=[("episode_index", "=", episode)])
    frames = []
    for t, cell in enumerate(table.column(key).to_pylist()):
        data = (cell or {}).get("bytes") if isinstance(cell, dict) else cell
        image = None if not data else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise LeRobotImportError(f"{path}: episode {episode}, frame {t}: {key} holds no decodable image bytes")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return frames

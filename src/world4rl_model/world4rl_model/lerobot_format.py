"""LeRobotDataset v3.0, the layout LeRobot 0.4 reads and writes, without LeRobot itself. ROS-free.

Layout (what `world4rl dataset export --format lerobot` writes; LeRobot's own writer makes the same)::

    DIR/
      meta/info.json                  codebase_version "v3.0", fps, features, path templates, totals
      meta/stats.json                 per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
      meta/tasks.parquet              task strings (the pandas index) -> task_index
      meta/episodes/chunk-000/file-000.parquet   one row per episode: indices, file positions,
                                      video from/to timestamps, per-episode stats, world4rl/* columns
      data/chunk-000/file-000.parquet frames: one row per control step (episodes appended as row groups)
      videos/observation.images.front/chunk-000/file-000.mp4   episodes one after another

A data file takes episodes until the next would reach `data_files_size_in_mb`, a video file until
`video_files_size_in_mb`; `chunks_size` files make a chunk (LeRobot's defaults: 100 MB, 200 MB, 1000).

Features of an export (one source of truth: world4rl_spec):
- observation.images.CAMERA  video [H, W, 3] at the camera's recorded resolution (a dataset's own size
                              for a world4rl dataset), one frame per control step: the frame o_t the
                              action a_t was decided on;
- observation.state           float32 [9]: ARM_JOINT_NAMES + FINGER_JOINT_NAMES positions [rad, m]
                              (left out when the episodes have no joint states);
- action                      float32 [4]: ACTION_NAMES (dx, dy, dz, gripper) in [-1, 1];
- success                     bool: world4rl's per-frame label, the task is solved in o_t;
- next.success                bool: LeRobot's convention, solved after a_t (= success of o_{t+1};
                              the last frame repeats its own label);
- timestamp (= frame_index / fps), frame_index, episode_index, index, task_index.
fps is the control rate. The episode's label and EpisodeInfo fields are columns of meta/episodes:
world4rl/success, world4rl/kind, world4rl/operator_note, world4rl/robot, world4rl/source_bag,
world4rl/source_sha256, world4rl/seed. info.json has a "world4rl" block (the action space, the
source of the export) that LeRobot ignores.

This module holds the layout, the features, the statistics (the numbers LeRobot computes) and
`validate`; lerobot_export.py writes, lerobot_import.py reads into a world4rl dataset.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from world4rl_model.lerobot_config import CHUNKS_SIZE
from world4rl_spec import ACTION_NAMES, ARM_JOINT_NAMES, FINGER_JOINT_NAMES

CODEBASE_VERSION = "v3.0"
MB = 1024**2
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"

IMAGES_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
SUCCESS_KEY = "success"
NEXT_SUCCESS_KEY = "next.success"
STATE_NAMES = (*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES)
EXTRA_PREFIX = "world4rl/"
# LeRobot's default tolerance between a frame's timestamp and its decoded video frame [s].
TOLERANCE_S = 1e-4

DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


class LeRobotFormatError(ValueError):
    """A LeRobotDataset file is missing, malformed or inconsistent; the message starts with the path."""


def chunk_file(file_number: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """The (chunk_index, file_index) of the n-th file of a stream, as LeRobot numbers them."""
    return divmod(int(file_number), int(chunks_size))


def video_key(camera: str) -> str:
    if not camera or not all(c.isalnum() or c in "_-" for c in camera):
        raise ValueError(f"camera name {camera!r}: use letters, digits, '_' or '-' (it becomes a feature name)")
    return IMAGES_PREFIX + camera


def build_features(camera: str, height: int, width: int, with_state: bool) -> dict[str, dict[str, Any]]:
    """The export's features (info.json's "features", without the video "info" block)."""
    features: dict[str, dict[str, Any]] = {
        video_key(camera): {
            "dtype": "video",
            "shape": [int(height), int(width), 3],
            "names": ["height", "width", "channels"],
        }
    }
    if with_state:
        features[STATE_KEY] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": list(STATE_NAMES)}
    features[ACTION_KEY] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)}
    features[NEXT_SUCCESS_KEY] = {"dtype": "bool", "shape": [1], "names": None}
    features[SUCCESS_KEY] = {"dtype": "bool", "shape": [1], "names": None}
    return {**features, **DEFAULT_FEATURES}


def _arrow_type(feature: dict[str, Any]):
    import pyarrow as pa

    scalar = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
    base = scalar[feature["dtype"]]
    shape = list(feature["shape"])
    return base if shape == [1] else pa.list_(base, shape[0])


def data_schema(features: dict[str, dict[str, Any]]):
    """The arrow schema of data/*.parquet: the non-video features in order, with the `huggingface`
    metadata the `datasets` library (4.x, LeRobot 0.4's) writes for Value / List features."""
    import pyarrow as pa

    fields, hf = [], {}
    for key, feature in features.items():
        if feature["dtype"] in ("video", "image"):
            continue
        fields.append(pa.field(key, _arrow_type(feature)))
        value = {"dtype": feature["dtype"], "_type": "Value"}
        hf[key] = (
            value
            if list(feature["shape"]) == [1]
            else {"feature": value, "length": feature["shape"][0], "_type": "List"}
        )
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})


def write_json(path: Path, data: Any) -> None:
    """JSON as LeRobot writes it (indent 4, UTF-8), atomically."""
    from world4rl_model.atomic_io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(data, indent=4, ensure_ascii=False).encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeRobotFormatError(f"{path}: not valid JSON ({e})") from None


def write_tasks(path: Path, tasks: Sequence[str]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame({"task_index": ...}, index=tasks):
    a task_index column and the task strings as the (unnamed) pandas index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("__index_level_0__", pa.string())],
        metadata={"pandas": json.dumps(pandas_meta)},
    )
    table = pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": list(tasks)}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_tasks(root: Path) -> list[str]:
    """Task strings by task_index from meta/tasks.parquet (the pandas index, or a `task` column)."""
    import pyarrow.parquet as pq

    path = root / TASKS_PATH
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing") from None
    except Exception as e:
        raise LeRobotFormatError(f"{path}: not a readable parquet file ({e})") from None
    names = table.column_names
    text = next((c for c in ("__index_level_0__", "task") if c in names), None)
    if "task_index" not in names or text is None:
        raise LeRobotFormatError(f"{path}: expected columns task_index and the task strings, got {names}")
    index = table.column("task_index").to_pylist()
    if sorted(index) != list(range(len(index))):
        raise LeRobotFormatError(f"{path}: task_index is not 0..{len(index) - 1}: {index[:10]}")
    tasks = [""] * len(index)
    for i, task in zip(index, table.column(text).to_pylist(), strict=True):
        tasks[i] = str(task)
    return tasks


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR [dB] of two uint8 images (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# -- statistics: the numbers LeRobot 0.4 computes for stats.json (its normalisers read them) ---------


class RunningQuantileStats:
    """min, max, mean, std, count and histogram quantiles (5000 bins) per vector component, exactly
    as lerobot.datasets.compute_stats.RunningQuantileStats computes them (one update per episode)."""

    def __init__(self, num_quantile_bins: int = 5000) -> None:
        self.count = 0
        self.bins = num_quantile_bins

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(-1, batch.shape[-1])
        self.is_bool = batch.dtype == np.bool_
        self.count = len(batch)
        self.mean = np.mean(batch, axis=0)
        self.mean_of_squares = np.mean(batch**2, axis=0)
        self.min, self.max = np.min(batch, axis=0), np.max(batch, axis=0)
        self.edges = [
            np.linspace(self.min[i] - 1e-10, self.max[i] + 1e-10, self.bins + 1) for i in range(batch.shape[1])
        ]
        values = batch.astype(np.uint8) if self.is_bool else batch  # np.histogram's own conversion, without its warning
        self.histograms = [
            np.histogram(values[:, i], bins=self.edges[i])[0].astype(float) for i in range(batch.shape[1])
        ]

    def statistics(self) -> dict[str, np.ndarray]:
        stddev = np.sqrt(np.maximum(0, self.mean_of_squares - self.mean**2))
        stats = {"min": self.min.copy(), "max": self.max.copy(), "mean": self.mean.copy(), "std": stddev}
        stats["count"] = np.array([self.count])
        for q in QUANTILES:
            stats[f"q{int(q * 100):02d}"] = np.array(
                [_quantile(h, e, q * self.count) for h, e in zip(self.histograms, self.edges, strict=True)]
            )
        return stats


def _quantile(hist: np.ndarray, edges: np.ndarray, target: float) -> float:
    cumsum = np.cumsum(hist)
    idx = int(np.searchsorted(cumsum, target))
    if idx == 0:
        return float(edges[0])
    if idx >= len(cumsum):
        return float(edges[-1])
    before = cumsum[idx - 1]
    inside = cumsum[idx] - before
    if inside == 0:
        return float(edges[idx])
    return float(edges[idx] + (target - before) / inside * (edges[idx + 1] - edges[idx]))


def vector_stats(data: np.ndarray) -> dict[str, np.ndarray]:
    """Per-episode stats of a non-image feature: data [T] (scalars) or [T, D]; stats of shape [1] or [D]."""
    data = np.asarray(data)
    two_d = data.reshape(len(data), -1)
    if len(two_d) < 2:
        stats = {"min": two_d.min(0), "max": two_d.max(0), "mean": two_d.mean(0), "std": two_d.std(0)}
        stats["count"] = np.array([len(two_d)])
        for q in QUANTILES:
            stats[f"q{int(q * 100):02d}"] = stats["mean"].copy()
        return stats
    running = RunningQuantileStats()
    running.update(two_d)
    return running.statistics()


def sample_indices(length: int) -> list[int]:
    """LeRobot's sample_indices: which frames of an episode its image statistics look at."""
    samples = max(min(100, length), min(int(length**0.75), 10_000))
    return np.round(np.linspace(0, length - 1, samples)).astype(int).tolist()


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-episode stats of a camera (uint8 [T, H, W, 3]) as LeRobot computes them: sampled frames,
    subsampled when a side is >= 300 px, per channel in [0, 1], shape [3, 1, 1]; count = frames sampled."""
    picked = [np.asarray(frames[i]) for i in sample_indices(len(frames))]
    height, width = picked[0].shape[:2]
    if max(width, height) >= 300:
        step = int(width / 150) if width > height else int(height / 150)
        picked = [p[::step, ::step] for p in picked]
    pixels = np.stack(picked).reshape(-1, 3)
    if len(pixels) < 2:
        raise ValueError("an image feature needs at least 2 pixels for its statistics")
    running = RunningQuantileStats()
    running.update(pixels)
    stats = running.statistics()
    stats["count"] = np.array([len(picked)])
    return {k: v if k == "count" else v.reshape(3, 1, 1) / 255.0 for k, v in stats.items()}


def aggregate_stats(stats_list: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot's aggregate_stats: min of mins, max of maxes, count-weighted mean and quantiles, pooled std."""
    out: dict[str, dict[str, np.ndarray]] = {}
    keys = [k for stats in stats_list for k in stats]
    for key in dict.fromkeys(keys):
        parts = [{s: np.asarray(v) for s, v in stats[key].items()} for stats in stats_list if key in stats]
        means = np.stack([p["mean"] for p in parts])
        variances = np.stack([p["std"] ** 2 for p in parts])
        counts = np.stack([p["count"] for p in parts])
        total = counts.sum(axis=0)
        while counts.ndim < means.ndim:
            counts = np.expand_dims(counts, axis=-1)
        mean = (means * counts).sum(axis=0) / total
        variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
        agg = {
            "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
            "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
        }
        agg.update(mean=mean, std=np.sqrt(variance), count=total)
        for q in (k for k in parts[0] if k.startswith("q") and k[1:].isdigit()):
            if all(q in p for p in parts):
                agg[q] = (np.stack([p[q] for p in parts]) * counts).sum(axis=0) / total
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in fs.items()} for k, fs in stats.items()}


# -- reading ------------------------------------------------------------------------------------


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked to be a v3.0 dataset with the keys this code reads."""
    path = root / INFO_PATH
    if not path.is_file() and not root.is_dir():
        raise LeRobotFormatError(f"{root}: no such directory")
    info = read_json(path)
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != CODEBASE_VERSION:
        hint = (
            " (convert it with LeRobot's lerobot.datasets.v30.convert_dataset_v21_to_v30)"
            if str(version).startswith("v2")
            else ""
        )
        raise LeRobotFormatError(f"{path}: codebase_version {version!r}, this code reads {CODEBASE_VERSION!r}{hint}")
    for key in ("fps", "features", "data_path", "total_episodes", "total_frames"):
        if key not in info:
            raise LeRobotFormatError(f"{path}: missing key {key!r}")
    return info


def read_episodes(root: Path, with_stats: bool = False) -> list[dict[str, Any]]:
    """meta/episodes rows (all files, in order), without the stats/* columns unless asked for."""
    import pyarrow.parquet as pq

    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / 'meta' / 'episodes'}: no episode metadata (chunk-*/file-*.parquet)")
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            names = pq.read_schema(path).names
            columns = names if with_stats else [n for n in names if not n.startswith("stats/")]
            rows += pq.read_table(path, columns=columns).to_pylist()
        except Exception as e:
            raise LeRobotFormatError(f"{path}: not a readable parquet file ({e})") from None
    return rows


def video_stream_info(path: Path) -> dict[str, Any]:
    """info.json's "info" block of a video feature, read from its first file (as LeRobot does)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": bool(container.streams.audio),
        }


def packet_times(path: Path) -> tuple[list[float], float, tuple[int, int]]:
    """(sorted presentation times [s] of a video's frames, its duration [s], (height, width)) from
    its packets, without decoding. LeRobotFormatError names the file when it cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LeRobotFormatError(f"{path}: no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            times = sorted(float(p.pts * base) for p in container.demux(stream) if p.pts is not None)
            duration = float(stream.duration * base) if stream.duration else float(container.duration or 0) / 1e6
            return times, duration, (stream.height, stream.width)
    except LeRobotFormatError:
        raise
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing") from None
    except Exception as e:  # av.error.InvalidDataError and friends: a truncated or foreign file
        raise LeRobotFormatError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None


# -- validation ---------------------------------------------------------------------------------


def validate(root: str | os.PathLike) -> dict[str, int]:
    """Re-open everything of a v3.0 dataset and check it is consistent: info totals, tasks, the
    episode index (contiguous indices, lengths, file positions), every data file (rows, index,
    frame_index, timestamps = frame_index / fps) and every video (frames per episode at the
    expected timestamps within LeRobot's tolerance, durations, resolution), stats for every feature.
    Returns {"episodes", "frames", "tasks", "data_files", "video_files"}; raises
    LeRobotFormatError naming the first bad file."""
    root = Path(root)
    info = read_info(root)
    tasks = read_tasks(root)
    episodes = read_episodes(root)
    _check_episode_index(root, info, tasks, episodes)
    data_files = _check_data(root, info, episodes, len(tasks))
    video_files = sum(_check_videos(root, info, key, episodes) for key in _video_keys(info))
    stats = read_json(root / STATS_PATH)
    missing = [k for k, f in info["features"].items() if f["dtype"] != "string" and k not in stats]
    if missing:
        raise LeRobotFormatError(f"{root / STATS_PATH}: no statistics for {missing}")
    return {"episodes": len(episodes), "frames": int(info["total_frames"]), "tasks": len(tasks),
            "data_files": data_files, "video_files": video_files}  # fmt: skip


def _video_keys(info: dict[str, Any]) -> list[str]:
    return [k for k, f in info["features"].items() if f["dtype"] == "video"]


def _check_episode_index(root: Path, info: dict[str, Any], tasks: list[str], episodes: list[dict[str, Any]]) -> None:
    where = root / "meta" / "episodes"
    info_path = root / INFO_PATH
    if len(episodes) != info["total_episodes"]:
        raise LeRobotFormatError(
            f"{info_path}: total_episodes {info['total_episodes']}, but {where} lists {len(episodes)}"
        )
    if info.get("total_tasks", len(tasks)) != len(tasks):
        raise LeRobotFormatError(
            f"{info_path}: total_tasks {info['total_tasks']}, but {root / TASKS_PATH} has {len(tasks)}"
        )
    start = 0
    for position, ep in enumerate(episodes):
        for key in (
            "episode_index",
            "length",
            "dataset_from_index",
            "dataset_to_index",
            "data/chunk_index",
            "data/file_index",
        ):
            if key not in ep:
                raise LeRobotFormatError(f"{where}: column {key!r} is missing")
        if ep["episode_index"] != position:
            raise LeRobotFormatError(f"{where}: row {position} has episode_index {ep['episode_index']}")
        if (ep["dataset_from_index"], ep["dataset_to_index"]) != (start, start + ep["length"]) or ep["length"] < 1:
            raise LeRobotFormatError(
                f"{where}: episode {position}: rows [{ep['dataset_from_index']}, {ep['dataset_to_index']}) with length "
                f"{ep['length']}, expected [{start}, {start + ep['length']}) (indices must be contiguous)"
            )
        unknown = [t for t in ep.get("tasks") or [] if t not in tasks]
        if unknown:
            raise LeRobotFormatError(f"{where}: episode {position}: tasks {unknown} are not in {root / TASKS_PATH}")
        start += ep["length"]
    if start != info["total_frames"]:
        raise LeRobotFormatError(f"{info_path}: total_frames {info['total_frames']}, but the episodes hold {start}")


def _episodes_by_file(episodes: list[dict[str, Any]], prefix: str) -> dict[tuple[int, int], list[dict[str, Any]]]:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for ep in episodes:
        if f"{prefix}/chunk_index" not in ep:
            raise LeRobotFormatError(f"meta/episodes: column {prefix}/chunk_index is missing")
        groups.setdefault((int(ep[f"{prefix}/chunk_index"]), int(ep[f"{prefix}/file_index"])), []).append(ep)
    return groups


def _check_data(root: Path, info: dict[str, Any], episodes: list[dict[str, Any]], num_tasks: int) -> int:
    import pyarrow.parquet as pq

    groups = _episodes_by_file(episodes, "data")
    paths = {root / info["data_path"].format(chunk_index=c, file_index=f): eps for (c, f), eps in groups.items()}
    extra = sorted(set((root / "data").glob("*/*.parquet")) - set(paths))
    if extra:
        raise LeRobotFormatError(f"{extra[0]}: a data file no episode refers to (LeRobot would read its rows too)")
    columns = [k for k, f in info["features"].items() if f["dtype"] not in ("video", "image")]
    for path, eps in sorted(paths.items()):
        try:
            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise LeRobotFormatError(f"{path}: columns {missing} are missing")
            table = pq.read_table(path, columns=["index", "episode_index", "frame_index", "timestamp", "task_index"])
        except LeRobotFormatError:
            raise
        except FileNotFoundError:
            raise LeRobotFormatError(f"{path}: missing") from None
        except Exception as e:
            raise LeRobotFormatError(f"{path}: not a readable parquet file ({e})") from None
        _check_rows(
            path, {c: table.column(c).to_numpy() for c in table.column_names}, eps, float(info["fps"]), num_tasks
        )
    return len(paths)


def _check_rows(path: Path, cols: dict[str, np.ndarray], eps: list[dict[str, Any]], fps: float, num_tasks: int) -> None:
    expected = np.concatenate([np.arange(ep["dataset_from_index"], ep["dataset_to_index"]) for ep in eps])
    if len(cols["index"]) != len(expected):
        raise LeRobotFormatError(
            f"{path}: {len(cols['index'])} rows, but its episodes "
            f"{[e['episode_index'] for e in eps]} hold {len(expected)}"
        )
    if not np.array_equal(cols["index"], expected):
        bad = int(np.flatnonzero(cols["index"] != expected)[0])
        raise LeRobotFormatError(f"{path}: row {bad} has index {cols['index'][bad]}, expected {expected[bad]}")
    episode = np.concatenate([np.full(ep["length"], ep["episode_index"]) for ep in eps])
    frame = np.concatenate([np.arange(ep["length"]) for ep in eps])
    for name, want in (("episode_index", episode), ("frame_index", frame)):
        if not np.array_equal(cols[name], want):
            bad = int(np.flatnonzero(cols[name] != want)[0])
            raise LeRobotFormatError(f"{path}: row {bad} has {name} {cols[name][bad]}, expected {want[bad]}")
    drift = np.abs(cols["timestamp"].astype(np.float64) - frame / fps)
    if drift.max() > TOLERANCE_S:
        bad = int(np.argmax(drift))
        raise LeRobotFormatError(
            f"{path}: row {bad}: timestamp {cols['timestamp'][bad]} is not frame_index / fps = {frame[bad] / fps}"
        )
    if cols["task_index"].min() < 0 or cols["task_index"].max() >= num_tasks:
        raise LeRobotFormatError(f"{path}: task_index outside 0..{num_tasks - 1}")


def _check_videos(root: Path, info: dict[str, Any], key: str, episodes: list[dict[str, Any]]) -> int:
    groups = _episodes_by_file(episodes, f"videos/{key}")
    fps = float(info["fps"])
    shape = tuple(info["features"][key]["shape"][:2])
    for (chunk, file), eps in sorted(groups.items()):
        path = root / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
        times, duration, size = packet_times(path)
        if size != shape:
            raise LeRobotFormatError(f"{path}: frames are {size[1]}x{size[0]}, info.json says {shape[1]}x{shape[0]}")
        for ep in eps:
            start, stop = ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"]
            where = f"{path}: episode {ep['episode_index']} ([{start:.4f}, {stop:.4f}) s)"
            if abs((stop - start) - ep["length"] / fps) > TOLERANCE_S:
                raise LeRobotFormatError(
                    f"{where}: lasts {stop - start:.4f} s, but its {ep['length']} frames at {fps:g} fps take "
                    f"{ep['length'] / fps:.4f} s"
                )
            inside = [t for t in times if start - TOLERANCE_S <= t < stop - TOLERANCE_S]
            want = start + np.arange(ep["length"]) / fps
            if len(inside) != ep["length"] or np.abs(np.asarray(inside) - want).max() > TOLERANCE_S:
                raise LeRobotFormatError(
                    f"{where}: holds {len(inside)} frames, expected {ep['length']} at {start:.4f} + k / {fps:g} s"
                )
        if duration + TOLERANCE_S < max(ep[f"videos/{key}/to_timestamp"] for ep in eps):
            raise LeRobotFormatError(f"{path}: lasts {duration:.4f} s, shorter than its episodes")
    return len(groups)


def frame_times(fps: float, length: int) -> np.ndarray:
    """timestamp of frames 0..length-1: frame_index / fps, float32 as LeRobot stores it."""
    return (np.arange(length) / float(fps)).astype(np.float32)


def fps_of(control_rate_hz: float) -> int:
    """LeRobot's fps is an int: the control rate, which must be whole."""
    fps = round(float(control_rate_hz))
    if fps < 1 or abs(fps - float(control_rate_hz)) > 1e-9:
        raise ValueError(f"control rate {control_rate_hz} Hz is not a whole number; LeRobot's fps is an integer")
    return int(fps)


def quiet_av_logs() -> None:
    """Keep FFmpeg's informational messages off the terminal (errors still raise)."""
    import av.logging

    av.logging.set_level(av.logging.ERROR)

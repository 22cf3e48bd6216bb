"""The episode dataset: a directory of memory-mappable numpy episodes plus a JSON manifest. ROS-free.

Layout (this docstring is the format's specification)::

    DATASET/
      manifest.json
      episodes/ep_000000/{frames.npy, actions.npy, success.npy[, joint_positions.npy]}

- frames.npy      uint8   [T, H, W, 3]  RGB observation o_t at control step t (H = W = image_size)
- actions.npy     float32 [T, A]        action a_t taken after observing o_t, in [-1, 1]
- success.npy     bool    [T]           per-frame success label
- joint_positions.npy float32 [T, 9]    optional (fr3_joint1..7 + 2 fingers)

Transitions are (o_t, a_t) -> o_{t+1} for t < T-1.

Crash safety: an episode is written into a temporary directory, fsynced, renamed into place and
only then listed in the manifest, which is itself replaced atomically (write + fsync + rename).
Writers take an exclusive lock on ``DATASET/.lock`` per episode and re-read the manifest under it,
so several processes may append to one dataset. The next writer removes only the temporary
directories of a crashed writer (``episodes/.tmp-ep_NNNNNN-*``, never listed, never complete).
An episode directory the manifest does not list (a crash between the rename and the manifest
update, or a stale or restored manifest) is never deleted nor overwritten: writers report it
(an UnlistedEpisodesWarning, ``DatasetWriter.unlisted``, ``Dataset.unlisted_episode_dirs``) and
put new episodes into directory names that are still free, so an episode's directory number may
differ from its index (the manifest's ``dir`` is what readers follow).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from world4rl_model.atomic_io import atomic_write_bytes, fsync_path
from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW, CONTROL_RATE_HZ, LEARNING_IMAGE_SIZE, check_task_name
from world4rl_spec.action import describe_action_space

FORMAT = "world4rl-dataset"
VERSION = 1
MANIFEST = "manifest.json"
EPISODES_DIR = "episodes"
EPISODE_KINDS = ("expert", "policy", "random", "human")
JOINT_POSITIONS_DIM = 9
_LOCK = ".lock"
_TMP_PREFIX = ".tmp-"
# Exactly what add_episode's tempfile.mkdtemp(prefix=".tmp-ep_NNNNNN-") creates: the only names a
# writer may delete, as leftovers of its own interrupted writes.
_OWN_TEMP_DIR = re.compile(r"\.tmp-ep_\d{6,}-[A-Za-z0-9_]+")
_LIST_AT_MOST = 10


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message starts with the offending path."""


class UnlistedEpisodesWarning(UserWarning):
    """DATASET/episodes holds directories the manifest does not list; they are kept, untouched."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _episode_dirname(index: int) -> str:
    return f"ep_{index:06d}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def manifest_hash(root: str | os.PathLike) -> str:
    """sha256 (hex) of DATASET/manifest.json's bytes: identifies the exact data a checkpoint was trained on."""
    path = Path(root) / MANIFEST
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no dataset manifest here") from None


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no dataset manifest here") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{path}: unsupported version {manifest.get('version')!r} (this code reads {VERSION})")
    for key in ("image_size", "control_rate_hz", "action_space", "tasks", "episodes"):
        if key not in manifest:
            raise DatasetError(f"{path}: missing key {key!r}")
    for position, ep in enumerate(manifest["episodes"]):
        if ep.get("index") != position:
            raise DatasetError(f"{path}: episodes[{position}] has index {ep.get('index')!r}, expected {position}")
    return manifest


def _unlisted_dirs(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Names of directories in DATASET/episodes that the manifest does not list (a writer's temp
    dirs aside), sorted."""
    episodes_dir = root / EPISODES_DIR
    if not episodes_dir.is_dir():
        return []
    listed = {ep.get("dir") for ep in manifest["episodes"]}
    return sorted(
        child.name
        for child in episodes_dir.iterdir()
        if child.is_dir() and not _OWN_TEMP_DIR.fullmatch(child.name) and f"{EPISODES_DIR}/{child.name}" not in listed
    )


def _free_dirname(episodes_dir: Path, index: int, manifest: dict[str, Any]) -> str:
    """ep_<n> for the smallest n >= index that neither exists on disk nor is listed in the manifest."""
    listed = {ep.get("dir") for ep in manifest["episodes"]}
    n = index
    while (episodes_dir / _episode_dirname(n)).exists() or f"{EPISODES_DIR}/{_episode_dirname(n)}" in listed:
        n += 1
    return _episode_dirname(n)


def _describe(array: Any) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} {list(array.shape)}"
    return type(array).__name__


class DatasetWriter:
    """Creates a dataset or opens an existing one and appends episodes to it.

    Args:
        root: the dataset directory.
        image_size: square frame size H = W; must match an existing dataset's.
        control_rate_hz: control rate of the recorded actions; must match an existing dataset's.
        create_ok: create the dataset if it does not exist (else FileNotFoundError).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = LEARNING_IMAGE_SIZE,
        control_rate_hz: float = CONTROL_RATE_HZ,
        create_ok: bool = True,
    ) -> None:
        self.root = Path(root)
        self.image_size = int(image_size)
        self.control_rate_hz = float(control_rate_hz)
        # Directories in DATASET/episodes the manifest does not list: kept, never overwritten,
        # reported (an UnlistedEpisodesWarning once per writer and set of names). Updated on open
        # and on every add_episode.
        self.unlisted: list[str] = []
        self._warned: set[str] = set()
        manifest_path = self.root / MANIFEST
        if manifest_path.exists():
            manifest = _read_manifest(self.root)
            if manifest["image_size"] != self.image_size:
                raise DatasetError(
                    f"{manifest_path}: dataset has image_size {manifest['image_size']}, "
                    f"writer asked for {self.image_size}"
                )
            if abs(float(manifest["control_rate_hz"]) - self.control_rate_hz) > 1e-9:
                raise DatasetError(
                    f"{manifest_path}: dataset has control_rate_hz {manifest['control_rate_hz']}, "
                    f"writer asked for {self.control_rate_hz}"
                )
            if manifest["action_space"].get("dim") != ACTION_DIM:
                raise DatasetError(f"{manifest_path}: action_space.dim {manifest['action_space'].get('dim')}")
            with self._locked():  # under the lock: no other writer is between its rename and its manifest
                self._note_unlisted(_read_manifest(self.root))
        else:
            if not create_ok:
                raise FileNotFoundError(f"{manifest_path}: no dataset here and create_ok=False")
            (self.root / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
            with self._locked():
                if not manifest_path.exists():  # another writer may have won the race
                    now = _now()
                    self._write_manifest(
                        {
                            "format": FORMAT,
                            "version": VERSION,
                            "image_size": self.image_size,
                            "control_rate_hz": self.control_rate_hz,
                            "action_space": describe_action_space(),
                            "tasks": [],
                            "episodes": [],
                            "num_transitions": 0,
                            "created": now,
                            "updated": now,
                        }
                    )
                self._note_unlisted(_read_manifest(self.root))  # episodes left without their manifest

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _note_unlisted(self, manifest: dict[str, Any]) -> None:
        self.unlisted = _unlisted_dirs(self.root, manifest)
        new = [name for name in self.unlisted if name not in self._warned]
        if new:
            self._warned.update(new)
            shown = ", ".join(new[:_LIST_AT_MOST]) + (
                f" and {len(new) - _LIST_AT_MOST} more" if len(new) > _LIST_AT_MOST else ""
            )
            warnings.warn(
                f"{self.root / EPISODES_DIR}: {len(new)} episode director{'y' if len(new) == 1 else 'ies'} not listed "
                f"in {self.root / MANIFEST}: {shown}. Kept untouched (a stale or restored manifest, or a writer "
                "that crashed before listing its episode?); new episodes go to other directories.",
                UnlistedEpisodesWarning,
                stacklevel=3,
            )

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())

    @property
    def manifest(self) -> dict[str, Any]:
        return _read_manifest(self.root)

    def __len__(self) -> int:
        return len(self.manifest["episodes"])

    def has_source(self, sha256: str) -> bool:
        """True if an episode converted from a source (bag) with this sha256 is already in the dataset."""
        return any((ep.get("source") or {}).get("sha256") == sha256 for ep in self.manifest["episodes"])

    def _validate(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        success_per_frame: np.ndarray,
        joint_positions: np.ndarray | None,
        where: str,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        s = self.image_size
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (s, s, 3) or len(frames) < 1:
            raise DatasetError(
                f"{where}/frames.npy: expected uint8 [T, {s}, {s}, 3] with T >= 1, got {_describe(frames)}"
            )
        length = len(frames)
        actions = np.asarray(actions)
        if not np.issubdtype(actions.dtype, np.floating) or actions.ndim != 2 or actions.shape != (length, ACTION_DIM):
            raise DatasetError(
                f"{where}/actions.npy: expected float32 [{length}, {ACTION_DIM}], got {_describe(actions)}"
            )
        actions = actions.astype(np.float32)
        if not np.all(np.isfinite(actions)):
            raise DatasetError(f"{where}/actions.npy: contains NaN or inf")
        if actions.min() < ACTION_LOW - 1e-6 or actions.max() > ACTION_HIGH + 1e-6:
            raise DatasetError(
                f"{where}/actions.npy: actions must be normalised to [{ACTION_LOW}, {ACTION_HIGH}], "
                f"got range [{actions.min():.4g}, {actions.max():.4g}]"
            )
        actions = np.clip(actions, ACTION_LOW, ACTION_HIGH)
        success_per_frame = np.asarray(success_per_frame)
        if success_per_frame.shape != (length,) or not (
            success_per_frame.dtype == np.bool_
            or (np.issubdtype(success_per_frame.dtype, np.integer) and np.isin(success_per_frame, (0, 1)).all())
        ):
            raise DatasetError(f"{where}/success.npy: expected bool [{length}], got {_describe(success_per_frame)}")
        success_per_frame = success_per_frame.astype(bool)
        if joint_positions is not None:
            joint_positions = np.asarray(joint_positions)
            if (
                not np.issubdtype(joint_positions.dtype, np.floating)
                or joint_positions.shape != (length, JOINT_POSITIONS_DIM)
                or not np.all(np.isfinite(joint_positions))
            ):
                raise DatasetError(
                    f"{where}/joint_positions.npy: expected finite float32 [{length}, {JOINT_POSITIONS_DIM}], "
                    f"got {_describe(joint_positions)}"
                )
            joint_positions = joint_positions.astype(np.float32)
        return frames, actions, success_per_frame, joint_positions

    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        task: str,
        success: bool,
        kind: str,
        success_per_frame: np.ndarray | None = None,
        joint_positions: np.ndarray | None = None,
        source_bag: str | None = None,
        source_sha256: str | None = None,
        seed: int | None = None,
        timing: str | None = None,
    ) -> int:
        """Append one episode and return its index (its position in `manifest["episodes"]`).
        `timing`: how a generated episode's arm was moved (the simulator's "direct" controller or the
        "runtime" one a deploy has), kept in its manifest entry; None for recorded ones (bags).

        `success_per_frame` defaults to False everywhere for a failed episode and, for a successful
        one, True on the last frame only (the only frame an episode-level label vouches for).
        """
        if kind not in EPISODE_KINDS:
            raise ValueError(f"kind must be one of {EPISODE_KINDS}, got {kind!r}")
        check_task_name(task, f"{self.root / MANIFEST}: task of a new episode")  # it becomes RUN/bc/TASK etc.
        length = len(frames)
        if success_per_frame is None:
            success_per_frame = np.zeros(length, dtype=bool)
            if success and length:
                success_per_frame[-1] = True
        episodes_dir = self.root / EPISODES_DIR
        # Name the files as they would be called (the name is final only under the lock).
        manifest = self.manifest
        where = str(episodes_dir / _free_dirname(episodes_dir, len(manifest["episodes"]), manifest))
        frames, actions, success_per_frame, joint_positions = self._validate(
            frames, actions, success_per_frame, joint_positions, where
        )
        episodes_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            manifest = _read_manifest(self.root)
            index = len(manifest["episodes"])
            # Under the lock no other writer is mid-episode, so a temp dir of the writer's own naming
            # is the leftover of an interrupted add_episode (never listed, possibly half written): the
            # only thing removed here. Any other unlisted directory is kept and reported.
            for child in episodes_dir.iterdir():
                if child.is_dir() and not child.is_symlink() and _OWN_TEMP_DIR.fullmatch(child.name):
                    shutil.rmtree(child, ignore_errors=True)
            self._note_unlisted(manifest)
            name = _free_dirname(episodes_dir, index, manifest)  # never an existing directory
            arrays = {"frames": frames, "actions": actions, "success": success_per_frame}
            if joint_positions is not None:
                arrays["joint_positions"] = joint_positions
            _write_episode_dir(episodes_dir, name, arrays)
            manifest["episodes"].append(
                {
                    "index": index,
                    "dir": f"{EPISODES_DIR}/{name}",
                    "task": task,
                    "success": bool(success),
                    "length": int(length),
                    "kind": kind,
                    "source": {"bag": source_bag, "sha256": source_sha256},
                    "seed": None if seed is None else int(seed),
                    **({} if timing is None else {"timing": str(timing)}),
                }
            )
            manifest["tasks"] = sorted({ep["task"] for ep in manifest["episodes"]})
            manifest["num_transitions"] = int(sum(max(ep["length"] - 1, 0) for ep in manifest["episodes"]))
            manifest["updated"] = _now()
            self._write_manifest(manifest)
        return index


def _write_episode_dir(episodes_dir: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an episode's arrays (one STEM.npy each) into a temp dir, then rename it to `name`, so a
    listed episode is never half written. The caller holds the dataset's lock."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=episodes_dir))
    try:
        for stem, array in arrays.items():
            _save_npy(tmp / f"{stem}.npy", array)
        fsync_path(tmp)
        if (episodes_dir / name).exists():  # only a non-writer can have made it since (we hold the lock)
            raise FileExistsError(f"{episodes_dir / name}: appeared while the episode was written; not replaced")
        os.rename(tmp, episodes_dir / name)
        fsync_path(episodes_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Dataset:
    """Read side of a dataset. Episodes are addressed by index (= position in the manifest)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.manifest: dict[str, Any] = _read_manifest(self.root)
        self.episodes: list[dict[str, Any]] = self.manifest["episodes"]
        self.tasks: list[str] = list(self.manifest["tasks"])
        self.image_size: int = int(self.manifest["image_size"])
        self.control_rate_hz: float = float(self.manifest["control_rate_hz"])
        self.action_space: dict[str, Any] = dict(self.manifest["action_space"])
        self.action_dim: int = int(self.action_space["dim"])
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_transitions(self) -> int:
        return int(sum(max(ep["length"] - 1, 0) for ep in self.episodes))

    @property
    def hash(self) -> str:
        return manifest_hash(self.root)

    @property
    def unlisted_episode_dirs(self) -> list[str]:
        """Directories in DATASET/episodes that the manifest does not list (writers keep them; see
        the module doc). Non-empty after a stale or restored manifest or a writer's crash."""
        return _unlisted_dirs(self.root, self.manifest)

    def _load(self, path: Path, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DatasetError(f"{path}: missing") from None
        except ValueError as e:
            raise DatasetError(f"{path}: not a readable .npy file ({e})") from None
        if array.dtype != dtype or array.shape != shape:
            raise DatasetError(f"{path}: expected {what}, got {_describe(array)}")
        return array

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of episode i (read-only memory maps): frames, actions, success[, joint_positions]."""
        if not 0 <= i < len(self.episodes):
            raise IndexError(f"episode {i} out of range: {self.root} has {len(self.episodes)} episodes")
        cached = self._cache.get(i)
        if cached is not None:
            return cached
        ep = self.episodes[i]
        directory = self.root / ep["dir"]
        length, s, a = int(ep["length"]), self.image_size, self.action_dim
        arrays = {
            "frames": self._load(
                directory / "frames.npy", np.uint8, (length, s, s, 3), f"uint8 [{length}, {s}, {s}, 3]"
            ),
            "actions": self._load(directory / "actions.npy", np.float32, (length, a), f"float32 [{length}, {a}]"),
            "success": self._load(directory / "success.npy", np.bool_, (length,), f"bool [{length}]"),
        }
        jp = directory / "joint_positions.npy"
        if jp.exists():
            arrays["joint_positions"] = self._load(
                jp, np.float32, (length, JOINT_POSITIONS_DIM), f"float32 [{length}, {JOINT_POSITIONS_DIM}]"
            )
        self._cache[i] = arrays
        return arrays

    def validate(self) -> None:
        """Open every episode's arrays; raises DatasetError naming the first bad file."""
        for i in range(len(self)):
            self.episode(i)

    def task_index(self, task: str) -> int:
        """Position of `task` in the manifest's sorted task list (for one-hot task conditioning)."""
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(f"{self.root / MANIFEST}: task {task!r} not in {self.tasks}") from None

    def split(self, held_out_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
        """Deterministic split by episode into (train_indices, val_indices).

        Each episode's side depends only on (seed, its index), via a hash, so appending episodes
        to the dataset never moves an existing episode across the split. With a fraction > 0 and
        at least two episodes, both sides are non-empty.
        """
        if not 0.0 <= held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
        n = len(self.episodes)
        scores = [
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2.0**64 for i in range(n)
        ]
        val = [i for i in range(n) if scores[i] < held_out_fraction]
        if held_out_fraction > 0 and n >= 2:
            if not val:
                val = [min(range(n), key=lambda i: scores[i])]
            if len(val) == n:
                val.remove(max(range(n), key=lambda i: scores[i]))
        val_set = set(val)
        return [i for i in range(n) if i not in val_set], sorted(val)

    def select(
        self,
        indices: Sequence[int] | None = None,
        tasks: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[int]:
        """Episode indices filtered by task and/or kind (from `indices`, default all)."""
        chosen = range(len(self.episodes)) if indices is None else indices
        return [
            i
            for i in chosen
            if (tasks is None or self.episodes[i]["task"] in tasks)
            and (kinds is None or self.episodes[i]["kind"] in kinds)
        ]

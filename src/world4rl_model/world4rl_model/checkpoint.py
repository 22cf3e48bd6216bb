"""Checkpoints: a directory with model.safetensors + config.json, written atomically; never pickle.

A checkpoint directory::

    CKPT/
      model.safetensors        the model's tensors (a state_dict)
      config.json              {"format": "world4rl-checkpoint", "version": 1, "kind": ..., ...}: enough to
                               rebuild the model (architecture, action space, normalisation, image size,
                               dataset manifest hash), written by the model's own code
      training_state.safetensors + training_state.json   optional: optimizer, scheduler, step, RNG states

Writing goes to a temporary directory beside CKPT (same filesystem), fsynced, then renamed into
place; an existing CKPT is moved aside first and deleted only once the new one is in place. An
interrupted save leaves ``.CKPT.tmp-*/`` (the new one, possibly half written) or, after a crash
between the two renames, ``.CKPT.old-*/x/`` (the version being replaced). Readers never load these
in CKPT's place: they refuse and name them, so a person decides what to move back.

A training run keeps several checkpoints and a ``latest`` pointer::

    RUN/
      latest                   text file holding the name of the newest complete checkpoint
      step_000001000/ ...      save_run_checkpoint() writes these, then replaces `latest` atomically

`resolve_checkpoint` turns what a user names into exactly one complete checkpoint directory, or
raises a CheckpointError saying what was asked, what was found and why it was refused: a checkpoint
directory is itself; a run directory is what its `latest` pointer names (which must stay inside the
run: no absolute path, no '..', no symlink leading out), or without a pointer its highest step_*
directory (same rule); a pointer to a missing step, an incomplete checkpoint (no model.safetensors
or config.json) and leftovers of interrupted saves are refused, never replaced by another
checkpoint. `load_checkpoint`, `load_config`, `load_training_state` and `latest_checkpoint` all go
through it, and `checkpoint_fingerprint` names the result for logs (path, step, sha256 of the
weights) so the runtime node, deploy and eval can print the same identity.

Non-tensor training state (optimizer hyper-parameters, RNG tuples) goes to JSON through a small
codec that keeps tuples, integer dict keys and numpy arrays; every tensor goes to safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from world4rl_model.atomic_io import atomic_write_text, fsync_path

FORMAT = "world4rl-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# What write_directory_atomically leaves when interrupted: .NAME.tmp-XXXX/ and .NAME.old-XXXX/x/.
_LEFTOVER_DIR = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-[A-Za-z0-9_]+$")


class CheckpointError(ValueError):
    """A checkpoint is missing or malformed; the message names the path."""


# ---------------------------------------------------------------------------------------------
# Atomic writing


def write_directory_atomically(directory: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` to fill a fresh temp dir beside `directory`, then swap it into place."""
    directory = Path(directory).absolute()
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    try:
        write(tmp)
        for child in tmp.iterdir():
            if child.is_file():
                fsync_path(child)
        fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=parent))
        os.rename(directory, old / "x")  # keep the previous one until the new one is in place
        os.rename(tmp, directory)
        fsync_path(parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, directory)
        fsync_path(parent)
    return directory


# ---------------------------------------------------------------------------------------------
# JSON codec for non-tensor state (tensors are pulled out into the safetensors file)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": path}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint (no pickle)")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def _plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, cloning any that share storage (safetensors refuses aliasing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(value).__name__}, not a torch.Tensor")
        t = value.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------
# Training state


@dataclass
class TrainingState:
    """Everything beyond the weights that a resumed run needs: step, optimizer, scheduler, RNG, extra."""

    step: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def extra(self) -> dict[str, Any]:
        return _decode(self.meta.get("extra", {}), self.tensors)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global RNG is what we save)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_training_state(
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
    include_rng: bool = True,
) -> TrainingState:
    """Snapshot of a training loop (optimizer/scheduler state_dicts, global RNGs, `extra` JSON-able data)."""
    tensors: dict[str, torch.Tensor] = {}
    parts = {
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state() if include_rng else None,
        "extra": dict(extra or {}),
    }
    meta = {name: _encode(value, tensors, name) for name, value in parts.items()}
    meta["step"] = int(step)
    return TrainingState(step=int(step), tensors=tensors, meta=meta)


def restore_training_state(
    state: TrainingState,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> int:
    """Load optimizer/scheduler/RNG from `state`; returns the step to continue from."""
    if optimizer is not None and state.meta.get("optimizer") is not None:
        optimizer.load_state_dict(_decode(state.meta["optimizer"], state.tensors))
    if scheduler is not None and state.meta.get("scheduler") is not None:
        scheduler.load_state_dict(_decode(state.meta["scheduler"], state.tensors))
    if restore_rng and state.meta.get("rng") is not None:
        set_rng_state(_decode(state.meta["rng"], state.tensors))
    return state.step


# ---------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    directory: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    training_state: TrainingState | None = None,
) -> Path:
    """Write `tensors` (a state_dict) + `config` (JSON-able, must hold "kind") atomically to `directory`.

    config.json gets "format" and "version" (this checkpoint layout's version) added; the caller
    puts in whatever rebuilds the model: architecture, action space, normalisation, image size,
    dataset manifest hash. Returns the absolute checkpoint path.
    """
    if "kind" not in config or not isinstance(config["kind"], str):
        raise ValueError('config must contain a "kind" string, e.g. "world-model" or "reward"')
    for key, expected in (("format", FORMAT), ("version", VERSION)):
        if key in config and config[key] != expected:
            raise ValueError(f'config key "{key}" is reserved for the checkpoint layout ({expected!r})')
    full_config = {"format": FORMAT, "version": VERSION, **config}
    config_text = json.dumps(full_config, indent=2, sort_keys=False) + "\n"  # fails early if not JSON-able
    model_tensors = _plain_tensors(tensors)

    def write(tmp: Path) -> None:
        save_file(model_tensors, str(tmp / MODEL_FILE), metadata={"format": "pt", "kind": full_config["kind"]})
        (tmp / CONFIG_FILE).write_text(config_text)
        if training_state is not None:
            save_file(_plain_tensors(training_state.tensors), str(tmp / STATE_TENSORS_FILE), metadata={"format": "pt"})
            (tmp / STATE_JSON_FILE).write_text(json.dumps(training_state.meta, indent=1) + "\n")

    return write_directory_atomically(directory, write)


def _leftovers(parent: Path, name: str | None = None) -> list[Path]:
    """Leftovers of interrupted saves in `parent` (of checkpoint `name`, or of any): temp dirs
    `.NAME.tmp-*` and moved-aside old versions `.NAME.old-*/x`."""
    if not parent.is_dir():
        return []
    found = []
    for child in sorted(parent.iterdir()):
        m = _LEFTOVER_DIR.match(child.name)
        if not m or not child.is_dir() or (name is not None and m.group("name") != name):
            continue
        found.append(child / "x" if m.group("what") == "old" and (child / "x").is_dir() else child)
    return found


def _leftover_note(leftovers: list[Path]) -> str:
    if not leftovers:
        return ""
    names = ", ".join(str(p) for p in leftovers)
    return (
        f"; leftovers of an interrupted save are there ({names}) but are not loaded in its place "
        "(a .tmp- one may be half written, an .old- one is the version that was being replaced): "
        "move one into place yourself if it is the checkpoint you mean"
    )


def _incomplete(directory: Path) -> list[str]:
    return [f for f in (MODEL_FILE, CONFIG_FILE) if not (directory / f).is_file()]


def _require_complete(directory: Path, prefix: str) -> Path:
    missing = _incomplete(directory)
    if missing:
        raise CheckpointError(
            f"{prefix}{directory}: incomplete checkpoint (no {' and no '.join(missing)}); refusing to load it"
        )
    return directory


def _inside_run(run: Path, target: Path, prefix: str) -> Path:
    """`target` if it really lies inside `run` (symlinks followed), else a CheckpointError."""
    run_real = Path(os.path.realpath(run))
    real = Path(os.path.realpath(target))
    if real == run_real or not real.is_relative_to(run_real):
        through = " (through a symlink)" if Path(os.path.abspath(target)).is_relative_to(os.path.abspath(run)) else ""
        raise CheckpointError(
            f"{prefix}{target} resolves to {real}{through}, outside the run {run}; a run's pointer and its "
            "step_* directories must stay inside it: refusing to load it"
        )
    return target


def _step_dirs(run: Path) -> list[tuple[int, Path]]:
    """Every step_* entry of a run (complete or not, symlink or not), sorted by step."""
    if not run.is_dir():
        return []
    found = []
    for child in run.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child.is_dir() or child.is_symlink()):
            found.append((int(m.group(1)), child))
    return sorted(found)


def _follow_latest(run: Path) -> Path:
    pointer = run / LATEST
    if pointer.is_symlink():  # some tools make `latest` a symlink: it must not lead out of the run
        prefix = f"{run}: its '{LATEST}' pointer {pointer} -> {os.readlink(pointer)}: "
        _inside_run(run, pointer, prefix)
        if not pointer.exists():
            raise CheckpointError(f"{prefix}a dangling symlink; refusing to load another checkpoint in its place")
        if pointer.is_dir():  # the checkpoint directory it links to, named by its place in the run
            real = Path(os.path.realpath(pointer)).relative_to(os.path.realpath(run))
            return _require_complete(run / real, prefix)
    elif pointer.is_dir():  # `latest` is itself the checkpoint directory
        return _require_complete(pointer, f"{run}: ")
    text = pointer.read_text().strip()
    prefix = f"{run}: its '{LATEST}' pointer {pointer} names {text!r}: "
    if not text:
        raise CheckpointError(f"{prefix}empty; it must name a checkpoint directory inside the run")
    if os.path.isabs(text):
        raise CheckpointError(
            f"{prefix}an absolute path; it must name a checkpoint directory inside the run: refusing to load it"
        )
    target = run / text
    _inside_run(run, target, prefix)
    if not target.is_dir():
        complete = ", ".join(p.name for _, p in list_checkpoints(run)) or "none"
        raise CheckpointError(
            f"{prefix}{target} does not exist; refusing to load another checkpoint in its place (complete "
            f"checkpoints in the run: {complete})" + _leftover_note(_leftovers(target.parent, target.name))
        )
    return _require_complete(target, prefix)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The one complete checkpoint directory `path` names, or a CheckpointError (see the module doc).

    `path` is a checkpoint directory (returned as given), or a run directory: then the target of
    its `latest` pointer, or without a pointer its highest step_* directory, which must lie inside
    the run. Never a leftover of an interrupted save, never another step than the one named.
    """
    path = Path(path).expanduser()
    if (path / LATEST).exists() or (path / LATEST).is_symlink():
        return _follow_latest(path)
    if (path / CONFIG_FILE).exists() or (path / MODEL_FILE).exists():
        return _require_complete(path, "")
    if not path.exists():
        raise CheckpointError(
            f"{path}: not a checkpoint: does not exist" + _leftover_note(_leftovers(path.parent, path.name))
        )
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint: not a directory")
    steps = _step_dirs(path)
    if steps:  # a run without a pointer (a crash before the first one was written): its newest step
        step_dir = steps[-1][1]
        prefix = f"{path}: no '{LATEST}' pointer, newest step directory: "
        _inside_run(path, step_dir, prefix)
        return _require_complete(step_dir, prefix)
    leftovers = _leftovers(path)
    if leftovers:
        raise CheckpointError(
            f"{path}: no checkpoint here, only leftovers of interrupted saves "
            f"({', '.join(str(p) for p in leftovers)}); refusing to load them"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint (no {CONFIG_FILE}) nor a run directory with a '{LATEST}' pointer or step_* "
        "checkpoints"
    )


@dataclass(frozen=True)
class CheckpointFingerprint:
    """What a loaded checkpoint is, for logs: its real path, its step, the sha256 of its weights."""

    path: Path
    sha256: str
    step: int | None

    @property
    def short(self) -> str:
        return self.sha256[:12]

    def __str__(self) -> str:
        step = "unknown" if self.step is None else self.step
        return f"{self.path} (step {step}, {MODEL_FILE} sha256 {self.short})"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: str | os.PathLike) -> CheckpointFingerprint:
    """Resolve `path` (resolve_checkpoint) and name what it resolves to: the real path of the
    checkpoint directory, its step (config.json's "step", else the training state's, else the
    step_N directory name; None if none says) and the sha256 of model.safetensors (`.short`: the
    first 12 hex digits; what `sha256sum model.safetensors` prints). Note that safetensors does not
    order its metadata deterministically, so saving the same weights twice may give two hashes;
    the hash names a file, which is what a log must pin down."""
    directory = resolve_checkpoint(path)
    step: int | None = None
    try:
        config_step = json.loads((directory / CONFIG_FILE).read_text()).get("step")
    except (OSError, json.JSONDecodeError, AttributeError):
        config_step = None
    if isinstance(config_step, int) and not isinstance(config_step, bool):
        step = config_step
    elif (directory / STATE_JSON_FILE).is_file():
        try:
            step = int(json.loads((directory / STATE_JSON_FILE).read_text())["step"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            step = None
    if step is None and (m := _STEP_DIR.match(Path(os.path.realpath(directory)).name)):
        step = int(m.group(1))
    return CheckpointFingerprint(Path(os.path.realpath(directory)), file_sha256(directory / MODEL_FILE), step)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    directory = resolve_checkpoint(path)
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not a {FORMAT} config (format={config.get('format')!r})")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{config_path}: unsupported version {config.get('version')!r} (reads {VERSION})")
    return config


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, config) of a checkpoint dir or of a run dir's latest; checks "kind" if given."""
    directory = resolve_checkpoint(path)  # once: the config and the weights come from the same directory
    config = load_config(directory)
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(f"{directory / CONFIG_FILE}: kind is {config.get('kind')!r}, expected {kind!r}")
    model_path = directory / MODEL_FILE
    try:
        tensors = load_file(str(model_path), device=str(map_location))
    except FileNotFoundError:
        raise CheckpointError(f"{model_path}: missing") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{model_path}: unreadable ({e})") from None
    return tensors, config


def load_training_state(path: str | os.PathLike) -> TrainingState | None:
    """The training state saved with a checkpoint (None if it has none)."""
    directory = resolve_checkpoint(path)
    meta_path = directory / STATE_JSON_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(directory / STATE_TENSORS_FILE))
    return TrainingState(step=int(meta["step"]), tensors=tensors, meta=meta)


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, sorted by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / CONFIG_FILE).is_file() and (child / MODEL_FILE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a run resumes from: resolve_checkpoint(run_dir), or None while the run has no
    checkpoint yet (no `latest` pointer, no step_* directory; leftovers of interrupted saves do not
    count). A pointer or newest step that resolve_checkpoint refuses raises its CheckpointError:
    a resumed run never silently continues from another checkpoint than the one `latest` names."""
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST
    if not (pointer.exists() or pointer.is_symlink()) and not _step_dirs(run_dir):
        return None
    return resolve_checkpoint(run_dir)


def save_run_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    training_state: TrainingState | None = None,
    keep: int = 3,
) -> Path:
    """Save RUN/step_<step>/ atomically, then point RUN/latest at it, then prune to the newest `keep`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(run_dir / checkpoint_name(step), tensors, config, training_state)
    atomic_write_text(run_dir / LATEST, path.name + "\n")
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            if old.name != path.name:
                shutil.rmtree(old, ignore_errors=True)
    return path

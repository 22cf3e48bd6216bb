"""The deploy live view: what the policy sees and what the world model expects, side by side on a
local Foxglove WebSocket (foxglove-sdk), without ever delaying the control cycle. ROS-free.

Two halves:

- `LiveView` (this module) lives in the policy runner's process. The node hands it each decision
  (the frames the policy saw, the action it chose, the camera frame), each PolicyStatus, and while
  disarmed the camera frames, always after the cycle's command went out. Every call only stores
  references in a single slot per kind: no copy, no I/O, whatever the viewer or the world model
  does. `flush()`, when the callback ends, wakes the sender thread, so its little Python work falls
  between cycles instead of competing with one for the interpreter lock. The sender thread writes
  the newest of each kind to a child process over a pipe; whatever is offered while it is still
  writing replaces what waits (dropped and counted), so a slow, stopped or dead child costs the
  control loop nothing.
- `world4rl_policy.live_view_server` is that child process (nice 19, one torch thread): the Foxglove
  WebSocket server (127.0.0.1 by default) and the world model's one-step prediction, at most
  `prediction_rate_hz`, from the last T frames and actions, the chosen action last. A process and
  not a thread: the world model's Python and torch work would otherwise compete with the policy
  for the interpreter lock.

The world model's context is kept here, in the order of the decisions (frames at the learning
size, one control period apart, as in training): a decision that is dropped on its way to the
child leaves no gap in the next one's context. At the start of an episode (arming) the first frame
is repeated and the actions before it are zero, as the dataset pads an episode's first windows.

Channels (Foxglove schemas; world4rl_bringup's config/foxglove/live_view.json lays them out):
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from world4rl_spec import ACTION_NAMES

DEFAULT_HOST = "127.0.0.1"  # this host only; anything else is the operator's explicit choice
DEFAULT_PORT = 8765  # Foxglove's usual WebSocket port
DEFAULT_PREDICTION_RATE_HZ = 2.0
DEFAULT_CAMERA_RATE_HZ = 10.0
SUBPROTOCOL = "foxglove.sdk.v1"  # what foxglove-sdk's server speaks (recent Foxglove apps do too)

# topic -> what it carries. RawImage channels are rgb8.
CAMERA = "/live_view/camera"
POLICY_INPUT = "/live_view/policy_input"
PREDICTION = "/live_view/prediction"
COMPARISON = "/live_view/comparison"
STATUS = "/live_view/status"
ACTION = "/live_view/action"
PREDICTION_STATS = "/live_view/prediction_stats"
CHANNELS: dict[str, str] = {
    CAMERA: "foxglove.RawImage: the camera frame the runner received (at most camera_rate_hz)",
    POLICY_INPUT: "foxglove.RawImage: the frames the policy decided on, oldest left, at the learning size",
    PREDICTION: "foxglove.RawImage: the world model's prediction of the next frame, from the chosen action",
    COMPARISON: "foxglove.RawImage: [the policy's newest frame | the prediction | the frame that came next]",
    STATUS: "JSON: PolicyStatus's fields, as the runner published them, and the live view's drop counts",
    ACTION: "JSON: the action the policy chose, by world4rl_spec.ACTION_NAMES",
    PREDICTION_STATS: "JSON: PSNR of the prediction and of copy-last-frame against the frame that came, predict time",
}
__doc__ += "".join(f"\n  {topic:28s} {what}" for topic, what in CHANNELS.items()) + "\n"

# world4rl_msgs/PolicyStatus fields the status channel carries (test_live_view checks them against the message).
STATUS_FIELDS = ("armed", "fault", "last_refusal", "latency_ms", "step", "refused_commands", "policy", "ood_score")


def _object_schema(properties: Mapping[str, str | list[str]]) -> dict:
    return {"type": "object", "properties": {name: {"type": kind} for name, kind in properties.items()}}


NUMBER_OR_NULL = ["number", "null"]  # JSON has no NaN: a non-finite value is sent as null
JSON_SCHEMAS: dict[str, dict] = {
    STATUS: _object_schema(
        {
            "armed": "boolean",
            "fault": "string",
            "last_refusal": "string",
            "latency_ms": NUMBER_OR_NULL,
            "step": "integer",
            "refused_commands": "integer",
            "policy": "string",
            "ood_score": NUMBER_OR_NULL,
            "live_view_dropped": "object",
        }
    ),
    ACTION: _object_schema({"stamp": "number", **{name: "number" for name in ACTION_NAMES}}),
    PREDICTION_STATS: _object_schema(
        {
            "episode": "integer",
            "index": "integer",
            "psnr_db": NUMBER_OR_NULL,
            "copy_last_psnr_db": NUMBER_OR_NULL,
            "predict_ms": "number",
            "predictions_dropped": "integer",
            "prediction_errors": "integer",
        }
    ),
}

# Wire format to the child: u32 header length, a JSON header {"kind", fields..., "arrays": [[name,
# dtype, shape], ...]}, then the arrays' bytes in that order. Only these dtypes cross.
_LENGTH = struct.Struct("<I")
DTYPES = frozenset({"uint8", "float32", "float64"})
MAX_HEADER_BYTES = 1 << 20


class LiveViewError(RuntimeError):
    """The live view could not start (its server's reason, e.g. the port is taken)."""


def encode_message(kind: str, fields: Mapping, arrays: Mapping[str, np.ndarray]) -> list:
    """The buffers of one message (header first), without copying the arrays."""
    flat = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    for name, a in flat.items():
        if a.dtype.name not in DTYPES:
            raise ValueError(f"array {name}: dtype {a.dtype} is not one of {sorted(DTYPES)}")
    specs = [[name, a.dtype.name, list(a.shape)] for name, a in flat.items()]
    header = json.dumps({**fields, "kind": kind, "arrays": specs}).encode()
    return [_LENGTH.pack(len(header)), header, *(memoryview(a.reshape(-1).view(np.uint8)) for a in flat.values())]


def read_message(stream: BinaryIO) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The next message from `stream` as (header, arrays), or None at the end of the stream."""
    raw = stream.read(_LENGTH.size)
    if len(raw) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(raw)
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"live view message header of {size} bytes: not this protocol")
    header = json.loads(stream.read(size))
    arrays = {}
    for name, dtype, shape in header.pop("arrays"):
        if dtype not in DTYPES:
            raise ValueError(f"array {name}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        count = math.prod(shape) * np.dtype(dtype).itemsize
        data = stream.read(count)
        if len(data) < count:
            return None
        arrays[name] = np.frombuffer(data, dtype).reshape(shape)
    return header, arrays


def finite_or_none(value):
    """JSON has no NaN: a non-finite float becomes null (e.g. ood_score in cycles without a decision)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def refined_in(policy_config: Mapping) -> str:
    """The world model a refined policy was refined in (its config.json says), else ''."""
    return str((policy_config.get("refined_from") or {}).get("world_model") or "")


def default_world_model(policy_config: Mapping, requested: str | os.PathLike = "") -> str:
    """The world model to predict with when none is named: the one the deployed policy was refined
    in; for a refine run whose gate chose its BC policy, the one the run's refined policy was
    refined in (`requested`, the run); else '' (no prediction)."""
    found = refined_in(policy_config)
    if not found and requested:
        from world4rl_model.checkpoint import load_config

        with contextlib.suppress(Exception):  # not a checkpoint or a run: nothing to find there
            found = refined_in(load_config(requested))
    return found


def world_model_context(path: str | os.PathLike, image_size: int, action_dim: int) -> int:
    """The frames of context the world-model checkpoint at `path` predicts from (its T), after
    checking that it predicts frames of the policy's size from actions of the stack's size."""
    from world4rl_model.checkpoint import load_config

    config = load_config(path)
    if config.get("kind") != "world-model":
        raise ValueError(f"{path} is a {config.get('kind')!r} checkpoint, not a world model")
    model = config["model"]
    if int(model["image_size"]) != int(image_size):
        raise ValueError(f"{path} predicts {model['image_size']}px frames, the policy sees {image_size}px ones")
    if int(model["action_dim"]) != int(action_dim):
        raise ValueError(f"{path} takes {model['action_dim']}-D actions, the policy gives {action_dim}-D ones")
    return int(model["context_frames"])


@dataclass
class LiveViewSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (LiveView.port says which)
    world_model: str = ""  # checkpoint for the one-step prediction; '' : no prediction
    context_frames: int = 0  # the world model's T (world_model_context)
    prediction_rate_hz: float = DEFAULT_PREDICTION_RATE_HZ
    camera_rate_hz: float = DEFAULT_CAMERA_RATE_HZ
    startup_timeout_s: float = 60.0
    name: str = "world4rl live view"


def context_arrays(frames: tuple, actions: tuple, length: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, S, S, 3] frames and [T, A] actions ending at the newest decision, padded at the episode's
    start like the dataset's windows: the first frame repeated, zero actions before it."""
    pad = length - len(frames)
    stacked = np.stack([frames[0]] * pad + list(frames))
    acts = np.stack(list(actions)).astype(np.float32)
    return stacked, np.concatenate([np.zeros((pad, acts.shape[1]), np.float32), acts])


class LiveView:
    """The runner's side of the live view (see the module doc). Thread-safe; every offer is O(1)."""

    def __init__(self, settings: LiveViewSettings):
        self.settings = settings
        self.port: int | None = None
        self.error: str | None = None  # why the live view stopped (the child died), None while it works
        self.offered: Counter = Counter()
        self.sent: Counter = Counter()
        self.dropped: Counter = Counter()  # replaced before the sender got to them
        self._wake = threading.Condition()
        self._pending: dict[str, tuple[dict, dict, tuple | None]] = {}
        self._flushed = False  # flush() was called since the sender last took the pending offers
        self._closed = False
        self._next_camera = 0.0
        self._episode = 0
        self._decision = 0
        length = max(settings.context_frames, 1)
        self._frames: deque = deque(maxlen=length)
        self._actions: deque = deque(maxlen=length)
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "world4rl_policy.live_view_server",
            f"--host={s.host}",
            f"--port={s.port}",
            f"--world-model={s.world_model}",
            f"--prediction-rate-hz={s.prediction_rate_hz}",
            f"--name={s.name}",
        ]

    def start(self) -> int:
        """Start the server process; the port it listens on, or LiveViewError with its reason."""
        # stderr: inherited (the node's log). stdout: one line, READY PORT or ERROR REASON.
        self._process = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        try:
            line = self._first_line(self._process, self.settings.startup_timeout_s)
            if not line.startswith("READY "):
                raise LiveViewError(line.removeprefix("ERROR ").strip() or "the live view server exited")
            self.port = int(line.split()[1])
        except BaseException:
            self._stop_process()
            raise
        self._thread = threading.Thread(target=self._send_loop, name="live_view_sender", daemon=True)
        self._thread.start()
        return self.port

    @staticmethod
    def _first_line(process: subprocess.Popen, timeout: float) -> str:
        deadline, data, fd = time.monotonic() + timeout, b"", process.stdout.fileno()
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LiveViewError(f"the live view server did not start within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:  # it exited before saying anything
                    return data.decode(errors="replace")
                data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender and the server process (which ends at the end of its input)."""
        with self._wake:
            self._closed = True
            self._pending.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._stop_process(timeout)

    def _stop_process(self, timeout: float = 5.0) -> None:
        process = self._process
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # ------------------------------------------------------------------ offers (control thread)
    def camera(self, rgb: np.ndarray, stamp: float) -> None:
        """A camera frame [H, W, 3] uint8 (not copied: the caller must not change it), at most camera_rate_hz."""
        now, period = time.monotonic(), 1.0 / self.settings.camera_rate_hz
        if now < self._next_camera:
            return
        # On a grid of periods, so frames that come at about that rate (with jitter) all pass.
        self._next_camera = max(self._next_camera, now - period) + period
        self._offer("camera", {"stamp": stamp}, {"image": rgb})

    def decision(
        self, policy_frames: np.ndarray, action: np.ndarray, stamp: float, camera: np.ndarray | None = None
    ) -> None:
        """What the policy decided on ([T, S, S, 3] uint8, oldest first), the action it chose and
        the camera frame its newest input came from (at most camera_rate_hz)."""
        if camera is not None:
            self.camera(camera, stamp)
        action = np.asarray(action, dtype=np.float32)
        if not np.all(np.isfinite(action)):
            return  # no decision (the filter holds): nothing to predict from
        with self._wake:
            self._decision += 1
            self._frames.append(policy_frames[-1])
            self._actions.append(action)
            context = (tuple(self._frames), tuple(self._actions))
            fields = {"stamp": stamp, "episode": self._episode, "index": self._decision}
        self._offer("decision", fields, {"policy_input": policy_frames, "action": action}, context)

    def status(self, fields: Mapping) -> None:
        """One PolicyStatus, as a mapping of STATUS_FIELDS."""
        self._offer("status", {k: finite_or_none(fields[k]) for k in STATUS_FIELDS}, {})

    def new_episode(self) -> None:
        """Arming: the next decision starts a new context (and new comparisons)."""
        with self._wake:
            self._episode += 1
            self._decision = 0
            self._frames.clear()
            self._actions.clear()

    def _offer(self, kind: str, fields: dict, arrays: dict, context: tuple | None = None) -> None:
        with self._wake:
            if self._closed or self.error is not None or self._thread is None:
                return
            self.offered[kind] += 1
            if kind in self._pending:
                self.dropped[kind] += 1
            if kind == "status":
                fields["live_view_dropped"] = dict(self.dropped)
            self._pending[kind] = (fields, arrays, context)

    def flush(self) -> None:
        """Let the sender thread send what was offered: call it when the cycle's command is out and
        the thread goes back to waiting, so the sender's bit of Python never competes with a cycle."""
        with self._wake:
            if self._pending:
                self._flushed = True
                self._wake.notify()

    # ------------------------------------------------------------------ the sender thread
    def _send_loop(self) -> None:
        stdin = self._process.stdin
        while True:
            with self._wake:
                while not (self._flushed and self._pending) and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                batch, self._pending, self._flushed = self._pending, {}, False
            try:
                for kind in ("status", "decision", "camera"):  # small first; a decision before its successor's camera
                    if kind in batch:
                        self._write(stdin, kind, *batch[kind])
                        self.sent[kind] += 1
            except (OSError, ValueError) as exc:  # the child died (or was closed): stop offering
                with self._wake:
                    self.error = self.error or f"the live view server stopped ({type(exc).__name__}: {exc})"
                return

    def _write(self, stdin, kind: str, fields: dict, arrays: dict, context: tuple | None) -> None:
        if context is not None and self.settings.context_frames:
            frames, actions = context_arrays(*context, self.settings.context_frames)
            arrays = {**arrays, "context_frames": frames, "context_actions": actions}
        for buffer in encode_message(kind, fields, arrays):
            view = memoryview(buffer).cast("B")
            while view:
                written = stdin.write(view)
                view = view[written:]

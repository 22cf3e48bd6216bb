"""The live view's server process, started by world4rl_policy.live_view.LiveView (see its doc).

It reads the runner's messages from stdin (live_view's wire format) and logs them to Foxglove
channels on a WebSocket server of foxglove-sdk (subprotocol foxglove.sdk.v1): the camera frame, the
policy's input frames, the chosen action, PolicyStatus, and, with a world model, its one-step
prediction of the next frame and, once that frame has come, the comparison and its PSNR next to
copy-last-frame's. It says `READY PORT` (or `ERROR REASON`) on stdout once, and ends at the end of
its input (the runner closed it or died).

Never in the control loop's way: the process runs at nice 19 (the lowest priority) with one torch
thread; predictions run in their own thread at most `--prediction-rate-hz`, the newest request
replacing one not started yet; nothing is drawn or predicted for channels no client subscribes to;
each client's backlog is bounded (the SDK drops its oldest messages when a viewer is slow).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from world4rl_policy import live_view as lv
from world4rl_spec import ACTION_NAMES

CLIENT_BACKLOG = 32  # messages queued per viewer before the oldest are dropped (a 640x480 frame is 0.9 MB)
KEEP = 8  # decisions remembered for pairing predictions with the frames that came


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m world4rl_policy.live_view_server", description=__doc__)
    parser.add_argument("--host", default=lv.DEFAULT_HOST, help="address to bind (default: this host only)")
    parser.add_argument("--port", type=int, default=lv.DEFAULT_PORT, help="port (0: any free one)")
    parser.add_argument("--world-model", default="", help="world-model checkpoint; empty: no prediction")
    parser.add_argument("--prediction-rate-hz", type=float, default=lv.DEFAULT_PREDICTION_RATE_HZ)
    parser.add_argument("--name", default="world4rl live view", help="server name shown by Foxglove")
    return parser.parse_args(argv)


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR [dB] of two uint8 frames; None (JSON null) when they are identical."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return None if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


class Predictor:
    """The world model's one-step prediction in its own thread, at most `rate_hz`; a request that
    arrives while one waits replaces it (dropped, counted)."""

    def __init__(self, path: str, rate_hz: float, on_prediction: Callable[[tuple, np.ndarray, float], None]):
        import torch

        from world4rl_model.world_model import WorldModel

        torch.set_num_threads(1)
        self.torch = torch
        self.model, _ = WorldModel.from_checkpoint(path)
        self.generator = torch.Generator().manual_seed(0)
        self.min_interval_s = 1.0 / rate_hz
        self.on_prediction = on_prediction
        self.dropped = 0
        self.errors = 0
        self._cond = threading.Condition()
        self._slot: tuple | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="live_view_predictor", daemon=True)
        self._thread.start()

    def submit(self, key: tuple, frames: np.ndarray, actions: np.ndarray) -> None:
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot = (key, frames, actions)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5.0)

    def predict(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """o_{t+1} [S, S, 3] uint8 from frames [T, S, S, 3] uint8 and actions [T, A] (a_t last)."""
        from world4rl_model.world_model import frames_to_uint8

        torch = self.torch
        x = torch.from_numpy(np.array(frames, dtype=np.uint8)).permute(0, 3, 1, 2)[None]  # a writable copy
        a = torch.from_numpy(np.array(actions, dtype=np.float32))[None]
        with torch.inference_mode():
            out = self.model.sample(x, a, generator=self.generator)
        return frames_to_uint8(out)[0].permute(1, 2, 0).contiguous().numpy()

    def _loop(self) -> None:
        next_start = 0.0
        while True:
            with self._cond:
                while self._slot is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                delay = next_start - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)  # a newer request may take the slot meanwhile
                    continue
                (key, frames, actions), self._slot = self._slot, None
            next_start = time.monotonic() + self.min_interval_s
            started = time.perf_counter()
            try:
                frame = self.predict(frames, actions)
            except Exception as exc:  # a bad checkpoint must not end the view
                self.errors += 1
                print(f"live view: prediction failed ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
                continue
            self.on_prediction(key, frame, (time.perf_counter() - started) * 1e3)


class ViewLogger:
    """Logs the runner's messages to the channels; pairs each prediction with the frame that came."""

    def __init__(self, context, world_model: str = "", prediction_rate_hz: float = lv.DEFAULT_PREDICTION_RATE_HZ):
        import foxglove
        from foxglove.channels import RawImageChannel

        images = (lv.CAMERA, lv.POLICY_INPUT, lv.PREDICTION, lv.COMPARISON)
        self.channels = {topic: RawImageChannel(topic, context=context) for topic in images}
        for topic, schema in lv.JSON_SCHEMAS.items():
            self.channels[topic] = foxglove.Channel(topic, schema=schema, context=context)
        self._lock = threading.Lock()
        self._actual: dict[tuple, np.ndarray] = {}  # (episode, index) -> the policy's newest frame
        self._predicted: dict[tuple, tuple[np.ndarray, float]] = {}  # (episode, index) -> (o_index+1, ms)
        self.predictor = Predictor(world_model, prediction_rate_hz, self.on_prediction) if world_model else None

    def close(self) -> None:
        if self.predictor is not None:
            self.predictor.stop()

    def handle(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        kind = header.pop("kind")
        if kind == "camera":
            self._image(lv.CAMERA, arrays["image"], header["stamp"])
        elif kind == "status":
            self._json(lv.STATUS, header)
        elif kind == "decision":
            self._decision(header, arrays)
        else:
            raise ValueError(f"unknown live view message kind {kind!r}")

    def _image(self, topic: str, rgb: np.ndarray, stamp: float) -> None:
        from foxglove.messages import RawImage, Timestamp

        channel = self.channels[topic]
        if not channel.has_sinks():
            return
        height, width = rgb.shape[:2]
        timestamp = Timestamp.from_epoch_secs(stamp)
        data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
        channel.log(RawImage(timestamp=timestamp, frame_id="camera", width=width, height=height, encoding="rgb8",
                             step=width * 3, data=data))  # fmt: skip

    def _json(self, topic: str, fields: dict) -> None:
        channel = self.channels[topic]
        if channel.has_sinks():
            channel.log({k: lv.finite_or_none(v) for k, v in fields.items()})

    def _decision(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        frames, stamp = arrays["policy_input"], header["stamp"]
        self._image(lv.POLICY_INPUT, np.concatenate(list(frames), axis=1), stamp)
        self._json(lv.ACTION, {"stamp": stamp, **dict(zip(ACTION_NAMES, map(float, arrays["action"]), strict=True))})
        key = (header["episode"], header["index"])
        with self._lock:
            self._actual[key] = frames[-1]
            _trim(self._actual)
        self._compare((key[0], key[1] - 1))
        wanted = any(self.channels[t].has_sinks() for t in (lv.PREDICTION, lv.COMPARISON, lv.PREDICTION_STATS))
        if self.predictor is not None and wanted and "context_frames" in arrays:
            self.predictor.submit((*key, stamp), arrays["context_frames"], arrays["context_actions"])

    def on_prediction(self, key: tuple, frame: np.ndarray, ms: float) -> None:
        episode, index, stamp = key
        self._image(lv.PREDICTION, frame, stamp)
        with self._lock:
            self._predicted[(episode, index)] = (frame, ms)
            _trim(self._predicted)
        self._compare((episode, index))

    def _compare(self, key: tuple) -> None:
        """Once both are here: the prediction made at decision `key` next to the frame that came."""
        with self._lock:
            before, after = self._actual.get(key), self._actual.get((key[0], key[1] + 1))
            if before is None or after is None or key not in self._predicted:
                return
            predicted, ms = self._predicted.pop(key)
        self._image(lv.COMPARISON, np.concatenate([before, predicted, after], axis=1), time.time())
        stats = {"episode": key[0], "index": key[1], "psnr_db": psnr(predicted, after)}
        stats.update(copy_last_psnr_db=psnr(before, after), predict_ms=ms)
        stats.update(predictions_dropped=self.predictor.dropped, prediction_errors=self.predictor.errors)
        self._json(lv.PREDICTION_STATS, stats)


def _trim(entries: dict) -> None:
    while len(entries) > KEEP:
        entries.pop(next(iter(entries)))


def serve(args: argparse.Namespace, stdin, stdout) -> int:
    import foxglove

    context = foxglove.Context()
    try:
        view = ViewLogger(context, args.world_model, args.prediction_rate_hz)
        server = foxglove.start_server(
            name=args.name, host=args.host, port=args.port, context=context, message_backlog_size=CLIENT_BACKLOG
        )
    except Exception as exc:  # the port is taken, the checkpoint is bad: say why, once
        stdout.write(f"ERROR live view on {args.host}:{args.port}: {type(exc).__name__}: {exc}\n".encode())
        stdout.flush()
        return 1
    stdout.write(f"READY {server.port}\n".encode())
    stdout.flush()
    try:
        while (message := lv.read_message(stdin)) is not None:
            view.handle(*message)
    finally:
        view.close()
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(19)  # the lowest priority: the control loop's process always comes first
    try:
        return serve(args, sys.stdin.buffer, sys.stdout.buffer)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""The policy's call at batch 1 (the runtime node's) on ONNX Runtime: an optional inference backend
of PolicyRunner, exported on the fly from the loaded checkpoint, with eager torch as the fallback.

Measured with bench/bench_inference_backends.py on the 2 shared cores (real BC checkpoint, same inputs
and threads, interleaved rounds): the policy at batch 1 took 1.05 ms in eager torch fp32 and 0.48 ms in
ONNX Runtime fp32 with 1 thread (2.2x; 1.5-6.1x in the best rounds of three runs with 2 threads), its
actions within 1e-6 of torch's. On the imagined env step (batch 64) no backend beat torch's bf16
autocast repeatably, so imagination stays in torch (world4rl_model's README, "CPU inference backends").

The graph is the policy's trunk features and its mean and log-std heads (what act() uses: the OOD score
reads the features). It is written once per checkpoint into a cache keyed by the sha256 of the weights
and config (WORLD4RL_ONNX_CACHE, else $XDG_CACHE_HOME/world4rl/onnx, else the temp dir), so there is no
artefact to manage; at load the session's answer to a test input is compared with torch's, and any
failure (package missing, export or check failed) falls back to torch with the reason kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

BACKENDS = ("auto", "torch", "onnxruntime")
CACHE_ENV = "WORLD4RL_ONNX_CACHE"
EXPORT_VERSION = 1  # part of the cache key: bump when the exported graph changes
KEEP = 16  # exports kept in the cache (the most recently used)
TOLERANCE = 1e-4  # largest |onnxruntime - torch| accepted on the load-time check (measured ~1e-6)


class _ActGraph(nn.Module):
    """(trunk features h, mean, log_std) of frames [B, T, H, W, 3] uint8 (and proprioception)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, frames: torch.Tensor, proprio: torch.Tensor | None = None):
        h = self.policy.features(frames, proprio)
        mean, log_std, _ = self.policy.heads(h)
        return h, mean, log_std


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked (sys.modules[name] is None)
        return False


def onnxruntime_installed() -> bool:
    """onnxruntime and onnx (torch.onnx.export's serialiser) can be imported."""
    return _importable("onnxruntime") and _importable("onnx")


def resolve_backend(backend: str) -> str:
    """'auto': onnxruntime where it is installed, else torch. An unknown name raises."""
    if backend not in BACKENDS:
        raise ValueError(f"inference backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "onnxruntime" if onnxruntime_installed() else "torch"
    return backend


def cache_dir() -> Path:
    """WORLD4RL_ONNX_CACHE, else $XDG_CACHE_HOME (~/.cache)/world4rl/onnx; the temp dir if not writable."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "world4rl" / "onnx"
    for path in (Path(os.environ.get(CACHE_ENV) or home), Path(tempfile.gettempdir()) / "world4rl-onnx"):
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise OSError(f"no writable directory for exported policies (set {CACHE_ENV})")


def prune(directory: Path, keep: int = KEEP) -> None:
    """Keep the `keep` most recently used exports (every load touches its file)."""
    files = sorted(directory.glob("policy-*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        f.unlink(missing_ok=True)


def checkpoint_key(checkpoint_dir: Path) -> str:
    """sha256 of the checkpoint's weights and config.json, the exporter version and torch's."""
    from world4rl_model.checkpoint import CONFIG_FILE, MODEL_FILE, file_sha256

    digest = hashlib.sha256(f"policy-act:{EXPORT_VERSION}:{torch.__version__}:".encode())
    digest.update(file_sha256(checkpoint_dir / MODEL_FILE).encode())
    digest.update((checkpoint_dir / CONFIG_FILE).read_bytes())
    return digest.hexdigest()


def _example(policy: nn.Module) -> tuple[torch.Tensor, ...]:
    cfg = policy.config
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, cfg.frame_history, cfg.image_size, cfg.image_size, 3), generator=g)
    example: tuple[torch.Tensor, ...] = (frames.to(torch.uint8),)
    if cfg.proprio_dim:
        example += (torch.randn(1, cfg.proprio_dim, generator=g),)
    return example


def export(policy: nn.Module, path: Path) -> Path:
    """Write the act() graph of `policy` to `path` (atomically: a reader never sees half a file)."""
    names = ["frames", "proprio"][: 1 + int(bool(policy.config.proprio_dim))]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on the Python-side shape checks
        torch.onnx.export(
            _ActGraph(policy).eval(),
            _example(policy),
            str(tmp),
            input_names=names,
            output_names=["features", "mean", "log_std"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "features", "mean", "log_std"]},
            opset_version=18,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


class OnnxPolicy:
    """ONNX Runtime session of a policy's act() graph: __call__(frames, proprio) -> (h, mean, log_std)."""

    def __init__(self, path: Path, threads: int, proprio: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, int(threads)), 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning intra-op threads were no faster with 1 thread and 2-4x slower with 2 on shared cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path, self.proprio = path, proprio

    def __call__(self, frames: torch.Tensor, proprio: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        feeds = {"frames": np.ascontiguousarray(frames.numpy())}
        if self.proprio:
            feeds["proprio"] = np.ascontiguousarray(proprio.float().numpy())
        return tuple(torch.from_numpy(o) for o in self.session.run(None, feeds))


def load_onnx_policy(policy: nn.Module, checkpoint_dir: Path, threads: int) -> OnnxPolicy:
    """The checkpoint's act() graph on ONNX Runtime (exported on first use), checked against torch."""
    directory = cache_dir()
    path = directory / f"policy-{checkpoint_key(checkpoint_dir)}.onnx"
    if path.is_file():
        path.touch()
    else:
        export(policy, path)
        prune(directory)
    runner = OnnxPolicy(path, threads, bool(policy.config.proprio_dim))
    example = _example(policy)
    with torch.inference_mode():
        want = _ActGraph(policy)(*example)
    got = runner(*example)
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    if not diff <= TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.3g} (> {TOLERANCE})")
    return runner


def use_backend(runner, backend: str) -> str:
    """Make `runner` (a PolicyRunner loaded by load_policy) act on `backend`; torch where onnxruntime is
    asked for but missing, or the export or its check fails (runner.backend_note says why)."""
    wanted = resolve_backend(backend)
    runner._onnx, runner.backend, runner.backend_note = None, "torch", ""
    if wanted == "torch":
        return runner.backend
    if not onnxruntime_installed():
        runner.backend_note = "onnxruntime (or onnx, its exporter) is not installed: eager torch"
    elif runner.checkpoint_dir is None:
        runner.backend_note = "no checkpoint to export from: eager torch"
    else:
        try:
            runner._onnx = load_onnx_policy(runner.module, Path(runner.checkpoint_dir), torch.get_num_threads())
            runner.backend = "onnxruntime"
        except Exception as e:  # any failure of export, session or check: torch still runs the policy
            runner.backend_note = f"onnxruntime failed ({type(e).__name__}: {e}): eager torch"
    if runner.backend_note:
        warnings.warn(f"policy inference backend {backend!r}: {runner.backend_note}", stacklevel=2)
    return runner.backend

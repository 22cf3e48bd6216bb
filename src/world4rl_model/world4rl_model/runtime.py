"""Process-level plumbing shared by the training and evaluation CLIs: tcmalloc, threads, DDP, seeds."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)
_REEXEC_FLAG = "WORLD4RL_TCMALLOC_REEXEC"
# The commands that may re-exec themselves. By sys.argv[0]'s name: the console scripts (`world4rl`,
# and `train`, `train_bc`, `refine`, `predict` as installed for `ros2 run`), CLI files run as scripts
# and the benchmarks that train.
CLI_ENTRY_POINTS = frozenset(
    {
        "world4rl",
        "train",
        "train_bc",
        "refine",
        "predict",
        "train_cli.py",
        "eval_cli.py",
        "bench_world_model.py",
        "bench_learning.py",
    }
)
# By the module `python -m` runs (torchrun workers included): sys.argv[0] is then the module's file,
# e.g. .../world4rl_bringup/cli.py for `python -m world4rl_bringup.cli`, the form `world4rl demo`
# starts its stages in.
CLI_MODULES = frozenset(
    {
        "world4rl_bringup.cli",
        "world4rl_bringup.coverage_cli",
        "world4rl_model.train_cli",
        "world4rl_model.eval_cli",
        "world4rl_policy.train_bc_cli",
        "world4rl_policy.refine_cli",
        "world4rl_policy.predict_cli",
    }
)
RUNTIME_FILE = "runtime.json"
# "shared" (default) or "dedicated": whether the cores are shared with other jobs (default_wait_policy).
CORES_ENV = "WORLD4RL_CORES"


def find_tcmalloc() -> str | None:
    for path in TCMALLOC_PATHS:
        if Path(path).exists():
            return path
    return None


def is_cli_process() -> bool:
    """Whether this process is one of our commands (CLI_ENTRY_POINTS, CLI_MODULES)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name in CLI_MODULES) or Path(sys.argv[0]).name in CLI_ENTRY_POINTS


def tcmalloc_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) for a child process that runs torch on the CPU:
    tcmalloc preloaded when found (not with WORLD4RL_NO_TCMALLOC) and OMP_WAIT_POLICY=PASSIVE unless
    set or WORLD4RL_CORES=dedicated (see default_wait_policy). A command started with it needs no re-exec."""
    env = dict(os.environ if env is None else env)
    if (wait := default_wait_policy(env)) is not None:
        env.setdefault("OMP_WAIT_POLICY", wait)
    lib, preload = find_tcmalloc(), env.get("LD_PRELOAD", "")
    if lib is not None and not env.get("WORLD4RL_NO_TCMALLOC") and "tcmalloc" not in preload:
        env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    return env


def maybe_reexec_with_tcmalloc(device: str) -> None:
    """On CPU, re-exec this very command with LD_PRELOAD=tcmalloc (~2x faster torch training here).

    Skipped when not on CPU, when tcmalloc is missing or already preloaded, when WORLD4RL_NO_TCMALLOC
    is set, or when this process is already the re-exec'd one. The command line is rebuilt from
    sys.orig_argv, so `python -m ...`, console scripts and torchrun workers (same pid, same env) all work.
    """
    if not device.startswith("cpu") or os.environ.get("WORLD4RL_NO_TCMALLOC") or os.environ.get(_REEXEC_FLAG):
        return
    # Only when this process IS one of our commands: a library call of run() (a test, another
    # tool) must never have its process replaced.
    if not is_cli_process():
        return
    if find_tcmalloc() is None or tcmalloc_active():
        return
    env = tcmalloc_env()
    env[_REEXEC_FLAG] = "1"
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def default_wait_policy(env: dict[str, str] | None = None) -> str | None:
    """The OMP_WAIT_POLICY our torch processes get unless it is set: PASSIVE on shared cores (the
    default), libgomp's own (None: spin ~300,000 iterations, then sleep) where WORLD4RL_CORES=dedicated.

    Measured with bench/bench_cpu_settings.py (imagination at batch 64, 2 threads on 2 cores, two runs):
    on dedicated cores libgomp's default was 1.14-1.25x PASSIVE (ACTIVE and GOMP_SPINCOUNT 100,000 the
    same within noise); beside one busy loop per core it was 0.14-0.48x (spinning threads burn the time
    slice a descheduled sibling needs) and the bounded spins (GOMP_SPINCOUNT 1,000-100,000) 0.23-0.77x.
    All cores beat 1 thread in both (1 thread: 0.62-0.67x dedicated, 0.35-0.45x shared). Since
    WorldModelEnv splits its batch over worker threads, imagination no longer pays for PASSIVE on
    dedicated cores (one quick run: PASSIVE 540.6/s, spinning 505.4/s). A process
    cannot know that its cores stay free for the whole run, and guessing "dedicated" wrongly costs
    more than guessing "shared", so shared is the default and dedicated is declared.
    """
    cores = (os.environ if env is None else env).get(CORES_ENV, "shared")
    if cores not in ("shared", "dedicated"):
        raise ValueError(f"{CORES_ENV} must be 'shared' or 'dedicated', got {cores!r}")
    return "PASSIVE" if cores == "shared" else None


def configure_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless set (or WORLD4RL_CORES=dedicated): idle OpenMP threads sleep
    instead of spinning (default_wait_policy has the measurements).

    On cores shared with other jobs, spinning threads burn their time slice waiting for a
    descheduled sibling; measured here with 2 threads under load, every elementwise op then cost
    ~10 ms instead of ~0.3-1 ms (10-30x). Must run before torch is first imported (libgomp reads the
    variable once); the tcmalloc re-exec carries it over.
    """
    wait = default_wait_policy()
    if "torch" not in sys.modules and wait is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", wait)


def tcmalloc_active() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def fast_bf16() -> bool:
    """Whether bf16 autocast is worth turning on for the world model here, without importing torch:
    a CUDA GPU, or a CPU with native bf16 (AVX512-BF16 or AMX on x86, BF16 on Arm). Without it torch
    emulates bf16 on the CPU, several times slower than fp32."""
    if Path("/dev/nvidia0").exists():
        return True
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def runtime_facts(device: str, threads: int, bf16: bool) -> dict[str, object]:
    """What speeds a process up or down: the figures a run records (record_runtime) and logs."""
    return {
        "device": device,
        "threads": threads,
        "bf16": bool(bf16),
        "tcmalloc": tcmalloc_active(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "pid": os.getpid(),
    }


def describe_runtime(facts: dict[str, object]) -> str:
    return (
        f"tcmalloc {facts.get('tcmalloc')}, bf16 {facts.get('bf16')}, {facts.get('threads')} threads, "
        f"OMP_WAIT_POLICY {facts.get('omp_wait_policy')}, device {facts.get('device')}"
    )


def record_runtime(run_dir: str | Path, name: str, facts: dict[str, object]) -> Path:
    """Add `name`'s facts to RUN/runtime.json (one entry per process kind that worked on the run)."""
    import json

    from world4rl_model.atomic_io import atomic_write_text

    path = Path(run_dir) / RUNTIME_FILE
    data = {**read_runtime(run_dir), name: facts}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def read_runtime(run_dir: str | Path) -> dict[str, dict[str, object]]:
    """RUN/runtime.json ({} if absent or unreadable)."""
    import json

    path = Path(run_dir) / RUNTIME_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str, dist_info: DistInfo | None = None) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dist_info is not None and dist_info.enabled:
        device = f"cuda:{dist_info.local_rank}"
    return device


def configure_threads(threads: int | None, dist_info: DistInfo) -> int:
    """Torch intra-op threads: given, else the cores this process may use split across local ranks."""
    import torch

    if threads is None or threads <= 0:
        cores = len(os.sched_getaffinity(0))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist_info.world_size))
        threads = max(1, cores // max(1, local))
    torch.set_num_threads(threads)
    return threads


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (e.g. base seed, rank, step): stable across runs and resumes."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (seed the legacy global RNG that libraries use)
    torch.manual_seed(seed)

"""Every torch command, started as `python -m world4rl_bringup.cli ...` from a bare shell (the form the
demo's stages take), re-executes itself with tcmalloc preloaded, runs its OpenMP threads passive, uses
bf16 as asked, and records and prints what it ran with (RUN/runtime.json)."""

import json
import os
import subprocess
import sys

import pytest

from world4rl_model.runtime import find_tcmalloc
from world4rl_model.synthetic import make_dataset

pytestmark = pytest.mark.slow


def _world4rl(*args, cwd):
    env = {
        k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OMP_WAIT_POLICY", "WORLD4RL_TCMALLOC_REEXEC")
    }
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_trainers_started_as_python_m_run_with_tcmalloc_and_bf16_as_asked(tmp_path):
    make_dataset(tmp_path / "ds", episodes_per_task=6, length=12, image_size=64)
    quiet = "--no-progress"
    outputs = {
        "bc": _world4rl("train", "bc", "--dataset", "ds", "--out", "bc", "--steps", 3, quiet, cwd=tmp_path),
        "world-model": _world4rl("train", "world-model", "ds", "--out", "wm", "--size", "tiny", "--steps", 3,
                                 "--batch-size", 4, "--val-every", 3, "--bf16", quiet, cwd=tmp_path),
        "reward": _world4rl("train", "reward", "ds", "--out", "reward", "--steps", 3, "--channels", 8, 8,
                            "--batch-size", 8, "--val-every", 3, "--dreams-from", "wm", "--dream-horizon", 2, quiet,
                            cwd=tmp_path),
        "refine": _world4rl("refine", "--policy", "bc", "--world-model", "wm", "--reward", "reward", "--dataset", "ds",
                            "--out", "refined", "--task", "reach-left", "--num-envs", 2, "--num-steps", 4,
                            "--horizon", 4, "--total-steps", 8, "--video-episodes", 0, "--bf16", quiet, cwd=tmp_path),
        "predict": _world4rl("predict", "refined", quiet, cwd=tmp_path),
    }  # fmt: skip
    runs = {"bc": "bc", "world-model": "wm", "reward": "reward", "refine": "refined", "predict": "refined"}
    bf16 = {"bc": False, "world-model": True, "reward": False, "refine": True, "predict": True}
    tcmalloc = find_tcmalloc() is not None
    for name, output in outputs.items():
        recorded = json.loads((tmp_path / runs[name] / "runtime.json").read_text())[name]
        assert (recorded["tcmalloc"], recorded["bf16"], recorded["omp_wait_policy"]) == (
            tcmalloc,
            bf16[name],
            "PASSIVE",
        )
        assert f"[{name}] runtime: tcmalloc {tcmalloc}, bf16 {bf16[name]}, " in output, output[-2000:]

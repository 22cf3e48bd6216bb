"""The OpenMP wait policy our torch processes run with: PASSIVE on shared cores (the default), libgomp's
own spinning with WORLD4RL_CORES=dedicated (bench/bench_cpu_settings.py measured both), and what the
process's libgomp actually took (OMP_DISPLAY_ENV makes it print its settings when torch loads it)."""

import os
import re
import subprocess
import sys

import pytest

from world4rl_model.runtime import CORES_ENV, default_wait_policy, tcmalloc_env


def test_shared_cores_are_the_default_and_get_passive_threads():
    assert default_wait_policy({}) == "PASSIVE"
    assert default_wait_policy({CORES_ENV: "shared"}) == "PASSIVE"
    assert tcmalloc_env({})["OMP_WAIT_POLICY"] == "PASSIVE"


def test_dedicated_cores_leave_libgomps_spinning_default():
    assert default_wait_policy({CORES_ENV: "dedicated"}) is None
    assert "OMP_WAIT_POLICY" not in tcmalloc_env({CORES_ENV: "dedicated"})


def test_an_explicit_wait_policy_wins_and_a_misspelt_situation_is_refused():
    for cores in ("shared", "dedicated"):
        assert tcmalloc_env({CORES_ENV: cores, "OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    with pytest.raises(ValueError, match="WORLD4RL_CORES must be 'shared' or 'dedicated'"):
        default_wait_policy({CORES_ENV: "dedicate"})


@pytest.mark.parametrize(("cores", "spin"), [(None, "0"), ("shared", "0"), ("dedicated", "300000")])
def test_the_process_libgomp_spins_as_configured(cores, spin):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CORES_ENV)}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    if cores is not None:
        env[CORES_ENV] = cores
    code = "from world4rl_model.runtime import configure_openmp; configure_openmp(); import torch; torch.ones(2).sum()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"GOMP_SPINCOUNT = '{spin}'", done.stderr), done.stderr[-2000:]

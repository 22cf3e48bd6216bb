"""Scripted experts: every task's expert succeeds within its horizon; doing nothing does not."""

import numpy as np
import pytest

from world4rl_sim.experts import ExpertConfig, ScriptedExpert, run_expert_episode
from world4rl_sim.sim import FrankaSim
from world4rl_sim.tasks import TASK_REGISTRY, TASKS


@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_on_a_handful_of_seeds(task):
    sim = FrankaSim(task, seed=0)
    expert = ScriptedExpert(task)
    for seed in range(5):
        success, steps = run_expert_episode(sim, expert, seed=1000 + seed)
        assert success, f"{task} expert failed on seed {1000 + seed}"
        assert steps <= TASK_REGISTRY[task].horizon
    sim.close()


@pytest.mark.parametrize("task", TASKS)
def test_idle_arm_does_not_solve_the_task(task):
    sim = FrankaSim(task, seed=0)
    for seed in range(3):
        sim.reset(seed=seed)
        for _ in range(TASK_REGISTRY[task].horizon):
            sim.apply_action([0.0, 0.0, 0.0, -1.0])
            assert not sim.success(), f"{task} counted as solved without doing anything (seed {seed})"
    sim.close()


def test_expert_noise_is_seeded_and_bounded():
    sim = FrankaSim("reach", seed=0)
    state = sim.task_state()
    a = ScriptedExpert("reach", ExpertConfig(noise_std=0.5, seed=3)).act(state)
    b = ScriptedExpert("reach", ExpertConfig(noise_std=0.5, seed=3)).act(state)
    clean = ScriptedExpert("reach").act(state)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, clean)
    assert np.all(np.abs(a) <= 1.0)
    assert a.dtype == np.float32
    sim.close()


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_on_95_of_100_seeds(task, noise):
    sim = FrankaSim(task, seed=0)
    expert = ScriptedExpert(task, noise_std=noise)
    results = [run_expert_episode(sim, expert, seed=seed) for seed in range(100)]
    successes = sum(ok for ok, _ in results)
    failed = [seed for seed, (ok, _) in enumerate(results) if not ok]
    assert successes >= 95, f"{task} (noise {noise}): {successes}/100, failed seeds {failed}"
    sim.close()

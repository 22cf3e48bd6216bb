"""The gymnasium API: spaces, checker, seeding, horizon, success reward."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from world4rl_sim.env import FrankaSimEnv
from world4rl_sim.tasks import TASK_REGISTRY, TASKS
from world4rl_spec import ACTION_DIM, LEARNING_IMAGE_SIZE


def test_gymnasium_checker_passes():
    env = FrankaSimEnv("push", seed=0)
    check_env(env, skip_render_check=True)
    env.close()


def test_spaces_follow_the_spec():
    env = FrankaSimEnv("reach", seed=0)
    assert env.action_space.shape == (ACTION_DIM,)
    assert env.action_space.low.min() == -1.0
    assert env.action_space.high.max() == 1.0
    obs, info = env.reset(seed=1)
    assert obs["image"].shape == (LEARNING_IMAGE_SIZE, LEARNING_IMAGE_SIZE, 3)
    assert obs["image"].dtype == np.uint8
    assert obs["joint_pos"].shape == (9,)
    assert info == {"success": False, "task": "reach", "seed": 1, "step": 0}
    env.close()
    big = FrankaSimEnv("reach", image_size=96, seed=0)
    assert big.reset()[0]["image"].shape == (96, 96, 3)
    big.close()


def test_reset_seed_reproduces_observations():
    env_a, env_b = FrankaSimEnv("pick_place"), FrankaSimEnv("pick_place")
    obs_a, _ = env_a.reset(seed=42)
    obs_b, _ = env_b.reset(seed=42)
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    for _ in range(5):
        action = env_a.expert_action()
        step_a, step_b = env_a.step(action), env_b.step(action)
        np.testing.assert_array_equal(step_a[0]["image"], step_b[0]["image"])
        np.testing.assert_array_equal(step_a[0]["joint_pos"], step_b[0]["joint_pos"])
    obs_c, _ = env_a.reset(seed=43)
    assert not np.array_equal(obs_c["image"], obs_a["image"])
    env_a.close()
    env_b.close()


@pytest.mark.parametrize("task", TASKS)
def test_expert_episode_through_the_env(task):
    env = FrankaSimEnv(task, seed=11)
    env.reset()
    rewards, truncated, steps = [], False, 0
    while not truncated:
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        rewards.append(reward)
        steps += 1
        assert not terminated
    assert steps == TASK_REGISTRY[task].horizon
    assert max(rewards) == 1.0
    assert info["success"]
    env.close()


def test_terminate_on_success():
    env = FrankaSimEnv("reach", seed=3, terminate_on_success=True)
    env.reset()
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        if terminated:
            break
    assert terminated
    assert reward == 1.0
    assert not truncated
    assert info["step"] < 30
    env.close()


def test_bad_actions_are_rejected():
    env = FrankaSimEnv("reach", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="unknown task"):
        FrankaSimEnv("juggle")
    env.close()

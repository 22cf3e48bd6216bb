"""The Meta-World adapter: conventions, seeding, scripted experts, and the optional-dependency guard."""

import sys

import numpy as np
import pytest

from world4rl_spec import ACTION_DIM, EE_DELTA_SCALE_M, LEARNING_IMAGE_SIZE

pytest.importorskip("metaworld", reason="metaworld==3.1.1 is in requirements.lock; this guards other venvs")

from world4rl_sim.metaworld_adapter import METAWORLD_ACTION_SCALE_M, MetaWorldEnv, metaworld_task_names


@pytest.fixture(scope="module")
def drawer():
    env = MetaWorldEnv("drawer-open-v3", seed=0)
    yield env
    env.close()


def test_conventions(drawer):
    obs, info = drawer.reset(seed=1)
    assert obs["image"].shape == (LEARNING_IMAGE_SIZE, LEARNING_IMAGE_SIZE, 3)
    assert obs["image"].dtype == np.uint8
    assert obs["state"].shape == (39,)
    assert drawer.action_space.shape == (ACTION_DIM,)
    assert info["seed"] == 1
    # The corner camera renders upside down in v3: the adapter turns it the right way up.
    raw = drawer._env.render()
    np.testing.assert_array_equal(obs["image"], raw[::-1, ::-1])
    assert "drawer-open-v3" in metaworld_task_names()


def test_same_seed_same_episode(drawer):
    first, _ = drawer.reset(seed=5)
    state = drawer.state
    again, _ = drawer.reset(seed=5)
    np.testing.assert_array_equal(state, drawer.state)
    np.testing.assert_array_equal(first["image"], again["image"])
    drawer.reset(seed=6)
    assert not np.allclose(state, drawer.state)


def test_one_step_moves_the_hand_by_the_spec_scale():
    # Meta-World moves its mocap 1 cm per unit action and step; the adapter repeats each action so
    # that 1.0 means world4rl_spec's EE_DELTA_SCALE_M, as on the embedded robot.
    speed = {}
    for repeat in (1, 2):
        env = MetaWorldEnv("drawer-open-v3", seed=0, action_repeat=repeat)
        env.reset(seed=0)
        xs = [env.state[0]]
        for _ in range(10):
            env.step(np.array([1.0, 0.0, 0.0, -1.0]))
            xs.append(env.state[0])
        speed[repeat] = float(np.mean(np.diff(xs)[-4:]))  # once the hand has caught up with its mocap
        env.close()
    assert speed[1] == pytest.approx(METAWORLD_ACTION_SCALE_M, rel=0.2)
    assert speed[2] == pytest.approx(2 * speed[1], rel=0.2)
    assert speed[2] == pytest.approx(EE_DELTA_SCALE_M, rel=0.2)
    with pytest.raises(ValueError, match=r"horizon must be in 1\.\.250"):
        MetaWorldEnv("drawer-open-v3", horizon=251)


@pytest.mark.parametrize("task", ["drawer-open-v3", "button-press-topdown-v3"])
def test_metaworld_expert_succeeds(task):
    # Within 50 steps (the paper's episode length; the coverage recipe gives 60): at 2 Meta-World
    # steps per step the noiseless experts need 29-46.
    env = MetaWorldEnv(task, seed=0, horizon=50, terminate_on_success=True)
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(50):
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            if terminated or truncated:
                break
        assert terminated, f"{task} expert did not succeed on seed {seed}"
        assert reward == 1.0
        assert info["success"]
    env.close()


def test_horizon_truncates(drawer):
    drawer.horizon = 5
    try:
        drawer.reset(seed=0)
        flags = [drawer.step(np.zeros(4))[3] for _ in range(5)]
        assert flags == [False] * 4 + [True]
    finally:
        drawer.horizon = 250


def test_missing_metaworld_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)
    monkeypatch.setitem(sys.modules, "metaworld.policies", None)
    with pytest.raises(ImportError, match=r"pip install metaworld==3\.1\.1"):
        MetaWorldEnv("drawer-open-v3")

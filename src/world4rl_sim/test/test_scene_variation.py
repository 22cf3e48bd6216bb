"""Scene variations (a moved camera, a recoloured object): the default scene stays byte-identical,
a variation changes what the camera shows and nothing the physics does, and it can be undone."""

import mujoco
import numpy as np
import pytest

from world4rl_sim.env import FrankaSimEnv
from world4rl_sim.scene import FRONT_CAMERA, FRONT_CAMERA_LOOKAT, FRONT_CAMERA_POS, SceneVariation, front_camera_pose
from world4rl_sim.sim import FrankaSim
from world4rl_sim.tasks import TASK_REGISTRY, TASKS

YELLOW = (0.95, 0.85, 0.1, 1.0)


def _episode(env: FrankaSimEnv, seed: int, options=None, steps: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and joint positions of the expert's first steps from a seeded reset."""
    obs, _ = env.reset(seed=seed, options=options)
    images, joints = [obs["image"]], [obs["joint_pos"]]
    for _ in range(steps):
        obs, *_ = env.step(env.expert_action())
        images.append(obs["image"])
        joints.append(obs["joint_pos"])
    return images, joints


def test_the_default_scene_is_untouched_and_a_variation_can_be_undone():
    plain = FrankaSimEnv("push", seed=0)
    default = FrankaSimEnv("push", seed=0, scene=SceneVariation())
    images, joints = _episode(plain, 5)
    for other in (_episode(default, 5), _episode(plain, 5, {"scene": None})):
        for a, b in zip(images + joints, other[0] + other[1], strict=True):
            np.testing.assert_array_equal(a, b)
    model = plain.sim.model
    before = (model.cam_pos.copy(), model.cam_quat.copy(), model.geom_rgba.copy(), model.mat_rgba.copy())
    _episode(plain, 5, {"scene": {"camera_shift_m": (0.0, 0.1, 0.05), "object_rgba": YELLOW}})
    assert not np.array_equal(model.cam_pos, before[0])
    back, _ = _episode(plain, 5, {"scene": None})
    for a, b in zip((model.cam_pos, model.cam_quat, model.geom_rgba, model.mat_rgba), before, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(images, back, strict=True):
        np.testing.assert_array_equal(a, b)
    # Without the key, a reset keeps the scene it had.
    plain.reset(seed=1, options={"scene": SceneVariation(object_rgba=YELLOW)})
    plain.reset(seed=1)
    assert plain.sim.scene.object_rgba == YELLOW
    plain.close()
    default.close()


def test_the_moved_camera_still_looks_at_the_workspace():
    sim = FrankaSim("reach", seed=0)
    cam = sim.model.camera(FRONT_CAMERA).id
    pos, quat = front_camera_pose()
    np.testing.assert_allclose(pos, sim.model.cam_pos[cam])
    np.testing.assert_allclose(np.abs(quat @ sim.model.cam_quat[cam]), 1.0, atol=1e-6)  # the compiled pose
    before = sim.render(64, 64)
    shift = (0.05, -0.1, 0.08)
    sim.set_scene(SceneVariation(camera_shift_m=shift))
    mujoco.mj_forward(sim.model, sim.data)
    np.testing.assert_allclose(sim.data.cam_xpos[cam], np.add(FRONT_CAMERA_POS, shift), atol=1e-9)
    # The camera looks along its -z axis: straight at the look-at point.
    forward = -sim.data.cam_xmat[cam].reshape(3, 3)[:, 2]
    to_target = np.subtract(FRONT_CAMERA_LOOKAT, sim.data.cam_xpos[cam])
    np.testing.assert_allclose(forward, to_target / np.linalg.norm(to_target), atol=1e-6)
    assert np.abs(sim.render(64, 64).astype(int) - before).mean() > 5
    sim.close()


@pytest.mark.parametrize("task", TASKS)
def test_a_recoloured_object_changes_only_its_pixels_and_not_the_physics(task):
    assert TASK_REGISTRY[task].object_appearance  # every task names its object
    env = FrankaSimEnv(task, image_size=96, seed=0)
    images, joints = _episode(env, 3)
    recoloured, recoloured_joints = _episode(env, 3, {"scene": {"object_rgba": YELLOW}})
    for a, b in zip(joints, recoloured_joints, strict=True):
        np.testing.assert_array_equal(a, b)  # appearance only: the same motion
    changed = np.any(images[0] != recoloured[0], axis=-1)
    assert 0 < changed.mean() < 0.3, changed.mean()
    pixels = recoloured[0][changed].astype(float)
    # The changed pixels are yellowish (red and green well above blue), under the scene's shading.
    assert np.median(pixels[:, 0] - pixels[:, 2]) > 40
    assert np.median(pixels[:, 1] - pixels[:, 2]) > 30
    env.close()


def test_bad_variations_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="camera_shift_m"):
        SceneVariation(camera_shift_m=(0.0, float("nan"), 0.0))
    with pytest.raises(ValueError, match="object_rgba"):
        SceneVariation(object_rgba=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="object_rgba"):
        SceneVariation(object_rgba=(2.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown scene variation keys"):
        SceneVariation.from_value({"camera": 1})
    with pytest.raises(TypeError):
        SceneVariation.from_value([0, 0, 0])
    assert SceneVariation.from_value({"camera_shift_m": [0, 0, 0]}).is_default

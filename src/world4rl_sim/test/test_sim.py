"""The simulator core: model, FR3 mapping, IK tracking, action scale, determinism, rendering."""

import numpy as np
import pytest

from world4rl_sim.robot import MODEL_ARM_JOINTS, fr3_to_model, model_to_fr3
from world4rl_sim.scene import camera_intrinsics
from world4rl_sim.sim import FrankaSim
from world4rl_sim.sim_commands import GripperGoal
from world4rl_sim.tasks import TASK_REGISTRY, TASKS, Task
from world4rl_spec import (
    EE_DELTA_SCALE_M,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_READY_POSE,
    GRIPPER_SPEED_M_S,
    GRIPPER_SWITCH_THRESHOLD,
)


@pytest.fixture(scope="module")
def sim():
    s = FrankaSim("pick_place", seed=0)
    yield s
    s.close()


def test_task_list_is_the_registry_in_rising_difficulty():
    assert TASKS == ("reach", "push", "drawer", "pick_place")
    assert set(TASKS) == set(TASK_REGISTRY)
    for name in TASKS:
        assert 0 < TASK_REGISTRY[name].horizon <= 50


def test_defining_a_task_class_registers_it():
    try:

        class Hover(Task):
            name = "hover_test_only"

        assert TASK_REGISTRY["hover_test_only"] is Hover
        with pytest.raises(ValueError, match="registered twice"):

            class Hover2(Task):
                name = "hover_test_only"
    finally:
        TASK_REGISTRY.pop("hover_test_only", None)


def test_joint_limits_are_the_fr3_limits_and_joint6_is_offset(sim):
    model = sim.model
    for i, name in enumerate(MODEL_ARM_JOINTS):
        lo, hi = model.joint(name).range
        assert model_to_fr3(np.full(7, lo))[i] == pytest.approx(FR3_JOINT_POSITION_MIN[i])
        assert model_to_fr3(np.full(7, hi))[i] == pytest.approx(FR3_JOINT_POSITION_MAX[i])
    assert fr3_to_model(FR3_READY_POSE)[5] == pytest.approx(0.0)  # the Panda model's ready q6
    np.testing.assert_allclose(model_to_fr3(fr3_to_model(FR3_READY_POSE)), FR3_READY_POSE)


def test_arm_targets_in_fr3_convention_are_reached_and_clipped(sim):
    sim.reset(seed=1)
    target = np.array(FR3_READY_POSE)
    np.testing.assert_allclose(sim.set_arm_targets(target), target)
    sim.step_physics(1500)  # 3 s
    np.testing.assert_allclose(sim.arm_positions(), target, atol=2e-3)
    # Franka's ready pose has the gripper pointing straight down.
    assert sim.tcp_rotation()[:, 2] @ np.array([0, 0, -1.0]) > 0.999
    clipped = sim.set_arm_targets(np.full(7, 10.0))
    np.testing.assert_allclose(clipped, FR3_JOINT_POSITION_MAX)
    sim.reset(seed=1)


def test_ik_solves_workspace_targets_to_sub_millimetre(sim):
    rng = np.random.default_rng(0)
    q = sim.data.qpos[sim._arm_qadr].copy()
    for _ in range(30):
        target = rng.uniform([0.3, -0.3, 0.01], [0.7, 0.3, 0.4])
        q_sol, err = sim.ik.solve(q, target, sim.tcp_target_mat, iterations=50)
        assert err < 1e-3, f"IK error {err:.4f} m at {target}"
        assert np.all(q_sol >= sim.q_min - 1e-9)
        assert np.all(q_sol <= sim.q_max + 1e-9)
        _pos, mat = sim.ik.forward(q_sol)
        assert np.trace(mat.T @ sim.tcp_target_mat) > 3 - 1e-3  # orientation kept (angle < ~2 deg)


def test_ik_keeps_unreachable_targets_within_joint_limits(sim):
    q0 = sim.data.qpos[sim._arm_qadr].copy()
    q, err = sim.ik.solve(q0, np.array([1.5, 0.0, 0.2]), sim.tcp_target_mat, iterations=50)
    assert err > 0.3
    assert np.all(q >= sim.q_min - 1e-9)
    assert np.all(q <= sim.q_max + 1e-9)


def test_tracking_error_of_the_action_controller(sim):
    """Each action moves the ee target by action * EE_DELTA_SCALE_M; the tcp follows within millimetres."""
    sim.reset(seed=2)
    rng = np.random.default_rng(2)
    lags = []
    for _ in range(40):
        action = np.concatenate([rng.uniform(-1, 1, 3), [-1.0]])
        before = sim.ee_target
        sim.apply_action(action)
        expected = np.clip(before + action[:3] * EE_DELTA_SCALE_M, sim.config.workspace_min, sim.config.workspace_max)
        np.testing.assert_allclose(sim.ee_target, expected, atol=1e-9)
        lags.append(np.linalg.norm(sim.tcp_position() - sim.ee_target))
    # Moving at up to 0.35 m/s, the tcp trails its target by well under one full step (0.02-0.035 m).
    assert np.mean(lags) < 0.008, lags
    assert np.max(lags) < 0.015, lags
    for _ in range(5):
        sim.apply_action([0.0, 0.0, 0.0, -1.0])
    assert np.linalg.norm(sim.tcp_position() - sim.ee_target) < 0.002
    assert sim.tcp_rotation()[:, 2] @ np.array([0, 0, -1.0]) > 0.998


def test_action_scale_in_metres_per_step(sim):
    sim.reset(seed=3)
    start = sim.tcp_position()
    for _ in range(5):
        sim.apply_action([1.0, 0.0, 0.0, -1.0])
    for _ in range(3):
        sim.apply_action([0.0, 0.0, 0.0, -1.0])
    moved = sim.tcp_position() - start
    assert moved[0] == pytest.approx(5 * EE_DELTA_SCALE_M, abs=0.003)
    assert abs(moved[1]) < 0.003
    assert abs(moved[2]) < 0.003


def test_the_gripper_is_binary_with_hysteresis_like_the_robots(sim):
    sim.reset(seed=4)
    assert sim.gripper_width() == pytest.approx(0.08, abs=1e-6)
    for _ in range(12):  # 0.08 m at 0.1 m/s: 0.8 s, then settled
        sim.apply_action([0.0, 0.0, 0.0, 1.0])
    assert sim.gripper_width() < 0.003
    for gripper in (0.0, 0.15, -0.15, 0.0):  # within the switch threshold: it stays closed
        sim.apply_action([0.0, 0.0, 0.0, gripper])
    assert sim.gripper_width() < 0.003
    sim.apply_action([0.0, 0.0, 0.0, -GRIPPER_SWITCH_THRESHOLD - 0.01])  # beyond it: it opens
    assert sim.gripper_target_width() > 0.005
    names_order_widths = sim.joint_positions()[7:]
    assert names_order_widths.sum() == pytest.approx(sim.gripper_width())


def test_the_gripper_closes_as_fast_as_the_ros_gripper_servers_close_it():
    """apply_action's fingers against a Grasp goal of the ROS sim's gripper server (sim_commands.GripperGoal,
    advanced per physics chunk as the stepper does), from the same state: the same widths, step by step.
    (It was ~4x faster here, so a grasp took one control step in the sim and four on the robot.)"""
    direct, served = FrankaSim("pick_place", seed=3), FrankaSim("pick_place", seed=3)
    chunks = direct.config.interpolation_chunks
    chunk = direct.substeps // chunks
    goal = GripperGoal("grasp", 0.0, GRIPPER_SPEED_M_S, 0.0, 0.08, deadline=10.0)
    widths = []
    for _ in range(8):
        direct.apply_action([0.0, 0.0, 0.0, 1.0])
        for _ in range(chunks):
            goal.advance(served, served.time + chunk * served.model.opt.timestep)
            served.step_physics(chunk)
        widths.append((direct.gripper_width(), served.gripper_width()))
    widths = np.array(widths)
    np.testing.assert_allclose(widths[:, 0], widths[:, 1], atol=1e-3)
    # 0.1 m/s: the finger target closes 1 cm per 0.1 s control step (the fingers follow it a little behind)
    assert 0.068 < widths[0, 0] < 0.078
    assert widths[-1, 0] < 0.01
    direct.close()
    served.close()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_episode_other_seed_other_episode(task):
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4))
    runs = []
    for seed in (7, 7, 8):
        s = FrankaSim(task, seed=seed)
        for a in actions:
            s.apply_action(a)
        runs.append((s.data.qpos.copy(), s.data.mocap_pos.copy(), s.render(64, 64)))
        s.close()
    (q1, m1, i1), (q2, m2, i2), (q3, m3, _) = runs
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(i1, i2)
    assert not (np.array_equal(q1, q3) and np.array_equal(m1, m3))


def test_reset_can_switch_task(sim):
    assert sim.reset(seed=5, task="drawer") == 5
    assert sim.task_name == "drawer"
    assert "handle" in sim.task_state().objects
    sim.reset(seed=0, task="pick_place")
    assert sim.task_name == "pick_place"


def test_render_sizes_and_square_view_matches_ros_centre_crop(sim):
    sim.reset(seed=6)
    small = sim.render(64, 64)
    big = sim.render(640, 480)
    assert small.shape == (64, 64, 3)
    assert small.dtype == np.uint8
    assert big.shape == (480, 640, 3)
    assert small.std() > 10  # not a blank frame
    # Centre 480x480 crop, area-averaged to 64x64 (7.5 px blocks: use 60x... via 480/64 resampling).
    crop = big[:, 80:560].astype(np.float32)
    idx = (np.arange(64) * 480 / 64 + 480 / 128).astype(int)
    crop_small = crop[idx][:, idx]
    assert np.abs(crop_small - small.astype(np.float32)).mean() < 12.0
    wrist = sim.render(64, 64, camera="wrist")
    assert wrist.shape == (64, 64, 3)
    assert not np.array_equal(wrist, small)


def test_camera_intrinsics_follow_the_vertical_fov(sim):
    k = camera_intrinsics(sim.model, "front", 640, 480)
    fovy = np.radians(sim.model.cam_fovy[sim.model.camera("front").id])
    assert k[1, 1] == pytest.approx(240 / np.tan(fovy / 2))
    assert k[0, 0] == k[1, 1]
    assert (k[0, 2], k[1, 2]) == (319.5, 239.5)


def test_reach_goal_stands_on_the_table_so_one_camera_sees_its_height():
    """From the one fixed camera a floating sphere's depth is ambiguous; its stand, drawn from the
    sphere down to the table top, is visible between them and hidden below the table."""
    from world4rl_sim.scene import FRONT_CAMERA

    s = FrankaSim("reach", seed=0)
    try:
        s.reset(seed=3)
        goal = s.data.mocap_pos[s.model.body("reach_goal").mocapid[0]]
        goal[:] = (0.45, 0.05, 0.22)  # high above the table, clear of the arm's home pose
        import mujoco

        mujoco.mj_forward(s.model, s.data)
        image = s.render(640, 480).astype(int)
        cam = s.model.camera(FRONT_CAMERA).id
        k = camera_intrinsics(s.model, FRONT_CAMERA, 640, 480)
        pos, rot = s.data.cam_xpos[cam], s.data.cam_xmat[cam].reshape(3, 3)

        def pixel(p):
            c = rot.T @ (np.asarray(p) - pos)  # MuJoCo camera frame: x right, y up, looking along -z
            u = k[0, 0] * c[0] / -c[2] + k[0, 2]
            v = k[1, 1] * -c[1] / -c[2] + k[1, 2]
            return round(v), round(u)

        def colour(p):
            r, c = pixel(p)
            return image[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3).mean(0)

        table = colour((0.45, 0.11, 0.0))  # table top beside the stand
        for z in (0.05, 0.1, 0.15):  # along the stand: dark grey, unlike the table behind it
            assert np.abs(colour((0.45, 0.05, z)) - table).sum() > 120, z
        assert colour((0.45, 0.05, 0.22))[0] > 150  # the red sphere itself
        stand = s.model.geom("reach_goal_stand")
        assert stand.contype[0] == 0  # seen, never touched
        assert stand.conaffinity[0] == 0
        # Long enough to reach the table from the highest goal.
        assert 2 * s.model.geom_size[stand.id][1] > TASK_REGISTRY["reach"].GOAL_HIGH[2]
    finally:
        s.close()

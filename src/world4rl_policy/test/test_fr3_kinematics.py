"""FR3 kinematics: known poses, the Jacobian against finite differences of FK, and the damped
least-squares end-effector step (accuracy, orientation hold, joint limits)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from world4rl_policy import fr3_kinematics as kin
from world4rl_spec import EE_DELTA_SCALE_M, FR3_READY_POSE


def _random_configs(n: int, seed: int, margin: float = 0.05) -> np.ndarray:
    lo, hi = kin.joint_limits(margin)
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, 7))


def test_ready_pose_matches_franka_published_tcp():
    # franka_ros2's ready pose puts the hand TCP at (0.307, 0, 0.487), pointing down.
    pose = kin.forward_kinematics(FR3_READY_POSE)
    np.testing.assert_allclose(pose[:3, 3], [0.3069, 0.0, 0.4869], atol=2e-4)
    np.testing.assert_allclose(pose[:3, 2], [0.0, 0.0, -1.0], atol=1e-9)
    # Flange = TCP + 0.1034 m back along the approach axis.
    np.testing.assert_allclose(kin.flange_pose(FR3_READY_POSE)[:3, 3], [0.3069, 0.0, 0.5903], atol=2e-4)


def test_zero_pose_is_the_straight_up_arm():
    # All joints at zero: x offsets 0.0825 - 0.0825 + 0.088, z = 0.333 + 0.316 + 0.384 - 0.107 - TCP.
    pose = kin.forward_kinematics(np.zeros(7), tcp_offset_m=0.0)
    np.testing.assert_allclose(pose[:3, 3], [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107], atol=1e-12)


def test_rotations_are_orthonormal():
    for q in _random_configs(50, seed=0):
        for frame in kin.link_frames(q):
            np.testing.assert_allclose(frame[:3, :3] @ frame[:3, :3].T, np.eye(3), atol=1e-12)
            assert np.linalg.det(frame[:3, :3]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("tcp_offset", [0.0, kin.HAND_TCP_OFFSET_M, 0.25])
def test_jacobian_matches_finite_differences(tcp_offset):
    eps = 1e-6
    for q in _random_configs(100, seed=1):
        jac = kin.jacobian(q, tcp_offset_m=tcp_offset)
        base = kin.forward_kinematics(q, tcp_offset_m=tcp_offset)
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = eps
            plus = kin.forward_kinematics(q + dq, tcp_offset_m=tcp_offset)
            minus = kin.forward_kinematics(q - dq, tcp_offset_m=tcp_offset)
            lin = (plus[:3, 3] - minus[:3, 3]) / (2 * eps)
            # Angular velocity: vee of dR/dq R^T.
            skew = (plus[:3, :3] - minus[:3, :3]) / (2 * eps) @ base[:3, :3].T
            ang = np.array([skew[2, 1], skew[0, 2], skew[1, 0]])
            np.testing.assert_allclose(jac[:3, j], lin, atol=1e-7)
            np.testing.assert_allclose(jac[3:, j], ang, atol=1e-7)


def test_rotation_error_is_the_axis_angle_between_rotations():
    rng = np.random.default_rng(2)
    for angle in [1e-8, 0.1, 1.0, 3.0, math.pi - 1e-6]:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
        start = kin.forward_kinematics(_random_configs(1, seed=3)[0])[:3, :3]
        err = kin.rotation_error(rot @ start, start)
        assert np.linalg.norm(err) == pytest.approx(angle, abs=1e-6)
        # The sign of the axis is ambiguous only at pi.
        assert abs(np.dot(err / max(np.linalg.norm(err), 1e-300), axis)) == pytest.approx(1.0, abs=1e-4)


def test_ee_step_reaches_target_and_keeps_orientation():
    rng = np.random.default_rng(4)
    checked = 0
    for q in _random_configs(300, seed=5, margin=0.4):
        # Skip near-singular configurations, where a damped step is deliberately short.
        weighted = np.diag([1, 1, 1, 0.5, 0.5, 0.5]) @ kin.jacobian(q)
        if np.linalg.svd(weighted, compute_uv=False)[-1] < 0.06:
            continue
        delta = rng.uniform(-1, 1, size=3) * EE_DELTA_SCALE_M
        start = kin.forward_kinematics(q)
        res = kin.ee_delta_to_joint_target(q, delta)
        end = kin.forward_kinematics(res.q_target)
        if res.at_limit.any():
            continue
        np.testing.assert_allclose(end[:3, 3] - start[:3, 3], delta, atol=1e-4)
        assert np.linalg.norm(kin.rotation_error(start[:3, :3], end[:3, :3])) < 1e-3
        assert res.position_error_m < 1e-4
        # A 2 cm step needs small joint motion away from singularities.
        assert np.max(np.abs(res.q_target - q)) < 0.5
        checked += 1
    assert checked > 150


def test_ee_step_never_leaves_joint_limits_even_for_huge_deltas():
    rng = np.random.default_rng(6)
    cfg = kin.IKConfig(joint_margin_rad=0.1)
    lo, hi = kin.joint_limits(cfg.joint_margin_rad)
    hit_limit = 0
    for q in _random_configs(300, seed=7, margin=0.0):
        res = kin.ee_delta_to_joint_target(q, rng.normal(size=3) * 2.0, config=cfg)
        assert np.all(res.q_target >= lo - 1e-12)
        assert np.all(res.q_target <= hi + 1e-12)
        assert np.all(np.isfinite(res.q_target))
        hit_limit += bool(res.at_limit.any())
    assert hit_limit > 0  # the sweep did exercise the clamping


def test_ee_step_uses_free_joints_when_one_is_at_its_limit():
    # Joint 1 at its upper limit: moving along +y from the ready pose needs joint 1 to turn,
    # the clamp stops it, and the remaining joints still make progress towards the target.
    cfg = kin.IKConfig(joint_margin_rad=0.05)
    q = np.array(FR3_READY_POSE)
    q[0] = kin.JOINT_MAX[0] - cfg.joint_margin_rad
    start = kin.ee_position(q)
    tangent = kin.jacobian(q)[:3, 0]  # the direction joint 1 would move the TCP
    res = kin.ee_delta_to_joint_target(q, 0.02 * tangent / np.linalg.norm(tangent), config=cfg)
    assert res.q_target[0] <= kin.JOINT_MAX[0] - cfg.joint_margin_rad
    progress = np.dot(kin.ee_position(res.q_target) - start, tangent / np.linalg.norm(tangent))
    assert progress > 0.005


# The elbow (joint 4) at its limit with the hand pulled towards the base: where BC policies on drawer
# took the arm through the command path (docs/results.md, session 15).
ELBOW_AT_LIMIT = np.array([0.16, -0.11, -0.49, -2.99, -0.2, 2.86, -0.11])
TOWARDS_THE_BASE = np.array([-0.048, 0.001, 0.015])  # the lead bound's 3 cm plus a 2 cm step


def test_a_step_that_needs_a_reconfiguration_is_cut_short_not_demanded_at_once():
    from world4rl_policy.safety_filter import SafetyParams

    jump_limit = SafetyParams().max_target_distance_rad
    q, delta = ELBOW_AT_LIMIT, TOWARDS_THE_BASE
    unbounded = kin.ee_delta_to_joint_target(q, delta, config=kin.IKConfig(max_joint_step_rad=math.inf))
    assert unbounded.at_limit[3]
    assert np.max(np.abs(unbounded.q_target - q)) > jump_limit  # the other joints swing round: a jump
    cut = kin.ee_delta_to_joint_target(q, delta)
    assert cut.step_limited
    assert np.max(np.abs(cut.q_target - q)) == pytest.approx(kin.IKConfig().max_joint_step_rad)
    lo, hi = kin.joint_limits(kin.IKConfig().joint_margin_rad)
    assert np.all((cut.q_target >= lo) & (cut.q_target <= hi))
    # Along the way: the hand still moves towards the target, by a good part of the way.
    direction = delta / np.linalg.norm(delta)
    assert np.dot(kin.ee_position(cut.q_target) - kin.ee_position(q), direction) > 0.01
    # An ordinary step is never cut.
    assert not kin.ee_delta_to_joint_target(FR3_READY_POSE, [EE_DELTA_SCALE_M, 0.0, 0.0]).step_limited


def test_action_semantics_and_clipping():
    q = np.array(FR3_READY_POSE)
    start = kin.ee_position(q)
    res = kin.action_to_joint_target(q, [0.5, -0.25, 0.0, 1.0])
    np.testing.assert_allclose(kin.ee_position(res.q_target) - start, [0.01, -0.005, 0.0], atol=1e-5)
    big = kin.action_to_joint_target(q, [50.0, 0.0, 0.0, 0.0])  # clipped to 1 unit = 2 cm
    np.testing.assert_allclose(kin.ee_position(big.q_target) - start, [EE_DELTA_SCALE_M, 0, 0], atol=1e-5)


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0], [0, np.inf, 0, 0], [0, 0]])
def test_action_rejects_non_finite_or_short(bad):
    with pytest.raises(ValueError, match="action"):
        kin.action_to_joint_target(FR3_READY_POSE, bad)


def test_wrong_joint_count_is_an_error():
    with pytest.raises(ValueError, match="7 arm joint positions"):
        kin.forward_kinematics(np.zeros(6))

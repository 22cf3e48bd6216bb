"""The action -> checked arm command path (IK, smoothing, safety filter), ROS-free."""

import itertools

import numpy as np
import pytest

from world4rl_policy import fr3_kinematics
from world4rl_policy.command_path import CommandPath, GripperCommand
from world4rl_policy.safety_filter import Reason
from world4rl_spec import EE_DELTA_SCALE_M, FR3_READY_POSE, GRIPPER_OPEN_WIDTH_M

READY = np.array(FR3_READY_POSE)
DT = 0.1


def ee(q):
    return fr3_kinematics.forward_kinematics(q)[:3, 3]


def run(path, q, action, t):
    return path.step(joint_positions=q, action=action, now=t, input_stamp=t - 0.01, joint_state_stamp=t - 0.005)


def test_disarmed_path_sends_nothing():
    path = CommandPath()
    cycle = run(path, READY, [1.0, 0.0, 0.0, 1.0], 10.0)
    assert not cycle.send_arm_command
    assert cycle.gripper is None
    assert Reason.DISARMED in cycle.result.reasons


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_full_action_moves_the_end_effector_one_step_along_its_axis(axis, sign):
    path = CommandPath()
    path.arm(0.0, READY)
    action = [0.0, 0.0, 0.0, -1.0]
    action[axis] = sign
    q = READY.copy()
    start = ee(q)
    for k in range(1, 6):
        cycle = run(path, q, action, k * DT)
        assert cycle.send_arm_command, cycle.result.events
        q = cycle.result.command  # a perfect position controller
    # The smoothed command follows the target with a lag; with no further motion it comes to rest there.
    for k in range(6, 12):
        cycle = run(path, q, [0.0, 0.0, 0.0, -1.0], k * DT)
        q = cycle.result.command
    assert not np.any(cycle.motion.velocity)
    moved = ee(q) - start
    expected = np.zeros(3)
    expected[axis] = sign * 5 * EE_DELTA_SCALE_M
    np.testing.assert_allclose(moved, expected, atol=1e-3)
    # The orientation latched at arming is held.
    rot = fr3_kinematics.forward_kinematics(q)[:3, :3]
    assert np.linalg.norm(fr3_kinematics.rotation_error(fr3_kinematics.forward_kinematics(READY)[:3, :3], rot)) < 1e-3


def test_a_new_episode_starts_from_the_measured_pose_once_the_last_stop_is_over():
    """An arm at rest somewhere else than its last command (a sim reset, a nudge by hand, both within
    a step bound): re-arming plans from where it is, so the first command holds it there instead of
    stepping back towards the old command."""
    path = CommandPath()
    path.arm(0.0, READY)
    q, t = READY.copy(), 0.0
    for _ in range(3):
        t += DT
        q = run(path, q, [1.0, 0.0, 0.0, -1.0], t).result.command
    path.disarm()
    for _ in range(30):  # the stop ramps down, then nothing is sent
        t += DT
        cycle = run(path, q, None, t)
        q = cycle.result.command if cycle.send_arm_command else q
    assert not cycle.send_arm_command
    moved = q + 0.03  # a reset pose within the step bound of the old one
    path.new_episode()
    path.arm(t, moved)
    first = run(path, moved, [0.0, 0.0, 0.0, -1.0], t + DT)
    assert first.send_arm_command, first.result.events
    np.testing.assert_allclose(first.result.command, moved, atol=1e-6)


def test_gripper_switches_once_with_hysteresis():
    path = CommandPath()
    path.arm(0.0, READY)
    commands = [
        run(path, READY, [0, 0, 0, g], (i + 1) * DT).gripper
        for i, g in enumerate([1.0, 1.0, 0.1, -0.1, -0.9, -1.0, 0.9])
    ]
    assert commands == [
        GripperCommand("grasp", 0.0),
        None,
        None,
        None,
        GripperCommand("move", GRIPPER_OPEN_WIDTH_M),
        None,
        GripperCommand("grasp", 0.0),
    ]


def test_nan_action_holds_once_then_stays_silent_until_rearmed():
    path = CommandPath()
    path.arm(0.0, READY)
    ok = run(path, READY, [0.5, 0, 0, 0], DT)
    assert ok.send_arm_command
    assert np.any(ok.motion.velocity)  # moving
    bad = run(path, READY, [np.nan, 0, 0, 0], 2 * DT)
    assert bad.send_arm_command  # the hold
    assert Reason.NONFINITE_TARGET in bad.result.reasons
    assert not bad.result.armed
    # The hold ramps the motion down (each command within a step of the arm), sent until at rest, then silence.
    speeds, commands, t = [np.abs(ok.motion.velocity)], [ok.result.command, bad.result.command], 2 * DT
    cycle = bad
    while cycle.send_arm_command and t < 1.0:
        speeds.append(np.abs(cycle.motion.velocity))
        t += DT
        cycle = run(path, cycle.result.command, [0.5, 0, 0, 0], t)
        commands.append(cycle.result.command)
        assert not cycle.result.armed
    assert not np.any(speeds[-1])
    assert t < 0.6
    assert all(np.all(b <= a + 1e-12) for a, b in itertools.pairwise(speeds))
    assert np.max(np.abs(commands[1] - ok.result.command)) <= np.max(np.abs(ok.result.command - READY))
    assert not run(path, cycle.result.command, [0.5, 0, 0, 0], t + DT).send_arm_command
    path.arm(t + 2 * DT, cycle.result.command)
    assert run(path, cycle.result.command, [0.5, 0, 0, 0], t + 3 * DT).send_arm_command


def test_missing_action_holds_then_the_watchdog_faults():
    path = CommandPath()
    path.arm(0.0, READY)
    first = run(path, READY, [0.5, 0, 0, 0], DT)
    assert first.send_arm_command
    # The demonstrator stops: no action, its last stamp ages past the timeout.
    gap = path.step(joint_positions=READY, action=None, now=0.2, input_stamp=DT - 0.01, joint_state_stamp=0.195)
    assert gap.send_arm_command
    # No decision: the motion ramps down to where the last command comes to rest.
    assert np.all(np.abs(gap.motion.velocity) <= np.abs(first.motion.velocity))
    rest = gap.motion.stop_positions[-1] if len(gap.motion.stop_times) else gap.result.command
    still = path.step(joint_positions=READY, action=None, now=0.3, input_stamp=DT - 0.01, joint_state_stamp=0.295)
    np.testing.assert_allclose(still.result.command, rest, atol=1e-9)
    assert not np.any(still.motion.velocity)
    dead = path.step(joint_positions=READY, action=None, now=1.0, input_stamp=DT - 0.01, joint_state_stamp=0.995)
    assert Reason.STALE_IMAGE in dead.result.reasons
    assert not dead.result.armed


def test_cannot_arm_without_a_valid_joint_state():
    with pytest.raises(ValueError, match="valid joint state"):
        CommandPath().arm(0.0, [np.nan] * 7)


def test_target_stops_at_the_workspace_floor():
    from world4rl_policy.safety_filter import SafetyParams

    floor = 0.40
    path = CommandPath(SafetyParams(workspace_min=(0.15, -0.5, floor)))
    path.arm(0.0, READY)
    q = READY.copy()
    for k in range(1, 15):
        cycle = run(path, q, [0.0, 0.0, -1.0, -1.0], k * DT)
        if cycle.send_arm_command:
            q = cycle.result.command
        assert Reason.WORKSPACE_EXIT not in cycle.result.reasons
    assert ee(q)[2] == pytest.approx(floor + path.params.workspace_margin_m, abs=2e-3)


def test_target_leads_a_stuck_arm_by_at_most_the_lead_bound():
    path = CommandPath()
    path.arm(0.0, READY)
    lead = path.params.max_target_lead_m
    for k in range(1, 10):  # the arm never moves (blocked): commands must not run away
        cycle = run(path, READY, [1.0, 0.0, 0.0, -1.0], k * DT)
        assert cycle.send_arm_command
        assert np.linalg.norm(ee(cycle.result.command) - ee(READY)) <= lead + EE_DELTA_SCALE_M + 1e-3


def test_an_elbow_at_its_limit_is_not_a_target_jump():
    # A policy pulling towards the base while joint 4 stands at its limit: with the IK unbounded the
    # command path proposed a 0.6-0.7 rad reconfiguration and the filter disarmed; bounded, the arm
    # goes on being commanded, one step-clipped command at a time.
    import math

    elbow_at_limit = np.array([0.16, -0.11, -0.49, -2.99, -0.2, 2.86, -0.11])  # as in test_fr3_kinematics
    pull = np.array([-1.0, 0.0, 0.3, 0.0])
    for ik, faults in ((fr3_kinematics.IKConfig(max_joint_step_rad=math.inf), True), (None, False)):
        path = CommandPath(ik=ik)
        path.arm(0.0, elbow_at_limit)
        cycles = [
            path.step(joint_positions=elbow_at_limit, action=pull, now=t, input_stamp=t, joint_state_stamp=t)
            for t in (0.1, 0.2, 0.3, 0.4)
        ]
        assert any(c.result.fault == Reason.TARGET_JUMP for c in cycles) == faults
    assert all(c.send_arm_command for c in cycles)
    step = path.filter.params.step_bound()
    assert all(np.all(np.abs(c.result.command - elbow_at_limit) <= step + 1e-9) for c in cycles)


def test_an_arm_outside_the_box_is_led_back_in_without_a_jump():
    from world4rl_policy.safety_filter import SafetyParams

    start_z = ee(READY)[2]
    floor = start_z + 0.15  # the arm stands 15 cm below the box
    path = CommandPath(SafetyParams(workspace_min=(0.15, -0.5, floor), workspace_max=(0.85, 0.5, 0.9)))
    path.arm(0.0, READY)
    q = READY.copy()
    for k in range(1, 20):
        cycle = run(path, q, [0.0, 0.0, 0.0, -1.0], k * DT)  # no motion asked: only the box pulls
        assert cycle.result.armed, cycle.result.events
        assert cycle.send_arm_command
        q = cycle.result.command
    assert ee(q)[2] >= floor - 1e-3

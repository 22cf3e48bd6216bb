"""The safety filter, case by case, then a 10,000-cycle adversarial fuzz at filter level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from world4rl_policy import fr3_kinematics as kin
from world4rl_policy.safety_filter import (
    ADJUSTMENT_REASONS,
    FAULT_REASONS,
    HOLD_REASONS,
    Event,
    Reason,
    SafetyFilter,
    SafetyParams,
)
from world4rl_spec import FR3_JOINT_POSITION_MAX, FR3_JOINT_POSITION_MIN, FR3_JOINT_VELOCITY_MAX, FR3_READY_POSE

READY = np.array(FR3_READY_POSE)
HARD_LO = np.array(FR3_JOINT_POSITION_MIN)
HARD_HI = np.array(FR3_JOINT_POSITION_MAX)


class Rig:
    """An armed filter at the ready pose with fresh inputs; `cycle` advances time by one period."""

    def __init__(self, params: SafetyParams | None = None, arm: bool = True) -> None:
        self.f = SafetyFilter(params)
        self.now = 100.0
        self.q = READY.copy()
        if arm:
            self.f.arm(self.now)

    def cycle(self, target=None, *, dt=0.1, q=None, image_age=0.01, joint_age=0.001, gripper=None, **stamps):
        self.now += dt
        kwargs = {
            "joint_positions": self.q if q is None else q,
            "target": self.q if target is None else target,
            "now": self.now,
            "image_stamp": self.now - image_age,
            "joint_state_stamp": self.now - joint_age,
            "gripper": gripper,
        }
        kwargs.update(stamps)
        res = self.f.filter(**kwargs)
        if res.command is not None and not res.held:
            self.q = res.command.copy()  # a perfect position controller
        return res


# ---------------------------------------------------------------------------------- basics


def test_disarmed_at_start_holds_and_does_not_count_refusals():
    rig = Rig(arm=False)
    res = rig.cycle(None)
    assert res.held
    assert not res.armed
    assert res.reasons == (Reason.DISARMED,)
    np.testing.assert_array_equal(res.command, READY)
    assert rig.f.status().refused_commands == 0
    assert rig.f.status().last_refusal == "disarmed"


def test_armed_small_step_passes_unchanged_and_counts_steps():
    rig = Rig()
    target = READY + np.array([0.01, -0.02, 0.0, 0.03, 0.0, -0.01, 0.02])
    res = rig.cycle(target, gripper=0.5)
    assert not res.held
    assert res.armed
    assert res.fault is None
    assert res.events == ()
    np.testing.assert_allclose(res.command, target, atol=1e-15)
    assert res.gripper == 0.5
    st = rig.f.status()
    assert (st.armed, st.fault, st.step, st.refused_commands) == (True, "", 1, 0)


def test_disarm_then_arm_again():
    rig = Rig()
    rig.f.disarm()
    res = rig.cycle(READY + 0.01)
    assert res.held
    assert res.reasons == (Reason.DISARMED,)
    assert res.fault is None
    rig.f.arm(rig.now)
    assert not rig.cycle(READY + 0.01).held


def test_arm_needs_a_finite_time():
    with pytest.raises(ValueError, match="finite"):
        SafetyFilter().arm(math.nan)


# ---------------------------------------------------------------------------------- faults


def _fault_case(reason: Reason, **kw):
    rig = Rig()
    rig.cycle()  # one good cycle so ordering checks have history
    res = rig.cycle(**kw)
    return rig, res


FAULT_CASES = {
    "nan_target": (Reason.NONFINITE_TARGET, {"target": np.r_[READY[:3], np.nan, READY[4:]]}),
    "inf_target": (Reason.NONFINITE_TARGET, {"target": np.r_[READY[:6], -np.inf]}),
    "short_target": (Reason.BAD_TARGET_SHAPE, {"target": READY[:6]}),
    "matrix_target": (Reason.BAD_TARGET_SHAPE, {"target": np.tile(READY, (2, 1))}),
    "string_target": (Reason.BAD_TARGET_SHAPE, {"target": ["a"] * 7}),
    "nan_gripper": (Reason.NONFINITE_GRIPPER, {"gripper": math.nan}),
    "jump": (Reason.TARGET_JUMP, {"target": READY + np.r_[0, 0, 0.8, 0, 0, 0, 0]}),
    "huge": (Reason.TARGET_JUMP, {"target": READY + 1e9}),
    "nan_joint_state": (Reason.BAD_JOINT_STATE, {"q": np.r_[READY[:6], np.nan]}),
    "short_joint_state": (Reason.BAD_JOINT_STATE, {"q": READY[:5]}),
    "joint_state_beyond_limits": (Reason.JOINT_STATE_OUT_OF_LIMITS, {"q": np.r_[3.0, READY[1:]]}),
    "stale_image": (Reason.STALE_IMAGE, {"dt": 0.5, "image_age": 0.3}),
    "stale_joint_state": (Reason.STALE_JOINT_STATE, {"dt": 0.5, "joint_age": 0.2}),
    "image_from_future": (Reason.IMAGE_FROM_FUTURE, {"image_age": -0.2}),
    "joint_state_from_future": (Reason.JOINT_STATE_FROM_FUTURE, {"joint_age": -0.2}),
    "no_image": (Reason.NO_IMAGE, {"image_stamp": None}),
    "no_joint_state": (Reason.NO_JOINT_STATE, {"joint_state_stamp": None}),
    "nan_now": (Reason.BAD_CLOCK, {"now": math.nan}),
    "nan_stamp": (Reason.BAD_CLOCK, {"image_stamp": math.nan}),
    "clock_backwards": (Reason.BAD_CLOCK, {"dt": -1.0, "image_age": -1.0, "joint_age": -1.0}),
}


@pytest.mark.parametrize("case", sorted(FAULT_CASES))
def test_each_fault_holds_and_disarms(case):
    reason, kw = FAULT_CASES[case]
    rig, res = _fault_case(reason, **kw)
    assert res.reasons[0] == reason, res.events
    assert res.held
    assert not res.armed
    assert res.fault == reason
    assert all(e.message.endswith("holding position and disarming") for e in res.events)
    if reason in (Reason.BAD_JOINT_STATE, Reason.JOINT_STATE_OUT_OF_LIMITS):
        assert res.command is None  # nothing trustworthy to hold
    else:
        np.testing.assert_array_equal(res.command, rig.q)
    st = rig.f.status()
    assert st.fault == reason.value
    assert st.last_refusal == reason.value
    assert st.refused_commands == 1
    assert st.fault_message
    # Latched: the next perfectly good cycle still holds until arm().
    again = rig.cycle(rig.q + 0.01, q=rig.q)
    assert again.held
    assert again.reasons == (Reason.DISARMED,)
    assert reason.value in again.events[0].message
    rig.f.arm(rig.now)
    assert rig.f.fault is None
    assert not rig.cycle(rig.q + 0.01, q=rig.q).held


def test_out_of_order_stamps_are_faults_for_each_input():
    rig = Rig()
    rig.cycle(image_age=0.01)
    res = rig.cycle(image_stamp=rig.now - 0.15 + 0.1 - 0.2)  # older than the previous image
    assert res.reasons[0] == Reason.IMAGE_OUT_OF_ORDER
    rig = Rig()
    rig.cycle()
    res = rig.cycle(joint_state_stamp=rig.now + 0.1 - 0.05 - 0.2)
    assert res.reasons[0] == Reason.JOINT_STATE_OUT_OF_ORDER


def test_repeated_image_stamp_is_fine_until_it_is_stale():
    rig = Rig()
    stamp = rig.now + 0.1
    assert not rig.cycle(image_stamp=stamp).held
    assert not rig.cycle(image_stamp=stamp).held  # 0.1 s old
    res = rig.cycle(image_stamp=stamp, dt=0.2)  # 0.3 s old
    assert res.reasons == (Reason.STALE_IMAGE,)


def test_arming_again_accepts_a_restarted_clock():
    rig = Rig()
    rig.cycle()
    rig.now -= 50.0  # e.g. the simulator restarted its clock
    res = rig.cycle()
    assert res.reasons[0] == Reason.BAD_CLOCK
    rig.f.arm(rig.now)
    assert not rig.cycle(rig.q + 0.01).held


def test_episode_time_limit():
    rig = Rig(SafetyParams(episode_time_limit_s=1.0))
    for _ in range(10):
        assert not rig.cycle(rig.q + 0.001).held
    res = rig.cycle(rig.q + 0.001)
    assert res.reasons == (Reason.EPISODE_TIME_LIMIT,)
    assert not res.armed
    # Re-arming continues the episode, whose time is up: refused, however often it is tried.
    with pytest.raises(ValueError, match="episode time limit is reached"):
        rig.f.arm(rig.now)
    rig.f.new_episode()
    rig.f.arm(rig.now)  # a new episode starts a new clock
    assert not rig.cycle(rig.q + 0.001).held
    assert rig.f.status().step == 1


def test_rearming_continues_the_episode_clock():
    """A disarm and re-arm in the middle of an episode does not give it more time."""
    rig = Rig(SafetyParams(episode_time_limit_s=1.0))
    for _ in range(6):
        assert not rig.cycle(rig.q + 0.001).held
    rig.f.disarm()
    rig.f.arm(rig.now)
    for _ in range(4):
        assert not rig.cycle(rig.q + 0.001).held
    res = rig.cycle(rig.q + 0.001)  # 1.1 s after the episode's first arming
    assert res.reasons == (Reason.EPISODE_TIME_LIMIT,)
    assert rig.f.status().step == 10  # the step count runs through the episode as well
    with pytest.raises(ValueError, match="disarm before"):
        Rig().f.new_episode()


def test_a_clock_that_runs_back_gives_the_episode_no_time_back():
    rig = Rig(SafetyParams(episode_time_limit_s=1.0))
    for _ in range(8):
        rig.cycle(rig.q + 0.001)
    rig.f.disarm()
    rig.now -= 50.0  # e.g. the simulator restarted its clock
    rig.f.arm(rig.now)  # 0.8 s of the episode used: 0.2 s left
    assert not rig.cycle(rig.q + 0.001).held
    res = rig.cycle(rig.q + 0.001, dt=0.15)
    assert res.reasons == (Reason.EPISODE_TIME_LIMIT,)


def test_all_faults_of_a_cycle_are_reported():
    rig = Rig()
    res = rig.cycle(np.full(7, np.nan), image_age=1.0, joint_age=1.0, gripper=math.inf)
    assert set(res.reasons) == {
        Reason.STALE_IMAGE,
        Reason.STALE_JOINT_STATE,
        Reason.NONFINITE_TARGET,
        Reason.NONFINITE_GRIPPER,
    }


# ---------------------------------------------------------------------------------- limits


BIG_BOX = {"workspace_min": (-2.0, -2.0, -2.0), "workspace_max": (2.0, 2.0, 2.0)}


def test_position_limits_with_margin():
    params = SafetyParams(joint_margin_rad=0.1, **BIG_BOX)
    rig = Rig(params)
    rig.q = READY.copy()
    rig.q[0] = HARD_HI[0] - 0.15
    res = rig.cycle(np.r_[HARD_HI[0] + 0.02, rig.q[1:]])
    assert Reason.POSITION_CLIPPED in res.reasons
    assert not res.held
    assert res.command[0] == pytest.approx(HARD_HI[0] - 0.1)


def test_arm_inside_the_margin_only_moves_back_inwards():
    params = SafetyParams(joint_margin_rad=0.1, **BIG_BOX)
    rig = Rig(params)
    rig.q = READY.copy()
    rig.q[3] = HARD_HI[3] - 0.01  # joint 4 already inside the margin band
    res = rig.cycle(np.r_[rig.q[:3], HARD_HI[3], rig.q[4:]])
    assert not res.held
    assert res.command[3] <= rig.q[3] + 1e-12 or res.command[3] <= HARD_HI[3] - 0.1
    assert res.command[3] >= HARD_HI[3] - 0.1 - 1e-12  # one bounded step towards the inside
    assert res.command[3] < HARD_HI[3] - 0.01


def test_joint_state_slightly_beyond_the_limit_is_read_as_at_the_limit():
    rig = Rig()
    q = READY.copy()
    q[1] = HARD_HI[1] + 0.01  # within the 0.02 rad tolerance
    res = rig.cycle(q, q=q)
    assert res.command is not None
    assert res.command[1] <= HARD_HI[1]


def test_step_is_scaled_as_a_whole_to_the_velocity_bound():
    params = SafetyParams(velocity_scale=0.2, max_step_rad=1.0)
    bound = np.array(FR3_JOINT_VELOCITY_MAX) * 0.2 * 0.1
    np.testing.assert_allclose(params.step_bound(), bound)
    rig = Rig(params)
    delta = np.array([0.2, 0.1, 0.0, -0.1, 0.3, 0.0, 0.05])
    res = rig.cycle(READY + delta)
    assert Reason.STEP_CLIPPED in res.reasons
    assert not res.held
    step = res.command - READY
    assert np.all(np.abs(step) <= bound + 1e-12)
    # Same direction, scaled so the tightest joint sits exactly at its bound.
    np.testing.assert_allclose(step / np.linalg.norm(step), delta / np.linalg.norm(delta), atol=1e-12)
    assert np.any(np.isclose(np.abs(step), bound))


def test_absolute_step_cap():
    rig = Rig(SafetyParams(max_step_rad=0.03))
    res = rig.cycle(READY + 0.2)
    assert np.max(np.abs(res.command - READY)) == pytest.approx(0.03)


def test_gripper_is_clipped_and_withheld_on_hold():
    rig = Rig()
    res = rig.cycle(gripper=3.0)
    assert res.gripper == 1.0
    assert Reason.GRIPPER_CLIPPED in res.reasons
    rig.f.disarm()
    assert rig.cycle(gripper=0.5).gripper is None


# ---------------------------------------------------------------------------------- workspace


def test_workspace_exit_holds_but_stays_armed():
    z_ready = kin.ee_position(READY)[2]
    params = SafetyParams(workspace_max=(0.85, 0.5, z_ready + 0.005))
    rig = Rig(params)
    up = kin.ee_delta_to_joint_target(READY, [0, 0, 0.02]).q_target
    res = rig.cycle(up)
    assert res.held
    assert res.armed
    assert res.reasons == (Reason.WORKSPACE_EXIT,)
    assert "workspace" in res.events[0].message
    np.testing.assert_array_equal(res.command, READY)
    down = kin.ee_delta_to_joint_target(READY, [0, 0, -0.02]).q_target
    assert not rig.cycle(down).held


def test_outside_the_workspace_moving_back_is_allowed_moving_further_is_not():
    z_ready = kin.ee_position(READY)[2]
    params = SafetyParams(workspace_max=(0.85, 0.5, z_ready - 0.05))  # the ready pose is 5 cm above
    rig = Rig(params)
    down = kin.ee_delta_to_joint_target(READY, [0, 0, -0.02]).q_target
    assert not rig.cycle(down).held
    up = kin.ee_delta_to_joint_target(rig.q, [0, 0, 0.02]).q_target
    assert rig.cycle(up).reasons == (Reason.WORKSPACE_EXIT,)


# ---------------------------------------------------------------------------------- hold


def test_hold_is_latched_and_relatched_when_far():
    rig = Rig(arm=False)
    first = rig.cycle().command.copy()
    sag = rig.q.copy()
    sag[1] += 0.01  # the arm sags a little under a position controller
    np.testing.assert_array_equal(rig.cycle(q=sag).command, first)
    moved = rig.q.copy()
    moved[1] += 0.5  # moved far away by hand: hold where it is now, not a jump back
    np.testing.assert_array_equal(rig.cycle(q=moved).command, moved)


# ---------------------------------------------------------------------------------- params


def test_params_validation_and_from_dict():
    assert SafetyParams.from_dict({"image_timeout_s": 0.5}).image_timeout_s == 0.5
    with pytest.raises(ValueError, match="unknown safety parameters"):
        SafetyParams.from_dict({"image_timeout": 0.5})
    for bad in (
        {"velocity_scale": 0.0},
        {"velocity_scale": 1.5},
        {"max_step_rad": -1.0},
        {"image_timeout_s": math.nan},
        {"joint_margin_rad": 5.0},
        {"workspace_min": (1.0, 0.0, 0.0), "workspace_max": (0.5, 1.0, 1.0)},
        {"workspace_min": (0.0, 0.0)},
        {"workspace_max": (math.inf, 0.5, 0.8)},
        {"workspace_min": (-math.inf, -0.5, 0.02)},
        {"tcp_offset_m": math.nan},
        {"tcp_offset_m": -0.1},
        {"episode_time_limit_s": math.inf},
        {"joint_state_timeout_s": 0.0},
    ):
        with pytest.raises(ValueError, match=r"safety parameter|workspace"):
            SafetyParams(**bad)


def test_reason_groups_partition_the_codes():
    assert set(Reason) == HOLD_REASONS | ADJUSTMENT_REASONS | FAULT_REASONS
    assert not (HOLD_REASONS & FAULT_REASONS)
    assert not (ADJUSTMENT_REASONS & FAULT_REASONS)
    assert len({r.value for r in Reason}) == len(Reason)


# ---------------------------------------------------------------------------------- fuzz


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _adversarial_target(rng, q, lo, hi, calm):
    # Calm spells keep to targets that are no fault (they may still need clipping or hit the box).
    kind = _pick(rng, [0, 1, 2, 3, 10, 11]) if calm else rng.integers(12)
    if kind <= 2:
        return q + rng.normal(0, 0.03, 7)
    if kind == 3:
        a = rng.uniform(-1.2, 1.2, 4)
        return kin.action_to_joint_target(q, a, config=kin.IKConfig(joint_margin_rad=0.0)).q_target
    if kind == 4:
        return q + rng.normal(0, 0.2, 7)  # needs step clipping
    if kind == 5:
        return q + rng.uniform(-3, 3, 7)  # jumps
    if kind == 6:
        t = q.copy()
        t[rng.integers(7)] = rng.choice([1e9, -1e9, 1e300, -1e300, 1e-300])
        return t
    if kind == 7:
        t = q.copy()
        t[rng.integers(7, size=rng.integers(1, 4))] = rng.choice([np.nan, np.inf, -np.inf])
        return t
    if kind == 8:
        return _pick(rng, [None, q[:6], np.r_[q, 0.0], np.float64(0.3), np.tile(q, (2, 1)), "seven", ["x"] * 7])
    if kind == 9:  # just beyond a limit, near the current position
        t = q.copy()
        j = rng.integers(7)
        t[j] = (hi[j] if rng.random() < 0.5 else lo[j]) + rng.uniform(-0.08, 0.08)
        return t
    return q + rng.normal(0, 0.005, 7)


def _adversarial_stamp(rng, now, last, nominal_age, calm):
    kind = 99 if calm else rng.integers(24)
    if kind == 0:
        return now - rng.uniform(0.3, 5.0)  # stale
    if kind == 1:
        return now + rng.uniform(0.06, 3.0)  # from the future
    if kind == 2:
        return (last if last is not None else now) - rng.uniform(0.01, 1.0)  # out of order
    if kind == 3:
        return _pick(rng, [None, np.nan, np.inf, -np.inf])
    return now - rng.uniform(0, nominal_age)


def _fuzz_params() -> SafetyParams:
    """A workspace box the fuzz's targets leave now and then, and a time limit its calm spells reach."""
    z_ready = kin.ee_position(READY)[2]
    return SafetyParams(
        workspace_min=(0.2, -0.25, z_ready - 0.15),
        workspace_max=(0.6, 0.25, z_ready + 0.1),
        episode_time_limit_s=5.0,
    )


class _FilterFuzz:
    """The filter fuzz's world (the filter, the arm it commands, the clock, the last stamps sent)
    and tallies of what the filter did. Each cycle: `draw_cycle`, the filter, then `check`."""

    def __init__(self, rng, params: SafetyParams) -> None:
        self.rng = rng
        self.params = params
        self.f = SafetyFilter(params)
        self.bound = params.step_bound()
        self.lo_m, self.hi_m = HARD_LO + params.joint_margin_rad, HARD_HI - params.joint_margin_rad
        self.ws_lo, self.ws_hi = np.array(params.workspace_min), np.array(params.workspace_max)
        self.q = READY.copy()  # where the arm really is
        self.now = 0.0
        self.last_img = self.last_js = None
        self.seen: dict[Reason, str] = {}
        self.passed = self.held_armed = 0
        self.input_faults = 0

    def outside(self, qq) -> float:
        """How far [m] the end effector at `qq` is outside the workspace box (0 inside)."""
        p = kin.forward_kinematics(qq, tcp_offset_m=self.params.tcp_offset_m)[:3, 3]
        return float(np.linalg.norm(p - np.clip(p, self.ws_lo, self.ws_hi)))

    def _measure(self, calm: bool):
        """Time mostly advances; the arm tracks the last command with noise, is sometimes pushed or
        teleported, and the joint state is sometimes corrupt. Returns the measured joint state."""
        rng = self.rng
        self.now += 0.1 if calm else rng.choice([0.1, 0.0, 0.35, -0.7], p=[0.97, 0.01, 0.01, 0.01])
        if rng.random() < 0.01 and not calm:
            self.q = rng.uniform(HARD_LO, HARD_HI)
        self.q = np.clip(self.q + rng.normal(0, 0.002, 7), HARD_LO - 0.03, HARD_HI + 0.03)
        q_meas = self.q
        if rng.random() < 0.01 and not calm:
            beyond = self.q.copy()
            beyond[rng.integers(7)] = rng.choice([-1, 1]) * rng.uniform(3.1, 10.0)  # beyond any FR3 limit
            q_meas = _pick(rng, [np.full(7, np.nan), self.q[:6], np.r_[self.q[:6], np.inf], beyond])
        return q_meas

    def draw_cycle(self, calm: bool) -> tuple[dict, bool]:
        """Advances the world by one cycle (arming and disarming the filter now and then) and draws
        the filter's adversarial inputs. Returns them and whether the filter was armed before."""
        rng, f = self.rng, self.f
        q_meas = self._measure(calm)
        if rng.random() < (0.05 if calm else 0.3) and not f.armed:
            f.new_episode()  # an operator starting the next episode
            f.arm(self.now if math.isfinite(self.now) else 0.0)
        if rng.random() < 0.005:
            f.disarm()
        now_in = np.nan if rng.random() < 0.002 and not calm else self.now
        img = _adversarial_stamp(rng, self.now, self.last_img, 0.05, calm)
        js = _adversarial_stamp(rng, self.now, self.last_js, 0.02, calm)
        self.last_img = img if img is not None and np.isfinite(img) else self.last_img
        self.last_js = js if js is not None and np.isfinite(js) else self.last_js
        gripper = _pick(rng, [None, rng.normal(0, 2), 0.3] if calm else [None, rng.normal(0, 2), np.nan, 0.3])
        was_armed = f.armed
        target = _adversarial_target(rng, np.clip(self.q, HARD_LO, HARD_HI), self.lo_m, self.hi_m, calm)
        inputs = {
            "joint_positions": q_meas,
            "target": target,
            "now": now_in,
            "image_stamp": img,
            "joint_state_stamp": js,
            "gripper": gripper,
        }
        if rng.random() < 0.005 and not calm:
            # The callers' input faults in turn (no draw: the rest of the stream stays the same).
            self.input_faults += 1
            inputs["input_fault"] = (
                Event(Reason.BAD_ACTION_SHAPE, "action has shape (8,), expected (4,)")
                if self.input_faults % 2
                else Event(Reason.OUT_OF_DISTRIBUTION, "observation out of distribution: OOD score 9.0 > 3.0")
            )
        return inputs, was_armed

    def check(self, res, q_meas, was_armed: bool) -> None:
        """One cycle's invariants, then the arm tracks what it was sent (unless it was a hold)."""
        for e in res.events:
            assert e.message, e
            self.seen.setdefault(e.reason, e.message)
        if res.command is None:
            assert res.held
            assert res.reasons
            assert res.reasons[-1] != Reason.WORKSPACE_EXIT
            assert {Reason.BAD_JOINT_STATE, Reason.JOINT_STATE_OUT_OF_LIMITS} & set(res.reasons)
            return
        self._check_command(res, np.clip(np.asarray(q_meas, dtype=float), HARD_LO, HARD_HI), was_armed)
        self.q = res.command if not res.held else self.q  # the controller tracks what it was sent

    def _check_command(self, res, current: np.ndarray, was_armed: bool) -> None:
        """The invariants of a cycle that sent a command, `current` being the measured position."""
        cmd = res.command
        assert cmd.shape == (7,)
        assert np.all(np.isfinite(cmd))
        assert np.all(cmd >= HARD_LO), (cmd, res.events)
        assert np.all(cmd <= HARD_HI), (cmd, res.events)
        assert np.all(np.abs(cmd - current) <= self.bound + 1e-9), (cmd - current, res.events)
        # Policy commands stay inside the margin unless the arm stands in it (then they move
        # back); holds may keep a position the arm had one step ago.
        inside_margin = np.all((current >= self.lo_m) & (current <= self.hi_m))
        if inside_margin and not res.held:
            assert np.all(cmd >= self.lo_m - 1e-12)
            assert np.all(cmd <= self.hi_m + 1e-12)
        assert res.gripper is None or -1.0 <= res.gripper <= 1.0
        if any(r in FAULT_REASONS for r in res.reasons):
            assert res.held
            assert not res.armed
        if res.held:
            self.held_armed += was_armed
        else:
            self.passed += 1
            assert was_armed
            assert res.armed
            assert not any(r in FAULT_REASONS or r in HOLD_REASONS for r in res.reasons)
            assert self.outside(cmd) <= max(self.outside(current), 0.0) + 1e-9


def test_fuzz_10000_adversarial_cycles_never_command_outside_the_limits():
    fuzz = _FilterFuzz(np.random.default_rng(20250919), _fuzz_params())
    for i in range(10_000):
        calm = (i // 200) % 2 == 1  # alternate storms with calm spells long enough to reach the time limit
        inputs, was_armed = fuzz.draw_cycle(calm)
        res = fuzz.f.filter(**inputs)
        fuzz.check(res, inputs["joint_positions"], was_armed)

    missing = set(Reason) - set(fuzz.seen)
    assert not missing, f"refusal kinds never exercised: {sorted(missing)}"
    assert fuzz.passed > 500, fuzz.passed
    assert fuzz.held_armed > 500, fuzz.held_armed
    st = fuzz.f.status()
    assert sum(st.counts.values()) >= len(Reason)
    assert set(st.counts) == {r.value for r in Reason}

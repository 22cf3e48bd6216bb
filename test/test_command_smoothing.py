"""Continuous arm commands (issue 16, real-arm readiness): the command path with its jerk-limited
smoothing keeps every successive command within the FR3's velocity, acceleration and jerk limits
times the robot profile's scales, whatever the policy does.

The property test runs the real command path (IK, smoothing, safety filter) with the franka
profile's safety parameters at its control rate for 10,000 cycles of adversarial policy outputs:
full-scale sign flips, full-speed runs ended by a missing decision, a NaN burst, an operator's
disarm or the input watchdog, smooth policy-like stretches, pushes into the workspace box and the
joint limits, and re-arming by an operator, mid-stop included. The arm follows each command (a
trajectory controller reaches the point one period ahead, so the next cycle measures it), with
encoder noise. What the controller receives is checked as it receives it: the positions of every
cycle (a cycle that sends nothing leaves the last command in force) by finite differences, and
every message both command modes would publish (command_messages.command_message).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml

from world4rl_policy import fr3_kinematics
from world4rl_policy.command_messages import command_message
from world4rl_policy.command_path import CommandPath
from world4rl_policy.safety_filter import Reason, SafetyParams
from world4rl_spec import (
    CONTROL_RATE_HZ,
    FR3_JOINT_ACCELERATION_MAX,
    FR3_JOINT_JERK_MAX,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_JOINT_VELOCITY_MAX,
    FR3_READY_POSE,
)

PROFILES = Path(__file__).resolve().parents[1] / "src" / "world4rl_bringup" / "config" / "robots"
READY = np.array(FR3_READY_POSE)
LO, HI = np.array(FR3_JOINT_POSITION_MIN), np.array(FR3_JOINT_POSITION_MAX)
CYCLES = 10_000
# Float rounding allowance on the limits (relative).
RTOL = 1e-6


def franka_profile() -> tuple[SafetyParams, float]:
    """The franka profile's safety parameters and control period (its rate, or the default)."""
    node = yaml.safe_load((PROFILES / "franka.yaml").read_text())["/**"]["ros__parameters"]
    period = 1.0 / float(node.get("control_rate_hz", CONTROL_RATE_HZ))
    values = {k.removeprefix("safety."): v for k, v in node.items() if k.startswith("safety.")}
    # Long episodes: this test re-arms after faults, it does not start new episodes.
    return SafetyParams.from_dict({**values, "control_period_s": period, "episode_time_limit_s": 1e6}), period


def fr3_limits(params: SafetyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity, acceleration and jerk bounds straight from the datasheet values and the scales."""
    velocity = np.minimum(
        np.array(FR3_JOINT_VELOCITY_MAX) * params.velocity_scale, params.max_step_rad / params.control_period_s
    )
    return (
        velocity,
        np.array(FR3_JOINT_ACCELERATION_MAX) * params.acceleration_scale,
        np.array(FR3_JOINT_JERK_MAX) * params.jerk_scale,
    )


@dataclass
class Episode:
    """What the adversary does next: a behaviour and how many cycles it lasts."""

    kind: str = "policy"
    left: int = 0
    direction: np.ndarray = field(default_factory=lambda: np.zeros(3))


class Adversary:
    """Policy outputs, input stamps and operator actions, chosen by a seeded generator."""

    KINDS: ClassVar[dict[str, float]] = {
        "policy": 0.25,
        "flip": 0.25,
        "full": 0.25,
        "corner": 0.05,
        "nan": 0.05,
        "none": 0.05,
        "disarm": 0.05,
        "stale": 0.05,
    }

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.episode = Episode()
        self.action = np.zeros(4)
        self.last_input = 0.0
        self.flip_sign = 1.0

    def next_episode(self) -> None:
        rng = self.rng
        kind = rng.choice(list(self.KINDS), p=list(self.KINDS.values()))
        direction = rng.choice([-1.0, 0.0, 1.0], 3)
        if not np.any(direction):
            direction[rng.integers(3)] = 1.0
        if kind == "corner":  # back and down at full speed, long enough to fold the elbow to its limit
            self.episode = Episode(kind, int(rng.integers(30, 60)), np.array([-1.0, 0.0, -1.0]))
            return
        # Full-speed stretches come first when a hold is next: the hold then starts from speed.
        self.episode = Episode(
            kind, int(rng.integers(1, 4) if kind in ("nan", "disarm") else rng.integers(3, 25)), direction
        )

    def decide(self, t: float, period: float):
        """(action or None, input stamp, operator disarms now)."""
        if self.episode.left <= 0:
            self.next_episode()
        ep, rng = self.episode, self.rng
        ep.left -= 1
        if ep.kind == "stale":  # the camera died: no decision, the watchdog trips
            return None, self.last_input, False
        self.last_input = t - rng.uniform(0.0, 0.3 * period)
        gripper = rng.choice([-1.0, 1.0])
        if ep.kind == "policy":
            self.action[:3] = np.clip(self.action[:3] + rng.normal(0, 0.3, 3), -1, 1)
            return np.append(self.action[:3], gripper), self.last_input, False
        if ep.kind == "flip":  # saturated sign flips every cycle
            self.flip_sign = -self.flip_sign
            return np.append(self.flip_sign * ep.direction, gripper), self.last_input, False
        if ep.kind in ("full", "corner"):
            return np.append(ep.direction, gripper), self.last_input, False
        if ep.kind == "nan":
            bad = np.append(ep.direction, gripper)
            bad[rng.integers(4)] = rng.choice([np.nan, np.inf, -np.inf])
            return bad, self.last_input, False
        if ep.kind == "none":
            return None, self.last_input, False
        return np.append(ep.direction, gripper), self.last_input, ep.left == 0  # "disarm"


@dataclass
class Record:
    commands: list = field(default_factory=list)  # per cycle: the position in force at the controller
    segments: list = field(default_factory=lambda: [0])  # cycle indices where the arm was re-homed by hand
    speeds_at_hold: list = field(default_factory=list)  # the speed a hold started from (|v| / V, worst joint)
    reasons: set = field(default_factory=set)
    messages: int = 0


def check_messages(cycle, period: float, limits) -> None:
    """Both command modes' messages for a sent cycle: the trajectory ends at rest, stays in the joint
    limits and within the velocity and acceleration bounds; forward_position carries the positions."""
    velocity, acceleration, _ = limits
    command = cycle.result.command
    forward = command_message("forward_position", command, cycle.motion, period)
    np.testing.assert_array_equal(forward.data, command)
    msg = command_message("trajectory", command, cycle.motion, period)
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    assert times[0] == pytest.approx(period)
    assert all(b > a for a, b in itertools.pairwise(times))
    np.testing.assert_array_equal(msg.points[0].positions, command)
    for point in msg.points:
        assert len(point.velocities) == len(point.accelerations) == 7
        assert np.all(np.abs(point.velocities) <= velocity * (1 + RTOL))
        assert np.all(np.abs(point.accelerations) <= acceleration * (1 + RTOL))
        assert np.all((point.positions >= LO) & (point.positions <= HI))
    assert not np.any(msg.points[-1].velocities)
    assert not np.any(msg.points[-1].accelerations)


def run_adversary(params: SafetyParams, period: float, seed: int, cycles: int) -> Record:
    rng = np.random.default_rng(seed)
    path = CommandPath(params)
    limits = fr3_limits(params)
    adversary = Adversary(rng)
    record = Record()
    q = READY.copy()  # the arm, as measured
    in_force = READY.copy()  # the last command the controller received
    t, moving = 100.0, 0.0
    path.arm(t, q)
    for k in range(cycles):
        t += period
        action, input_stamp, disarm = adversary.decide(t, period)
        if disarm:
            path.disarm()
        cycle = path.step(joint_positions=q, action=action, now=t, input_stamp=input_stamp, joint_state_stamp=t - 0.002)
        record.reasons.update(cycle.result.reasons)
        if cycle.result.held or action is None:
            record.speeds_at_hold.append(moving)  # the speed this hold started from
        if cycle.send_arm_command:
            in_force = cycle.result.command.copy()
            moving = float(np.max(np.abs(cycle.motion.velocity) / limits[0]))
            check_messages(cycle, period, limits)
            record.messages += 1
        record.commands.append(in_force)
        # The controller reached the command (encoder noise aside) by the next cycle.
        q = in_force + rng.normal(0.0, 1e-5, 7)
        if not path.armed and rng.random() < 0.3:
            if rng.random() < 0.02 and not cycle.send_arm_command:
                # The operator guides the disarmed, resting arm back to the ready pose by hand.
                q = in_force = READY + rng.normal(0.0, 0.01, 7)
                record.segments.append(k + 1)
            path.arm(t, q)
    return record


def worst_ratios(record: Record, period: float, limits) -> tuple[float, float, float]:
    """Worst |finite difference| / limit of the commands in force, per derivative, over all segments."""
    worst = [0.0, 0.0, 0.0]
    commands = np.array(record.commands)
    bounds = [*record.segments, len(commands)]
    for start, end in itertools.pairwise(bounds):
        signal = commands[start:end]
        for order in range(3):
            signal = np.diff(signal, axis=0) / period
            if len(signal):
                worst[order] = max(worst[order], float(np.max(np.abs(signal) / limits[order])))
    return tuple(worst)


def test_1000_adversarial_cycles_keep_every_command_within_the_fr3_limits():
    """The quick version of the property test below (make test-fast), another seed."""
    params, period = franka_profile()
    record = run_adversary(params, period, seed=3, cycles=1000)
    assert max(worst_ratios(record, period, fr3_limits(params))) <= 1 + RTOL


@pytest.mark.slow  # ~15 s: 10,000 cycles of IK, smoothing and filter, and two messages per command
def test_10000_adversarial_cycles_keep_every_command_within_the_fr3_limits():
    params, period = franka_profile()
    limits = fr3_limits(params)
    record = run_adversary(params, period, seed=16, cycles=CYCLES)

    velocity, acceleration, jerk = worst_ratios(record, period, limits)
    print(
        f"worst |v|/V {velocity:.6f}, |a|/A {acceleration:.6f}, |j|/J {jerk:.6f}; {record.messages} commands, "
        f"{len(record.speeds_at_hold)} hold cycles (from up to {max(record.speeds_at_hold):.2f} V), "
        f"{len(record.segments) - 1} re-homings; reasons {sorted(record.reasons)}"
    )
    assert velocity <= 1 + RTOL
    assert acceleration <= 1 + RTOL
    assert jerk <= 1 + RTOL
    # The adversary did its job: the arm ran near the velocity bound and the accelerations at theirs,
    # holds began at speed, and every kind of hold and fault happened.
    assert velocity > 0.7
    assert acceleration > 0.99
    assert record.messages > 0.6 * CYCLES
    assert sum(s > 0.5 for s in record.speeds_at_hold) > 50
    assert {Reason.NONFINITE_TARGET, Reason.STALE_IMAGE, Reason.DISARMED, Reason.WORKSPACE_EXIT} <= record.reasons
    # ... and it ran the arm into a joint limit (the IK keeps its targets at the margin, where the filter's
    # position clip would otherwise act).
    commands = np.array(record.commands)
    at_limit = (commands <= LO + params.joint_margin_rad + 1e-3) | (commands >= HI - params.joint_margin_rad - 1e-3)
    assert at_limit.any(axis=1).sum() > 20


def tcp_x(q) -> float:
    return float(fr3_kinematics.forward_kinematics(q)[0, 3])


def test_late_and_early_cycles_stay_on_one_continuous_trajectory():
    """Cycles at irregular times (the action executor runs one per demonstrated action; a loaded
    machine delays others): a late cycle continues from the stop the controller followed since the
    last command's time, so the commands, at their times, are samples of one trajectory within the
    limits (divided differences: mean velocity, and twice the second divided difference, which
    equals an acceleration the trajectory had)."""
    params, period = franka_profile()
    velocity, acceleration, _ = fr3_limits(params)
    rng = np.random.default_rng(7)
    path = CommandPath(params)
    q, t = READY.copy(), 50.0
    path.arm(t, q)
    times, commands = [t], [q.copy()]
    start_x, sign = tcp_x(q), 1.0
    for k in range(400):
        t += period * rng.choice([0.3, 0.7, 1.0, 1.0, 1.6, 2.5])
        # Full speed to and fro along x, turning 8 cm either side of the start; a pause now and then.
        sign = -1.0 if tcp_x(q) > start_x + 0.08 else 1.0 if tcp_x(q) < start_x - 0.08 else sign
        action = None if k % 40 >= 36 else [sign, 0.0, 0.0, 1.0]
        cycle = path.step(joint_positions=q, action=action, now=t, input_stamp=t - 0.01, joint_state_stamp=t - 0.002)
        assert cycle.send_arm_command, cycle.result.events
        assert cycle.result.armed, cycle.result.events
        q = cycle.result.command
        times.append(t)
        commands.append(q.copy())
    times, commands = np.array(times), np.array(commands)
    mean_velocity = np.diff(commands, axis=0) / np.diff(times)[:, None]
    assert np.all(np.abs(mean_velocity) <= velocity * (1 + RTOL))
    spans = (times[2:] - times[:-2])[:, None] / 2
    assert np.all(np.abs(np.diff(mean_velocity, axis=0) / spans) <= acceleration * (1 + RTOL))
    assert np.max(np.abs(mean_velocity) / velocity) > 0.5  # it did move fast


def test_without_smoothing_the_command_is_the_checked_target():
    """The benchmark's baseline (CommandPathParams(smoothing=False)): the filter's own output, one
    position per cycle, as before smoothing existed."""
    from world4rl_policy.command_path import CommandPathParams

    params, _ = franka_profile()
    plain = CommandPath(params, params=CommandPathParams(smoothing=False))
    plain.arm(0.0, READY)
    cycle = plain.step(joint_positions=READY, action=[1.0, 0, 0, 1], now=0.1, input_stamp=0.09, joint_state_stamp=0.1)
    assert cycle.send_arm_command
    assert cycle.motion is None
    # A full step at once (the 2 cm TCP step's IK target), where the smoothed path starts gently.
    smooth = CommandPath(params)
    smooth.arm(0.0, READY)
    first = smooth.step(joint_positions=READY, action=[1.0, 0, 0, 1], now=0.1, input_stamp=0.09, joint_state_stamp=0.1)
    _, acceleration, _ = fr3_limits(params)
    assert np.all(np.abs(first.result.command - READY) <= acceleration * 0.1**2 / 2 * (1 + RTOL))
    assert np.max(np.abs(cycle.result.command - READY)) > 2 * np.max(np.abs(first.result.command - READY))
    msg = command_message("trajectory", cycle.result.command, None, 0.1)
    assert len(msg.points) == 1
    assert not msg.points[0].velocities

"""Continuous arm commands: jerk-limited joint-space smoothing with ruckig. ROS-free.

Why: libfranka checks every commanded joint signal against the FR3's velocity, acceleration and
jerk limits and aborts the motion (a reflex error) when one is exceeded; franka_ros2's answer to
its most common complaint is "send a continuous command signal". Bounding each command against
the measured position alone (the safety filter's step bound) is not enough: two successive
commands may differ by twice the step, a sign flip of the policy asks for accelerations far above
the FR3's 10 rad/s^2, and a hold that commands the measured position stops a moving arm at once.

What: `JointSmoother` keeps the state (position, velocity, acceleration) of the last command
sent and moves it along ruckig's time-optimal, jerk-limited trajectories (ruckig, the maintained
online trajectory generator), so every command lies on one continuous trajectory whose velocity,
acceleration and jerk stay within the limits of `SafetyParams.motion_limits()` (the FR3's
published limits, world4rl_spec, times the robot profile's scales; the velocity limit is also the
safety filter's step bound, so a smoothed command is never step-clipped while the arm follows).
It is the safety filter's shaper (SafetyFilter.filter(shaper=...)), so the filter stays the last
check of every command:

- `toward(target)`: a target the filter passed (inside the joint limits) is approached: the
  command is the state one cycle ahead on the fastest trajectory from the last commanded state to
  the target at rest. Aiming at rest never overshoots a target that stands still; a moving target
  is followed with a lag of about its braking distance (v^2 / 2a: ~1 cm of TCP at 0.2 m/s).
- `stop()`: a hold (a fault, a disarm, the workspace box, no decision) ramps down: the command is
  the state one cycle ahead on the fastest stop within the limits, from the last commanded state.
- `motion()`: the velocity and acceleration of the command sent, and the rest of its stop as
  trajectory points: a JointTrajectory carries them, so the controller follows the velocities
  instead of stopping at every point, and if no further command comes (a dead node, a fault that
  sends nothing) it brakes smoothly to rest. The last point is at rest, as Jazzy's joint
  trajectory controller requires (allow_nonzero_velocity_at_trajectory_end defaults to false).

Timing: the command computed at time t is the desired state at t + period (the trajectory
point's time_from_start). A cycle advances the trajectory by the time since the previous one;
when a cycle comes late, or one sent nothing, the controller meanwhile followed the stop of the
last command, so the next plan starts from that stop's state: the commands stay samples of one
continuous trajectory whatever the cycle timing.

The tradeoff of ramped holds: a fault no longer commands the measured position at once; the arm
stops within its braking distance (v^2 / 2a, e.g. 0.1 rad of joint 1 from the franka profile's
full 0.79 rad/s at 3 rad/s^2; ~1 cm of TCP at the policy's 0.2 m/s). That is what the real arm
would travel anyway: a commanded instant stop does not stop it faster, it makes libfranka abort
the motion (the robot then stops with its own reflex and needs an error recovery, and the episode
is lost). Each ramp point is still checked by the safety filter: within the hard joint limits and
one step of the measured position, falling back towards the measured position if the arm does
not follow; the workspace box is not re-checked while braking (refusing a braking point would
trade the ramp for exactly that abort). The emergency stop remains the robot's own (its stop
button, Franka's safety controller), which this software path never replaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ruckig import ControlInterface, InputParameter, Ruckig, RuckigError, Trajectory

NUM_JOINTS = 7
# Velocities [rad/s] and accelerations [rad/s^2] below these count as standing still (a stop from
# there moves less than a nanoradian), so a stop ends in a state that is exactly at rest.
VELOCITY_AT_REST = 1e-6
ACCELERATION_AT_REST = 1e-4
# A stop shorter than this [s] is not sent as trajectory points (their times must differ).
MIN_STOP_S = 1e-6


@dataclass
class Motion:
    """The dynamic part of a command, for controllers that take more than a position."""

    velocity: np.ndarray  # [7] rad/s at the command's time
    acceleration: np.ndarray  # [7] rad/s^2
    # The stop from the command (where the arm goes if no further command comes): times after
    # the command's time [s], [N]; positions, velocities, accelerations [N, 7]; the last at rest.
    stop_times: np.ndarray
    stop_positions: np.ndarray
    stop_velocities: np.ndarray
    stop_accelerations: np.ndarray


def _resting(velocity: np.ndarray, acceleration: np.ndarray) -> bool:
    return bool(np.all(np.abs(velocity) <= VELOCITY_AT_REST) and np.all(np.abs(acceleration) <= ACCELERATION_AT_REST))


def _input(velocity, acceleration, jerk, interface) -> InputParameter:
    inp = InputParameter(NUM_JOINTS)
    inp.control_interface = interface
    inp.max_velocity = velocity
    inp.max_acceleration = acceleration
    inp.max_jerk = jerk
    inp.target_velocity = np.zeros(NUM_JOINTS)
    inp.target_acceleration = np.zeros(NUM_JOINTS)
    return inp


class JointSmoother:
    """Jerk-limited smoothing of successive joint commands (see the module docstring).

    Per control cycle: `begin(now)`, then the safety filter calls `toward(target)` and/or `stop()`,
    then `commit(sent)` with the command that was sent (if one was)."""

    def __init__(self, velocity, acceleration, jerk, period_s: float, position_min, position_max):
        self.limits = tuple(np.asarray(v, dtype=np.float64).copy() for v in (velocity, acceleration, jerk))
        if any(v.shape != (NUM_JOINTS,) or not np.all(np.isfinite(v) & (v > 0)) for v in self.limits):
            raise ValueError(f"smoothing limits must be 3 x {NUM_JOINTS} positive numbers, got {self.limits}")
        if not (math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"smoothing period must be a positive number of seconds, got {period_s!r}")
        self.period_s = float(period_s)
        self._lo = np.asarray(position_min, dtype=np.float64)
        self._hi = np.asarray(position_max, dtype=np.float64)
        self._otg = Ruckig(NUM_JOINTS)
        self._trajectory = Trajectory(NUM_JOINTS)
        self._move = _input(*self.limits, ControlInterface.Position)
        self._brake = _input(*self.limits, ControlInterface.Velocity)
        # The committed state: the last command sent, for time `_time` + period.
        self.position: np.ndarray | None = None
        self.velocity = np.zeros(NUM_JOINTS)
        self.acceleration = np.zeros(NUM_JOINTS)
        self._time: float | None = None
        # This cycle: the state the plans start from, how far ahead they are sampled, and the
        # state of the last command proposed (toward or stop).
        self._base = (np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS))
        self._dt = 0.0
        self._now: float | None = None
        self._proposed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        return self.position is not None

    @property
    def at_rest(self) -> bool:
        return _resting(self.velocity, self.acceleration)

    def reset(self, position, now: float) -> None:
        """Stand still at `position` (the measured one when arming): the desired state at `now`."""
        self.position = np.array(position, dtype=np.float64)
        self.velocity = np.zeros(NUM_JOINTS)
        self.acceleration = np.zeros(NUM_JOINTS)
        self._time = float(now) - self.period_s

    def begin(self, now: float) -> None:
        """Start a cycle at `now`: where the plans start and how far ahead they are sampled."""
        try:
            now = float(now)
        except (TypeError, ValueError):
            now = math.nan  # the safety filter faults on such a clock; the stop still ramps
        state = (self.position, self.velocity, self.acceleration)
        elapsed = now - self._time if self._time is not None else self.period_s
        if not math.isfinite(elapsed) or elapsed < 0.0:
            elapsed = self.period_s  # a clock that ran backwards tells nothing: assume one period
        if elapsed > self.period_s:
            # Late: since the last command's time the controller has been following its stop.
            state = self._sample_stop(state, elapsed - self.period_s)
            elapsed = self.period_s
        self._base, self._dt, self._now = state, elapsed, now
        self._proposed = None

    # ------------------------------------------------------------------ proposals (the filter's shaper)
    def toward(self, target: np.ndarray) -> np.ndarray:
        """The command one cycle ahead on the fastest jerk-limited way from the last commanded
        state to `target` at rest; a ramped stop if ruckig finds no way."""
        p, v, a = self._base
        if self._dt <= 0.0:
            self._proposed = self._base
            return p.copy()
        inp = self._move
        inp.current_position, inp.current_velocity, inp.current_acceleration = p, v, a
        inp.target_position = target
        try:
            self._otg.calculate(inp, self._trajectory)
        except RuckigError:
            return self.stop()
        self._proposed = self._at(min(self._dt, self._trajectory.duration))
        return self._proposed[0].copy()

    def stop(self) -> np.ndarray:
        """The command one cycle ahead on the fastest stop within the limits (a ramped hold)."""
        self._proposed = self._sample_stop(self._base, self._dt)
        return self._proposed[0].copy()

    def rest_position(self) -> np.ndarray:
        """Where the last commanded state comes to rest if it stops now."""
        return self._sample_stop(self._base, math.inf)[0]

    def commit(self, sent: np.ndarray) -> None:
        """The command `sent` this cycle (the filter's output, which may differ from the proposal
        if it had to bound it): the next cycle plans from it, with the proposal's velocity and
        acceleration."""
        _, v, a = self._proposed if self._proposed is not None else self._base
        self.position = np.array(sent, dtype=np.float64)
        if _resting(v, a):
            v, a = np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS)
        self.velocity, self.acceleration = np.array(v, dtype=np.float64), np.array(a, dtype=np.float64)
        self._time = self._now

    # ------------------------------------------------------------------ what the controller gets
    def motion(self) -> Motion:
        """The committed command's velocity and acceleration, and its stop sampled once per period
        (and at its end), inside the hard joint limits."""
        times, states = [], []
        velocity, acceleration = self.velocity.copy(), self.acceleration.copy()
        moving = not self.at_rest and self._plan_stop((self.position, self.velocity, self.acceleration))
        if moving and self._trajectory.duration < MIN_STOP_S:
            velocity[:], acceleration[:] = 0.0, 0.0  # as good as still: a point at rest
        elif moving:
            duration = self._trajectory.duration
            # One point per period and one at the end, at least 0.1 ms apart (strictly increasing times).
            n = max(1, math.ceil(duration / self.period_s - 1e-3))
            times = [min(k * self.period_s, duration) for k in range(1, n + 1)]
            states = [self._at(t) for t in times]
            states[-1] = (states[-1][0], np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS))
        empty = np.zeros((0, NUM_JOINTS))
        return Motion(
            velocity=velocity,
            acceleration=acceleration,
            stop_times=np.asarray(times, dtype=np.float64),
            stop_positions=np.clip([s[0] for s in states], self._lo, self._hi) if states else empty,
            stop_velocities=np.array([s[1] for s in states]) if states else empty,
            stop_accelerations=np.array([s[2] for s in states]) if states else empty,
        )

    # ------------------------------------------------------------------ ruckig
    def _at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, v, a = self._trajectory.at_time(t)
        return np.array(p), np.array(v), np.array(a)

    def _plan_stop(self, state) -> bool:
        inp = self._brake
        inp.current_position, inp.current_velocity, inp.current_acceleration = state
        try:
            self._otg.calculate(inp, self._trajectory)
        except RuckigError:
            return False
        return True

    def _sample_stop(self, state, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, v, a = state
        if dt <= 0.0 or _resting(v, a):
            return state
        if not self._plan_stop(state):
            # Cannot happen for finite states within the limits; standing still is the fallback.
            return p, np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS)
        duration = self._trajectory.duration
        if dt >= duration:
            return self._at(duration)[0], np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS)
        return self._at(dt)

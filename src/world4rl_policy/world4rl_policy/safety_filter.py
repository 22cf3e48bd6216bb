"""The safety filter between the policy and the arm. ROS-free: numbers in, a checked command out.

Every control cycle the runtime node hands it the measured arm joint positions, the joint target
the policy proposes, the stamps of the latest image and joint state, and the current time. The
filter returns the command to send, which is always

- inside the FR3 joint position limits (world4rl_spec), and inside them shrunk by a margin
  unless the arm already stands in the margin (then it only moves back towards the inside);
- within one control step's velocity bound of the measured position (FR3 velocity limits
  times a scale, and an absolute cap per step), so there is never a jump;
- with the end effector inside a Cartesian workspace box, or at least no further outside it
  than the arm already is;

or no command at all when the measured joint state itself cannot be trusted.

Faults (non-finite or malformed inputs, stale, future or out-of-order stamps, a clock running
backwards, a target jump, the episode time limit) hold position and disarm; only `arm()` clears
them. The episode time limit counts from the first arming of an episode, through disarms and
re-armings, until `new_episode()`: re-arming does not restart it. While disarmed the filter holds
position. Leaving the workspace holds position for that cycle but stays armed, so a policy that
pushes against the box is stopped without ending the episode. Every refusal and adjustment has a
machine-readable `Reason` and a human message.

Holding position means commanding the measured position at the moment the hold began (latched,
so gravity sag under a position controller does not accumulate), re-latched if the arm is ever
more than one step away from it.

With a shaper (the command path's jerk-limited smoother, world4rl_policy.smoothing), the filter
stays the last check of a continuous command signal: a target that passed the fault checks and
the joint-limit clip is handed to the shaper, and its shaped command is what the step bound, the
hard limits and the workspace box then judge; and a hold commands the shaper's ramped stop
instead of the latched position, bounded like any command to the hard limits and one step of the
measured position (so an arm that does not follow is still never commanded away from where it is);
the workspace box is not re-checked while braking (smoothing.py says why).
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from world4rl_model.config import from_known_fields
from world4rl_policy import fr3_kinematics
from world4rl_spec import (
    ACTION_HIGH,
    ACTION_LOW,
    CONTROL_RATE_HZ,
    FR3_JOINT_ACCELERATION_MAX,
    FR3_JOINT_JERK_MAX,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_JOINT_VELOCITY_MAX,
)

NUM_JOINTS = 7
# A tool point further than this beyond the flange is a typo, not a tool [m].
MAX_TCP_OFFSET_M = 0.5


class Reason(enum.StrEnum):
    """Why the filter refused or changed a command. The value is the machine-readable code."""

    # Holds that keep the filter armed.
    DISARMED = "disarmed"
    WORKSPACE_EXIT = "workspace_exit"
    # Faults: hold position and disarm until arm() is called again.
    BAD_JOINT_STATE = "bad_joint_state"
    JOINT_STATE_OUT_OF_LIMITS = "joint_state_out_of_limits"
    BAD_TARGET_SHAPE = "bad_target_shape"
    BAD_ACTION_SHAPE = "bad_action_shape"
    NONFINITE_TARGET = "nonfinite_target"
    NONFINITE_GRIPPER = "nonfinite_gripper"
    TARGET_JUMP = "target_jump"
    BAD_CLOCK = "bad_clock"
    NO_IMAGE = "no_image"
    NO_JOINT_STATE = "no_joint_state"
    STALE_IMAGE = "stale_image"
    STALE_JOINT_STATE = "stale_joint_state"
    IMAGE_FROM_FUTURE = "image_from_future"
    JOINT_STATE_FROM_FUTURE = "joint_state_from_future"
    IMAGE_OUT_OF_ORDER = "image_out_of_order"
    JOINT_STATE_OUT_OF_ORDER = "joint_state_out_of_order"
    EPISODE_TIME_LIMIT = "episode_time_limit"
    OUT_OF_DISTRIBUTION = "out_of_distribution"  # the runner's input_fault (world4rl_policy.ood), with ood.action hold
    # Adjustments: the command is sent, changed to fit the limits.
    POSITION_CLIPPED = "position_clipped"
    STEP_CLIPPED = "step_clipped"
    GRIPPER_CLIPPED = "gripper_clipped"


HOLD_REASONS = frozenset({Reason.DISARMED, Reason.WORKSPACE_EXIT})
ADJUSTMENT_REASONS = frozenset({Reason.POSITION_CLIPPED, Reason.STEP_CLIPPED, Reason.GRIPPER_CLIPPED})
FAULT_REASONS = frozenset(Reason) - HOLD_REASONS - ADJUSTMENT_REASONS


@dataclass(frozen=True)
class Event:
    reason: Reason
    message: str

    @property
    def is_fault(self) -> bool:
        return self.reason in FAULT_REASONS


@dataclass
class SafetyParams:
    """Safety filter settings (the runtime node loads them from its parameter YAML)."""

    # Joint position limits: targets are kept this far inside the FR3 limits [rad].
    joint_margin_rad: float = 0.05
    # A measured position this far beyond the FR3 limits is still read as "at the limit" (sensor
    # noise); further out the state is untrustworthy and nothing is commanded [rad].
    joint_state_limit_tolerance_rad: float = 0.02
    # Joint velocity bound: this fraction of the FR3 velocity limits, over one control period.
    velocity_scale: float = 0.5
    # Joint acceleration and jerk bounds of the command path's smoothing: these fractions of the
    # FR3 limits (world4rl_spec); the smoothing's velocity bound is the step bound per period.
    acceleration_scale: float = 0.5
    jerk_scale: float = 0.5
    control_period_s: float = 1.0 / CONTROL_RATE_HZ
    # And an absolute cap on any joint's change per step [rad].
    max_step_rad: float = 0.1
    # A target further than this from the measured position is a fault, not something to clip:
    # the policy or the kinematics went wrong [rad].
    max_target_distance_rad: float = 0.5
    # Cartesian box for the end effector (base frame, metres) and the end-effector offset: the
    # filter's defaults; each robot's own come from its robot profile (the bringup package's config/robots/).
    workspace_min: tuple[float, float, float] = (0.15, -0.5, 0.02)
    workspace_max: tuple[float, float, float] = (0.85, 0.5, 0.8)
    tcp_offset_m: float = fr3_kinematics.HAND_TCP_OFFSET_M
    # Watchdog: inputs older than this hold position and disarm [s].
    image_timeout_s: float = 0.25
    joint_state_timeout_s: float = 0.1
    # Stamps later than now by more than this are faults (clock skew allowance) [s].
    future_tolerance_s: float = 0.05
    # An armed episode ends (hold + disarm) after this long [s].
    episode_time_limit_s: float = 30.0

    def __post_init__(self) -> None:
        positive = (
            "velocity_scale",
            "acceleration_scale",
            "jerk_scale",
            "control_period_s",
            "max_step_rad",
            "max_target_distance_rad",
            "image_timeout_s",
            "joint_state_timeout_s",
            "episode_time_limit_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"safety parameter {name} must be a positive number, got {value!r}")
        for name in ("joint_margin_rad", "joint_state_limit_tolerance_rad", "future_tolerance_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"safety parameter {name} must be a non-negative number, got {value!r}")
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            if getattr(self, name) > 1.0:
                raise ValueError(f"safety parameter {name} must be <= 1 (the FR3 limits), got {getattr(self, name)}")
        lo = np.asarray(FR3_JOINT_POSITION_MIN) + self.joint_margin_rad
        hi = np.asarray(FR3_JOINT_POSITION_MAX) - self.joint_margin_rad
        if np.any(lo >= hi):
            raise ValueError(f"safety parameter joint_margin_rad={self.joint_margin_rad} leaves no joint range")
        tcp = self.tcp_offset_m
        if not (isinstance(tcp, int | float) and math.isfinite(tcp) and 0.0 <= tcp <= MAX_TCP_OFFSET_M):
            raise ValueError(f"safety parameter tcp_offset_m must be in [0, {MAX_TCP_OFFSET_M}] m, got {tcp!r}")
        self.workspace_min = tuple(float(v) for v in self.workspace_min)
        self.workspace_max = tuple(float(v) for v in self.workspace_max)
        for name in ("workspace_min", "workspace_max"):
            box = getattr(self, name)
            if len(box) != 3 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"safety parameter {name} must be 3 finite numbers (x, y, z) [m], got {list(box)}")
        if not all(a < b for a, b in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SafetyParams:
        """Build from a mapping (e.g. parsed YAML); unknown keys are an error, not silently ignored."""
        return from_known_fields(cls, values, "unknown safety parameters {unknown}; known: {known}")

    def step_bound(self) -> np.ndarray:
        """Largest allowed change of each joint in one control step [rad], shape [7]."""
        vel = np.asarray(FR3_JOINT_VELOCITY_MAX) * self.velocity_scale * self.control_period_s
        return np.minimum(vel, self.max_step_rad)

    def motion_limits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Joint velocity [rad/s] (the step bound per control period), acceleration [rad/s^2] and
        jerk [rad/s^3] bounds of the commands, each shape [7]: the FR3 limits times the scales."""
        return (
            self.step_bound() / self.control_period_s,
            np.asarray(FR3_JOINT_ACCELERATION_MAX) * self.acceleration_scale,
            np.asarray(FR3_JOINT_JERK_MAX) * self.jerk_scale,
        )


class CommandShaper(Protocol):
    """Shapes the filter's commands into a continuous signal (world4rl_policy.smoothing.JointSmoother)."""

    def toward(self, target: np.ndarray) -> np.ndarray:
        """This cycle's command on the way to a passed target (inside the joint limits)."""

    def stop(self) -> np.ndarray:
        """This cycle's command of a ramped stop (a hold)."""


@dataclass
class FilterResult:
    command: np.ndarray | None  # [7] joint target to send; None: send nothing this cycle
    gripper: float | None  # gripper action in [-1, 1] to send; None: keep the current goal
    held: bool  # the proposed target was not passed through (hold position, or nothing)
    armed: bool  # after this cycle
    fault: Reason | None  # latched fault after this cycle
    events: tuple[Event, ...] = ()  # refusals first (faults, then holds), then adjustments

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(e.reason for e in self.events)


@dataclass
class SafetyStatus:
    """What the runtime node publishes in world4rl_msgs/PolicyStatus (plus counts per reason)."""

    armed: bool
    fault: str  # "" when healthy
    fault_message: str
    last_refusal: str  # code of the last refusal ("" if none yet)
    step: int  # commands passed in the current episode
    refused_commands: int  # cycles whose target was not passed through, since start
    counts: dict[str, int] = field(default_factory=dict)


def _as_stamp(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _joint_vector(value, what: str, malformed: Reason, nonfinite: Reason, faults: list[Event]) -> np.ndarray | None:
    """`value` as a finite float [7] vector, or None after a fault (`malformed`: not numeric or not
    7 long, `nonfinite`: NaN or inf); `what` names it in the message."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        faults.append(Event(malformed, f"{what} is not numeric"))
        return None
    if v.shape != (NUM_JOINTS,):
        faults.append(Event(malformed, f"{what} has shape {v.shape}, expected ({NUM_JOINTS},)"))
        return None
    if not np.all(np.isfinite(v)):
        faults.append(Event(nonfinite, f"{what} is not finite: {v.tolist()}"))
        return None
    return v


class SafetyFilter:
    """Checks every proposed joint target; see the module docstring for the rules."""

    def __init__(self, params: SafetyParams | None = None) -> None:
        self.params = params or SafetyParams()
        p = self.params
        self._hard_lo = np.asarray(FR3_JOINT_POSITION_MIN, dtype=np.float64)
        self._hard_hi = np.asarray(FR3_JOINT_POSITION_MAX, dtype=np.float64)
        self._lo = self._hard_lo + p.joint_margin_rad
        self._hi = self._hard_hi - p.joint_margin_rad
        self._step = p.step_bound()
        self._ws_lo = np.asarray(p.workspace_min)
        self._ws_hi = np.asarray(p.workspace_max)
        self._armed = False
        self._fault: Reason | None = None
        self._fault_message = ""
        self._episode_start: float | None = None  # None: no episode yet (the next arm() starts one)
        self._episode_seen: float | None = None  # the latest finite time seen in the episode
        self._last_now: float | None = None
        self._last_image_stamp: float | None = None
        self._last_joint_stamp: float | None = None
        self._hold: np.ndarray | None = None
        self._shaper: CommandShaper | None = None  # this cycle's (filter(shaper=...))
        self._steps = 0
        self._refused = 0
        self._last_refusal = ""
        self._counts: Counter[str] = Counter()

    # ----------------------------------------------------------------- arming
    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def fault(self) -> Reason | None:
        return self._fault

    def arm(self, now: float) -> None:
        """Allow commands from now on; clears a latched fault. The first arming of an episode
        starts its clock; arming again (after a disarm or a fault) continues it, so re-arming
        cannot extend the episode time limit: only `new_episode()` ends an episode. ValueError
        (still disarmed) when the episode's time is already up. A clock that ran back (a restarted
        sim clock) gives no time back: the episode keeps the time it had used.

        Arming also forgets the previous stamps, so inputs are judged afresh; ordering is checked
        within an armed stretch."""
        now = float(now)
        if not math.isfinite(now):
            raise ValueError(f"arm(now) needs a finite time, got {now}")
        if self._episode_start is None:
            self._episode_start = self._episode_seen = now
            self._steps = 0
        used, limit = max(now, self._episode_seen) - self._episode_start, self.params.episode_time_limit_s
        if used > limit:
            raise ValueError(
                f"the episode time limit is reached: the episode has run {used:.2f} s (limit {limit:.2f} s); "
                "start a new episode to arm again"
            )
        self._episode_start = now - used  # the same start, unless the clock ran back
        self._armed = True
        self._fault = None
        self._fault_message = ""
        self._last_now = self._last_image_stamp = self._last_joint_stamp = None

    def new_episode(self) -> None:
        """End the current episode: the next `arm()` starts a new episode clock (and step count).
        ValueError while armed: an armed episode ends by a disarm or a fault first."""
        if self._armed:
            raise ValueError("disarm before starting a new episode")
        self._episode_start = self._episode_seen = None

    def disarm(self) -> None:
        """Stop sending policy commands (operator request); the filter holds position."""
        self._armed = False

    def status(self) -> SafetyStatus:
        return SafetyStatus(
            armed=self._armed,
            fault=self._fault.value if self._fault else "",
            fault_message=self._fault_message,
            last_refusal=self._last_refusal,
            step=self._steps,
            refused_commands=self._refused,
            counts=dict(self._counts),
        )

    # ----------------------------------------------------------------- the check
    def filter(
        self,
        *,
        joint_positions,
        target,
        now: float,
        image_stamp: float | None,
        joint_state_stamp: float | None,
        gripper: float | None = None,
        input_fault: Event | None = None,
        shaper: CommandShaper | None = None,
    ) -> FilterResult:
        """One control cycle. Times are seconds on one clock (e.g. ROS time); stamps are None
        until the first message of that input arrived. While disarmed, `target` may be None.
        `input_fault`: a fault the caller found in what the target was made from (a malformed
        action, say), refused like the filter's own faults while armed. `shaper`: see the module
        docstring (the command path's smoother; None: targets pass as they are, holds latch)."""
        p = self.params
        self._shaper = shaper
        was_armed = self._armed
        faults: list[Event] = []
        # The measured state: without it nothing can be checked, so nothing is sent.
        current = self._read_joint_state(joint_positions, faults)
        # Time and stamps are tracked while disarmed too (faults then only matter once armed).
        time_faults: list[Event] = []
        self._check_time(now, image_stamp, joint_state_stamp, time_faults)

        if not was_armed:
            why = f" after fault {self._fault.value}" if self._fault else ""
            faults.append(Event(Reason.DISARMED, f"disarmed{why}: holding position until armed"))
            return self._finish(current, None, None, faults, counted=False)

        faults += time_faults
        if input_fault is not None:
            faults.append(input_fault)
        proposal = self._read_target(target, current, faults)
        adjustments: list[Event] = []
        gripper_out = self._read_gripper(gripper, faults, adjustments)
        now_f = _as_stamp(now)
        if now_f is not None and math.isfinite(now_f) and now_f - self._episode_start > p.episode_time_limit_s:
            faults.append(
                Event(
                    Reason.EPISODE_TIME_LIMIT,
                    f"episode time limit reached: the episode began {now_f - self._episode_start:.2f} s ago "
                    f"(limit {p.episode_time_limit_s:.2f} s)",
                )
            )
        if faults:
            self._armed = False
            self._fault = faults[0].reason
            self._fault_message = faults[0].message
            faults = [Event(e.reason, e.message + ": holding position and disarming") for e in faults]
            return self._finish(current, None, None, faults, counted=True)

        command = self._limit(proposal, current, adjustments)
        outside_now = self._outside_distance(current)
        outside_next = self._outside_distance(command)
        if outside_next > 1e-9 and outside_next > outside_now + 1e-9:
            hold = Event(
                Reason.WORKSPACE_EXIT,
                f"target end effector {np.round(self._ee(command), 3).tolist()} leaves the workspace box "
                f"{list(p.workspace_min)}..{list(p.workspace_max)} by {outside_next * 1000:.1f} mm: holding position",
            )
            return self._finish(current, None, None, [hold], counted=True)
        return self._finish(current, command, gripper_out, adjustments, counted=True)

    def _finish(
        self,
        current: np.ndarray | None,
        command: np.ndarray | None,
        gripper: float | None,
        events: list[Event],
        counted: bool,
    ) -> FilterResult:
        """Book-keeping shared by every exit of filter(): a None command means hold (if possible)."""
        held = command is None
        if held:
            command = self._hold_command(current) if current is not None else None
            gripper = None
            if counted:
                self._refused += 1
        else:
            self._hold = None
            self._steps += 1
        for e in events:
            self._counts[e.reason.value] += 1
        refusals = [e for e in events if e.reason not in ADJUSTMENT_REASONS]
        if refusals:
            self._last_refusal = refusals[0].reason.value  # the primary one
        return FilterResult(command, gripper, held, self._armed, self._fault, tuple(events))

    # ----------------------------------------------------------------- pieces
    def _read_joint_state(self, joint_positions, faults: list[Event]) -> np.ndarray | None:
        q = _joint_vector(joint_positions, "joint state", Reason.BAD_JOINT_STATE, Reason.BAD_JOINT_STATE, faults)
        if q is None:
            return None
        tol = self.params.joint_state_limit_tolerance_rad
        beyond = (q < self._hard_lo - tol) | (q > self._hard_hi + tol)
        if np.any(beyond):
            joints = [f"joint{i + 1}={q[i]:.4f}" for i in np.flatnonzero(beyond)]
            faults.append(
                Event(
                    Reason.JOINT_STATE_OUT_OF_LIMITS,
                    f"measured {', '.join(joints)} beyond the FR3 limits (tolerance {tol} rad)",
                )
            )
            return None
        return np.clip(q, self._hard_lo, self._hard_hi)

    def _check_time(self, now, image_stamp, joint_state_stamp, faults: list[Event]) -> None:
        p = self.params
        now_f = _as_stamp(now)
        if now_f is None or not math.isfinite(now_f):
            faults.append(Event(Reason.BAD_CLOCK, f"current time is not a finite number: {now!r}"))
            return
        if self._episode_start is not None:
            self._episode_seen = max(self._episode_seen, now_f)
        if self._last_now is not None and now_f < self._last_now:
            faults.append(Event(Reason.BAD_CLOCK, f"clock ran backwards by {self._last_now - now_f:.3f} s"))
            # Keep the later time, so a clock that jumped back cannot shorten the watchdogs.
        else:
            self._last_now = now_f
        inputs = (
            ("image", image_stamp, p.image_timeout_s, "_last_image_stamp", Reason.NO_IMAGE, Reason.STALE_IMAGE,
             Reason.IMAGE_FROM_FUTURE, Reason.IMAGE_OUT_OF_ORDER),
            ("joint state", joint_state_stamp, p.joint_state_timeout_s, "_last_joint_stamp", Reason.NO_JOINT_STATE,
             Reason.STALE_JOINT_STATE, Reason.JOINT_STATE_FROM_FUTURE, Reason.JOINT_STATE_OUT_OF_ORDER),
        )  # fmt: skip
        for name, stamp, timeout, last_attr, r_none, r_stale, r_future, r_order in inputs:
            s = _as_stamp(stamp)
            if s is None:
                faults.append(Event(r_none, f"no {name} received yet"))
                continue
            if not math.isfinite(s):
                faults.append(Event(Reason.BAD_CLOCK, f"{name} stamp is not a finite number: {stamp!r}"))
                continue
            if s > now_f + p.future_tolerance_s:
                faults.append(
                    Event(
                        r_future,
                        f"{name} stamp is {s - now_f:.3f} s in the future (tolerance {p.future_tolerance_s} s)",
                    )
                )
                continue
            last = getattr(self, last_attr)
            if last is not None and s < last:
                faults.append(Event(r_order, f"{name} stamp went back by {last - s:.3f} s (out of order)"))
                continue
            setattr(self, last_attr, s)
            age = now_f - s
            if age > timeout:
                faults.append(Event(r_stale, f"{name} is {age:.3f} s old (limit {timeout} s)"))

    def _read_target(self, target, current: np.ndarray | None, faults: list[Event]) -> np.ndarray | None:
        t = _joint_vector(target, "proposed target", Reason.BAD_TARGET_SHAPE, Reason.NONFINITE_TARGET, faults)
        if t is None:
            return None
        if current is not None:
            dist = np.abs(t - current)
            worst = int(np.argmax(dist))
            if dist[worst] > self.params.max_target_distance_rad:
                faults.append(
                    Event(
                        Reason.TARGET_JUMP,
                        f"proposed joint{worst + 1} target is {dist[worst]:.3f} rad from the measured position "
                        f"(limit {self.params.max_target_distance_rad} rad)",
                    )
                )
                return None
        return t

    def _read_gripper(self, gripper, faults: list[Event], adjustments: list[Event]) -> float | None:
        if gripper is None:
            return None
        try:
            g = float(gripper)
        except (TypeError, ValueError):
            g = math.nan
        if not math.isfinite(g):
            faults.append(Event(Reason.NONFINITE_GRIPPER, f"proposed gripper action is not finite: {gripper!r}"))
            return None
        if g < ACTION_LOW or g > ACTION_HIGH:
            adjustments.append(Event(Reason.GRIPPER_CLIPPED, f"gripper action {g:.3f} clipped to [-1, 1]"))
            g = min(max(g, ACTION_LOW), ACTION_HIGH)
        return g

    def _limit(self, target: np.ndarray, current: np.ndarray, adjustments: list[Event]) -> np.ndarray:
        clipped = np.clip(target, self._lo, self._hi)
        if np.any(clipped != target):
            joints = [f"joint{i + 1}" for i in np.flatnonzero(clipped != target)]
            adjustments.append(
                Event(
                    Reason.POSITION_CLIPPED,
                    f"target of {', '.join(joints)} clipped to the joint limits "
                    f"(margin {self.params.joint_margin_rad} rad)",
                )
            )
        if self._shaper is not None:
            clipped = np.asarray(self._shaper.toward(clipped), dtype=np.float64)
        delta = clipped - current
        # Scale the whole step (not each joint) so the motion keeps its direction.
        ratio = np.max(np.abs(delta) / self._step)
        if ratio > 1.0:
            adjustments.append(
                Event(
                    Reason.STEP_CLIPPED,
                    f"step scaled by {1 / ratio:.3f} to the joint velocity bound "
                    f"({self.params.velocity_scale} x FR3 limits, at most {self.params.max_step_rad} rad per step)",
                )
            )
            delta = delta / ratio
        # Float safety: the result must lie within the hard limits and the step bound exactly.
        delta = np.clip(delta, -self._step, self._step)
        return np.clip(current + delta, self._hard_lo, self._hard_hi)

    def _hold_command(self, current: np.ndarray) -> np.ndarray:
        if self._shaper is not None:
            # The ramped stop, bounded like any command: never a jump away from the measured position.
            self._hold = None
            ramp = np.asarray(self._shaper.stop(), dtype=np.float64)
            return np.clip(current + np.clip(ramp - current, -self._step, self._step), self._hard_lo, self._hard_hi)
        if self._hold is None or np.any(np.abs(self._hold - current) > self._step):
            self._hold = current.copy()
        return self._hold.copy()

    def _ee(self, q: np.ndarray) -> np.ndarray:
        return fr3_kinematics.forward_kinematics(q, tcp_offset_m=self.params.tcp_offset_m)[:3, 3]

    def _outside_distance(self, q: np.ndarray) -> float:
        p = self._ee(q)
        return float(np.linalg.norm(p - np.clip(p, self._ws_lo, self._ws_hi)))

"""From a normalised action to a checked arm command: FR3 IK, smoothing, the safety filter. ROS-free.

The one path every command to the arm takes, whoever decided the action: a teleoperator, the
sim's scripted expert (both through the action_executor node) or a policy (the policy_runner
node). Each control cycle:

    action (dx, dy, dz, gripper) in [-1, 1]
      -> the end-effector (TCP) target moves by (dx, dy, dz) * EE_DELTA_SCALE_M, inside the
         workspace box and at most `max_target_lead_m` ahead of the measured TCP: the same
         integrating target the simulator's direct API moves, so a policy acts alike through
         ROS and in the sim, and servo lag does not shrink its steps
      -> joint target by damped least squares (fr3_kinematics), keeping the end-effector
         orientation latched when the path was armed, so small IK errors cannot make it drift
      -> SafetyFilter: faults, watchdog, arm state, joint limits; then the JointSmoother
         (smoothing.py) moves the last commanded state toward the target within the FR3's
         velocity, acceleration and jerk limits (times the profile's scales), or ramps a hold
         down; then the filter's step bound, hard limits and workspace box judge that command
      -> a joint command to send (or a ramped hold) with its velocity, acceleration and stop
         (Cycle.motion, for trajectory points), and a gripper command when the gripper's
         open/closed state changes. After a disarm the stop keeps being sent until the arm is
         at rest; then nothing is sent, so an operator can guide a disarmed arm by hand.

The gripper is binary here, like Franka's (world4rl_spec.gripper_state_after, the rule the sim's own
controller follows too): an action above +threshold grasps (franka_gripper's Grasp with wide
epsilons, so any object width counts as success), below -threshold opens (Move to the open width);
in between keeps the last command (hysteresis against chatter).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from world4rl_policy import fr3_kinematics
from world4rl_policy.safety_filter import Event, FilterResult, Reason, SafetyFilter, SafetyParams
from world4rl_policy.smoothing import JointSmoother, Motion
from world4rl_spec import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    EE_DELTA_SCALE_M,
    EE_TARGET_MAX_LEAD_M,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    GRIPPER_CLOSED_WIDTH_M,
    GRIPPER_OPEN_WIDTH_M,
    GRIPPER_SWITCH_THRESHOLD,
    gripper_state_after,
)

# Joint position measurement noise the smoother leaves room for below the filter's step bound [rad]:
# FR3 encoders resolve ~1e-5 rad; 1e-4 is 0.1 % of the franka profile's 0.1 rad step.
MEASUREMENT_TOLERANCE_RAD = 1e-4


def _action_shape_fault(action) -> Event | None:
    """A fault if `action` (None: no decision) is not ACTION_DIM numbers."""
    if action is None:
        return None
    try:
        shape = np.asarray(action, dtype=np.float64).shape
    except (TypeError, ValueError):
        return Event(Reason.BAD_ACTION_SHAPE, f"action is not numeric: {action!r:.80}")
    if shape != (ACTION_DIM,):
        return Event(Reason.BAD_ACTION_SHAPE, f"action has shape {shape}, expected ({ACTION_DIM},)")
    return None


@dataclass(frozen=True)
class GripperCommand:
    kind: str  # "grasp" or "move"
    width: float  # target width [m] (grasp: the expected object width, 0 with wide epsilons)


@dataclass
class CommandPathParams:
    gripper_threshold: float = GRIPPER_SWITCH_THRESHOLD  # |gripper action| beyond which the open/closed state changes
    # The TCP target may lead the measured TCP by at most this much [m] (no wind-up against
    # an obstacle: pushing on the table does not store up a jump for later).
    max_target_lead_m: float = EE_TARGET_MAX_LEAD_M
    # The TCP target stays this far inside the safety filter's workspace box [m].
    workspace_margin_m: float = 0.001
    # Jerk-limited smoothing of the commands (smoothing.py). Off only to measure what it costs
    # (bench/bench_runtime_latency.py): without it holds stop at once and libfranka may abort.
    smoothing: bool = True


@dataclass
class Cycle:
    """One control cycle's outcome."""

    result: FilterResult
    send_arm_command: bool  # publish result.command this cycle
    gripper: GripperCommand | None  # a new gripper goal to send, if the state changed
    ik_error_m: float | None  # position error of the IK solution (None if no IK ran)
    motion: Motion | None = None  # velocity, acceleration and stop of a sent, smoothed command
    ik_step_rad: float | None = None  # largest joint change the IK solution asked for (None if no IK ran)


class CommandPath:
    def __init__(
        self,
        safety: SafetyParams | None = None,
        ik: fr3_kinematics.IKConfig | None = None,
        params: CommandPathParams | None = None,
    ):
        self.filter = SafetyFilter(safety)
        # One tool point for the IK and the filter's workspace check: the safety parameters'.
        self.ik = dataclasses.replace(ik or fr3_kinematics.IKConfig(), tcp_offset_m=self.filter.params.tcp_offset_m)
        self.params = params or CommandPathParams()
        margin = self.params.workspace_margin_m
        self._target_min = np.asarray(self.filter.params.workspace_min) + margin
        self._target_max = np.asarray(self.filter.params.workspace_max) - margin
        self._rotation: np.ndarray | None = None
        self._tcp_target: np.ndarray | None = None
        self._gripper_closed: bool | None = None
        self._was_armed = False
        self._smoother = self._make_smoother() if self.params.smoothing else None

    @property
    def armed(self) -> bool:
        return self.filter.armed

    def arm(self, now: float, joint_positions) -> None:
        """Arm the filter and latch the end-effector orientation to hold during the episode."""
        q = np.asarray(joint_positions, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"cannot arm without a valid joint state, got {q.tolist()}")
        pose = fr3_kinematics.forward_kinematics(q, self.ik.tcp_offset_m, self.ik.tcp_yaw_rad)
        self._rotation = pose[:3, :3]
        self._tcp_target = pose[:3, 3].copy()
        self._gripper_closed = None  # the first gripper action after arming is always sent
        self.filter.arm(now)
        self._start_smoother(now, q)
        # So a fault on the very first cycle still sends its hold once.
        self._was_armed = True

    def disarm(self) -> None:
        self.filter.disarm()

    def new_episode(self) -> None:
        """End the episode (ValueError while armed): the next arm() starts a new episode time limit."""
        self.filter.new_episode()

    def step(
        self,
        *,
        joint_positions,
        action,
        now: float,
        input_stamp: float | None,
        joint_state_stamp: float | None,
        input_fault: Event | None = None,
    ) -> Cycle:
        """`action` is None when no decision is available (the filter then holds or stays disarmed);
        `input_stamp` is the stamp of what the decision was based on (the image, or the action);
        `input_fault`: a fault the caller found in that input (e.g. out of distribution), refused
        like the filter's own while armed: hold position and disarm."""
        shape_fault = _action_shape_fault(action)
        if shape_fault is not None:
            action = None  # never reshaped and used: refused (a fault while armed), holding position
        target = None
        gripper = None
        ik_error = ik_step = None
        smoother = self._smoother if self._smoother is not None and self._smoother.started else None
        if smoother is not None:
            smoother.begin(now)
        if action is None and self.filter.armed:
            # No decision this cycle: ask to stay put (where the last command comes to rest); the
            # filter's watchdog decides whether that is a short gap or a dead input.
            target = smoother.rest_position() if smoother is not None else joint_positions
        elif action is not None and self.filter.armed:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            gripper = float(a[3]) if a.shape[0] > 3 else None
            q = np.asarray(joint_positions, dtype=np.float64)
            if a.shape[0] >= 3 and np.all(np.isfinite(a[:3])) and q.shape == (7,) and np.all(np.isfinite(q)):
                solution = fr3_kinematics.solve_pose_step(q, self._advance_target(q, a[:3]), self._rotation, self.ik)
                target, ik_error = solution.q_target, solution.position_error_m
                ik_step = float(np.max(np.abs(solution.q_target - q)))
            else:
                # Let the filter refuse it (and say why): a malformed or non-finite action.
                target = np.full(7, np.nan) if a.shape[0] >= 3 else a
        result = self.filter.filter(
            joint_positions=joint_positions,
            target=target,
            now=now,
            image_stamp=input_stamp,
            joint_state_stamp=joint_state_stamp,
            gripper=gripper,
            input_fault=shape_fault or input_fault,
            shaper=smoother,
        )
        # Send while armed; on the cycle that disarms, send the hold once, and while disarmed
        # the ramped stop until the arm is at rest; then never, so an operator can guide it by hand.
        ramping = smoother is not None and not smoother.at_rest
        send = result.command is not None and (result.armed or self._was_armed or ramping)
        self._was_armed = result.armed
        motion = None
        if send and smoother is not None:
            smoother.commit(result.command)
            motion = smoother.motion()
        return Cycle(result, send, self._gripper_command(result), ik_error, motion, ik_step)

    def _make_smoother(self) -> JointSmoother:
        velocity, acceleration, jerk = self.filter.params.motion_limits()
        # The filter bounds each step from the measured position, the smoother plans from its last
        # command: planned a measurement tolerance below the step bound, encoder noise never makes a
        # full-speed command read as a step to clip (a clip there would bend the jerk-limited plan).
        margin = np.minimum(MEASUREMENT_TOLERANCE_RAD, 0.01 * velocity * self.filter.params.control_period_s)
        return JointSmoother(
            velocity - margin / self.filter.params.control_period_s,
            acceleration,
            jerk,
            self.filter.params.control_period_s,
            FR3_JOINT_POSITION_MIN,
            FR3_JOINT_POSITION_MAX,
        )

    def _start_smoother(self, now: float, q: np.ndarray) -> None:
        """Plan from the last command while a stop still ramps down and the arm follows it (a re-arm
        mid-stop keeps its velocity); else (the first arming, an arm at rest, one moved by hand or a
        sim reset to another pose) stand still at the measured `q`: the last command of an arm at
        rest is history, and a new episode planned from it would open with a step towards it."""
        s = self._smoother
        if s is None:
            return
        offset = np.abs(s.position - q) if s.started else None
        follows = offset is not None and np.all(offset <= self.filter.params.step_bound())
        if not follows or (s.at_rest and np.any(offset > MEASUREMENT_TOLERANCE_RAD)):
            s.reset(q, now)

    def _advance_target(self, q: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Move the TCP target by the action's delta, bounded by the lead and the workspace box."""
        tcp = fr3_kinematics.forward_kinematics(q, self.ik.tcp_offset_m, self.ik.tcp_yaw_rad)[:3, 3]
        lead = self._tcp_target - tcp
        distance = float(np.linalg.norm(lead))
        if distance > self.params.max_target_lead_m:
            self._tcp_target = tcp + lead * (self.params.max_target_lead_m / distance)
        step = np.clip(delta, ACTION_LOW, ACTION_HIGH) * EE_DELTA_SCALE_M
        self._tcp_target = np.clip(self._tcp_target + step, self._target_min, self._target_max)
        # An arm standing outside the box would get a target on the box's face, possibly far away
        # (a jump the filter refuses): approach it one bounded step at a time instead.
        reach = self.params.max_target_lead_m + float(np.linalg.norm(step))
        offset = self._tcp_target - tcp
        distance = float(np.linalg.norm(offset))
        if distance > reach:
            self._tcp_target = tcp + offset * (reach / distance)
        return self._tcp_target

    def _gripper_command(self, result: FilterResult) -> GripperCommand | None:
        if result.gripper is None:
            return None
        closed = gripper_state_after(result.gripper, self._gripper_closed, self.params.gripper_threshold)
        if closed == self._gripper_closed:  # also None before the first command outside the band
            return None
        self._gripper_closed = closed
        return (
            GripperCommand("grasp", GRIPPER_CLOSED_WIDTH_M) if closed else GripperCommand("move", GRIPPER_OPEN_WIDTH_M)
        )

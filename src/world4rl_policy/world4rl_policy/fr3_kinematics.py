"""Franka Research 3 kinematics in plain numpy: forward kinematics, the geometric Jacobian, and
the end-effector-delta action -> joint target step (damped least squares within joint limits).

The chain is Franka's published modified (Craig) Denavit-Hartenberg table, which the FR3 shares
with the Panda (https://frankaemika.github.io/docs/control_parameters.html). Frame i follows
frame i-1 by  RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(theta_i) TransZ(d_i).  Joint angles use
Franka's convention (world4rl_spec.ARM_JOINT_NAMES, limits FR3_JOINT_POSITION_MIN/MAX); the
MuJoCo Panda of gymnasium-robotics offsets joint 6 by -pi/2 and is mapped at its boundary.

Conventions: poses are 4x4 homogeneous transforms in the robot base frame (link0), metres and
radians. The Jacobian rows are [linear velocity; angular velocity] of the chosen point, in the
base frame. The default end effector is the Franka Hand's TCP: 0.1034 m beyond the flange,
rotated -pi/4 about the flange z axis (franka's O_T_EE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from world4rl_spec import ACTION_HIGH, ACTION_LOW, EE_DELTA_SCALE_M, FR3_JOINT_POSITION_MAX, FR3_JOINT_POSITION_MIN

NUM_JOINTS = 7

# Modified DH parameters of joints 1..7 and the flange (theta of the flange is fixed at 0).
DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107])
DH_ALPHA = np.array([0.0, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2, 0.0])

# The Franka Hand's tool centre point relative to the flange.
HAND_TCP_OFFSET_M = 0.1034
HAND_TCP_YAW_RAD = -math.pi / 4

JOINT_MIN = np.asarray(FR3_JOINT_POSITION_MIN, dtype=np.float64)
JOINT_MAX = np.asarray(FR3_JOINT_POSITION_MAX, dtype=np.float64)


def _fixed_part(a: float, alpha: float) -> np.ndarray:
    """RotX(alpha) @ TransX(a): the joint-independent half of a modified DH step."""
    c, s = math.cos(alpha), math.sin(alpha)
    # Round the exact 0/±1 entries so that FK is not polluted by 6e-17 residues.
    c, s = round(c, 15), round(s, 15)
    return np.array([[1.0, 0.0, 0.0, a], [0.0, c, -s, 0.0], [0.0, s, c, 0.0], [0.0, 0.0, 0.0, 1.0]])


_FIXED = [_fixed_part(a, al) for a, al in zip(DH_A, DH_ALPHA, strict=True)]


def _tcp_transform(tcp_offset_m: float, tcp_yaw_rad: float) -> np.ndarray:
    c, s = math.cos(tcp_yaw_rad), math.sin(tcp_yaw_rad)
    return np.array([[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, tcp_offset_m], [0.0, 0.0, 0.0, 1.0]])


def _as_joints(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (NUM_JOINTS,):
        raise ValueError(f"expected {NUM_JOINTS} arm joint positions, got shape {q.shape}")
    return q


def link_frames(q, tcp_offset_m: float = HAND_TCP_OFFSET_M, tcp_yaw_rad: float = HAND_TCP_YAW_RAD) -> np.ndarray:
    """Poses of frames 1..7, the flange and the TCP in the base frame: array [9, 4, 4].

    Frame i (0-based index i-1) has its z axis along joint i, so column 2 of frames[:7] are the
    joint axes and column 3 their origins.
    """
    q = _as_joints(q)
    frames = np.empty((NUM_JOINTS + 2, 4, 4))
    pose = np.eye(4)
    for i in range(NUM_JOINTS + 1):
        theta = q[i] if i < NUM_JOINTS else 0.0
        c, s = math.cos(theta), math.sin(theta)
        joint = np.array([[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, DH_D[i]], [0.0, 0.0, 0.0, 1.0]])
        pose = pose @ _FIXED[i] @ joint
        frames[i] = pose
    frames[NUM_JOINTS + 1] = pose @ _tcp_transform(tcp_offset_m, tcp_yaw_rad)
    return frames


def forward_kinematics(q, tcp_offset_m: float = HAND_TCP_OFFSET_M, tcp_yaw_rad: float = HAND_TCP_YAW_RAD) -> np.ndarray:
    """Pose of the end effector (by default the hand TCP) in the base frame, [4, 4]."""
    return link_frames(q, tcp_offset_m, tcp_yaw_rad)[-1]


def flange_pose(q) -> np.ndarray:
    """Pose of the flange (frame 8, 0.107 m beyond joint 7's frame), [4, 4]."""
    return link_frames(q)[NUM_JOINTS]


def ee_position(q, tcp_offset_m: float = HAND_TCP_OFFSET_M) -> np.ndarray:
    """Position [3] of the end effector in the base frame."""
    return forward_kinematics(q, tcp_offset_m)[:3, 3].copy()


def jacobian(q, tcp_offset_m: float = HAND_TCP_OFFSET_M, tcp_yaw_rad: float = HAND_TCP_YAW_RAD) -> np.ndarray:
    """Geometric Jacobian [6, 7] of the end effector in the base frame: rows vx, vy, vz, wx, wy, wz."""
    frames = link_frames(q, tcp_offset_m, tcp_yaw_rad)
    return _jacobian_from_frames(frames)


def _jacobian_from_frames(frames: np.ndarray) -> np.ndarray:
    axes = frames[:NUM_JOINTS, :3, 2]  # [7, 3]
    origins = frames[:NUM_JOINTS, :3, 3]
    p_ee = frames[-1, :3, 3]
    jac = np.empty((6, NUM_JOINTS))
    jac[:3] = np.cross(axes, p_ee - origins).T
    jac[3:] = axes.T
    return jac


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector [3] (base frame) that rotates `current` onto `target` (both [3, 3])."""
    r = target @ current.T
    cos_angle = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos_angle)
    vee = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-6:
        return 0.5 * vee
    if math.pi - angle < 1e-4:
        # Near pi the antisymmetric part vanishes; take the axis from the symmetric part.
        axis = np.sqrt(np.maximum((np.diag(r) + 1.0) / 2.0, 0.0))
        k = int(np.argmax(axis))
        axis[np.arange(3) != k] = (r[k] + r[:, k])[np.arange(3) != k] / (4.0 * axis[k])
        return angle * axis / np.linalg.norm(axis)
    return angle / (2.0 * math.sin(angle)) * vee


@dataclass
class IKConfig:
    """Damped-least-squares settings for the end-effector-delta -> joint-target step."""

    # Adaptive damping (Maciejewski & Klein): none while the smallest singular value of the
    # weighted Jacobian is above singular_threshold, rising to `damping` at a singularity, so
    # steps are exact where the arm is well conditioned and bounded where it is not.
    damping: float = 0.05
    singular_threshold: float = 0.04
    rotation_weight: float = 0.5  # metres per radian: how much holding orientation matters vs position
    max_iterations: int = 6  # Newton iterations per step (2 cm steps converge in 2-3)
    tolerance_m: float = 1e-5  # stop once the weighted task error is below this
    joint_margin_rad: float = 0.05  # stay this far inside the FR3 position limits
    # No joint moves further than this from the measured position in one solve [rad]. A 2 cm step
    # needs at most ~0.2 rad away from singularities; a larger solution is a reconfiguration (an
    # elbow at its limit while the drawer is pulled towards the base: the other joints swing round to
    # make up for it, 0.52-0.70 rad), which the arm approaches a bounded step at a time instead of
    # demanding at once, a target the safety filter refuses as a jump (max_target_distance_rad, 0.5).
    max_joint_step_rad: float = 0.3
    tcp_offset_m: float = HAND_TCP_OFFSET_M
    tcp_yaw_rad: float = HAND_TCP_YAW_RAD


@dataclass
class IKResult:
    q_target: np.ndarray  # [7] joint target, inside the limits shrunk by joint_margin_rad
    position_error_m: float  # |p_target - FK(q_target)|
    rotation_error_rad: float  # angle between the target orientation and FK(q_target)'s
    iterations: int
    at_limit: np.ndarray  # [7] bool: joints the limits stopped
    step_limited: bool = False  # the solution was cut short at max_joint_step_rad from q


def joint_limits(margin_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """FR3 position limits shrunk by `margin_rad` on each side."""
    return JOINT_MIN + margin_rad, JOINT_MAX - margin_rad


def solve_pose_step(
    q,
    target_position,
    target_rotation=None,
    config: IKConfig | None = None,
) -> IKResult:
    """Joint target near `q` whose end effector reaches `target_position` (and `target_rotation`,
    default: the current orientation), by damped least squares, never leaving the joint limits.

    Joints that would cross a limit are clamped there and removed from the next iteration, so
    the remaining joints make up for them where they can, but none moves more than
    `config.max_joint_step_rad` from `q`: a longer step is cut short along its direction.
    """
    cfg = config or IKConfig()
    q0 = _as_joints(q)
    target_position = np.asarray(target_position, dtype=np.float64).reshape(3)
    lo, hi = joint_limits(cfg.joint_margin_rad)
    qk = np.clip(q0, lo, hi)
    frames = link_frames(qk, cfg.tcp_offset_m, cfg.tcp_yaw_rad)
    if target_rotation is None:
        target_rotation = link_frames(q0, cfg.tcp_offset_m, cfg.tcp_yaw_rad)[-1, :3, :3]
    target_rotation = np.asarray(target_rotation, dtype=np.float64)
    weights = np.array([1.0, 1.0, 1.0, cfg.rotation_weight, cfg.rotation_weight, cfg.rotation_weight])
    at_limit = np.zeros(NUM_JOINTS, dtype=bool)
    step_limited = False
    q_start = qk.copy()
    iterations = 0
    for iterations in range(1, cfg.max_iterations + 1):
        err = np.concatenate([target_position - frames[-1, :3, 3], rotation_error(target_rotation, frames[-1, :3, :3])])
        err_w = weights * err
        if np.linalg.norm(err_w) < cfg.tolerance_m:
            iterations -= 1
            break
        jac_w = weights[:, None] * _jacobian_from_frames(frames)
        jac_w[:, at_limit] = 0.0
        sigma_min = np.linalg.svd(jac_w, compute_uv=False)[-1]
        ratio = min(sigma_min / cfg.singular_threshold, 1.0) if cfg.singular_threshold > 0 else 1.0
        lam2 = (1.0 - ratio**2) * cfg.damping**2 + 1e-12
        dq = jac_w.T @ np.linalg.solve(jac_w @ jac_w.T + lam2 * np.eye(6), err_w)
        q_new = qk + dq
        newly = ((q_new < lo) | (q_new > hi)) & ~at_limit
        at_limit |= newly
        qk = np.clip(q_new, lo, hi)
        longest = float(np.max(np.abs(qk - q_start)))
        if longest > cfg.max_joint_step_rad:
            # Inside the limits still: a point between two configurations that both are.
            qk = q_start + (qk - q_start) * (cfg.max_joint_step_rad / longest)
            step_limited = True
        frames = link_frames(qk, cfg.tcp_offset_m, cfg.tcp_yaw_rad)
        if step_limited:
            break
    pos_err = float(np.linalg.norm(target_position - frames[-1, :3, 3]))
    rot_err = float(np.linalg.norm(rotation_error(target_rotation, frames[-1, :3, :3])))
    return IKResult(qk, pos_err, rot_err, iterations, at_limit, step_limited)


def ee_delta_to_joint_target(q, delta_m, target_rotation=None, config: IKConfig | None = None) -> IKResult:
    """Joint target that moves the end effector by `delta_m` [3] (metres, base frame) from its
    current position, keeping `target_rotation` (default: the current orientation)."""
    cfg = config or IKConfig()
    q = _as_joints(q)
    p = link_frames(q, cfg.tcp_offset_m, cfg.tcp_yaw_rad)[-1, :3, 3]
    return solve_pose_step(q, p + np.asarray(delta_m, dtype=np.float64).reshape(3), target_rotation, cfg)


def action_to_joint_target(q, action, target_rotation=None, config: IKConfig | None = None) -> IKResult:
    """The normalised action (dx, dy, dz, gripper) in [-1, 1] -> arm joint target, with the
    action semantics of world4rl_spec: dx, dy, dz * EE_DELTA_SCALE_M in the base frame.
    Out-of-range actions are clipped to [-1, 1]; the gripper entry is ignored here."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] < 3 or not np.all(np.isfinite(a[:3])):
        raise ValueError(f"action must hold 3 finite end-effector deltas first, got {a!r}")
    delta = np.clip(a[:3], ACTION_LOW, ACTION_HIGH) * EE_DELTA_SCALE_M
    return ee_delta_to_joint_target(q, delta, target_rotation, config)

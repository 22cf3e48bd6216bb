"""The normalised action space shared by teleoperation, recorder, datasets, policies and robots.

An action is (dx, dy, dz, gripper) in [-1, 1]^4, as in World4RL's Meta-World and Franka setups:
- dx, dy, dz: end-effector position delta in the robot base frame, EE_DELTA_SCALE_M metres per
  unit per control step (so at most 0.02 m per 0.1 s step, 0.2 m/s);
- gripper: -1 open, +1 closed (Meta-World's sign). The Franka Hand is binary (franka_gripper's Grasp
  and Move): an action beyond +/-GRIPPER_SWITCH_THRESHOLD closes or opens it, anything in between
  keeps its state (`gripper_state_after`), and the fingers travel at GRIPPER_SPEED_M_S; the runtime's
  command path and the embedded sim's own controller follow the same rule.
"""

from collections.abc import Sequence
from typing import Any

ACTION_NAMES = ("dx", "dy", "dz", "gripper")
ACTION_DIM = len(ACTION_NAMES)
ACTION_LOW = -1.0
ACTION_HIGH = 1.0

CONTROL_RATE_HZ = 10.0
EE_DELTA_SCALE_M = 0.02
# The end-effector target integrates the deltas but leads the measured TCP by at most this much
# [m], in the sim's own controller and in the ROS command path alike (no wind-up against obstacles).
EE_TARGET_MAX_LEAD_M = 0.03

# Distance between the two fingers of the Franka Hand [m].
GRIPPER_OPEN_WIDTH_M = 0.08
GRIPPER_CLOSED_WIDTH_M = 0.0
# The finger speed of gripper goals (franka_gripper Move/Grasp; the sim's gripper for a goal without
# one) [m/s], and the force of a grasp [N].
GRIPPER_SPEED_M_S = 0.1
# |gripper action| beyond which the gripper closes or opens; in between it keeps its state (hysteresis
# against chatter from a policy's sampled or noisy gripper action).
GRIPPER_SWITCH_THRESHOLD = 0.2
GRIPPER_GRASP_FORCE_N = 40.0


def gripper_state_after(
    gripper: float, closed: bool | None, threshold: float = GRIPPER_SWITCH_THRESHOLD
) -> bool | None:
    """The gripper's state after a gripper action: True closed (action > threshold), False open
    (action < -threshold), else the state before (`closed`; None: not known yet)."""
    if gripper > threshold:
        return True
    if gripper < -threshold:
        return False
    return closed


def describe_action_space(dim: int = ACTION_DIM, names: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The action space as dataset manifests and checkpoints record it (JSON-ready): names, bounds,
    size and step scale, then the `extra` entries. `names` defaults to the first `dim` action names."""
    return {
        "names": list(ACTION_NAMES[:dim] if names is None else names),
        "low": float(ACTION_LOW),
        "high": float(ACTION_HIGH),
        "dim": int(dim),
        "ee_delta_scale_m": float(EE_DELTA_SCALE_M),
        **extra,
    }

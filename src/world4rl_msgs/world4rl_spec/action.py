"""The normalised action space shared by teleoperation, recorder, datasets, policies and robots.

An action is (dx, dy, dz, gripper) in [-1, 1]^4, as in World4RL's Meta-World and Franka setups:
- dx, dy, dz: end-effector position delta in the robot base frame, EE_DELTA_SCALE_M metres per
  unit per control step (so at most 0.02 m per 0.1 s step, 0.2 m/s);
- gripper: -1 fully open, +1 fully closed (Meta-World's sign), linear in finger width between.
"""

ACTION_NAMES = ("dx", "dy", "dz", "gripper")
ACTION_DIM = len(ACTION_NAMES)
ACTION_LOW = -1.0
ACTION_HIGH = 1.0

CONTROL_RATE_HZ = 10.0
EE_DELTA_SCALE_M = 0.02

# Distance between the two fingers of the Franka Hand [m].
GRIPPER_OPEN_WIDTH_M = 0.08
GRIPPER_CLOSED_WIDTH_M = 0.0


def gripper_action_to_width(gripper: float) -> float:
    """Map the gripper action in [-1, 1] to a finger width [m] (-1 open, +1 closed)."""
    g = min(max(float(gripper), ACTION_LOW), ACTION_HIGH)
    fraction_closed = (g - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW)
    return GRIPPER_OPEN_WIDTH_M + fraction_closed * (GRIPPER_CLOSED_WIDTH_M - GRIPPER_OPEN_WIDTH_M)


def width_to_gripper_action(width: float) -> float:
    """Inverse of gripper_action_to_width, clipped to [-1, 1]."""
    span = GRIPPER_CLOSED_WIDTH_M - GRIPPER_OPEN_WIDTH_M
    fraction_closed = (float(width) - GRIPPER_OPEN_WIDTH_M) / span
    return min(max(ACTION_LOW + fraction_closed * (ACTION_HIGH - ACTION_LOW), ACTION_LOW), ACTION_HIGH)

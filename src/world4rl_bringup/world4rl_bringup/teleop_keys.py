"""Keyboard end-effector teleoperation, ROS-free: keys in, normalised actions out.

Terminals deliver a held key as a first press, a pause (~0.25-0.5 s), then auto-repeats at
~30 Hz; a key counts as held for `hold_s` after its last byte arrived, so a held key gives a
steady motion and releasing it stops the arm within `hold_s`.

    w / s   +x / -x  (away from / towards the robot base)
    a / d   +y / -y  (left / right)
    r / f   +z / -z  (up / down)
    space   toggle the gripper (open <-> closed)
    + / -   speed up / slow down (fraction of the full action, 0.1 .. 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW

MOTION_KEYS = {
    "w": (0, +1.0),
    "s": (0, -1.0),
    "a": (1, +1.0),
    "d": (1, -1.0),
    "r": (2, +1.0),
    "f": (2, -1.0),
}
GRIPPER_KEY = " "
SPEED_KEYS = {"+": +0.1, "=": +0.1, "-": -0.1}
HELP = "w/s: x  a/d: y  r/f: z  space: gripper  +/-: speed  Ctrl-C: quit"


@dataclass
class KeyboardTeleop:
    hold_s: float = 0.6
    speed: float = 0.5
    gripper_closed: bool = False
    _last_press: dict[str, float] = field(default_factory=dict)

    def press(self, key: str, now: float) -> None:
        key = key.lower() if key.isalpha() else key
        if key in MOTION_KEYS:
            self._last_press[key] = now
        elif key == GRIPPER_KEY:
            self.gripper_closed = not self.gripper_closed
        elif key in SPEED_KEYS:
            self.speed = round(min(1.0, max(0.1, self.speed + SPEED_KEYS[key])), 2)

    def action(self, now: float) -> list[float]:
        """The action for this control step: held motion keys times speed, and the gripper state."""
        action = [0.0] * ACTION_DIM
        for key, pressed_at in self._last_press.items():
            if now - pressed_at <= self.hold_s:
                axis, sign = MOTION_KEYS[key]
                action[axis] += sign * self.speed
        action = [min(max(v, ACTION_LOW), ACTION_HIGH) for v in action]
        action[3] = ACTION_HIGH if self.gripper_closed else ACTION_LOW
        return action

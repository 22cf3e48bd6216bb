"""Keyboard teleoperation: the key mapping, and the node driven through a real pseudo-terminal."""

import os
import pty
import signal
import subprocess
import sys
import threading
import time

import pytest

from world4rl_bringup.teleop_keys import KeyboardTeleop
from world4rl_msgs.msg import Action
from world4rl_spec import ACTION_DIM, topics
from world4rl_testing import wait_until


def test_held_keys_move_and_release_stops():
    teleop = KeyboardTeleop(hold_s=0.5, speed=0.5)
    assert teleop.action(0.0) == [0.0, 0.0, 0.0, -1.0]
    teleop.press("w", 1.0)
    teleop.press("A", 1.1)  # caps lock must not matter
    assert teleop.action(1.2) == [0.5, 0.5, 0.0, -1.0]
    assert teleop.action(1.55) == [0.0, 0.5, 0.0, -1.0]  # w released 0.55 s ago
    assert teleop.action(2.0) == [0.0, 0.0, 0.0, -1.0]


def test_opposite_keys_cancel_speed_is_bounded_and_gripper_toggles():
    teleop = KeyboardTeleop(hold_s=1.0, speed=0.9)
    for _ in range(5):
        teleop.press("+", 0.0)
    assert teleop.speed == 1.0
    teleop.press("r", 0.0)
    teleop.press("f", 0.0)
    teleop.press(" ", 0.0)
    assert teleop.action(0.1) == [0.0, 0.0, 0.0, 1.0]
    for _ in range(20):
        teleop.press("-", 0.2)
    assert teleop.speed == 0.1
    teleop.press(" ", 0.3)
    teleop.press("d", 0.3)
    assert teleop.action(0.4) == [0.0, -0.1, 0.0, -1.0]
    assert len(teleop.action(0.4)) == ACTION_DIM


def test_node_refuses_without_a_terminal(ros_domain):
    out = subprocess.run(
        [sys.executable, "-m", "world4rl_bringup.keyboard_teleop_node"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "stdin is not a terminal" in out.stderr


@pytest.mark.ros
def test_keys_typed_into_a_terminal_become_actions(ros_node):
    received: list[Action] = []
    lock = threading.Lock()

    def on_action(msg: Action) -> None:
        with lock:
            received.append(msg)

    ros_node.create_subscription(Action, topics.ACTION, on_action, 10)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "world4rl_bringup.keyboard_teleop_node", "--ros-args", "-p", "hold_s:=5.0"],
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        assert wait_until(lambda: len(received) > 3 or process.poll() is not None, timeout=30.0)
        assert process.poll() is None, process.stderr.read().decode()
        with lock:
            assert received[-1].values.tolist() == [0.0, 0.0, 0.0, -1.0]
        os.write(primary, b"w ")
        time.sleep(0.1)

        def moving_with_closed_gripper() -> bool:
            with lock:
                return [round(v, 3) for v in received[-1].values] == [0.5, 0.0, 0.0, 1.0]

        assert wait_until(moving_with_closed_gripper, timeout=10.0)
        assert received[-1].source == "teleop"
        assert received[-1].header.frame_id == "fr3_link0"
        process.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)

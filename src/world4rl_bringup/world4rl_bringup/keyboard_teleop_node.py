"""keyboard_teleop: end-effector teleoperation from a terminal, published as world4rl_msgs/Action.

It publishes the same command topic as every other demonstration source (world4rl_spec ACTION,
at the control rate, source "teleop"); the action executor turns it into arm and gripper commands
and the episode recorder records it. It needs a terminal on stdin: in a launch file, give it
`prefix: xterm -e`, or run it with `ros2 run world4rl_bringup keyboard_teleop`.
"""

import os
import select
import sys
import termios
import threading
import time
import tty

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from world4rl_bringup.teleop_keys import HELP, KeyboardTeleop
from world4rl_msgs.msg import Action
from world4rl_ros.node_main import run_node
from world4rl_spec import CONTROL_RATE_HZ, topics


class KeyboardTeleopNode(Node):
    def __init__(self):
        super().__init__("keyboard_teleop")
        rate = self.declare_parameter("rate_hz", CONTROL_RATE_HZ, _describe("actions published per second")).value
        self.frame_id = self.declare_parameter(
            "frame_id", "fr3_link0", _describe("robot base frame of the deltas")
        ).value
        self.teleop = KeyboardTeleop(
            hold_s=self.declare_parameter("hold_s", 0.6, _describe("a key counts as held this long [s]")).value,
            speed=self.declare_parameter("speed", 0.5, _describe("initial fraction of the full action")).value,
        )
        # Reliable, shallow: every action matters to the recorder, stale ones do not.
        self.publisher = self.create_publisher(
            Action, topics.ACTION, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.lock = threading.Lock()
        self.create_timer(1.0 / rate, self._publish)

    def on_key(self, key: str) -> None:
        with self.lock:
            self.teleop.press(key, time.monotonic())

    def _publish(self) -> None:
        with self.lock:
            values = self.teleop.action(time.monotonic())
        msg = Action(values=values, source="teleop")
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        self.publisher.publish(msg)


def _describe(text: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=text)


def _read_keys(node: KeyboardTeleopNode, fd: int, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        data = os.read(fd, 32)
        if not data:
            return
        # cbreak mode keeps the terminal's signal keys: Ctrl-C still reaches rclpy as SIGINT.
        for char in data.decode(errors="ignore"):
            node.on_key(char)


def _spin_reading_keys(node: KeyboardTeleopNode) -> None:
    """Spin while a thread reads keys from the terminal, in cbreak mode until the node stops."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    stop = threading.Event()
    try:
        tty.setcbreak(fd)
        threading.Thread(target=_read_keys, args=(node, fd, stop), daemon=True).start()
        node.get_logger().info(HELP)
        rclpy.spin(node)
    finally:
        stop.set()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(args=None) -> None:
    if not os.isatty(sys.stdin.fileno()):
        sys.stderr.write(
            "keyboard_teleop: stdin is not a terminal. Run it in its own terminal "
            "(ros2 run world4rl_bringup keyboard_teleop), or give the launch node prefix:='xterm -e'.\n"
        )
        sys.exit(2)
    run_node(KeyboardTeleopNode, args=args, spin=_spin_reading_keys)


if __name__ == "__main__":
    main()

"""Every node's main (world4rl_ros.node_main.run_node): stopped with Ctrl-C it exits 0, also when the
stop lands while a callback is publishing; a real failure still exits non-zero with its traceback."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from world4rl_testing import wait_until

NODE = Path(__file__).parent / "support" / "busy_publisher_node.py"


def _start(mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(NODE), mode], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.usefixtures("ros_domain")
def test_a_context_shut_down_under_a_publishing_callback_is_a_clean_stop():
    # What Ctrl-C does when it lands while a callback runs (seen in CI: a teleop node exited 1).
    process = _start("context-dies")
    assert process.wait(timeout=60) == 0, process.stderr.read()


@pytest.mark.usefixtures("ros_domain")
def test_a_callback_that_fails_while_the_context_is_valid_still_fails():
    process = _start("fails")
    assert process.wait(timeout=60) == 1
    assert "a callback failed for real" in process.stderr.read()


@pytest.mark.usefixtures("ros_domain")
def test_ctrl_c_during_a_stream_of_publishes_exits_zero_every_time():
    for _ in range(8):
        process = _start("publish")
        try:
            assert wait_until(lambda p=process: p.poll() is not None or "ready" in p.stderr.readline(), timeout=60)
            assert process.poll() is None
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()

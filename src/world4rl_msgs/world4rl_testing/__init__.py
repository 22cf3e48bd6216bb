"""Test support that the tests of every package may use: polling, ROS domains, node fixtures.

- `wait_until(predicate, timeout, nodes=...)`: poll until true; fail at once, with its stderr, if a
  watched node process died.
- `next_domain_id()`: a ROS_DOMAIN_ID for one test (see world4rl_testing.fixtures).
- `world4rl_testing.fixtures`: the pytest plugin with the `ros_domain`, `launch_node` and
  `ros_node` fixtures (the workspace's root conftest.py loads it).
- `world4rl_testing.foxglove_client`: a Foxglove WebSocket client (the live view's tests).

It depends on world4rl_ros (and on pytest in the fixtures), never on world4rl_bringup, policy or
sim, so each package's tests keep to the dependency rule. It ships inside world4rl_msgs, beside
world4rl_spec, because that is the one package every other package may depend on.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence

from world4rl_ros.node_process import NodeDiedError, NodeProcess

__all__ = ["NodeDiedError", "NodeProcess", "next_domain_id", "wait_until"]


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, nodes: Sequence[NodeProcess] = ()
) -> bool:
    """Poll predicate() until true or timeout; raise NodeDiedError at once if a watched node dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        for node in nodes:
            node.check_alive()
        time.sleep(interval)
    return bool(predicate())


# Fast DDS uses 7400 + 250 * domain (+ offsets) as ports: valid domains are 0..232. Spread
# concurrent pytest runs (CI beside a developer) over the range by pid, and tests within a run
# by a counter, skipping 0 (the default domain that live robots use).
_DOMAIN_COUNTER = itertools.count()


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..230 for the next test of this process."""
    return 1 + (os.getpid() * 7 + next(_DOMAIN_COUNTER)) % 230

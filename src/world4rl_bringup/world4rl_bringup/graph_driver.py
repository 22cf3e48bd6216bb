"""What the commands that drive a running graph over a RosSession share (`world4rl collect`,
`world4rl deploy`): watching the graph's node processes, and waiting against one deadline for its
services and topics, failing at once if a node died and with a RosCallError at the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class GraphDriver:
    """Base of the episode drivers: `ros` (a RosSession) and `nodes` (name -> NodeProcess of the
    graph this command started; empty when it attached to a graph started elsewhere)."""

    def __init__(self, ros, nodes: dict) -> None:
        self.ros = ros
        self.nodes = nodes

    def check_nodes(self) -> None:
        for node in self.nodes.values():
            node.check_alive()

    def wait_for(self, ready: Callable[[], object], deadline: float, failure: str | Callable[[], str]) -> None:
        """Poll `ready()` every 0.1 s until it is true, checking the nodes (NodeDiedError); past
        `deadline` (time.monotonic()) raise RosCallError(failure) (a callable: its answer then)."""
        from world4rl_ros.ros_session import RosCallError

        while not ready():
            self.check_nodes()
            if time.monotonic() > deadline:
                raise RosCallError(failure if isinstance(failure, str) else failure())
            time.sleep(0.1)

    def wait_for_services(self, services: Iterable[tuple], deadline: float, timeout: float) -> None:
        """Wait until each (service type, name) has a server (`timeout`: the seconds the deadline allows)."""
        for srv_type, name in services:
            client = self.ros.client(srv_type, name)
            message = f"service {name} did not appear within {timeout:.0f} s: is the graph running?"
            self.wait_for(client.service_is_ready, deadline, message)

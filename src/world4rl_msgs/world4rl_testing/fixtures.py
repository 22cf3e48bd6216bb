"""pytest plugin: real ROS 2 over real DDS, one ROS_DOMAIN_ID per test.

Loaded by the workspace's root conftest.py (`pytest_plugins`), so every test may use:
- `ros_domain`: a fresh ROS_DOMAIN_ID for this test, on this host only, exported in os.environ so
  node processes and the in-test rclpy context both use it.
- `launch_node(module, name, params=..., ...)`: starts a node as a child process of the venv's
  Python (world4rl_ros.node_process.NodeProcess); at teardown every node is stopped with SIGINT
  and the test fails, with the node's stderr, if a node died while the test ran.
- `ros_node`: an rclpy node in this process, in its own context, spun by a background executor.
"""

from __future__ import annotations

import pytest

from world4rl_ros.node_process import NodeProcess
from world4rl_testing import next_domain_id


@pytest.fixture
def ros_domain(monkeypatch) -> int:
    domain = next_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    # This host only: the workspace's Fast DDS profile (FASTRTPS_DEFAULT_PROFILES_FILE, which the
    # venv hook sets) binds DDS to the loopback; SYSTEM_DEFAULT leaves that to it, where LOCALHOST
    # would make rmw_fastrtps add a UDP transport on every interface (world4rl_bringup.dds_network).
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SYSTEM_DEFAULT")
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "")
    return domain


@pytest.fixture
def launch_node(ros_domain, tmp_path):
    started: list[NodeProcess] = []

    def _launch(module: str, name: str, **kwargs) -> NodeProcess:
        kwargs.setdefault("log_dir", tmp_path / "node_logs")
        node = NodeProcess(module, name, **kwargs).start()
        started.append(node)
        return node

    yield _launch

    died = [node for node in started if node.returncode is not None]
    for node in reversed(started):
        node.stop()
    if died:
        details = "\n\n".join(
            f"node '{n.name}' ({n.module}) exited with code {n.returncode}; stderr:\n{n.stderr_tail()}" for n in died
        )
        pytest.fail(f"node process(es) died during the test:\n{details}", pytrace=False)


@pytest.fixture
def ros_node(ros_domain, request):
    from world4rl_ros.ros_session import RosSession  # rclpy only for the tests that use it

    safe_name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:50]
    session = RosSession(f"test_{safe_name}", domain_id=ros_domain)
    yield session.node
    session.close()

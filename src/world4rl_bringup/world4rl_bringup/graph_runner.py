"""Run a resolved graph (world4rl_bringup.graph) as child processes: `ros2 launch` for the venv.

Nodes start in the graph file's order, each as `python -m MODULE` with the same parameter files
and parameters the launch file would pass. Nodes that only exist in an apt ROS install (the
franka_ros2 drivers, realsense2_camera) have no module; asking for them here is an error that
says to use `ros2 launch` on the robot PC.

Namespace: the graph's argument `namespace` (or run_graph's `namespace`, which overrides it) starts
every node in that namespace (`-r __ns:=/robot_a`), with the ROS time source's /clock remapped to
the graph's own sim clock, as the launch files do.

Network: every node starts on the DDS network its robot profile names (world4rl_bringup.dds_network;
the graph's argument `robot`; a graph without one: this host only), as the launch files do. For
the sim that is the loopback and shared memory only: nothing on the network reaches the graph.

Security: with the graph's argument `security` true, every node starts in its SROS2 enclave
(`--enclave /world4rl/NODE`) with the security variables, as the launch files do
(world4rl_bringup.security). The PyPI wheels' Fast DDS has no security plugins, so here that
only runs where Fast DDS was built with them (the robot PC's apt ROS 2).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from world4rl_bringup.dds_network import network_environment
from world4rl_bringup.graph import NAMESPACE_ARGUMENT, GraphError, ResolvedGraph
from world4rl_bringup.security import graph_security
from world4rl_ros.node_process import NodeProcess
from world4rl_spec import topics


def check_runnable_here(resolved: ResolvedGraph) -> None:
    needs_ros = [f"node {n.name} ({n.package}/{n.executable})" for n in resolved.nodes if not n.module]
    needs_ros += [f"launch include {i.package}/{i.launch}" for i in resolved.includes]
    if needs_ros:
        # The root namespace is the launch files' default: leave out an empty namespace:=.
        shown = {k: v for k, v in resolved.args.items() if not (k == NAMESPACE_ARGUMENT and v == "")}
        args = " ".join(f"{k}:={v}" for k, v in shown.items())
        raise GraphError(
            f"graph '{resolved.graph.name}' with {args} needs a full ROS 2 install for: {', '.join(needs_ros)}. "
            f"On the robot PC run: ros2 launch world4rl_bringup {resolved.graph.name}.launch.py {args}"
        )


def namespace_remappings(namespace: str) -> dict[str, str]:
    """The remappings that start a node in `namespace` ('' or '/a/b'): none for the root."""
    if not namespace:
        return {}
    # rcl expands the relative replacement in the node's namespace: /robot_a/clock.
    return {"__ns": namespace, topics.ROS_CLOCK: topics.SIM_CLOCK}


@contextlib.contextmanager
def run_graph(
    resolved: ResolvedGraph, log_dir: str | Path, env: dict | None = None, namespace: str | None = None
) -> Iterator[dict[str, NodeProcess]]:
    """Start every node (in `namespace`; None: the graph's argument `namespace`); yield them by
    name; stop them all (in reverse order) on exit. Node logs go to `log_dir` (in a namespace: its
    subfolder named after the namespace, so two graphs beside each other keep their own logs).
    Each node's environment: the robot's DDS network (network_environment), with security:=true
    the SROS2 variables (graph_security), then `env`; with security:=true each node gets its enclave."""
    check_runnable_here(resolved)
    try:
        namespace = resolved.namespace if namespace is None else topics.normalize_namespace(namespace)
        network = network_environment(resolved.args.get("robot"), log_dir)
        security = graph_security(resolved, {**os.environ, **network, **(env or {})}, namespace)
    except (OSError, ValueError) as exc:
        raise GraphError(str(exc)) from None
    env = {**network, **(security.environment if security else {}), **(env or {})}
    if namespace:
        log_dir = Path(log_dir) / namespace.strip("/")
    started: dict[str, NodeProcess] = {}
    try:
        for node in resolved.nodes:
            files = node.params_file_paths()
            for path in files:
                if not path.is_file():
                    raise GraphError(f"node {node.name}: parameter file {path} does not exist")
            process = NodeProcess(
                node.module,
                node.name,
                params=node.parameters,
                params_files=files,
                extra_args=node.arguments,
                ros_args=security.node_arguments(node) if security else (),
                remappings=namespace_remappings(namespace),
                env=env,
                log_dir=log_dir,
            )
            started[node.name] = process.start()
        yield started
    finally:
        for process in reversed(list(started.values())):
            process.stop()

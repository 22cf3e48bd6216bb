"""Run a resolved graph (world4rl_bringup.graph) as child processes: `ros2 launch` for the venv.

Nodes start in the graph file's order, each as `python -m MODULE` with the same parameter files
and parameters the launch file would pass. Nodes that only exist in an apt ROS install (the
franka_ros2 drivers, realsense2_camera) have no module; asking for them here is an error that
says to use `ros2 launch` on the robot PC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from world4rl_bringup.graph import GraphError, ResolvedGraph
from world4rl_bringup.node_process import NodeProcess


def check_runnable_here(resolved: ResolvedGraph) -> None:
    needs_ros = [f"node {n.name} ({n.package}/{n.executable})" for n in resolved.nodes if not n.module]
    needs_ros += [f"launch include {i.package}/{i.launch}" for i in resolved.includes]
    if needs_ros:
        args = " ".join(f"{k}:={v}" for k, v in resolved.args.items())
        raise GraphError(
            f"graph '{resolved.graph.name}' with {args} needs a full ROS 2 install for: {', '.join(needs_ros)}. "
            f"On the robot PC run: ros2 launch world4rl_bringup {resolved.graph.name}.launch.py {args}"
        )


@contextlib.contextmanager
def run_graph(
    resolved: ResolvedGraph, log_dir: str | Path, env: dict | None = None
) -> Iterator[dict[str, NodeProcess]]:
    """Start every node; yield them by name; stop them all (in reverse order) on exit."""
    check_runnable_here(resolved)
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
                env=env,
                log_dir=log_dir,
            )
            started[node.name] = process.start()
        yield started
    finally:
        for process in reversed(list(started.values())):
            process.stop()

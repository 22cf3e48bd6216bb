"""Graph files: one YAML source resolved for `ros2 launch` and for the CLI's process runner."""

import os
import textwrap
from pathlib import Path

import pytest

from world4rl_bringup.graph import GraphError, load_graph, resolve
from world4rl_bringup.graph_runner import check_runnable_here, run_graph
from world4rl_msgs.msg import EpisodeInfo
from world4rl_msgs.srv import StartEpisode
from world4rl_spec import topics
from world4rl_testing import wait_until

SUPPORT = str(Path(__file__).parent / "support")

GRAPH = textwrap.dedent(
    """
    description: test graph
    arguments:
      robot: {default: sim, choices: [sim, franka], description: which robot}
      count: {default: "3", description: frames to publish}
      fake: {default: "false", choices: ["true", "false"], description: a launch-file boolean}
    nodes:
      - name: echo
        package: world4rl_bringup
        executable: episode_echo
        module: episode_echo_node
      - name: burst
        package: world4rl_bringup
        executable: image_burst
        module: image_burst_node
        if: {robot: sim}
        parameters: {count: "${count}", rate_hz: 10.0, wait_for_subscribers: 0}
      - name: franka_only
        package: some_driver
        executable: driver
        module: null
        if: {robot: [franka]}
    includes:
      - package: franka_bringup
        launch: franka.launch.py
        if: {robot: franka}
        arguments: {robot_ip: "robot-${count}", fake: "${fake}"}
    """
)


@pytest.fixture
def graph_file(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(GRAPH)
    return path


def test_resolution_follows_conditions_and_types(graph_file):
    graph = load_graph(graph_file)
    sim = resolve(graph, {})
    assert [n.name for n in sim.nodes] == ["echo", "burst"]
    assert sim.nodes[1].parameters == {"count": 3, "rate_hz": 10.0, "wait_for_subscribers": 0}
    assert sim.includes == ()
    franka = resolve(graph, {"robot": "franka", "count": "7"})
    assert [n.name for n in franka.nodes] == ["echo", "franka_only"]
    # Include arguments reach the included launch file as the strings it declared, not as YAML types.
    assert franka.includes[0].arguments == {"robot_ip": "robot-7", "fake": "false"}


def test_bad_arguments_and_files_are_named(graph_file, tmp_path):
    graph = load_graph(graph_file)
    with pytest.raises(GraphError, match=r"robot:='ur5' is not one of \['sim', 'franka'\]"):
        resolve(graph, {"robot": "ur5"})
    with pytest.raises(GraphError, match=r"unknown launch argument\(s\) \['robt'\]"):
        resolve(graph, {"robt": "sim"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRAPH.replace("if: {robot: sim}", "if: {robots: sim}"))
    with pytest.raises(GraphError, match=r"bad.yaml: nodes\[1\] \(burst\): condition on undeclared argument 'robots'"):
        load_graph(bad)
    with pytest.raises(GraphError, match="no such graph file"):
        load_graph(tmp_path / "missing.yaml")


def test_hardware_graph_refuses_to_run_without_ros_install(graph_file):
    resolved = resolve(load_graph(graph_file), {"robot": "franka"})
    with pytest.raises(
        GraphError, match=r"ros2 launch world4rl_bringup demo.launch.py robot:=franka count:=3 fake:=false"
    ):
        check_runnable_here(resolved)


@pytest.mark.ros
def test_runner_starts_the_resolved_graph_over_dds(graph_file, ros_node, tmp_path):
    resolved = resolve(load_graph(graph_file), {"count": "5"})
    env = {"PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with run_graph(resolved, tmp_path / "logs", env=env) as nodes:
        assert set(nodes) == {"echo", "burst"}
        client = ros_node.create_client(StartEpisode, topics.RECORDER_START)
        publisher = ros_node.create_publisher(EpisodeInfo, topics.EPISODE_INFO, 10)
        assert wait_until(client.service_is_ready, timeout=20.0, nodes=list(nodes.values()))
        replies = []

        def answered() -> bool:
            publisher.publish(EpisodeInfo(task="graph"))
            future = client.call_async(StartEpisode.Request(task="x"))
            assert wait_until(future.done, timeout=5.0, nodes=list(nodes.values()))
            replies.append(future.result())
            return replies[-1].ok

        assert wait_until(answered, timeout=20.0, interval=0.2)
        assert replies[-1].message.startswith("graph|")
        # The burst node got its substituted parameter: it logs how many frames it published.
        assert wait_until(lambda: "published 5 frames" in nodes["burst"].stderr_tail(), timeout=20.0)
    assert all(not n.is_running() for n in nodes.values())

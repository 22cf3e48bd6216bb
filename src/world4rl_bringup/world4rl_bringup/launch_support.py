"""Turn a graph file (world4rl_bringup.graph) into a ROS 2 launch description.

Only the launch files import this module, and only where ROS 2 is installed from apt (the robot
PC image): `launch` and `launch_ros` are not on PyPI, so the development venv runs the very same
resolved graph through world4rl_bringup.graph_runner instead.

The graph argument `namespace` (e.g. `namespace:=robot_a`) puts every node in that namespace, with
/clock remapped to the graph's own sim clock (as graph_runner does), and pushes it onto every
included launch file (GroupAction + PushRosNamespace), so the drivers move along with the stack.

Every process the launch starts, the included drivers too, gets the DDS network its robot profile
names (world4rl_bringup.dds_network, as graph_runner does): robot:=sim is this host only, and
robot:=franka binds DDS to the interfaces its profile lists.

With `security:=true` (world4rl_bringup.security), every process gets ROS_SECURITY_ENABLE=true and
ROS_SECURITY_STRATEGY=Enforce with the keystore in ROS_SECURITY_KEYSTORE, each graph node its
enclave (`--enclave /world4rl/NODE`, launch_ros's ros_arguments) and the included drivers the
drivers' enclave (ROS_SECURITY_ENCLAVE_OVERRIDE inside their group). The launch refuses to start
when the keystore lacks an enclave it needs.
"""

import os
import tempfile

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace

from world4rl_bringup.dds_network import network_environment
from world4rl_bringup.graph import load_graph, package_share, resolve
from world4rl_bringup.graph_runner import namespace_remappings
from world4rl_bringup.security import GraphSecurity, graph_security


def generate_graph_launch_description(graph_name: str) -> LaunchDescription:
    graph = load_graph(graph_name)
    declared = [
        DeclareLaunchArgument(
            arg.name, default_value=arg.default, description=arg.description, choices=list(arg.choices) or None
        )
        for arg in graph.arguments.values()
    ]

    def setup(context):
        args = {name: LaunchConfiguration(name).perform(context) for name in graph.arguments}
        resolved = resolve(graph, args)
        namespace = resolved.namespace
        # Before any process starts: a generated profile goes into a directory of this launch's own.
        network = network_environment(args.get("robot"), tempfile.mkdtemp(prefix="world4rl-dds-"))
        security = graph_security(resolved, getattr(context, "environment", os.environ))
        environment = {**network, **(security.environment if security else {})}
        actions = [SetEnvironmentVariable(name, value) for name, value in environment.items()]
        actions += [_node_action(node, namespace, security) for node in resolved.nodes]
        actions += [_include_action(include, namespace, security) for include in resolved.includes]
        return actions

    return LaunchDescription([*declared, OpaqueFunction(function=setup)])


def _node_action(node, namespace: str, security: GraphSecurity | None) -> Node:
    """A graph node as launch_ros starts it: its namespace (with the graph's clock), parameter files
    and parameters, its own arguments and, with security:=true, its enclave."""
    remappings = [(k, v) for k, v in namespace_remappings(namespace).items() if k != "__ns"]
    parameters = [str(path) for path in node.params_file_paths()]
    if node.parameters:
        parameters.append(node.parameters)
    return Node(
        package=node.package,
        executable=node.executable,
        name=node.name,
        namespace=namespace or None,
        remappings=remappings or None,
        parameters=parameters,
        arguments=list(node.arguments),
        ros_arguments=security.node_arguments(node) if security else None,
        output="screen",
    )


def _include_action(include, namespace: str, security: GraphSecurity | None):
    """An included launch file (the drivers): in the graph's namespace and, with security:=true, the
    drivers' enclave (its nodes take no arguments of ours: ROS_SECURITY_ENCLAVE_OVERRIDE, scoped to
    the group)."""
    source = PythonLaunchDescriptionSource(str(package_share(include.package) / "launch" / include.launch))
    included = IncludeLaunchDescription(
        source, launch_arguments={k: str(v) for k, v in include.arguments.items()}.items()
    )
    scope = [PushRosNamespace(namespace)] if namespace else []
    scope += [SetEnvironmentVariable(k, v) for k, v in (security.include_environment() if security else {}).items()]
    return GroupAction([*scope, included]) if scope else included

"""Turn a graph file (world4rl_bringup.graph) into a ROS 2 launch description.

Only the launch files import this module, and only where ROS 2 is installed from apt (the robot
PC image): `launch` and `launch_ros` are not on PyPI, so the development venv runs the very same
resolved graph through world4rl_bringup.graph_runner instead.

The graph argument `namespace` (e.g. `namespace:=robot_a`) puts every node in that namespace, with
/clock remapped to the graph's own sim clock (as graph_runner does), and pushes it onto every
included launch file (GroupAction + PushRosNamespace), so the drivers move along with the stack.
"""

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

from world4rl_bringup.graph import load_graph, package_share, resolve
from world4rl_bringup.graph_runner import namespace_remappings


def generate_graph_launch_description(graph_name: str) -> LaunchDescription:
    graph = load_graph(graph_name)
    declared = [
        DeclareLaunchArgument(
            arg.name, default_value=arg.default, description=arg.description, choices=list(arg.choices) or None
        )
        for arg in graph.arguments.values()
    ]
    profile = package_share("world4rl_bringup") / "config" / "fastdds_shm.xml"

    def setup(context):
        args = {name: LaunchConfiguration(name).perform(context) for name in graph.arguments}
        resolved = resolve(graph, args)
        namespace = resolved.namespace
        remappings = [(k, v) for k, v in namespace_remappings(namespace).items() if k != "__ns"]
        actions = []
        for node in resolved.nodes:
            parameters = [str(path) for path in node.params_file_paths()]
            if node.parameters:
                parameters.append(node.parameters)
            actions.append(
                Node(
                    package=node.package,
                    executable=node.executable,
                    name=node.name,
                    namespace=namespace or None,
                    remappings=remappings or None,
                    parameters=parameters,
                    arguments=list(node.arguments),
                    output="screen",
                )
            )
        for include in resolved.includes:
            source = PythonLaunchDescriptionSource(str(package_share(include.package) / "launch" / include.launch))
            included = IncludeLaunchDescription(
                source, launch_arguments={k: str(v) for k, v in include.arguments.items()}.items()
            )
            actions.append(GroupAction([PushRosNamespace(namespace), included]) if namespace else included)
        return actions

    return LaunchDescription(
        [
            *declared,
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile)),
            OpaqueFunction(function=setup),
        ]
    )

"""Turn a graph file (world4rl_bringup.graph) into a ROS 2 launch description.

Only the launch files import this module, and only where ROS 2 is installed from apt (the robot
PC image): `launch` and `launch_ros` are not on PyPI, so the development venv runs the very same
resolved graph through world4rl_bringup.graph_runner instead.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from world4rl_bringup.graph import load_graph, package_share, resolve


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
                    parameters=parameters,
                    arguments=list(node.arguments),
                    output="screen",
                )
            )
        for include in resolved.includes:
            source = PythonLaunchDescriptionSource(str(package_share(include.package) / "launch" / include.launch))
            actions.append(
                IncludeLaunchDescription(
                    source, launch_arguments={k: str(v) for k, v in include.arguments.items()}.items()
                )
            )
        return actions

    return LaunchDescription(
        [
            *declared,
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile)),
            OpaqueFunction(function=setup),
        ]
    )

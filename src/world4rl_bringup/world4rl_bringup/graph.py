"""Node graphs as data: one YAML file per graph, read by both `ros2 launch` and the `world4rl` CLI.

A graph file (config/graphs/NAME.yaml in world4rl_bringup) declares launch arguments and the
nodes (and, for hardware, the launch files to include) with the conditions under which they run.
`resolve(graph, args)` turns it into the concrete list of nodes for those arguments; the launch
files (launch/*.launch.py) and the CLI's process runner both start exactly that list, so what CI
tests through the CLI is what `ros2 launch` starts on the robot PC.

Format:

    description: one line
    arguments:
      robot: {default: sim, choices: [sim, franka], description: ...}
    nodes:
      - name: sim_robot                       # node name (remapped with __node:=)
        package: world4rl_sim                 # for ros2 launch
        executable: sim_robot                 # for ros2 launch
        module: world4rl_sim.sim_robot_node   # for the CLI (python -m); null: needs ros2 launch
        if: {robot: sim}                      # all listed arguments must match (a list: any of)
        params_files: [world4rl_sim/config/sim_robot.yaml]   # PACKAGE/path inside share/PACKAGE
        parameters: {task: "${task}"}         # "${arg}" substitutes a launch argument,
                                              # "${share:PACKAGE}" the package's share directory
        arguments: [fr3_arm_controller]       # command-line arguments before --ros-args
    includes:
      - package: franka_bringup
        launch: franka.launch.py
        if: {robot: franka}
        arguments: {robot_ip: "${robot_ip}"}

Namespace: a graph that declares the argument `namespace` (both of the stack's graphs do) starts
every node, and every launch include, in that ROS namespace ('' = the root, the default). Every
topic and service name the stack's nodes use is relative (world4rl_spec.topics), so the whole
graph moves there: `namespace:=robot_a` gives /robot_a/joint_states, /robot_a/policy_runner/arm, and
so on, and two graphs in different namespaces share one ROS domain without crosstalk. The one
absolute name a node may subscribe to, the ROS time source's /clock, is remapped to the graph's own
sim clock (world4rl_spec.topics.SIM_CLOCK) in a namespace.

Security: a graph that declares the argument `security` (both of the stack's graphs do) runs, with
`security:=true`, every node in its SROS2 enclave: a node with a module in /world4rl/NAME, a node
without one and every launch include (the drivers) in /world4rl/drivers (world4rl_bringup.security,
which also writes the access policy of those enclaves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from world4rl_spec.topics import normalize_namespace

NAMESPACE_ARGUMENT = "namespace"
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHARE = re.compile(r"\$\{share:([A-Za-z_][A-Za-z0-9_]*)\}")


class GraphError(ValueError):
    """A graph file or a launch argument is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    name: str
    package: str
    executable: str
    module: str | None
    params_files: tuple[str, ...] = ()  # PACKAGE/relative/path, resolved with package_share()
    parameters: dict = field(default_factory=dict)
    arguments: tuple[str, ...] = ()

    def params_file_paths(self) -> list[Path]:
        return [package_share(entry.split("/", 1)[0]) / entry.split("/", 1)[1] for entry in self.params_files]


@dataclass(frozen=True)
class IncludeSpec:
    package: str
    launch: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    name: str
    path: Path
    description: str
    arguments: dict[str, Argument]
    nodes: tuple[dict, ...]
    includes: tuple[dict, ...]


@dataclass(frozen=True)
class ResolvedGraph:
    graph: Graph
    args: dict[str, str]
    nodes: tuple[NodeSpec, ...]
    includes: tuple[IncludeSpec, ...]

    @property
    def namespace(self) -> str:
        """The ROS namespace every node starts in: '' (the root) or '/a/b' (argument `namespace`)."""
        return normalize_namespace(self.args.get(NAMESPACE_ARGUMENT, ""))


def package_share(package: str) -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(package))


def graph_path(name: str) -> Path:
    return package_share("world4rl_bringup") / "config" / "graphs" / f"{name}.yaml"


def load_graph(name_or_path: str | Path) -> Graph:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = graph_path(str(name_or_path))
    if not path.is_file():
        raise GraphError(f"{path}: no such graph file")
    data = yaml.safe_load(path.read_text()) or {}
    arguments = {}
    for arg_name, spec in (data.get("arguments") or {}).items():
        if not isinstance(spec, dict) or "default" not in spec or "description" not in spec:
            raise GraphError(f"{path}: arguments.{arg_name} needs 'default' and 'description'")
        choices = tuple(str(c) for c in spec.get("choices", ()))
        default = str(spec["default"])
        if choices and default not in choices:
            raise GraphError(f"{path}: arguments.{arg_name}: default {default!r} is not one of {choices}")
        arguments[arg_name] = Argument(arg_name, default, str(spec["description"]), choices)
    nodes = tuple(data.get("nodes") or ())
    for index, node in enumerate(nodes):
        missing = {"name", "package", "executable"} - set(node)
        if missing:
            raise GraphError(f"{path}: nodes[{index}] lacks {sorted(missing)}")
        _check_condition(path, f"nodes[{index}] ({node['name']})", node.get("if"), arguments)
    includes = tuple(data.get("includes") or ())
    for index, include in enumerate(includes):
        if not {"package", "launch"} <= set(include):
            raise GraphError(f"{path}: includes[{index}] needs 'package' and 'launch'")
        _check_condition(path, f"includes[{index}]", include.get("if"), arguments)
    return Graph(path.stem, path, str(data.get("description", "")), arguments, nodes, includes)


def _check_condition(path: Path, where: str, condition, arguments: dict[str, Argument]) -> None:
    for arg_name, wanted in (condition or {}).items():
        if arg_name not in arguments:
            raise GraphError(f"{path}: {where}: condition on undeclared argument {arg_name!r}")
        choices = arguments[arg_name].choices
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if choices and str(value) not in choices:
                raise GraphError(f"{path}: {where}: {arg_name}={value!r} is not one of {choices}")


def _applies(condition, args: dict[str, str]) -> bool:
    for arg_name, wanted in (condition or {}).items():
        allowed = [str(v) for v in wanted] if isinstance(wanted, list) else [str(wanted)]
        if args[arg_name] not in allowed:
            return False
    return True


def _substitute(value, args: dict[str, str], where: str, typed: bool = True):
    """Replace ${arg} / ${share:PKG}. With `typed`, a value that is exactly one substitution takes
    the argument's YAML type (node parameters); launch-include arguments stay strings."""
    if isinstance(value, dict):
        return {k: _substitute(v, args, f"{where}.{k}", typed) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args, where, typed) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    value = _SHARE.sub(lambda m: str(package_share(m.group(1))), value)
    for name in _SUBSTITUTION.findall(value):
        if name not in args:
            raise GraphError(f"{where}: ${{{name}}} names no launch argument")
    whole = _SUBSTITUTION.fullmatch(value)
    text = _SUBSTITUTION.sub(lambda m: args[m.group(1)], value)
    return yaml.safe_load(text) if typed and whole and text != "" else text


def resolve(graph: Graph, args: dict[str, str] | None = None) -> ResolvedGraph:
    """The nodes and includes that run for these launch arguments (defaults fill the rest)."""
    given = {k: str(v) for k, v in (args or {}).items()}
    unknown = set(given) - set(graph.arguments)
    if unknown:
        raise GraphError(
            f"{graph.path}: unknown launch argument(s) {sorted(unknown)}; known: {sorted(graph.arguments)}"
        )
    values = {name: given.get(name, arg.default) for name, arg in graph.arguments.items()}
    for name, value in values.items():
        choices = graph.arguments[name].choices
        if choices and value not in choices:
            raise GraphError(f"launch argument {name}:={value!r} is not one of {list(choices)} ({graph.path})")
    try:
        normalize_namespace(values.get(NAMESPACE_ARGUMENT, ""))
    except ValueError as exc:
        raise GraphError(f"launch argument {NAMESPACE_ARGUMENT}: {exc} ({graph.path})") from None
    nodes = []
    for node in graph.nodes:
        if not _applies(node.get("if"), values):
            continue
        where = f"{graph.path}: node {node['name']}"
        nodes.append(
            NodeSpec(
                name=node["name"],
                package=node["package"],
                executable=node["executable"],
                module=node.get("module"),
                params_files=tuple(str(f) for f in _substitute(list(node.get("params_files") or []), values, where)),
                parameters=_substitute(dict(node.get("parameters") or {}), values, where),
                arguments=tuple(str(a) for a in _substitute(list(node.get("arguments") or []), values, where)),
            )
        )
    includes = [
        IncludeSpec(
            inc["package"],
            inc["launch"],
            _substitute(dict(inc.get("arguments") or {}), values, graph.path.name, typed=False),
        )
        for inc in graph.includes
        if _applies(inc.get("if"), values)
    ]
    return ResolvedGraph(graph, values, tuple(nodes), tuple(includes))


def add_namespace_argument(parser) -> None:
    """The graph drivers' --namespace (the graphs' launch argument of the same name)."""

    def namespace(text: str) -> str:
        import argparse

        try:
            return normalize_namespace(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--namespace",
        type=namespace,
        default="",
        help="ROS namespace of the whole graph, and of this command's own node (default: the root); "
        "e.g. robot_a: two robots share one ROS domain without crosstalk",
    )

"""SROS2 for the stack's graphs: who may command the arm, as an access policy and its enclaves.

Each process of a graph (config/graphs/*.yaml) runs in an enclave of its own, named after its node:
/world4rl/policy_runner, /world4rl/action_executor, ... (in a namespace: /world4rl/robot_a/...).
Processes of other packages (franka_ros2 launched by a graph's include, the controller spawner,
realsense2_camera: every graph node without a module) share /world4rl/drivers. Beside the graphs:
/world4rl/operator, for the person's `ros2 service call` / `ros2 topic echo` and the `world4rl
collect|deploy --attach` session (ROS_SECURITY_ENCLAVE_OVERRIDE in that shell), and
/world4rl/keyboard_teleop.

`policy_xml()` writes the access policy in sros2's policy format (version 0.2.0, what
`ros2 security generate_artifacts -p` turns into each enclave's signed DDS permissions):
- only policy_runner (deploy) and action_executor (collect) may publish the arm command topic
  their robot profile configures (command_mode / command_topic) and send gripper move / grasp
  goals; only demonstrators (the sim's scripted expert, keyboard_teleop) publish the actions the
  executor turns into commands;
- only the operator may call the arm / new_episode services, the recorder's and the sim's;
- every stack node may do what its code does (node_access; test/test_security.py checks it against
  the live sim graphs) plus what every rclpy node needs: /rosout, /parameter_events, its own
  parameter and type-description services (~/*), and the clock;
- the drivers may do anything except publish the command topics or the actions, send gripper
  move / grasp goals, or call or answer the operator's services: sros2 writes an enclave's DENY rules ahead of
  its ALLOW rules, and DDS Security applies the first rule that matches, so the DENY wins.

`governance_xml()` is the domain's governance (GOVERNANCE below); `world4rl security keystore`
puts it into a new keystore before `ros2 security create_keystore`, which signs it. `permitted()`
evaluates a policy the way the generated permissions are enforced (ros2's DDS names, fnmatch
patterns, deny before allow, default deny), for tests and for the audit `world4rl security` prints.

At run time (`security:=true` on a graph; graph_security): every node gets `--enclave PATH`, the
included drivers ROS_SECURITY_ENCLAVE_OVERRIDE, and every process ROS_SECURITY_ENABLE=true and
ROS_SECURITY_STRATEGY=Enforce, with the keystore from ROS_SECURITY_KEYSTORE.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from world4rl_spec import topics

ENCLAVE_ROOT = "/world4rl"
DRIVERS = "drivers"
OPERATOR = "operator"
TELEOP = "keyboard_teleop"
SECURITY_ARGUMENT = "security"  # the graphs' launch argument: "true" runs every node in its enclave
GRAPHS = ("collect", "deploy")
POLICY_VERSION = "0.2.0"  # sros2's policy.xsd fixes it
ENCLAVE_OVERRIDE = "ROS_SECURITY_ENCLAVE_OVERRIDE"

# Access kinds of sros2's policy: element group, element and attribute for each.
KINDS = {
    "publish": ("topics", "topic"),
    "subscribe": ("topics", "topic"),
    "reply": ("services", "service"),
    "request": ("services", "service"),
    "execute": ("actions", "action"),
    "call": ("actions", "action"),
}

# The arm command topic of each command mode, and the node's default mode (world4rl_policy's
# declare_command_params; the live check in test/test_security.py catches a drift).
COMMAND_TOPICS = {"trajectory": topics.ARM_TRAJECTORY, "forward_position": topics.ARM_FORWARD_POSITION}
DEFAULT_COMMAND_MODE = "trajectory"
GRIPPER_GOALS = (topics.GRIPPER_MOVE, topics.GRIPPER_GRASP)
GRIPPER_ACTIONS = (*GRIPPER_GOALS, topics.GRIPPER_HOMING)
# Services only the operator may call: arming, episodes, recording, the sim's reset.
OPERATOR_SERVICES = (
    topics.POLICY_ARM,
    topics.POLICY_NEW_EPISODE,
    topics.EXECUTOR_ARM,
    topics.EXECUTOR_NEW_EPISODE,
    topics.RECORDER_START,
    topics.RECORDER_STOP,
    topics.RECORDER_DISCARD,
    topics.SIM_RESET,
)
# What every rclpy / rclcpp node of the stack needs besides its own topics (absolute names stay
# as they are; the clock is relative: the graphs remap /clock to their own in a namespace).
NODE_BASICS = {
    "publish": ("/rosout", "/parameter_events"),
    "subscribe": (topics.SIM_CLOCK,),
    "reply": ("~/*",),
}

# The governance every enclave of the keystore shares (the DDS Security domain rule, in the
# order governance.xsd wants): only authenticated participants whose permissions allow the domain
# join; discovery, liveliness and data are encrypted, every RTPS message is signed, and every
# topic's readers and writers are checked against their participant's permissions.
GOVERNANCE = {
    "allow_unauthenticated_participants": "false",
    "enable_join_access_control": "true",
    "discovery_protection_kind": "ENCRYPT",
    "liveliness_protection_kind": "ENCRYPT",
    "rtps_protection_kind": "SIGN",
}
GOVERNANCE_TOPIC_RULE = {
    "topic_expression": "*",
    "enable_discovery_protection": "true",
    "enable_liveliness_protection": "true",
    "enable_read_access_control": "true",
    "enable_write_access_control": "true",
    "metadata_protection_kind": "ENCRYPT",
    "data_protection_kind": "ENCRYPT",
}


@dataclass
class Access:
    """What one enclave may do, by access kind (KINDS): ROS names, relative to the graph's namespace
    (or absolute, or '~/...' in the node's own), with fnmatch wildcards; `deny` wins over `allow`."""

    node: str  # the profile's node name: what '~' names expand with
    allow: dict[str, set[str]] = field(default_factory=dict)
    deny: dict[str, set[str]] = field(default_factory=dict)

    def add(self, rules: Mapping[str, Iterable[str]], deny: bool = False) -> Access:
        target = self.deny if deny else self.allow
        for kind, names in rules.items():
            if kind not in KINDS:
                raise ValueError(f"unknown access kind {kind!r}; one of {sorted(KINDS)}")
            target.setdefault(kind, set()).update(names)
        return self


# ---------------------------------------------------------------------------- the nodes' access


def command_topic(params: Mapping) -> str:
    """The arm command topic an arm-moving node publishes with these parameters."""
    mode = params.get("command_mode", DEFAULT_COMMAND_MODE)
    if mode not in COMMAND_TOPICS:
        raise ValueError(f"command_mode {mode!r} is not one of {sorted(COMMAND_TOPICS)}")
    return params.get("command_topic") or COMMAND_TOPICS[mode]


def _recorded_topics(params: Mapping) -> list[str]:
    if params.get("topics"):
        return list(params["topics"])
    from world4rl_bringup.episode_recorder_node import DEFAULT_TOPICS

    return list(DEFAULT_TOPICS)


def node_access(module: str, params: Mapping) -> dict[str, tuple[str, ...]]:
    """The topics, services and actions the stack's node `module` uses with parameters `params`."""
    if module == "world4rl_sim.sim_robot_node":
        return {
            "publish": (
                topics.JOINT_STATES,
                topics.CAMERA_IMAGE,
                topics.CAMERA_INFO,
                topics.SIM_SUCCESS,
                topics.SIM_EXPERT_ACTION,
                topics.SIM_CLOCK,
            ),
            "subscribe": (topics.ARM_TRAJECTORY,),
            "reply": (topics.SIM_RESET,),
            "execute": GRIPPER_ACTIONS,
        }
    if module == "world4rl_sim.expert_demonstrator_node":
        return {"publish": (topics.ACTION,), "subscribe": (topics.SIM_EXPERT_ACTION,)}
    if module == "world4rl_bringup.camera_node":
        return {"publish": (topics.CAMERA_IMAGE, topics.CAMERA_INFO)}
    if module == "world4rl_bringup.keyboard_teleop_node":
        return {"publish": (topics.ACTION,)}
    if module == "world4rl_bringup.episode_recorder_node":
        return {
            "publish": (topics.EPISODE_INFO, topics.RECORDER_STATUS),
            "subscribe": tuple(_recorded_topics(params)),
            "reply": (topics.RECORDER_START, topics.RECORDER_STOP, topics.RECORDER_DISCARD),
        }
    if module == "world4rl_policy.action_executor_node":
        return {
            "publish": (command_topic(params), topics.POLICY_STATUS),
            "subscribe": (topics.JOINT_STATES, topics.ACTION),
            "reply": (topics.EXECUTOR_ARM, topics.EXECUTOR_NEW_EPISODE),
            "call": GRIPPER_GOALS,
        }
    if module == "world4rl_policy.policy_runner_node":
        image = params.get("image_topic") or topics.CAMERA_IMAGE
        return {
            "publish": (command_topic(params), topics.POLICY_STATUS),
            "subscribe": (image, topics.JOINT_STATES, topics.GRIPPER_JOINT_STATES),
            "reply": (topics.POLICY_ARM, topics.POLICY_NEW_EPISODE),
            "call": GRIPPER_GOALS,
        }
    raise KeyError(
        f"no access rules for node module {module!r}: add what it publishes, subscribes, serves and "
        "calls to world4rl_bringup.security.node_access"
    )


def _key_pattern(key: str) -> re.Pattern:
    """A parameter file's node key ('/**', '/**/recorder', 'policy_runner', '/a/*/b') as a pattern
    of fully qualified node names, as rcl matches them."""
    tokens = key.strip("/").split("/")
    parts = [".*" if t == "**" else "[^/]*" if t == "*" else re.escape(t) for t in tokens]
    return re.compile("/" + "/".join(parts).replace(".*/", "(.*/)?"))


def node_parameters(node, namespace: str = "") -> dict:
    """The parameters a graph node (world4rl_bringup.graph.NodeSpec) starts with: its parameter
    files in order (the sections that apply to it), then its own parameters."""
    fqn = f"{namespace}/{node.name}"
    merged: dict = {}
    for path in node.params_file_paths():
        data = yaml.safe_load(Path(path).read_text()) or {}
        for key, section in data.items():
            if isinstance(section, dict) and _key_pattern(str(key)).fullmatch(fqn):
                merged.update(section.get("ros__parameters") or {})
    merged.update(node.parameters)
    return merged


# ------------------------------------------------------------------------------------ enclaves


def enclave_path(name: str, namespace: str = "") -> str:
    """The enclave of the process named `name` in a graph in `namespace` ('' or '/robot_a')."""
    return f"{ENCLAVE_ROOT}{topics.normalize_namespace(namespace)}/{name}"


def enclave_name(node) -> str:
    """A graph node's enclave name: its own, or the drivers' for a node of another package."""
    return node.name if node.module else DRIVERS


COMMANDERS = frozenset({"world4rl_policy.policy_runner_node", "world4rl_policy.action_executor_node"})


def _graph_nodes(graphs: Iterable[str | Path]) -> Iterable:
    """Every node of the graphs, once for each combination of their arguments' choices."""
    from world4rl_bringup.graph import load_graph, resolve

    for graph in map(load_graph, graphs):
        choices = {name: arg.choices for name, arg in graph.arguments.items() if arg.choices}
        for values in itertools.product(*choices.values()):
            yield from resolve(graph, dict(zip(choices, values, strict=True))).nodes


def graph_enclaves(graphs: Iterable[str | Path] = GRAPHS, namespace: str = "") -> dict[str, Access]:
    """The enclave of every stack node of the graphs (whatever the arguments), with its access."""
    enclaves: dict[str, Access] = {}
    for node in _graph_nodes(graphs):
        if enclave_name(node) != DRIVERS:
            access = enclaves.setdefault(node.name, Access(node.name).add(NODE_BASICS))
            access.add(node_access(node.module, node_parameters(node, namespace)))
    return enclaves


def command_topics(graphs: Iterable[str | Path] = GRAPHS, namespace: str = "") -> set[str]:
    """The arm command topics to guard: both modes' and whatever the graphs' runner and executor
    are configured to publish (their robot profiles' command_mode / command_topic)."""
    configured = {command_topic(node_parameters(n, namespace)) for n in _graph_nodes(graphs) if n.module in COMMANDERS}
    return set(COMMAND_TOPICS.values()) | configured


def policy_enclaves(graphs: Iterable[str | Path] = GRAPHS, namespace: str = "") -> dict[str, Access]:
    """The graphs' enclaves, the drivers', the operator's and keyboard_teleop's, by enclave name."""
    graphs = tuple(graphs)
    enclaves = graph_enclaves(graphs, namespace)
    enclaves[TELEOP] = Access(TELEOP).add(NODE_BASICS).add(node_access("world4rl_bringup.keyboard_teleop_node", {}))
    guarded = {
        "publish": _anywhere(command_topics(graphs, namespace) | {topics.ACTION}),
        "call": _anywhere(GRIPPER_GOALS),
        "request": _anywhere(OPERATOR_SERVICES),  # nor answer them in the stack's place
        "reply": _anywhere(OPERATOR_SERVICES),
    }
    enclaves[DRIVERS] = Access(DRIVERS).add({kind: ("/*",) for kind in KINDS}).add(guarded, deny=True)
    # The person's tools: read everything, call any service of the graph (ros2 param too) and the
    # gripper's homing; reply for their own nodes' parameter services, not as the stack's services.
    # Any service includes an action's goal service: gripper goals are denied explicitly.
    operator = Access(OPERATOR).add(NODE_BASICS)
    operator.add({"subscribe": ("*", "/rosout", "/parameter_events"), "request": ("*",), "reply": ("/*",)})
    operator.add({"call": (topics.GRIPPER_HOMING,)})
    denied = {"reply": _anywhere(OPERATOR_SERVICES), "call": _anywhere(GRIPPER_GOALS)}
    enclaves[OPERATOR] = operator.add(denied, deny=True)
    return enclaves


def _anywhere(names: Iterable[str]) -> list[str]:
    """Relative names as patterns of that name in any namespace ('/*NAME'): the DENY rules of an
    enclave allowed '/*' hold for every robot that shares the keystore, not only its own."""
    return sorted(name if name.startswith("/") else "/*" + name for name in names)


def policy_xml(graphs: Iterable[str | Path] = GRAPHS, namespace: str = "") -> str:
    """The sros2 policy (policy.xsd 0.2.0) of every enclave, for a graph in `namespace`."""
    namespace = topics.normalize_namespace(namespace)
    root = ET.Element("policy", version=POLICY_VERSION)
    enclaves_element = ET.SubElement(root, "enclaves")
    for name, access in sorted(policy_enclaves(graphs, namespace).items()):
        enclave = ET.SubElement(enclaves_element, "enclave", path=enclave_path(name, namespace))
        profile = ET.SubElement(ET.SubElement(enclave, "profiles"), "profile", ns=namespace or "/", node=access.node)
        for qualifier, rules in (("DENY", access.deny), ("ALLOW", access.allow)):
            for kind in KINDS:
                if rules.get(kind):
                    group, element = KINDS[kind]
                    parent = ET.SubElement(profile, group, {kind: qualifier})
                    for ros_name in sorted(rules[kind]):
                        ET.SubElement(parent, element).text = ros_name
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def governance_xml(domain_id: int) -> str:
    """The domain's governance document (DDS Security), for ROS_DOMAIN_ID `domain_id`."""
    if not 0 <= int(domain_id) <= 232:
        raise ValueError(f"ROS domain id {domain_id} is outside 0..232")
    root = ET.Element("dds")
    rule = ET.SubElement(ET.SubElement(root, "domain_access_rules"), "domain_rule")
    ET.SubElement(ET.SubElement(rule, "domains"), "id").text = str(int(domain_id))
    for key, value in GOVERNANCE.items():
        ET.SubElement(rule, key).text = value
    topic_rule = ET.SubElement(ET.SubElement(rule, "topic_access_rules"), "topic_rule")
    for key, value in GOVERNANCE_TOPIC_RULE.items():
        ET.SubElement(topic_rule, key).text = value
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ------------------------------------------------------------- the policy, as DDS enforces it

_ACTION_SERVICES = ("send_goal", "cancel_goal", "get_result")
_ACTION_TOPICS = ("feedback", "status")
# rmw_fastrtps's graph topic, which sros2 grants every enclave.
_DISCOVERY = (("publish", "ros_discovery_info"), ("subscribe", "ros_discovery_info"))


def dds_operations(kind: str, name: str) -> list[tuple[str, str]]:
    """The DDS (operation, topic) pairs a ROS access of `kind` to the fully qualified `name` needs:
    topics are rt/NAME, a service's request rq/NAMERequest and its reply rr/NAMEReply, an action
    its three services and two topics under NAME/_action/."""
    if kind in ("publish", "subscribe"):
        return [(kind, f"rt{name}")]
    if kind in ("request", "reply"):
        asks, answers = ("publish", "subscribe") if kind == "request" else ("subscribe", "publish")
        return [(asks, f"rq{name}Request"), (answers, f"rr{name}Reply")]
    if kind in ("call", "execute"):
        service_kind, topic_kind = ("request", "subscribe") if kind == "call" else ("reply", "publish")
        ops = [op for s in _ACTION_SERVICES for op in dds_operations(service_kind, f"{name}/_action/{s}")]
        return ops + [(topic_kind, f"rt{name}/_action/{t}") for t in _ACTION_TOPICS]
    raise ValueError(f"unknown access kind {kind!r}; one of {sorted(KINDS)}")


def qualify(name: str, namespace: str, node: str) -> str:
    """A policy name as the node `node` in `namespace` ('/' or '/a') resolves it."""
    if name.startswith("/"):
        return name
    base = namespace if namespace.endswith("/") else namespace + "/"
    return base + node + name[1:] if name.startswith("~") else base + name


@dataclass
class Grant:
    """One enclave's permissions: (operation, DDS topic pattern) rules; deny first, default deny."""

    deny: list[tuple[str, str]] = field(default_factory=list)
    allow: list[tuple[str, str]] = field(default_factory=lambda: list(_DISCOVERY))

    def permits(self, operation: str, dds_topic: str) -> bool:
        def matches(rules):
            return any(op == operation and fnmatch.fnmatchcase(dds_topic, p) for op, p in rules)

        return not matches(self.deny) and matches(self.allow)

    def allows(self, kind: str, name: str) -> bool:
        """Whether every DDS operation of a ROS access (dds_operations) is permitted."""
        return all(self.permits(op, topic) for op, topic in dds_operations(kind, name))


def read_policy(text: str) -> dict[str, Grant]:
    """An sros2 policy document's grants, by enclave path (the permissions generate_artifacts writes)."""
    grants: dict[str, Grant] = {}
    for enclave in ET.fromstring(text).iter("enclave"):
        grant = grants.setdefault(enclave.get("path"), Grant())
        for profile in enclave.iter("profile"):
            for group in profile:
                for kind, qualifier in group.attrib.items():
                    rules = grant.deny if qualifier == "DENY" else grant.allow
                    for element in group:
                        name = qualify(element.text.strip(), profile.get("ns"), profile.get("node"))
                        rules.extend(dds_operations(kind, name))
    return grants


def who_may(grants: Mapping[str, Grant], kind: str, name: str, namespace: str = "") -> list[str]:
    """The enclaves whose grants allow the ROS access `kind` to `name` (relative: in `namespace`)."""
    fqn = qualify(name, topics.normalize_namespace(namespace) or "/", "")
    return sorted(path for path, grant in grants.items() if grant.allows(kind, fqn))


def audit(policy: str, namespace: str = "") -> list[str]:
    """One line per guarded access (the arm commands, the actions, gripper goals, arming): who may."""
    grants = read_policy(policy)
    checks = [("publish", t) for t in sorted(command_topics(GRAPHS, namespace) | {topics.ACTION})]
    checks += [("call", a) for a in GRIPPER_GOALS] + [("request", s) for s in OPERATOR_SERVICES]
    return [f"{kind} {name}: {', '.join(who_may(grants, kind, name, namespace)) or 'nobody'}" for kind, name in checks]


# ---------------------------------------------------------------------------------- run time


@dataclass(frozen=True)
class GraphSecurity:
    """How a graph's processes start with security:=true (launch_support and graph_runner)."""

    namespace: str
    environment: dict[str, str]  # for every process of the graph

    def node_arguments(self, node) -> list[str]:
        """The ROS arguments that put a graph node into its enclave."""
        return ["--enclave", enclave_path(enclave_name(node), self.namespace)]

    def include_environment(self) -> dict[str, str]:
        """For the processes of an included launch file (the drivers), which take no arguments of ours."""
        return {ENCLAVE_OVERRIDE: enclave_path(DRIVERS, self.namespace)}


def keystore_command(keystore: str, namespace: str = "") -> str:
    flag = f" --namespace {namespace.strip('/')}" if namespace else ""
    return f"ros2 run world4rl_bringup world4rl security keystore {keystore}{flag}"


def graph_security(
    resolved, environ: Mapping[str, str] = os.environ, namespace: str | None = None
) -> GraphSecurity | None:
    """The graph's security set-up (argument `security`; the graph's namespace unless `namespace`),
    or None without it; ValueError naming what is missing (the keystore, an enclave) or contradictory."""
    namespace = resolved.namespace if namespace is None else topics.normalize_namespace(namespace)
    if resolved.args.get(SECURITY_ARGUMENT, "false") != "true":
        if environ.get("ROS_SECURITY_ENABLE", "").lower() == "true":
            raise ValueError(
                "ROS_SECURITY_ENABLE=true here, but the graph runs without security:=true, so its nodes "
                "would have no enclave: pass security:=true, or unset ROS_SECURITY_ENABLE"
            )
        return None
    keystore = environ.get("ROS_SECURITY_KEYSTORE", "")
    if not keystore:
        raise ValueError(
            f"security:=true needs ROS_SECURITY_KEYSTORE, the keystore made by `{keystore_command('DIR', namespace)}`"
        )
    needed = {enclave_name(node) for node in resolved.nodes} | ({DRIVERS} if resolved.includes else set())
    paths = [enclave_path(name, namespace) for name in sorted(needed)]
    missing = [p for p in paths if not (Path(keystore) / "enclaves" / p.lstrip("/")).is_dir()]
    if missing:
        raise ValueError(
            f"keystore {keystore} has no enclave {', '.join(missing)}: create them on this machine with "
            f"`{keystore_command(keystore, namespace)}`"
        )
    environment = {
        "ROS_SECURITY_KEYSTORE": keystore,
        "ROS_SECURITY_ENABLE": "true",
        "ROS_SECURITY_STRATEGY": "Enforce",
        # An operator's shell may set it; it would put every node into the operator's enclave.
        ENCLAVE_OVERRIDE: "",
    }
    return GraphSecurity(namespace, environment)

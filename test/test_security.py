"""SROS2 for the collect and deploy graphs (issue 16): the policy, the governance, the enclaves.

The PyPI wheels' Fast DDS has no security plugins and `ros2 security` (sros2) does not install
here, so this tests what can be tested off the robot PC:
- the generated policy and governance are valid under sros2's own schemas (test/support/sros2);
- what the policy permits, evaluated as the generated DDS permissions are enforced (ros2's DDS
  names, fnmatch patterns, an enclave's DENY rules ahead of its ALLOW rules, default deny): only the
  runner / executor may command the arm (in both command modes), only the operator may call the arm
  services, the drivers are denied the command topics;
- every node of both graphs has an enclave, and the live sim graphs (real nodes, real DDS) run in
  the enclaves the policy names and use nothing the policy does not permit them;
- with security:=true, real rcl finds each node's enclave in the keystore, and the launch files
  give each node `--enclave` and the included drivers theirs.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

from world4rl_bringup import security
from world4rl_bringup.graph import GraphError, load_graph, resolve
from world4rl_spec import topics
from world4rl_testing import wait_until

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).parent / "support" / "sros2"
GRAPHS_DIR = ROOT / "src" / "world4rl_bringup" / "config" / "graphs"
COMMANDERS = {"/world4rl/policy_runner", "/world4rl/action_executor"}
# policy.xsd imports the W3C schema of the xml: namespace (for xml:base) from the network.
XML_NAMESPACE_SCHEMA = b"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
    targetNamespace="http://www.w3.org/XML/1998/namespace"><xs:attribute name="base" type="xs:anyURI"/></xs:schema>"""


def _schema(name: str):
    from lxml import etree

    class LocalXmlNamespace(etree.Resolver):
        def resolve(self, url, pubid, context):
            if url.endswith("/xml.xsd"):
                return self.resolve_string(XML_NAMESPACE_SCHEMA, context)
            return None

    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(LocalXmlNamespace())
    return etree.XMLSchema(etree.parse(str(SCHEMAS / name), parser))


def _valid(schema, text: str) -> bool:
    from lxml import etree

    return schema.validate(etree.fromstring(text.encode()))


def _graph_copies(tmp_path: Path, runner_params: dict) -> tuple[Path, Path]:
    """The two graphs, with extra parameters for the runner and the executor (e.g. a command mode)."""
    import yaml

    copies = []
    for name in security.GRAPHS:
        data = yaml.safe_load((GRAPHS_DIR / f"{name}.yaml").read_text())
        for node in data["nodes"]:
            if node["module"] in security.COMMANDERS:
                node["parameters"] = {**(node.get("parameters") or {}), **runner_params}
        copies.append(tmp_path / f"{name}.yaml")
        copies[-1].write_text(yaml.safe_dump(data))
    return copies[0], copies[1]


def _publishers(grants, topic: str) -> set[str]:
    return {path for path, grant in grants.items() if grant.allows("publish", topic)}


# ------------------------------------------------------------------------------ the documents


def test_policy_is_valid_for_sros2_in_the_root_and_in_a_namespace():
    schema = _schema("policy.xsd")
    for namespace in ("", "robot_a"):
        text = security.policy_xml(namespace=namespace)
        assert _valid(schema, text), (namespace, schema.error_log)
    # The check can fail: a rule qualifier sros2 does not know, a profile without its node.
    assert not _valid(schema, text.replace('publish="ALLOW"', 'publish="ALWAYS"', 1))
    assert not _valid(schema, text.replace(' node="policy_runner"', "", 1))


def test_governance_is_valid_and_makes_access_control_and_encryption_mandatory():
    from xml.etree import ElementTree as ET

    schema = _schema("governance.xsd")
    text = security.governance_xml(42)
    assert _valid(schema, text), schema.error_log
    rule = ET.fromstring(text).find("domain_access_rules/domain_rule")
    assert [e.text for e in rule.find("domains")] == ["42"]
    assert rule.findtext("allow_unauthenticated_participants") == "false"
    assert rule.findtext("enable_join_access_control") == "true"
    assert rule.findtext("discovery_protection_kind") == "ENCRYPT"
    assert rule.findtext("rtps_protection_kind") == "SIGN"
    (topic_rule,) = rule.find("topic_access_rules")
    assert topic_rule.findtext("topic_expression") == "*"
    assert topic_rule.findtext("enable_read_access_control") == "true"
    assert topic_rule.findtext("enable_write_access_control") == "true"
    assert topic_rule.findtext("data_protection_kind") == "ENCRYPT"
    assert not _valid(schema, text.replace("<rtps_protection_kind>SIGN", "<rtps_protection_kind>SIGNED"))
    with pytest.raises(ValueError, match=r"outside 0\.\.232"):
        security.governance_xml(233)


def test_every_node_of_both_graphs_has_an_enclave():
    grants = security.read_policy(security.policy_xml())
    expected = {"/world4rl/drivers", "/world4rl/operator", "/world4rl/keyboard_teleop"}
    for name in security.GRAPHS:
        graph = load_graph(name)
        for robot in ("sim", "franka"):
            for camera in graph.arguments["camera"].choices:
                resolved = resolve(graph, {"robot": robot, "camera": camera})
                for node in resolved.nodes:
                    path = security.enclave_path(security.enclave_name(node))
                    assert path in grants, f"{name}: node {node.name} ({robot}, {camera}) has no enclave"
                    expected.add(path)
                    assert (path == "/world4rl/drivers") == (node.module is None), node.name
    assert set(grants) == expected, set(grants) ^ expected
    # A stack node nobody wrote rules for is an error, not an enclave without access.
    with pytest.raises(KeyError, match=r"no access rules for node module 'world4rl_bringup\.new_node'"):
        security.node_access("world4rl_bringup.new_node", {})


# ------------------------------------------------------------------------ who may do what


@pytest.mark.parametrize("mode", ["trajectory", "forward_position"])
def test_only_the_runner_and_the_executor_may_command_the_arm(tmp_path, mode):
    collect, deploy = _graph_copies(tmp_path, {"command_mode": mode})
    grants = security.read_policy(security.policy_xml(graphs=(collect, deploy)))
    used = topics.qualified(security.COMMAND_TOPICS[mode])
    other = topics.qualified(next(t for m, t in security.COMMAND_TOPICS.items() if m != mode))
    assert _publishers(grants, used) == COMMANDERS
    assert _publishers(grants, other) == set(), "least privilege: the other mode's topic is nobody's"
    for goal in security.GRIPPER_GOALS:
        assert {p for p, g in grants.items() if g.allows("call", topics.qualified(goal))} == COMMANDERS
    # Only demonstrators publish the actions the executor turns into commands.
    assert _publishers(grants, topics.qualified(topics.ACTION)) == {
        "/world4rl/expert_demonstrator",
        "/world4rl/keyboard_teleop",
    }


def test_a_robot_profiles_own_command_topic_is_guarded_too(tmp_path):
    collect, deploy = _graph_copies(tmp_path, {"command_topic": "my_controller/commands"})
    text = security.policy_xml(graphs=(collect, deploy))
    grants = security.read_policy(text)
    assert _publishers(grants, "/my_controller/commands") == COMMANDERS
    assert not grants["/world4rl/drivers"].allows("publish", "/my_controller/commands")
    # With the shipped graphs nobody configures that topic, and the drivers may publish it.
    shipped = security.read_policy(security.policy_xml())
    assert shipped["/world4rl/drivers"].allows("publish", "/my_controller/commands")


def test_only_the_operator_may_call_the_arm_services_and_only_their_nodes_answer():
    for namespace in ("", "/robot_a"):
        grants = security.read_policy(security.policy_xml(namespace=namespace))
        operator = security.enclave_path(security.OPERATOR, namespace)
        for service in security.OPERATOR_SERVICES:
            name = topics.qualified(service, namespace)
            assert security.who_may(grants, "request", service, namespace) == [operator], service
            owner = security.enclave_path(service.split("/")[0], namespace)
            servers = [p for p, g in grants.items() if g.allows("reply", name)]
            assert servers == (
                [owner] if service != topics.SIM_RESET else [security.enclave_path("sim_robot", namespace)]
            )
        # The operator may read everything and set parameters, but not command the arm.
        assert grants[operator].allows("subscribe", topics.qualified(topics.JOINT_STATES, namespace))
        assert grants[operator].allows("request", f"{namespace}/policy_runner/set_parameters")
        assert not grants[operator].allows("publish", topics.qualified(topics.ARM_TRAJECTORY, namespace))
        assert not grants[operator].allows("call", topics.qualified(topics.GRIPPER_MOVE, namespace))
        assert not grants[operator].allows("reply", "/robot_b/policy_runner/arm")


def test_the_drivers_may_do_anything_but_command_the_arm():
    text = security.policy_xml()
    drivers = security.read_policy(text)["/world4rl/drivers"]
    # What franka_ros2 and realsense2_camera do.
    assert drivers.allows("publish", "/joint_states")
    assert drivers.allows("publish", "/camera/camera/color/image_raw")
    assert drivers.allows("subscribe", "/fr3_arm_controller/joint_trajectory")
    assert drivers.allows("execute", "/franka_gripper/grasp")
    assert drivers.allows("request", "/controller_manager/list_controllers")
    # What they may not, although their ALLOW rules match it: sros2 keeps the explicit DENY rules.
    for topic in security.COMMAND_TOPICS.values():
        assert drivers.permits("publish", f"rt/{topic}") is False
        assert any(fnmatch_pattern == "rt/*" for op, fnmatch_pattern in drivers.allow if op == "publish")
    assert not drivers.allows("publish", "/world4rl/action")
    assert not drivers.allows("call", "/franka_gripper/move")
    assert not drivers.allows("request", "/policy_runner/arm")
    assert not drivers.allows("reply", "/policy_runner/arm")
    from xml.etree import ElementTree as ET

    (profile,) = next(e for e in ET.fromstring(text).iter("enclave") if e.get("path") == "/world4rl/drivers").iter(
        "profile"
    )
    denied = {t.text for group in profile if group.get("publish") == "DENY" for t in group}
    assert {f"/*{topic}" for topic in security.COMMAND_TOPICS.values()} <= denied
    # A namespaced graph's drivers may not command its arm, nor another robot's on the keystore.
    in_namespace = security.read_policy(security.policy_xml(namespace="robot_a"))["/world4rl/robot_a/drivers"]
    assert in_namespace.allows("publish", "/robot_a/joint_states")
    for namespace in ("/robot_a", "/robot_b", ""):
        assert not in_namespace.allows("publish", f"{namespace}/fr3_arm_controller/joint_trajectory")
        assert not in_namespace.allows("request", f"{namespace}/policy_runner/arm")


def test_the_evaluator_applies_deny_before_allow_and_denies_by_default():
    grant = security.Grant(deny=[("publish", "rt/secret")], allow=[("publish", "rt/*")])
    assert grant.permits("publish", "rt/a/b")  # fnmatch without FNM_PATHNAME, as Fast DDS
    assert not grant.permits("publish", "rt/secret")
    assert not grant.permits("subscribe", "rt/a")
    assert security.dds_operations("request", "/x/arm") == [
        ("publish", "rq/x/armRequest"),
        ("subscribe", "rr/x/armReply"),
    ]
    assert security.qualify("~/*", "/robot_a", "runner") == "/robot_a/runner/*"
    assert security.qualify("joint_states", "/", "runner") == "/joint_states"


def test_node_parameters_follow_the_parameter_files_keys(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(
        "/**:\n  ros__parameters: {a: 1, b: 1}\n"
        "/**/rec:\n  ros__parameters: {b: 2}\n"
        "other:\n  ros__parameters: {a: 9}\n"
    )
    # A node whose parameter file lies outside any package share.
    node = types.SimpleNamespace(name="rec", parameters={"c": 3}, params_file_paths=lambda: [params])
    assert security.node_parameters(node, "/robot_a") == {"a": 1, "b": 2, "c": 3}
    runner = next(n for n in resolve(load_graph("deploy"), {"robot": "franka"}).nodes if n.name == "policy_runner")
    assert security.command_topic(security.node_parameters(runner)) == topics.ARM_TRAJECTORY
    with pytest.raises(ValueError, match="command_mode 'velocity'"):
        security.command_topic({"command_mode": "velocity"})


# ------------------------------------------------------------------- running in the enclaves


def _keystore_for(policy: str, directory: Path, skip: str = "") -> Path:
    """A keystore layout with a directory per enclave of the policy, as generate_artifacts makes it."""
    for path in security.read_policy(policy):
        if path != skip:
            (directory / "enclaves" / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return directory


def test_graph_security_sets_the_variables_and_refuses_a_keystore_without_the_enclaves(tmp_path):
    graph = load_graph("collect")
    keystore = _keystore_for(security.policy_xml(namespace="robot_a"), tmp_path / "ks")
    resolved = resolve(
        graph, {"robot": "franka", "camera": "realsense_apt", "security": "true", "namespace": "robot_a"}
    )
    setup = security.graph_security(resolved, {"ROS_SECURITY_KEYSTORE": str(keystore)})
    assert setup.environment == {
        "ROS_SECURITY_KEYSTORE": str(keystore),
        "ROS_SECURITY_ENABLE": "true",
        "ROS_SECURITY_STRATEGY": "Enforce",
        "ROS_SECURITY_ENCLAVE_OVERRIDE": "",
    }
    by_name = {n.name: setup.node_arguments(n) for n in resolved.nodes}
    assert by_name["action_executor"] == ["--enclave", "/world4rl/robot_a/action_executor"]
    assert by_name["realsense2_camera"] == ["--enclave", "/world4rl/robot_a/drivers"]
    assert setup.include_environment() == {"ROS_SECURITY_ENCLAVE_OVERRIDE": "/world4rl/robot_a/drivers"}
    with pytest.raises(ValueError, match="needs ROS_SECURITY_KEYSTORE"):
        security.graph_security(resolved, {})
    (keystore / "enclaves" / "world4rl" / "robot_a" / "episode_recorder").rmdir()
    with pytest.raises(ValueError, match=r"no enclave /world4rl/robot_a/episode_recorder: .* --namespace robot_a"):
        security.graph_security(resolved, {"ROS_SECURITY_KEYSTORE": str(keystore)})
    plain = resolve(graph, {"robot": "franka"})
    assert security.graph_security(plain, {}) is None
    with pytest.raises(ValueError, match="without security:=true"):
        security.graph_security(plain, {"ROS_SECURITY_ENABLE": "true"})


def test_the_keystore_command_places_the_governance_for_create_keystore_to_sign(tmp_path, capsys):
    from world4rl_bringup import security_cli

    keystore = tmp_path / "keystore"
    args = ["keystore", str(keystore), "--dry-run", "--domain-id", "17", "--namespace", "robot_a"]
    assert security_cli.main(args) == 0
    out = capsys.readouterr().out
    policy = keystore / "world4rl_policy_robot_a.xml"
    assert f"ROS_DOMAIN_ID=17 ros2 security create_keystore {keystore}" in out
    assert f"ROS_DOMAIN_ID=17 ros2 security generate_artifacts -k {keystore} -p {policy}" in out
    assert out.index("create_keystore") < out.index("generate_artifacts")
    assert (keystore / "enclaves" / "governance.xml").read_text() == security.governance_xml(17)
    assert policy.read_text() == security.policy_xml(namespace="robot_a")
    assert "publish fr3_arm_controller/joint_trajectory: /world4rl/robot_a/action_executor" in out
    # An existing keystore: no second create_keystore; one with another domain's governance: refused.
    (keystore / "enclaves" / "governance.p7s").write_text("signed")
    assert security_cli.main(args) == 0
    assert "create_keystore" not in capsys.readouterr().out
    assert security_cli.main([*args[:-4], "--domain-id", "18"]) == 1
    assert "another governance" in capsys.readouterr().err
    missing = security_cli.missing_artifacts(keystore, policy.read_text(), 17)
    assert str(keystore / "enclaves/world4rl/robot_a/policy_runner/permissions.p7s") in missing


# -------------------------------------------------------------------------- the launch files


class _Recorded:
    """A stand-in for one launch / launch_ros class: it keeps what it was constructed with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_standin(monkeypatch, tmp_path):
    """`launch` and `launch_ros` are not installable here (ENVIRONMENT.md): stand-ins of the
    classes launch_support uses record what the launch files would start. franka_bringup's launch
    file is found through a real ament index entry in a temporary prefix."""
    kinds = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "GroupAction", "IncludeLaunchDescription", "OpaqueFunction"],
        "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
        "launch.substitutions": [],
        "launch_ros": [],
        "launch_ros.actions": ["Node", "PushRosNamespace"],
    }
    for module_name, classes in kinds.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)

    class SetEnvironmentVariable(_Recorded):
        pass

    class LaunchConfiguration(_Recorded):
        def perform(self, context):
            return context.arguments[self.args[0]]

    sys.modules["launch.actions"].SetEnvironmentVariable = SetEnvironmentVariable
    sys.modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    prefix = tmp_path / "prefix"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/franka_bringup").write_text("")
    (prefix / "share/franka_bringup/launch").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{prefix}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    monkeypatch.delitem(sys.modules, "world4rl_bringup.launch_support", raising=False)

    def launch(graph: str, **arguments):
        """The actions the installed launch file starts with these launch arguments."""
        from world4rl_bringup.graph import package_share

        path = package_share("world4rl_bringup") / "launch" / f"{graph}.launch.py"
        spec = importlib.util.spec_from_file_location(f"{graph}_launch", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        declared = {a.args[0]: a.kwargs["default_value"] for a in description.args[0][:-1]}
        opaque = description.args[0][-1]
        context = types.SimpleNamespace(arguments={**declared, **arguments}, environment=dict(os.environ))
        return opaque.kwargs["function"](context)

    return launch


def _environment(actions) -> dict:
    return {a.args[0]: a.args[1] for a in actions if type(a).__name__ == "SetEnvironmentVariable"}


def test_the_launch_files_pass_each_node_its_enclave(launch_standin, monkeypatch, tmp_path):
    keystore = _keystore_for(security.policy_xml(), tmp_path / "ks")
    monkeypatch.setenv("ROS_SECURITY_KEYSTORE", str(keystore))
    actions = launch_standin("collect", robot="franka", camera="realsense_apt", security="true")
    env = _environment(actions)
    assert env["ROS_SECURITY_ENABLE"] == "true"
    assert env["ROS_SECURITY_STRATEGY"] == "Enforce"
    assert env["ROS_SECURITY_KEYSTORE"] == str(keystore)
    assert env["ROS_SECURITY_ENCLAVE_OVERRIDE"] == ""
    nodes = {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}
    assert set(nodes) == {"realsense2_camera", "fr3_arm_controller_spawner", "action_executor", "episode_recorder"}
    for name, kwargs in nodes.items():
        expected = "drivers" if name in ("realsense2_camera", "fr3_arm_controller_spawner") else name
        assert kwargs["ros_arguments"] == ["--enclave", f"/world4rl/{expected}"], name
    (group,) = [a for a in actions if type(a).__name__ == "GroupAction"]
    inner = group.args[0]
    assert _environment(inner) == {"ROS_SECURITY_ENCLAVE_OVERRIDE": "/world4rl/drivers"}
    assert type(inner[-1]).__name__ == "IncludeLaunchDescription"
    # Without security: no enclave, no security variables, the include as it was.
    plain = launch_standin("deploy", robot="franka", camera="realsense_apt")
    assert not {k for k in _environment(plain) if k.startswith("ROS_SECURITY")}
    assert all(a.kwargs["ros_arguments"] is None for a in plain if type(a).__name__ == "Node")
    assert [type(a).__name__ for a in plain][-1] == "IncludeLaunchDescription"
    # A keystore without the runner's enclave: the launch refuses before anything starts.
    (keystore / "enclaves/world4rl/policy_runner").rmdir()
    with pytest.raises(ValueError, match="no enclave /world4rl/policy_runner"):
        launch_standin("deploy", robot="franka", camera="realsense_apt", security="true")


# ----------------------------------------------------------------------- the live sim graphs


def _entities(node, name: str, namespace: str) -> list[tuple[str, str]]:
    """What the node `name` uses, from the ROS graph, as (access kind, fully qualified name)."""
    ns = namespace or "/"
    found = [("publish", t) for t, _ in node.get_publisher_names_and_types_by_node(name, ns)]
    found += [("subscribe", t) for t, _ in node.get_subscriber_names_and_types_by_node(name, ns)]
    found += [("reply", s) for s, _ in node.get_service_names_and_types_by_node(name, ns)]
    return found + [("request", s) for s, _ in node.get_client_names_and_types_by_node(name, ns)]


def _graph_up(ros_node, resolved, namespace: str) -> bool:
    enclaves = {n: e for n, ns, e in ros_node.get_node_names_and_namespaces_with_enclaves() if ns == (namespace or "/")}
    if not {n.name for n in resolved.nodes} <= set(enclaves):
        return False
    ready = {  # the last entity each node creates in its constructor, or a recorder's first recording
        "sim_robot": ("publish", topics.qualified(topics.SIM_CLOCK, namespace)),
        "policy_runner": ("reply", topics.qualified(topics.POLICY_NEW_EPISODE, namespace)),
        "action_executor": ("reply", topics.qualified(topics.EXECUTOR_NEW_EPISODE, namespace)),
        "episode_recorder": ("subscribe", topics.qualified(topics.JOINT_STATES, namespace)),
        "expert_demonstrator": ("subscribe", topics.qualified(topics.SIM_EXPERT_ACTION, namespace)),
    }
    return all(ready[n.name] in _entities(ros_node, n.name, namespace) for n in resolved.nodes)


@pytest.mark.ros
@pytest.mark.parametrize(("graph", "namespace"), [("collect", "/robot_c"), ("deploy", "")])
def test_the_sim_graphs_run_in_their_enclaves_within_the_policy(ros_node, tmp_path, constant_policy, graph, namespace):
    from world4rl_bringup.graph_runner import run_graph

    policy = security.policy_xml(namespace=namespace)
    grants = security.read_policy(policy)
    keystore = _keystore_for(policy, tmp_path / "ks")
    args = {"robot": "sim", "task": "reach", "security": "true", "namespace": namespace}
    if graph == "deploy":
        args["policy"] = str(constant_policy(tmp_path / "policy", [0.0, 0.0, 0.0, -1.0]))
    else:
        args["output_dir"] = str(tmp_path / "bags")  # the recorder's default is a folder in the cwd
    resolved = resolve(load_graph(graph), args)
    # The enclaves and the security variables as on the robot PC, but Fast DDS here has no
    # security plugins: ROS_SECURITY_ENABLE=false lets the nodes run, each still in its enclave.
    env = {"ROS_SECURITY_KEYSTORE": str(keystore), "ROS_SECURITY_ENABLE": "false"}
    with run_graph(resolved, tmp_path / "logs", env=env) as nodes:
        processes = list(nodes.values())
        assert wait_until(lambda: _graph_up(ros_node, resolved, namespace), 120.0, interval=0.5, nodes=processes)
        reported = {n: e for n, ns, e in ros_node.get_node_names_and_namespaces_with_enclaves()}
        used = {node.name: _entities(ros_node, node.name, namespace) for node in resolved.nodes}
        for process in processes:
            process.check_alive()
    for node in resolved.nodes:
        enclave = security.enclave_path(node.name, namespace)
        assert reported[node.name] == enclave
        assert ["--enclave", enclave] == nodes[node.name].argv[4:6]
        for kind, name in used[node.name]:
            assert grants[enclave].allows(kind, name), f"{node.name} ({enclave}) may not {kind} {name}"
    # What the check is about was among what it checked: the arm command, the arming service.
    commander = "policy_runner" if graph == "deploy" else "action_executor"
    assert ("publish", topics.qualified(topics.ARM_TRAJECTORY, namespace)) in used[commander]
    assert ("reply", f"{namespace}/{commander}/arm") in used[commander]
    assert sum(map(len, used.values())) > 40


@pytest.mark.ros
def test_rcl_finds_every_node_enclave_in_the_keystore(ros_domain, tmp_path):
    """Security on, as on the robot PC: real rcl resolves each node's --enclave in the keystore. The
    node then stops where Fast DDS built without security plugins must; a missing enclave stops it
    earlier, in rcl, naming the directory."""
    from world4rl_bringup.graph_runner import run_graph
    from world4rl_ros.node_process import NodeProcess

    policy = security.policy_xml()
    keystore = _keystore_for(policy, tmp_path / "ks", skip="/world4rl/expert_demonstrator")
    env = {"ROS_SECURITY_KEYSTORE": str(keystore)}
    args = {"robot": "sim", "task": "reach", "security": "true", "output_dir": str(tmp_path / "bags")}
    resolved = resolve(load_graph("collect"), args)
    with (
        pytest.raises(GraphError, match="no enclave /world4rl/expert_demonstrator"),
        run_graph(resolved, tmp_path / "refused", env=env),
    ):
        pass
    lone = NodeProcess(
        "world4rl_sim.expert_demonstrator_node",
        "expert_demonstrator",
        ros_args=["--enclave", "/world4rl/expert_demonstrator"],
        env={**env, "ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce"},
        log_dir=tmp_path / "lone",
    ).start()
    assert wait_until(lambda: not lone.is_running(), 120.0, interval=0.5)
    assert "enclaves/world4rl/expert_demonstrator' does not exist" in lone.stderr_tail()
    _keystore_for(policy, keystore)
    with run_graph(resolved, tmp_path / "logs", env=env) as nodes:
        assert wait_until(lambda: not any(p.is_running() for p in nodes.values()), 120.0, interval=0.5)
    assert set(nodes) == {"sim_robot", "expert_demonstrator", "action_executor", "episode_recorder"}
    for name, process in nodes.items():
        text = process.stderr_tail()
        assert process.returncode != 0, f"{name}: {text}"
        assert "does not exist" not in text, f"{name}: {text}"
        assert "security" in text.lower(), f"{name} did not stop at security: {text}"

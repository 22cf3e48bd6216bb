"""The Foxglove layouts (world4rl_bringup/config/foxglove/*.json): valid, installed, and unable to drift.

A layout is Foxglove's LayoutData, what its "Import from file..." reads: configById (panel id
"Type!key" -> config), layout (a split tree whose leaves are panel ids), globalVariables,
userNodes, playbackConfig. The panel configs carry the fields of Foxglove's panel config types
(Image: imageMode.imageTopic; Plot and StateTransitions: paths of {value, enabled,
timestampMethod}; Indicator: path, rules, fallback; RawMessages: topicPath). Every topic a layout
reads must be a world4rl_spec.topics name that a node of its graph publishes (for some choice of the
graph's arguments), and every field on a message path must exist in that topic's message type, so
renaming a topic or a field fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import importlib
import json
import re

import pytest

from world4rl_bringup import foxglove_layout
from world4rl_bringup.security import graph_enclaves
from world4rl_policy import live_view
from world4rl_spec import topics

# Panel type -> the config keys Foxglove's panel needs.
REQUIRED = {
    "Image": {"imageMode"},
    "Plot": {"paths", "showLegend", "legendDisplay", "showXAxisLabels", "showYAxisLabels", "isSynced", "xAxisVal"},
    "StateTransitions": {"paths", "isSynced"},
    "Indicator": {"path", "style", "rules", "fallbackColor", "fallbackLabel"},
    "RawMessages": {"topicPath", "diffEnabled", "diffMethod", "diffTopicPath", "showFullMessageForDiff"},
}
SPEC_TOPICS = {name: value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}
# The message type of each topic a layout may show (the stack's nodes publish these types).
MESSAGE_TYPES = {
    topics.CAMERA_IMAGE: "sensor_msgs/Image",
    topics.JOINT_STATES: "sensor_msgs/JointState",
    topics.ARM_TRAJECTORY: "trajectory_msgs/JointTrajectory",
    topics.ACTION: "world4rl_msgs/Action",
    topics.POLICY_STATUS: "world4rl_msgs/PolicyStatus",
    topics.EPISODE_INFO: "world4rl_msgs/EpisodeInfo",
    topics.RECORDER_STATUS: "std_msgs/String",
    topics.SIM_SUCCESS: "std_msgs/Bool",
}
IMAGE_CHANNELS = {live_view.CAMERA, live_view.POLICY_INPUT, live_view.PREDICTION, live_view.COMPARISON}


def load(name: str) -> dict:
    return json.loads((foxglove_layout.SOURCE_DIR / f"{name}.json").read_text())


def leaves(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    assert set(node) == {"direction", "first", "second", "splitPercentage"}, node
    assert node["direction"] in ("row", "column")
    assert 0 < node["splitPercentage"] < 100
    return leaves(node["first"]) + leaves(node["second"])


def message_class(type_name: str):
    package, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def check_fields(type_name: str, fields: list[str], path: str) -> None:
    """Each field of a message path ('points[0].positions[3]') exists, following nested messages."""
    field, *rest = fields
    name = re.fullmatch(r"([a-z_][a-z0-9_]*)(\[-?\d+\])?", field)
    assert name, f"{path}: {field!r} is not a field (with an optional index)"
    known = message_class(type_name).get_fields_and_field_types()
    assert name.group(1) in known, f"{path}: {type_name} has no field {name.group(1)!r} ({sorted(known)})"
    kind = known[name.group(1)]
    inner = re.sub(r"^sequence<(.+?)(, \d+)?>$|\[\d+\]$", r"\1", kind)
    if rest:
        assert "/" in inner, f"{path}: {name.group(1)} is a {kind}, it has no field {rest[0]!r}"
        check_fields(inner, rest, path)


def graph_publishes(graph: str) -> set[str]:
    """What the stack's nodes of `graph` publish, over every choice of its arguments."""
    return {name for access in graph_enclaves([graph]).values() for name in access.allow.get("publish", ())}


@pytest.mark.parametrize("name", foxglove_layout.LAYOUTS)
def test_shipped_layout_is_the_generated_one_and_is_installed(name):
    text = foxglove_layout.layout_text(name)
    assert (foxglove_layout.SOURCE_DIR / f"{name}.json").read_text() == text, (
        f"config/foxglove/{name}.json is stale: python -m world4rl_bringup.foxglove_layout"
    )
    assert foxglove_layout.installed_path(name).read_text() == text  # setup.cfg installs config/foxglove/*.json


@pytest.mark.parametrize("name", foxglove_layout.LAYOUTS)
def test_layout_is_foxglove_layout_data(name):
    layout = load(name)
    assert set(layout) == {"configById", "globalVariables", "userNodes", "playbackConfig", "layout"}
    assert layout["globalVariables"] == {}
    assert layout["userNodes"] == {}
    assert layout["playbackConfig"]["speed"] > 0
    ids = leaves(layout["layout"])
    assert sorted(ids) == sorted(layout["configById"]), "every panel is placed once and every placed panel has a config"
    for panel_id, config in layout["configById"].items():
        kind, _, key = panel_id.partition("!")
        assert kind in REQUIRED, panel_id
        assert re.fullmatch(r"[a-z0-9_]+", key), panel_id
        assert REQUIRED[kind] <= set(config), (panel_id, REQUIRED[kind] - set(config))
        assert config["foxglovePanelTitle"]
        for path in config.get("paths", []):
            assert {"value", "enabled", "timestampMethod"} <= set(path)
            assert path["timestampMethod"] == "receiveTime"
        for rule in config.get("rules", []):
            assert set(rule) == {"operator", "rawValue", "color", "label"}
            assert rule["operator"] == "="
        if kind == "Image":
            assert config["imageMode"]["imageTopic"].startswith("/")


@pytest.mark.parametrize("graph", ["collect", "deploy"])
def test_every_topic_a_graph_layout_shows_is_published_by_that_graph(graph):
    layout = load(graph)
    shown = foxglove_layout.referenced_topics(layout)
    published = {topics.bag_topic(name) for name in graph_publishes(graph)}
    spec = {topics.bag_topic(value) for value in SPEC_TOPICS.values()}
    assert shown <= spec, f"not world4rl_spec.topics names: {shown - spec}"
    assert shown <= published, f"{graph}'s nodes publish none of {shown - published}"
    wanted = {topics.CAMERA_IMAGE, topics.JOINT_STATES, topics.ARM_TRAJECTORY, topics.POLICY_STATUS}
    if graph == "collect":
        wanted |= {topics.ACTION, topics.EPISODE_INFO, topics.RECORDER_STATUS}
    assert {topics.bag_topic(t) for t in wanted} <= shown


@pytest.mark.parametrize("graph", ["collect", "deploy"])
def test_every_field_a_graph_layout_shows_exists_in_its_message(graph):
    types = {topics.bag_topic(t): kind for t, kind in MESSAGE_TYPES.items()}
    for config in load(graph)["configById"].values():
        paths = [p["value"] for p in config.get("paths", [])] + [config.get("path"), config.get("topicPath")]
        for path in filter(None, paths):
            topic, *fields = path.split(".")
            assert topic in types, f"{path}: no message type known for {topic}"
            if fields:
                check_fields(types[topic], fields, path)


def test_the_checks_catch_a_renamed_field_or_topic():
    with pytest.raises(AssertionError, match="no field 'latency'"):
        check_fields("world4rl_msgs/PolicyStatus", ["latency"], "/world4rl/policy_status.latency")
    with pytest.raises(AssertionError, match="has no field 'position'"):
        check_fields("trajectory_msgs/JointTrajectory", ["points[0]", "position[1]"], "p")
    check_fields("trajectory_msgs/JointTrajectory", ["points[0]", "positions[1]"], "p")
    layout = load("deploy")
    layout["configById"]["Image!camera"]["imageMode"]["imageTopic"] = "/camera/color/image_raw"
    assert "/camera/color/image_raw" in foxglove_layout.referenced_topics(layout)
    assert "/camera/color/image_raw" not in {topics.bag_topic(n) for n in graph_publishes("deploy")}


def test_live_view_layout_shows_the_live_view_channels():
    layout = load("live_view")
    shown = foxglove_layout.referenced_topics(layout)
    assert shown <= set(live_view.CHANNELS), shown - set(live_view.CHANNELS)
    images = {c["imageMode"]["imageTopic"] for c in layout["configById"].values() if "imageMode" in c}
    assert images == IMAGE_CHANNELS  # camera, policy input, prediction and comparison side by side
    for config in layout["configById"].values():
        for path in [p["value"] for p in config.get("paths", [])] + [config.get("path")]:
            if path and "." in path:
                channel, field = path.split(".", 1)
                assert field in live_view.JSON_SCHEMAS[channel]["properties"], path


def test_a_namespaced_graph_gets_its_names(tmp_path):
    assert foxglove_layout.main(["--namespace", "robot_a", "--out", str(tmp_path)]) == 0
    shown = foxglove_layout.referenced_topics(json.loads((tmp_path / "deploy.json").read_text()))
    assert f"/robot_a/{topics.JOINT_STATES}" in shown
    assert all(t.startswith("/robot_a/") for t in shown), shown
    live = foxglove_layout.referenced_topics(json.loads((tmp_path / "live_view.json").read_text()))
    assert live <= set(live_view.CHANNELS)  # not ROS topics: no namespace

"""Foxglove layouts of the collect and deploy graphs and of the deploy live view.

Built here from world4rl_spec.topics (the one source of the names) and shipped as
config/foxglove/{collect,deploy,live_view}.json, installed to share/world4rl_bringup/config/foxglove/.
The files are Foxglove's layout format, as its "Import from file..." reads it and "Export" writes
it: `configById` (one config per panel, keyed "PanelType!id"), `layout` (the split tree of panel ids),
`globalVariables`, `userNodes`, `playbackConfig`. test/test_foxglove_layout.py checks that the files
are what this module builds, that every panel has a config, and that every topic they show is one a
node of the graph publishes, so a renamed topic cannot leave a layout behind.

- collect: the camera, joint positions, the demonstrator's actions (/world4rl/action, also in the
  bags), the executor's joint targets and status, the sim's success flag, EpisodeInfo and the
  recorder's health.
- deploy: the camera, joint positions, the runner's joint targets, and PolicyStatus: armed, faults
  and refusals over time, latency and OOD score.
- live_view: the channels of `world4rl deploy --live-view` (world4rl_policy.live_view).

Bags store topics without the graph's namespace, so the shipped layouts fit every bag. For a live
graph started in a namespace, write layouts with its names:
`python -m world4rl_bringup.foxglove_layout --namespace robot_a --out DIR`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from world4rl_policy import live_view
from world4rl_spec import ACTION_NAMES, ARM_JOINT_NAMES, FINGER_JOINT_NAMES, topics

LAYOUTS = ("collect", "deploy", "live_view")
SOURCE_DIR = Path(__file__).resolve().parents[1] / "config" / "foxglove"
GREEN, GREY, RED = "#68e24a", "#a0a0a0", "#ff4d4f"


def installed_path(name: str) -> Path:
    """The installed layout `name` (share/world4rl_bringup/config/foxglove/NAME.json)."""
    from world4rl_bringup.graph import package_share

    return package_share("world4rl_bringup") / "config" / "foxglove" / f"{name}.json"


class Layout:
    """Panels by id and the split tree: each add_* returns the panel id to place in the tree."""

    def __init__(self, namespace: str = ""):
        self.namespace = namespace
        self.config_by_id: dict[str, dict] = {}

    def topic(self, name: str) -> str:
        """A world4rl_spec.topics name as the graph in `namespace` publishes it."""
        return topics.qualified(name, self.namespace)

    def _panel(self, kind: str, key: str, title: str, config: dict) -> str:
        panel_id = f"{kind}!{key}"
        if panel_id in self.config_by_id:
            raise ValueError(f"two panels named {panel_id}")
        self.config_by_id[panel_id] = {**config, "foxglovePanelTitle": title}
        return panel_id

    def image(self, key: str, title: str, topic: str) -> str:
        """The Image panel (Foxglove's 3D renderer in image mode) on a sensor_msgs/Image or RawImage topic."""
        config = {"cameraState": {}, "followMode": "follow-pose", "scene": {}, "transforms": {}, "topics": {}}
        config.update(layers={}, publish={}, imageMode={"imageTopic": topic})
        return self._panel("Image", key, title, config)

    def plot(self, key: str, title: str, series: list[tuple[str, str]]) -> str:
        """A time plot of (message path, label) series, against receive time."""
        paths = [{"value": v, "label": label, "enabled": True, "timestampMethod": "receiveTime"} for v, label in series]
        config = {"paths": paths, "showXAxisLabels": True, "showYAxisLabels": True, "showLegend": True}
        config.update(legendDisplay="floating", showPlotValuesInLegend=True, isSynced=True, xAxisVal="timestamp")
        return self._panel("Plot", key, title, {**config, "sidebarDimension": 240})

    def states(self, key: str, title: str, series: list[tuple[str, str]]) -> str:
        """State transitions over time (booleans, strings such as a fault's text)."""
        paths = [{"value": v, "label": label, "enabled": True, "timestampMethod": "receiveTime"} for v, label in series]
        return self._panel("StateTransitions", key, title, {"paths": paths, "isSynced": True, "showPoints": True})

    def indicator(self, key: str, title: str, path: str, rules: list[tuple[str, str, str]], fallback) -> str:
        """A coloured light: rules are (value, colour, label) compared with '='; fallback (colour, label)."""
        rules = [{"operator": "=", "rawValue": value, "color": color, "label": label} for value, color, label in rules]
        config = {"path": path, "style": "background", "rules": rules}
        return self._panel(
            "Indicator", key, title, {**config, "fallbackColor": fallback[0], "fallbackLabel": fallback[1]}
        )

    def raw(self, key: str, title: str, topic_path: str) -> str:
        """The newest message of a topic, as a tree."""
        config = {"topicPath": topic_path, "diffEnabled": False, "diffMethod": "custom", "diffTopicPath": ""}
        return self._panel("RawMessages", key, title, {**config, "showFullMessageForDiff": False, "expansion": "all"})

    def document(self, tree) -> dict:
        """The layout file's content: Foxglove's LayoutData."""
        return {
            "configById": self.config_by_id,
            "globalVariables": {},
            "userNodes": {},
            "playbackConfig": {"speed": 1.0},
            "layout": tree,
        }


def split(direction: str, first, second, percent: float = 50.0) -> dict:
    """A split node of the layout tree: 'row' (side by side) or 'column' (one above the other)."""
    return {"direction": direction, "first": first, "second": second, "splitPercentage": percent}


def stack(*items) -> dict | str:
    """Items one above the other in equal parts."""
    if len(items) == 1:
        return items[0]
    return split("column", items[0], stack(*items[1:]), 100.0 / len(items))


def _robot_panels(view: Layout, commander: str) -> tuple[str, str, str]:
    """The camera, the joint positions and the joint targets `commander` sends (shared by both graphs)."""
    camera = view.image("camera", "camera", view.topic(topics.CAMERA_IMAGE))
    joints = list(ARM_JOINT_NAMES) + list(FINGER_JOINT_NAMES)  # the order the sim (and the recorder's bags) use
    states = view.topic(topics.JOINT_STATES)
    positions = view.plot(
        "joints", "joint positions [rad, m]", [(f"{states}.position[{i}]", n) for i, n in enumerate(joints)]
    )
    trajectory = view.topic(topics.ARM_TRAJECTORY)
    series = [(f"{trajectory}.points[0].positions[{i}]", name) for i, name in enumerate(ARM_JOINT_NAMES)]
    targets = view.plot("commands", f"{commander}'s joint targets [rad]", series)
    return camera, positions, targets


def _status_panels(view: Layout, who: str) -> tuple[str, str]:
    """PolicyStatus as `who` publishes it: armed and fault as lights, both and refusals over time."""
    status = view.topic(topics.POLICY_STATUS)
    light = view.indicator("armed", f"{who} armed", f"{status}.armed", [("true", GREEN, "ARMED")], (GREY, "disarmed"))
    fault = view.indicator("fault", f"{who} fault", f"{status}.fault", [("", GREEN, "no fault")], (RED, "FAULT"))
    series = [(f"{status}.armed", "armed"), (f"{status}.fault", "fault"), (f"{status}.last_refusal", "last refusal")]
    over_time = view.states("status", f"{who}: armed, faults, refusals", series)
    return split("row", light, fault), over_time


def collect_layout(namespace: str = "") -> dict:
    view = Layout(namespace)
    camera, positions, targets = _robot_panels(view, "action_executor")
    action = view.topic(topics.ACTION)
    actions = view.plot(
        "action", "demonstrated action", [(f"{action}.values[{i}]", n) for i, n in enumerate(ACTION_NAMES)]
    )
    lights, over_time = _status_panels(view, "action_executor")
    success = view.states("success", "sim success", [(f"{view.topic(topics.SIM_SUCCESS)}.data", "success")])
    episode = view.raw("episode", "episode info", view.topic(topics.EPISODE_INFO))
    recorder = view.raw("recorder", "recorder status (JSON)", f"{view.topic(topics.RECORDER_STATUS)}.data")
    left = split("column", camera, positions, 60.0)
    right = stack(actions, targets, split("column", lights, over_time, 30.0), success, split("row", episode, recorder))
    return view.document(split("row", left, right, 45.0))


def deploy_layout(namespace: str = "") -> dict:
    view = Layout(namespace)
    camera, positions, targets = _robot_panels(view, "policy_runner")
    lights, over_time = _status_panels(view, "policy_runner")
    status = view.topic(topics.POLICY_STATUS)
    series = [(f"{status}.latency_ms", "image -> command latency [ms]"), (f"{status}.ood_score", "OOD score")]
    numbers = view.plot("numbers", "latency and out-of-distribution score", series)
    steps = view.plot(
        "steps", "steps and refused commands", [(f"{status}.step", "step"), (f"{status}.refused_commands", "refused")]
    )
    raw = view.raw("policy_status", "policy status", status)
    left = split("column", camera, positions, 60.0)
    right = stack(targets, split("column", lights, over_time, 30.0), split("row", numbers, steps), raw)
    return view.document(split("row", left, right, 45.0))


def live_view_layout(namespace: str = "") -> dict:
    """`world4rl deploy --live-view`: its channels (not ROS topics: the namespace does not apply)."""
    view = Layout(namespace)
    camera = view.image("camera", "camera", live_view.CAMERA)
    policy_input = view.image("policy_input", "what the policy saw (oldest left)", live_view.POLICY_INPUT)
    prediction = view.image("prediction", "world model: the next frame", live_view.PREDICTION)
    comparison = view.image("comparison", "policy's frame | predicted next | the next that came", live_view.COMPARISON)
    stats = live_view.PREDICTION_STATS
    psnr = view.plot(
        "psnr",
        "prediction PSNR [dB]",
        [(f"{stats}.psnr_db", "world model"), (f"{stats}.copy_last_psnr_db", "copy last frame")],
    )
    action = view.plot("action", "chosen action", [(f"{live_view.ACTION}.{name}", name) for name in ACTION_NAMES])
    status = live_view.STATUS
    armed = view.indicator("armed", "armed", f"{status}.armed", [("true", GREEN, "ARMED")], (GREY, "disarmed"))
    faults = view.states(
        "status",
        "armed, faults, refusals",
        [(f"{status}.armed", "armed"), (f"{status}.fault", "fault"), (f"{status}.last_refusal", "last refusal")],
    )
    raw = view.raw("status_raw", "policy status", status)
    images = split("column", split("row", camera, prediction, 65.0), split("column", policy_input, comparison), 55.0)
    right = stack(psnr, action, split("column", armed, faults, 30.0), raw)
    return view.document(split("row", images, right, 60.0))


BUILDERS = {"collect": collect_layout, "deploy": deploy_layout, "live_view": live_view_layout}


def layout_text(name: str, namespace: str = "") -> str:
    """The layout file `name` as written (indented JSON, a final newline)."""
    return json.dumps(BUILDERS[name](namespace), indent=2) + "\n"


def referenced_topics(layout: dict) -> set[str]:
    """Every topic a layout's panels read (the part of each message path before its first field)."""
    found = set()
    for config in layout["configById"].values():
        paths = [p["value"] for p in config.get("paths", [])]
        paths += [config.get(k) for k in ("topicPath", "path") if config.get(k)]
        paths += [config["imageMode"]["imageTopic"]] if "imageMode" in config else []
        found.update(path.split(".", 1)[0] for path in paths)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m world4rl_bringup.foxglove_layout", description=__doc__)
    parser.add_argument("--namespace", default="", help="the graph's ROS namespace (default: the root, as in bags)")
    parser.add_argument("--out", type=Path, default=SOURCE_DIR, help=f"directory to write to (default: {SOURCE_DIR})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in LAYOUTS:
        (args.out / f"{name}.json").write_text(layout_text(name, args.namespace))
        print(args.out / f"{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

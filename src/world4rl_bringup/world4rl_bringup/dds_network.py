"""Who can reach the stack over the network: the DDS set-up every process of a graph starts with.

Nothing is reachable from the network unless a robot profile says so. Each robot profile
(config/robots/ROBOT.yaml) names the network interfaces DDS may use, under the pseudo-node
`world4rl_network` (no node has that name, so rcl hands these parameters to none; the launch
files and the `world4rl` CLI read them before any node starts):

    world4rl_network:
      ros__parameters:
        dds_interfaces: [lo]

- Only the loopback (`lo` or 127.0.0.1: the sim's profile, and every graph without a robot):
  the workspace profile config/fastdds_shm.xml as it is: shared memory, and UDP bound to
  127.0.0.1 with discovery by unicast to 127.0.0.1 (no multicast). No socket listens on another
  interface, so no participant on another host (or another interface) can discover, command or
  spoof a node, whatever it is configured with.
- Other interfaces (names such as enp3s0, or IPv4 addresses): a profile generated from that one,
  its UDP transport limited to those interfaces and the loopback, discovery by multicast there.

Every process also gets ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT, so the profile alone
decides: with LOCALHOST, rmw_fastrtps (Jazzy) adds its own UDP transport on every interface
(sockets on 0.0.0.0, measured) to the profile's, which would undo the binding; the deprecated
ROS_LOCALHOST_ONLY=1 means the same and is cleared. ROS_STATIC_PEERS then has no effect either.
"""

from __future__ import annotations

import ipaddress
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

NETWORK_SECTION = "world4rl_network"
INTERFACES_KEY = "dds_interfaces"
LOOPBACK = frozenset({"lo", "127.0.0.1"})
_NS = "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"


def workspace_profile() -> Path:
    """The loopback-only Fast DDS profile every process of the venv uses by default."""
    from world4rl_bringup.graph import package_share

    return package_share("world4rl_bringup") / "config" / "fastdds_shm.xml"


def robot_profile_path(robot: str) -> Path:
    from world4rl_bringup.graph import package_share

    return package_share("world4rl_bringup") / "config" / "robots" / f"{robot}.yaml"


def robot_interfaces(robot: str | None) -> tuple[str, ...]:
    """The interfaces a robot profile lets DDS use (None: no robot, this host only)."""
    if robot is None:
        return ("lo",)
    path = robot_profile_path(robot)
    data = yaml.safe_load(path.read_text()) or {}
    section = (data.get(NETWORK_SECTION) or {}).get("ros__parameters") or {}
    interfaces = section.get(INTERFACES_KEY)
    if not isinstance(interfaces, list) or not interfaces or not all(isinstance(i, str) and i for i in interfaces):
        raise ValueError(
            f"{path}: {NETWORK_SECTION}.ros__parameters.{INTERFACES_KEY} must list the network interfaces "
            f"DDS may use (e.g. [lo] for this host only), got {interfaces!r}"
        )
    return tuple(interfaces)


def profile_xml(interfaces: tuple[str, ...] | list[str]) -> str:
    """The workspace profile with its UDP transport on `interfaces` (and the loopback), discovering
    by multicast there; only the loopback: the workspace profile unchanged."""
    text = workspace_profile().read_text()
    if set(interfaces) <= LOOPBACK:
        return text
    ET.register_namespace("", _NS)
    root = ET.fromstring(text)
    for descriptor in root.iter(_tag("transport_descriptor")):
        if descriptor.findtext(_tag("type")) != "UDPv4":
            continue
        allowed = descriptor.find(_tag("interfaceWhiteList"))
        for entry in list(allowed):
            allowed.remove(entry)
        for name in ["127.0.0.1", *(i for i in interfaces if i not in LOOPBACK)]:
            ET.SubElement(allowed, _tag("address" if _is_ipv4(name) else "interface")).text = name
    for rtps in root.iter(_tag("rtps")):
        builtin = rtps.find(_tag("builtin"))
        if builtin is not None:  # the loopback-only unicast discovery: back to Fast DDS's default
            rtps.remove(builtin)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _tag(name: str) -> str:
    return f"{{{_NS}}}{name}"


def _is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def network_environment(robot: str | None, directory: str | os.PathLike) -> dict[str, str]:
    """The environment variables that put a process on `robot`'s DDS network (a generated profile,
    if the robot needs one, is written into `directory`)."""
    interfaces = robot_interfaces(robot)
    if set(interfaces) <= LOOPBACK:
        profile = workspace_profile()
    else:
        profile = Path(directory) / f"fastdds_{robot}.xml"
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(profile_xml(interfaces))
    return {
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(profile),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
        "ROS_LOCALHOST_ONLY": "",
    }


def join_robot_network(robot: str | None, directory: str | os.PathLike) -> dict[str, str]:
    """network_environment, also applied to this process (before it creates its own ROS context:
    Fast DDS reads the profile once, when the process's first participant is created)."""
    env = network_environment(robot, directory)
    os.environ.update(env)
    return env

"""Workspace-wide pytest set-up: headless MuJoCo, and the ROS fixtures of world4rl_testing.

The fixtures (`ros_domain`, `launch_node`, `ros_node`: real ROS 2 over real DDS, one ROS_DOMAIN_ID
per test) live in world4rl_testing.fixtures, a package every package's tests may import.
"""

from __future__ import annotations

import os
import sys

if not os.environ.get("MUJOCO_GL"):
    os.environ["MUJOCO_GL"] = "osmesa"

pytest_plugins = ["world4rl_testing.fixtures"]


def pytest_report_header(config):
    return f"world4rl: python {sys.executable}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}"

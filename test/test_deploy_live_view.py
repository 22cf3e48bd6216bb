"""`world4rl deploy --live-view` on the sim: the real deploy graph (sim_robot + policy_runner), its
live view seen by a real Foxglove WebSocket client, and the deploy's own results unharmed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from world4rl_policy import live_view
from world4rl_testing import wait_until
from world4rl_testing.foxglove_client import FoxgloveClient, image_shape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ros
@pytest.mark.slow  # the sim renders 640x480 at 30 Hz beside the runner and the live view: ~40 s
def test_deploy_live_view_shows_what_the_policy_sees_and_what_imagination_expects(
    ros_domain, tmp_path, constant_policy
):
    from world4rl_model.world_model import WorldModel, preset_config

    torch.manual_seed(0)
    wm = WorldModel(preset_config("tiny", image_size=64)).save(tmp_path / "wm")
    ckpt = constant_policy(tmp_path / "policy", [0.3, 0.0, 0.0, -1.0])
    port, out = free_port(), tmp_path / "deploy.json"
    args = ["--policy", str(ckpt), "--task", "reach", "--episodes", "2", "--horizon", "40", "--out", str(out)]
    args += ["--live-view", "--live-view-port", str(port), "--world-model", str(wm)]
    deploy = subprocess.Popen(
        [sys.executable, "-m", "world4rl_bringup.cli", "deploy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(deploy.stdout), daemon=True)
    reader.start()
    try:
        ready = lambda: any(f"live view: ws://127.0.0.1:{port}" in line for line in lines)  # noqa: E731
        wait_until(lambda: ready() or deploy.poll() is not None, 120.0)
        assert ready(), "".join(lines)
        with FoxgloveClient(port) as client:
            client.subscribe(set(live_view.CHANNELS))
            counts = {live_view.CAMERA: 3, live_view.POLICY_INPUT: 3, live_view.COMPARISON: 2}
            done = lambda m: all(len(m[t]) >= n for t, n in counts.items())  # noqa: E731
            assert client.receive(done, timeout=60.0), {t: len(v) for t, v in client.messages.items()}
        assert deploy.wait(timeout=240) == 0, "".join(lines)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
        reader.join(5)
    got = client.messages
    assert image_shape(got[live_view.CAMERA][-1]) == (480, 640, 3)  # the sim camera, as the runner got it
    assert image_shape(got[live_view.POLICY_INPUT][-1]) == (64, 4 * 64, 3)  # 4 frames at the learning size
    assert image_shape(got[live_view.COMPARISON][-1]) == (64, 3 * 64, 3)
    assert any(s["armed"] for s in got[live_view.STATUS])
    result = json.loads(out.read_text())
    assert result["episodes"] == 2
    assert result["faults"] == 0, result["results"]
    assert result["latency_ms"]["cycles"] > 0
    print("latency with the live view watched:", result["latency_ms"], f"({time.strftime('%H:%M:%S')})")

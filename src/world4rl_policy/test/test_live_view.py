"""The deploy live view (world4rl_policy.live_view): a real foxglove-sdk WebSocket server in its own
process, a real client speaking Foxglove's protocol (subprotocol foxglove.sdk.v1, binary message
data decoded with the protobuf schema the server advertises), real world-model checkpoints, and the
real policy_runner over real DDS.

What must hold: the camera, the policy's input frames at the learning size, the world model's
one-step prediction and the comparison arrive with their sizes; the server listens on the loopback
only unless told otherwise; a taken port is a clear error; and nothing the viewer side does (a
stopped or dead server process) ever blocks the runner's offers.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from world4rl_model.world_model import WorldModel, preset_config
from world4rl_policy import live_view
from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy
from world4rl_spec import ACTION_NAMES, ARM_JOINT_NAMES, FINGER_JOINT_NAMES, FR3_READY_POSE, topics
from world4rl_testing import wait_until
from world4rl_testing.foxglove_client import SUBPROTOCOL, FoxgloveClient, image_shape

SIZE = 16  # the learning size of the small tests' world model
ACTION = (0.5, -0.25, 0.0, 1.0)


def write_world_model(directory: Path, image_size: int = SIZE) -> Path:
    torch.manual_seed(0)
    return WorldModel(preset_config("tiny", image_size=image_size)).save(directory)


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as /proc/net/tcp* writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def other_local_ipv4() -> str | None:
    """An IPv4 address of this host that is not on the loopback, if it has one."""
    if shutil.which("ip") is None:
        return None
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addresses = [f.split("/")[0] for line in out.splitlines() for f in line.split()[3:4]]
    return next((a for a in addresses if not a.startswith("127.")), None)


def feed(view: live_view.LiveView, stop: threading.Event, period_s: float = 0.05) -> None:
    """The runner's side at 20 Hz until `stop`: camera, decision, status."""
    rng, step = np.random.default_rng(0), 0
    while not stop.is_set():
        step += 1
        stamp = time.time()
        view.camera(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), stamp)
        frames = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
        view.decision(frames, np.array(ACTION), stamp)
        status = dict(armed=True, fault="", last_refusal="", latency_ms=2.5, step=step, refused_commands=0)
        view.status({**status, "policy": "ckpt", "ood_score": math.nan})
        view.flush()
        time.sleep(period_s)


@pytest.fixture
def served(tmp_path):
    """A live view with a tiny world model, started on a free loopback port; closed afterwards."""
    views: list[live_view.LiveView] = []

    def start(**settings) -> live_view.LiveView:
        path = write_world_model(tmp_path / "wm")
        context = live_view.world_model_context(path, SIZE, len(ACTION_NAMES))
        defaults = dict(port=0, world_model=str(path), context_frames=context, prediction_rate_hz=20.0)
        view = live_view.LiveView(live_view.LiveViewSettings(**{**defaults, "camera_rate_hz": 100.0, **settings}))
        views.append(view)
        view.start()
        return view

    yield start
    for view in views:
        view.close()


def test_the_client_speaks_the_servers_subprotocol():
    assert SUBPROTOCOL == live_view.SUBPROTOCOL


def test_status_fields_are_policy_status_fields():
    from world4rl_msgs.msg import PolicyStatus

    fields = set(PolicyStatus.get_fields_and_field_types())
    assert set(live_view.STATUS_FIELDS) <= fields, set(live_view.STATUS_FIELDS) - fields
    schema = live_view.JSON_SCHEMAS[live_view.STATUS]["properties"]
    assert set(schema) == {*live_view.STATUS_FIELDS, "live_view_dropped"}


def test_the_default_world_model_is_the_one_the_policy_was_refined_in(tmp_path):
    wm = write_world_model(tmp_path / "wm")
    refined = write_refined_policy(tmp_path / "refined", wm)
    bc = save_policy(tmp_path / "bc", GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32)))
    from world4rl_model.checkpoint import load_config

    assert live_view.default_world_model(load_config(refined)) == str(wm)
    # A refine run whose gate chose BC: the run (the refined checkpoint) names it.
    assert live_view.default_world_model(load_config(bc), requested=refined) == str(wm)
    assert live_view.default_world_model(load_config(bc), requested=bc) == ""
    assert live_view.default_world_model(load_config(bc), requested=tmp_path / "nothing") == ""


def test_wire_format_round_trips(tmp_path):
    arrays = {"a": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "b": np.array([0.5, -1.0], np.float32)}
    path = tmp_path / "msg"
    path.write_bytes(b"".join(bytes(b) for b in live_view.encode_message("decision", {"index": 3}, arrays)))
    with open(path, "rb") as stream:
        header, got = live_view.read_message(stream)
        assert live_view.read_message(stream) is None  # the end of the stream
    assert header == {"index": 3, "kind": "decision"}
    assert all(np.array_equal(got[k], arrays[k]) and got[k].dtype == arrays[k].dtype for k in arrays)


def test_live_view_serves_camera_policy_input_and_prediction(served):
    view = served()
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(view, stop))
    with FoxgloveClient(view.port) as client:
        client.subscribe(set(live_view.CHANNELS))
        feeder.start()
        counts = {live_view.COMPARISON: 3, live_view.PREDICTION_STATS: 3, live_view.CAMERA: 3}
        done = lambda m: all(len(m[t]) >= n for t, n in counts.items())  # noqa: E731
        try:
            assert client.receive(done, timeout=30.0), {t: len(v) for t, v in client.messages.items()}
        finally:
            stop.set()
            feeder.join()
    got = client.messages
    assert image_shape(got[live_view.CAMERA][-1]) == (480, 640, 3)
    assert image_shape(got[live_view.POLICY_INPUT][-1]) == (SIZE, 4 * SIZE, 3)  # T frames side by side
    assert image_shape(got[live_view.PREDICTION][-1]) == (SIZE, SIZE, 3)
    assert image_shape(got[live_view.COMPARISON][-1]) == (SIZE, 3 * SIZE, 3)  # before | predicted | after
    status = got[live_view.STATUS][-1]
    assert status["armed"] is True
    assert status["ood_score"] is None  # NaN travels as null
    action = got[live_view.ACTION][-1]
    assert [action[name] for name in ACTION_NAMES] == list(ACTION)
    stats = got[live_view.PREDICTION_STATS][-1]
    assert stats["predict_ms"] > 0
    assert stats["psnr_db"] > 0
    assert stats["copy_last_psnr_db"] > 0
    assert view.error is None


def test_server_listens_on_the_loopback_only_by_default(served):
    view = served()
    assert listening_addresses(view.port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::
    other = other_local_ipv4()
    if other is not None:  # this host's other address: refused
        with pytest.raises((ConnectionRefusedError, TimeoutError)), socket.create_connection((other, view.port), 2):
            pass
    with socket.create_connection(("127.0.0.1", view.port), timeout=2):
        pass


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        view = live_view.LiveView(live_view.LiveViewSettings(port=port))
        with pytest.raises(live_view.LiveViewError, match=f"127.0.0.1:{port}"):
            view.start()
    assert view._process.returncode is not None  # nothing left running


def test_offers_never_block_when_the_server_stalls_or_dies(served):
    """The runner's calls return at once while the server process is stopped (its pipe full, the
    sender thread stuck in a write), drop what cannot be sent, and recover when it resumes; after it
    died, they go on returning (the view reports the error)."""
    view = served(camera_rate_hz=1000.0)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frames = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    os.kill(view.pid, signal.SIGSTOP)
    try:
        durations = []
        for _ in range(300):
            started = time.perf_counter()
            view.camera(frame, time.time())
            view.decision(frames, np.zeros(len(ACTION_NAMES)), time.time())
            view.flush()
            durations.append(time.perf_counter() - started)
            time.sleep(0.001)
        assert max(durations) < 0.05, f"an offer took {max(durations) * 1e3:.1f} ms"
        assert min(view.dropped["camera"], view.dropped["decision"]) > 200, view.dropped
        sent = view.sent["camera"]
    finally:
        os.kill(view.pid, signal.SIGCONT)
    assert wait_until(lambda: (view.camera(frame, time.time()), view.flush(), view.sent["camera"] > sent + 2)[2], 10.0)
    os.kill(view.pid, signal.SIGKILL)
    assert wait_until(lambda: (view.camera(frame, time.time()), view.flush(), view.error is not None)[2], 10.0)
    started = time.perf_counter()
    view.decision(frames, np.zeros(len(ACTION_NAMES)), time.time())
    assert time.perf_counter() - started < 0.05
    assert "stopped" in view.error


# ------------------------------------------------------------------------------ the runner


def write_refined_policy(directory: Path, world_model: Path) -> Path:
    """A tiny policy (action (0.2, 0, 0, -1)) whose config names the world model it was refined in."""
    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    with torch.no_grad():
        policy.mean_head.weight.zero_()
        policy.mean_head.bias.copy_(torch.tensor([0.2, 0.0, 0.0, -1.0]))
    return save_policy(directory, policy, refined_from={"world_model": str(world_model)})


class Robot:
    """The runner's robot in the test process: a 640x480 camera at 30 Hz and joint states at 100 Hz."""

    def __init__(self, node):
        from sensor_msgs.msg import Image, JointState
        from std_srvs.srv import SetBool

        self.node, self.Image, self.JointState = node, Image, JointState
        self.image_pub = node.create_publisher(Image, topics.CAMERA_IMAGE, 2)
        self.joint_pub = node.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.arm_client = node.create_client(SetBool, topics.POLICY_ARM)
        self.frames = [np.random.default_rng(s).integers(0, 256, 640 * 480 * 3, np.uint8).tobytes() for s in (1, 2)]
        self.count = 0
        node.create_timer(0.01, self._joints)
        node.create_timer(1 / 30, self._image)

    def _stamped(self, msg):
        t = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t - int(t)) * 1e9)
        return msg

    def _joints(self) -> None:
        names, positions = [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES], [*FR3_READY_POSE, 0.04, 0.04]
        self.joint_pub.publish(self._stamped(self.JointState(name=names, position=positions)))

    def _image(self) -> None:
        self.count += 1
        data = self.frames[self.count % 2]
        self.image_pub.publish(self._stamped(self.Image(width=640, height=480, encoding="rgb8", step=1920, data=data)))

    def arm(self, runner) -> None:
        from std_srvs.srv import SetBool

        assert wait_until(self.arm_client.service_is_ready, 20.0, nodes=[runner])
        future = self.arm_client.call_async(SetBool.Request(data=True))
        assert wait_until(future.done, 10.0, nodes=[runner])
        assert future.result().success, future.result().message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ros
def test_runner_serves_what_the_policy_sees_and_what_imagination_expects(launch_node, ros_node, tmp_path):
    """The real policy_runner with live_view.enabled: the world model is the one the policy was
    refined in (its config.json), the view shows the 640x480 camera, the policy's 4 input frames at
    64 px, the 64 px prediction and comparison, and PolicyStatus once armed."""
    wm = write_world_model(tmp_path / "wm", image_size=64)
    ckpt = write_refined_policy(tmp_path / "policy", wm)
    port = free_port()
    params = {"policy": str(ckpt), "safety.joint_state_timeout_s": 0.5, "live_view.enabled": True}
    runner = launch_node(
        "world4rl_policy.policy_runner_node", "policy_runner", params={**params, "live_view.port": port}
    )
    robot = Robot(ros_node)
    assert wait_until(lambda: f"live view on ws://127.0.0.1:{port}" in runner.stderr_tail(), 60.0, nodes=[runner])
    with FoxgloveClient(port) as client:
        client.subscribe(set(live_view.CHANNELS))
        robot.arm(runner)
        counts = {live_view.COMPARISON: 2, live_view.CAMERA: 2, live_view.STATUS: 5}
        done = lambda m: all(len(m[t]) >= n for t, n in counts.items())  # noqa: E731
        assert client.receive(done, timeout=60.0), {t: len(v) for t, v in client.messages.items()}
    got = client.messages
    assert image_shape(got[live_view.CAMERA][-1]) == (480, 640, 3)
    assert image_shape(got[live_view.POLICY_INPUT][-1]) == (64, 4 * 64, 3)
    assert image_shape(got[live_view.PREDICTION][-1]) == (64, 64, 3)
    assert image_shape(got[live_view.COMPARISON][-1]) == (64, 3 * 64, 3)
    assert any(s["armed"] and s["step"] > 0 for s in got[live_view.STATUS])
    assert [got[live_view.ACTION][-1][name] for name in ACTION_NAMES] == pytest.approx([0.2, 0.0, 0.0, -1.0])
    assert "ERROR" not in runner.stderr_tail()


@pytest.mark.ros
def test_runner_refuses_a_world_model_that_does_not_fit_the_policy(ros_domain, tmp_path):
    wm = write_world_model(tmp_path / "wm", image_size=SIZE)  # the policy sees 64 px frames
    ckpt = write_refined_policy(tmp_path / "policy", wm)
    args = ["-p", f"policy:={ckpt}", "-p", "live_view.enabled:=true"]
    done = subprocess.run(
        [sys.executable, "-m", "world4rl_policy.policy_runner_node", "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "parameter live_view.world_model" in done.stderr, done.stderr
    assert "predicts 16px frames, the policy sees 64px ones" in done.stderr, done.stderr

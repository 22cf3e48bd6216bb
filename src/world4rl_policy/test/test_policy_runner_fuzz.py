"""Node-level fuzz of policy_runner, in process: 10,000 control cycles of adversarial policy
outputs, images, joint states and timings through the node's own handlers.

What is exercised: the real PolicyRunnerNode (parameters, image checks and decoding, the
learning-image conversion, frame history, the tiny real policy, the command path with IK and
the safety filter, the command publisher and the refusal logger), with its inputs handed to the
same handlers its subscriptions call (`_on_joints`, `handle_image`, `handle_tick`) and its clock
value passed in, so input timings (stale, future, out-of-order stamps, a clock running backwards,
gaps) can be chosen exactly and 10,000 cycles take seconds instead of the 17 minutes they take
at 10 Hz. Adversarial policy outputs come from the node's injectable `action_source` (NaN, inf,
huge, wrong shapes, exceptions, saturated sign flips) in a share of the cycles; the other cycles
run the real checkpoint. What leaves the node is recorded at its publisher (the message is still
published over DDS). The same kinds of bad inputs, sent as real messages over DDS to the node
running as a process, are in test_policy_runner.py.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from sensor_msgs.msg import Image, JointState

from world4rl_policy import fr3_kinematics
from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy
from world4rl_policy.safety_filter import Reason, SafetyParams
from world4rl_spec import (
    ARM_JOINT_NAMES,
    FINGER_JOINT_NAMES,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    FR3_READY_POSE,
)

CYCLES = 10_000
PERIOD = 0.1
EPISODE_LIMIT_S = 4.0
LO, HI = np.array(FR3_JOINT_POSITION_MIN), np.array(FR3_JOINT_POSITION_MAX)
PARAMS = SafetyParams(episode_time_limit_s=EPISODE_LIMIT_S)
STEP = PARAMS.step_bound()
MARGIN = PARAMS.joint_margin_rad
WS_LO, WS_HI = np.array(PARAMS.workspace_min), np.array(PARAMS.workspace_max)
MARGIN_LO, MARGIN_HI = LO + MARGIN, HI - MARGIN

# Every kind of refusal the fuzz must provoke (and find a log line for). Not listed, though
# logged like the rest if they occur: the filter's workspace_exit, position_clipped and target_jump,
# which the command path pre-empts (it keeps the TCP target inside the box, and the IK inside the
# joint limits and within IKConfig.max_joint_step_rad of the measured position), and
# bad_target_shape / gripper_clipped, which the node pre-empts (it turns a malformed or out-of-range
# action into policy_error / action_clipped). test_safety_filter.py fuzzes those.
EXPECTED = {
    Reason.NONFINITE_TARGET,
    Reason.BAD_CLOCK,
    Reason.NO_IMAGE,
    Reason.STALE_IMAGE,
    Reason.STALE_JOINT_STATE,
    Reason.IMAGE_FROM_FUTURE,
    Reason.JOINT_STATE_FROM_FUTURE,
    Reason.IMAGE_OUT_OF_ORDER,
    Reason.JOINT_STATE_OUT_OF_ORDER,
    Reason.BAD_JOINT_STATE,
    Reason.JOINT_STATE_OUT_OF_LIMITS,
    Reason.EPISODE_TIME_LIMIT,
    Reason.STEP_CLIPPED,
}
EXPECTED_NODE = {"image_encoding", "image_size", "image_data", "image_before_arming", "policy_error", "action_clipped"}


def outside(q) -> float:
    p = fr3_kinematics.forward_kinematics(q, tcp_offset_m=PARAMS.tcp_offset_m)[:3, 3]
    return float(np.linalg.norm(p - np.clip(p, WS_LO, WS_HI)))


def image(width=640, height=480, encoding="rgb8", step=None, data=None, seed=0) -> Image:
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "16UC1": 2, "rgba8": 4}.get(encoding, 3)
    step = width * channels if step is None else step
    if data is None:
        data = np.random.default_rng(seed).integers(0, 256, step * height, dtype=np.uint8).tobytes()
    return Image(width=width, height=height, encoding=encoding, step=step, data=data)


def stamp(msg, t: float) -> None:
    t = max(t, 0.0)
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int((t - int(t)) * 1e9)


@pytest.fixture
def runner_node(ros_domain, tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from world4rl_policy.policy_runner_node import PolicyRunnerNode

    torch.manual_seed(0)
    ckpt = save_policy(tmp_path / "policy", GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32)))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    overrides = [Parameter("policy", value=str(ckpt)), Parameter("safety.episode_time_limit_s", value=EPISODE_LIMIT_S)]
    node = PolicyRunnerNode(context=context, parameter_overrides=overrides)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


# The stamp faults of each input, ranges of U(low, high) [s]: its `{input}_stale` scenario stamps it that much
# before now, `_future` after now, `_order` before the last stamp it was sent with.
STAMP_FAULTS = {
    "joint": {"stale": (0.15, 5.0), "future": (0.06, 50.0), "order": (0.001, 1.0)},
    "image": {"stale": (0.3, 10.0), "future": (0.06, 100.0), "order": (0.001, 0.5)},
}


def skewed_stamp(rng, scenario: str, source: str, now: float, fresh: float, last: float) -> float:
    """The stamp `source` ("joint" or "image") is sent with: `fresh`, unless the scenario is one of its stamp faults."""
    faults = STAMP_FAULTS[source]
    if scenario == f"{source}_stale":
        return now - rng.uniform(*faults["stale"])
    if scenario == f"{source}_future":
        return now + rng.uniform(*faults["future"])
    if scenario == f"{source}_order":
        return last - rng.uniform(*faults["order"])
    return fresh


def adversarial_actions(rng):
    """(name, action or exception) cases a broken policy might produce."""

    def boom(kind):
        def f():
            raise kind("policy crashed")

        return f

    return [
        ("nan", lambda: np.full(4, np.nan)),
        ("one_nan", lambda: np.array([0.1, np.nan, 0.0, 1.0])),
        ("inf", lambda: np.array([np.inf, 0, 0, 0])),
        ("-inf", lambda: np.array([0, 0, -np.inf, -1.0])),
        ("nan_gripper", lambda: np.array([0, 0, 0, np.nan])),
        ("huge", lambda: rng.choice([-1, 1], 4) * 10.0 ** rng.uniform(2, 300)),
        ("float_max", lambda: np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 0, 1])),
        ("shape3", lambda: np.zeros(3)),
        ("shape5", lambda: np.zeros(5)),
        ("shape7", lambda: np.zeros(7)),
        ("scalar", lambda: np.float32(0.5)),
        ("matrix", lambda: np.zeros((2, 2))),
        ("text", lambda: "forward"),
        ("none", lambda: None),
        ("runtime_error", boom(RuntimeError)),
        ("fp_error", boom(FloatingPointError)),
        ("key_error", boom(KeyError)),
    ]


# The input scenarios of a cycle, with their probabilities.
SCENARIOS = {
    "normal": 0.62,
    "clock_back": 0.02,
    "gap": 0.02,
    "image_stale": 0.03,
    "image_future": 0.03,
    "image_order": 0.03,
    "image_dup": 0.02,
    "joint_stale": 0.03,
    "joint_future": 0.02,
    "joint_order": 0.02,
    "joint_nan": 0.02,
    "joint_limits": 0.02,
    "joint_missing": 0.02,
    "no_image": 0.04,
    "bad_image": 0.05,
    "old_image": 0.01,
}


def good_images() -> list[Image]:
    return [image(seed=s) for s in range(3)] + [image(encoding="bgr8", seed=9)]


def bad_images() -> dict[str, Image]:
    return {
        "mono8": image(encoding="mono8"),
        "16UC1": image(encoding="16UC1"),
        "rgba8": image(encoding="rgba8"),
        "empty_encoding": image(encoding=""),
        "small": image(320, 240),
        "large": image(1280, 720),
        "zero": image(0, 0, data=b""),
        "truncated": image(data=bytes(640 * 480 * 3 - 1)),
        "empty_data": image(data=b""),
        "short_step": image(step=640 * 3 - 3, data=bytes(640 * 480 * 3)),
    }


class NodeFuzz:
    """The world around the node in the fuzz: the arm and the joint states it reports, the clock,
    the images, the policy output of each cycle, and every command the node published."""

    def __init__(self, node, rng) -> None:
        self.node = node
        self.rng = rng
        self.sent: list[tuple[np.ndarray, np.ndarray, bool]] = []  # (command, measured q, held)
        self.current = {"q": None, "held": None}  # of the cycle being run
        self._spy_on_commands()
        self.bad = adversarial_actions(rng)
        self.kind = "policy"  # this cycle's policy output: "policy", "drift", "flip" or a name in `bad`
        self.drift = np.zeros(4)
        self._inject_actions()
        self.good_images = good_images()
        self.bad_images = bad_images()
        self.q_true = np.array(FR3_READY_POSE)
        self.t = 1000.0
        self.last_image_stamp = self.t
        self.last_joint_stamp = self.t
        self.armed_cycles = 0
        self.rehomed = 0
        self.kinds_seen: dict[str, int] = {}

    def _spy_on_commands(self) -> None:
        """Records each published command with the joint state of its cycle and whether it is a hold."""
        commands = self.node.commands
        real_apply = commands.apply
        real_publish = commands.publisher.publish

        def apply_spy(cycle):
            self.current["held"] = cycle.result.held
            real_apply(cycle)

        def publish_spy(msg):
            self.sent.append((np.array(msg.points[0].positions), self.current["q"].copy(), self.current["held"]))
            real_publish(msg)

        commands.apply = apply_spy
        commands.publisher.publish = publish_spy

    def _inject_actions(self) -> None:
        """Adversarial policy outputs in a share of cycles; the real checkpoint otherwise."""
        real_source = self.node.action_source
        bad = dict(self.bad)

        def source(frames, proprio):
            if self.kind == "policy":
                return real_source(frames, proprio)
            if self.kind == "drift":  # a policy that pushes one way for a while: into limits and the box
                return self.drift
            if self.kind == "flip":  # saturated sign flips every cycle
                return self.rng.choice([-1.0, 1.0], 4)
            return bad[self.kind]()

        self.node.action_source = source

    def cycle(self) -> None:
        """One control cycle: the clock, the policy output, the joint state, the image, the arm."""
        scenario = self._advance_clock()
        self._choose_action()
        self._send_joint_state(scenario)
        sent_before = len(self.sent)
        self._send_image(scenario)
        self.armed_cycles += self.node.path.armed
        self._move_arm(sent_before)

    def _advance_clock(self) -> str:
        """Draws the cycle's scenario and advances the clock (backwards or by a gap in two of them)."""
        rng = self.rng
        dt = PERIOD + rng.normal(0, 0.002)
        scenario = rng.choice(list(SCENARIOS), p=list(SCENARIOS.values()))
        if scenario == "clock_back":
            dt = -rng.uniform(0.01, 2.0)
        elif scenario == "gap":
            dt = rng.uniform(0.3, 3.0)
        self.t += dt
        return scenario

    def _choose_action(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            self.kind = "policy"
        elif roll < 0.75:
            if rng.random() < 0.1:
                self.drift = np.append(rng.choice([-1.0, 0.0, 1.0], 3), rng.choice([-1.0, 1.0]))
            self.kind = "drift"
        elif roll < 0.8:
            self.kind = "flip"
        else:
            self.kind = self.bad[rng.integers(len(self.bad))][0]
        self.kinds_seen[self.kind] = self.kinds_seen.get(self.kind, 0) + 1

    def _joint_msg(self, q, t_stamp, names=ARM_JOINT_NAMES) -> JointState:
        order = self.rng.permutation(len(names) + 2)  # any order, fingers included
        all_names = [*names, *FINGER_JOINT_NAMES]
        all_pos = [*q, 0.02, 0.02]
        msg = JointState(name=[all_names[i] for i in order], position=[float(all_pos[i]) for i in order])
        stamp(msg, t_stamp)
        return msg

    def _send_joint_state(self, scenario: str) -> None:
        """The joint state the arm reports."""
        rng, t = self.rng, self.t
        js_t = t - rng.uniform(0.0, 0.01)
        q_msg = self.q_true + rng.normal(0, 1e-4, 7)
        js_t = skewed_stamp(rng, scenario, "joint", t, js_t, self.last_joint_stamp)
        if scenario == "joint_nan":
            q_msg[rng.integers(7)] = rng.choice([np.nan, np.inf, -np.inf])
        elif scenario == "joint_limits":
            j = rng.integers(7)
            q_msg[j] = (HI[j] if rng.random() < 0.5 else LO[j]) + rng.choice([-1, 1]) * rng.uniform(0.03, 1.0)
        names = ARM_JOINT_NAMES[:-1] if scenario == "joint_missing" else ARM_JOINT_NAMES
        self.node._on_joints(self._joint_msg(q_msg if names == ARM_JOINT_NAMES else q_msg[:-1], js_t, names))
        self.last_joint_stamp = max(self.last_joint_stamp, js_t)
        self.current["q"] = self.node.joints

    def _send_image(self, scenario: str) -> None:
        """The image (or none), and the cycle it drives; now and then an extra tick."""
        rng, t, node = self.rng, self.t, self.node
        if scenario == "no_image":
            node.handle_tick(t)
            return
        msg = self.good_images[rng.integers(len(self.good_images))]
        im_t = t - rng.uniform(0.005, 0.03)
        im_t = skewed_stamp(rng, scenario, "image", t, im_t, self.last_image_stamp)
        if scenario == "bad_image":
            msg = self.bad_images[list(self.bad_images)[rng.integers(len(self.bad_images))]]
        elif scenario == "image_dup":
            im_t = self.last_image_stamp
        elif scenario == "old_image":
            im_t = node.armed_at - rng.uniform(0.001, 1.0)
        stamp(msg, im_t)
        if scenario != "bad_image":
            self.last_image_stamp = max(self.last_image_stamp, im_t)
        node.handle_image(msg, t, time.time())
        if rng.random() < 0.3:
            node.handle_tick(t + rng.uniform(0.0, 0.09))

    def _move_arm(self, sent_before: int) -> None:
        """The arm follows a new command (a position controller), sometimes only part of the way.
        Re-arm often (an operator restarting episodes), from wherever the arm is; now and then,
        and whenever the arm ended up outside the workspace box, the operator first brings it
        back to the ready pose (an arm outside the box cannot be armed usefully)."""
        rng = self.rng
        if len(self.sent) > sent_before:
            follow = 1.0 if rng.random() < 0.8 else rng.uniform(0.0, 1.0)
            self.q_true = self.q_true + (self.sent[-1][0] - self.q_true) * follow
        if not self.node.path.armed and rng.random() < 0.3:
            if outside(self.q_true) > 0 or rng.random() < 0.01:
                self.q_true = np.array(FR3_READY_POSE)
                self.rehomed += 1
            else:
                if rng.random() < 0.8:  # mostly a new episode; else re-armed in the same one (refused once it is over)
                    self.node.new_episode()
                self.node.arm(self.t)


def check_command(command, q, held) -> None:
    """The invariants of one published command; `q` is the joint state measured in its cycle."""
    assert command.shape == (7,)
    assert np.all(np.isfinite(command)), command
    assert q is not None, "a command was sent without a joint state"
    assert np.all(np.isfinite(q)), "a command was sent without a valid joint state"
    assert np.all(command >= LO), command
    assert np.all(command <= HI), command
    qc = np.clip(q, LO, HI)
    # Never a jump: within one step's velocity bound of the measured position.
    assert np.all(np.abs(command - qc) <= STEP + 1e-9), (np.abs(command - qc), STEP)
    if held:
        return  # a hold is a position the arm was measured at (latched), so only the hard limits apply
    # Inside the margin, or at least not further into it than the arm already is.
    assert np.all(command >= np.minimum(MARGIN_LO, qc) - 1e-12), (command, q)
    assert np.all(command <= np.maximum(MARGIN_HI, qc) + 1e-12), (command, q)
    # A passed command never takes the end effector further out of the workspace box.
    assert outside(command) <= outside(qc) + 1e-9


def check_commands(sent) -> tuple[int, int]:
    """Checks every published command; returns how many were moves and how many holds."""
    moves = holds = 0
    for command, q, held in sent:
        check_command(command, q, held)
        if held:
            holds += 1
        else:
            moves += 1
    return moves, holds


def check_refusals_logged(node, err: str) -> dict[str, int]:
    """Every expected kind of refusal happened, and each kind that did is logged (throttled)."""
    counts = node.refusals.counts
    missing = ({r.value for r in EXPECTED} | EXPECTED_NODE) - set(counts)
    assert not missing, f"fuzz never provoked {sorted(missing)}; got {counts}"
    for code in counts:
        lines = re.findall(rf"^\[(?:WARN|ERROR)\] \[[\d.]+\] \[policy_runner\]: \[{code}\] (.+)$", err, re.MULTILINE)
        assert lines, f"no log line for refusal kind {code}"
        assert len(lines[0]) > 20  # says what happened, not just the code
    # Logged once per kind and then throttled, not once per refusal.
    assert err.count("\n") < sum(counts.values()) / 2
    return counts


@pytest.mark.slow  # ~20 s: 10,000 full cycles (IK, filter, a real policy on a share of them)
def test_10000_adversarial_cycles_send_no_command_outside_the_limits(runner_node, capfd):
    node = runner_node
    fuzz = NodeFuzz(node, np.random.default_rng(1234))
    for _ in range(CYCLES):
        fuzz.cycle()

    # ------------------------------------------------------------------ invariants
    assert len(fuzz.sent) > 3000, f"only {len(fuzz.sent)} commands: the fuzz did not exercise the armed path"
    assert fuzz.armed_cycles > 3000, fuzz.armed_cycles
    assert set(fuzz.kinds_seen) >= {"policy", "drift", "flip", *dict(fuzz.bad)}
    moves, holds = check_commands(fuzz.sent)
    assert moves > 2000, moves
    assert holds > 100, holds

    # ------------------------------------------------------------------ every kind refused, and said so
    counts = check_refusals_logged(node, capfd.readouterr().err)
    print(
        f"{len(fuzz.sent)} commands ({moves} moves, {holds} holds), {fuzz.armed_cycles} armed cycles, "
        f"re-homed {fuzz.rehomed} times; refusals {counts}"
    )


# ---------------------------------------------------------------------------------- in process, small


def joint_state(q, t, fingers=(0.02, 0.02)) -> JointState:
    msg = JointState(name=[*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES], position=[*map(float, q), *fingers])
    stamp(msg, t)
    return msg


def test_arming_refuses_a_stale_or_out_of_limits_joint_state(runner_node):
    node = runner_node
    assert node.arm(10.0) == (False, "no joint state on /joint_states yet")
    node._on_joints(joint_state(FR3_READY_POSE, 9.0))
    ok, message = node.arm(10.0)
    assert not ok
    assert message == "the joint state is 1.000 s old (limit 0.1 s)"
    q = np.array(FR3_READY_POSE)
    q[3] = HI[3] + 0.1
    node._on_joints(joint_state(q, 10.0))
    ok, message = node.arm(10.0)
    assert not ok
    assert "beyond the FR3 limits: joint4=-0.052" in message
    node._on_joints(joint_state(FR3_READY_POSE, 10.0))
    assert node.arm(10.01) == (True, "armed")
    assert node.path.armed


def test_proprioceptive_policy_gets_arm_and_finger_joints(ros_domain, tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from world4rl_policy.policy_runner_node import PolicyRunnerNode

    ckpt = save_policy(tmp_path / "p", GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32, proprio_dim=9)))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        node = PolicyRunnerNode(context=context, parameter_overrides=[Parameter("policy", value=str(ckpt))])
        seen = []
        real = node.action_source
        node.action_source = lambda frames, proprio: seen.append(proprio) or real(frames, proprio)
        node._on_joints(joint_state(FR3_READY_POSE, 5.0, fingers=(0.01, 0.03)))
        assert node.arm(5.0)[0]
        msg = image()
        stamp(msg, 5.01)
        node.handle_image(msg, 5.02, time.time())
        np.testing.assert_allclose(seen[0], [*FR3_READY_POSE, 0.01, 0.03])
        assert node.path.filter.status().step == 1
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)

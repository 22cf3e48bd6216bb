"""`world4rl deploy`: run a policy checkpoint on the robot through ROS and measure its success rate.

On the sim (`--robot sim`) it starts the deploy graph (config/graphs/deploy.yaml: sim_robot and
policy_runner, as `ros2 launch world4rl_bringup deploy.launch.py` would) and runs N episodes.
Episode i:

1. resets the sim (sim_only/reset) with seed SEED+i;
2. starts a new episode of the policy runner (policy_runner/new_episode: a new episode time
   limit) and arms it (policy_runner/arm): arming starts a new frame history, so the policy
   sees only this episode's frames, taken after the reset;
3. waits for the sim-only success flag (sim_only/success), the horizon, or a fault of the runner.
   The horizon is the task's, counted twice and never on the wall clock: in policy steps (as
   PolicyStatus counts them) and in simulated time (the sim's /clock); the episode ends when both
   have passed, so a loaded machine, which slows the sim or the policy, cuts no episode short;
4. disarms.

It prints and writes (JSON) the success rate with a 95 % Wilson confidence interval, and each
episode's seed, outcome, steps, duration and fault. With --compare-direct it also runs the same
checkpoint on the same seeds through the simulator's direct API (no ROS, no real time), the arm moved
in lockstep through the same command path and trajectory player as through ROS (runtime_timing),
and says whether the two rates agree within their intervals: the check that deployment through ROS
(camera conversion, transport, real-time scheduling) does not change what the policy achieves.

With --live-view the policy runner also serves a Foxglove WebSocket on this host (ws://127.0.0.1:8765
by default): the camera, the frames the policy decides on, the world model's one-step prediction
from them and the chosen action next to the frame that came, and PolicyStatus. Open it in Foxglove
("Open connection" -> "Foxglove WebSocket") with the layout
share/world4rl_bringup/config/foxglove/live_view.json. It never delays the control cycle.

The success flag exists only in the sim, so on the real arm an operator judges the episodes:
there the graph is started with `ros2 launch` on the robot PC, and this command explains how.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from world4rl_bringup.graph import add_namespace_argument
from world4rl_bringup.graph_driver import GraphDriver
from world4rl_bringup.sim_episode import add_real_time_factor_argument
from world4rl_model.atomic_io import atomic_write_text
from world4rl_model.statistics import latency_summary, wilson_interval
from world4rl_spec import topics

RUNNER_ARM = topics.POLICY_ARM  # relative, like every name: resolved in --namespace
RUNNER_NEW_EPISODE = topics.POLICY_NEW_EPISODE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--robot", choices=["sim", "franka"], default="sim", help="robot (default: sim)")
    parser.add_argument(
        "--policy",
        type=Path,
        required=True,
        help="policy checkpoint directory, or a training run; a refine run deploys the policy its gate chose "
        "(REFINE_RUN/gate.json: BC unless the refined policy's predicted gain is beyond its interval)",
    )
    parser.add_argument(
        "--policy-choice",
        choices=["gate", "bc", "refined"],
        default="gate",
        help="from a refine run: the gate's choice (default), or the BC or the refined policy explicitly",
    )
    parser.add_argument("--task", default="push", help="sim task (default: push)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to run (default: 20)")
    parser.add_argument(
        "--seed", type=int, default=1000, help="episode i uses seed SEED+i (default: 1000, away from collection's 0..)"
    )
    parser.add_argument("--horizon", type=int, default=None, help="policy steps per episode (default: the task's)")
    add_real_time_factor_argument(parser)
    add_namespace_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: world4rl_data/deploy/TASK.json)")
    parser.add_argument("--log-dir", type=Path, default=None, help="node logs (default: next to --out)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for the graph")
    add_live_view_arguments(parser)
    parser.add_argument(
        "--compare-direct",
        action="store_true",
        help="also run the same checkpoint on the same seeds through the simulator's direct API (no ROS) "
        "and report whether the two success rates agree within their 95 %% confidence intervals",
    )


def add_live_view_arguments(parser: argparse.ArgumentParser) -> None:
    """--live-view and its settings: the deploy graph's live_view* and world_model arguments."""
    from world4rl_policy.live_view import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument(
        "--live-view",
        action="store_true",
        help="serve a Foxglove WebSocket: the camera, the policy's input frames, the world model's one-step "
        "prediction and PolicyStatus (layout: share/world4rl_bringup/config/foxglove/live_view.json)",
    )
    parser.add_argument(
        "--live-view-host",
        default=DEFAULT_HOST,
        help=f"address the live view binds to (default: {DEFAULT_HOST}, this host only; the view has no "
        "authentication: reach it from elsewhere through an SSH tunnel)",
    )
    parser.add_argument(
        "--live-view-port", type=int, default=DEFAULT_PORT, help=f"live view port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--world-model",
        type=Path,
        default=None,
        help="live view: world model for the one-step prediction (default: the one a refined policy was refined in)",
    )


@dataclass
class EpisodeResult:
    episode: int
    seed: int
    success: bool
    steps: int  # policy commands passed by the safety filter
    seconds: float
    fault: str  # the runner's fault if it disarmed itself, else ""
    outcome: str  # success | horizon | fault | timeout


class Deployer(GraphDriver):
    """Drives the sim and the policy runner over a RosSession."""

    def __init__(self, ros, nodes: dict, args):
        from sensor_msgs.msg import JointState

        from world4rl_bringup.sim_episode import ArmCommands, SimClock, SimSuccess
        from world4rl_msgs.msg import PolicyStatus
        from world4rl_spec import topics

        super().__init__(ros, nodes)
        self.args = args
        self.lock = threading.Lock()
        self.status = None
        self.status_time = 0.0
        self.latencies_ms: list[float] = []
        self.joint_state_seen = threading.Event()
        self.clock = SimClock(ros.node)
        self.success = SimSuccess(ros.node)
        self.commands = ArmCommands(ros.node, self.clock)
        ros.node.create_subscription(PolicyStatus, topics.POLICY_STATUS, self._on_status, 10)
        ros.node.create_subscription(JointState, topics.JOINT_STATES, lambda _m: self.joint_state_seen.set(), 10)

    def _on_status(self, msg) -> None:
        with self.lock:
            self.status, self.status_time = msg, time.monotonic()
            # Image arrival -> command publish of armed cycles (0: a cycle without a new image).
            if msg.armed and msg.latency_ms > 0:
                self.latencies_ms.append(float(msg.latency_ms))

    def wait_for_graph(self, timeout: float) -> None:
        from std_srvs.srv import SetBool, Trigger

        from world4rl_msgs.srv import ResetSim
        from world4rl_spec import topics

        deadline = time.monotonic() + timeout
        services = ((ResetSim, topics.SIM_RESET), (Trigger, RUNNER_NEW_EPISODE), (SetBool, RUNNER_ARM))
        self.wait_for_services(services, deadline, timeout)
        self.wait_for(
            lambda: self.joint_state_seen.is_set() and self.status is not None,
            deadline,
            f"no joint state / policy status within {timeout:.0f} s: is the graph running?",
        )
        self.clock.wait_beyond(None, max(1.0, deadline - time.monotonic()))

    def _arm(self, on: bool, timeout: float = 5.0):
        from std_srvs.srv import SetBool, Trigger

        request = SetBool.Request(data=on)
        if not on:
            return self.ros.call(SetBool, RUNNER_ARM, request, check_ok=False, resend_after=2.0)
        # Each episode has its own time limit: re-arming alone would continue the last one's.
        self.ros.call(Trigger, RUNNER_NEW_EPISODE, Trigger.Request(), resend_after=2.0)
        # The runner may refuse for a moment, e.g. while the joint state is stale after the reset.
        return self.ros.call_until_ok(SetBool, RUNNER_ARM, request, within=timeout, resend_after=2.0)

    def episode(self, index: int, horizon: int) -> EpisodeResult:
        from world4rl_bringup.sim_episode import reset_sim
        from world4rl_spec import CONTROL_RATE_HZ

        seed = self.args.seed + index
        reset_sim(self.ros, self.commands, self.success, self.args.task, seed)
        self._arm(True)
        armed_at = time.monotonic()
        sim_start = self.clock.wait_beyond(self.clock.now())
        horizon_s = horizon / CONTROL_RATE_HZ
        outcome, fault, steps = "timeout", "", 0
        while True:
            self.check_nodes()
            sim_elapsed = self.clock.now() - sim_start
            with self.lock:
                status, status_time = self.status, self.status_time
            fresh = status is not None and status_time > armed_at
            if fresh:
                steps = int(status.step)
            if self.success.succeeding:
                outcome = "success"
                break
            if fresh and status.armed and steps >= horizon and sim_elapsed >= horizon_s:
                outcome = "horizon"
                break
            if fresh and not status.armed and status.fault:
                outcome, fault = "fault", status.fault
                break
            # A guard in simulated time: a runner that stops stepping without a fault ends the episode.
            if sim_elapsed > 3.0 * horizon_s + 10.0:
                break
            time.sleep(0.01)
        seconds = time.monotonic() - armed_at
        self._arm(False)
        return EpisodeResult(index, seed, outcome == "success", steps, round(seconds, 3), fault, outcome)


class _ArgumentError(ValueError):
    """A bad argument: printed as `error: ...`, exit code 2."""


def _resolve_deploy_graph(args: argparse.Namespace, policy: Path):
    from world4rl_bringup.graph import GraphError, load_graph, resolve
    from world4rl_bringup.graph_runner import check_runnable_here

    graph_args = {"robot": args.robot, "policy": str(policy), "task": args.task}
    graph_args["real_time_factor"] = str(args.real_time_factor)
    graph_args["namespace"] = args.namespace
    graph_args["live_view"] = "true" if args.live_view else "false"
    graph_args["live_view_host"] = args.live_view_host
    graph_args["live_view_port"] = str(args.live_view_port)
    graph_args["world_model"] = str(args.world_model.expanduser().resolve()) if args.world_model else ""
    try:
        resolved = resolve(load_graph("deploy"), graph_args)
        if args.robot == "franka":
            check_runnable_here(resolved)
    except GraphError as exc:
        raise _ArgumentError(
            f"{exc}\nThe success flag is sim-only: on the real arm arm/disarm the runner per episode with\n"
            f"  ros2 service call {topics.qualified(RUNNER_ARM, args.namespace)} std_srvs/srv/SetBool "
            '"{data: true}"\nand judge the episodes.'
        ) from exc
    return resolved


def _checked(args: argparse.Namespace):
    """(policy path, its fingerprint, the resolved graph, the horizon), or _ArgumentError."""
    from world4rl_model.checkpoint import checkpoint_fingerprint
    from world4rl_policy.prediction import resolve_deploy_policy
    from world4rl_sim.tasks import TASK_REGISTRY, TASKS

    policy = args.policy.expanduser().resolve()
    if args.episodes < 1:
        raise _ArgumentError("--episodes must be at least 1")
    if not 0 <= args.live_view_port <= 65535:
        raise _ArgumentError(f"--live-view-port {args.live_view_port} is not a port number (0..65535)")
    try:
        policy, args.gate_note = resolve_deploy_policy(policy, args.policy_choice)
        fingerprint = checkpoint_fingerprint(policy)
    except Exception as exc:  # a missing or half-written checkpoint: say so before starting anything
        raise _ArgumentError(f"--policy {args.policy}: {exc}") from exc
    resolved = _resolve_deploy_graph(args, policy)
    if args.task not in TASKS:
        raise _ArgumentError(f"--task {args.task!r} is not a sim task; choose one of {', '.join(TASKS)}")
    return policy, fingerprint, resolved, args.horizon or TASK_REGISTRY[args.task].horizon


def run(args: argparse.Namespace) -> int:
    from world4rl_bringup.dds_network import join_robot_network
    from world4rl_bringup.graph import GraphError
    from world4rl_bringup.graph_runner import run_graph
    from world4rl_bringup.sim_episode import SimClockError
    from world4rl_ros.node_process import NodeDiedError
    from world4rl_ros.ros_session import RosCallError, RosSession

    try:
        policy, fingerprint, resolved, horizon = _checked(args)
    except _ArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = (args.out or Path("world4rl_data") / "deploy" / f"{args.task}.json").resolve()
    log_dir = args.log_dir or out.parent / "logs"
    if args.gate_note:
        print(f"{args.policy}: {args.gate_note}")
    print(f"deploying {fingerprint} on the sim: task {args.task}, {args.episodes} episode(s) of <= {horizon} steps")
    results: list[EpisodeResult] = []
    from tqdm import tqdm

    try:
        join_robot_network(args.robot, log_dir)  # this command's own node too, as the graph's nodes
        with run_graph(resolved, log_dir) as nodes, RosSession("world4rl_deploy", namespace=args.namespace) as ros:
            deployer = Deployer(ros, nodes, args)
            deployer.wait_for_graph(args.startup_timeout)
            if args.live_view:
                url = f"ws://{args.live_view_host}:{args.live_view_port or 'PORT'}"  # 0: the runner logs PORT
                print(f"live view: {url} (Foxglove WebSocket; policy_runner's log in {log_dir})")
            bar = tqdm(range(args.episodes), unit="episode", desc=args.task)
            for index in bar:
                results.append(deployer.episode(index, horizon))
                bar.set_postfix(success=sum(r.success for r in results))
            bar.close()
    except (RosCallError, NodeDiedError, GraphError, SimClockError) as exc:
        print(f"\nerror: {exc}\nnode logs: {log_dir}", file=sys.stderr)
        return 1
    summary = _summary(args, policy, fingerprint, horizon, results, deployer.latencies_ms)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, results, out)
    return 0


def _summary(args, policy: Path, fingerprint, horizon: int, results: list[EpisodeResult], latencies_ms) -> dict:
    successes, n = sum(r.success for r in results), len(results)
    low, high = wilson_interval(successes, n)
    summary = {
        "policy": str(policy),
        "policy_requested": str(args.policy),
        "policy_choice": args.policy_choice,
        "gate": args.gate_note,
        "checkpoint": str(fingerprint),
        "robot": args.robot,
        "task": args.task,
        "episodes": n,
        "horizon_steps": horizon,
        "seeds": [r.seed for r in results],
        "successes": successes,
        "success_rate": successes / n,
        "ci95_wilson": [low, high],
        "faults": sum(r.outcome == "fault" for r in results),
        "latency_ms": latency_summary(latencies_ms),
        "results": [asdict(r) for r in results],
    }
    if args.compare_direct:
        from world4rl_bringup.sim_rollouts import direct_api_outcomes

        direct = direct_api_outcomes(policy, args.task, summary["seeds"], horizon, timing="runtime")
        k = sum(direct)
        d_low, d_high = wilson_interval(k, n)
        summary["direct_api"] = {
            "timing": "runtime",
            "successes": k,
            "success_rate": k / n,
            "ci95_wilson": [d_low, d_high],
            "results": direct,
            "same_outcome_seeds": sum(a == b for a, b in zip(direct, (r.success for r in results), strict=True)),
            # Each rate inside the other's interval.
            "agree_within_ci": d_low <= successes / n <= d_high and low <= k / n <= high,
        }
    return summary


def _print_summary(summary: dict, results: list[EpisodeResult], out: Path) -> None:
    for r in results:
        extra = f" ({r.fault})" if r.fault else ""
        print(f"  episode {r.episode:3d} seed {r.seed}: {r.outcome:8s} {r.steps:3d} steps {r.seconds:6.2f} s{extra}")
    n, (low, high) = summary["episodes"], summary["ci95_wilson"]
    print(
        f"success rate {summary['successes']}/{n} = {summary['success_rate']:.1%} (95 % Wilson CI "
        f"{low:.1%}..{high:.1%}); {summary['faults']} episode(s) ended by a safety fault. Results: {out}"
    )
    if "direct_api" in summary:
        d = summary["direct_api"]
        print(
            f"direct API (no ROS, {d['timing']} timing), same seeds: {d['successes']}/{n} = {d['success_rate']:.1%} "
            f"(95 % Wilson CI {d['ci95_wilson'][0]:.1%}..{d['ci95_wilson'][1]:.1%}); same outcome on "
            f"{d['same_outcome_seeds']}/{n} seeds; rates {'agree' if d['agree_within_ci'] else 'DISAGREE'} "
            "within the confidence intervals"
        )

"""`world4rl collect`: record N demonstration episodes, one rosbag2 bag each, resuming a directory.

On the sim (`--robot sim`) it starts the collect graph (config/graphs/collect.yaml: sim_robot,
expert_demonstrator, action_executor, episode_recorder) and drives it: for episode i it resets the
sim with seed SEED+i, starts the recorder, arms the executor, lets the scripted expert demonstrate
until the sim reports success (plus a few settle steps) or the horizon passes, then labels and
closes the bag. Episode lengths are counted in simulated time (the sim's /clock) and in the
commands the executor carried out, never on the wall clock, so a loaded machine does not cut
episodes short. Keys while it runs: n = end this episode now, r = discard and re-record it,
q = discard it and stop.

On the real arm the graph is started by `ros2 launch world4rl_bringup collect.launch.py
robot:=franka ...` on the robot PC, and `world4rl collect --robot franka --attach` gives the
operator the episode controls: Enter = start, s = stop as success, f = stop as failure,
r = discard and re-record, q = quit. The teleoperator drives the arm from another terminal
(`ros2 run world4rl_bringup keyboard_teleop`).

Episodes already in the output directory count: asking for 50 where 20 exist records 30 more,
with the same seeds a single run would have used.

`--namespace robot_a` starts the graph in that ROS namespace and talks to it from there (every
name is relative), so two collections can share one ROS domain; the bags look the same either way.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from world4rl_bringup.graph import add_namespace_argument
from world4rl_bringup.graph_driver import GraphDriver
from world4rl_bringup.sim_episode import add_real_time_factor_argument
from world4rl_spec import CONTROL_RATE_HZ, topics

EXECUTOR_ARM = topics.EXECUTOR_ARM  # relative, like every name: resolved in --namespace
EXECUTOR_NEW_EPISODE = topics.EXECUTOR_NEW_EPISODE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", choices=["sim", "franka"], default="sim", help="robot profile (default: sim)")
    parser.add_argument(
        "--camera",
        choices=["sim", "realsense", "realsense_apt", "usb"],
        default=None,
        help="camera source (default: sim for the sim robot, realsense for franka)",
    )
    parser.add_argument("--task", default="push", help="task to demonstrate (default: push)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes the directory should hold (default: 20)")
    parser.add_argument("--out", type=Path, default=None, help="bag directory (default: world4rl_data/bags/TASK)")
    parser.add_argument("--seed", type=int, default=0, help="sim: episode i uses seed SEED+i (default: 0)")
    parser.add_argument("--expert-noise", type=float, default=0.0, help="sim: std of noise on the expert's motion")
    parser.add_argument("--horizon", type=int, default=None, help="sim: control steps per episode (default: task's)")
    add_real_time_factor_argument(parser)
    add_namespace_argument(parser)
    parser.add_argument("--settle-steps", type=int, default=3, help="sim: steps recorded after success (default: 3)")
    parser.add_argument("--attach", action="store_true", help="drive a graph already started with ros2 launch")
    parser.add_argument("--no-keyboard", action="store_true", help="ignore the terminal (non-interactive runs)")
    parser.add_argument("--log-dir", type=Path, default=None, help="node logs (default: OUT/../logs)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for the graph's services")


def complete_episodes(output_dir: Path) -> list[Path]:
    """Bags that were closed cleanly (not .incomplete / .partial)."""
    from world4rl_bringup.bag_writer import episode_dir_name, parse_episode_index

    if not output_dir.is_dir():
        return []
    found = []
    for path in sorted(output_dir.iterdir()):
        index = parse_episode_index(path.name)
        if path.is_dir() and index is not None and path.name == episode_dir_name(index):
            found.append(path)
    return found


class Keys:
    """Single key presses from the terminal, if there is one (cbreak mode, restored on exit)."""

    def __init__(self, enabled: bool):
        self.queue: queue.Queue[str] = queue.Queue()
        self.fd = sys.stdin.fileno() if enabled and sys.stdin.isatty() else None
        self._saved = None
        self._stop = threading.Event()

    @property
    def interactive(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> Keys:
        if self.fd is not None:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)  # keep keys typed while the graph started
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        while not self._stop.is_set():
            if select.select([self.fd], [], [], 0.05)[0]:
                for char in os.read(self.fd, 32).decode(errors="ignore"):
                    self.queue.put("enter" if char in "\r\n" else char.lower())

    def poll(self) -> str | None:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def wait(self, allowed: set[str]) -> str:
        while True:
            key = self.queue.get()
            if key in allowed:
                return key

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class Collector(GraphDriver):
    """Drives the recorder, the executor and (on the sim) resets, over a RosSession."""

    def __init__(self, args, ros, nodes, keys: Keys):
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        from world4rl_msgs.msg import Action
        from world4rl_spec import topics

        super().__init__(ros, nodes)
        self.args = args
        self.keys = keys
        self.recording = False
        self.joint_state_seen = threading.Event()
        self._actions_lock = threading.Lock()
        # Source timestamps of the demonstrator's latest actions, received as the recorder receives them.
        self._action_stamps: collections.deque[int] = collections.deque(maxlen=1000)
        ros.node.create_subscription(
            JointState, topics.JOINT_STATES, lambda _msg: self.joint_state_seen.set(), qos_profile_sensor_data
        )
        # The recorder's QoS for the action topic (reliable, like its publishers).
        ros.node.create_subscription(
            Action, topics.ACTION, self._on_action, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        )
        if args.robot == "sim":
            from world4rl_bringup.sim_episode import ArmCommands, SimClock, SimSuccess
            from world4rl_msgs.msg import PolicyStatus

            self.clock = SimClock(ros.node)
            self.success = SimSuccess(ros.node)
            self.commands = ArmCommands(ros.node, self.clock)
            self._status: tuple[float, object] | None = None  # (monotonic time received, the executor's status)
            ros.node.create_subscription(PolicyStatus, topics.POLICY_STATUS, self._on_status, 10)

    def _on_status(self, msg) -> None:
        with self._actions_lock:
            self._status = (time.monotonic(), msg)

    def _executor_status(self, since: float):
        """The executor's latest PolicyStatus received after `since` (monotonic), or None."""
        with self._actions_lock:
            status = self._status
        return status[1] if status is not None and status[0] > since else None

    def _on_action(self, _msg, info) -> None:
        from world4rl_bringup.sim_episode import source_timestamp_ns

        with self._actions_lock:
            self._action_stamps.append(source_timestamp_ns(info))

    def _actions_published_after(self, stamp_ns: int) -> int:
        """Actions written after `stamp_ns` (source timestamps): what the recorder, which logs
        messages in the order they reach it, also has after that moment."""
        with self._actions_lock:
            return sum(1 for t in self._action_stamps if t > stamp_ns)

    def wait_for_graph(self, timeout: float) -> None:
        from std_srvs.srv import SetBool, Trigger

        from world4rl_msgs.srv import ResetSim, StartEpisode
        from world4rl_spec import topics

        wanted = [(StartEpisode, topics.RECORDER_START), (Trigger, EXECUTOR_NEW_EPISODE), (SetBool, EXECUTOR_ARM)]
        if self.args.robot == "sim":
            wanted.append((ResetSim, topics.SIM_RESET))
        deadline = time.monotonic() + timeout
        shown = self.ros.node.resolve_topic_name  # the full name, in --namespace
        self.wait_for_services(wanted, deadline, timeout)
        # The executor can only be armed once it has heard the arm: wait for the robot's joint states.
        self.wait_for(
            self.joint_state_seen.is_set,
            deadline,
            f"no joint state on {shown(topics.JOINT_STATES)} within {timeout:.0f} s: is the robot up?",
        )
        if self.args.robot == "sim":
            self.clock.wait_beyond(None, max(1.0, deadline - time.monotonic()))
            # The scripted expert's actions must be flowing (sim -> demonstrator -> executor and
            # recorder) before an episode starts: on a loaded machine discovery takes seconds, and an
            # executor armed before the first action reaches it holds and disarms.
            self.wait_for(
                lambda: (
                    len(self._action_stamps) >= 3
                    and len(self.ros.node.get_subscriptions_info_by_topic(topics.ACTION)) >= 3
                ),
                deadline,
                f"the scripted expert's actions on {shown(topics.ACTION)} did not reach the executor and the "
                f"recorder within {timeout:.0f} s: is expert_demonstrator running?",
            )
        # The recorder subscribes to a topic once it has discovered its publisher: an episode started
        # before it records the camera would lose its first steps (actions before the first image).
        recorded = [topics.CAMERA_IMAGE, topics.JOINT_STATES, topics.ACTION]
        recorded += [topics.SIM_SUCCESS] if self.args.robot == "sim" else []

        def missing() -> list[str]:
            return [t for t in recorded if not self._recorder_subscribed(t)]

        self.wait_for(
            lambda: not missing(),
            deadline,
            lambda: (
                f"the episode recorder has not subscribed to {', '.join(map(shown, missing()))} within "
                f"{timeout:.0f} s: is the camera (or the sim) publishing?"
            ),
        )
        time.sleep(0.5)  # the executor subscribes to the same topics: give it a few messages too

    def _recorder_subscribed(self, topic: str) -> bool:
        return any(i.node_name == "episode_recorder" for i in self.ros.node.get_subscriptions_info_by_topic(topic))

    # ---------------------------------------------------------------- one episode
    def _start(self, index: int, note: str) -> None:
        from std_srvs.srv import SetBool, Trigger

        from world4rl_msgs.srv import StartEpisode
        from world4rl_spec import topics

        reply = self.ros.call(
            StartEpisode, topics.RECORDER_START, StartEpisode.Request(task=self.args.task, operator_note=note)
        )
        self.recording = True
        if reply.episode_index != index:
            print(f"\nnote: the recorder numbered this episode {reply.episode_index} (expected {index})")
        # A new episode time limit (re-arming alone would continue the last episode's), then arm:
        # the executor arms only once it has heard the arm (a joint state): retry briefly after start-up.
        self.ros.call(Trigger, EXECUTOR_NEW_EPISODE, Trigger.Request(), resend_after=2.0)
        self.ros.call_until_ok(SetBool, EXECUTOR_ARM, SetBool.Request(data=True), within=10.0, resend_after=2.0)

    def _finish(self, outcome: str, success: bool) -> str:
        from std_srvs.srv import SetBool

        from world4rl_msgs.srv import StopEpisode
        from world4rl_spec import topics

        self.ros.call(SetBool, EXECUTOR_ARM, SetBool.Request(data=False), check_ok=False, resend_after=2.0)
        if outcome in ("discard", "quit"):
            self.discard()
            return outcome
        self.ros.call(StopEpisode, topics.RECORDER_STOP, StopEpisode.Request(success=success), timeout=30.0)
        self.recording = False
        return "success" if success else "failure"

    def discard(self) -> None:
        """Throw the running episode away (also after an error, so no half episode is left)."""
        from world4rl_msgs.srv import DiscardEpisode
        from world4rl_spec import topics

        if self.recording:
            self.ros.call(DiscardEpisode, topics.RECORDER_DISCARD, DiscardEpisode.Request(), check_ok=False)
            self.recording = False

    def sim_episode(self, index: int) -> str:
        """One scripted-expert episode. Its length is counted in simulated time and in commands the
        executor carried out, never on the wall clock: it lasts until the sim has advanced `horizon`
        control periods and the executor has sent `horizon` commands (a loaded machine slows one or
        the other and shortens neither), or until the task has stayed solved for `settle_steps`
        actions published after the success began. The label is the sim's success flag then, so the
        recorder, which logs the same flag and actions in the order they reach it, has labelled the
        episode's last frames the same way."""
        from world4rl_bringup.sim_episode import reset_sim
        from world4rl_sim.tasks import TASK_REGISTRY

        seed = self.args.seed + index
        reset_sim(self.ros, self.commands, self.success, self.args.task, seed)
        horizon = self.args.horizon or TASK_REGISTRY[self.args.task].horizon
        self._start(index, f"scripted expert, seed {seed}, noise {self.args.expert_noise}")
        armed_at, seen_armed = time.monotonic(), False  # statuses count once one says armed (DDS may reorder)
        sim_start = self.clock.wait_beyond(self.clock.now())
        outcome, solved = "timeout", False
        while True:
            self.check_nodes()
            key = self.keys.poll()
            if key in ("n", "r", "q"):
                outcome = {"n": "next", "r": "discard", "q": "quit"}[key]
                break
            sim_elapsed, status = self.clock.now() - sim_start, self._executor_status(armed_at)
            seen_armed = seen_armed or (status is not None and status.armed)
            status = status if seen_armed else None
            solved_since = self.success.solved_since_ns  # None unless solved now
            solved = solved_since is not None
            if solved:
                if self._actions_published_after(solved_since) >= self.args.settle_steps:
                    outcome = "done"
                    break
            elif status is not None and not status.armed and status.fault:
                print(f"\nepisode {index}: the executor held and disarmed: {status.fault}")
                break
            elif (
                sim_elapsed >= horizon / CONTROL_RATE_HZ
                and status is not None
                and status.armed
                and status.step >= horizon
            ):
                break
            time.sleep(0.01)
        return self._finish(outcome, solved)

    def operator_episode(self, index: int) -> str:
        print(f"\nepisode {index}: Enter = start, q = quit")
        if self.keys.wait({"enter", "q"}) == "q":
            return "quit"
        self._start(index, "teleoperated")
        print("recording: s = success, f = failure, r = discard and redo, q = discard and quit")
        key = self.keys.wait({"s", "f", "r", "q"})
        return self._finish({"s": "stop", "f": "stop", "r": "discard", "q": "quit"}[key], key == "s")


def _default_out(args: argparse.Namespace) -> Path:
    return (args.out or Path("world4rl_data") / "bags" / args.task).resolve()


def _argument_error(args: argparse.Namespace, camera: str) -> str | None:
    """What makes these arguments unusable, or None."""
    from world4rl_spec import check_task_name

    try:
        check_task_name(args.task, "--task")
    except ValueError as exc:
        return str(exc)
    if args.robot == "sim":
        from world4rl_sim.tasks import TASKS

        if args.task not in TASKS:
            return f"--task {args.task!r} is not a sim task; choose one of {', '.join(TASKS)}"
    if args.robot == "franka" and not args.attach:
        out = _default_out(args)
        return (
            "the real arm's drivers need a full ROS 2 install. On the robot PC run\n"
            f"  ros2 launch world4rl_bringup collect.launch.py robot:=franka camera:={camera} task:={args.task} "
            f"output_dir:={out}{_namespace_arg(args, ' namespace:=')}\nthen, in another terminal: world4rl collect "
            f"--robot franka --attach --task {args.task} --out {out} --episodes {args.episodes}"
            f"{_namespace_arg(args, ' --namespace ')}"
        )
    if args.settle_steps < 1:
        return "--settle-steps must be at least 1: the success label needs a recorded action after it"
    return None


def _namespace_arg(args: argparse.Namespace, flag: str) -> str:
    return f"{flag}{args.namespace}" if args.namespace else ""


def run(args: argparse.Namespace) -> int:
    from world4rl_bringup.dds_network import join_robot_network
    from world4rl_bringup.graph import GraphError, load_graph, resolve
    from world4rl_bringup.graph_runner import run_graph
    from world4rl_bringup.sim_episode import SimClockError
    from world4rl_ros.node_process import NodeDiedError
    from world4rl_ros.ros_session import RosCallError, RosSession

    camera = args.camera or ("sim" if args.robot == "sim" else "realsense")
    error = _argument_error(args, camera)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = _default_out(args)
    done = len(complete_episodes(out))
    if done >= args.episodes:
        print(f"{out} already holds {done} complete episodes (asked for {args.episodes}): nothing to record")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    log_dir = args.log_dir or out.parent / "logs"
    graph_args = {
        "robot": args.robot,
        "camera": camera,
        "task": args.task,
        "output_dir": str(out),
        "seed": str(args.seed + done),
        "expert_noise": str(args.expert_noise),
        "real_time_factor": str(args.real_time_factor),
        "namespace": args.namespace,
    }
    try:
        resolved = resolve(load_graph("collect"), graph_args)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys_enabled = not args.no_keyboard
    if args.robot == "franka" and not (keys_enabled and sys.stdin.isatty()):
        print("error: operator mode needs a terminal for its keys (s/f/r/q)", file=sys.stderr)
        return 2
    print(f"collecting {args.episodes - done} episode(s) of '{args.task}' on {args.robot} into {out} ({done} there)")
    if args.robot == "sim" and keys_enabled and sys.stdin.isatty():
        print("keys: n = end episode now, r = discard and re-record, q = discard and stop")
    results = {"success": 0, "failure": 0, "discard": 0}
    try:
        # This command's own node joins the robot's DDS network, as the graph's nodes do.
        join_robot_network(args.robot, log_dir)
        graph = run_graph(resolved, log_dir) if not args.attach else contextlib.nullcontext({})
        with (
            graph as nodes,
            RosSession("world4rl_collect", namespace=args.namespace) as ros,
            Keys(keys_enabled) as keys,
        ):
            collector = Collector(args, ros, nodes, keys)
            collector.wait_for_graph(args.startup_timeout)
            try:
                recorded = _record(args, collector, done, results)
            except BaseException:
                with contextlib.suppress(Exception):
                    collector.discard()
                raise
    except (RosCallError, NodeDiedError, GraphError, SimClockError) as exc:
        print(f"\nerror: {exc}\nnode logs: {log_dir}", file=sys.stderr)
        return 1
    print(
        f"recorded {recorded} episode(s): {results['success']} successful, "
        f"{results['failure']} failed, {results['discard']} discarded; {out} now holds "
        f"{len(complete_episodes(out))}.\nnext: world4rl dataset build {out} --out world4rl_data/datasets/{args.task}"
    )
    return 0


def _record(args, collector: Collector, done: int, results: dict) -> int:
    from tqdm import tqdm

    bar = tqdm(total=args.episodes, initial=done, unit="episode", desc=args.task)
    index = done
    while index < args.episodes:
        outcome = collector.sim_episode(index) if args.robot == "sim" else collector.operator_episode(index)
        if outcome == "quit":
            print("\nstopped by the operator; the unfinished episode was discarded")
            break
        if outcome == "discard":
            results["discard"] += 1
            continue
        results[outcome] += 1
        index += 1
        bar.update(1)
        bar.set_postfix(success=results["success"], failure=results["failure"])
    bar.close()
    return results["success"] + results["failure"]

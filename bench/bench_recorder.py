"""Episode recorder under load: two 640x480 rgb8 @ 30 fps camera streams (two camera nodes with the
test pattern, each frame numbered) + joint states at 1 kHz + actions at 10 Hz (a synthetic
publisher process, each message numbered), recorded into one episode of `--duration` seconds.

Reports, from the bag read back with rosbags:
- dropped messages: gaps in the frame / message numbers inside the episode (goal: 0), and the
  achieved rate per stream;
- CPU use of every process (from /proc), as % of one core;
- time to close the episode (goal < 0.5 s): the recorder's own close time and the StopEpisode
  round trip seen by a client.
Baseline, measured in the same run: the same recorder with no episode open for
`--baseline-seconds` (it receives everything but writes nothing), so "CPU recording / CPU
receiving" shows what writing the bag costs. Writes bench/results/recorder.{json,md}.

    .venv/bin/python bench/bench_recorder.py [--duration 60] [--baseline-seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CAMERA2_IMAGE = "/camera2/camera/color/image_raw"
CAMERA2_INFO = "/camera2/camera/color/camera_info"
CLOSE_GOAL_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (children excluded) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, to show how loaded the shared host was."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def run_joint_publisher(rate_hz: float, action_hz: float) -> int:
    """Child role: publish numbered JointState at rate_hz and Action at action_hz until SIGINT."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from world4rl_msgs.msg import Action
    from world4rl_spec import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, topics

    rclpy.init()
    node = rclpy.create_node("synthetic_joint_states")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    joints = node.create_publisher(JointState, topics.JOINT_STATES, qos)
    actions = node.create_publisher(Action, topics.ACTION, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    names = [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES]
    msg = JointState(name=names, position=[0.0] * 9, velocity=[0.0] * 9, effort=[0.0] * 9)
    period, every = 1.0 / rate_hz, max(1, round(rate_hz / action_hz))
    sent = 0
    next_t = time.perf_counter()
    try:
        while rclpy.ok():
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.position[0] = float(sent)
            joints.publish(msg)
            if sent % every == 0:
                actions.publish(Action(values=[0.0, 0.0, 0.0, float(sent // every)], source="bench"))
            sent += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:
                next_t = time.perf_counter()  # fell far behind: do not burst
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps({"joint_states_sent": sent}), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def gaps(numbers: list[int]) -> tuple[int, int]:
    """(missing, out of order) in a sequence that should count up by one."""
    if not numbers:
        return 0, 0
    missing = (max(numbers) - min(numbers) + 1) - len(set(numbers))
    out_of_order = sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
    return missing, out_of_order


def analyse_bag(path: Path) -> dict:
    import numpy as np
    from rosbags.rosbag2 import Reader

    from world4rl_bringup.bag_writer import ensure_msgtype, episode_typestore
    from world4rl_bringup.camera_sources import decode_frame_number
    from world4rl_spec import topics

    store = episode_typestore()
    numbers: dict[str, list[int]] = {}
    stamps: dict[str, list[int]] = {}
    counts = {}
    with Reader(path) as reader:
        for conn in reader.connections:
            counts[conn.topic] = conn.msgcount
            ensure_msgtype(store, conn.msgtype)
        for conn, stamp, raw in reader.messages():
            stamps.setdefault(conn.topic, []).append(stamp)
            if conn.topic in (topics.bag_topic(topics.CAMERA_IMAGE), CAMERA2_IMAGE):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                row = np.frombuffer(msg.data, np.uint8, count=32 * 3).reshape(32, 3)
                numbers.setdefault(conn.topic, []).append(decode_frame_number(row))
            elif conn.topic == topics.bag_topic(topics.JOINT_STATES):
                numbers.setdefault(conn.topic, []).append(int(store.deserialize_cdr(raw, conn.msgtype).position[0]))
            elif conn.topic == topics.bag_topic(topics.ACTION):
                numbers.setdefault(conn.topic, []).append(int(store.deserialize_cdr(raw, conn.msgtype).values[3]))
    streams = {}
    for topic, seq in numbers.items():
        missing, disorder = gaps(seq)
        span = (stamps[topic][-1] - stamps[topic][0]) / 1e9 if len(stamps[topic]) > 1 else 0.0
        streams[topic] = {
            "recorded": counts[topic],
            "dropped": missing,
            "out_of_order": disorder,
            "rate_hz": (len(seq) - 1) / span if span else 0.0,
        }
    return {"counts": counts, "streams": streams, "bytes": sum(f.stat().st_size for f in path.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="length of the recorded episode [s]")
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="receive-only window [s]")
    parser.add_argument("--joint-rate", type=float, default=1000.0, help="joint state rate [Hz]")
    parser.add_argument("--quick", action="store_true", help="10 s episode, 5 s baseline")
    parser.add_argument("--output-dir", default="", help="where the bag goes (default: a temp dir, deleted)")
    parser.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # the publisher role also gets --ros-args
    if args.role == "joints":
        return run_joint_publisher(args.joint_rate, 10.0)
    if args.quick:
        args.duration, args.baseline_seconds = 10.0, 5.0

    import rclpy

    from world4rl_msgs.srv import StartEpisode, StopEpisode
    from world4rl_spec import topics
    from world4rl_testing import NodeProcess, wait_until

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    # This host only: the workspace's DDS profile binds to the loopback (LOCALHOST would undo that).
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="world4rl-bench-recorder-"))
    out = work / "bags"
    logs = work / "logs"
    record_topics = [topics.CAMERA_IMAGE, topics.CAMERA_INFO, CAMERA2_IMAGE, CAMERA2_INFO,
                     topics.JOINT_STATES, topics.ACTION]  # fmt: skip
    recorder = NodeProcess("world4rl_bringup.episode_recorder_node", "episode_recorder",
                           params={"output_dir": str(out), "topics": record_topics, "min_free_mb": 200.0},
                           log_dir=logs)  # fmt: skip
    cameras = [
        NodeProcess("world4rl_bringup.camera_node", "camera", params={"source": "test_pattern"}, log_dir=logs),
        NodeProcess("world4rl_bringup.camera_node", "camera2", params={"source": "test_pattern"}, log_dir=logs,
                    remappings={topics.CAMERA_IMAGE: CAMERA2_IMAGE, topics.CAMERA_INFO: CAMERA2_INFO}),
    ]  # fmt: skip
    # The publisher role of this very file, as `python -m bench_recorder --role joints`.
    joints = NodeProcess("bench_recorder", "synthetic_joint_states", log_dir=logs,
                         extra_args=["--role", "joints", "--joint-rate", str(args.joint_rate)],
                         env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                                            os.environ.get("PYTHONPATH", "")])})  # fmt: skip
    procs = {"episode_recorder": recorder, "camera": cameras[0], "camera2": cameras[1], "joint_publisher": joints}

    rclpy.init()
    node = rclpy.create_node("bench_recorder_client")
    result: dict = {"duration_s": args.duration, "baseline_s": args.baseline_seconds, "joint_rate_hz": args.joint_rate}
    try:
        for proc in procs.values():
            proc.start()

        def subscribed() -> bool:
            rclpy.spin_once(node, timeout_sec=0.05)
            return all(
                any(i.node_name == "episode_recorder" for i in node.get_subscriptions_info_by_topic(t))
                for t in record_topics
            )

        if not wait_until(subscribed, timeout=60, nodes=list(procs.values())):
            raise RuntimeError(f"recorder did not subscribe to all topics; logs in {logs}")

        def call(srv_type, name, **fields):
            client = node.create_client(srv_type, name)
            assert client.wait_for_service(timeout_sec=10)
            t0 = time.perf_counter()
            future = client.call_async(srv_type.Request(**fields))
            rclpy.spin_until_future_complete(node, future, timeout_sec=60)
            elapsed = time.perf_counter() - t0
            node.destroy_client(client)
            return future.result(), elapsed

        def cpu_snapshot():
            return {name: cpu_seconds(p.process.pid) for name, p in procs.items()}, machine_busy(), time.monotonic()

        # Baseline: everything flows, the recorder receives but writes nothing.
        time.sleep(2.0)  # settle after discovery
        cpu0, busy0, t0 = cpu_snapshot()
        time.sleep(args.baseline_seconds)
        cpu1, busy1, t1 = cpu_snapshot()
        started, _ = call(StartEpisode, topics.RECORDER_START, task="bench", operator_note="bench_recorder")
        if not started.ok:
            raise RuntimeError(started.message)
        cpu2, busy2, t2 = cpu_snapshot()
        time.sleep(args.duration)
        cpu3, busy3, t3 = cpu_snapshot()
        stopped, stop_rtt = call(StopEpisode, topics.RECORDER_STOP, success=True)
        if not stopped.ok:
            raise RuntimeError(stopped.message)

        def pct(a, b, ta, tb):
            return {name: 100.0 * (b[name] - a[name]) / (tb - ta) for name in a}

        base_cpu, rec_cpu = pct(cpu0, cpu1, t0, t1), pct(cpu2, cpu3, t2, t3)
        close_match = re.search(r"in ([0-9.]+) s:", stopped.message)
        queue_match = re.search(r"peak writer queue ([0-9.]+) MB", stopped.message)
        bag = analyse_bag(Path(stopped.bag_path))
        total_dropped = sum(s["dropped"] for s in bag["streams"].values())
        result.update(
            {
                "cpu_percent_baseline": base_cpu,
                "cpu_percent_recording": rec_cpu,
                "recorder_cpu_ratio_vs_baseline": rec_cpu["episode_recorder"] / max(base_cpu["episode_recorder"], 1e-6),
                "machine_busy_percent_baseline": 100.0 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1),
                "machine_busy_percent_recording": 100.0 * (busy3[0] - busy2[0]) / max(busy3[1] - busy2[1], 1),
                "close_seconds_recorder": float(close_match.group(1)) if close_match else None,
                "stop_round_trip_seconds": stop_rtt,
                "peak_writer_queue_mb": float(queue_match.group(1)) if queue_match else None,
                "stop_message": stopped.message,
                "bag": bag,
                "dropped_total": total_dropped,
                "write_rate_mb_s": bag["bytes"] / 1e6 / args.duration,
                "goals": {"dropped": 0, "close_seconds": CLOSE_GOAL_S},
            }
        )
        result["meets_goals"] = total_dropped == 0 and stop_rtt < CLOSE_GOAL_S
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        if not args.output_dir:
            shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recorder.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Episode recorder: 2 x 640x480 rgb8 @ 30 fps + joint states @ {args.joint_rate:g} Hz + actions @ 10 Hz, "
        f"one {args.duration:g} s episode ({result['write_rate_mb_s']:.1f} MB/s into the bag); "
        f"machine busy {result['machine_busy_percent_recording']:.0f} % of {os.cpu_count()} cores while recording.",
        "",
        "| stream | recorded | dropped | rate Hz |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {t} | {s['recorded']} | {s['dropped']} | {s['rate_hz']:.1f} |"
        for t, s in sorted(result["bag"]["streams"].items())
    ]
    lines += [
        "",
        "| process | CPU % baseline (receiving only) | CPU % recording | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in result["cpu_percent_recording"]:
        b, r = result["cpu_percent_baseline"][name], result["cpu_percent_recording"][name]
        lines.append(f"| {name} | {b:.1f} | {r:.1f} | {r / b if b > 0 else float('nan'):.2f} |")
    lines += [
        "",
        f"Close: {result['close_seconds_recorder']:.3f} s in the recorder, StopEpisode round trip "
        f"{result['stop_round_trip_seconds']:.3f} s (goal < {CLOSE_GOAL_S} s); peak writer queue "
        f"{result['peak_writer_queue_mb']:.1f} MB.",
        f"Dropped messages: {result['dropped_total']} (goal 0). Goals met: {result['meets_goals']}.",
    ]
    (RESULTS / "recorder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if result["meets_goals"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

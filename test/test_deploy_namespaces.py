"""Two deploy graphs side by side in one ROS domain, one per namespace (`world4rl deploy
--namespace`): every name the stack uses is relative, so each graph, and each CLI's own node, keeps
to its namespace, each runner drives only its own sim, and both deployments complete."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

NAMESPACES = ("/robot_a", "/robot_b")
# What every node publishes or subscribes whatever its namespace: rcl's log and parameter events.
GLOBAL_ENDPOINTS = {"/rosout", "/parameter_events"}
HORIZON = 30


# ---------------------------------------------------------------------------------- names


def test_every_stack_name_is_relative_but_the_ros_time_source():
    from world4rl_spec import topics

    names = {k: v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str)}
    absolute = {k for k, v in names.items() if v.startswith("/")}
    assert absolute == {"ROS_CLOCK"}, absolute
    assert topics.qualified(topics.JOINT_STATES) == "/joint_states"
    assert topics.qualified(topics.POLICY_ARM, "robot_a") == "/robot_a/policy_runner/arm"
    assert topics.qualified(topics.ROS_CLOCK, "robot_a") == "/clock"
    assert topics.bag_topic(topics.CAMERA_IMAGE) == "/camera/camera/color/image_raw"
    assert topics.bag_topic("/other/image") == "/other/image"
    with pytest.raises(ValueError, match="private"):
        topics.bag_topic("~/status")
    assert [topics.normalize_namespace(n) for n in ("", "/", "robot_a", "/lab/robot_a/")] == [
        "",
        "",
        "/robot_a",
        "/lab/robot_a",
    ]
    for bad in ("1robot", "robot-a", "a//b", "a b"):
        with pytest.raises(ValueError, match="not a valid ROS namespace"):
            topics.normalize_namespace(bad)


def test_the_graphs_take_a_namespace_and_the_runner_moves_every_node_into_it():
    from world4rl_bringup.graph import GraphError, load_graph, resolve
    from world4rl_bringup.graph_runner import namespace_remappings

    for name in ("deploy", "collect"):
        graph = load_graph(name)
        assert graph.arguments["namespace"].default == ""
        assert resolve(graph, {}).namespace == ""
        assert resolve(graph, {"namespace": "robot_a"}).namespace == "/robot_a"
        with pytest.raises(GraphError, match="namespace"):
            resolve(graph, {"namespace": "robot-a"})
    assert namespace_remappings("") == {}
    # The node's namespace, and the ROS time source's /clock on the graph's own sim clock.
    assert namespace_remappings("/robot_a") == {"__ns": "/robot_a", "/clock": "clock"}


# ---------------------------------------------------------------------------------- two graphs


def reach_plan() -> tuple[int, list[float], int]:
    """(seed A, action A, seed B) on reach: A's goal is the farthest from the start, and the constant
    action A passes through it at step ~25 (a long reach: the arm moves for ~2 s); B starts the
    first run of three consecutive seeds whose goals are all > 12 cm away, so an arm that holds
    still there cannot succeed by a few millimetres of drift (success is within 5 cm)."""
    from world4rl_sim.env import FrankaSimEnv
    from world4rl_spec import EE_DELTA_SCALE_M

    env = FrankaSimEnv("reach", image_size=16)
    offsets = {}
    for seed in range(1000, 1040):
        obs, _ = env.reset(seed=seed)
        offsets[seed] = env.sim.task.goal_position(env.sim) - obs["ee_pos"]
    env.close()
    distance = {seed: float(np.linalg.norm(offset)) for seed, offset in offsets.items()}
    seed_a = max(distance, key=distance.get)
    seed_b = next(s for s in range(1000, 1038) if min(distance[s], distance[s + 1], distance[s + 2]) > 0.12)
    return seed_a, [*(offsets[seed_a] / 25 / EE_DELTA_SCALE_M), -1.0], seed_b


def start_tcps(seeds) -> np.ndarray:
    """Where the tool centre point is (FR3 forward kinematics of the arm joints) right after a reset
    of the reach sim to each seed."""
    from world4rl_policy.fr3_kinematics import ee_position
    from world4rl_sim.scene import RenderConfig
    from world4rl_sim.sim import FrankaSim

    sim = FrankaSim("reach", seed=0, render=RenderConfig(low_poly=True))
    poses = []
    for seed in seeds:
        sim.reset(seed=int(seed), task="reach")
        poses.append(ee_position(sim.joint_positions()[:7]))
    sim.close()
    return np.array(poses)


class GraphWatch:
    """From the root namespace: every topic and service endpoint of every node in NAMESPACES, and
    each robot's arm joint positions while its runner is armed, with whether the other robot's
    runner was armed at the time."""

    def __init__(self, node):
        from sensor_msgs.msg import JointState

        from world4rl_msgs.msg import PolicyStatus
        from world4rl_spec import ARM_JOINT_NAMES, topics

        self.node = node
        self.lock = threading.Lock()
        self.endpoints: dict[tuple[str, str], set[str]] = {}  # (namespace, node) -> names seen
        self.armed = dict.fromkeys(NAMESPACES, False)  # as the runner's latest PolicyStatus says
        # namespace -> [(the other robot's runner armed, arm joint positions)] while its runner is armed
        self.samples: dict[str, list[tuple[bool, np.ndarray]]] = {ns: [] for ns in NAMESPACES}

        for ns in NAMESPACES:
            other = next(o for o in NAMESPACES if o != ns)

            def on_joints(msg, ns=ns, other=other) -> None:
                with self.lock:
                    if self.armed[ns] and list(msg.name[:7]) == list(ARM_JOINT_NAMES):
                        self.samples[ns].append((self.armed[other], np.array(msg.position[:7])))

            def on_status(msg, ns=ns) -> None:
                with self.lock:
                    self.armed[ns] = bool(msg.armed)

            node.create_subscription(JointState, topics.qualified(topics.JOINT_STATES, ns), on_joints, 100)
            node.create_subscription(PolicyStatus, topics.qualified(topics.POLICY_STATUS, ns), on_status, 10)

    def sample_graph(self) -> None:
        """Add what the ROS graph shows now (a node may vanish between two queries: skip it)."""
        for name, namespace in self.node.get_node_names_and_namespaces():
            if namespace not in NAMESPACES:
                continue
            seen = self.endpoints.setdefault((namespace, name), set())
            for query in (
                self.node.get_publisher_names_and_types_by_node,
                self.node.get_subscriber_names_and_types_by_node,
                self.node.get_service_names_and_types_by_node,
                self.node.get_client_names_and_types_by_node,
            ):
                try:
                    seen.update(topic for topic, _ in query(name, namespace))
                except Exception:  # the node left the graph (its CLI finished)
                    continue

    def away_from(self, ns: str, tcps: np.ndarray, while_other_armed: bool | None = None) -> tuple[float, int]:
        """(the largest distance [m] of the tool centre point from the nearest of `tcps`, samples
        counted), optionally only over the samples taken while the other runner was (not) armed."""
        from world4rl_policy.fr3_kinematics import ee_position

        with self.lock:
            samples = [q for other_armed, q in self.samples[ns] if while_other_armed in (None, other_armed)]
        if not samples:
            return 0.0, 0
        here = np.array([ee_position(q) for q in samples])
        distances = np.linalg.norm(here[:, None, :] - tcps[None, :, :], axis=2).min(axis=1)
        return float(distances.max()), len(samples)


def _deploy(ns: str, policy: Path, seed: int, episodes: int, out: Path) -> tuple[subprocess.Popen, object]:
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", "deploy", "--namespace", ns.strip("/")]
    cmd += ["--policy", str(policy), "--task", "reach", "--episodes", str(episodes), "--seed", str(seed)]
    cmd += ["--horizon", str(HORIZON), "--out", str(out / "deploy.json"), "--log-dir", str(out / "logs")]
    log = open(out / "cli.log", "w")  # noqa: SIM115 - closed by the caller, after the process
    # In this test's ROS_DOMAIN_ID, which the ros_domain fixture exported: one domain for both.
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log


@pytest.mark.ros
@pytest.mark.slow  # two sims and two runners on the same cores: ~30 s
def test_two_namespaced_deploy_graphs_share_a_domain_without_crosstalk(ros_domain, ros_node, tmp_path, constant_policy):
    from world4rl_bringup.sim_rollouts import direct_api_outcomes
    from world4rl_spec import topics

    seed_a, aimed, seed_b = reach_plan()
    # robot_a's runner steers through its goal (2 episodes); robot_b's holds still (zero motion,
    # gripper open) far from its goals (3 episodes, so it is armed all the while robot_a moves).
    plan = {
        "/robot_a": (constant_policy(tmp_path / "aimed", aimed), seed_a, 2),
        "/robot_b": (constant_policy(tmp_path / "still", [0.0, 0.0, 0.0, -1.0]), seed_b, 3),
    }
    expected = {
        ns: direct_api_outcomes(policy, "reach", range(seed, seed + n), horizon=HORIZON)
        for ns, (policy, seed, n) in plan.items()
    }
    assert expected["/robot_a"][0], expected
    assert not any(expected["/robot_b"]), expected

    watch = GraphWatch(ros_node)
    runs = {}
    for ns, (policy, seed, episodes) in plan.items():
        out = tmp_path / ns.strip("/")
        out.mkdir()
        runs[ns] = (*_deploy(ns, policy, seed, episodes, out), out)
    try:
        deadline = time.monotonic() + 400
        while any(p.poll() is None for p, _, _ in runs.values()) and time.monotonic() < deadline:
            watch.sample_graph()
            time.sleep(0.3)
    finally:
        for process, log, _ in runs.values():
            if process.poll() is None:
                process.terminate()  # SIGTERM: the CLI stops its graph
                process.wait(30)
            log.close()

    # Both deployments completed every episode, each as its own policy does on its own sim.
    for ns, (process, _, out) in runs.items():
        assert process.returncode == 0, f"{ns}: exit code {process.returncode}\n{(out / 'cli.log').read_text()}"
        results = json.loads((out / "deploy.json").read_text())["results"]
        assert [r["success"] for r in results] == expected[ns], (ns, results, expected[ns])
        assert all(r["outcome"] == ("success" if r["success"] else "horizon") for r in results), (ns, results)

    # robot_a's commands reached robot_a only: its tool went far from where its episodes started
    # while robot_b's stayed near where its own started, also for at least half a second of joint
    # states while robot_a's runner was armed and moving. (Under a zero-motion policy the tool
    # settles by up to ~2 cm after arming, measured; robot_a's joint targets would drag robot_b's
    # arm along robot_a's ~25 cm path.)
    tcps = {ns: start_tcps(range(seed, seed + n)) for ns, (_, seed, n) in plan.items()}
    moved, _ = watch.away_from("/robot_a", tcps["/robot_a"])
    assert moved > 0.15, f"robot_a's tool moved only {moved * 100:.1f} cm from its start"
    _, overlap = watch.away_from("/robot_b", tcps["/robot_b"], while_other_armed=True)
    assert overlap >= 50, f"only {overlap} joint states of robot_b while both runners were armed"
    held, _ = watch.away_from("/robot_b", tcps["/robot_b"])
    assert held < 0.05, f"robot_b's tool moved {held * 100:.1f} cm from its start under a zero-motion policy"

    # Every topic and service of every node in a namespace (both graphs' nodes and both CLIs' own
    # nodes) lies inside that namespace: nothing is shared but rcl's log and parameter events.
    for ns in NAMESPACES:
        nodes = {name for (namespace, name) in watch.endpoints if namespace == ns}
        assert {"sim_robot", "policy_runner", "world4rl_deploy"} <= nodes, (ns, sorted(nodes))
        for name in nodes:
            outside = sorted(
                t for t in watch.endpoints[(ns, name)] if not t.startswith(ns + "/") and t not in GLOBAL_ENDPOINTS
            )
            assert not outside, f"node {ns}/{name} uses names outside its namespace: {outside}"
        sim, runner = watch.endpoints[(ns, "sim_robot")], watch.endpoints[(ns, "policy_runner")]
        for wanted in (topics.JOINT_STATES, topics.CAMERA_IMAGE, topics.ARM_TRAJECTORY, topics.SIM_CLOCK):
            assert topics.qualified(wanted, ns) in sim, (ns, wanted, sorted(sim))
        for wanted in (topics.JOINT_STATES, topics.CAMERA_IMAGE, topics.ARM_TRAJECTORY, topics.POLICY_ARM):
            assert topics.qualified(wanted, ns) in runner, (ns, wanted, sorted(runner))

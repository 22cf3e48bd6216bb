"""What the sim drivers (`world4rl collect`, `world4rl deploy`) measure an episode with: the sim's
simulated time and its true success flag, both received over ROS.

Both are subscribed by their relative names (world4rl_spec.topics), so a driver whose node is in
the graph's namespace hears its own sim only.

Simulated time: sim_robot publishes it on clock (/clock in the root namespace). On a loaded
machine the simulation falls behind real time (it re-anchors rather than racing), so an episode
measured on the wall clock would give the robot less simulated time than it is meant to have;
measured on this clock it never does.

Commands: after a disarm the arm-moving node still ramps the arm to rest for a few periods. A reset
in between would carry those commands, aimed near the old episode's pose, over to the freshly reset
arm and drag it from its seeded start (measured before this wait: 4 of 50 pick_place
demonstrations began up to 0.32 rad from it), so the drivers reset only once the sim's trajectory
topic has been quiet for two control periods of simulated time (`ArmCommands.wait_quiet`).

Success: the flag (sim_only/success, latched, 10 Hz) carries no stamp, so a True published just
before a reset can arrive after it. A True counts for the new episode only once a False has
arrived since the reset (every episode starts unsolved), and `succeeding` follows the latest value,
so a success that is lost again is not one. `solved_since_ns` is the DDS source timestamp (the
publisher's write time) of the True that began the current solved streak: messages of other topics
are ordered against it by their own source timestamps, not by the order a busy executor happens to
run the callbacks in.
"""

from __future__ import annotations

import threading
import time

from world4rl_spec import topics


def add_real_time_factor_argument(parser) -> None:
    """The sim drivers' --real-time-factor (the sim_robot parameter of the same name)."""
    parser.add_argument(
        "--real-time-factor",
        type=float,
        default=1.0,
        help="sim: simulated seconds per wall-clock second (default: 1.0; lower it on a slow machine)",
    )


class SimClockError(RuntimeError):
    """No simulated time arrived, or it stopped advancing (the sim is not running or is stuck)."""


class SimClock:
    """Latest simulated time from the sim's clock topic, in seconds."""

    def __init__(self, node, stall_s: float = 30.0):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self.stall_s = float(stall_s)
        self._cond = threading.Condition()
        self._seconds: float | None = None
        self._advanced_at = time.monotonic()  # wall time the clock last moved
        qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1)
        self.topic = node.create_subscription(Clock, topics.SIM_CLOCK, self._on_clock, qos).topic_name

    def _on_clock(self, msg) -> None:
        seconds = msg.clock.sec + msg.clock.nanosec * 1e-9
        with self._cond:
            if self._seconds is None or seconds > self._seconds:
                self._advanced_at = time.monotonic()
            self._seconds = seconds
            self._cond.notify_all()

    def now(self) -> float:
        """The latest simulated time [s]; raises SimClockError if it has not moved for `stall_s`
        seconds of wall time (a stuck or dead sim must not hold a driver forever)."""
        with self._cond:
            seconds, advanced_at = self._seconds, self._advanced_at
        if seconds is None or time.monotonic() - advanced_at > self.stall_s:
            raise SimClockError(
                f"the simulated time on {self.topic} "
                + ("never arrived" if seconds is None else f"stopped at {seconds:.3f} s")
                + f" (nothing new for {self.stall_s:.0f} s of wall time): is the sim robot running?"
            )
        return seconds

    def latest(self) -> float | None:
        """The latest simulated time [s] received (None before the first), never raising."""
        with self._cond:
            return self._seconds

    def wait_beyond(self, seconds: float | None, timeout: float = 10.0) -> float:
        """Block until a simulated time later than `seconds` arrives (any, if None); return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seconds is None or (seconds is not None and self._seconds <= seconds):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimClockError(
                        f"no simulated time on {self.topic} within {timeout:.0f} s"
                        + ("" if seconds is None else f" after {seconds:.3f} s")
                        + ": is the sim robot running?"
                    )
                self._cond.wait(left)
            return self._seconds


class ArmCommands:
    """The simulated time of the last command on the sim's arm trajectory topic (see the module
    docstring: a driver resets the sim once the arm-moving node has stopped sending)."""

    def __init__(self, node, clock: SimClock):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from trajectory_msgs.msg import JointTrajectory

        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # as the commands are sent
        self.topic = node.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_command, qos).topic_name

    def _on_command(self, _msg) -> None:
        with self._lock:
            self._last = self.clock.latest()

    def wait_quiet(self, quiet_s: float, timeout: float = 10.0) -> bool:
        """Block until no command has arrived for `quiet_s` of simulated time; False if commands kept
        coming for `timeout` seconds of wall time."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.clock.now()
            with self._lock:
                last = self._last
            if last is None or now - last >= quiet_s:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


class SimSuccess:
    """The sim's success flag for the current episode (call `new_episode()` right after a reset)."""

    def __init__(self, node):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Bool

        self._lock = threading.Lock()
        self._unsolved_seen = False
        self._succeeding = False
        self._solved_since_ns: int | None = None
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_subscription(Bool, topics.SIM_SUCCESS, self._on_success, latched)

    def _on_success(self, msg, info) -> None:
        with self._lock:
            if not msg.data:
                self._unsolved_seen = True
            succeeding = bool(msg.data) and self._unsolved_seen
            if succeeding and not self._succeeding:
                self._solved_since_ns = source_timestamp_ns(info)
            elif not succeeding:
                self._solved_since_ns = None
            self._succeeding = succeeding

    def new_episode(self) -> None:
        with self._lock:
            self._unsolved_seen = self._succeeding = False
            self._solved_since_ns = None

    @property
    def succeeding(self) -> bool:
        with self._lock:
            return self._succeeding

    @property
    def solved_since_ns(self) -> int | None:
        """Source timestamp of the True that began the current solved streak (None: not solved)."""
        with self._lock:
            return self._solved_since_ns


def reset_sim(ros, commands: ArmCommands, success: SimSuccess, task: str, seed: int) -> None:
    """Reset the sim to `task` with `seed` once the arm is no longer commanded (two quiet control
    periods), and start counting a new episode's success."""
    from world4rl_msgs.srv import ResetSim
    from world4rl_spec import CONTROL_RATE_HZ

    if not commands.wait_quiet(2.0 / CONTROL_RATE_HZ):
        print(f"\nwarning: commands kept coming on {commands.topic} after the disarm; resetting the sim anyway")
    ros.call(ResetSim, topics.SIM_RESET, ResetSim.Request(task=task, seed=seed), timeout=30.0, resend_after=5.0)
    success.new_episode()


def source_timestamp_ns(info) -> int:
    """The publisher's write time of a message (rclpy's MessageInfo), falling back to now."""
    return int(info.get("source_timestamp") or time.time_ns())

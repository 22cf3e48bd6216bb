"""The sim robot's simulation thread, without ROS: FrankaSim advanced in real time.

One thread owns MuJoCo and its OpenGL context. It advances physics to the wall clock (times
`real_time_factor`) in chunks, samples the active joint trajectory and gripper goal every chunk,
and, at each output's rate, hands what is due (joint state, camera image, success flag, scripted
expert action, simulated time) to a `publish` callback, on this thread, outside the lock. Other
threads (ROS callbacks) only hand commands over, under one lock: a trajectory, a reset request,
a gripper goal.

A sim that cannot keep up re-anchors to the wall clock instead of racing, and so does a reset
(data.time restarts at 0); the simulated time it reports (`clock_ns`) counts from the start and
never goes back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from world4rl_sim.scene import RenderConfig, camera_intrinsics
from world4rl_sim.sim import FrankaSim
from world4rl_sim.sim_commands import CommandPlayer, GripperGoal
from world4rl_sim.tasks import TASKS

OUTPUTS = ("joints", "camera", "success", "expert", "clock")
MAX_CHUNKS_PER_PASS = 20  # physics chunks one pass may run to catch up with the wall clock
BEHIND_S = 0.1  # further behind than this: re-anchor to the wall clock


@dataclass(frozen=True)
class StepperConfig:
    task: str
    seed: int | None  # None: a fresh seed
    render: RenderConfig
    real_time_factor: float
    physics_chunk_s: float
    rates_hz: dict[str, float]  # one per OUTPUTS; <= 0 disables that output
    camera_width: int
    camera_height: int
    camera_name: str


@dataclass
class SimOutputs:
    """What one pass of the loop hands to `publish`; None: not due this pass."""

    clock_ns: int | None = None  # simulated time since the start
    joints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # positions, velocities, efforts
    image: np.ndarray | None = None  # RGB (height, width, 3) uint8
    camera_k: np.ndarray | None = None  # the image's 3x3 intrinsics (a new array only after a reset)
    success: bool | None = None
    expert: np.ndarray | None = None  # the scripted expert's action


@dataclass
class ResetResult:
    ok: bool
    message: str
    task: str
    seed: int


class SimStepper:
    """Runs FrankaSim on its own thread; thread-safe command methods for the other threads."""

    def __init__(
        self,
        config: StepperConfig,
        publish: Callable[[SimOutputs], None],
        now_s: Callable[[], float],
        logger,
        trajectory_topic: str = "the trajectory topic",
    ):
        """`now_s`: the clock trajectory header stamps are given in (the node's ROS clock) [s];
        `logger`: warning/error/fatal methods; `trajectory_topic`: named in rejections."""
        self.config = config
        self.publish = publish
        self.now_s = now_s
        self.logger = logger
        self.trajectory_topic = trajectory_topic
        self.lock = threading.Lock()
        self.sim: FrankaSim | None = None  # created on the sim thread (it owns the GL context)
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.commands = CommandPlayer()  # the running trajectory and gripper goal (under the lock)
        self._pending_trajectory = None  # the newest trajectory_msgs/JointTrajectory not yet parsed
        self._reset_requests: list[tuple[str, int, threading.Event, dict]] = []
        self._camera_k: np.ndarray | None = None
        self._clock_ns = 0  # simulated time since start; data.time restarts at every reset
        self._anchor = (0.0, 0.0)  # (wall time, sim time) the real-time pacing counts from
        self._behind_warned = 0.0

    # ----------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60.0) -> FrankaSim:
        """Start the thread; return the sim once it is loaded, or raise RuntimeError."""
        self._thread = threading.Thread(target=self._run, name="sim_robot_physics", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._init_error is not None:
            raise RuntimeError(f"the simulation failed to start: {self._init_error!r}")
        return self.sim

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """End the thread after this pass (callable from the thread itself, e.g. from `publish`)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    # ----------------------------------------------------------------------------- commands (any thread)
    def command_trajectory(self, msg) -> None:
        """A new trajectory replaces the running one at the next pass (empty: hold the command)."""
        with self.lock:
            self._pending_trajectory = msg

    def reset(self, task: str, seed: int, timeout: float = 30.0) -> ResetResult:
        """Reset to `task` ('' keeps the current one) with `seed` (negative: a fresh one)."""
        done, result = threading.Event(), {}
        with self.lock:
            self._reset_requests.append((task, seed, done, result))
        if not done.wait(timeout):
            return ResetResult(False, f"the simulation thread did not answer within {timeout:.0f} s", "", 0)
        return ResetResult(**result)

    def begin_gripper_goal(self, kind: str, target: float, speed: float, low: float, high: float) -> GripperGoal:
        """Start a gripper motion (preempting the running one); the sim thread sets its outcome."""
        with self.lock:
            return self.commands.begin_gripper_goal(self.sim, kind, target, speed, low, high)

    def cancel_gripper_goal(self, goal: GripperGoal) -> None:
        """End `goal` as canceled; the fingers stop where they are."""
        with self.lock:
            goal.error = "canceled"
            goal.done.set()
            self.sim.set_gripper_width(self.sim.gripper_width())

    # ----------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        try:
            cfg = self.config
            self.sim = FrankaSim(cfg.task, seed=cfg.seed, render=cfg.render)
            self._camera_k = self._intrinsics()
        except BaseException as err:
            self._init_error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except Exception as err:
            self.logger.fatal(f"simulation thread died: {err!r}")
            raise
        finally:
            self.sim.close()

    def _loop(self) -> None:
        cfg, sim = self.config, self.sim
        dt = sim.model.opt.timestep
        chunk = max(1, round(float(cfg.physics_chunk_s) / dt))
        periods = {k: 1.0 / float(cfg.rates_hz[k]) if cfg.rates_hz[k] > 0 else math.inf for k in OUTPUTS}
        wall_start = time.monotonic()
        self._anchor = (wall_start, sim.time)
        next_pub = dict.fromkeys(periods, wall_start)
        while not self._stop.is_set():
            now = time.monotonic()
            due = {k for k, t in next_pub.items() if now >= t}
            with self.lock:
                self._advance(now, chunk, dt)
                outputs = self._outputs(due)
            self.publish(outputs)
            for k in due:
                # Keep the phase; skip missed ticks rather than bursting.
                next_pub[k] = max(next_pub[k] + periods[k], now)
            wall0, sim0 = self._anchor
            wake = min(min(next_pub.values()), wall0 + (sim.time + chunk * dt - sim0) / cfg.real_time_factor)
            time.sleep(max(0.0, wake - time.monotonic()))

    def _advance(self, now: float, chunk: int, dt: float) -> None:
        """Carry out commands, then step physics up to the wall clock (lock held)."""
        sim = self.sim
        rtf = float(self.config.real_time_factor)
        wall0, sim0 = self._anchor
        target = sim0 + (now - wall0) * rtf
        if self._handle_commands():
            # A reset restarts data.time at 0: re-anchor, so the new episode starts in real time
            # instead of racing through MAX_CHUNKS_PER_PASS chunks to catch up with the old anchor.
            wall0, sim0 = now, sim.time
            target = sim0
        chunk_ns = round(chunk * dt * 1e9)
        steps = 0
        while sim.time + chunk * dt <= target + 1e-9 and steps < MAX_CHUNKS_PER_PASS:
            self.commands.apply(sim, sim.time + chunk * dt)
            sim.step_physics(chunk)
            self._clock_ns += chunk_ns
            steps += 1
        if sim.time + BEHIND_S < target:
            # Fell behind (an overloaded machine): re-anchor instead of racing.
            wall0, sim0 = now, sim.time
            if now - self._behind_warned > 5.0:
                self.logger.warning("simulation cannot keep up with real time; slowing down")
                self._behind_warned = now
        self._anchor = (wall0, sim0)

    def _outputs(self, due: set[str]) -> SimOutputs:
        """Read (and render) what is due this pass (lock held)."""
        cfg, sim = self.config, self.sim
        out = SimOutputs()
        if "clock" in due:
            out.clock_ns = self._clock_ns
        if "joints" in due:
            out.joints = (sim.joint_positions(), sim.joint_velocities(), sim.joint_efforts())
        if "camera" in due:
            out.image = sim.render(int(cfg.camera_width), int(cfg.camera_height), cfg.camera_name)
            out.camera_k = self._camera_k
        if "success" in due:
            out.success = sim.success()
        if "expert" in due:
            # The arm is driven through joint trajectories here: the expert steers from the
            # end-effector position the last trajectory leaves the arm at.
            sim.aim_ee_target_at(self.commands.commanded_arm_targets(sim))
            out.expert = sim.expert_action()
        return out

    def _handle_commands(self) -> bool:
        """Resets and new trajectories (lock held); True if the sim was reset."""
        was_reset = False
        while self._reset_requests:
            task, seed, done, result = self._reset_requests.pop(0)
            result.update(self._reset(task, seed))
            was_reset = was_reset or result["ok"]
            done.set()
        if self._pending_trajectory is not None:
            msg, self._pending_trajectory = self._pending_trajectory, None
            self._take_trajectory(msg)
        return was_reset

    def _reset(self, task: str, seed: int) -> dict:
        sim = self.sim
        task = task or sim.task_name
        if task not in TASKS:
            message = f"unknown task {task!r}; known: {', '.join(TASKS)}"
            return {"ok": False, "message": message, "task": sim.task_name, "seed": sim.seed}
        used = sim.reset(seed=None if seed < 0 else int(seed), task=task)
        self.commands.abort("aborted by a simulation reset")
        self._camera_k = self._intrinsics()
        return {"ok": True, "message": f"reset to task '{task}' with seed {used}", "task": task, "seed": used}

    def _take_trajectory(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        delay = 0.0
        if stamp > 0.0:
            delay = max(0.0, stamp - self.now_s()) * float(self.config.real_time_factor)
        try:
            self.commands.take_trajectory(self.sim, msg, self.sim.time + delay)
        except ValueError as err:
            self.logger.error(f"rejected trajectory on {self.trajectory_topic}: {err}")

    def _intrinsics(self) -> np.ndarray:
        cfg = self.config
        return camera_intrinsics(self.sim.model, cfg.camera_name, int(cfg.camera_width), int(cfg.camera_height))

"""A deployed arm's timing in the sim's own loop: no ROS, no wall clock, one control period per step.

`FrankaSim.apply_action` moves the joint targets straight to one IK solution per step. A deployed
action takes a longer road: the command path (world4rl_policy.command_path: the integrating TCP
target, FR3 IK, the safety filter, jerk-limited smoothing), a JointTrajectory one period ahead with
its stop (command_messages.trajectory_message), and the sim robot node's trajectory player and gripper
servers (world4rl_sim.sim_commands.CommandPlayer). Through ROS the arm therefore trails its
command by about a period, and the gripper is a goal with its own speed and settling.
`RuntimeTimedControl` runs those same pieces in lockstep with the physics, so an episode in the
sim's gym env moves the arm as a deploy through ROS does (docs/results.md, "The runtime's timing
in the sim's own loop"), deterministically and as fast as the physics and rendering allow.

What it leaves out: transport and inference latency (milliseconds; the command starts at the
step's first physics chunk) and the camera's frame age (the observation is rendered at the step).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import yaml

from world4rl_bringup.dds_network import robot_profile_path
from world4rl_policy.command_messages import trajectory_message
from world4rl_policy.command_path import CommandPath, CommandPathParams, GripperCommand
from world4rl_policy.safety_filter import SafetyParams
from world4rl_sim.sim_commands import GRIPPER_WIDTH_TOLERANCE_M, PHYSICS_CHUNK_S, CommandPlayer
from world4rl_spec import CONTROL_RATE_HZ, GRIPPER_OPEN_WIDTH_M, GRIPPER_SPEED_M_S

# The timings a sim-API episode can be stepped with (`--timing` of coverage, eval policy, dataset rollouts).
TIMINGS = ("direct", "runtime")


def robot_safety_params(robot: str) -> SafetyParams:
    """The safety.* parameters of a robot profile (config/robots/ROBOT.yaml), the filter's defaults
    for the rest: what the action executor and the policy runner get on that robot."""
    path = robot_profile_path(robot)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"no robot profile {robot!r} ({path}); known: {', '.join(known)}")
    section = (yaml.safe_load(path.read_text()) or {}).get("/**", {}).get("ros__parameters", {})
    values = {k.removeprefix("safety."): v for k, v in section.items() if k.startswith("safety.")}
    try:
        return SafetyParams.from_dict(values)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


class RuntimeTimedControl:
    """Steps a FrankaSim one control period per action through the runtime's command path and the
    sim robot node's command player (the module docstring says what that models and what not).

    `reset(sim)` after every sim reset arms a fresh command path; `apply_action(sim, action)` runs
    one period. A safety fault is not raised: the path holds and disarms as on the robot, and
    `fault` keeps the first one's message for the episode's record."""

    def __init__(
        self,
        robot: str = "sim",
        control_rate_hz: float = CONTROL_RATE_HZ,
        physics_chunk_s: float = PHYSICS_CHUNK_S,
        gripper_speed: float = GRIPPER_SPEED_M_S,
        path_params: CommandPathParams | None = None,
    ):
        self.safety = dataclasses.replace(robot_safety_params(robot), control_period_s=1.0 / float(control_rate_hz))
        self.period_s = self.safety.control_period_s
        self.physics_chunk_s = float(physics_chunk_s)
        self.gripper_speed = float(gripper_speed)
        self.path_params = path_params or CommandPathParams()
        self.path: CommandPath | None = None
        self.player = CommandPlayer()
        self.fault: str | None = None

    def reset(self, sim) -> None:
        """A new episode from the sim's current (just reset) state: a fresh, armed command path."""
        self.path = CommandPath(dataclasses.replace(self.safety), params=self.path_params)
        self.path.arm(sim.time, sim.arm_positions())
        self.player = CommandPlayer()
        self.fault = None
        sim.aim_ee_target_at(sim.arm_targets())

    def apply_action(self, sim, action) -> None:
        if self.path is None:
            raise RuntimeError("RuntimeTimedControl.reset(sim) must come before the first apply_action")
        now = sim.time
        cycle = self.path.step(
            joint_positions=sim.arm_positions(), action=action, now=now, input_stamp=now, joint_state_stamp=now
        )
        if cycle.result.fault is not None and self.fault is None:
            refusals = [e for e in cycle.result.events if e.is_fault]
            self.fault = refusals[0].message if refusals else cycle.result.fault.value
        if cycle.send_arm_command:
            self.player.take_trajectory(sim, trajectory_message(cycle.result.command, cycle.motion, self.period_s), now)
        if cycle.gripper is not None:
            self._begin_gripper_goal(sim, cycle.gripper)
        self._run_physics(sim, now + self.period_s)
        # The scripted experts steer from where the arm is commanded to, as through ROS (sim_stepper).
        sim.aim_ee_target_at(self.player.commanded_arm_targets(sim))
        sim.steps += 1

    def _begin_gripper_goal(self, sim, command: GripperCommand) -> None:
        # As the policy runner sends it (ros_adapters.ArmCommandPublisher.send_gripper) and the sim's
        # gripper servers take it (gripper_action_servers): a grasp drives the fingers shut and counts
        # any width within the epsilons; a move goes to its width.
        if command.kind == "grasp":
            low, high = command.width - GRIPPER_OPEN_WIDTH_M, command.width + GRIPPER_OPEN_WIDTH_M
            self.player.begin_gripper_goal(sim, "grasp", 0.0, self.gripper_speed, low, high)
        else:
            low, high = command.width - GRIPPER_WIDTH_TOLERANCE_M, command.width + GRIPPER_WIDTH_TOLERANCE_M
            self.player.begin_gripper_goal(sim, "move", command.width, self.gripper_speed, low, high)

    def _run_physics(self, sim, until: float) -> None:
        """Physics up to sim time `until` in the node's chunks, the commands sampled once per chunk."""
        dt = sim.model.opt.timestep
        chunk = max(1, round(self.physics_chunk_s / dt))
        remaining = max(0, round((until - sim.time) / dt))
        while remaining > 0:
            n = min(chunk, remaining)
            self.player.apply(sim, sim.time + n * dt)
            sim.step_physics(n)
            remaining -= n


def replay_tcp_errors(task: str, seed: int, actions, joint_positions, timing: str) -> tuple[list[float], bool]:
    """Replay an episode recorded through ROS (its actions from its seed) in the sim's gym env with
    `timing`; -> (per frame, the distance [m] between the tool point the replay reaches and the one
    the recorded joint states give, frame 0 being the start), and whether the replay succeeded."""
    from world4rl_policy import fr3_kinematics
    from world4rl_sim.env import FrankaSimEnv

    if timing not in TIMINGS:
        raise ValueError(f"unknown timing {timing!r}; choose from {', '.join(TIMINGS)}")
    tcp_offset = robot_safety_params("sim").tcp_offset_m

    def tool_point(q) -> np.ndarray:
        return fr3_kinematics.forward_kinematics(np.asarray(q[:7], np.float64), tcp_offset)[:3, 3]

    control = RuntimeTimedControl() if timing == "runtime" else None
    env = FrankaSimEnv(task, image_size=16, horizon=len(actions) + 1, control=control)
    try:
        env.reset(seed=int(seed))
        errors = [float(np.linalg.norm(tool_point(env.sim.joint_positions()) - tool_point(joint_positions[0])))]
        success = False
        for k, action in enumerate(actions):
            _, _, _, _, info = env.step(np.asarray(action, np.float64))
            success = success or info["success"]
            if k + 1 < len(joint_positions):
                reached = tool_point(env.sim.joint_positions())
                errors.append(float(np.linalg.norm(reached - tool_point(joint_positions[k + 1]))))
    finally:
        env.close()
    return errors, success

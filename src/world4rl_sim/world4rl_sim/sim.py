"""FrankaSim: the simulated arm, its task, its cameras, and the action -> joint-target controller.

Two levels of control share one MuJoCo state:
- high level (the gymnasium env, scripted experts): `apply_action(action)` takes the normalised
  action (dx, dy, dz, gripper) in [-1, 1], moves an end-effector target by
  action[:3] * EE_DELTA_SCALE_M metres, turns it into joint targets by damped-least-squares IK
  (gripper kept pointing down), opens or closes the gripper as the runtime does on the robot
  (binary, with hysteresis: world4rl_spec.gripper_state_after; the finger target ramps at
  GRIPPER_SPEED_M_S, as the ROS gripper servers' goals do) and runs one control period
  (1 / CONTROL_RATE_HZ) of physics;
- low level (the ROS node, like franka_ros2's controllers): `set_arm_targets(q_fr3)`,
  `set_gripper_width(width)`, `step_physics(n)`, `render(width, height)`.
Joint positions cross this class's boundary in the FR3 convention (world4rl_spec names, joint 6
offset applied); the MuJoCo model's own convention stays inside.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os

import mujoco
import numpy as np

from world4rl_sim.ik import DifferentialIK, IKConfig
from world4rl_sim.robot import (
    FINGER_MAX_M,
    FR3_READY,
    MODEL_ARM_ACTUATORS,
    MODEL_ARM_JOINTS,
    MODEL_FINGER_ACTUATORS,
    MODEL_FINGER_JOINTS,
    fr3_to_model,
    model_q_limits,
    model_to_fr3,
)
from world4rl_sim.scene import FRONT_CAMERA, RenderConfig, SceneAppearance, SceneVariation, build_model
from world4rl_sim.tasks import TASK_REGISTRY, TASKS, Task, TaskState
from world4rl_spec import (
    CONTROL_RATE_HZ,
    EE_DELTA_SCALE_M,
    EE_TARGET_MAX_LEAD_M,
    GRIPPER_CLOSED_WIDTH_M,
    GRIPPER_OPEN_WIDTH_M,
    GRIPPER_SPEED_M_S,
    gripper_state_after,
)


@dataclasses.dataclass
class SimConfig:
    """The controller and reset distribution (positions in the robot base frame, table top at z = 0)."""

    control_rate_hz: float = CONTROL_RATE_HZ
    # The joint targets of one control step are interpolated over this many chunks of physics.
    interpolation_chunks: int = 5
    home_tcp: tuple[float, float, float] = (0.42, 0.0, 0.16)
    home_jitter_m: tuple[float, float, float] = (0.03, 0.03, 0.02)
    # The end-effector target is clipped to this box: the sim robot's workspace. Its profile
    # (config/robots/sim.yaml of the bringup package) gives the safety filter the same box, which
    # test/test_robot_profiles.py checks.
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.005)
    workspace_max: tuple[float, float, float] = (0.75, 0.35, 0.45)
    # The target may lead the measured tcp by at most this much (no wind-up against obstacles).
    max_target_lead_m: float = EE_TARGET_MAX_LEAD_M
    # The fingers' speed under apply_action: the franka_gripper goals' speed, which the ROS sim's
    # gripper servers ramp at too (it was ~4x faster here: pick_place's grasps then took one step,
    # on the robot four; docs/results.md, "The sim's gripper against the robot's").
    gripper_speed_m_s: float = GRIPPER_SPEED_M_S
    ik: IKConfig = dataclasses.field(default_factory=IKConfig)


@functools.lru_cache(maxsize=32)
def _compiled_model(task: str, render: tuple) -> mujoco.MjModel:
    cls = TASK_REGISTRY[task]
    return build_model(cls.xml(), cls.assets_xml(), RenderConfig(*render))


def make_model(task: str, render: RenderConfig | None = None) -> mujoco.MjModel:
    """A fresh MjModel of a task's scene (compiled once per process, then copied: ~0.3 s -> ~1 ms)."""
    if task not in TASK_REGISTRY:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    render = render or RenderConfig()
    return copy.copy(_compiled_model(task, dataclasses.astuple(render)))


class FrankaSim:
    """A seeded, resettable simulation of the arm and one task."""

    def __init__(
        self,
        task: str = TASKS[0],
        seed: int | None = None,
        render: RenderConfig | None = None,
        config: SimConfig | None = None,
        scene: SceneVariation | None = None,
    ):
        """scene: a change of the scene's appearance (moved camera, recoloured object); default none."""
        self.render_config = render or RenderConfig()
        self.config = config or SimConfig()
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.scene = SceneVariation.from_value(scene)
        self._load(task)
        self.reset(seed=seed)

    # ----------------------------------------------------------------------------- set-up
    def _load(self, task: str) -> None:
        self.close()
        self.model = make_model(task, self.render_config)
        self.data = mujoco.MjData(self.model)
        self.task_name = task
        self.task: Task = TASK_REGISTRY[task](self.model)
        self._appearance = SceneAppearance(self.model, self.task.object_appearance)
        if not self.scene.is_default:
            self._appearance.apply(self.scene)
        m = self.model
        self._arm_qadr = np.array([m.joint(j).qposadr[0] for j in MODEL_ARM_JOINTS])
        self._arm_dadr = np.array([m.joint(j).dofadr[0] for j in MODEL_ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(j).qposadr[0] for j in MODEL_FINGER_JOINTS])
        self._finger_dadr = np.array([m.joint(j).dofadr[0] for j in MODEL_FINGER_JOINTS])
        self._arm_act = np.array([m.actuator(a).id for a in MODEL_ARM_ACTUATORS])
        self._finger_act = np.array([m.actuator(a).id for a in MODEL_FINGER_ACTUATORS])
        self._tcp_site = m.site("tcp").id
        self.q_min, self.q_max = model_q_limits()
        q_ready = fr3_to_model(FR3_READY)
        # Franka's ready pose, last joint turned so the fingers open along the base frame's y axis.
        q_ready[6] -= np.pi / 4
        self.ik = DifferentialIK(m, "tcp", MODEL_ARM_JOINTS, self.q_min, self.q_max, q_ready, self.config.ik)
        # The gripper's fixed orientation: pointing down, as in the ready pose.
        _, self.tcp_target_mat = self.ik.forward(q_ready)
        home, _ = self.ik.solve(q_ready, np.array(self.config.home_tcp), self.tcp_target_mat, iterations=50)
        self.ik.q_rest = home
        self._q_home = home
        self.substeps = max(1, round(1.0 / (self.config.control_rate_hz * m.opt.timestep)))

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def set_scene(self, scene: SceneVariation | dict | None) -> None:
        """Change the scene's appearance from now on (None: the default scene); physics is unchanged."""
        self.scene = SceneVariation.from_value(scene)
        self._appearance.apply(self.scene)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def control_dt(self) -> float:
        return self.substeps * self.model.opt.timestep

    # ----------------------------------------------------------------------------- reset
    def reset(self, seed: int | None = None, task: str | None = None) -> int:
        """Arm to a jittered home pose, gripper open, objects and goal re-drawn. Returns the seed used."""
        if task is not None and task != self.task_name:
            self._load(task)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        mujoco.mj_resetData(self.model, self.data)
        jitter = rng.uniform(-1.0, 1.0, 3) * np.array(self.config.home_jitter_m)
        q, _ = self.ik.solve(self._q_home, np.array(self.config.home_tcp) + jitter, self.tcp_target_mat, iterations=30)
        self.data.qpos[self._arm_qadr] = q
        self.data.ctrl[self._arm_act] = q
        self.data.qpos[self._finger_qadr] = FINGER_MAX_M
        self.data.ctrl[self._finger_act] = FINGER_MAX_M
        self._gripper_closed = False
        self.task.reset(self, rng)
        mujoco.mj_forward(self.model, self.data)
        self._ee_target = self.tcp_position()
        self.steps = 0
        return self.seed

    # ----------------------------------------------------------------------------- low level
    def set_arm_targets(self, q_fr3) -> np.ndarray:
        """Joint position targets (FR3 convention, 7 values), clipped to the joint limits; returns them."""
        q = np.clip(fr3_to_model(q_fr3), self.q_min, self.q_max)
        self.data.ctrl[self._arm_act] = q
        return model_to_fr3(q)

    def arm_targets(self) -> np.ndarray:
        return model_to_fr3(self.data.ctrl[self._arm_act])

    def aim_ee_target_at(self, q_fr3) -> None:
        """Set the end-effector target to the tcp at joint target q_fr3 (FR3 convention).

        For an external controller that commands joints (the ROS trajectory interface, whose
        commands come from an end-effector target of their own): the experts steer the target
        the arm is heading for, as they do when apply_action moves it."""
        q = np.clip(fr3_to_model(q_fr3), self.q_min, self.q_max)
        self._ee_target = self.ik.forward(q)[0]

    def set_gripper_width(self, width: float) -> float:
        """Target distance between the fingers [m], clipped to [0, 0.08]; returns it."""
        width = float(np.clip(width, 0.0, 2 * FINGER_MAX_M))
        self.data.ctrl[self._finger_act] = width / 2
        return width

    def gripper_target_width(self) -> float:
        return float(2 * self.data.ctrl[self._finger_act[0]])

    def ramp_gripper_width(self, width: float, travel: float) -> bool:
        """Move the finger target towards `width` by at most `travel` [m] (a gripper goal's speed times
        the physics to come); True once it is there. apply_action and the ROS gripper servers'
        goals (sim_commands.GripperGoal) both ramp with it."""
        current = self.gripper_target_width()
        arrived = abs(width - current) <= travel
        self.set_gripper_width(width if arrived else current + math.copysign(travel, width - current))
        return arrived

    def step_physics(self, n: int = 1) -> None:
        mujoco.mj_step(self.model, self.data, nstep=int(n))

    def arm_positions(self) -> np.ndarray:
        """The 7 arm joint positions, FR3 convention."""
        return model_to_fr3(self.data.qpos[self._arm_qadr])

    def joint_positions(self) -> np.ndarray:
        """9 values in the order ARM_JOINT_NAMES + FINGER_JOINT_NAMES (fingers: each half the width)."""
        return np.concatenate([self.arm_positions(), self.data.qpos[self._finger_qadr]])

    def joint_velocities(self) -> np.ndarray:
        return np.concatenate([self.data.qvel[self._arm_dadr], self.data.qvel[self._finger_dadr]])

    def joint_efforts(self) -> np.ndarray:
        """Actuator torques/forces [Nm, N] in the joint_positions order."""
        return np.concatenate([self.data.actuator_force[self._arm_act], self.data.actuator_force[self._finger_act]])

    def gripper_width(self) -> float:
        return float(self.data.qpos[self._finger_qadr].sum())

    def tcp_position(self) -> np.ndarray:
        """The tool centre point (between the fingertips) in the robot base frame [m]."""
        return self.data.site_xpos[self._tcp_site].copy()

    def tcp_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def renderer(self, width: int, height: int) -> mujoco.Renderer:
        key = (int(width), int(height))
        if key not in self._renderers:
            vis = self.model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, key[0]), max(vis.offheight, key[1])
            try:
                renderer = mujoco.Renderer(self.model, height=key[1], width=key[0])
            except mujoco.FatalError as err:
                raise RuntimeError(
                    "MuJoCo could not create an OpenGL context. For headless rendering set MUJOCO_GL=osmesa "
                    "(or egl) in the environment before anything imports mujoco (importing world4rl_sim first "
                    f"sets osmesa as the default). MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r} now; if that is "
                    f"set, mujoco was imported before it was. ({err})"
                ) from err
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.render_config.shadows)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(self.render_config.reflections)
            self._renderers[key] = renderer
        return self._renderers[key]

    def render(self, width: int, height: int, camera: str = FRONT_CAMERA) -> np.ndarray:
        """An RGB image (height, width, 3) uint8 from a named camera."""
        renderer = self.renderer(width, height)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    # ----------------------------------------------------------------------------- task
    def success(self) -> bool:
        return bool(self.task.success(self))

    def task_state(self) -> TaskState:
        """Everything a scripted expert may look at: tcp, gripper width, object and goal poses."""
        return TaskState(
            tcp=self.tcp_position(),
            ee_target=self.ee_target,
            gripper_width=self.gripper_width(),
            objects=self.task.object_positions(self),
            goal=self.task.goal_position(self),
            extra=self.task.extra_state(self),
        )

    def expert_action(self) -> np.ndarray:
        """The task's scripted expert's noise-free action for the current state."""
        return self.task.expert(self.task_state())

    # ----------------------------------------------------------------------------- high level
    def action_to_joint_targets(self, action) -> np.ndarray:
        """End-effector delta -> model-convention joint targets (moves the internal ee target)."""
        action = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        tcp = self.tcp_position()
        lead = self._ee_target - tcp
        dist = float(np.linalg.norm(lead))
        if dist > self.config.max_target_lead_m:
            self._ee_target = tcp + lead * (self.config.max_target_lead_m / dist)
        self._ee_target = np.clip(
            self._ee_target + action[:3] * EE_DELTA_SCALE_M, self.config.workspace_min, self.config.workspace_max
        )
        q_start = self.data.ctrl[self._arm_act].copy()
        q_goal, _ = self.ik.solve(q_start, self._ee_target, self.tcp_target_mat)
        return q_goal

    def apply_action(self, action) -> None:
        """One control step: IK to joint targets, gripper width target, 1/CONTROL_RATE_HZ of physics."""
        action = np.asarray(action, dtype=float)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 4 finite numbers (dx, dy, dz, gripper), got {action!r}")
        q_start = self.data.ctrl[self._arm_act].copy()
        q_goal = self.action_to_joint_targets(action)
        self._gripper_closed = gripper_state_after(float(action[3]), self._gripper_closed)
        width_goal = GRIPPER_CLOSED_WIDTH_M if self._gripper_closed else GRIPPER_OPEN_WIDTH_M
        chunks = max(1, min(self.config.interpolation_chunks, self.substeps))
        done = 0
        for k in range(1, chunks + 1):
            self.data.ctrl[self._arm_act] = q_start + (q_goal - q_start) * (k / chunks)
            n = round(self.substeps * k / chunks) - done
            self.ramp_gripper_width(width_goal, self.config.gripper_speed_m_s * n * self.model.opt.timestep)
            mujoco.mj_step(self.model, self.data, nstep=n)
            done += n
        self.steps += 1

    @property
    def ee_target(self) -> np.ndarray:
        return self._ee_target.copy()

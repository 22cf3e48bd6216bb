"""FrankaSimEnv: the embedded robot as a ROS-free gymnasium environment.

Observation (a dict):
- "image": (image_size, image_size, 3) uint8 RGB from the fixed front camera. The square image
  has the ROS camera's vertical field of view, so it shows what the centre square crop of the
  640x480 ROS image shows (resize that crop to image_size to get the same view);
- "joint_pos": (9,) float32, FR3 convention, ARM_JOINT_NAMES + FINGER_JOINT_NAMES [rad, m];
- "joint_vel": (9,) float32;
- "ee_pos": (3,) float32, tool centre point in the robot base frame [m];
- "gripper_width": (1,) float32 [m].
Action: (dx, dy, dz, gripper) in [-1, 1]^4 (world4rl_spec): the tcp moves by
action[:3] * EE_DELTA_SCALE_M metres (0.02 m per unit per step) in the robot base frame;
gripper -1 open, +1 closed. One step = 1 / CONTROL_RATE_HZ seconds (0.1 s) of physics.
Reward: 1.0 on steps where the task is solved, else 0.0. Episodes are truncated at the task's
horizon (Task.horizon; e.g. 50 steps, the paper's trajectory length); `terminate_on_success`
ends them at the first success instead.
Scene variations (scene.SceneVariation: a moved camera, a recoloured object), for
out-of-distribution tests: `FrankaSimEnv(task, scene=...)` or `reset(options={"scene": ...})`;
the default scene is untouched.
Control: by default a step is `FrankaSim.apply_action`. `control=` takes another controller (an
object with `reset(sim)`, called after every sim reset, and `apply_action(sim, action)`; e.g.
world4rl_bringup.runtime_timing.RuntimeTimedControl, which moves the arm as a deploy through ROS
does); its `fault` attribute, when set, is reported in `info["safety_fault"]`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gymnasium import spaces

from world4rl_sim.experts import ExpertConfig, ScriptedExpert
from world4rl_sim.robot import FINGER_MAX_M
from world4rl_sim.scene import FRONT_CAMERA, RenderConfig, SceneVariation
from world4rl_sim.seeding import SeededEnv
from world4rl_sim.sim import FrankaSim, SimConfig
from world4rl_sim.tasks import TASK_REGISTRY, TASKS
from world4rl_spec import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    FR3_JOINT_POSITION_MAX,
    FR3_JOINT_POSITION_MIN,
    LEARNING_IMAGE_SIZE,
)


class FrankaSimEnv(SeededEnv):
    """Gymnasium env of one task of the embedded robot (see the module docstring for the spaces)."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = TASKS[0],
        image_size: int = LEARNING_IMAGE_SIZE,
        seed: int | None = None,
        horizon: int | None = None,
        terminate_on_success: bool = False,
        camera: str = FRONT_CAMERA,
        render_config: RenderConfig | None = None,
        sim_config: SimConfig | None = None,
        render_mode: str | None = "rgb_array",
        scene: SceneVariation | dict | None = None,
        control=None,
    ):
        if task not in TASK_REGISTRY:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        self.task = task
        self.image_size = int(image_size)
        self.horizon = int(horizon or TASK_REGISTRY[task].horizon)
        self.terminate_on_success = terminate_on_success
        self.camera = camera
        self.render_mode = render_mode
        self.sim = FrankaSim(task, seed=seed, render=render_config, config=sim_config, scene=scene)
        self.control = control
        if control is not None:
            control.reset(self.sim)
        self._next_seed = seed
        self._expert = ScriptedExpert(task)
        s = self.image_size
        q_low = np.array([*FR3_JOINT_POSITION_MIN, 0.0, 0.0], np.float32)
        q_high = np.array([*FR3_JOINT_POSITION_MAX, FINGER_MAX_M, FINGER_MAX_M], np.float32)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (s, s, 3), np.uint8),
                # Bounds with margin: MuJoCo's joint limits are soft, positions can pass them by a hair.
                "joint_pos": spaces.Box(q_low - 0.1, q_high + 0.1, (9,), np.float32),
                "joint_vel": spaces.Box(-20.0, 20.0, (9,), np.float32),
                "ee_pos": spaces.Box(-2.0, 2.0, (3,), np.float32),
                "gripper_width": spaces.Box(0.0, 0.1, (1,), np.float32),
            }
        )
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), np.float32)
        self._steps = 0

    # ------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options: {"scene": SceneVariation or a dict of its fields}: the scene from this episode on
        (None: the default scene); without the key the scene stays as it was."""
        super().reset(seed=seed)
        if options and "scene" in options:
            self.sim.set_scene(options["scene"])
        self.sim.reset(seed=self._reset_seed(seed))
        if self.control is not None:
            self.control.reset(self.sim)
        self._steps = 0
        return self._observation(), self._info(success=self.sim.success())

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        action = np.clip(action, ACTION_LOW, ACTION_HIGH)
        if self.control is None:
            self.sim.apply_action(action)
        else:
            self.control.apply_action(self.sim, action)
        self._steps += 1
        success = self.sim.success()
        terminated = bool(success and self.terminate_on_success)
        truncated = self._steps >= self.horizon and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def render(self):
        return self.sim.render(self.image_size, self.image_size, self.camera)

    def close(self):
        self.sim.close()

    # ------------------------------------------------------------------------------- extras
    def expert_action(self, noise_std: float = 0.0) -> np.ndarray:
        """The scripted expert's action for the current state (optionally with Gaussian noise)."""
        if noise_std != self._expert.config.noise_std:
            self._expert = ScriptedExpert(self.task, ExpertConfig(noise_std=noise_std, seed=self.sim.seed))
        return self._expert.act(self.sim.task_state())

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "image": self.render(),
            "joint_pos": self.sim.joint_positions().astype(np.float32),
            "joint_vel": self.sim.joint_velocities().astype(np.float32),
            "ee_pos": self.sim.tcp_position().astype(np.float32),
            "gripper_width": np.array([self.sim.gripper_width()], np.float32),
        }

    def _info(self, success: bool) -> dict:
        info = {"success": bool(success), "task": self.task, "seed": self.sim.seed, "step": self._steps}
        fault = getattr(self.control, "fault", None)
        if fault:
            info["safety_fault"] = fault
        return info


def make_env(task: str = TASKS[0], **kwargs) -> FrankaSimEnv:
    """Shorthand for FrankaSimEnv(task, **kwargs)."""
    return FrankaSimEnv(task, **kwargs)

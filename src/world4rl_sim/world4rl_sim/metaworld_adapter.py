"""Meta-World v3 tasks in the embedded robot's conventions (optional: needs metaworld==3.1.1).

`MetaWorldEnv("drawer-open-v3", seed=0)` (image_size: world4rl_spec.LEARNING_IMAGE_SIZE) is a gymnasium env whose
- observation is a dict: "image" (image_size, image_size, 3) uint8 from the `corner` camera,
  turned the right way up (v3's corner cameras render upside down), "ee_pos" (3,) the hand
  position, "state" (39,) Meta-World's own goal-observable state vector;
- action is (dx, dy, dz, gripper) in [-1, 1]^4: Meta-World's own action, which has the same
  meaning as world4rl_spec's (end-effector delta, gripper -1 open / +1 closed). Meta-World moves
  the hand's mocap by action * 0.01 m per step; one step of this env repeats the action for
  METAWORLD_ACTION_REPEAT (2) Meta-World steps, so that 1.0 is world4rl_spec's EE_DELTA_SCALE_M
  (2 cm) per step. Meta-World's scripted experts need 50-95 of its own steps on drawer-open,
  button-press-topdown, plate-slide and window-open, i.e. 24-49 of these (with noise 0.1), so the
  coverage recipe's 60-step episodes leave them room;
- info carries Meta-World's success flag as info["success"] (a bool) and the reward is 1.0 on
  successful steps, like FrankaSimEnv; Meta-World's shaped reward is info["shaped_reward"].
`reset(seed=S)` draws the object and goal positions from a generator seeded with S, so the same
seed gives the same episode (Meta-World itself ignores reset's seed).
`MetaWorldExpert(task)` wraps Meta-World's scripted policy (metaworld.policies) with optional
Gaussian noise; `MetaWorldEnv.expert_action()` is its action for the current state.
Rendering uses the fast CPU settings (no anti-aliasing, shadows or reflections).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from world4rl_sim.seeding import SeededEnv
from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW, EE_DELTA_SCALE_M, LEARNING_IMAGE_SIZE

INSTALL_HINT = (
    "world4rl_sim.metaworld_adapter needs Meta-World: pip install metaworld==3.1.1 "
    "(it pins mujoco==3.3.0, the version world4rl_sim uses)"
)

# Meta-World's episode limit (in its own steps): stepping past it raises ValueError.
METAWORLD_MAX_PATH_LENGTH = 500
# How far Meta-World moves the hand's mocap per unit action and step of its own.
METAWORLD_ACTION_SCALE_M = 0.01
# Meta-World steps per env step: its 1 cm per unit action becomes world4rl_spec's 2 cm.
METAWORLD_ACTION_REPEAT = round(EE_DELTA_SCALE_M / METAWORLD_ACTION_SCALE_M)
# Episode length used by the stack's recipes and evaluations (the env's own default is the longest
# Meta-World allows). The paper's trajectories are 50 steps; ours are 60 (of METAWORLD_ACTION_REPEAT
# Meta-World steps each) because the noisy drawer-open and window-open experts need 40-49.
METAWORLD_DEFAULT_HORIZON = 60


def _metaworld():
    """Import metaworld (and its policies), or fail with the install hint."""
    try:
        metaworld = importlib.import_module("metaworld")
        policies = importlib.import_module("metaworld.policies")
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return metaworld, policies


def metaworld_task_names() -> list[str]:
    """Every Meta-World v3 task name (e.g. 'drawer-open-v3')."""
    metaworld, _ = _metaworld()
    return sorted(metaworld.ALL_V3_ENVIRONMENTS)


class MetaWorldExpert:
    """Meta-World's scripted policy for a task, with optional Gaussian noise on the xyz action."""

    def __init__(self, task: str, noise_std: float = 0.0, seed: int | None = None):
        _, policies = _metaworld()
        if task not in policies.ENV_POLICY_MAP:
            raise ValueError(f"Meta-World has no scripted policy for {task!r}")
        self.task = task
        self.policy = policies.ENV_POLICY_MAP[task]()
        self.noise_std = float(noise_std)
        self.rng = np.random.default_rng(seed)

    def act(self, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # Meta-World's policies warn on every call that their gains saturate the action; they are meant to.
            warnings.filterwarnings("ignore", message="Constant.*may be too high")
            action = np.asarray(self.policy.get_action(np.asarray(state, np.float64)), np.float64).copy()
        if self.noise_std > 0:
            action[:3] += self.rng.normal(0.0, self.noise_std, 3)
        return np.clip(action, ACTION_LOW, ACTION_HIGH).astype(np.float32)


class MetaWorldEnv(SeededEnv):
    """One Meta-World v3 task behind FrankaSimEnv's observation and action conventions."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 16}

    def __init__(
        self,
        task: str = "drawer-open-v3",
        image_size: int = LEARNING_IMAGE_SIZE,
        seed: int | None = None,
        horizon: int = METAWORLD_MAX_PATH_LENGTH // METAWORLD_ACTION_REPEAT,
        terminate_on_success: bool = False,
        camera: str = "corner",
        render_mode: str | None = "rgb_array",
        action_repeat: int = METAWORLD_ACTION_REPEAT,
    ):
        metaworld, _ = _metaworld()
        if task not in metaworld.ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; e.g. drawer-open-v3, button-press-topdown-v3")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        longest = METAWORLD_MAX_PATH_LENGTH // action_repeat
        if not 0 < horizon <= longest:
            raise ValueError(
                f"horizon must be in 1..{longest} (Meta-World's {METAWORLD_MAX_PATH_LENGTH} steps / action_repeat "
                f"{action_repeat}), got {horizon}"
            )
        self.action_repeat = int(action_repeat)
        self.task = task
        self.image_size = int(image_size)
        self.horizon = int(horizon)
        self.terminate_on_success = terminate_on_success
        self.camera = camera
        self.render_mode = render_mode
        env_cls = metaworld.ALL_V3_ENVIRONMENTS[task]
        self._env = env_cls(render_mode="rgb_array", camera_name=camera, width=self.image_size, height=self.image_size)
        # Goal-observable state (the scripted policies read the goal from it), and object/goal
        # positions drawn from the env's own seeded generator at every reset.
        # (the same switches Meta-World's own goal-observable env classes set).
        self._env._partially_observable = False
        self._env.__dict__.pop("sawyer_observation_space", None)  # a cached property of the observability
        self._env._set_task_called = True
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.max_path_length = METAWORLD_MAX_PATH_LENGTH
        model = self._env.model
        # Fast CPU rendering: no anti-aliasing, shadows or reflections.
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0.0
        self._next_seed = seed
        self._state: np.ndarray | None = None
        self._steps = 0
        self.seed_used: int | None = None
        self._expert: MetaWorldExpert | None = None
        s = self.image_size
        state_space = self._env.observation_space
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (s, s, 3), np.uint8),
                "ee_pos": spaces.Box(-2.0, 2.0, (3,), np.float32),
                "state": spaces.Box(
                    state_space.low.astype(np.float32), state_space.high.astype(np.float32), dtype=np.float32
                ),
            }
        )
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.seed_used = int(self._reset_seed(seed))
        self._env.seed(self.seed_used)
        state, _ = self._env.reset()
        self._state = np.asarray(state, np.float64)
        self._steps = 0
        return self._observation(), {"success": False, "task": self.task, "seed": self.seed_used, "step": 0}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(np.asarray(action, np.float64).reshape(-1), ACTION_LOW, ACTION_HIGH)
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {action!r}")
        for _ in range(self.action_repeat):
            state, shaped, _, _, info = self._env.step(action)
        # Success of the last Meta-World step: the state the returned image shows.
        success = bool(info.get("success", 0.0) > 0.5)
        self._state = np.asarray(state, np.float64)
        self._steps += 1
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.horizon and not terminated
        out = {"success": success, "task": self.task, "seed": self.seed_used, "step": self._steps}
        out["shaped_reward"] = float(shaped)
        return self._observation(), float(success), terminated, truncated, out

    def render(self) -> np.ndarray:
        image = self._env.render()
        if self.camera.startswith("corner"):
            image = image[::-1, ::-1]  # v3's corner cameras render upside down
        return np.ascontiguousarray(image)

    def expert_action(self, noise_std: float = 0.0) -> np.ndarray:
        """Meta-World's scripted policy's action for the current state."""
        if self._state is None:
            raise RuntimeError("call reset() before expert_action()")
        if self._expert is None or self._expert.noise_std != noise_std:
            self._expert = MetaWorldExpert(self.task, noise_std=noise_std, seed=self.seed_used)
        return self._expert.act(self._state)

    @property
    def state(self) -> np.ndarray:
        """Meta-World's 39-D state vector (hand, gripper, objects, goal)."""
        return self._state.copy()

    def _observation(self) -> dict[str, Any]:
        return {
            "image": self.render(),
            "ee_pos": self._state[:3].astype(np.float32),
            "state": self._state.astype(np.float32),
        }

    def close(self):
        self._env.close()

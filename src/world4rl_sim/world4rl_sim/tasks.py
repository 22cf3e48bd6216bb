"""The embedded robot's tasks: scene objects, seeded randomisation, success detectors, scripted experts.

A task is one subclass of `Task`; defining the class registers it (TASK_REGISTRY) and `TASKS`
lists the registered names in order of rising difficulty. Positions are in the robot base
frame with the table top at z = 0; the tool centre point (tcp) is between the fingertips,
1.5 cm above their lowest point.

Experts are stateless functions of a `TaskState` (what `FrankaSim.task_state()` returns), so
they recover from perturbations and noise, and a ROS-side expert needs nothing but that state.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import mujoco
import numpy as np

from world4rl_spec import EE_DELTA_SCALE_M

if TYPE_CHECKING:
    from world4rl_sim.sim import FrankaSim

TASK_REGISTRY: dict[str, type[Task]] = {}

OPEN = -1.0
CLOSE = 1.0


@dataclasses.dataclass
class TaskState:
    """The true state a scripted expert acts on."""

    tcp: np.ndarray  # (3,) tool centre point, measured [m]
    ee_target: np.ndarray  # (3,) the tcp target the controller tracks (actions move it) [m]
    gripper_width: float  # distance between the fingers [m]
    objects: dict[str, np.ndarray]  # name -> (3,) position [m]
    goal: np.ndarray  # (3,) the task's goal position [m]
    extra: dict[str, float]  # task-specific scalars (e.g. the drawer's opening)


def move_towards(ref: np.ndarray, target: np.ndarray, gripper: float, gain: float = 1.0) -> np.ndarray:
    """The action that moves the controller's tcp target `ref` towards target, within the action bounds.

    Experts steer the target (TaskState.ee_target), not the measured tcp: the servos lag the
    target by up to a step, and a proportional law on the lagging tcp overshoots and cycles.
    """
    delta = gain * (np.asarray(target, float) - ref) / EE_DELTA_SCALE_M
    return np.concatenate([np.clip(delta, -1.0, 1.0), [gripper]])


class Task:
    """Base class: subclasses define the objects, the reset distribution, success and the expert."""

    name: ClassVar[str] = ""
    horizon: ClassVar[int] = 50  # default episode length in control steps
    description: ClassVar[str] = ""
    # The geoms and materials that draw the object the task is about: what a SceneVariation's
    # object_rgba recolours (scene.SceneAppearance).
    object_appearance: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name:
            raise TypeError(f"task class {cls.__name__} needs a `name`")
        if cls.name in TASK_REGISTRY:
            raise ValueError(f"task name {cls.name!r} registered twice")
        TASK_REGISTRY[cls.name] = cls

    def __init__(self, model: mujoco.MjModel):
        self.model = model

    # --- scene
    @classmethod
    def xml(cls) -> str:
        """MJCF bodies inserted into the worldbody."""
        return ""

    @classmethod
    def assets_xml(cls) -> str:
        """MJCF inserted into <asset> (materials)."""
        return ""

    # --- episode
    def reset(self, sim: FrankaSim, rng: np.random.Generator) -> None:
        """Place objects and goal (sim.data is reset; mj_forward runs afterwards)."""

    def success(self, sim: FrankaSim) -> bool:
        raise NotImplementedError

    def object_positions(self, sim: FrankaSim) -> dict[str, np.ndarray]:
        return {}

    def goal_position(self, sim: FrankaSim) -> np.ndarray:
        raise NotImplementedError

    def extra_state(self, sim: FrankaSim) -> dict[str, float]:
        return {}

    @staticmethod
    def expert(state: TaskState) -> np.ndarray:
        raise NotImplementedError

    # --- helpers
    def _mocap_id(self, body: str) -> int:
        return int(self.model.body_mocapid[self.model.body(body).id])

    def _set_free_body(self, sim: FrankaSim, joint: str, pos, yaw: float = 0.0) -> None:
        adr = self.model.joint(joint).qposadr[0]
        sim.data.qpos[adr : adr + 3] = pos
        sim.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    def _free_body_pos(self, sim: FrankaSim, joint: str) -> np.ndarray:
        adr = self.model.joint(joint).qposadr[0]
        return sim.data.qpos[adr : adr + 3].copy()


def _sample_apart(rng: np.random.Generator, low, high, anchor, min_dist: float, max_dist: float = np.inf) -> np.ndarray:
    """A uniform xy point in [low, high] whose distance to anchor lies in [min_dist, max_dist]."""
    for _ in range(1000):
        p = rng.uniform(low, high)
        d = float(np.linalg.norm(p - anchor))
        if min_dist <= d <= max_dist:
            return p
    raise RuntimeError("could not sample a point with the requested distance")


# ============================================================================== reach
class Reach(Task):
    name = "reach"
    horizon = 30
    description = "Move the fingertips to a red sphere floating above the table on a thin stand."
    object_appearance = ("reach_goal",)

    GOAL_LOW = (0.32, -0.2, 0.04)
    GOAL_HIGH = (0.6, 0.2, 0.25)
    # Meta-World's reach threshold. 3 cm was ~2 px of the 64x64 learning image: below what a policy
    # (or the reward classifier) can tell from one camera.
    SUCCESS_DIST = 0.05

    @classmethod
    def xml(cls) -> str:
        return """
    <body name="reach_goal" mocap="true" pos="0.5 0 0.1">
      <geom name="reach_goal" type="sphere" size="0.025" rgba="0.9 0.15 0.1 1" contype="0" conaffinity="0"/>
      <!-- A stand down into the table: from one fixed camera (no shadows) a floating sphere's depth is
           ambiguous; where the stand meets the table shows its xy, the stand's length its height. -->
      <geom name="reach_goal_stand" type="cylinder" fromto="0 0 0 0 0 -0.3" size="0.007" rgba="0.25 0.25 0.25 1"
            contype="0" conaffinity="0"/>
    </body>"""

    def reset(self, sim, rng):
        sim.data.mocap_pos[self._mocap_id("reach_goal")] = rng.uniform(self.GOAL_LOW, self.GOAL_HIGH)

    def goal_position(self, sim):
        return sim.data.mocap_pos[self._mocap_id("reach_goal")].copy()

    def success(self, sim):
        return float(np.linalg.norm(sim.tcp_position() - self.goal_position(sim))) < self.SUCCESS_DIST

    @staticmethod
    def expert(state):
        return move_towards(state.ee_target, state.goal, OPEN)


# ============================================================================== push
class Push(Task):
    name = "push"
    horizon = 50
    description = "Push the blue block onto the green target pad with the closed gripper."
    object_appearance = ("push_block",)

    HALF = 0.025
    CUBE_LOW = (0.38, -0.12)
    CUBE_HIGH = (0.5, 0.12)
    GOAL_LOW = (0.34, -0.22)
    GOAL_HIGH = (0.62, 0.22)
    SUCCESS_DIST = 0.03

    @classmethod
    def xml(cls) -> str:
        h = cls.HALF
        return f"""
    <body name="push_block" pos="0.45 0 {h}">
      <freejoint name="push_block"/>
      <geom name="push_block" type="box" size="{h} {h} {h}" mass="0.15" rgba="0.15 0.3 0.9 1"
            friction="0.6 0.005 0.0001"/>
    </body>
    <body name="push_goal" mocap="true" pos="0.55 0 0.0005">
      <geom name="push_goal" type="cylinder" size="0.035 0.0005" rgba="0.15 0.75 0.2 1" contype="0" conaffinity="0"/>
    </body>"""

    def reset(self, sim, rng):
        cube = rng.uniform(self.CUBE_LOW, self.CUBE_HIGH)
        goal = _sample_apart(rng, self.GOAL_LOW, self.GOAL_HIGH, cube, 0.1, 0.16)
        self._set_free_body(sim, "push_block", [*cube, self.HALF], yaw=rng.uniform(-0.3, 0.3))
        sim.data.mocap_pos[self._mocap_id("push_goal")] = [*goal, 0.0005]

    def object_positions(self, sim):
        return {"block": self._free_body_pos(sim, "push_block")}

    def goal_position(self, sim):
        return sim.data.mocap_pos[self._mocap_id("push_goal")].copy()

    def success(self, sim):
        block = self._free_body_pos(sim, "push_block")
        return float(np.linalg.norm(block[:2] - self.goal_position(sim)[:2])) < self.SUCCESS_DIST

    # The closed fingers are ~2 cm thick along the push: stand this far behind the block's centre.
    PUSH_OFFSET = HALF + 0.03
    PUSH_Z = 0.03  # the fingertips 1.5 cm above the table
    PUSH_ADVANCE = 0.04
    TRAVEL_Z = 0.08

    @staticmethod
    def expert(state):
        block, goal, tcp = state.objects["block"], state.goal, state.tcp
        to_goal = goal[:2] - block[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.01:
            return move_towards(state.ee_target, [tcp[0], tcp[1], Push.TRAVEL_Z], CLOSE)
        direction = to_goal / dist
        behind = block[:2] - direction * Push.PUSH_OFFSET
        rel = tcp[:2] - block[:2]
        along = float(rel @ direction)
        lateral = float(rel @ np.array([-direction[1], direction[0]]))
        in_line = abs(lateral) < 0.015 and along < -Push.HALF
        if tcp[2] < Push.PUSH_Z + 0.015 and in_line:
            # Pushing: aim into the block along the line through its centre (this also corrects sideways
            # drift), and no further than the goal.
            target_xy = behind + direction * min(Push.PUSH_ADVANCE, dist)
            return move_towards(state.ee_target, [*target_xy, Push.PUSH_Z], CLOSE)
        if np.linalg.norm(tcp[:2] - behind) < 0.012:
            return move_towards(state.ee_target, [*behind, Push.PUSH_Z], CLOSE)
        if tcp[2] < Push.TRAVEL_Z - 0.015 and np.linalg.norm(rel) < 0.1:
            # Low beside the block: straight up first, never sideways into it.
            return move_towards(state.ee_target, [tcp[0], tcp[1], Push.TRAVEL_Z], CLOSE)
        return move_towards(state.ee_target, [*behind, Push.TRAVEL_Z], CLOSE)


# ============================================================================== drawer
class Drawer(Task):
    name = "drawer"
    horizon = 50
    description = "Hook the handle of the drawer and pull it open by at least 10 cm."
    object_appearance = ("cabinet", "drawer")  # materials: the cabinet and the drawer in it

    OPEN_RANGE = 0.16
    SUCCESS_OPENING = 0.10
    BASE_LOW = (0.58, -0.12)
    BASE_HIGH = (0.64, 0.12)
    # Cabinet (outer half-sizes) and the handle's geometry, in the cabinet frame (front face at x = -CAB_HX).
    CAB_HX, CAB_HY, CAB_HZ = 0.1, 0.13, 0.065
    HANDLE_STANDOFF = 0.06  # front face to the bar's axis
    HANDLE_Z = 0.075
    HANDLE_R = 0.008
    HOOK_Z = 0.065  # tcp height while hooked

    @classmethod
    def xml(cls) -> str:
        hx, hy, hz = cls.CAB_HX, cls.CAB_HY, cls.CAB_HZ
        t = 0.008  # wall thickness
        so, r, z = cls.HANDLE_STANDOFF, cls.HANDLE_R, cls.HANDLE_Z
        # contype 2 / conaffinity 1: touches the robot (contype 1) but not the drawer (contype 2 too).
        wall = 'contype="2" conaffinity="1" material="cabinet"'
        part = 'contype="2" conaffinity="1" material="drawer"'
        dh = hz - t  # drawer half height
        return f"""
    <body name="cabinet" mocap="true" pos="0.6 0 0">
      <geom type="box" pos="0 0 {t / 2}" size="{hx} {hy} {t / 2}" {wall}/>
      <geom type="box" pos="0 0 {2 * hz - t / 2}" size="{hx} {hy} {t / 2}" {wall}/>
      <geom type="box" pos="0 {hy - t / 2} {hz}" size="{hx} {t / 2} {hz}" {wall}/>
      <geom type="box" pos="0 {-hy + t / 2} {hz}" size="{hx} {t / 2} {hz}" {wall}/>
      <geom type="box" pos="{hx - t / 2} 0 {hz}" size="{t / 2} {hy} {hz}" {wall}/>
      <body name="drawer" pos="0 0 {hz}">
        <joint name="drawer_slide" type="slide" axis="-1 0 0" range="0 {cls.OPEN_RANGE}" damping="3"
               limited="true" armature="0.05"/>
        <geom name="drawer_front" type="box" pos="{-hx + t / 2} 0 0" size="{t / 2} {hy - t} {dh}" {part}/>
        <geom type="box" pos="0 0 {-dh + t / 2}" size="{hx - t} {hy - 2 * t} {t / 2}" mass="0.2" {part}/>
        <geom type="box" pos="{hx - 1.5 * t} 0 {-t}" size="{t / 2} {hy - 2 * t} {dh - t}" {part}/>
        <geom name="handle_post_l" type="box" pos="{-hx - so / 2} 0.055 {z - hz}" size="{so / 2} 0.006 0.006" {part}/>
        <geom name="handle_post_r" type="box" pos="{-hx - so / 2} -0.055 {z - hz}" size="{so / 2} 0.006 0.006" {part}/>
        <geom name="handle" type="capsule" fromto="{-hx - so} -0.065 {z - hz} {-hx - so} 0.065 {z - hz}" size="{r}"
              rgba="0.2 0.2 0.22 1" contype="2" conaffinity="1"/>
      </body>
    </body>"""

    @classmethod
    def assets_xml(cls) -> str:
        return """
    <material name="cabinet" rgba="0.85 0.82 0.75 1"/>
    <material name="drawer" rgba="0.85 0.55 0.2 1"/>"""

    def reset(self, sim, rng):
        xy = rng.uniform(self.BASE_LOW, self.BASE_HIGH)
        sim.data.mocap_pos[self._mocap_id("cabinet")] = [*xy, 0.0]

    def opening(self, sim) -> float:
        return float(sim.data.qpos[self.model.joint("drawer_slide").qposadr[0]])

    def handle_position(self, sim) -> np.ndarray:
        base = sim.data.mocap_pos[self._mocap_id("cabinet")]
        return np.array([base[0] - self.CAB_HX - self.HANDLE_STANDOFF - self.opening(sim), base[1], self.HANDLE_Z])

    def object_positions(self, sim):
        return {"handle": self.handle_position(sim)}

    def goal_position(self, sim):
        # Where the handle is when the drawer is open just enough to count as a success.
        base = sim.data.mocap_pos[self._mocap_id("cabinet")]
        x = base[0] - self.CAB_HX - self.HANDLE_STANDOFF - self.SUCCESS_OPENING
        return np.array([x, base[1], self.HANDLE_Z])

    def extra_state(self, sim):
        return {"opening": self.opening(sim)}

    def success(self, sim):
        return self.opening(sim) >= self.SUCCESS_OPENING

    @staticmethod
    def expert(state):
        handle, tcp = state.objects["handle"], state.tcp
        # Fingers go into the gap between the bar and the drawer front, then pull towards the robot.
        hook = np.array([handle[0] + Drawer.HANDLE_STANDOFF / 2 + Drawer.HANDLE_R / 2, handle[1], Drawer.HOOK_Z])
        above = hook + np.array([0.0, 0.0, 0.07])
        xy_err = float(np.linalg.norm(tcp[:2] - hook[:2]))
        hooked = tcp[2] < Drawer.HANDLE_Z + 0.01 and abs(tcp[1] - hook[1]) < 0.03 and xy_err < 0.025
        if hooked:
            pull_to = hook - np.array([Drawer.OPEN_RANGE, 0.0, 0.0])
            return move_towards(state.ee_target, [pull_to[0], hook[1], hook[2]], CLOSE)
        if xy_err < 0.01:
            return move_towards(state.ee_target, hook, CLOSE)
        if tcp[2] < above[2] - 0.02 and xy_err > 0.02:
            # Low but not at the gap (e.g. beside the handle): go up first.
            return move_towards(state.ee_target, [tcp[0], tcp[1], above[2]], CLOSE)
        return move_towards(state.ee_target, above, CLOSE)


# ============================================================================== pick and place
class PickPlace(Task):
    name = "pick_place"
    horizon = 50
    description = "Pick up the red cube and put it on the green platform."
    object_appearance = ("pp_cube",)

    HALF = 0.02
    PLATFORM_HALF = (0.06, 0.06, 0.02)
    CUBE_LOW = (0.36, -0.18)
    CUBE_HIGH = (0.52, 0.18)
    PLATFORM_LOW = (0.4, -0.2)
    PLATFORM_HIGH = (0.56, 0.2)
    SUCCESS_XY = 0.045

    @classmethod
    def xml(cls) -> str:
        h = cls.HALF
        px, py, pz = cls.PLATFORM_HALF
        return f"""
    <body name="pp_cube" pos="0.45 0 {h}">
      <freejoint name="pp_cube"/>
      <geom name="pp_cube" type="box" size="{h} {h} {h}" mass="0.05" rgba="0.9 0.15 0.1 1" friction="1.2 0.01 0.0001"
            condim="4"/>
    </body>
    <body name="pp_platform" mocap="true" pos="0.5 0.15 {pz}">
      <geom name="pp_platform" type="box" size="{px} {py} {pz}" rgba="0.15 0.7 0.25 1"/>
    </body>"""

    def platform_top(self, sim) -> np.ndarray:
        p = sim.data.mocap_pos[self._mocap_id("pp_platform")].copy()
        p[2] += self.PLATFORM_HALF[2]
        return p

    def reset(self, sim, rng):
        cube = rng.uniform(self.CUBE_LOW, self.CUBE_HIGH)
        reach = np.hypot(*self.PLATFORM_HALF[:2]) + self.HALF * 1.5 + 0.03
        platform = _sample_apart(rng, self.PLATFORM_LOW, self.PLATFORM_HIGH, cube, reach, reach + 0.12)
        self._set_free_body(sim, "pp_cube", [*cube, self.HALF], yaw=rng.uniform(-0.4, 0.4))
        sim.data.mocap_pos[self._mocap_id("pp_platform")] = [*platform, self.PLATFORM_HALF[2]]

    def object_positions(self, sim):
        return {"cube": self._free_body_pos(sim, "pp_cube")}

    def goal_position(self, sim):
        # The cube's centre when it rests on the middle of the platform.
        return self.platform_top(sim) + np.array([0.0, 0.0, self.HALF])

    def success(self, sim):
        cube = self._free_body_pos(sim, "pp_cube")
        goal = self.goal_position(sim)
        on_top = abs(cube[2] - goal[2]) < 0.012
        return bool(on_top and np.all(np.abs(cube[:2] - goal[:2]) < self.SUCCESS_XY))

    GRASP_WIDTH_MAX = 2 * HALF + 0.006

    @staticmethod
    def expert(state):
        cube, goal, tcp, width = state.objects["cube"], state.goal, state.tcp, state.gripper_width
        h = PickPlace.HALF
        travel_z = goal[2] + 0.035  # the cube's bottom 1.5 cm above the platform
        near_cube = np.linalg.norm(cube[:2] - tcp[:2]) < 0.02 and abs(cube[2] - tcp[2]) < 0.02
        grasped = near_cube and width < PickPlace.GRASP_WIDTH_MAX and cube[2] > h - 0.005
        placed = np.all(np.abs(cube[:2] - goal[:2]) < 0.02) and abs(cube[2] - goal[2]) < 0.01
        if placed:
            # Let go, then lift away once the fingers have opened (they open at the gripper's speed:
            # lifting sooner drags the cube off the platform).
            if width < 2 * h + 0.01:
                return move_towards(state.ee_target, tcp, OPEN)
            return move_towards(state.ee_target, [tcp[0], tcp[1], travel_z + 0.03], OPEN, gain=0.5)
        if grasped:
            xy_err = float(np.linalg.norm(goal[:2] - tcp[:2]))
            if xy_err > 0.01:
                if tcp[2] < travel_z - 0.015:
                    # Lift before moving sideways (and only sideways once high enough).
                    side = goal[:2] if tcp[2] > goal[2] + 0.02 else tcp[:2]
                    return move_towards(state.ee_target, [*side, travel_z], CLOSE)
                return move_towards(state.ee_target, [*goal[:2], travel_z], CLOSE)
            return move_towards(state.ee_target, [*goal[:2], goal[2] + 0.004], CLOSE)
        # Not holding it: open above the cube, descend, close.
        xy_err = float(np.linalg.norm(cube[:2] - tcp[:2]))
        grasp_z = cube[2]
        if xy_err > 0.008:
            if tcp[2] < cube[2] + h + 0.01 and xy_err > 0.03:
                return move_towards(state.ee_target, [tcp[0], tcp[1], cube[2] + 0.06], OPEN)
            # Fingertips stay 1 cm above the cube's top until the gripper is over it.
            return move_towards(state.ee_target, [*cube[:2], grasp_z + 0.045], OPEN)
        if tcp[2] > grasp_z + 0.008:
            return move_towards(state.ee_target, [*cube[:2], grasp_z], OPEN if width > 2 * h + 0.015 else CLOSE)
        return move_towards(state.ee_target, [*cube[:2], grasp_z], CLOSE)


# The task list, in order of rising difficulty: one constant for CLIs, datasets and tests.
TASKS: tuple[str, ...] = tuple(TASK_REGISTRY)

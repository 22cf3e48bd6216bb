"""Build the MuJoCo model: the gymnasium-robotics Panda on a table, a fixed camera, a task's objects.

The robot's XML files are loaded in place from the installed gymnasium-robotics package (found with
importlib.util.find_spec, without importing the package) and edited through mujoco.MjSpec:
- gravity compensation on the arm's bodies (the real Franka compensates gravity internally, so
  a position target is reached without a gravity-induced offset);
- the arm's joint limits set to the FR3's (world4rl_spec), mapped to model coordinates;
- stiffer, less damped joint servos than the kitchen model's, so one 0.1 s control step tracks
  its target to a few millimetres (the kitchen's damping of 100 lagged ~2 cm behind a ramp);
- a `tcp` site between the fingertips (the point the end-effector action moves);
- a wrist camera on the hand.

Rendering is the CPU's bottleneck: `RenderConfig` chooses between the low-poly collision meshes
(default: ~10x faster than the 134k-face visual meshes) and the visual meshes, and turns
anti-aliasing, shadows and reflections off.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import mujoco
import numpy as np

from world4rl_sim.robot import MODEL_ARM_JOINTS, model_q_limits

# The table top is the z = 0 plane of the robot base frame (the arm is mounted on the table), so
# positions in this package are in the base frame the action space is defined in.
TABLE_HALF_SIZE = (0.55, 0.6)
TABLE_CENTER_X = 0.35
TABLE_THICKNESS = 0.04

# The fixed "RealSense" camera: in front of the robot, looking back at the workspace.
FRONT_CAMERA = "front"
WRIST_CAMERA = "wrist"
FRONT_CAMERA_POS = (0.98, 0.55, 0.52)
FRONT_CAMERA_LOOKAT = (0.44, 0.0, 0.08)
# Vertical field of view of a RealSense D435 colour stream at 640x480, roughly.
FRONT_CAMERA_FOVY_DEG = 42.0

# Tool centre point: on the hand's axis, 1.5 cm above the fingertips' lowest point.
TCP_OFFSET_FROM_LINK7 = 0.245

# Servo gains: position gains kp and joint damping per arm joint (kitchen model: kp 870/120, damping 100/10).
ARM_KP = (1500.0, 1500.0, 1200.0, 1000.0, 200.0, 150.0, 100.0)
ARM_DAMPING = (60.0, 60.0, 40.0, 30.0, 6.0, 4.0, 2.0)
FINGER_DAMPING = 40.0
FINGER_ARMATURE = 1.0

ROBOT_BODY_PREFIX = "panda0_"
ARM_COLOR = (0.92, 0.92, 0.90, 1.0)
HAND_COLOR = (0.22, 0.22, 0.24, 1.0)

# 4 ms: 25 substeps per 0.1 s control step. Half the cost of the kitchen model's 2 ms, with the same
# servo tracking and expert success rates (measured on 100 seeds per task).
PHYSICS_TIMESTEP = 0.004


@dataclasses.dataclass
class RenderConfig:
    """How the scene is drawn. The defaults are the fast CPU settings; `baseline()` is MuJoCo's defaults."""

    low_poly: bool = True  # draw the arm's collision meshes instead of its visual meshes
    offsamples: int = 0  # multisample anti-aliasing (MuJoCo's default is 4; costs ~3x on CPU)
    shadows: bool = False
    reflections: bool = False

    @classmethod
    def baseline(cls) -> RenderConfig:
        return cls(low_poly=False, offsamples=4, shadows=True, reflections=True)


@dataclasses.dataclass(frozen=True)
class SceneVariation:
    """A change of the scene's appearance, not of its physics: a moved camera, a recoloured object.

    For out-of-distribution tests (a policy trained on the default scene, run on a changed one).
    The defaults change nothing: a default SceneVariation leaves the model untouched, so every
    episode without one renders byte-identical frames. Applied to a compiled model in place
    (`apply_scene_variation`), so one sim switches between variations without recompiling."""

    # The front camera moved by this much in the robot base frame [m]; it still looks at
    # FRONT_CAMERA_LOOKAT (so the workspace stays in view, seen from elsewhere).
    camera_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # RGBA in [0, 1] of the task's object (Task.object_appearance: the geoms and materials that
    # make the object the task is about); None keeps its colour.
    object_rgba: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        shift = tuple(float(v) for v in self.camera_shift_m)
        if len(shift) != 3 or not all(math.isfinite(v) for v in shift):
            raise ValueError(f"camera_shift_m must be 3 finite numbers [m], got {self.camera_shift_m!r}")
        object.__setattr__(self, "camera_shift_m", shift)
        if self.object_rgba is not None:
            rgba = tuple(float(v) for v in self.object_rgba)
            if len(rgba) != 4 or not all(0.0 <= v <= 1.0 for v in rgba):
                raise ValueError(f"object_rgba must be 4 numbers in [0, 1], got {self.object_rgba!r}")
            object.__setattr__(self, "object_rgba", rgba)

    @property
    def is_default(self) -> bool:
        return self == SceneVariation()

    @classmethod
    def from_value(cls, value: SceneVariation | dict | None) -> SceneVariation:
        """A SceneVariation from itself, a dict of its fields (e.g. gymnasium reset options) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(f"unknown scene variation keys {unknown}; known: camera_shift_m, object_rgba")
            return cls(**value)
        raise TypeError(f"a scene variation is a SceneVariation or a dict, got {type(value).__name__}")


def front_camera_pose(shift_m=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(position, quaternion wxyz) of the front camera moved by shift_m, aimed at FRONT_CAMERA_LOOKAT."""
    pos = np.asarray(FRONT_CAMERA_POS, float) + np.asarray(shift_m, float)
    x_axis, y_axis = np.array(look_at_xyaxes(pos, FRONT_CAMERA_LOOKAT).split(), float).reshape(2, 3)
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)  # columns: the camera's axes
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rotation.reshape(-1))
    return pos, quat


class SceneAppearance:
    """A compiled model's original appearance, and `apply(variation)` to change it in place.

    `object_names`: the geoms and materials whose colour `object_rgba` replaces. Applying the
    default variation restores the original values exactly."""

    def __init__(self, model: mujoco.MjModel, object_names: tuple[str, ...] = ()) -> None:
        self.model = model
        self.camera = model.camera(FRONT_CAMERA).id
        self.camera_pos = model.cam_pos[self.camera].copy()
        self.camera_quat = model.cam_quat[self.camera].copy()
        self.geoms, self.materials = [], []
        for name in object_names:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name) >= 0:
                self.geoms.append(model.geom(name).id)
            elif mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, name) >= 0:
                self.materials.append(model.material(name).id)
            else:
                raise ValueError(f"scene has no geom or material named {name!r}")
        self.geom_rgba = model.geom_rgba[self.geoms].copy()
        self.mat_rgba = model.mat_rgba[self.materials].copy()
        self.current = SceneVariation()

    def apply(self, variation: SceneVariation) -> None:
        m = self.model
        if any(variation.camera_shift_m):
            m.cam_pos[self.camera], m.cam_quat[self.camera] = front_camera_pose(variation.camera_shift_m)
        else:
            m.cam_pos[self.camera], m.cam_quat[self.camera] = self.camera_pos, self.camera_quat
        if variation.object_rgba is None:
            m.geom_rgba[self.geoms], m.mat_rgba[self.materials] = self.geom_rgba, self.mat_rgba
        else:
            m.geom_rgba[self.geoms] = variation.object_rgba
            m.mat_rgba[self.materials] = variation.object_rgba
        self.current = variation


def franka_assets_dir() -> Path:
    """The folder of the Panda model inside the installed gymnasium-robotics package."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "world4rl_sim needs the Franka Panda model shipped in gymnasium-robotics==1.4.2: "
            "pip install gymnasium-robotics==1.4.2"
        )
    folder = Path(spec.origin).parent / "envs" / "assets" / "kitchen_franka" / "franka_assets"
    if not (folder / "chain.xml").is_file():
        raise FileNotFoundError(f"no Panda model at {folder} (is gymnasium-robotics 1.4.2 installed?)")
    return folder


def look_at_xyaxes(pos, target) -> str:
    """MJCF `xyaxes` of a camera at pos looking at target with the world z axis up."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    forward = target - pos
    forward /= np.linalg.norm(forward)
    x_axis = np.cross(forward, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, forward)
    return " ".join(f"{v:.6f}" for v in (*x_axis, *y_axis))


def scene_xml(task_xml: str = "", task_assets_xml: str = "") -> str:
    """The scene's MJCF, with a task's bodies (and assets) inserted."""
    franka = franka_assets_dir()
    tx, ty = TABLE_HALF_SIZE
    return f"""
<mujoco model="world4rl_franka">
  <include file="{franka / "assets.xml"}"/>
  <!-- assets.xml's meshdir is relative to the kitchen folder: re-declare it absolute. -->
  <compiler angle="radian" meshdir="{franka / "meshes"}"/>
  <include file="{franka / "actuator.xml"}"/>
  <option timestep="{PHYSICS_TIMESTEP}" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
    <quality shadowsize="2048"/>
  </visual>
  <asset>
    <material name="table" rgba="0.62 0.50 0.38 1" reflectance="0.15"/>
    <material name="floor" rgba="0.30 0.32 0.35 1"/>
    {task_assets_xml}
  </asset>
  <worldbody>
    <light name="top" pos="0.4 0.3 1.6" dir="0 -0.2 -1" diffuse="0.55 0.55 0.55" castshadow="true"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" material="floor" contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="{TABLE_CENTER_X} 0 {-TABLE_THICKNESS / 2}"
          size="{tx} {ty} {TABLE_THICKNESS / 2}" material="table" friction="0.8 0.005 0.0001"/>
    <camera name="{FRONT_CAMERA}" pos="{" ".join(map(str, FRONT_CAMERA_POS))}"
            xyaxes="{look_at_xyaxes(FRONT_CAMERA_POS, FRONT_CAMERA_LOOKAT)}" fovy="{FRONT_CAMERA_FOVY_DEG}"/>
    <body name="robot_mount" pos="0 0 0">
      <include file="{franka / "chain.xml"}"/>
    </body>
    {task_xml}
  </worldbody>
</mujoco>
"""


def _is_robot_body(body) -> bool:
    return body.name.startswith(ROBOT_BODY_PREFIX)


def build_model(task_xml: str = "", task_assets_xml: str = "", render: RenderConfig | None = None) -> mujoco.MjModel:
    """Compile the scene (with a task's objects) into an MjModel configured for `render`."""
    render = render or RenderConfig()
    spec = mujoco.MjSpec.from_string(scene_xml(task_xml, task_assets_xml))

    q_min, q_max = model_q_limits()
    for i, name in enumerate(MODEL_ARM_JOINTS):
        joint = spec.joint(name)
        joint.range = [q_min[i], q_max[i]]
        joint.damping = ARM_DAMPING[i]
    for name in ("robot:panda0_finger_joint1", "robot:panda0_finger_joint2"):
        spec.joint(name).damping = FINGER_DAMPING
        spec.joint(name).armature = FINGER_ARMATURE

    link7 = spec.body("panda0_link7")
    link7.add_site(name="tcp", pos=[0, 0, TCP_OFFSET_FROM_LINK7], size=[0.005, 0, 0], group=5)
    # Looks along the hand's axis from 9 cm beside it (like a camera clamped to the Franka Hand);
    # euler (pi, 0, 0) turns the camera's viewing direction (-z) onto link7's +z.
    link7.add_camera(name=WRIST_CAMERA, pos=[0.0, 0.09, 0.13], euler=[math.pi, 0, 0], fovy=70.0)

    for body in spec.bodies:
        if _is_robot_body(body):
            body.gravcomp = 1.0
            for geom in body.geoms:
                is_visual = geom.contype == 0 and geom.conaffinity == 0
                is_finger = "finger" in body.name
                is_hand = is_finger or body.name == "panda0_link7"
                # Group 2 is drawn, group 4 is not (MuJoCo draws groups 0-2 by default). Low-poly
                # draws the collision meshes (~200-300 faces a link), except on the fingers: their
                # 13 collision primitives cost more to draw than their 32-face visual mesh.
                drawn = (is_visual if is_finger else not is_visual) if render.low_poly else is_visual
                geom.group = 2 if drawn else 4
                if drawn and render.low_poly:
                    geom.rgba = list(HAND_COLOR if is_hand else ARM_COLOR)

    spec.visual.quality.offsamples = render.offsamples
    if not render.shadows:
        spec.visual.quality.shadowsize = 0
    model = spec.compile()

    for i, name in enumerate(MODEL_ARM_JOINTS):
        actuator = model.actuator(name.removeprefix("robot:"))
        actuator.gainprm[0] = ARM_KP[i]
        actuator.biasprm[1] = -ARM_KP[i]
        # The kitchen model's control ranges are wider than the joints: clip to the joint limits.
        actuator.ctrlrange[:] = (q_min[i], q_max[i])
    if not render.shadows:
        model.light_castshadow[:] = 0
    if not render.reflections:
        model.mat_reflectance[:] = 0.0
    return model


def camera_intrinsics(model: mujoco.MjModel, camera: str, width: int, height: int) -> np.ndarray:
    """3x3 pinhole matrix K of a MuJoCo camera rendered at width x height (OpenCV/ROS pixel centres)."""
    fovy = math.radians(float(model.cam_fovy[model.camera(camera).id]))
    f = 0.5 * height / math.tan(0.5 * fovy)
    # MuJoCo's image spans [0, w] x [0, h] with its optical axis at the centre; ROS puts pixel
    # centres on integers, hence the half-pixel shift.
    return np.array([[f, 0.0, width / 2 - 0.5], [0.0, f, height / 2 - 0.5], [0.0, 0.0, 1.0]])

"""Cross-check of world4rl_policy.fr3_kinematics (Franka's DH table) against the MuJoCo Panda
that the simulator uses (gymnasium-robotics' kitchen_franka/franka_assets).

The MJCF is loaded alone (no gymnasium_robotics import), as ENVIRONMENT.md describes. Its joint 6
is offset by -pi/2 from Franka's convention, and its link frames are built from rounded
quaternions and Euler angles (1.57 for pi/2), so agreement is expected to about a millimetre.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from world4rl_policy import fr3_kinematics as kin

mujoco = pytest.importorskip("mujoco")

# MuJoCo Panda joint = FR3 joint + offset (only joint 6 differs).
MJ_JOINT_OFFSET = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -math.pi / 2, 0.0])


def _franka_assets() -> Path:
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gymnasium_robotics is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "envs/assets/kitchen_franka/franka_assets"
    if not (folder / "chain.xml").exists():
        pytest.skip(f"{folder}/chain.xml not found")
    return folder


@pytest.fixture(scope="module")
def panda():
    folder = _franka_assets()
    xml = f"""
    <mujoco model="panda_chain_only">
      <include file="{folder / "assets.xml"}"/>
      <compiler angle="radian" meshdir="{folder / "meshes"}"/>
      <worldbody>
        <body name="base" pos="0 0 0">
          <include file="{folder / "chain.xml"}"/>
        </body>
      </worldbody>
    </mujoco>
    """
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    return model, data


def _mj_fk(model, data, q_fr3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Link7 origin, link7 orientation and the 'end_effector' site position for an FR3 joint vector."""
    for i in range(7):
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"robot:panda0_joint{i + 1}")
        data.qpos[model.jnt_qposadr[jid]] = q_fr3[i] + MJ_JOINT_OFFSET[i]
    mujoco.mj_kinematics(model, data)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "panda0_link7")
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
    return data.xpos[body].copy(), data.xmat[body].reshape(3, 3).copy(), data.site_xpos[site].copy()


def _random_configs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = kin.joint_limits(0.05)
    return rng.uniform(lo, hi, size=(n, 7))


def test_link7_and_ee_positions_match_mujoco(panda):
    model, data = panda
    worst_link7 = worst_ee = 0.0
    for q in _random_configs(300, seed=1):
        link7_mj, _, site_mj = _mj_fk(model, data, q)
        frames = kin.link_frames(q)
        # DH frame 7 sits at the joint-7 axis at the height of link7's origin in the MJCF.
        worst_link7 = max(worst_link7, float(np.linalg.norm(frames[6, :3, 3] - link7_mj)))
        # The MJCF's end_effector site lies 0.210 m along link7's z; ours is flange + TCP offset.
        ee = kin.forward_kinematics(q, tcp_offset_m=0.210 - kin.DH_D[7])[:3, 3]
        worst_ee = max(worst_ee, float(np.linalg.norm(ee - site_mj)))
    assert worst_link7 < 1e-3, worst_link7
    assert worst_ee < 1e-3, worst_ee


def test_joint7_axis_matches_mujoco(panda):
    model, data = panda
    for q in _random_configs(100, seed=2):
        _, rot_mj, _ = _mj_fk(model, data, q)
        frames = kin.link_frames(q)
        # Both frames put joint 7's axis along z; the x/y axes differ by the MJCF's 45 deg yaw.
        assert np.dot(frames[6, :3, 2], rot_mj[:, 2]) > 1 - 1e-5


def test_jacobian_matches_mujoco_site_jacobian(panda):
    model, data = panda
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
    jacp = np.zeros((3, model.nv))
    jacr = np.zeros((3, model.nv))
    dofs = [
        model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"robot:panda0_joint{i + 1}")]
        for i in range(7)
    ]
    for q in _random_configs(50, seed=3):
        _mj_fk(model, data, q)
        mujoco.mj_comPos(model, data)  # mj_jacSite reads the com-based quantities it computes
        mujoco.mj_jacSite(model, data, jacp, jacr, site)
        jac = kin.jacobian(q, tcp_offset_m=0.210 - kin.DH_D[7])
        np.testing.assert_allclose(jac[:3], jacp[:, dofs], atol=3e-3)
        np.testing.assert_allclose(jac[3:], jacr[:, dofs], atol=3e-3)

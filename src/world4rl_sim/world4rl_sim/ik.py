"""Damped-least-squares differential inverse kinematics against the MuJoCo model.

One `solve` call iterates dq = J^T (J J^T + lambda^2 I)^-1 e on a private MjData (kinematics
only, so the simulation's state is never touched), where e stacks the position error of a site
and a weighted orientation error, adds a null-space pull towards a rest posture (the arm has
7 joints for a 6-D task), and clips every iterate to the joint limits.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np


@dataclasses.dataclass
class IKConfig:
    damping: float = 0.03  # lambda: trades accuracy for robustness near singularities
    orientation_weight: float = 0.3  # metres of position error one radian of orientation error is worth
    iterations: int = 4
    max_step_rad: float = 0.25  # per iteration and joint: keeps the linearisation honest
    nullspace_gain: float = 0.1  # pull towards the rest posture, inside the null space
    tolerance_m: float = 1e-4


def orientation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector (small-angle) that takes `current` (3x3) to `target` (3x3), world frame."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


class DifferentialIK:
    """Position + orientation IK for a site, over a given set of hinge joints."""

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        joints: tuple[str, ...],
        q_min: np.ndarray,
        q_max: np.ndarray,
        q_rest: np.ndarray,
        config: IKConfig | None = None,
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        self.qpos_adr = np.array([model.joint(j).qposadr[0] for j in joints])
        self.dof_adr = np.array([model.joint(j).dofadr[0] for j in joints])
        self.q_min = np.asarray(q_min, float)
        self.q_max = np.asarray(q_max, float)
        self.q_rest = np.asarray(q_rest, float)
        self.config = config or IKConfig()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position (3,) and rotation matrix (3, 3) at arm configuration q."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(
        self, q_init: np.ndarray, target_pos: np.ndarray, target_mat: np.ndarray, iterations: int | None = None
    ) -> tuple[np.ndarray, float]:
        """Joint positions near q_init that put the site at target_pos with orientation target_mat.

        Returns (q, position error in metres after the last iterate).
        """
        cfg = self.config
        q = np.clip(np.asarray(q_init, float).copy(), self.q_min, self.q_max)
        w = cfg.orientation_weight
        eye6 = np.eye(6)
        err_norm = np.inf
        for _ in range(iterations or cfg.iterations):
            pos, mat = self.forward(q)
            e_pos = target_pos - pos
            err_norm = float(np.linalg.norm(e_pos))
            e = np.concatenate([e_pos, w * orientation_error(mat, target_mat)])
            if err_norm < cfg.tolerance_m and np.linalg.norm(e[3:]) < cfg.tolerance_m:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], w * self._jacr[:, self.dof_adr]])
            jjt = jac @ jac.T + (cfg.damping**2) * eye6
            dq = jac.T @ np.linalg.solve(jjt, e)
            # Null-space posture term: the component of the pull that the task does not see.
            pull = cfg.nullspace_gain * (self.q_rest - q)
            # Project with the undamped pseudo-inverse: the damped one leaks ~lambda^2 of the pull into
            # the task and leaves a millimetre-sized bias at the far corners of the workspace.
            dq += pull - np.linalg.pinv(jac, rcond=1e-4) @ (jac @ pull)
            dq = np.clip(dq, -cfg.max_step_rad, cfg.max_step_rad)
            q = np.clip(q + dq, self.q_min, self.q_max)
        else:
            pos, _ = self.forward(q)
            err_norm = float(np.linalg.norm(target_pos - pos))
        return q, err_norm

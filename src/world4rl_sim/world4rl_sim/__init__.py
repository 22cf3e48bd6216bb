"""The embedded default robot: a MuJoCo Franka with a camera, on the real robot's ROS 2 topics.

- `world4rl_sim.env.FrankaSimEnv`: the gymnasium API (RGB observation, EE-delta actions).
- `world4rl_sim.sim.FrankaSim`: the lower-level simulator the ROS node drives.
- `world4rl_sim.tasks.TASKS`: the task names; `world4rl_sim.experts.ScriptedExpert`: their experts.
- `world4rl_sim.sim_robot_node`: the ROS 2 node `sim_robot`.
- `world4rl_sim.metaworld_adapter`: Meta-World v3 tasks in the same conventions (optional).
"""

import os

# MuJoCo picks its OpenGL backend when it is first imported: headless by default (Mesa's
# llvmpipe through OSMesa; MUJOCO_GL=egl works as well). A value the user set wins.
os.environ.setdefault("MUJOCO_GL", "osmesa")

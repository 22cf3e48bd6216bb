"""Robot profiles (config/robots/*.yaml) agree with the robots they describe."""

from pathlib import Path

import pytest
import yaml

from world4rl_policy import fr3_kinematics
from world4rl_policy.safety_filter import SafetyParams
from world4rl_sim.scene import TCP_OFFSET_FROM_LINK7
from world4rl_sim.sim import SimConfig

PROFILES = Path(__file__).resolve().parents[1] / "src" / "world4rl_bringup" / "config" / "robots"


def _params(name: str) -> dict:
    data = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    return {k.removeprefix("safety."): v for k, v in data["/**"]["ros__parameters"].items()}


def test_sim_profile_matches_the_simulator():
    params = _params("sim")
    # The sim's TCP site sits TCP_OFFSET_FROM_LINK7 along link 7; the flange is DH_D[-1] beyond link 7.
    assert params["tcp_offset_m"] == pytest.approx(TCP_OFFSET_FROM_LINK7 - fr3_kinematics.DH_D[-1])
    assert tuple(params["workspace_min"]) == SimConfig().workspace_min
    assert tuple(params["workspace_max"]) == SimConfig().workspace_max


@pytest.mark.parametrize("name", ["sim", "franka"])
def test_profiles_are_valid_safety_parameters(name):
    SafetyParams.from_dict(_params(name))  # raises on unknown keys or bad values


def test_the_node_defaults_file_leaves_the_robot_values_to_the_profiles():
    """policy_runner.yaml is loaded before the profile: a safety box or gripper value there would be a
    second home for what SafetyParams, world4rl_spec and the robot profiles already say."""
    config = PROFILES.parents[2] / "world4rl_policy" / "config" / "policy_runner.yaml"
    params = yaml.safe_load(config.read_text())["/**"]["ros__parameters"]
    assert not {"safety", "gripper_speed", "grasp_force"} & set(params)
    assert not [key for key in params if key.startswith("safety.")]


def test_franka_profile_uses_the_franka_hand_tcp():
    assert _params("franka")["tcp_offset_m"] == pytest.approx(fr3_kinematics.HAND_TCP_OFFSET_M)

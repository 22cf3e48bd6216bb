"""The workspace itself: colcon built all five packages, the venv sees them, setup is idempotent."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["world4rl_msgs", "world4rl_model", "world4rl_policy", "world4rl_sim", "world4rl_bringup"]


def _clean_env() -> dict:
    """An environment as a fresh shell has it: nothing from the venv hook or a sourced workspace."""
    drop = {
        "AMENT_PREFIX_PATH",
        "PYTHONPATH",
        "LD_LIBRARY_PATH",
        "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
        "COLCON_PREFIX_PATH",
    }
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FASTRTPS")}


@pytest.mark.parametrize("package", PACKAGES)
def test_colcon_installed_every_package(package):
    assert (ROOT / "install" / package / "share" / package / "package.xml").is_file()
    assert (ROOT / "install" / package / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "world4rl_msgs"])
def test_setup_cfg_metadata_agrees_with_package_xml(package):
    """setup.cfg restates package.xml's name, version, description, maintainer and licence (setuptools
    cannot read package.xml): they must not drift apart."""
    import configparser
    import xml.etree.ElementTree as ET

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "src" / package / "setup.cfg")
    xml = ET.parse(ROOT / "src" / package / "package.xml").getroot()
    maintainer = xml.find("maintainer")
    assert dict(cfg["metadata"]) == {
        "name": xml.findtext("name"),
        "version": xml.findtext("version"),
        "description": xml.findtext("description"),
        "maintainer": maintainer.text,
        "maintainer_email": maintainer.get("email"),
        "license": xml.findtext("license"),
    }


def test_messages_import_after_sourcing_setup_bash():
    script = f"source {ROOT}/install/setup.bash && {ROOT}/.venv/bin/python -c " + repr(
        "import world4rl_msgs.msg as m, world4rl_msgs.srv as s, world4rl_msgs.action as a; "
        "print(m.EpisodeInfo().__class__.__name__, m.PolicyStatus().__class__.__name__, "
        "s.StartEpisode.__name__, s.StopEpisode.__name__, s.DiscardEpisode.__name__, s.ResetSim.__name__, "
        "a.GripperMove.__name__)"
    )
    out = subprocess.run(["bash", "-c", script], env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "EpisodeInfo",
        "PolicyStatus",
        "StartEpisode",
        "StopEpisode",
        "DiscardEpisode",
        "ResetSim",
        "GripperMove",
    ]


def test_venv_python_sees_the_workspace_without_sourcing():
    code = (
        "import world4rl_msgs.msg, world4rl_spec, world4rl_bringup, world4rl_model, world4rl_policy, world4rl_sim\n"
        "from ament_index_python.packages import get_package_share_directory as share\n"
        f"assert [share(p) for p in {PACKAGES!r}]"
    )
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code], env=_clean_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_world4rl_cli_is_on_the_venv_path_and_lists_only_real_subcommands():
    from world4rl_bringup.cli import SUBCOMMANDS

    out = subprocess.run([str(ROOT / ".venv/bin/world4rl"), "--help"], env=_clean_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in SUBCOMMANDS:
        assert name in out.stdout


def test_doctor_passes():
    out = subprocess.run(
        [str(ROOT / ".venv/bin/world4rl"), "doctor"], env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


def test_second_setup_is_a_fast_no_op():
    start = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    assert "colcon build" not in out.stdout, out.stdout
    assert "pip:" not in out.stdout, out.stdout
    assert elapsed < 10.0, f"a no-op setup took {elapsed:.1f} s"


def test_rerun_python_is_the_venv():
    assert Path(sys.prefix) == ROOT / ".venv"


def test_train_bc_is_joined_to_the_train_subcommand():
    out = subprocess.run(
        [str(ROOT / ".venv/bin/world4rl"), "train", "bc", "--help"], env=_clean_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "usage: world4rl train bc" in out.stdout
    assert "--dataset" in out.stdout


def test_no_function_in_src_is_longer_than_80_lines():
    """A function that does not fit a screen does several jobs: split it (tests included)."""
    import ast

    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long

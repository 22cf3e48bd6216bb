"""`world4rl demo`: stages run in order, are skipped once done, and can be redone."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _demo(out, *extra):
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", "demo", "--out", str(out), "--demos", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_stages_resume_and_redo(ros_domain, tmp_path):
    out = tmp_path / "demo"
    first = _demo(out, "--until", "dataset")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[1/10] collect ..." in first.stdout
    assert "[2/10] dataset ..." in first.stdout
    assert (out / "dataset" / "manifest.json").is_file()
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert len(manifest["episodes"]) == 2
    assert set(json.loads((out / "timings.json").read_text())) == {"collect", "dataset"}

    again = _demo(out, "--until", "dataset", "--redo", "dataset")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[1/10] collect: done earlier, skipped" in again.stdout
    assert "[2/10] dataset ..." in again.stdout


def test_unknown_stage_is_named(tmp_path):
    out = _demo(tmp_path / "demo", "--redo", "colect")
    assert out.returncode == 2
    assert "unknown stage 'colect'" in out.stderr

"""The docker images cannot be built here (no registry access for base images); keep them honest."""

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2).split("+")[0]
    return pins


def test_robot_image_pins_mirror_the_lock_file():
    lock = _pins(ROOT / "requirements.lock")
    robot = _pins(ROOT / "docker" / "requirements-robot.txt")
    assert robot, "no pins in docker/requirements-robot.txt"
    mismatched = {name: (version, lock.get(name)) for name, version in robot.items() if lock.get(name) != version}
    assert not mismatched, f"docker pins differ from requirements.lock (docker, lock): {mismatched}"


def test_trainer_image_installs_through_the_setup_script():
    text = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert "bash scripts/setup.sh" in text
    assert "torch==" + _pins(ROOT / "requirements.lock")["torch"] in text


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    files = sorted(str(p) for p in (ROOT / "docker").glob("*.Dockerfile"))
    assert len(files) == 2
    out = subprocess.run([hadolint, *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

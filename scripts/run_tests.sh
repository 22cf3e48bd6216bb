#!/usr/bin/env bash
# Runs the workspace's tests with the venv's pytest. Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is a failure here, never a silent pass.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
# One ROS_DOMAIN_ID per test is set by the fixtures; keep discovery on this host.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
.venv/bin/python -m pytest "$@"
code=$?
if [[ $code -eq 5 ]]; then
  echo "run_tests: pytest collected no tests: failing" >&2
  exit 1
fi
exit $code

#!/usr/bin/env bash
# Runs the workspace's tests with the venv's pytest. Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is a failure here, never a silent pass.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
# One ROS_DOMAIN_ID per test is set by the fixtures. This host only: the workspace's Fast DDS
# profile, which the venv hook makes the default, binds DDS to the loopback; the discovery range
# leaves that to it (LOCALHOST would add a UDP transport on every interface).
unset FASTRTPS_DEFAULT_PROFILES_FILE
export ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT ROS_LOCALHOST_ONLY=
.venv/bin/python -m pytest "$@"
code=$?
if [[ $code -eq 5 ]]; then
  echo "run_tests: pytest collected no tests: failing" >&2
  exit 1
fi
exit $code

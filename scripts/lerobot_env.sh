#!/usr/bin/env bash
# The separate LeRobot environment that proves the LeRobotDataset export/import against LeRobot
# itself (test/test_lerobot_interop.py builds it on first use; `bash scripts/lerobot_env.sh` builds
# it by hand). Prints the environment's python on the last line of stdout; the log goes to stderr.
#
# Why a separate venv: LeRobot 0.4.4, the newest release PyPI offers for Python 3.11, pins
# torch<2.11 (and av<16, datasets<5, torchcodec<0.11); the workspace's .venv runs torch 2.13.
#
# Where: ${WORLD4RL_LEROBOT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/world4rl/lerobot-0.4.4}, outside
# the clone (it is ~8.3 GB), shared by every clone on the machine. It is built once, then reused
# while its stamp (the sha256 of scripts/lerobot-requirements.txt and RECIPE below) matches; a
# changed pin or a half-built environment (no stamp) is rebuilt from scratch. An exclusive lock
# (flock on VENV.lock) makes concurrent callers wait for one build.
#
# What: exactly the set `pip install lerobot==0.4.4` resolves from PyPI (pinned in
# scripts/lerobot-requirements.txt, a pip freeze of that install), i.e. the CUDA 12.8 build of
# torch 2.10.0 with its nvidia-*-cu12 wheels, torchcodec 0.10.0, av 15.1.0, datasets 4.8.5. This is
# the most faithful install that is practical here, chosen after trying the others:
#   - A CPU-only torch<2.11 cannot be had: PyPI's Linux x86_64 torch wheels are CUDA builds, and
#     the local wheel folders hold only torch 2.13/2.14 (outside LeRobot's pin). Installing LeRobot
#     with --no-deps over torch 2.13 would test a combination LeRobot does not support (torchcodec
#     0.10 is built against torch 2.10).
#   - torch 2.10's CUDA wheel does not import without its nvidia-* wheels, even on a CPU-only
#     machine (torch/__init__.py preloads libcublasLt & co. and raises ValueError), so they stay.
#   - The machine's pip constraints file (global.constraint: torch<=2.14.1) does not conflict with
#     these pins; it is cleared anyway (PIP_CONSTRAINT=) so the result depends on the pins alone.
#     The machine's other pip settings (extra local indexes, find-links) are kept.
# Measured on the project's machine (2 cores, Debian 12, Python 3.11, nothing cached): 3 min 36 s
# on an idle machine, 9 min 49 s with the machine loaded by other jobs (load average ~8-12);
# ~4 GB downloaded, 8.3 GB on disk (nvidia 4.3 GB, torch 1.8 GB, triton 0.6 GB). --no-cache-dir
# keeps pip from storing a second copy of the wheels. A ready environment: 0.05 s.
#
# Needs (Debian): python3-venv, ffmpeg's shared libraries (torchcodec decodes LeRobot's videos with
# them; scripts/setup.sh installs ffmpeg), a C compiler and Python headers (evdev, a pynput
# dependency, is an sdist). Missing apt packages are installed, as in scripts/setup.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/scripts/lerobot-requirements.txt"
VENV="${WORLD4RL_LEROBOT_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/world4rl/lerobot-0.4.4}"
PYTHON_BIN="${PYTHON:-python3.11}"
STAMP="$VENV/.world4rl-lerobot-stamp"

log() { printf '[lerobot-env] %s\n' "$*" >&2; }

# Bump RECIPE when the way the environment is built changes (comments need no rebuild).
RECIPE=1
want="$( (cat "$REQUIREMENTS" && echo "recipe $RECIPE") | sha256sum | cut -d' ' -f1)"
ready() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; }

if ready; then
  echo "$VENV/bin/python"
  exit 0
fi

apt_missing() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "apt: installing ${missing[*]}"
  local sudo=""
  [[ $EUID -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v "$PYTHON_BIN" >/dev/null || {
  log "no $PYTHON_BIN on PATH (set PYTHON to a Python 3.11)"
  exit 1
}
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if ready; then # another caller built it while this one waited for the lock
  echo "$VENV/bin/python"
  exit 0
fi

if command -v dpkg-query >/dev/null; then
  apt_missing python3-venv ffmpeg gcc
  "$PYTHON_BIN" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
    apt_missing python3-dev
fi

if [[ -d "$VENV" && ! -f "$VENV/pyvenv.cfg" && -n "$(ls -A "$VENV")" ]]; then
  log "$VENV exists and is not a venv: not deleting it (set WORLD4RL_LEROBOT_VENV elsewhere)"
  exit 1
fi
start=$SECONDS
log "building $VENV (first time: 4-10 min, ~4 GB download, 8.3 GB on disk) from $REQUIREMENTS"
rm -rf "$VENV"
"$PYTHON_BIN" -m venv "$VENV"
PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install --no-cache-dir --progress-bar off \
  --disable-pip-version-check -r "$REQUIREMENTS" >"$VENV.build.log" 2>&1 || {
  tail -n 40 "$VENV.build.log" >&2
  log "FAILED after $((SECONDS - start)) s; full log: $VENV.build.log"
  exit 1
}
"$VENV/bin/python" -m pip check >&2
"$VENV/bin/python" -c 'import lerobot, torch, torchcodec; from lerobot.datasets.lerobot_dataset import LeRobotDataset
print("lerobot", lerobot.__version__, "torch", torch.__version__, "torchcodec", torchcodec.__version__)' >&2
printf '%s' "$want" >"$STAMP"
log "ready in $((SECONDS - start)) s, $(du -sh "$VENV" | cut -f1) on disk"
echo "$VENV/bin/python"

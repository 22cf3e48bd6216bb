#!/usr/bin/env bash
# One idempotent set-up of the workspace on Debian 12 + Python 3.11:
#   apt packages -> .venv with pinned wheels -> rosidl cmake path fix -> colcon build -> venv hook.
# Each stage records a stamp holding the hash of its inputs and is skipped when they did not
# change, so a second run takes seconds. `make setup` calls this; every other target calls setup.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$VENV/.world4rl-stamps"
PYTHON_BIN="${PYTHON:-python3.11}"

APT_PACKAGES=(
  python3-venv            # the venv module, on a bare Debian python3.11
  cmake g++ make          # world4rl_msgs is an ament_cmake/rosidl package
  libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri   # headless MuJoCo rendering (Mesa llvmpipe)
  libtcmalloc-minimal4    # ~2x faster torch training on CPU (LD_PRELOAD)
  ffmpeg                  # mp4 export of episodes and dreams
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS" && printf '%s' "$2" >"$STAMPS/$1"; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# 1. apt packages: install only what is missing.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  SUDO=""
  [[ $EUID -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The venv and its pinned wheels.
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV"
fi
lock_hash="$(hash_of requirements.lock)"
if ! stamp_ok pip "$lock_hash"; then
  log "pip: installing requirements.lock (first time: ~1 min)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
  # 3. The wheels' rosidl cmake exports hard-code the wheel builder's Python and numpy paths.
  "$VENV/bin/python" "$ROOT/scripts/fix_rosidl_cmake_paths.py" "$VENV"
  rm -f "$STAMPS/colcon"
  stamp_set pip "$lock_hash"
fi

# 4. colcon build, when a package's build inputs or its list of files changed (--symlink-install
#    makes edits to existing Python files live without a rebuild).
src_hash="$( (find src -type f -not -path '*/__pycache__/*' -printf '%p\n' | sort
  find src \( -name package.xml -o -name setup.py -o -name setup.cfg -o -name CMakeLists.txt \
    -o -name '*.msg' -o -name '*.srv' -o -name '*.action' \) -print0 | sort -z | xargs -0 cat
  cat colcon.meta) | sha256sum | cut -d' ' -f1)"
if ! stamp_ok colcon "$src_hash" || [[ ! -d install ]]; then
  log "colcon build (first time: ~30 s)"
  (
    export AMENT_PREFIX_PATH="$VENV" VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
    unset PYTHONPATH
    "$VENV/bin/colcon" --log-base log build --symlink-install --metas colcon.meta --event-handlers console_cohesion- summary+ \
      >"$STAMPS.colcon.log" 2>&1 || { cat "$STAMPS.colcon.log"; exit 1; }
  )
  stamp_set colcon "$src_hash"
fi

# 5. The venv knows the workspace: a .pth hook makes install/ importable (and the typesupport
#    libraries loadable) from .venv/bin/python without sourcing install/setup.bash, and
#    `world4rl` lands on the venv's PATH.
site_packages="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
install -m 644 scripts/world4rl_workspace_hook.py "$site_packages/_world4rl_workspace.py"
echo "import _world4rl_workspace" >"$site_packages/a2_world4rl_workspace.pth"
ln -sf "$ROOT/install/world4rl_bringup/lib/world4rl_bringup/world4rl" "$VENV/bin/world4rl"

log "ready: $("$VENV/bin/world4rl" --version)"

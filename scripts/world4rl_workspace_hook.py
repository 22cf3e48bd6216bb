"""Imported by a .pth file in the workspace venv, before the ROS wheels' bootstrapper re-execs Python.

It does for .venv/bin/python what `source install/setup.bash` does for a shell, by reading the
same colcon/ament environment hooks (package.dsv): install/ packages on sys.path and
PYTHONPATH, their libraries on LD_LIBRARY_PATH (the bootstrapper then re-execs with it), and
AMENT_PREFIX_PATH. It also makes the workspace's shared-memory Fast DDS profile the default.
Variables already set by the user are kept.
"""

import os
import sys

_workspace = os.path.dirname(sys.prefix)
_install = os.path.join(_workspace, "install")


def _prepend(var: str, value: str) -> None:
    parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p]
    if value not in parts:
        os.environ[var] = os.pathsep.join([value, *parts])
    if var == "PYTHONPATH" and value not in sys.path:
        sys.path.insert(1, value)


_applied: set[str] = set()


def _apply_dsv(prefix: str, dsv_path: str) -> None:
    """Apply one colcon .dsv environment hook (the format install/setup.bash applies)."""
    with open(dsv_path) as dsv:
        for line in dsv:
            kind, _, rest = line.strip().partition(";")
            if kind == "source":
                # As colcon does: a shell script stands for the .dsv file beside it, if there is one.
                stem, ext = os.path.splitext(rest)
                if ext in (".dsv", ".sh"):
                    path = os.path.normpath(os.path.join(prefix, stem + ".dsv"))
                    if os.path.isfile(path) and path not in _applied:
                        _applied.add(path)
                        _apply_dsv(prefix, path)
            elif kind.startswith("prepend-non-duplicate"):
                var, _, values = rest.partition(";")
                for value in values.split(";") if values else [""]:
                    path = os.path.normpath(os.path.join(prefix, value)) if value else prefix
                    if kind.endswith("-if-exists") and not os.path.exists(path):
                        continue
                    _prepend(var, path)


if os.path.isdir(_install):
    _prepend("AMENT_PREFIX_PATH", sys.prefix)
    for _pkg in sorted(os.listdir(_install)):
        _prefix = os.path.join(_install, _pkg)
        _dsv = os.path.join(_prefix, "share", _pkg, "package.dsv")
        if os.path.isfile(_dsv):
            _apply_dsv(_prefix, _dsv)
            if os.path.isdir(os.path.join(_prefix, "lib")):
                _prepend("LD_LIBRARY_PATH", os.path.join(_prefix, "lib"))
    _profile = os.path.join(_install, "world4rl_bringup", "share", "world4rl_bringup", "config", "fastdds_shm.xml")
    if os.path.isfile(_profile):
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", _profile)
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

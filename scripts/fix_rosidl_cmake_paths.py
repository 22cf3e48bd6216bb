"""Rewrite the wheel builder's Python/numpy include paths in the Jazzy wheels' cmake exports.

The ros-jazzy-* wheels ship export_<pkg>__rosidl_generator_pyExport.cmake files whose
INTERFACE_INCLUDE_DIRECTORIES name /opt/python/cp311-cp311/..., which does not exist here;
without this, building any message package (world4rl_msgs) fails in cmake.
Usage: python fix_rosidl_cmake_paths.py VENV
"""

import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def main() -> int:
    venv = Path(sys.argv[1])
    replacements = {
        BUILDER_NUMPY_INCLUDE: numpy.get_include(),
        BUILDER_PYTHON_INCLUDE: sysconfig.get_paths()["include"],
    }
    fixed = 0
    for path in (venv / "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/cp311-cp311" not in text:
            continue
        for old, new in replacements.items():
            text = text.replace(old, new)
        path.write_text(text)
        fixed += 1
    print(f"[setup] rosidl cmake exports fixed: {fixed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Names that become parts of file paths (task names: bag folders, dataset entries, run folders).

A task name is recorded in every bag and dataset and joins paths such as RUN/bc/TASK, so it must
not be able to leave the folder it is joined to: letters, digits, '_', '-' and '.', starting with
a letter or digit (so never '.', '..' or a hidden name), at most 64 characters. Every sim and
Meta-World task name fits ("pick_place", "drawer-open-v3").
"""

import re

TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_task_name(name: str, where: str = "task") -> str:
    """Return `name` if it is a valid task name, else raise ValueError naming `where` and the rule."""
    if not isinstance(name, str) or not TASK_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{where}: {name!r} is not a valid task name (letters, digits, '_', '-', '.'; starting with a "
            "letter or digit; no '..'; at most 64 characters): task names become folder names"
        )
    return name

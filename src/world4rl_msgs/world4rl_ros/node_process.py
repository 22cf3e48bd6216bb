"""Start ROS 2 nodes as child processes of the venv's interpreter, and stop them cleanly.

Used by the `world4rl` command line to run a node graph without `ros2 launch`, and by the test
harness (world4rl_testing's `launch_node` fixture). A node is a Python module with a `main()`; it runs as
`python -m MODULE --ros-args -r __node:=NAME --params-file FILE -p k:=v`, so it sees exactly the
arguments `ros2 run` would give it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


class NodeDiedError(RuntimeError):
    """A node process exited while it was expected to run; carries the tail of its stderr."""


def ros_param_value(value) -> str:
    """Format a Python value as a `-p name:=value` literal (YAML flow style, as rcl parses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(ros_param_value(v) for v in value) + "]"
    return repr(value)


class NodeProcess:
    """One node in a child process, with its stdout/stderr captured to files."""

    def __init__(
        self,
        module: str,
        name: str,
        *,
        params: Mapping[str, object] | None = None,
        params_file: str | os.PathLike | None = None,
        params_files: Sequence[str | os.PathLike] = (),
        remappings: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        ros_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike | None = None,
    ):
        self.module = module
        self.name = name
        # extra_args: the node's own command line; ros_args: more ROS arguments (e.g. --enclave PATH).
        argv = [sys.executable, "-m", module, *extra_args, "--ros-args", *ros_args, "-r", f"__node:={name}"]
        for path in ([params_file] if params_file is not None else []) + list(params_files):
            argv += ["--params-file", str(path)]
        for key, value in (params or {}).items():
            argv += ["-p", f"{key}:={ros_param_value(value)}"]
        for src, dst in (remappings or {}).items():
            argv += ["-r", f"{src}:={dst}"]
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"world4rl-{name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Own process group: a Ctrl-C at the terminal reaches the CLI, which stops nodes in order.
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=err, env=self.env, start_new_session=True)
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, max_chars: int = 4000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-max_chars:]

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        """Raise NodeDiedError, with the node's stderr, if the process has exited."""
        code = self.returncode
        if self.process is not None and code is not None:
            raise NodeDiedError(
                f"node '{self.name}' ({self.module}) exited with code {code}; stderr:\n{self.stderr_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (rclpy's clean shutdown), then SIGTERM, then SIGKILL. Returns the exit code."""
        if self.process is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.process.poll()

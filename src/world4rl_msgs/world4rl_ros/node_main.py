"""The one `main()` of every node: init rclpy, build the node, spin it, shut down cleanly.

    def main(args=None) -> None:
        run_node(MyNode, args=args)

Ctrl-C (SIGINT, how `ros2 launch` and the `world4rl` CLI stop a node) and an external shutdown end
the spin quietly, also when a callback was still publishing as the context went down. A node that
has a `shutdown()` method gets it called before `destroy_node()` (to close files, devices,
renderers). rclpy is imported here, inside the call, so importing this module costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_node(
    make_node: Callable[[], object],
    *,
    args: list[str] | None = None,
    spin: Callable[[object], int | None] | None = None,
    threads: int = 1,
    setup_errors: tuple[type[BaseException], ...] = (),
    setup_exit_code: int = 1,
    logger_name: str = "node",
) -> None:
    """Run one node in this process until it is stopped; exit with a non-zero code on failure.

    make_node: builds the node (after rclpy.init).
    spin(node): how to spin it (default: rclpy.spin, or a MultiThreadedExecutor of `threads`
        threads when threads > 1); a non-zero int it returns is the exit code.
    setup_errors: exceptions make_node raises for something the operator can fix (a missing
        parameter, no camera): logged as one FATAL line under `logger_name`, no traceback, and the
        process exits with `setup_exit_code`. Other exceptions propagate with their traceback.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    def spin_threads(node) -> None:
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()

    if spin is None:
        spin = rclpy.spin if threads <= 1 else spin_threads

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = make_node()
        except setup_errors as exc:
            rclpy.logging.get_logger(logger_name).fatal(str(exc))
            code = setup_exit_code
        if node is not None:
            code = spin(node) or 0
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C shuts the context down from the signal handler while a callback may still be
        # running: its publish (or the executor's next wait) then fails on the dead context. That
        # is the stop racing the work, not a failure; any error while the context is valid is.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            shutdown = getattr(node, "shutdown", None)
            if callable(shutdown):
                shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)

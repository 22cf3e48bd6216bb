"""CPU affinity and real-time scheduling of the runtime node's process (policy_runner's
`cpu_affinity` and `realtime_priority` parameters). Linux only; no rclpy.

- CPU affinity pins every thread of the process (the control thread, the middleware's receive
  threads, ONNX Runtime's and torch's) to the CPUs given; threads started later inherit it.
- Real-time priority puts the process's threads under SCHED_FIFO at the priority given, so
  ordinary processes (SCHED_OTHER, at any nice level) never preempt a control cycle. The node's
  own Python helper threads (the live view's sender) are left as they are, and the policy is set
  with SCHED_RESET_ON_FORK: threads and processes started later (the live view's server) do not
  inherit it. The kernel's RT throttling (/proc/sys/kernel/sched_rt_runtime_us, 95 % by default)
  still leaves the rest of the machine some time should a cycle ever spin.

Where the OS refuses (EPERM: neither CAP_SYS_NICE nor an rtprio limit; a CPU outside the process's
cpuset), the functions return one warning saying what to change, and the node runs on without it.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from collections.abc import Iterable, Sequence

RT_HOWTO = (
    "to allow it, give the user an rtprio limit (a line '@realtime - rtprio 98' in /etc/security/limits.conf, "
    "the user in group realtime, log in again; `ulimit -r` shows it) or the process CAP_SYS_NICE "
    "(docker run --cap-add SYS_NICE, or setcap cap_sys_nice+ep on the interpreter)"
)


def max_realtime_priority() -> int:
    return os.sched_get_priority_max(os.SCHED_FIFO)


def process_threads() -> list[int]:
    """Thread ids of this process (/proc/self/task)."""
    return sorted(int(tid) for tid in os.listdir("/proc/self/task"))


def helper_threads() -> set[int]:
    """Native ids of this process's Python threads other than the calling one (helpers, not the cycle)."""
    me = threading.get_native_id()
    return {t.native_id for t in threading.enumerate() if t.native_id is not None and t.native_id != me}


def _apply(call, threads: Iterable[int]) -> int:
    """call(tid) on each thread; a thread that ended meanwhile is skipped. Returns how many were set."""
    done = 0
    for tid in threads:
        try:
            call(tid)
            done += 1
        except ProcessLookupError:
            continue
    return done


def set_cpu_affinity(cpus: Sequence[int], threads: Iterable[int] | None = None) -> tuple[int, str | None]:
    """Pin `threads` (default: all of this process's) to `cpus`: (threads set, None) or (0, warning)."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        done = _apply(
            lambda tid: os.sched_setaffinity(tid, set(cpus)), process_threads() if threads is None else threads
        )
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        hint = f"the process may use CPUs {allowed} (its cpuset)" if e.errno == errno.EINVAL else RT_HOWTO
        return 0, f"cpu_affinity {list(cpus)} refused by the OS ({why}): unchanged; {hint}"
    return done, None


def set_realtime_priority(priority: int, threads: Iterable[int] | None = None) -> tuple[int, str | None]:
    """SCHED_FIFO at `priority` for `threads` (default: this process's, less its Python helper threads):
    (threads set, None) or (0, warning) where the OS refuses."""
    if threads is None:
        helpers = helper_threads()
        threads = [tid for tid in process_threads() if tid not in helpers]
    policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        done = _apply(lambda tid: os.sched_setscheduler(tid, policy, os.sched_param(priority)), threads)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        return 0, (
            f"realtime_priority {priority} (SCHED_FIFO) refused by the OS ({why}; rtprio limit {limit}): "
            f"the node runs at normal priority; {RT_HOWTO}"
        )
    return done, None


def scheduling_of(tid: int) -> tuple[str, int]:
    """('SCHED_FIFO' | 'SCHED_OTHER' | ..., priority) of a thread or process, for logs and tests."""
    policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    return names.get(policy, str(policy)), os.sched_getparam(tid).sched_priority

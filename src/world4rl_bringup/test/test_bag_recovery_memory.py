"""Crash recovery streams: a ~1 GB episode left by a real SIGKILL is recovered by a process whose
address space is limited (RLIMIT_AS) to well under the bag's size, and nothing flushed is lost.
(~6 s here, so not marked slow; it writes ~2 GB under tmp_path and deletes it at the end.)"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

from world4rl_bringup.bag_writer import INCOMPLETE_SUFFIX, PARTIAL_SUFFIX, STATUS_RECOVERED
from world4rl_spec import topics

FRAMES = 1100  # 640x480 rgb8: 0.92 MB each, ~1.01 GB in all
ADDRESS_SPACE_LIMIT = 400_000_000  # `import world4rl_bringup.bag_writer` alone peaks at ~35 MB (VmPeak)

_CHILD_WRITER = textwrap.dedent(
    """
    import hashlib, sys, time
    import numpy as np
    sys.path[:0] = {paths!r}
    from pathlib import Path
    from conftest import Msgs
    from test_bag_writer import _open_writer, IMAGE
    msgs = Msgs()
    writer = _open_writer(Path({out!r}), 7, flush_period_s=0.2, fsync=False)
    digest = hashlib.sha256()
    frame = np.zeros((480, 640, 3), np.uint8)
    for i in range({frames}):
        frame[...] = i % 251
        frame[0, :4, 0] = np.frombuffer(i.to_bytes(4, "little"), np.uint8)
        stamp = 1_000_000_000 + i * 33_000_000
        data = msgs.image(stamp, frame)
        while not writer.write(IMAGE, stamp, data):  # the writer queue is full: wait, never drop
            time.sleep(0.005)
        digest.update(data)
    while writer.flushed_messages < {frames} and writer.error is None:
        time.sleep(0.05)
    print(writer.flushed_messages, digest.hexdigest(), writer.error, flush=True)
    time.sleep(600)  # killed here, the bag never closed
    """
)

_CHILD_RECOVER = textwrap.dedent(
    """
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from world4rl_bringup.bag_recovery import recover_incomplete
    t0 = time.monotonic()
    target = recover_incomplete({bag!r})
    seconds = time.monotonic() - t0
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    kib = lambda key: int(status[key].split()[0])
    print(target, f"{{seconds:.2f}}", kib("VmPeak"), kib("VmHWM"), flush=True)
    """
)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def test_recovery_of_a_1_gb_bag_streams_within_a_small_address_space(tmp_path):
    from rosbags.rosbag2 import Reader

    out = tmp_path / "bags"
    try:
        here = str(Path(__file__).parent)
        t0 = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD_WRITER.format(paths=[here], out=str(out), frames=FRAMES)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            flushed, digest, error = child.stdout.readline().split(maxsplit=2)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        assert error.strip() == "None"
        assert int(flushed) == FRAMES
        write_seconds = time.monotonic() - t0
        bag = out / ("ep_000007" + INCOMPLETE_SUFFIX)
        size = _dir_bytes(bag)
        assert size > 1_000_000_000
        assert size > 2 * ADDRESS_SPACE_LIMIT

        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD_RECOVER.format(limit=ADDRESS_SPACE_LIMIT, bag=str(bag))],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"recovery under RLIMIT_AS={ADDRESS_SPACE_LIMIT} failed:\n{result.stderr[-3000:]}"
        )
        target, seconds, vm_peak_kib, vm_hwm_kib = result.stdout.split()
        partial = out / ("ep_000007" + PARTIAL_SUFFIX)
        assert Path(target) == partial
        assert not bag.exists()

        # Every flushed frame, byte for byte and in order, through the rosbags reader.
        check = hashlib.sha256()
        count = 0
        metadata = yaml.safe_load((partial / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert metadata["custom_data"]["world4rl.status"] == STATUS_RECOVERED
        with Reader(partial) as reader:
            assert sum(c.msgcount for c in reader.connections) == FRAMES  # images only were written
            image_conns = [c for c in reader.connections if c.topic == topics.bag_topic(topics.CAMERA_IMAGE)]
            for _, _, data in reader.messages(connections=image_conns):
                check.update(data)
                count += 1
        assert count == FRAMES
        assert check.hexdigest() == digest
        print(
            f"\nbag {size / 1e6:.0f} MB written in {write_seconds:.1f} s; recovered in {float(seconds):.1f} s "
            f"(child total {time.monotonic() - t0:.1f} s) under RLIMIT_AS {ADDRESS_SPACE_LIMIT / 1e6:.0f} MB: "
            f"VmPeak {int(vm_peak_kib) / 1e3:.0f} MB, VmHWM (peak RSS) {int(vm_hwm_kib) / 1e3:.0f} MB"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)  # pytest keeps the last runs' tmp dirs: do not leave a GB behind

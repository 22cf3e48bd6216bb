"""Does the deploy live view delay the control cycle? (world4rl_policy.live_view)

The cycle's own work as the policy runner does it before the command goes out (decode and resize a
640x480 rgb8 frame to the learning size, the default-size policy on 4 frames, one torch thread) runs
at 10 Hz in this process, in alternating blocks of cycles with and without the live view: "on"
hands each cycle's decision, camera frame and status to the live view after the cycle, as the node
does; "off" hands nothing. The live view's server process runs throughout (nice 19, the default
world model predicting at up to 2 Hz while it gets decisions) with a Foxglove client subscribed to
every channel from another process, so the whole view works as it would with a person watching.
Blocks alternate so both see the same machine load; the baseline is "off", in the same run.

Also: the runner-side cost of the live view calls themselves (status + decision with its camera
frame), after the cycle.

Writes bench/results/live_view.{json,md}.

    .venv/bin/python bench/bench_live_view.py            # 2 minutes
    .venv/bin/python bench/bench_live_view.py --quick    # 30 seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the runtime's CLIs set it

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PERIOD_S = 0.1  # world4rl_spec.CONTROL_RATE_HZ
WATCHER = """
from world4rl_policy import live_view as lv
from world4rl_testing.foxglove_client import FoxgloveClient
client = FoxgloveClient({port}).__enter__()
client.subscribe(set(lv.CHANNELS))
try:
    client.receive(lambda messages: False, 3600)
except Exception:
    pass
print(__import__("json").dumps({{t: len(v) for t, v in client.messages.items()}}), flush=True)
"""


def percentiles(values_s) -> dict:
    ms = np.asarray(values_s) * 1e3
    return {"n": len(ms), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}, "max": float(ms.max())}


def start_view(tmp: Path):
    import torch

    from world4rl_model.world_model import WorldModel, preset_config
    from world4rl_policy import live_view

    torch.manual_seed(0)
    wm = WorldModel(preset_config("default", image_size=64)).save(tmp / "world_model")
    view = live_view.LiveView(live_view.LiveViewSettings(port=0, world_model=str(wm), context_frames=4))
    view.start()
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER.format(port=view.port)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(3.0)  # subscribed before the first cycle
    return view, watcher


def run_cycles(view, cycles: int, block: int) -> dict:
    import torch

    from world4rl_model.images import to_learning_image
    from world4rl_policy.policy import FrameHistory, GaussianPolicy, PolicyConfig, PolicyRunner

    torch.set_num_threads(1)
    torch.manual_seed(0)
    runner = PolicyRunner(GaussianPolicy(PolicyConfig()), {})
    rng = np.random.default_rng(0)
    cameras = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    history = FrameHistory(runner.frame_history)
    status = dict(armed=True, fault="", last_refusal="", latency_ms=3.0, refused_commands=0, policy="p", ood_score=0.5)
    times: dict[str, list[float]] = {"on": [], "off": [], "offers": []}
    for i in range(cycles):
        on = (i // block) % 2 == 0
        rgb = cameras[i % 2]
        started = time.perf_counter()
        history.push(to_learning_image(rgb, runner.image_size))
        frames = history.array()
        action = runner.act(frames)
        done = time.perf_counter()
        times["on" if on else "off"].append(done - started)
        if on:
            view.status({**status, "step": i})
            view.decision(frames, action, time.time(), camera=rgb)
            view.flush()
            times["offers"].append(time.perf_counter() - done)
        time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - started)))
    return {name: percentiles(values) for name, values in times.items()}


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "live_view.json").write_text(json.dumps(result, indent=2) + "\n")
    c = result["cycle_ms"]
    lines = [
        f"Live view and the control cycle: {result['cycles']} cycles at 10 Hz in blocks of {result['block']}, "
        f"default policy and world model, 1 torch thread, CPU ({os.cpu_count()} cores, load {result['load']:.1f}).",
        "",
        "| cycle before the command | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("off", "without the live view (baseline)"),
        ("on", "with the live view"),
        ("offers", "the live view calls after it"),
    ):
        p = c[name]
        lines.append(f"| {label} | {p['n']} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | {p['max']:.2f} |")
    lines += [
        "",
        f"With / without: p50 {c['on']['p50'] / c['off']['p50']:.2f}x, p99 {c['on']['p99'] / c['off']['p99']:.2f}x. "
        f"Sent to the view: {result['sent']}; dropped: {result['dropped']}; the client received {result['received']}.",
    ]
    (RESULTS / "live_view.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1200)
    parser.add_argument("--block", type=int, default=20, help="cycles per on / off block")
    parser.add_argument("--quick", action="store_true", help="240 cycles")
    args = parser.parse_args()
    cycles = 240 if args.quick else args.cycles
    with tempfile.TemporaryDirectory() as tmp:
        view, watcher = start_view(Path(tmp))
        try:
            cycle_ms = run_cycles(view, cycles, args.block)
        finally:
            sent, dropped, error = dict(view.sent), dict(view.dropped), view.error
            view.close()
            received = json.loads(watcher.communicate(timeout=30)[0] or "{}")
    if error:
        print(f"live view error: {error}")
        return 1
    result = {"cycles": cycles, "block": args.block, "load": os.getloadavg()[0], "cycle_ms": cycle_ms}
    write({**result, "sent": sent, "dropped": dropped, "received": received})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

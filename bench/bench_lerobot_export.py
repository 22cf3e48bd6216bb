#!/usr/bin/env python3
"""LeRobotDataset v3.0 export: time and peak memory, against the bag-to-dataset conversion of the
same data in the same run.

Data: --episodes episodes of the sim's noisy scripted expert (task --task, --steps control steps),
generated straight from the simulator and written as episode bags the way the recorder stores them
(the camera at --camera-size, one frame per control step, joint states, the sim's success flag,
the actions, EpisodeInfo; a 30 Hz camera would add frames that every phase reads past). The
default is the coverage benchmark's 400 expert episodes of 50 steps (bench/profiles/full.yaml)
with a 640x480 camera: ~46 MB of bag per episode, ~18 GB in all.

Phases, each in a child process of its own (peak memory = the child's VmHWM; wall time):
- build:          bags -> world4rl dataset at 64x64 (`world4rl dataset build`), the baseline;
- export_dataset: that dataset -> LeRobotDataset (64x64 video);
- export_bags:    the bags -> LeRobotDataset at the recorded resolution;
- import:         the export_dataset output -> a world4rl dataset (`world4rl dataset import`);
- imports_only:   a child that only imports what the phases use (the memory floor).
Each phase reports seconds, frames/s, peak RSS and output size, and its ratio to build.

    .venv/bin/python bench/bench_lerobot_export.py --quick        # 8 episodes, 30 steps, 640x480 (~1 min)
    .venv/bin/python bench/bench_lerobot_export.py                # 400 x 50 at 640x480 (disk: ~19 GB)
    .venv/bin/python bench/bench_lerobot_export.py --episodes 100 --camera-size 320x240

Writes bench/results/lerobot_export.json and lerobot_export.md (--out elsewhere); the data goes to
--work (default: a temporary folder, removed afterwards unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
T0 = 1_700_000_000_000_000_000
PHASES = ("imports_only", "build", "export_dataset", "export_bags", "import")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=400, help="episodes (default: the coverage benchmark's 400)")
    p.add_argument("--steps", type=int, default=50, help="control steps per episode")
    p.add_argument("--camera-size", default="640x480", help="WxH of the recorded camera frames")
    p.add_argument("--task", default="push", help="sim task")
    p.add_argument("--work", type=Path, default=None, help="where bags and outputs go (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep --work afterwards")
    p.add_argument("--out", type=Path, default=RESULTS, help="where lerobot_export.json and .md go")
    p.add_argument("--quick", action="store_true", help="8 episodes of 30 steps at 640x480")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # a child's own phase
    p.add_argument("--phase-args", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.camera_size = 8, 30, "640x480"
    return args


# -- data ------------------------------------------------------------------------------------------


class _Serializer:
    """CDR bytes of the recorder's message types (rosbags' typestore, as the recorder uses)."""

    def __init__(self) -> None:
        from world4rl_bringup.bag_writer import ensure_msgtype, episode_typestore

        self.store = episode_typestore()
        ensure_msgtype(self.store, "world4rl_msgs/msg/Action")
        self.t = self.store.types

    def _header(self, ns: int):
        stamp = self.t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id="")

    def image(self, ns, pixels):
        import numpy as np

        h, w = pixels.shape[:2]
        data = np.ascontiguousarray(pixels).reshape(-1)
        image = self.t["sensor_msgs/msg/Image"]
        msg = image(header=self._header(ns), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=data)
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def joints(self, ns, positions):
        import numpy as np

        from world4rl_spec import ARM_JOINT_NAMES, FINGER_JOINT_NAMES

        state = self.t["sensor_msgs/msg/JointState"]
        names, position = [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES], np.asarray(positions, np.float64)
        msg = state(header=self._header(ns), name=names, position=position, velocity=np.zeros(0), effort=np.zeros(0))
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/JointState"))

    def action(self, ns, values):
        import numpy as np

        msg = self.t["world4rl_msgs/msg/Action"](
            header=self._header(ns), values=np.asarray(values, np.float32), source="expert"
        )
        return bytes(self.store.serialize_cdr(msg, "world4rl_msgs/msg/Action"))

    def flag(self, value: bool):
        return bytes(self.store.serialize_cdr(self.t["std_msgs/msg/Bool"](data=value), "std_msgs/msg/Bool"))


def write_bags(out: Path, episodes: int, steps: int, size: tuple[int, int], task: str) -> float:
    """Episode bags of the noisy scripted expert; returns the seconds it took."""
    import numpy as np

    from world4rl_bringup.bag_writer import EpisodeBagWriter, EpisodeMeta, episode_dir_name
    from world4rl_sim.env import FrankaSimEnv
    from world4rl_spec import topics

    recorded = {"image": topics.CAMERA_IMAGE, "action": topics.ACTION, "joints": topics.JOINT_STATES,
                "success": topics.SIM_SUCCESS}  # fmt: skip
    names = {k: topics.bag_topic(v) for k, v in recorded.items()}
    types = {"image": "sensor_msgs/msg/Image", "action": "world4rl_msgs/msg/Action",
             "joints": "sensor_msgs/msg/JointState", "success": "std_msgs/msg/Bool"}  # fmt: skip
    ser, start = _Serializer(), time.perf_counter()
    env = FrankaSimEnv(task, horizon=steps)
    for index in range(episodes):
        obs, _ = env.reset(seed=index)
        rng = np.random.default_rng(index)
        meta = EpisodeMeta(index=index, task=task, robot="sim", operator_note=f"seed {index}", start_ns=T0)
        writer = EpisodeBagWriter(out / episode_dir_name(index), meta, ser.store).start()
        for key in names:
            writer.add_topic(names[key], types[key])
        solved = False
        for t in range(steps):
            ns = T0 + t * 100_000_000
            writer.write(names["image"], ns, ser.image(ns, env.sim.render(size[0], size[1], env.camera)))
            writer.write(names["joints"], ns + 1_000_000, ser.joints(ns, obs["joint_pos"]))
            writer.write(names["success"], ns + 2_000_000, ser.flag(solved))
            action = np.clip(env.expert_action() + rng.normal(0, 0.1, 4), -1, 1)
            writer.write(names["action"], ns + 5_000_000, ser.action(ns, action))
            obs, _, _, _, info = env.step(action)
            solved = bool(info["success"])
        meta.success, meta.stop_ns = solved, T0 + steps * 100_000_000
        writer.close(meta)
    env.close()
    return time.perf_counter() - start


# -- phases (children) -----------------------------------------------------------------------------


def run_phase(name: str, params: dict) -> dict:
    """One phase in this (child) process; returns its measurements."""
    import av  # noqa: F401  every phase imports the same set, so imports_only is their floor
    import cv2  # noqa: F401
    import pyarrow  # noqa: F401

    from world4rl_bringup import bag_to_dataset, lerobot_bags
    from world4rl_model import lerobot_export, lerobot_import

    start = time.perf_counter()
    if name == "build":
        report = bag_to_dataset.build([params["bags"]], params["out"], log=lambda _: None)
        assert not report.failed, report.failed
    elif name == "export_dataset":
        lerobot_export.export(lerobot_export.DatasetSource(params["dataset"]), params["out"], progress=False)
    elif name == "export_bags":
        source, _ = lerobot_bags.open_source([params["bags"]])
        report = lerobot_export.export(source, params["out"], progress=False)
        assert not report.failed, report.failed
    elif name == "import":
        lerobot_import.import_dataset(params["lerobot"], params["out"], progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, the high-water mark of its own address space
    (ru_maxrss would carry the parent's peak over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, params: dict) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--phase-args", json.dumps(params)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    out = params.get("out")
    result["output_mb"] = _size_mb(Path(out)) if out else 0.0
    return result


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# -- the run ---------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, work: Path) -> dict:
    width, height = (int(v) for v in args.camera_size.lower().split("x"))
    need_gb = args.episodes * args.steps * width * height * 3 * 1.1 / 1e9
    free_gb = shutil.disk_usage(work).free / 1e9
    if need_gb * 1.3 > free_gb:
        raise SystemExit(
            f"{work}: the bags need ~{need_gb:.1f} GB, {free_gb:.1f} GB free; use --work elsewhere or fewer --episodes"
        )
    bags = work / "bags"
    generate_s = write_bags(bags, args.episodes, args.steps, (width, height), args.task)
    paths = {"bags": str(bags), "dataset": str(work / "dataset"), "lerobot": str(work / "lerobot_dataset")}
    plan = {
        "imports_only": {},
        "build": {"bags": paths["bags"], "out": paths["dataset"]},
        "export_dataset": {"dataset": paths["dataset"], "out": paths["lerobot"]},
        "export_bags": {"bags": paths["bags"], "out": str(work / "lerobot_bags")},
        "import": {"lerobot": paths["lerobot"], "out": str(work / "imported")},
    }
    phases = {}
    for name in PHASES:
        phases[name] = child(name, plan[name])
        print(f"{name}: {phases[name]['seconds']:.1f} s, peak {phases[name]['peak_rss_mb']:.0f} MB", flush=True)
    frames = args.episodes * args.steps
    for result in phases.values():
        result["frames_per_s"] = frames / result["seconds"] if result["seconds"] > 0 else None
        result["time_vs_build"] = result["seconds"] / phases["build"]["seconds"]
        result["memory_vs_build"] = result["peak_rss_mb"] / phases["build"]["peak_rss_mb"]
    return {
        "benchmark": "LeRobotDataset v3.0 export/import vs bag-to-dataset conversion, same data, same run",
        "episodes": args.episodes, "steps": args.steps, "frames": frames, "camera": f"{width}x{height}",
        "task": args.task, "bags_mb": _size_mb(bags), "generate_s": generate_s, "phases": phases,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus", "load_average": os.getloadavg(),
        "python": sys.version.split()[0], "unix_time": time.time(),
    }  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# bench_lerobot_export: LeRobotDataset v3.0 export and import vs `dataset build`",
        "",
        f"{result['episodes']} episodes x {result['steps']} steps ({result['frames']} frames) of the noisy "
        f"scripted expert ({result['task']}), camera {result['camera']} in the bags ({result['bags_mb']:.0f} MB). "
        f"Each phase in its own process; peak = its max RSS. Load average {result['load_average'][0]:.2f}, "
        f"{result['machine']}.",
        "",
        "| phase | seconds | frames/s | peak RSS MB | output MB | time / build | memory / build |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in result["phases"].items():
        rate = "" if name == "imports_only" else f"{r['frames_per_s']:.0f}"
        seconds = "" if name == "imports_only" else f"{r['seconds']:.1f}"
        ratio = "" if name == "imports_only" else f"{r['time_vs_build']:.2f}x"
        lines.append(f"| {name} | {seconds} | {rate} | {r['peak_rss_mb']:.0f} | {r['output_mb']:.1f} | {ratio} | "
                     f"{r['memory_vs_build']:.2f}x |")  # fmt: skip
    lines += ["", "build: bags -> 64x64 dataset (baseline); export_dataset: that dataset -> LeRobot (64x64 video); "
              "export_bags: bags -> LeRobot at the recorded resolution; import: LeRobot -> 64x64 dataset; "
              "imports_only: a process that only imports the libraries (the memory floor)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, json.loads(args.phase_args))))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_lerobot_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(args, work)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lerobot_export.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "lerobot_export.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'lerobot_export.json'} and {args.out / 'lerobot_export.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

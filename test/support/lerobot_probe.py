"""LeRobot's own side of test/test_lerobot_interop.py. Runs with the LeRobot environment's python
(scripts/lerobot_env.sh prints it), never with the workspace's .venv: it imports lerobot 0.4.4.

    lerobot_probe.py synth SOURCE.npz [--episodes N --length T --height H --width W --seed S]
        synthetic episodes (a textured scene with a moving square) as plain numpy arrays:
        frames_E uint8 [T,H,W,3], state_E float32 [T,9], action_E float32 [T,4] in [-1,1],
        success_E bool [T] (the frame's own label, False at t=0), tasks (one string per episode).
    lerobot_probe.py write DIR SOURCE.npz [--fps F --image-key K --vcodec C]
        writes SOURCE.npz with LeRobot's writer (LeRobotDataset.create, add_frame, save_episode,
        finalize) into DIR (which must not exist): a video feature, observation.state, action and
        next.success (LeRobot's convention: solved after the frame's action, i.e. success_E[t+1];
        the last frame repeats its own label).
    lerobot_probe.py load DIR OUT [--all-frames --video-backend B]
        loads DIR with LeRobot's LeRobotDataset (root=DIR, offline) and prints a JSON summary
        (num_frames, num_episodes, fps, features, episodes, codebase_version); writes the summary
        to OUT/summary.json, every non-video column to OUT/columns.npz (as LeRobot's
        hf_dataset returns them) and decoded frames (first/middle/last of each episode, or every
        frame with --all-frames) through LeRobotDataset.__getitem__ to OUT/samples.npz: frames
        uint8 [N,H,W,3] (LeRobot's float [0,1] CHW * 255, rounded), index, and each numeric
        feature of the same items.

The hub is never contacted: HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 are set before lerobot
is imported, so a dataset that is incomplete on disk fails instead of being downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np

REPO_ID = "world4rl/lerobot-probe"  # LeRobot wants a repo id even for a local root; never fetched
STATE_NAMES = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]
TASKS = ("pick up the cube", "open the drawer")


def _episode(rng: np.random.Generator, length: int, height: int, width: int, solved: bool) -> dict[str, np.ndarray]:
    """A textured background (edges and gradients that a video codec must keep) and a coloured
    square that the action's (dx, dy) move; the state is a smooth 9-joint trajectory; a solved
    episode is labelled solved from 70 % of its length on."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    background = np.stack(
        [120 + 60 * np.sin(xx / (5 + 3 * c) + phase[c]) * np.cos(yy / (7 + 2 * c)) for c in range(3)], axis=-1
    )
    pos = rng.uniform(0.3, 0.7, 2)
    side = max(4, min(height, width) // 5)
    colour = rng.integers(40, 255, 3)
    frames, actions = [], []
    for _ in range(length):
        img = background.copy()
        x0, y0 = int(pos[0] * (width - side)), int(pos[1] * (height - side))
        img[y0 : y0 + side, x0 : x0 + side] = colour
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        a = np.clip(rng.normal(0, 0.5, 4), -1, 1).astype(np.float32)
        actions.append(a)
        pos = np.clip(pos + 0.08 * a[:2], 0, 1)
    t = np.arange(length, dtype=np.float32)[:, None]
    state = (0.5 * np.sin(0.2 * t + rng.uniform(0, 6, (1, 9)))).astype(np.float32)
    success = np.zeros(length, bool)
    success[int(length * 0.7) :] = solved
    return {"frames": np.stack(frames), "state": state, "action": np.stack(actions), "success": success}


def synth(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    tasks = []
    for e in range(args.episodes):
        length = args.length + 3 * e  # unequal lengths: episode boundaries must be kept
        for key, value in _episode(rng, length, args.height, args.width, solved=e % 2 == 0).items():
            arrays[f"{key}_{e}"] = value
        tasks.append(TASKS[e % len(TASKS)])
    np.savez(args.source, tasks=np.array(tasks), **arrays)
    print(
        json.dumps({"episodes": args.episodes, "lengths": [len(arrays[f"action_{e}"]) for e in range(args.episodes)]})
    )


def write(args: argparse.Namespace) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src = np.load(args.source)
    tasks = [str(t) for t in src["tasks"]]
    h, w = src["frames_0"].shape[1:3]
    features = {
        args.image_key: {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create(
        REPO_ID, fps=args.fps, features=features, root=args.dir, robot_type="franka", vcodec=args.vcodec
    )
    for e, task in enumerate(tasks):
        frames, state, action, success = (src[f"{k}_{e}"] for k in ("frames", "state", "action", "success"))
        # LeRobot's convention: next.success[t] is solved after action t, the label of frame t+1.
        next_success = np.append(success[1:], success[-1])
        for t in range(len(frames)):
            ds.add_frame(
                {
                    args.image_key: frames[t],
                    "observation.state": state[t],
                    "action": action[t],
                    "next.success": next_success[t : t + 1],
                    "task": task,
                }
            )
        ds.save_episode()
    ds.finalize()
    print(json.dumps({"num_frames": ds.meta.total_frames, "num_episodes": ds.meta.total_episodes}))


def _summary(ds) -> dict:
    meta = ds.meta
    episodes = [
        {
            "episode_index": int(ep["episode_index"]),
            "length": int(ep["length"]),
            "dataset_from_index": int(ep["dataset_from_index"]),
            "dataset_to_index": int(ep["dataset_to_index"]),
            "tasks": list(ep["tasks"]),
        }
        for ep in meta.episodes
    ]
    return {
        "lerobot_version": __import__("lerobot").__version__,
        "codebase_version": meta.info["codebase_version"],
        "num_frames": ds.num_frames,
        "num_episodes": ds.num_episodes,
        "fps": ds.fps,
        "video_backend": ds.video_backend,
        "features": {
            k: {"dtype": v["dtype"], "shape": list(v["shape"]), "names": v.get("names")} for k, v in ds.features.items()
        },
        "video_keys": list(meta.video_keys),
        "camera_keys": list(meta.camera_keys),
        "tasks": list(meta.tasks.index),
        "stats_keys": sorted(meta.stats) if meta.stats else [],
        "episodes": episodes,
    }


def _numeric_keys(ds) -> list[str]:
    return [k for k, v in ds.features.items() if v["dtype"] not in ("video", "image", "string")]


def load(args: argparse.Namespace) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(REPO_ID, root=args.dir, video_backend=args.video_backend)
    summary = _summary(ds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = _numeric_keys(ds)
    columns = {k: np.stack([np.asarray(x) for x in ds.hf_dataset[k]]) for k in keys}
    np.savez(out / "columns.npz", **columns)
    indices: list[int] = []
    for ep in summary["episodes"]:
        lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
        indices += list(range(lo, hi)) if args.all_frames else sorted({lo, (lo + hi - 1) // 2, hi - 1})
    camera = summary["camera_keys"][0] if summary["camera_keys"] else None
    frames, numeric = [], {k: [] for k in keys}
    for i in indices:
        item = ds[i]
        if camera is not None:
            chw = item[camera].numpy()
            frames.append(np.clip(np.round(chw * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0))
        for k in keys:
            numeric[k].append(np.asarray(item[k]))
    samples = {"index": np.array(indices), **{f"item:{k}": np.stack(v) for k, v in numeric.items()}}
    if frames:
        samples["frames"] = np.stack(frames)
    np.savez(out / "samples.npz", **samples)
    summary["camera_key"] = camera
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth")
    p.add_argument("source")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("write")
    p.add_argument("dir")
    p.add_argument("source")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--image-key", default="observation.images.front")
    p.add_argument("--vcodec", default="libsvtav1", help="LeRobot's default")
    p = sub.add_parser("load")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--all-frames", action="store_true")
    p.add_argument("--video-backend", default=None, help="torchcodec (LeRobot's default here) or pyav")
    args = parser.parse_args(argv)
    {"synth": synth, "write": write, "load": load}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`world4rl dataset`: episode bags -> the training dataset (world4rl_model.dataset), a summary of a
dataset, an episode as mp4, rollouts of a policy and random walks in the sim added to a dataset,
and LeRobotDataset v3.0 export (of a dataset or of bags) and import.
ROS-free: bags are read with the pure-Python rosbags library.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

from world4rl_bringup import bag_to_dataset
from world4rl_bringup.bag_to_dataset import BuildConfig, build
from world4rl_bringup.cli import flag_values
from world4rl_bringup.runtime_timing import TIMINGS
from world4rl_spec import LEARNING_IMAGE_SIZE, topics

# `world4rl dataset build --help`: this module's summary, then the conversion rules of bag_to_dataset.
BUILD_DESCRIPTION = __doc__ + "\n" + bag_to_dataset.__doc__.split("\n\n", 1)[1]


def summary(root: str | Path) -> str:
    """A human-readable summary of a dataset."""
    import numpy as np

    from world4rl_model.dataset import MANIFEST, Dataset

    ds = Dataset(root)
    m = ds.manifest
    space = m["action_space"]
    lines = [
        f"{Path(root).resolve()}: {m['format']} v{m['version']}, {len(ds)} episodes, {ds.num_transitions} transitions",
        f"images {ds.image_size}x{ds.image_size} RGB, control rate {ds.control_rate_hz:g} Hz",
        f"actions: ({', '.join(space['names'])}) in [{space['low']}, {space['high']}], "
        f"end-effector delta {space.get('ee_delta_scale_m')} m per unit and step",
        "",
        f"{'task':<20} {'episodes':>8} {'success':>8} {'steps min/mean/max':>20}  kinds",
    ]
    for task in ds.tasks:
        eps = [e for e in ds.episodes if e["task"] == task]
        lengths = [e["length"] for e in eps]
        kinds = Counter(e["kind"] for e in eps)
        rate = 100.0 * sum(e["success"] for e in eps) / len(eps)
        lines.append(
            f"{task:<20} {len(eps):>8} {rate:>7.1f}% {min(lengths):>6}/{np.mean(lengths):>6.1f}/{max(lengths):<6}  "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        )
    sources = [e.get("source") or {} for e in ds.episodes]
    with_bag = sum(1 for s in sources if s.get("bag"))
    timings = Counter(e["timing"] for e in ds.episodes if e.get("timing"))
    moved = f" (the arm moved by the {', '.join(f'{t} timing: {n}' for t, n in sorted(timings.items()))})"
    size = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
    lines += [
        "",
        f"sources: {with_bag} from bags, {len(ds) - with_bag} generated{moved if timings else ''}; "
        f"{size / 1e6:.1f} MB on disk",
        f"manifest: {Path(root) / MANIFEST} (created {m.get('created')}, updated {m.get('updated')})",
    ]
    if ds.unlisted_episode_dirs:
        lines.append(
            f"NOT IN THE MANIFEST (kept, not read): {', '.join(ds.unlisted_episode_dirs)}: episode folders a stale "
            "or restored manifest does not list"
        )
    return "\n".join(lines)


def export_video(root: str | Path, episode: int, out: str | Path, fps: float | None = None, scale: int = 4) -> int:
    """Write episode `episode` as an mp4 (frames scaled up, a caption with step, action and
    success under each); returns the number of frames."""
    import cv2
    import imageio.v2 as imageio
    import numpy as np

    from world4rl_model.dataset import Dataset

    ds = Dataset(root)
    arrays = ds.episode(episode)
    meta = ds.episodes[episode]
    frames, actions, success = arrays["frames"], arrays["actions"], arrays["success"]
    size = ds.image_size * scale
    width = max(16, (size + 15) // 16 * 16)  # libx264 wants multiples of 16
    caption_h = 48
    writer = imageio.get_writer(str(out), fps=fps or ds.control_rate_hz, codec="libx264", macro_block_size=16)
    try:
        for t in range(len(frames)):
            canvas = np.zeros((size + caption_h, width, 3), np.uint8)
            canvas[:size, :size] = cv2.resize(np.asarray(frames[t]), (size, size), interpolation=cv2.INTER_NEAREST)
            text1 = f"{meta['task']} ep {episode} t={t}/{len(frames) - 1}" + ("  SUCCESS" if success[t] else "")
            text2 = "a=[" + " ".join(f"{v:+.2f}" for v in actions[t]) + "]"
            colour = (80, 255, 80) if success[t] else (255, 255, 255)
            cv2.putText(canvas, text1, (4, size + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
            cv2.putText(canvas, text2, (4, size + 38), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            writer.append_data(canvas)
    finally:
        writer.close()
    return len(frames)


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build",
        help="convert episode bags into a dataset (appends; skips bags already converted)",
        description=BUILD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("bags", nargs="+", help="bag directories, or directories of bags (e.g. the recorder's output)")
    b.add_argument("--out", required=True, help="dataset directory (created, or appended to)")
    b.add_argument("--image-size", type=int, default=LEARNING_IMAGE_SIZE, help="square frame size [px]")
    b.add_argument("--image-topic", default=topics.bag_topic(topics.CAMERA_IMAGE), help="camera topic in the bags")
    b.add_argument("--action-topic", default=topics.bag_topic(topics.ACTION), help="action topic in the bags")
    b.add_argument(
        "--success-tail-s",
        type=float,
        default=0.5,
        help="without the sim's success topic: label the last this-many seconds of a successful episode as success",
    )
    b.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "expert", "policy", "random", "human"],
        help="episode kind; auto: from the actions' source field",
    )
    i = sub.add_parser("info", help="print a summary of a dataset", description="Print a summary of a dataset.")
    i.add_argument("dataset", help="dataset directory")
    v = sub.add_parser("video", help="export one episode as mp4", description="Export one episode as an mp4 video.")
    v.add_argument("dataset", help="dataset directory")
    v.add_argument("--episode", type=int, required=True, help="episode index")
    v.add_argument("--out", required=True, help="output .mp4 path")
    v.add_argument("--fps", type=float, default=None, help="frames per second (default: the control rate)")
    v.add_argument("--scale", type=int, default=4, help="integer upscaling of the frames")
    _add_rollouts_arguments(sub)
    _add_lerobot_arguments(sub)


ROLLOUTS_DESCRIPTION = """\
Add the BC policy's own rollouts (kind "policy") and random walks (kind "random") in the embedded
sim's direct Python API to a dataset: World4RL's coverage data. The world model then also learns
what the policy's mistakes look like, the reward classifier sees failures, and the gate calibrates
its prediction on the policy episodes' real outcomes. Episodes run the task's full horizon; episode
i of a kind uses seed SEED0 + i (policy 10000.., random 20000..), away from the evaluation seeds
(1000..). A rerun records only the seeds the dataset does not hold yet. The arm moves as a deploy
through ROS moves it (--timing runtime, the default: like the demonstrations recorded from the
robot's bags), or by the sim's own controller (--timing direct)."""


def _add_rollouts_arguments(sub) -> None:
    r = sub.add_parser(
        "rollouts",
        help="add BC-policy rollouts and random walks in the sim to a dataset",
        description=ROLLOUTS_DESCRIPTION,
    )
    r.add_argument("dataset", help="dataset directory (appended to; its frame size is used)")
    r.add_argument("--policy", required=True, help="policy checkpoint or run dir whose rollouts are recorded")
    r.add_argument("--task", required=True, help="sim task (reach, push, drawer, pick_place)")
    r.add_argument("--policy-episodes", type=int, default=150, help="policy rollouts the dataset should hold")
    r.add_argument("--random", type=int, default=30, help="random-walk episodes the dataset should hold")
    r.add_argument(
        "--mean-actions", action="store_true", help="roll out the mean action (default: sample, wider coverage)"
    )
    r.add_argument("--random-smooth", type=float, default=0.8, help="random walk's action smoothing (0: white noise)")
    r.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the task's)")
    r.add_argument(
        "--timing",
        choices=TIMINGS,
        default="runtime",
        help="'runtime' (the arm moves as a deploy through ROS moves it) or 'direct' (the sim's own controller)",
    )
    r.add_argument("--threads", type=int, default=1, help="torch threads of the policy")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_rollouts(args: argparse.Namespace) -> int:
    from world4rl_bringup import sim_rollouts as sim
    from world4rl_model.dataset import Dataset

    if args.task not in sim.task_names("franka"):
        raise ValueError(f"--task {args.task!r}: the sim's tasks are {', '.join(sim.task_names('franka'))}")
    for flag, n in (("--policy-episodes", args.policy_episodes), ("--random", args.random)):
        if n < 0:
            raise ValueError(f"{flag} must be >= 0, got {n}")
    image_size = Dataset(args.dataset).image_size
    policy = sim.PolicyActor(args.policy, deterministic=args.mean_actions, threads=args.threads)
    if policy.image_size != image_size:
        raise ValueError(
            f"--policy {args.policy} sees {policy.image_size} px frames; {args.dataset} holds {image_size} px"
        )
    common = {
        "suite": "franka",
        "task": args.task,
        "image_size": image_size,
        "horizon": args.horizon,
        "timing": args.timing,
    }
    progress = not args.no_progress
    for kind, actor, seed0, count in (
        ("policy", policy, sim.POLICY_SEED0, args.policy_episodes),
        ("random", sim.RandomWalkActor(args.random_smooth), sim.RANDOM_SEED0, args.random),
    ):
        done = sim.top_up(args.dataset, kind=kind, actor=actor, seed0=seed0, count=count, progress=progress, **common)
        solved = "" if done["solved"] is None else f", {100 * done['solved']:.1f} % solved"
        print(f"{args.task}/{kind}: {done['added']} episodes added{solved} -> {Path(args.dataset).resolve()}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, IndexError) as exc:  # DatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.dataset_command == "build":
        config = BuildConfig(**flag_values(BuildConfig, args))
        report = build(args.bags, args.out, config)
        for bag, reason in report.skipped:
            print(f"skipped {bag}: {reason}")
        print(
            f"{len(report.converted)} converted, {len(report.skipped)} skipped, {len(report.failed)} failed "
            f"-> {Path(args.out).resolve()}"
        )
        for bag, error in report.failed:
            print(f"FAILED {bag}: {error}", file=sys.stderr)
        for bag, why in report.label_disagreements:
            print(f"LABELS DISAGREE {bag}: {why}", file=sys.stderr)
        if report.label_disagreements:
            print(
                f"{len(report.label_disagreements)} episode(s) converted with disagreeing success labels (listed "
                "above): the success classifier learns from these labels; check those bags",
                file=sys.stderr,
            )
        return 1 if report.failed else 0
    if args.dataset_command == "info":
        print(summary(args.dataset))
        return 0
    if args.dataset_command == "video":
        n = export_video(args.dataset, args.episode, args.out, fps=args.fps, scale=args.scale)
        print(f"wrote {n} frames to {args.out}")
        return 0
    if args.dataset_command == "rollouts":
        return _run_rollouts(args)
    if args.dataset_command in ("export", "import", "validate"):
        return _run_lerobot(args)
    raise AssertionError(args.dataset_command)


# -- LeRobotDataset v3.0 -------------------------------------------------------------------------


def _config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per field of an export/import config dataclass, with the field's help and default."""
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=helptext)
        else:
            kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
            shown = "" if f.default is None else f" (default: {f.default})"
            choices = f.metadata.get("choices")
            parser.add_argument(flag, type=kind, default=f.default, choices=choices, help=helptext + shown)


def _add_lerobot_arguments(sub) -> None:
    from world4rl_model import lerobot_config

    e = sub.add_parser(
        "export",
        help="a dataset or episode bags -> LeRobotDataset v3.0 (resumable)",
        description=lerobot_config.EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "sources", nargs="+", metavar="DATASET_OR_BAGS", help="a world4rl dataset, or bags / directories of bags"
    )
    e.add_argument("--format", choices=["lerobot"], default="lerobot", help="output format (default: lerobot)")
    e.add_argument("--out", required=True, help="the LeRobotDataset folder (new, or an interrupted export to resume)")
    _config_arguments(e, lerobot_config.ExportConfig)
    e.add_argument("--image-topic", default=topics.bag_topic(topics.CAMERA_IMAGE), help="bags: camera topic")
    e.add_argument("--action-topic", default=topics.bag_topic(topics.ACTION), help="bags: action topic")
    e.add_argument(
        "--success-tail-s", type=float, default=0.5, help="bags without the sim's success topic: see `build`"
    )
    e.add_argument(
        "--kind", default="auto", choices=["auto", "expert", "policy", "random", "human"], help="bags: episode kind"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    i = sub.add_parser(
        "import",
        help="LeRobotDataset v3.0 -> a dataset to train on",
        description=lerobot_config.IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("lerobot_dir", metavar="DIR", help="a LeRobotDataset v3.0 folder")
    i.add_argument("--format", choices=["lerobot"], default="lerobot", help="input format (default: lerobot)")
    i.add_argument("--out", required=True, help="the world4rl dataset to create")
    _config_arguments(i, lerobot_config.ImportConfig)
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser(
        "validate",
        help="check a LeRobotDataset v3.0 folder",
        description="Re-open every file of a LeRobotDataset v3.0 folder and check that they agree (as export does).",
    )
    c.add_argument("lerobot_dir", metavar="DIR", help="a LeRobotDataset v3.0 folder")
    c.add_argument("--format", choices=["lerobot"], default="lerobot", help="format (default: lerobot)")


def _run_lerobot(args: argparse.Namespace) -> int:
    from world4rl_model import lerobot_config, lerobot_export, lerobot_format, lerobot_import

    if args.dataset_command == "validate":
        summary = lerobot_format.validate(args.lerobot_dir)
        print(
            f"{Path(args.lerobot_dir).resolve()}: valid LeRobotDataset v3.0: "
            + ", ".join(f"{v} {k}" for k, v in summary.items())
        )
        return 0
    if args.dataset_command == "import":
        config = lerobot_config.ImportConfig(**flag_values(lerobot_config.ImportConfig, args))
        report = lerobot_import.import_dataset(args.lerobot_dir, args.out, config, progress=not args.no_progress)
        renamed = {k: v for k, v in report.tasks.items() if k != v}
        print(
            f"imported {report.episodes} episodes ({report.frames} frames) -> {Path(args.out).resolve()}: images from "
            f"{report.image_key}, actions from {report.action_key}, success from {report.success}"
            + (f"; task names: {renamed}" if renamed else "")
        )
        return 0
    from world4rl_bringup.lerobot_bags import open_source

    build_config = BuildConfig(**flag_values(BuildConfig, args))
    source, skipped = open_source(args.sources, build_config)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    config = lerobot_config.ExportConfig(**flag_values(lerobot_config.ExportConfig, args))
    report = lerobot_export.export(source, args.out, config, progress=not args.no_progress)
    out = Path(args.out).resolve()
    if report.already_complete:
        print(f"{out}: already exported ({report.episodes} episodes, {report.frames} frames); validated again")
        return 0
    print(
        f"exported {report.episodes} episodes ({report.frames} frames) -> {out}"
        + (f", {report.resumed} of them by an earlier run" if report.resumed else "")
        + f"; validated ({report.summary['data_files']} data, {report.summary['video_files']} video files)"
    )
    for where, error in report.failed:
        print(f"FAILED {where}: {error}", file=sys.stderr)
    return 1 if report.failed else 0

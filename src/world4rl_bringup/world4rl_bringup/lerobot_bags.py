"""Episode bags as a source of the LeRobotDataset export (world4rl_model.lerobot_export): the bag
side of `world4rl dataset export --format lerobot`. ROS-free (bags are read with rosbags).

Each bag is read with bag_to_dataset.read_episode, the conversion `world4rl dataset build` uses
(the same control steps, time alignment, joint states and success labels), but with
BuildConfig.resize=False: the camera's frames stay at their recorded resolution. The episode's
EpisodeInfo (task, label, operator note, robot) and the bag's path and sha256 travel along. A bad
bag is reported (ExportSourceError, naming the bag and the topic) and the other bags are exported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from world4rl_bringup.bag_to_dataset import BagError, BuildConfig, bag_sha256, find_bags, read_episode
from world4rl_model.lerobot_export import DatasetSource, ExportEpisode, ExportSourceError


class BagSource:
    """Episode bags, in the order given (find_bags sorts a directory's bags), as an export source."""

    def __init__(self, bags: list[Path], config: BuildConfig | None = None) -> None:
        self.bags = [Path(b) for b in bags]
        self.config = dataclasses.replace(config or BuildConfig(), resize=False)
        c = self.config
        self.fingerprint = {
            "type": "episode-bags",
            "bags": [str(b) for b in self.bags],
            "topics": [c.image_topic, c.action_topic, c.joint_topic, c.gripper_topic, c.success_topic],
            "success_tail_s": c.success_tail_s,
            "kind": c.kind,
            "min_steps": c.min_steps,
        }
        self.control_rate_hz = c.control_rate_hz
        self.has_state = None  # a bag tells when it is read

    def __len__(self) -> int:
        return len(self.bags)

    def describe(self, position: int) -> str:
        return str(self.bags[position])

    def load(self, position: int) -> ExportEpisode:
        bag = self.bags[position]
        try:
            sha = bag_sha256(bag) if (bag / "metadata.yaml").is_file() else None
            episode = read_episode(bag, self.config)
        except (BagError, OSError) as exc:
            raise ExportSourceError(str(exc)) from exc
        return ExportEpisode(
            frames=episode.frames,
            actions=episode.actions,
            success_per_frame=episode.success_per_frame,
            joint_positions=episode.joint_positions,
            task=episode.task,
            success=episode.success,
            kind=episode.kind,
            operator_note=episode.operator_note,
            robot=episode.robot,
            source_bag=str(bag),
            source_sha256=sha,
        )


def open_source(paths: list[str | Path], config: BuildConfig | None = None):
    """(the export source, [(path, why skipped)]): a world4rl dataset (one directory with a
    manifest.json), else episode bags and directories of bags."""
    if len(paths) == 1 and (Path(paths[0]) / "manifest.json").is_file():
        return DatasetSource(paths[0]), []
    bags, skipped = find_bags(list(paths))
    if not bags:
        shown = "; ".join(f"{p}: {why}" for p, why in skipped) or ", ".join(map(str, paths))
        raise FileNotFoundError(f"no world4rl dataset (manifest.json) and no episode bags found: {shown}")
    return BagSource(bags, config), skipped

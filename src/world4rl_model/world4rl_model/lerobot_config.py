"""Settings of the LeRobotDataset v3.0 export and import, and the help the command line shows.
Imports nothing heavy, so `world4rl --help` stays fast; the work is in lerobot_format.py (layout,
statistics, validation), lerobot_export.py and lerobot_import.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from world4rl_spec import LEARNING_IMAGE_SIZE

DEFAULT_CAMERA = "front"
# LeRobot 0.4's defaults: files per chunk folder, and the size a data / video file grows to [MB].
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
VCODECS = ("h264", "hevc", "libsvtav1")
PIX_FMTS = ("yuv420p", "yuv444p")
STATE_CHOICES = ("auto", "yes", "no")
SUCCESS_MODES = ("frame", "next", "reward", "episode")

EXPORT_HELP = """\
Writes LeRobotDataset v3.0 as LeRobot 0.4 reads it: data/chunk-*/file-*.parquet (one row per
control step), videos/observation.images.CAMERA/chunk-*/file-*.mp4, meta/info.json (fps = the
control rate, features, totals), meta/stats.json, meta/tasks.parquet, meta/episodes/*.parquet.

Features: observation.images.CAMERA (the camera at its recorded resolution for bags, the dataset's
size for a dataset; the frame each action was decided on), observation.state (fr3_joint1..7 and the
two finger joints, when recorded), action (dx, dy, dz, gripper in [-1, 1]), success (the frame's
own label), next.success (LeRobot's: solved after the action), timestamp, frame_index,
episode_index, index, task_index. meta/episodes also has world4rl/success, kind, operator_note,
robot, source_bag, source_sha256 and seed.

Episode by episode (one in memory), resumable: an interrupted export continues when run again with
the same source and settings (OUT/.world4rl_export holds its progress). Everything written is
re-opened and checked before success is reported. A bad bag is reported and left out (exit 1).
Video: h264 yuv420p crf 18 by default; measured round-trip PSNR 32-36 dB at 64x64, where yuv420p's
halved colour resolution dominates (--pix-fmt yuv444p: 38-40 dB), 45 dB for 640x480 camera frames
once resized to 64x64. Actions and labels come back exactly."""

IMPORT_HELP = """\
Reads a LeRobotDataset v3.0 folder into a world4rl dataset for the world model, the reward
classifier and BC. Frames are decoded, centre-cropped and resized to --image-size as `dataset
build` does. Actions are mapped by --action-map to (dx, dy, dz, gripper) in [-1, 1]: `identity`, or
four comma-separated terms SRC[*SCALE][+OFFSET] (SRC a name or an index of the action feature),
e.g. --action-map 'x*50,y*50,z*50,gripper*2-1'. --success chooses the labels: frame:COL (the
frame's own label, world4rl's `success`), next:COL (LeRobot's next.success: solved after the
frame's action), reward:COL (next.reward > 0), episode:COL (a meta/episodes column), or unknown
(every episode a failure: train the world model and BC on it, not the reward classifier); auto
takes a world4rl export's `success`, else next.success, else next.reward. An option that does not
fit the dataset is an error naming the file, the feature or the column."""


@dataclass
class ExportConfig:
    camera: str = field(
        default=DEFAULT_CAMERA, metadata={"help": "camera name: the video feature is observation.images.CAMERA"}
    )
    vcodec: str = field(default="h264", metadata={"help": "video codec (LeRobot reads all three)", "choices": VCODECS})
    crf: int = field(default=18, metadata={"help": "constant rate factor: lower is better quality and bigger files"})
    gop: int = field(default=2, metadata={"help": "keyframe interval in frames (LeRobot's 2: fast random access)"})
    pix_fmt: str = field(
        default="yuv420p", metadata={"help": "pixel format; yuv444p keeps colour detail", "choices": PIX_FMTS}
    )
    state: str = field(
        default="auto",
        metadata={"help": "observation.state: auto (when the episodes have joint states)", "choices": STATE_CHOICES},
    )
    chunks_size: int = field(default=CHUNKS_SIZE, metadata={"help": "files per chunk folder"})
    data_files_size_in_mb: float = field(
        default=DATA_FILES_SIZE_IN_MB, metadata={"help": "size a data file grows to [MB]"}
    )
    video_files_size_in_mb: float = field(
        default=VIDEO_FILES_SIZE_IN_MB, metadata={"help": "size a video file grows to [MB]"}
    )

    def check(self) -> None:
        if not self.camera or not all(c.isalnum() or c in "_-" for c in self.camera):
            raise ValueError(
                f"camera name {self.camera!r}: use letters, digits, '_' or '-' (it becomes a feature name)"
            )
        if self.vcodec not in VCODECS or self.pix_fmt not in PIX_FMTS or self.state not in STATE_CHOICES:
            raise ValueError(
                f"vcodec must be one of {VCODECS}, pix_fmt one of {PIX_FMTS}, state one of {STATE_CHOICES}"
            )
        if self.gop < 1 or not 0 <= self.crf <= 63 or self.chunks_size < 1:
            raise ValueError(
                f"gop >= 1, 0 <= crf <= 63 and chunks_size >= 1 are required (gop {self.gop}, crf {self.crf})"
            )
        if self.data_files_size_in_mb <= 0 or self.video_files_size_in_mb <= 0:
            raise ValueError("file size limits must be positive")


@dataclass
class ImportConfig:
    image_key: str | None = field(default=None, metadata={"help": "camera feature (default: the only one)"})
    action_key: str = field(default="action", metadata={"help": "action feature"})
    action_map: str = field(
        default="identity", metadata={"help": "identity, or 4 terms SRC[*SCALE][+OFFSET] for dx,dy,dz,gripper"}
    )
    clip_actions: bool = field(default=False, metadata={"help": "clip mapped actions to [-1, 1] instead of failing"})
    success: str = field(
        default="auto", metadata={"help": "auto, frame:COL, next:COL, reward:COL, episode:COL or unknown"}
    )
    task: str | None = field(
        default=None, metadata={"help": "task name of every episode (default: from the task strings)"}
    )
    kind: str = field(
        default="auto", metadata={"help": "episode kind; auto: world4rl/kind of a world4rl export, else human"}
    )
    image_size: int = field(default=LEARNING_IMAGE_SIZE, metadata={"help": "square learning frame size [px]"})
    control_rate_hz: float | None = field(
        default=None, metadata={"help": "the fps the dataset must have (default: the stack's control rate)"}
    )
    append: bool = field(default=False, metadata={"help": "append to an existing world4rl dataset"})

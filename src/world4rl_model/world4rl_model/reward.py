"""Success reward: a small CNN that predicts task success from one frame.

World4RL rewards imagined rollouts with a binary success classifier on the next frame. The
classifier is multi-task: the task (index into the manifest's sorted task list) is a one-hot input
next to the pooled image features, because the same picture can be a success for one task (reach)
and not for another (push).

Training (BCE on the dataset's success flags, optionally on world-model dreams) is in
`world4rl_model.reward_training`; the held-out accuracy and calibration report in
`world4rl_model.reward_report`; the dreamed frames in `world4rl_model.reward_dreams`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from world4rl_model.checkpoint import load_checkpoint
from world4rl_model.world_model import frames_to_float
from world4rl_spec import LEARNING_IMAGE_SIZE

KIND = "reward"


@dataclass
class RewardConfig:
    image_size: int = LEARNING_IMAGE_SIZE
    tasks: list[str] = field(default_factory=list)  # the manifest's sorted task list (one-hot order)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])  # stride-2 conv stages
    hidden: int = 128
    threshold: float = 0.5  # probability above which a frame counts as success

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RewardClassifier(nn.Module):
    """logit = f(frame [B, 3, H, W] uint8 or float in [-1, 1], task index [B])."""

    def __init__(self, config: RewardConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        prev = 3
        for c in config.channels:
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            prev = c
        self.features = nn.Sequential(*layers)
        self.num_tasks = max(1, len(config.tasks))
        self.head = nn.Sequential(
            nn.Linear(prev + self.num_tasks, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1)
        )

    def task_indices(self, tasks: list[str] | str, batch: int, device: torch.device | str) -> torch.Tensor:
        names = [tasks] * batch if isinstance(tasks, str) else list(tasks)
        known = self.config.tasks or [names[0]]
        try:
            return torch.tensor([known.index(t) for t in names], device=device)
        except ValueError:
            raise KeyError(f"reward classifier knows tasks {known}, got {sorted(set(names))}") from None

    def forward(self, frames: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        x = frames_to_float(frames)
        h = self.features(x).mean(dim=(2, 3))
        if task is None:
            task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        onehot = F.one_hot(task.long(), self.num_tasks).to(h.dtype)
        return self.head(torch.cat([h, onehot], dim=1)).squeeze(1)

    @torch.no_grad()
    def probability(self, frames: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self(frames, task).float())

    def checkpoint_config(self, **extra: Any) -> dict[str, Any]:
        return {
            "kind": KIND,
            "model": self.config.to_dict(),
            "normalisation": {"frames": "x = uint8 / 127.5 - 1 (RGB, [B, 3, H, W])"},
            "image_size": self.config.image_size,
            "tasks": list(self.config.tasks),
            **extra,
        }

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> tuple[RewardClassifier, dict[str, Any]]:
        state, config = load_checkpoint(path, map_location=device, kind=KIND)
        model = cls(RewardConfig(**config["model"])).to(device)
        model.load_state_dict(state)
        return model.eval(), config

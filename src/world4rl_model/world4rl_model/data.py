"""Torch-side access to a dataset: episodes in memory, windows of (history, next frames) for training.

A window at step t of an episode holds frames o_{t-T+1 .. t+L} and actions a_{t-T+1 .. t+L-1}
(T = context frames, L = predicted steps). Step l in [0, L) conditions on frames
o_{t-T+1+l .. t+l} and actions a_{t-T+1+l .. t+l} and predicts o_{t+1+l}. History before an
episode's first frame is padded with that first frame and zero actions (the same rule
WorldModelEnv uses when it resets from an episode's first frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from world4rl_model.dataset import Dataset


class EpisodeStore:
    """Selected episodes of a Dataset as contiguous torch tensors (uint8 frames [N, 3, H, W])."""

    def __init__(self, dataset: Dataset, episodes: Sequence[int] | None = None, device: str | torch.device = "cpu"):
        self.dataset = dataset
        self.episode_indices = list(range(len(dataset))) if episodes is None else list(episodes)
        if not self.episode_indices:
            raise ValueError(f"{dataset.root}: no episodes selected")
        frames, actions, success, tasks, lengths = [], [], [], [], []
        for i in self.episode_indices:
            ep = dataset.episode(i)
            frames.append(np.asarray(ep["frames"]).transpose(0, 3, 1, 2))
            actions.append(np.asarray(ep["actions"]))
            success.append(np.asarray(ep["success"]))
            lengths.append(len(ep["frames"]))
            tasks.append(dataset.task_index(dataset.episodes[i]["task"]))
        self.frames = torch.from_numpy(np.concatenate(frames)).to(device)
        self.actions = torch.from_numpy(np.concatenate(actions)).to(device)
        self.success = torch.from_numpy(np.concatenate(success)).to(device)
        self.lengths = torch.tensor(lengths, device=device)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), self.lengths.cumsum(0)[:-1]])
        self.episode_task = torch.tensor(tasks, device=device)
        # Episode id (position in this store) of every frame.
        self.frame_episode = torch.repeat_interleave(torch.arange(len(lengths), device=device), self.lengths)
        self.task = self.episode_task[self.frame_episode]
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.episode_indices)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def window_starts(self, horizon: int = 1) -> torch.Tensor:
        """Global frame positions t (last context frame) whose window has `horizon` next frames."""
        t = torch.arange(self.num_frames, device=self.device)
        ep = self.frame_episode
        return t[(t - self.offsets[ep]) + horizon <= self.lengths[ep] - 1]

    def gather(self, starts: torch.Tensor, context: int, horizon: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """frames uint8 [B, T + L, 3, H, W] and actions float [B, T + L - 1, A] for windows at `starts`."""
        starts = starts.to(self.device)
        ep = self.frame_episode[starts]
        first = self.offsets[ep].unsqueeze(1)
        rel = torch.arange(-context + 1, horizon + 1, device=self.device)
        pos = starts.unsqueeze(1) + rel
        frames = self.frames[pos.clamp_min(first)]
        apos = pos[:, :-1]
        actions = self.actions[apos.clamp_min(first)] * (apos >= first).unsqueeze(-1)
        return frames, actions

    def history(self, positions: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Context frames [B, T, 3, H, W] ending at `positions` and the T actions before each of them.

        The last action slot (the action to be taken at `positions`) is zero: WorldModelEnv fills it
        with the agent's action.
        """
        frames, actions = self.gather(positions, context, horizon=0)
        pad = torch.zeros((len(positions), 1, self.actions.shape[1]), dtype=self.actions.dtype, device=self.device)
        return frames, torch.cat([actions, pad], dim=1)

    def sample_starts(self, batch: int, horizon: int, generator: torch.Generator | None = None) -> torch.Tensor:
        valid = self.window_starts(horizon)
        if len(valid) == 0:
            raise ValueError(f"{self.dataset.root}: no episode is longer than {horizon} steps")
        idx = torch.randint(len(valid), (batch,), generator=generator, device="cpu").to(self.device)
        return valid[idx]

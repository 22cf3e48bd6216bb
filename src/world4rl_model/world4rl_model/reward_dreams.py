"""Dreamed frames for the success classifier: a world model's open-loop dreams of real episodes,
labelled with the success of the real frame at the same step."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from world4rl_model.data import EpisodeStore


@dataclass
class DreamPool:
    """World-model dreams of real episodes with the success label of the real frame at the same step."""

    frames: torch.Tensor  # uint8 [M, 3, S, S]
    success: torch.Tensor  # bool [M]
    task: torch.Tensor  # int64 [M]
    horizon: torch.Tensor  # int64 [M], open-loop steps from the real context (1 = one-step prediction)

    def pools(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.success.nonzero().flatten(), (~self.success).nonzero().flatten()


def dreamed_pool(
    world_model: str,
    store: EpisodeStore,
    horizon: int = 10,
    stride: int = 5,
    sampling_steps: int | None = None,
    bf16: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> DreamPool:
    """Open-loop dreams of the store's episodes (real context, then the real actions) by a world model.

    The classifier is applied to dreams in imagination, and dreams are blurrier than camera frames: a
    classifier trained only on real frames can fire on a blurred gripper near an object. Trained on
    dreams as well, with the label of what really happened after the same actions, it learns to
    judge success on the world model's pictures."""
    from world4rl_model.evaluation import open_loop_rollouts
    from world4rl_model.world_model import WorldModel

    device = store.device
    model, _ = WorldModel.from_checkpoint(world_model, device)
    model.eval()
    t0 = time.monotonic()
    r = open_loop_rollouts(model, store, horizon=horizon, stride=stride, steps=sampling_steps, seed=seed, bf16=bf16)
    offset_of = {ep: int(store.offsets[e]) for e, ep in enumerate(store.episode_indices)}
    # global position of each rollout's last context frame
    starts = [offset_of[ep] + t for ep, t in zip(r.episodes, r.starts, strict=True)]
    starts_t = torch.tensor(starts, dtype=torch.long, device=device)
    steps = torch.arange(1, horizon + 1, device=device)
    positions = starts_t[:, None] + steps[None]  # [N, H]: the real frame each dream stands for
    pool = DreamPool(
        frames=r.dreamed[:, 1:].reshape(-1, *r.dreamed.shape[2:]).to(device),
        success=store.success[positions.flatten()],
        task=store.task[positions.flatten()],
        horizon=steps.repeat(len(starts)),
    )
    if progress:
        print(
            f"[reward] dreamed {len(pool.success)} frames ({len(starts)} open-loop rollouts of {horizon} steps) "
            f"with {world_model} in {time.monotonic() - t0:.0f} s; {int(pool.success.sum())} success",
            flush=True,
        )
    return pool

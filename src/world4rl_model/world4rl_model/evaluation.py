"""Open-loop evaluation of a world model on held-out episodes, against a copy-last-frame baseline.

From a start step t0 of a held-out episode, the model gets the real context (frames o_{t0-T+1..t0}
and their actions) and then the episode's real actions a_{t0..}, but only its own predicted frames
from then on (open loop). At horizon h its frame is compared with the real o_{t0+h}; the baseline
predicts o_{t0} for every h. PSNR (8-bit noise floor cap) and SSIM (7x7 uniform window) per frame,
averaged over all rollouts, with the standard error of the mean; and the pooled PSNR (of the mean
squared error over all rollouts, world_model.pooled_psnr), which near-exact still frames cannot dominate.
The action gain (action_gain) asks whether those dreams depend on the actions at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world4rl_model.data import EpisodeStore
from world4rl_model.world_model import WorldModel, frames_to_float, frames_to_uint8, pooled_psnr, psnr, ssim


@dataclass
class Rollouts:
    real: torch.Tensor  # uint8 [N, H + 1, 3, S, S]: o_{t0} .. o_{t0+H}
    dreamed: torch.Tensor  # uint8 [N, H + 1, 3, S, S]: o_{t0} (real) then the model's frames
    episodes: list[int]  # dataset episode index of each rollout
    starts: list[int]  # t0 within its episode


def rollout_starts(store: EpisodeStore, horizon: int, stride: int) -> torch.Tensor:
    """Global frame positions t0 every `stride` steps of each episode that leave `horizon` real frames."""
    out = []
    for e in range(len(store)):
        off, n = int(store.offsets[e]), int(store.lengths[e])
        out += [off + t for t in range(0, n - horizon, stride)]
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def open_loop_rollouts(
    model: WorldModel,
    store: EpisodeStore,
    horizon: int = 15,
    stride: int = 10,
    batch_size: int = 64,
    steps: int | None = None,
    seed: int = 0,
    bf16: bool = False,
    max_rollouts: int | None = None,
    swap_actions: bool = False,
) -> Rollouts:
    """`swap_actions`: from t0 on, each rollout follows the recorded actions of the rollout half the list
    away (another episode's), its own history and the same sampling noise kept (see action_gain)."""
    t = model.config.context_frames
    starts = rollout_starts(store, horizon, stride)
    if max_rollouts is not None:
        starts = starts[:max_rollouts]
    if len(starts) == 0:
        raise ValueError(f"no held-out episode is longer than the horizon {horizon}")
    if swap_actions and len(starts) < 2:
        raise ValueError("swapping actions needs at least two rollouts")
    others = starts.roll(len(starts) // 2) if swap_actions else None
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    reals, dreams = [], []
    for i in range(0, len(starts), batch_size):
        s = starts[i : i + batch_size].to(store.device)
        frames, actions = store.gather(s, t, horizon)  # frames [B, T + H, ...], actions [B, T + H - 1, A]
        if swap_actions:
            actions[:, t - 1 :] = store.gather(others[i : i + batch_size].to(store.device), t, horizon)[1][:, t - 1 :]
        frames, actions = frames.to(device), actions.to(device)
        context = frames_to_float(frames[:, :t])
        dreamed = [frames[:, t - 1]]
        for h in range(horizon):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                nxt = model.sample(context, actions[:, h : h + t], steps=steps, generator=gen)
            dreamed.append(frames_to_uint8(nxt))
            context = torch.cat([context[:, 1:], nxt.float().unsqueeze(1)], dim=1)
        reals.append(frames[:, t - 1 :].cpu())
        dreams.append(torch.stack(dreamed, dim=1).cpu())
    ep_of = store.frame_episode[starts.to(store.device)].cpu()
    return Rollouts(
        real=torch.cat(reals),
        dreamed=torch.cat(dreams),
        episodes=[store.episode_indices[int(e)] for e in ep_of],
        starts=[int(s - store.offsets[int(e)]) for s, e in zip(starts.tolist(), ep_of.tolist(), strict=True)],
    )


def _mean_sem(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    sem = x.std().item() / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return x.mean().item(), sem


def horizon_metrics(rollouts: Rollouts, horizons: list[int]) -> list[dict[str, Any]]:
    rows = []
    first = frames_to_float(rollouts.real[:, 0])
    for h in horizons:
        if h >= rollouts.real.shape[1]:
            raise ValueError(f"horizon {h} beyond the rollouts' {rollouts.real.shape[1] - 1} steps")
        real = frames_to_float(rollouts.real[:, h])
        dream = frames_to_float(rollouts.dreamed[:, h])
        row: dict[str, Any] = {"horizon": h, "n": len(real)}
        for name, pred in (("model", dream), ("copy_last", first)):
            row[f"{name}_psnr"], row[f"{name}_psnr_sem"] = _mean_sem(psnr(pred, real))
            row[f"{name}_ssim"], row[f"{name}_ssim_sem"] = _mean_sem(ssim(pred, real))
        row["psnr_gain_db"] = row["model_psnr"] - row["copy_last_psnr"]
        row["model_psnr_pooled"], row["copy_last_psnr_pooled"] = pooled_psnr(dream, real), pooled_psnr(first, real)
        row["psnr_pooled_gain_db"] = row["model_psnr_pooled"] - row["copy_last_psnr_pooled"]
        # Paired: fraction of rollouts where the model beats the baseline on PSNR.
        row["model_better_fraction"] = (psnr(dream, real) > psnr(first, real)).float().mean().item()
        rows.append(row)
    return rows


def action_gain(recorded: Rollouts, swapped: Rollouts, horizons: list[int]) -> list[dict[str, Any]]:
    """Whether the dreams answer the actions: pooled PSNR against the real frames of the rollouts that
    followed their recorded actions and of the same rollouts (same starts, same noise) that followed
    another rollout's. Near 0 dB, the model predicts the motion from the past frames alone and ignores
    the action: a policy cannot change what it dreams, and refinement in those dreams has no signal."""
    if not torch.equal(recorded.real, swapped.real):
        raise ValueError("action_gain compares rollouts from the same starts")
    rows = []
    for h in horizons:
        real = frames_to_float(recorded.real[:, h])
        own, other = frames_to_float(recorded.dreamed[:, h]), frames_to_float(swapped.dreamed[:, h])
        row = {"horizon": h, "n": len(real), "recorded_psnr_pooled": pooled_psnr(own, real)}
        row["swapped_psnr_pooled"] = pooled_psnr(other, real)
        row["action_gain_db"] = row["recorded_psnr_pooled"] - row["swapped_psnr_pooled"]
        row["recorded_better_fraction"] = (psnr(own, real) > psnr(other, real)).float().mean().item()
        rows.append(row)
    return rows


def action_gain_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "### Do the dreams answer the actions?",
        "",
        "| horizon | pooled PSNR, recorded actions (dB) | another rollout's actions (dB) | action gain (dB) "
        "| recorded better |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['horizon']} | {r['recorded_psnr_pooled']:.2f} | {r['swapped_psnr_pooled']:.2f} | "
            f"{r['action_gain_db']:+.2f} | {100 * r['recorded_better_fraction']:.0f} % |"
        )
    lines += [
        "",
        "The same starts and sampling noise; from the start on, each rollout follows another episode's recorded "
        "actions. A gain near 0 dB: the model predicts motion from the past frames and ignores the action, so "
        "a policy cannot change its dreams and refinement in them learns nothing.",
    ]
    return "\n".join(lines) + "\n"


def metrics_markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"## {title}",
        "",
        "| horizon | rollouts | PSNR model (dB) | PSNR copy-last (dB) | gain (dB) | model better "
        "| pooled PSNR model / copy-last (dB) | pooled gain (dB) | SSIM model | SSIM copy-last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['horizon']} | {r['n']} | {r['model_psnr']:.2f} ± {r['model_psnr_sem']:.2f} | "
            f"{r['copy_last_psnr']:.2f} ± {r['copy_last_psnr_sem']:.2f} | {r['psnr_gain_db']:+.2f} | "
            f"{100 * r['model_better_fraction']:.0f} % | "
            f"{r['model_psnr_pooled']:.2f} / {r['copy_last_psnr_pooled']:.2f} | {r['psnr_pooled_gain_db']:+.2f} | "
            f"{r['model_ssim']:.3f} ± {r['model_ssim_sem']:.3f} | "
            f"{r['copy_last_ssim']:.3f} ± {r['copy_last_ssim_sem']:.3f} |"
        )
    lines += [
        "",
        "PSNR and SSIM: the mean over rollouts of each frame's value; pooled PSNR: of the mean squared error over "
        "all rollouts, where a still frame that copy-last reproduces exactly does not outweigh a moving arm.",
    ]
    return "\n".join(lines) + "\n"


def side_by_side_video(rollouts: Rollouts, path: str | Path, count: int = 4, scale: int = 4, fps: float = 5.0) -> Path:
    """Video of `count` rollouts stacked vertically, each row real | dreamed; mp4 (ffmpeg) or gif."""
    import imageio.v2 as imageio

    n = min(count, len(rollouts.real))
    real = rollouts.real[:n].permute(1, 0, 3, 4, 2).numpy()  # [H+1, n, S, S, 3]
    dream = rollouts.dreamed[:n].permute(1, 0, 3, 4, 2).numpy()
    steps, _, s, _, _ = real.shape
    gap = np.full((s, 2, 3), 255, np.uint8)
    frames = []
    for k in range(steps):
        rows = [np.concatenate([real[k, i], gap, dream[k, i]], axis=1) for i in range(n)]
        frame = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)]) for r in rows])
        frame = frame.repeat(scale, 0).repeat(scale, 1)
        # Even sizes for yuv420p.
        frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
        frames.append(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        try:
            imageio.mimwrite(path, frames, fps=fps, codec="libx264", quality=8, macro_block_size=1)
            return path
        except Exception:  # no ffmpeg backend: fall back to a gif beside it
            path = path.with_suffix(".gif")
    imageio.mimwrite(path, frames, duration=1.0 / fps, loop=0)
    return path

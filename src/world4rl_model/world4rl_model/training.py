"""Training loop of the diffusion world model: seeded, resumable, DDP-ready, TensorBoard, atomic checkpoints.

Run it through the CLI (`world4rl train world-model DATASET --out RUN`), directly, or under
`torchrun --nproc_per_node N` (each rank draws its own batches; DDP averages gradients; rank 0
validates, logs and checkpoints). Batches are drawn from generators seeded by (seed, rank, step),
so a resumed run continues exactly where an uninterrupted one would have been.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from world4rl_model.checkpoint import (
    capture_training_state,
    latest_checkpoint,
    load_checkpoint,
    load_training_state,
    restore_training_state,
    save_run_checkpoint,
)
from world4rl_model.data import EpisodeStore
from world4rl_model.dataset import Dataset, manifest_hash
from world4rl_model.runtime import (
    DistInfo,
    configure_threads,
    derive_seed,
    init_distributed,
    resolve_device,
    seed_everything,
    shutdown_distributed,
    tcmalloc_active,
)
from world4rl_model.world_model import (
    KIND,
    WorldModel,
    WorldModelConfig,
    count_parameters,
    frames_to_float,
    preset_config,
    psnr,
)


@dataclass
class WorldModelTrainConfig:
    dataset: str
    out: str
    size: str = "default"  # preset: tiny | small | default | medium | diamond
    context_frames: int = 4
    steps: int = 20_000
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 1.0
    rollout_steps: int = 1  # >1: DIAMOND-style training on short sequences that feed back own predictions
    sampling_steps: int = 3
    quantize: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    val_every: int = 500
    val_samples: int = 64
    ckpt_every: int = 1000
    keep: int = 3
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = True
    threads: int | None = None
    tasks: list[str] | None = None
    kinds: list[str] | None = None
    resume: bool = True
    progress: bool = True
    model_overrides: dict[str, Any] = field(default_factory=dict)


class _LossModule(nn.Module):
    """forward() = the training loss, so that DDP's hooks see the whole computation."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        model = self.model
        t = model.config.context_frames
        horizon = frames.shape[1] - t
        context = frames_to_float(frames[:, :t])
        total = frames.new_zeros((), dtype=torch.float32)
        for step in range(horizon):
            acts = actions[:, step : step + t]
            total = total + model.loss(context, acts, frames[:, t + step], generator=generator)
            if step < horizon - 1:
                # DIAMOND: later steps condition on the model's own sampled (8-bit) frames.
                nxt = model.sample(context, acts, generator=generator)
                context = torch.cat([context[:, 1:], nxt.unsqueeze(1)], dim=1)
        return total / horizon


def _select_episodes(ds: Dataset, indices: list[int], cfg: WorldModelTrainConfig) -> list[int]:
    return ds.select(indices, tasks=cfg.tasks, kinds=cfg.kinds)


@torch.no_grad()
def _validate(
    model: WorldModel, store: EpisodeStore, cfg: WorldModelTrainConfig, device: str, autocast: Any
) -> tuple[dict[str, float], torch.Tensor]:
    t = model.config.context_frames
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "val"))
    starts = store.sample_starts(cfg.val_samples, 1, g)
    frames, actions = store.gather(starts, t, 1)
    model.eval()
    gdev = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "val-noise"))
    losses, preds = [], []
    for i in range(0, len(starts), cfg.batch_size):
        f, a = frames[i : i + cfg.batch_size], actions[i : i + cfg.batch_size]
        with autocast():
            losses.append(model.loss(f[:, :t], a[:, :t], f[:, t], generator=gdev).item() * len(f))
            preds.append(model.sample(f[:, :t], a[:, :t], generator=gdev))
    model.train()
    pred = torch.cat(preds).float()
    real = frames_to_float(frames[:, t])
    last = frames_to_float(frames[:, t - 1])
    metrics = {
        "val/loss": sum(losses) / len(starts),
        "val/psnr_1step": psnr(pred, real).mean().item(),
        "val/psnr_copy_last": psnr(last, real).mean().item(),
    }
    n = min(8, len(pred))
    # Rows of [last context | real next | dreamed next], as uint8 [3, H * n, W * 3].
    grid = torch.cat([torch.cat([last[:n], real[:n], pred[:n]], dim=3)], dim=0)
    grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 0, 2, 3).flatten(1, 2)
    return metrics, grid


def train_world_model(cfg: WorldModelTrainConfig) -> Path:
    """Train (or resume) a world model; returns the run directory (its `latest` is the final checkpoint)."""
    dist_info: DistInfo = init_distributed(cfg.device if cfg.device != "auto" else "cpu")
    try:
        return _train(cfg, dist_info)
    finally:
        shutdown_distributed()


def _train(cfg: WorldModelTrainConfig, dist_info: DistInfo) -> Path:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm

    device = resolve_device(cfg.device, dist_info)
    threads = configure_threads(cfg.threads, dist_info)
    run_dir = Path(cfg.out)
    ds = Dataset(cfg.dataset)
    train_idx, val_idx = ds.split(cfg.val_fraction, cfg.split_seed)
    train_idx, val_idx = _select_episodes(ds, train_idx, cfg), _select_episodes(ds, val_idx, cfg)
    if not train_idx:
        raise ValueError(f"{ds.root}: no training episodes after filtering (tasks={cfg.tasks}, kinds={cfg.kinds})")
    store = EpisodeStore(ds, train_idx, device)
    val_store = EpisodeStore(ds, val_idx, device) if val_idx else None

    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    seed_everything(cfg.seed)
    if ckpt is not None:
        state, saved = load_checkpoint(ckpt, map_location=device, kind=KIND)
        model_cfg = WorldModelConfig.from_dict(saved["model"])
    else:
        model_cfg = preset_config(
            cfg.size,
            image_size=ds.image_size,
            context_frames=cfg.context_frames,
            action_dim=ds.action_dim,
            sampling_steps=cfg.sampling_steps,
            quantize=cfg.quantize,
            **dict(cfg.model_overrides),
        )
    model = WorldModel(model_cfg).to(device)
    if cfg.channels_last and device == "cpu":
        model.use_channels_last()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    step, elapsed_before = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(state)
        ts = load_training_state(ckpt)
        if ts is not None:
            step = restore_training_state(ts, opt, sched, restore_rng=False)
            elapsed_before = float(ts.extra.get("elapsed_s", 0.0))
    loss_module = _LossModule(model)
    if dist_info.enabled:
        loss_module = DistributedDataParallel(loss_module)

    autocast_device = "cuda" if device.startswith("cuda") else "cpu"

    def autocast():
        return torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=cfg.bf16)

    dataset_info = {
        "path": str(ds.root.absolute()),
        "manifest_sha256": manifest_hash(ds.root),
        "tasks": ds.tasks,
        "num_transitions": ds.num_transitions,
        "train_episodes": len(train_idx),
        "val_episodes": val_idx,
        "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction,
    }
    train_info = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dataset", "out")}

    def save(step: int, elapsed: float) -> Path:
        ts = capture_training_state(step, opt, sched, extra={"elapsed_s": elapsed}, include_rng=False)
        config = model.checkpoint_config(dataset=dataset_info, training=train_info, step=step)
        return save_run_checkpoint(run_dir, step, model.state_dict(), config, ts, keep=cfg.keep)

    writer = None
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)
        writer.add_text(
            "config", "```\n" + json.dumps(model.checkpoint_config(training=train_info), indent=1) + "\n```"
        )
        print(
            f"[world-model] {ds.root}: {len(train_idx)} train / {len(val_idx)} val episodes, "
            f"{store.num_frames} train frames; model {count_parameters(model) / 1e6:.2f}M params; "
            f"device {device}, {threads} threads, world size {dist_info.world_size}, bf16 {cfg.bf16}, "
            f"tcmalloc {tcmalloc_active()}" + (f"; resuming {ckpt.name} at step {step}" if ckpt else ""),
            flush=True,
        )

    horizon = max(1, cfg.rollout_steps)
    t_ctx = model_cfg.context_frames
    start = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (dist_info.is_main and cfg.progress), desc="world-model")
    last_saved = step
    window_t, window_n = time.monotonic(), 0
    while step < cfg.steps:
        g_cpu = torch.Generator().manual_seed(derive_seed(cfg.seed, dist_info.rank, step, "batch"))
        g_dev = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, dist_info.rank, step, "noise"))
        starts = store.sample_starts(cfg.batch_size, horizon, g_cpu)
        frames, actions = store.gather(starts, t_ctx, horizon)
        with autocast():
            loss = loss_module(frames, actions, g_dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        window_n += cfg.batch_size
        elapsed = elapsed_before + time.monotonic() - start
        stop = cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60
        if dist_info.enabled:  # every rank stops at the same step
            flag = torch.tensor([1.0 if stop else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"world-model loss is {loss.item()} at step {step}")
        if dist_info.is_main:
            bar.update(1)
            if step % cfg.log_every == 0 or step == 1:
                now = time.monotonic()
                rate = window_n * dist_info.world_size / max(now - window_t, 1e-9)
                window_t, window_n = now, 0
                bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{rate:.1f}")
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
                writer.add_scalar("train/samples_per_s", rate, step)
            final = step >= cfg.steps or stop
            if val_store is not None and (step % cfg.val_every == 0 or final):
                metrics, grid = _validate(model, val_store, cfg, device, autocast)
                for k, v in metrics.items():
                    writer.add_scalar(k, v, step)
                writer.add_image("val/last_real_dreamed", grid, step)
                bar.write(f"[world-model] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if step % cfg.ckpt_every == 0 or final:
                save(step, elapsed)
                last_saved = step
            writer.flush()
        if stop:
            break
    if dist_info.is_main and last_saved != step:
        save(step, elapsed_before + time.monotonic() - start)
    bar.close()
    if writer is not None:
        writer.close()
    if dist_info.enabled:
        dist.barrier()
    return run_dir

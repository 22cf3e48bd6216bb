"""Training of the diffusion world model: its batches, loss and validation for the one loop (world4rl_model.harness).

Run it through the CLI (`world4rl train world-model DATASET --out RUN`), directly, or under
`torchrun --nproc_per_node N` (each rank draws its own batches; DDP averages gradients; rank 0
validates, logs and checkpoints). Batches are drawn from generators seeded by (seed, rank, step),
so a resumed run continues exactly where an uninterrupted one would have been.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from world4rl_model.checkpoint import load_config
from world4rl_model.config import meta
from world4rl_model.data import EpisodeStore
from world4rl_model.dataset import Dataset, manifest_hash
from world4rl_model.harness import Component, Harness, LoopSettings
from world4rl_model.runtime import derive_seed, tcmalloc_active
from world4rl_model.world_model import (
    KIND,
    WorldModel,
    WorldModelConfig,
    count_parameters,
    frames_to_float,
    pooled_psnr,
    preset_config,
    psnr,
)


@dataclass
class WorldModelTrainConfig:
    """World-model training settings (`world4rl train world-model --help` lists them)."""

    # dataset directory (with manifest.json)
    dataset: str = field(metadata=meta(positional=True, metavar="DATASET"))
    out: str  # run directory: checkpoints step_*/, a 'latest' pointer, TensorBoard logs in tb/
    size: Literal["tiny", "small", "default", "medium", "diamond"] = "default"  # model size preset
    # U-Net widths per level (None: the size preset's), e.g. --channels 32 64 64
    channels: list[int] | None = None
    space_to_depth: int | None = None  # pixel-unshuffle factor before the U-Net, 1, 2 or 4 (None: the preset's)
    context_frames: int = 4  # frames (and actions) of history the next frame is conditioned on, T
    steps: int = 20_000  # total optimiser steps (a resumed run continues up to this)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    max_cpu_minutes: float | None = None  # stop after this much CPU time (all threads), resumes included
    batch_size: int = 32  # batch size per process
    lr: float = 3e-4  # learning rate (AdamW)
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up steps
    grad_clip: float = 1.0  # gradient-norm clip
    rollout_steps: int = 1  # >1: DIAMOND-style training on L-step sequences that feed back own predictions
    sampling_steps: int = 2  # Euler denoising steps when sampling (world_model.py says why 2)
    # what the model diffuses: the next frame (DIAMOND) or its change from the last frame (a still
    # background is then exact instead of redrawn with grain by every sample)
    target: Literal["frame", "residual"] = "frame"
    quantize: bool = True  # round dreamed frames to 8 bits, as a camera would (DIAMOND)
    val_fraction: float = 0.1  # fraction of episodes held out (deterministic, by episode)
    split_seed: int = 0  # seed of the train/val split
    val_every: int = 500  # validate every N steps
    val_samples: int = 64  # held-out samples per validation
    # checkpoint every N steps
    checkpoint_every: int = field(default=1000, metadata=meta(aliases=("--ckpt-every",)))
    keep_checkpoints: int = 3  # checkpoints kept in OUT (older ones are deleted)
    log_every: int = 20  # log training scalars every N steps
    seed: int = 0  # random seed (model init and batches)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    bf16: bool = False  # bfloat16 autocast (CPU with AMX/AVX512-BF16, or CUDA)
    channels_last: bool = True  # channels-last (NHWC) activations on CPU (faster with oneDNN)
    threads: int | None = None  # torch threads per process (None: cores / local processes)
    tasks: list[str] | None = None  # task names to train on (None: all)
    kinds: list[str] | None = None  # episode kinds to train on, e.g. expert policy random (None: all)
    resume: bool = True  # continue from OUT/latest if OUT has checkpoints (--no-resume: start fresh)
    progress: bool = True  # show a progress bar
    # Other WorldModelConfig settings over the size preset's, e.g. {"unet": {"cond_dim": 64}}: presets and
    # Python only (channels and space_to_depth above are set over these).
    model_overrides: dict[str, Any] = field(default_factory=dict, metadata=meta(cli=False))

    def model_settings(self) -> dict[str, Any]:
        """The WorldModelConfig settings this run sets over its size preset (model_overrides, then
        channels and space_to_depth)."""
        unet = {**self.model_overrides.get("unet", {})}
        if self.channels is not None:
            unet["channels"] = list(self.channels)
        if self.space_to_depth is not None:
            unet["space_to_depth"] = self.space_to_depth
        return {**self.model_overrides, **({"unet": unet} if unet else {})}


def rollout_loss(
    model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The training loss over `frames.shape[1] - T` steps; later steps condition on the model's own frames."""
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


@dataclass
class EpisodeSplit:
    """A dataset's training and validation episodes (split by episode, then filtered by task and kind),
    in memory as EpisodeStores: what the world model and the reward classifier train and validate on."""

    dataset: Dataset
    train: list[int]
    val: list[int]
    store: EpisodeStore
    val_store: EpisodeStore | None

    @classmethod
    def load(cls, cfg: Any, device: str, kinds: list[str] | None = None) -> EpisodeSplit:
        """`cfg`'s dataset, val_fraction, split_seed and tasks."""
        ds = Dataset(cfg.dataset)
        train, val = ds.split(cfg.val_fraction, cfg.split_seed)
        train, val = ds.select(train, tasks=cfg.tasks, kinds=kinds), ds.select(val, tasks=cfg.tasks, kinds=kinds)
        if not train:
            raise ValueError(f"{ds.root}: no training episodes after filtering (tasks={cfg.tasks}, kinds={kinds})")
        return cls(ds, train, val, EpisodeStore(ds, train, device), EpisodeStore(ds, val, device) if val else None)

    def record(self, cfg: Any, **extra: Any) -> dict[str, Any]:
        """The checkpoint config's "dataset": what the run trained on and which episodes it held out."""
        ds = self.dataset
        return {
            "path": str(ds.root.absolute()),
            "manifest_sha256": manifest_hash(ds.root),
            "tasks": ds.tasks,
            **extra,
            "val_episodes": self.val,
            "split_seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
        }


def training_record(cfg: Any) -> dict[str, Any]:
    """The checkpoint config's "training": the trainer's settings but the dataset and run paths."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dataset", "out")}


class EpisodeSplitComponent(Component):
    """A harness component trained on an EpisodeSplit of its config's dataset (the world model, the
    reward classifier): sets cfg, harness, batch_size, split, store / val_store and train_info;
    `autocast()` is bf16 when cfg.bf16, on the harness's device type."""

    ddp = True

    def __init__(self, cfg: Any, harness: Harness, kinds: list[str] | None = None):
        self.cfg, self.harness = cfg, harness
        self.batch_size = cfg.batch_size
        self.split = EpisodeSplit.load(cfg, harness.device, kinds=kinds)
        self.store, self.val_store = self.split.store, self.split.val_store
        self.autocast_device = "cuda" if harness.device.startswith("cuda") else "cpu"
        self.bf16 = bool(cfg.bf16)
        self.train_info = training_record(cfg)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.autocast_device, dtype=torch.bfloat16, enabled=self.cfg.bf16)


@torch.no_grad()
def _validate(
    model: WorldModel, store: EpisodeStore, cfg: WorldModelTrainConfig, device: str, autocast: Any
) -> tuple[dict[str, float], torch.Tensor]:
    t = model.config.context_frames
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "val"))
    starts = store.sample_starts(cfg.val_samples, 1, g)
    frames, actions = store.gather(starts, t, 1)
    model.eval()
    # The same next frames dreamt after another sample's last action (same noise): how much the
    # model's prediction owes to the action (evaluation.action_gain over one step).
    other = actions[:, :t].clone()
    other[:, -1] = actions[:, t - 1].roll(len(starts) // 2, dims=0)
    gdev = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "val-noise"))
    sample_seed = derive_seed(cfg.seed, "val-sample")
    losses, preds, swapped = [], [], []
    for i in range(0, len(starts), cfg.batch_size):
        f, a, o = frames[i : i + cfg.batch_size], actions[i : i + cfg.batch_size], other[i : i + cfg.batch_size]
        with autocast():
            losses.append(model.loss(f[:, :t], a[:, :t], f[:, t], generator=gdev).item() * len(f))
            for acts, out in ((a[:, :t], preds), (o, swapped)):
                g = torch.Generator(device=device).manual_seed(sample_seed + i)
                out.append(model.sample(f[:, :t], acts, generator=g))
    model.train()
    pred = torch.cat(preds).float()
    real = frames_to_float(frames[:, t])
    last = frames_to_float(frames[:, t - 1])
    metrics = {
        "val/loss": sum(losses) / len(starts),
        "val/psnr_1step": psnr(pred, real).mean().item(),
        "val/psnr_copy_last": psnr(last, real).mean().item(),
        "val/action_gain_db": pooled_psnr(pred, real) - pooled_psnr(torch.cat(swapped).float(), real),
    }
    n = min(8, len(pred))
    # Rows of [last context | real next | dreamed next], as uint8 [3, H * n, W * 3].
    grid = torch.cat([torch.cat([last[:n], real[:n], pred[:n]], dim=3)], dim=0)
    grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 0, 2, 3).flatten(1, 2)
    return metrics, grid


def train_world_model(cfg: WorldModelTrainConfig) -> Path:
    """Train (or resume) a world model; returns the run directory (its `latest` is the final checkpoint)."""
    with Harness(LoopSettings.from_config(cfg)) as harness:
        harness.fit(_WorldModelTraining(cfg, harness))
    return Path(cfg.out)


class _WorldModelTraining(EpisodeSplitComponent):
    """The world model for the harness: batches of (frames, actions, noise generator), the diffusion loss."""

    name = "world-model"
    kind = KIND
    progress_tags = ("train/loss", "train/samples_per_s")

    def __init__(self, cfg: WorldModelTrainConfig, harness: Harness):
        super().__init__(cfg, harness, kinds=cfg.kinds)
        device, split, ds = harness.device, self.split, self.split.dataset
        self.model = _build_model(cfg, ds, harness)
        self.horizon = max(1, cfg.rollout_steps)
        self.dataset_info = split.record(cfg, num_transitions=ds.num_transitions, train_episodes=len(split.train))
        if harness.is_main:
            print(
                f"[world-model] {ds.root}: {len(split.train)} train / {len(split.val)} val episodes, "
                f"{self.store.num_frames} train frames; model {count_parameters(self.model) / 1e6:.2f}M params; "
                f"device {device}, {harness.threads} threads, world size {harness.dist.world_size}, bf16 {cfg.bf16}, "
                f"tcmalloc {tcmalloc_active()}{harness.resuming()}",
                flush=True,
            )

    def optimizer(self) -> torch.optim.Optimizer:
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.lr)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        g_cpu = self.harness.generator(step, "batch")
        g_dev = self.harness.generator(step, "noise", self.harness.device)
        starts = self.store.sample_starts(self.cfg.batch_size, self.horizon, g_cpu)
        frames, actions = self.store.gather(starts, self.model.config.context_frames, self.horizon)
        return frames, actions, g_dev

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Generator]) -> tuple[torch.Tensor, dict[str, Any]]:
        frames, actions, generator = batch
        with self.autocast():
            loss = rollout_loss(self.model, frames, actions, generator)
        return loss, {"train/loss": loss.detach()}

    def validate(self, step: int) -> dict[str, Any]:
        if self.val_store is None:
            return {}
        metrics, grid = _validate(self.model, self.val_store, self.cfg, self.harness.device, self.autocast)
        return {**metrics, "val/last_real_dreamed": grid}

    def checkpoint_config(self, step: int) -> dict[str, Any]:
        return self.model.checkpoint_config(dataset=self.dataset_info, training=self.train_info, step=step)


def _build_model(cfg: WorldModelTrainConfig, ds: Dataset, harness: Harness) -> WorldModel:
    """The run's model: the latest checkpoint's when resuming, else the preset for this dataset."""
    if harness.checkpoint is not None:  # its architecture; the harness loads its weights
        model_cfg = WorldModelConfig.from_dict(load_config(harness.checkpoint)["model"])
    else:
        model_cfg = preset_config(
            cfg.size,
            image_size=ds.image_size,
            context_frames=cfg.context_frames,
            action_dim=ds.action_dim,
            sampling_steps=cfg.sampling_steps,
            quantize=cfg.quantize,
            **{"target": cfg.target, **cfg.model_settings()},
        )
    model = WorldModel(model_cfg).to(harness.device)
    if cfg.channels_last and harness.device == "cpu":
        model.use_channels_last()
    return model

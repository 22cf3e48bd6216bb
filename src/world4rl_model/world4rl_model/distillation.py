"""One-step distillation of a world model: a (smaller) student that samples in one network evaluation.

Direct one-step distillation (Luhman & Luhman 2021, the deterministic core of consistency and
progressive distillation): the teacher samples the next frame from starting noise x_T = sigma_max z
with its own Euler sampler (default: the teacher's steps and sigma_min), and the student learns to
map the same (z, context frames, context actions) to that sample in one denoiser call,
D_student(x_T; sigma_max), by mean squared error, plus by default an equal MSE to the real next
frame. One Euler step from sigma_max to 0 lands exactly on that call (WorldModel.sample with
steps=1), so the student is an ordinary world model whose checkpoint says sampling_steps 1:
WorldModel.from_checkpoint, WorldModelEnv, PPO and `world4rl eval world-model` use it unchanged, and
each checkpoint carries its own sampler. Its config also records `distilled_from` (the teacher's
path, sha256 of its weights, step and the sampler it was distilled from).

The data is the teacher's: its dataset, its held-out episodes (split seed and fraction), so that a
student's evaluation on "val" is on the same episodes as the teacher's. `real_weight` weighs the
MSE to the real next frame (1 by default; 0: pure distillation, which fell short). A deterministic
one-step student regresses towards the mean, which PSNR rewards and SSIM and the look of the dreams
do not: they are blurrier (docs/results.md#one-step-distilled-student).

    world4rl train distill TEACHER --out RUN [--size small --channels 32 64] [--max-cpu-minutes 60]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from world4rl_model.checkpoint import CheckpointError, checkpoint_fingerprint, load_config
from world4rl_model.config import meta
from world4rl_model.harness import Harness, LoopSettings
from world4rl_model.runtime import derive_seed, tcmalloc_active
from world4rl_model.training import EpisodeSplitComponent
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
class DistillConfig:
    """One-step distillation settings (`world4rl train distill --help` lists them)."""

    # the teacher: a world-model checkpoint directory or run directory (follows 'latest')
    teacher: str = field(metadata=meta(positional=True, metavar="TEACHER"))
    out: str  # run directory of the student: checkpoints step_*/, a 'latest' pointer, TensorBoard logs in tb/
    dataset: str | None = None  # dataset directory (None: the one recorded in the teacher's checkpoint)
    size: Literal["tiny", "small", "default", "medium", "diamond"] = "small"  # the student's size preset
    # the student's U-Net widths per level (None: the size preset's), e.g. --channels 32 64
    channels: list[int] | None = None
    space_to_depth: int | None = None  # the student's pixel-unshuffle factor (None: the preset's)
    teacher_steps: int | None = None  # the teacher's Euler steps for the targets (None: its own sampling_steps)
    teacher_sigma_min: float | None = None  # the teacher's last-step sigma for the targets (None: its own)
    # weight of an extra MSE to the real next frame (0: pure distillation; 1 met the teacher's PSNR in
    # docs/results.md#one-step-distilled-student, pure distillation fell 0.6-1.1 dB short)
    real_weight: float = 1.0
    steps: int = 20_000  # total optimiser steps (a resumed run continues up to this)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    max_cpu_minutes: float | None = None  # stop after this much CPU time (all threads), resumes included
    batch_size: int = 32  # batch size
    lr: float = 5e-4  # learning rate (AdamW)
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up steps
    # after the warm-up: a constant learning rate, or a cosine decay to lr * final_lr_fraction at `steps`
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    final_lr_fraction: float = 0.05  # the cosine schedule's last learning rate, as a fraction of lr
    grad_clip: float = 1.0  # gradient-norm clip
    tasks: list[str] | None = None  # task names to train on (None: the teacher's)
    val_fraction: float | None = None  # fraction of episodes held out (None: the teacher's split)
    split_seed: int | None = None  # seed of the train/val split (None: the teacher's)
    val_every: int = 500  # validate every N steps
    val_samples: int = 64  # held-out samples per validation
    # checkpoint every N steps
    checkpoint_every: int = field(default=500, metadata=meta(aliases=("--ckpt-every",)))
    keep_checkpoints: int = 3  # checkpoints kept in OUT (older ones are deleted)
    log_every: int = 20  # log training scalars every N steps
    seed: int = 0  # random seed (student init, batches, noise)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    bf16: bool = False  # bfloat16 autocast (CPU with AMX/AVX512-BF16, or CUDA), teacher and student
    channels_last: bool = True  # channels-last (NHWC) activations on CPU (faster with oneDNN)
    threads: int | None = None  # torch threads (None: the cores)
    resume: bool = True  # continue from OUT/latest if OUT has checkpoints (--no-resume: start fresh)
    progress: bool = True  # show a progress bar


def teacher_config(path: str) -> dict[str, Any]:
    """The teacher checkpoint's config.json; a ValueError naming `path` if it is not a world model."""
    try:
        config = load_config(path)
    except CheckpointError as e:
        raise ValueError(f"distillation teacher {path!r} cannot be read: {e}") from None
    if config.get("kind") != KIND:
        raise ValueError(f"distillation teacher {path!r} is a {config.get('kind')!r} checkpoint, not a {KIND!r}")
    return config


def resolve_config(cfg: DistillConfig, teacher: dict[str, Any]) -> DistillConfig:
    """`cfg` with the settings left to the teacher (dataset, split, tasks, sampler) filled in from its config."""
    data, training, model = teacher.get("dataset", {}), teacher.get("training", {}), teacher["model"]
    values = {
        "dataset": cfg.dataset or data.get("path"),
        "val_fraction": cfg.val_fraction if cfg.val_fraction is not None else data.get("val_fraction", 0.1),
        "split_seed": cfg.split_seed if cfg.split_seed is not None else data.get("split_seed", 0),
        "tasks": cfg.tasks if cfg.tasks is not None else training.get("tasks"),
        "teacher_steps": cfg.teacher_steps or model["sampling_steps"],
        "teacher_sigma_min": cfg.teacher_sigma_min or model["sigma_min"],
    }
    if not values["dataset"]:
        raise ValueError(f"distillation teacher {cfg.teacher!r} records no dataset: pass --dataset")
    if cfg.teacher_steps is not None and cfg.teacher_steps < 1:
        raise ValueError(f"--teacher-steps must be >= 1, got {cfg.teacher_steps}")
    return dataclasses.replace(cfg, **values)


def student_config(cfg: DistillConfig, teacher: WorldModelConfig) -> WorldModelConfig:
    """The teacher's frames, actions, sigmas and target; the student's U-Net; one sampling step."""
    unet: dict[str, Any] = {}
    if cfg.channels is not None:
        unet["channels"] = list(cfg.channels)
    if cfg.space_to_depth is not None:
        unet["space_to_depth"] = cfg.space_to_depth
    keep = ("image_size", "context_frames", "action_dim", "num_bins", "target", "action_input", "quantize")
    keep += ("sigma_data", "train_sigma_loc", "train_sigma_scale", "sigma_offset_noise", "sigma_max", "rho")
    inherited = {k: getattr(teacher, k) for k in keep}
    return preset_config(
        cfg.size, unet=unet, sampling_steps=1, **{**inherited, "sigma_min": cfg.teacher_sigma_min or teacher.sigma_min}
    )


def learning_rate(cfg: DistillConfig, step: int) -> float:
    """The learning rate of 0-based step `step`: linear warm-up, then constant or cosine to the final fraction."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "constant":
        return lr
    f = cfg.final_lr_fraction
    return lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, cfg.steps)))))


def train_distill(cfg: DistillConfig) -> Path:
    """Distill (or resume distilling) a one-step student; returns the run directory (`latest`: the final checkpoint)."""
    cfg = resolve_config(cfg, teacher_config(cfg.teacher))
    with Harness(LoopSettings.from_config(cfg, warmup_steps=None)) as harness:  # the LR: learning_rate()
        harness.fit(_Distillation(cfg, harness))
    return Path(cfg.out)


class _Distillation(EpisodeSplitComponent):
    """The student for the harness: batches of (frames, actions, noise, teacher samples), the distillation MSE."""

    name = "distill"
    kind = KIND
    progress_tags = ("train/loss", "train/samples_per_s")

    def __init__(self, cfg: DistillConfig, harness: Harness):
        super().__init__(cfg, harness)
        device, split, ds = harness.device, self.split, self.split.dataset
        self.teacher, self.teacher_record = _load_teacher(cfg, harness)
        self.model = _build_student(cfg, self.teacher.config, harness)
        self.dataset_info = split.record(cfg, num_transitions=ds.num_transitions, train_episodes=len(split.train))
        self._val_teacher: torch.Tensor | None = None
        if harness.is_main:
            print(
                f"[distill] teacher {self.teacher_record['path']} (step {self.teacher_record['step']}, "
                f"{count_parameters(self.teacher) / 1e6:.2f}M params, {cfg.teacher_steps} steps to sigma_min "
                f"{cfg.teacher_sigma_min:g}) -> 1-step student {count_parameters(self.model) / 1e6:.2f}M params; "
                f"{ds.root}: {len(split.train)} train / {len(split.val)} val episodes; device {device}, "
                f"{harness.threads} threads, bf16 {cfg.bf16}, tcmalloc {tcmalloc_active()}{harness.resuming()}",
                flush=True,
            )

    def optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self._optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr)
        return self._optimizer

    def batch(self, step: int) -> dict[str, Any]:
        lr = learning_rate(self.cfg, step)  # the schedule is the step's: the same on resume
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        g_cpu = self.harness.generator(step, "batch")
        g_dev = self.harness.generator(step, "noise", self.harness.device)
        t = self.model.config.context_frames
        starts = self.store.sample_starts(self.cfg.batch_size, 1, g_cpu)
        frames, actions = self.store.gather(starts, t, 1)
        return {**self._targets(frames, actions, g_dev), "lr": lr}

    @torch.no_grad()
    def _targets(self, frames: torch.Tensor, actions: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """The batch with its starting noise and the teacher's (unquantised) samples from it."""
        t, c = self.model.config.context_frames, self.model.config
        context, acts = frames_to_float(frames[:, :t]), actions[:, :t]
        noise = torch.randn((len(frames), 3, c.image_size, c.image_size), device=frames.device, generator=generator)
        with self.autocast():
            target = self.teacher.sample(context, acts, steps=self.cfg.teacher_steps, quantize=False, noise=noise)
        return {"context": context, "actions": acts, "noise": noise, "teacher": target.float(), "real": frames[:, t]}

    def student_frames(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's one-step prediction (float, unquantised, not clamped) for the batch's noise."""
        m = self.model
        x = batch["noise"] * m.config.sigma_max
        sigma = torch.full((len(x),), m.config.sigma_max, device=x.device)
        with self.autocast():
            out = m(x, sigma, batch["context"], batch["actions"])
        return m._to_frame(out.float(), batch["context"])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        pred = self.student_frames(batch)
        loss = F.mse_loss(pred, batch["teacher"])
        logs: dict[str, Any] = {"train/distill_mse": loss.detach()}
        if self.cfg.real_weight:
            real_mse = F.mse_loss(pred, frames_to_float(batch["real"]).float())
            loss = loss + self.cfg.real_weight * real_mse
            logs["train/real_mse"] = real_mse.detach()
        logs["train/loss"] = loss.detach()
        if "lr" in batch:
            logs["train/lr"] = batch["lr"]
        return loss, logs

    def validate(self, step: int) -> dict[str, Any]:
        if self.val_store is None:
            return {}
        self.model.eval()
        try:
            return _validate(self)
        finally:
            self.model.train()

    def checkpoint_config(self, step: int) -> dict[str, Any]:
        return self.model.checkpoint_config(
            dataset=self.dataset_info, training=self.train_info, step=step, distilled_from=self.teacher_record
        )


@torch.no_grad()
def _validate(c: _Distillation) -> dict[str, Any]:
    """Held-out MSE to the teacher's samples from the same noise, PSNR of student, teacher and copy-last
    against the real next frame, and an image of rows [last | real | teacher | student]."""
    cfg, t = c.cfg, c.model.config.context_frames
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "val"))
    starts = c.val_store.sample_starts(cfg.val_samples, 1, g)
    frames, actions = c.val_store.gather(starts, t, 1)
    gdev = torch.Generator(device=c.harness.device).manual_seed(derive_seed(cfg.seed, "val-noise"))
    batches = [c._targets(frames[i : i + cfg.batch_size], actions[i : i + cfg.batch_size], gdev)
               for i in range(0, len(starts), cfg.batch_size)]  # fmt: skip
    student = torch.cat([c.student_frames(b).clamp(-1, 1) for b in batches])
    teacher = torch.cat([b["teacher"] for b in batches])
    real, last = frames_to_float(frames[:, t]), frames_to_float(frames[:, t - 1])
    metrics = {
        "val/distill_mse": F.mse_loss(student, teacher).item(),
        "val/psnr_student_vs_teacher": psnr(student, teacher).mean().item(),
        "val/psnr_1step_student": psnr(student, real).mean().item(),
        "val/psnr_1step_teacher": psnr(teacher, real).mean().item(),
        "val/psnr_copy_last": psnr(last, real).mean().item(),
    }
    n = min(8, len(student))
    grid = torch.cat([last[:n], real[:n], teacher[:n], student[:n]], dim=3)
    grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 0, 2, 3).flatten(1, 2)
    return {**metrics, "val/last_real_teacher_student": grid}


def _load_teacher(cfg: DistillConfig, harness: Harness) -> tuple[WorldModel, dict[str, Any]]:
    """The frozen teacher with its target sampler, and the record of it for the student's config;
    a resumed run refuses a teacher whose weights changed."""
    fingerprint = checkpoint_fingerprint(cfg.teacher)
    teacher, _ = WorldModel.from_checkpoint(fingerprint.path, harness.device)
    teacher.config.sigma_min = cfg.teacher_sigma_min
    teacher.requires_grad_(False)
    if cfg.channels_last and harness.device == "cpu":
        teacher.use_channels_last()
    record = {
        "path": str(fingerprint.path),
        "sha256": fingerprint.sha256,
        "step": fingerprint.step,
        "sampling_steps": cfg.teacher_steps,
        "sigma_min": cfg.teacher_sigma_min,
    }
    if harness.checkpoint is not None:
        before = load_config(harness.checkpoint).get("distilled_from", {})
        if before.get("sha256") not in (None, record["sha256"]):
            raise ValueError(
                f"{harness.checkpoint} was distilled from {before.get('path')} (sha256 {before['sha256'][:12]}), "
                f"but the teacher {fingerprint} differs: use a new --out or the same teacher"
            )
    return teacher, record


def _build_student(cfg: DistillConfig, teacher: WorldModelConfig, harness: Harness) -> WorldModel:
    """The latest checkpoint's architecture when resuming (the harness loads its weights), else a new one."""
    if harness.checkpoint is not None:
        model_cfg = WorldModelConfig.from_dict(load_config(harness.checkpoint)["model"])
    else:
        model_cfg = student_config(cfg, teacher)
    model = WorldModel(model_cfg).to(harness.device)
    if cfg.channels_last and harness.device == "cpu":
        model.use_channels_last()
    return model

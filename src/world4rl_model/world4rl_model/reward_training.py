"""Training of the success classifier, with BCE on the dataset's per-frame success flags.

The labels are the dataset's per-frame success flags (sim: true success of each frame; real bags:
the episode label on the final frames). Positives are success frames (mostly from expert
episodes); negatives are the remaining frames, by default of every episode, optionally of
non-expert episodes only (`negatives="non-expert"`, the paper's "expert successes vs policy
failures"). Optionally part of each batch is world-model dreams (`reward_dreams`). After each
validation the report of `reward_report` is written next to the checkpoints.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from world4rl_model.checkpoint import load_config
from world4rl_model.config import meta
from world4rl_model.data import EpisodeStore
from world4rl_model.dataset import Dataset
from world4rl_model.harness import Harness, LoopSettings
from world4rl_model.reward import KIND, RewardClassifier, RewardConfig
from world4rl_model.reward_dreams import DreamPool, dreamed_pool
from world4rl_model.reward_report import evaluate_classifier, evaluate_on_dreams, report_markdown
from world4rl_model.runtime import derive_seed, tcmalloc_active
from world4rl_model.training import EpisodeSplitComponent
from world4rl_model.world_model import frames_to_float


@dataclass
class RewardTrainConfig:
    """Success-classifier training settings (`world4rl train reward --help` lists them)."""

    # dataset directory (with manifest.json)
    dataset: str = field(metadata=meta(positional=True, metavar="DATASET"))
    out: str  # run directory: checkpoints step_*/, a 'latest' pointer, TensorBoard logs in tb/, the report
    steps: int = 3000  # total optimiser steps (a resumed run continues up to this)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    batch_size: int = 64  # batch size
    lr: float = 1e-3  # learning rate (AdamW)
    weight_decay: float = 1e-4  # AdamW weight decay
    negatives: Literal["all", "non-expert"] = "all"  # failure frames from all episodes or non-expert ones
    balance: float = 0.5  # fraction of each batch drawn from success frames (0: natural frequency)
    augment_pad: int = 4  # random-shift augmentation in pixels (0: off)
    val_fraction: float = 0.2  # fraction of episodes held out (deterministic, by episode)
    split_seed: int = 0  # seed of the train/val split
    val_every: int = 500  # validate (and write the report) every N steps
    # checkpoint every N steps
    checkpoint_every: int = field(default=1000, metadata=meta(aliases=("--ckpt-every",)))
    keep_checkpoints: int = 2  # checkpoints kept in OUT (older ones are deleted)
    log_every: int = 20  # log training scalars every N steps
    seed: int = 0  # random seed (model init and batches)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    bf16: bool = False  # bfloat16 autocast (CPU with AMX/AVX512-BF16, or CUDA)
    threads: int | None = None  # torch threads (None: the cores)
    tasks: list[str] | None = None  # task names to train on (None: all)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])  # conv widths, e.g. 32 64 64 128
    # Also train on this world model's open-loop dreams of the training episodes, labelled with what
    # really happened (the classifier then judges dreams as PPO will show them; see `dreamed_pool`).
    dream_world_model: str | None = field(default=None, metadata=meta(aliases=("--dreams-from",)))
    dream_fraction: float = 0.5  # share of each batch that is dreamed
    dream_horizon: int = 10  # open-loop steps per dream
    dream_stride: int = 5  # steps between the starts of dreams in an episode
    dream_sampling_steps: int | None = None  # world-model Euler steps of the dreams (None: its own)
    resume: bool = True  # continue from OUT/latest if OUT has checkpoints (--no-resume: start fresh)
    progress: bool = True  # show a progress bar


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ augmentation: replicate-pad by `pad` and crop back at a random offset per image."""
    if pad <= 0:
        return frames
    b, _, h, w = frames.shape
    x = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").tolist()
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").tolist()
    return torch.stack([x[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(b)])


def _frame_pools(store: EpisodeStore, ds: Dataset, negatives: str) -> tuple[torch.Tensor, torch.Tensor]:
    pos = store.success.nonzero().flatten()
    neg_mask = ~store.success
    if negatives == "non-expert":
        kinds = torch.tensor(
            [ds.episodes[i]["kind"] != "expert" for i in store.episode_indices], device=store.frames.device
        )
        neg_mask &= kinds[store.frame_episode]
    elif negatives != "all":
        raise ValueError(f"negatives must be 'all' or 'non-expert', got {negatives!r}")
    return pos, neg_mask.nonzero().flatten()


def train_reward(cfg: RewardTrainConfig) -> Path:
    """Train (or resume) the success classifier; returns the run directory (report.json/md: the last validation)."""
    with Harness(LoopSettings.from_config(cfg)) as harness:
        training = _RewardTraining(cfg, harness)
        harness.fit(training)
        if harness.is_main:
            training.finish()
    return Path(cfg.out)


def _draw(pool: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """`n` entries of `pool` drawn with replacement."""
    return pool[torch.randint(len(pool), (n,), generator=g).to(pool.device)]


def _balanced(pos: torch.Tensor, neg: torch.Tensor, n: int, balance: float, g: torch.Generator) -> torch.Tensor:
    """`n` frame indices, round(n * balance) of them from `pos` (balance 0: from both at their natural rate)."""
    if balance > 0:
        n_pos = round(n * balance)
        return torch.cat([_draw(pos, n_pos, g), _draw(neg, n - n_pos, g)])
    return _draw(torch.cat([pos, neg]), n, g)


class _RewardTraining(EpisodeSplitComponent):
    """The classifier for the harness: balanced (and partly dreamed) batches of frames, BCE on success."""

    name = "reward"
    kind = KIND
    progress_tags = ("train/loss", "train/accuracy_balanced_batch")

    def __init__(self, cfg: RewardTrainConfig, harness: Harness):
        super().__init__(cfg, harness)
        split, ds = self.split, self.split.dataset
        self.pos, self.neg = _frame_pools(self.store, ds, cfg.negatives)
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError(
                f"{ds.root}: the reward classifier needs success and failure frames; training split has "
                f"{len(self.pos)} success and {len(self.neg)} failure frames"
            )
        self.model = _build_classifier(cfg, ds, harness)
        self.dreams = None
        if cfg.dream_world_model and cfg.dream_fraction > 0:
            self.dreams = self._dreams(self.store, "dreams", progress=harness.is_main)
            self.dream_pools = self.dreams.pools()
            if len(self.dream_pools[0]) == 0 or len(self.dream_pools[1]) == 0:
                raise ValueError(
                    f"{cfg.dream_world_model}: the dreams of {ds.root}'s training episodes have "
                    f"{len(self.dream_pools[0])} success and {len(self.dream_pools[1])} failure frames; the "
                    "classifier needs both"
                )
        self.report: dict[str, Any] | None = None
        self.dataset_info = split.record(cfg)
        if harness.is_main:
            print(
                f"[reward] {ds.root}: {len(split.train)} train / {len(split.val)} val episodes; {len(self.pos)} "
                f"success and {len(self.neg)} failure frames ({cfg.negatives}); tasks {ds.tasks}; device "
                f"{harness.device}; tcmalloc {tcmalloc_active()}{harness.resuming()}",
                flush=True,
            )

    def _dreams(self, store: EpisodeStore, seed_tag: str, progress: bool = False) -> DreamPool:
        """The dream world model's open-loop dreams of `store`'s episodes."""
        cfg = self.cfg
        return dreamed_pool(
            cfg.dream_world_model,
            store,
            cfg.dream_horizon,
            cfg.dream_stride,
            cfg.dream_sampling_steps,
            cfg.bf16,
            derive_seed(cfg.seed, seed_tag),
            progress=progress,
        )

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, store = self.cfg, self.store
        g = self.harness.generator(step, "batch")
        idx = _balanced(self.pos, self.neg, cfg.batch_size, cfg.balance, g)
        images, label, task = store.frames[idx], store.success[idx], store.task[idx]
        if self.dreams is not None:
            # Replace the first part of the batch by dreams, balanced the same way.
            dreams = self.dreams
            n_dream = round(cfg.batch_size * cfg.dream_fraction)
            if cfg.balance > 0:
                didx = _balanced(*self.dream_pools, n_dream, cfg.balance, g)
            else:
                didx = torch.randint(len(dreams.success), (n_dream,), generator=g).to(dreams.success.device)
            keep = torch.randperm(cfg.batch_size, generator=g)[: cfg.batch_size - n_dream].to(idx.device)
            images = torch.cat([dreams.frames[didx], images[keep]])
            label = torch.cat([dreams.success[didx], label[keep]])
            task = torch.cat([dreams.task[didx], task[keep]])
        frames = random_shift(frames_to_float(images), cfg.augment_pad, g)
        return frames, task, label.float()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        frames, task, label = batch
        with self.autocast():
            logits = self.model(frames, task)
        loss = F.binary_cross_entropy_with_logits(logits.float(), label)
        acc = ((logits.detach() > 0).float() == label).float().mean()
        return loss, {"train/loss": loss.detach(), "train/accuracy_balanced_batch": acc}

    def validate(self, step: int) -> dict[str, Any]:
        if self.val_store is None:
            return {}
        self.report = evaluate_classifier(self.model, self.val_store)
        self.model.train()
        self._write_report()
        keys = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "ece", "bce")
        return {f"val/{k}": self.report["frames"][k] for k in keys}

    def _write_report(self) -> None:
        run_dir = Path(self.cfg.out)
        (run_dir / "report.json").write_text(json.dumps(self.report, indent=1) + "\n")
        (run_dir / "report.md").write_text(report_markdown(self.report))

    def checkpoint_config(self, step: int) -> dict[str, Any]:
        extra = {"dataset": self.dataset_info, "training": self.train_info, "step": step}
        if self.report is not None:
            extra["val_report"] = {"frames": {k: v for k, v in self.report["frames"].items() if k != "reliability"}}
        return self.model.checkpoint_config(**extra)

    def finish(self) -> None:
        """After training: how the classifier judges the world model's dreams of held-out episodes (what PPO
        will see), added to the report, which is printed."""
        if self.report is None:
            return
        if self.dreams is not None and self.val_store is not None:
            try:
                dreams = self._dreams(self.val_store, "val-dreams")
            except ValueError as e:  # held-out episodes all shorter than the dream horizon: a note, not a failure
                print(f"[reward] no evaluation on dreamed frames: {e}", file=sys.stderr, flush=True)
            else:
                self.report["dreamed_frames"] = evaluate_on_dreams(self.model, dreams)
                self._write_report()
        print(report_markdown(self.report), flush=True)


def _build_classifier(cfg: RewardTrainConfig, ds: Dataset, harness: Harness) -> RewardClassifier:
    """The run's classifier: the latest checkpoint's when resuming, else a new one for the dataset's tasks."""
    ckpt = harness.checkpoint
    if ckpt is not None:  # its architecture; the harness loads its weights
        rcfg = RewardConfig(**load_config(ckpt)["model"])
        if rcfg.tasks != ds.tasks:
            raise ValueError(f"{ckpt}: trained on tasks {rcfg.tasks}, dataset now has {ds.tasks}; use a new --out")
    else:
        rcfg = RewardConfig(image_size=ds.image_size, tasks=list(ds.tasks), channels=list(cfg.channels))
    return RewardClassifier(rcfg).to(harness.device)

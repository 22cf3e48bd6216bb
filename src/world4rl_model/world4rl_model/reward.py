"""Success reward: a small CNN that predicts task success from one frame, trained with BCE.

World4RL rewards imagined rollouts with a binary success classifier on the next frame. Here the
labels are the dataset's per-frame success flags (sim: true success of each frame; real bags:
the episode label on the final frames). Positives are success frames (mostly from expert
episodes); negatives are the remaining frames, by default of every episode, optionally of
non-expert episodes only (`negatives="non-expert"`, the paper's "expert successes vs policy
failures"). The classifier is multi-task: the task (index into the manifest's sorted task list)
is a one-hot input next to the pooled image features, because the same picture can be a success
for one task (reach) and not for another (push).

After training, `evaluate_classifier` reports accuracy, precision, recall, F1, and calibration
(a 10-bin reliability table and the expected calibration error) on held-out episodes, per frame
and per episode (does the classifier fire in successful episodes and stay silent in failed ones).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from world4rl_model.checkpoint import load_checkpoint, load_config
from world4rl_model.data import EpisodeStore
from world4rl_model.dataset import Dataset
from world4rl_model.harness import Component, Harness, LoopSettings
from world4rl_model.runtime import derive_seed, tcmalloc_active
from world4rl_model.training import EpisodeSplit, training_record
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


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ augmentation: replicate-pad by `pad` and crop back at a random offset per image."""
    if pad <= 0:
        return frames
    b, _, h, w = frames.shape
    x = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").tolist()
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").tolist()
    return torch.stack([x[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(b)])


# ---------------------------------------------------------------------------------------------
# Evaluation: accuracy and calibration


def calibration_report(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5, bins: int = 10) -> dict:
    prob, label = prob.float().cpu(), label.bool().cpu()
    pred = prob >= threshold
    tp = int((pred & label).sum())
    fp = int((pred & ~label).sum())
    fn = int((~pred & label).sum())
    tn = int((~pred & ~label).sum())
    n = len(prob)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    table, ece = [], 0.0
    edges = torch.linspace(0, 1, bins + 1)
    for i in range(bins):
        lo, hi = edges[i].item(), edges[i + 1].item()
        m = (prob >= lo) & ((prob < hi) if i < bins - 1 else (prob <= hi))
        count = int(m.sum())
        if count:
            conf = prob[m].mean().item()
            freq = label[m].float().mean().item()
            ece += count / n * abs(conf - freq)
        else:
            conf = freq = float("nan")
        table.append({"bin": [round(lo, 2), round(hi, 2)], "count": count, "mean_prob": conf, "frac_success": freq})
    bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), label.float()).item() if n else float("nan")
    return {
        "n": n,
        "positives": int(label.sum()),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "balanced_accuracy": 0.5 * ((tp / (tp + fn) if tp + fn else 1.0) + (tn / (tn + fp) if tn + fp else 1.0)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "bce": bce,
        "ece": ece,
        "reliability": table,
        "threshold": threshold,
    }


@torch.no_grad()
def _probabilities(model: RewardClassifier, frames: torch.Tensor, task: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The classifier's success probability of every frame, in batches (on the CPU)."""
    model.eval()
    return torch.cat(
        [
            model.probability(frames[i : i + batch_size], task[i : i + batch_size])
            for i in range(0, len(frames), batch_size)
        ]
    ).cpu()


@torch.no_grad()
def evaluate_classifier(model: RewardClassifier, store: EpisodeStore, batch_size: int = 256) -> dict[str, Any]:
    """Per-frame and per-episode metrics of `model` on every frame of `store`'s episodes."""
    prob = _probabilities(model, store.frames, store.task, batch_size)
    label = store.success.cpu()
    report = {"frames": calibration_report(prob, label, model.config.threshold)}
    # Episode level: success predicted somewhere vs the episode having any success frame.
    ep_pred, ep_true = [], []
    for e in range(len(store)):
        s, n = int(store.offsets[e]), int(store.lengths[e])
        ep_pred.append(bool((prob[s : s + n] >= model.config.threshold).any()))
        ep_true.append(bool(label[s : s + n].any()))
    ep_pred_t, ep_true_t = torch.tensor(ep_pred), torch.tensor(ep_true)
    report["episodes"] = {
        "n": len(ep_pred),
        "accuracy": float((ep_pred_t == ep_true_t).float().mean()) if ep_pred else float("nan"),
        "successful_detected": int((ep_pred_t & ep_true_t).sum()),
        "successful": int(ep_true_t.sum()),
        "failed_false_alarm": int((ep_pred_t & ~ep_true_t).sum()),
        "failed": int((~ep_true_t).sum()),
    }
    tasks = model.config.tasks or ["task"]
    report["per_task"] = {}
    for ti, name in enumerate(tasks):
        m = (store.task.cpu() == ti) if model.config.tasks else torch.ones_like(label)
        if m.any():
            r = calibration_report(prob[m], label[m], model.config.threshold)
            report["per_task"][name] = {k: r[k] for k in ("n", "positives", "accuracy", "precision", "recall", "ece")}
    return report


@torch.no_grad()
def evaluate_on_dreams(model: RewardClassifier, pool: DreamPool, batch_size: int = 256) -> dict[str, Any]:
    """The classifier on dreamed frames against the real outcome: overall and per open-loop horizon."""
    prob = _probabilities(model, pool.frames, pool.task, batch_size)
    label, horizon = pool.success.cpu(), pool.horizon.cpu()
    report = {"frames": calibration_report(prob, label, model.config.threshold), "per_horizon": {}}
    for h in horizon.unique().tolist():
        m = horizon == h
        r = calibration_report(prob[m], label[m], model.config.threshold)
        report["per_horizon"][int(h)] = {k: r[k] for k in ("n", "positives", "accuracy", "precision", "recall")}
    return report


def _fmt(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    f = report["frames"]
    lines = [
        "## Reward classifier on held-out episodes",
        "",
        f"Frames: {f['n']} ({f['positives']} success), threshold {f['threshold']}",
        "",
        "| accuracy | balanced acc. | precision | recall | F1 | BCE | ECE |",
        "|---|---|---|---|---|---|---|",
        f"| {_fmt(f['accuracy'])} | {_fmt(f['balanced_accuracy'])} | {_fmt(f['precision'])} | {_fmt(f['recall'])} "
        f"| {_fmt(f['f1'])} | {_fmt(f['bce'])} | {_fmt(f['ece'])} |",
        "",
        "Reliability (predicted probability bin -> observed success frequency):",
        "",
        "| bin | frames | mean prob | frac success |",
        "|---|---|---|---|",
    ]
    for row in f["reliability"]:
        lines.append(
            f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['count']} | {_fmt(row['mean_prob'])} "
            f"| {_fmt(row['frac_success'])} |"
        )
    e = report["episodes"]
    lines += [
        "",
        f"Episodes: {e['n']}, accuracy {_fmt(e['accuracy'])}; successful episodes detected "
        f"{e['successful_detected']}/{e['successful']}, false alarms in failed episodes "
        f"{e['failed_false_alarm']}/{e['failed']}",
        "",
        "| task | frames | success frames | accuracy | precision | recall | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["per_task"].items():
        lines.append(
            f"| {name} | {r['n']} | {r['positives']} | {_fmt(r['accuracy'])} | {_fmt(r['precision'])} "
            f"| {_fmt(r['recall'])} | {_fmt(r['ece'])} |"
        )
    if "dreamed_frames" in report:
        d = report["dreamed_frames"]
        f = d["frames"]
        lines += [
            "",
            f"World-model dreams of the held-out episodes ({f['n']} frames, {f['positives']} where the real episode "
            "had succeeded): what PPO's reward sees",
            "",
            "| open-loop step | frames | success | accuracy | precision | recall |",
            "|---|---|---|---|---|---|",
        ]
        for h, r in [("all", f), *d["per_horizon"].items()]:
            lines.append(
                f"| {h} | {r['n']} | {r['positives']} | {_fmt(r['accuracy'])} | {_fmt(r['precision'])} "
                f"| {_fmt(r['recall'])} |"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class RewardTrainConfig:
    dataset: str
    out: str
    steps: int = 3000
    max_minutes: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    negatives: str = "all"  # "all" | "non-expert"
    balance: float = 0.5  # fraction of each batch drawn from success frames (0 = natural frequency)
    augment_pad: int = 4
    val_fraction: float = 0.2
    split_seed: int = 0
    val_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    threads: int | None = None
    tasks: list[str] | None = None
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])
    # Dreamed frames (see `dreamed_pool`): a world model checkpoint whose open-loop dreams of the
    # training episodes, labelled with the real frames' success, make up `dream_fraction` of each batch.
    dream_world_model: str | None = None
    dream_fraction: float = 0.5
    dream_horizon: int = 10
    dream_stride: int = 5
    dream_sampling_steps: int | None = None
    resume: bool = True
    progress: bool = True


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


class _RewardTraining(Component):
    """The classifier for the harness: balanced (and partly dreamed) batches of frames, BCE on success."""

    name = "reward"
    kind = KIND
    ddp = True
    progress_tags = ("train/loss", "train/accuracy_balanced_batch")

    def __init__(self, cfg: RewardTrainConfig, harness: Harness):
        self.cfg, self.harness = cfg, harness
        self.batch_size = cfg.batch_size
        split = EpisodeSplit.load(cfg, harness.device)
        ds, self.store, self.val_store = split.dataset, split.store, split.val_store
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
        self.autocast_device = "cuda" if harness.device.startswith("cuda") else "cpu"
        self.report: dict[str, Any] | None = None
        self.dataset_info = split.record(cfg)
        self.train_info = training_record(cfg)
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
        with torch.autocast(self.autocast_device, dtype=torch.bfloat16, enabled=self.cfg.bf16):
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
            self.report["dreamed_frames"] = evaluate_on_dreams(self.model, self._dreams(self.val_store, "val-dreams"))
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

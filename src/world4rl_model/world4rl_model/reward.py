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

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
    configure_threads,
    derive_seed,
    init_distributed,
    resolve_device,
    seed_everything,
    shutdown_distributed,
    tcmalloc_active,
)
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
    ckpt_every: int = 1000
    keep: int = 2
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
    dist_info = init_distributed(cfg.device if cfg.device != "auto" else "cpu")
    try:
        return _train_reward(cfg, dist_info)
    finally:
        shutdown_distributed()


def _train_reward(cfg: RewardTrainConfig, dist_info) -> Path:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm

    device = resolve_device(cfg.device, dist_info)
    configure_threads(cfg.threads, dist_info)
    run_dir = Path(cfg.out)
    ds = Dataset(cfg.dataset)
    train_idx, val_idx = ds.split(cfg.val_fraction, cfg.split_seed)
    train_idx, val_idx = ds.select(train_idx, tasks=cfg.tasks), ds.select(val_idx, tasks=cfg.tasks)
    store = EpisodeStore(ds, train_idx, device)
    val_store = EpisodeStore(ds, val_idx, device) if val_idx else None
    pos, neg = _frame_pools(store, ds, cfg.negatives)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(
            f"{ds.root}: the reward classifier needs success and failure frames; training split has "
            f"{len(pos)} success and {len(neg)} failure frames"
        )
    dreams = None
    if cfg.dream_world_model and cfg.dream_fraction > 0:
        dreams = dreamed_pool(
            cfg.dream_world_model,
            store,
            cfg.dream_horizon,
            cfg.dream_stride,
            cfg.dream_sampling_steps,
            cfg.bf16,
            derive_seed(cfg.seed, "dreams"),
            progress=dist_info.is_main,
        )
        dream_pos, dream_neg = dreams.pools()
        if len(dream_pos) == 0 or len(dream_neg) == 0:
            raise ValueError(
                f"{cfg.dream_world_model}: the dreams of {ds.root}'s training episodes have {len(dream_pos)} "
                f"success and {len(dream_neg)} failure frames; the classifier needs both"
            )
    seed_everything(cfg.seed)
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state, saved = load_checkpoint(ckpt, map_location=device, kind=KIND)
        rcfg = RewardConfig(**saved["model"])
        if rcfg.tasks != ds.tasks:
            raise ValueError(f"{ckpt}: trained on tasks {rcfg.tasks}, dataset now has {ds.tasks}; use a new --out")
    else:
        rcfg = RewardConfig(image_size=ds.image_size, tasks=list(ds.tasks), channels=list(cfg.channels))
    model = RewardClassifier(rcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed_before = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(state)
        ts = load_training_state(ckpt)
        if ts is not None:
            step = restore_training_state(ts, opt, restore_rng=False)
            elapsed_before = float(ts.extra.get("elapsed_s", 0.0))
    net = DistributedDataParallel(model) if dist_info.enabled else model
    autocast_device = "cuda" if device.startswith("cuda") else "cpu"
    dataset_info = {
        "path": str(ds.root.absolute()),
        "manifest_sha256": manifest_hash(ds.root),
        "tasks": ds.tasks,
        "val_episodes": val_idx,
        "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction,
    }
    train_info = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dataset", "out")}
    writer = None
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)
        print(
            f"[reward] {ds.root}: {len(train_idx)} train / {len(val_idx)} val episodes; {len(pos)} success and "
            f"{len(neg)} failure frames ({cfg.negatives}); tasks {ds.tasks}; device {device}; "
            f"tcmalloc {tcmalloc_active()}" + (f"; resuming {ckpt.name} at step {step}" if ckpt else ""),
            flush=True,
        )

    def save(step: int, elapsed: float, report: dict | None) -> None:
        ts = capture_training_state(step, opt, extra={"elapsed_s": elapsed}, include_rng=False)
        extra = {"dataset": dataset_info, "training": train_info, "step": step}
        if report is not None:
            extra["val_report"] = {"frames": {k: v for k, v in report["frames"].items() if k != "reliability"}}
        save_run_checkpoint(run_dir, step, model.state_dict(), model.checkpoint_config(**extra), ts, cfg.keep)
        if report is not None:
            (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
            (run_dir / "report.md").write_text(report_markdown(report))

    start = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (dist_info.is_main and cfg.progress), desc="reward")
    report = None
    while step < cfg.steps:
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, dist_info.rank, step, "batch"))
        if cfg.balance > 0:
            n_pos = round(cfg.batch_size * cfg.balance)
            idx = torch.cat(
                [
                    pos[torch.randint(len(pos), (n_pos,), generator=g).to(pos.device)],
                    neg[torch.randint(len(neg), (cfg.batch_size - n_pos,), generator=g).to(neg.device)],
                ]
            )
        else:
            pool = torch.cat([pos, neg])
            idx = pool[torch.randint(len(pool), (cfg.batch_size,), generator=g).to(pool.device)]
        images, label, task = store.frames[idx], store.success[idx], store.task[idx]
        if dreams is not None:
            # Replace the first part of the batch by dreams, balanced the same way.
            n_dream = round(cfg.batch_size * cfg.dream_fraction)
            n_dpos = round(n_dream * cfg.balance) if cfg.balance > 0 else 0
            if cfg.balance > 0:
                didx = torch.cat(
                    [
                        dream_pos[torch.randint(len(dream_pos), (n_dpos,), generator=g).to(dream_pos.device)],
                        dream_neg[torch.randint(len(dream_neg), (n_dream - n_dpos,), generator=g).to(dream_neg.device)],
                    ]
                )
            else:
                didx = torch.randint(len(dreams.success), (n_dream,), generator=g).to(dreams.success.device)
            keep = torch.randperm(cfg.batch_size, generator=g)[: cfg.batch_size - n_dream].to(idx.device)
            images = torch.cat([dreams.frames[didx], images[keep]])
            label = torch.cat([dreams.success[didx], label[keep]])
            task = torch.cat([dreams.task[didx], task[keep]])
        frames = random_shift(frames_to_float(images), cfg.augment_pad, g)
        label = label.float()
        with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = net(frames, task)
        loss = F.binary_cross_entropy_with_logits(logits.float(), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = elapsed_before + time.monotonic() - start
        stop = cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60
        if dist_info.enabled:
            flag = torch.tensor([1.0 if stop else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if dist_info.is_main:
            bar.update(1)
            if step % cfg.log_every == 0 or step == 1:
                acc = ((logits.detach() > 0).float() == label).float().mean().item()
                bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{acc:.3f}")
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/accuracy_balanced_batch", acc, step)
            final = step >= cfg.steps or stop
            if val_store is not None and (step % cfg.val_every == 0 or final):
                report = evaluate_classifier(model, val_store)
                model.train()
                for k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "ece", "bce"):
                    v = report["frames"][k]
                    if not math.isnan(v):
                        writer.add_scalar(f"val/{k}", v, step)
                bar.write(
                    f"[reward] step {step}: val acc {_fmt(report['frames']['accuracy'])}, "
                    f"precision {_fmt(report['frames']['precision'])}, recall {_fmt(report['frames']['recall'])}, "
                    f"ECE {_fmt(report['frames']['ece'])}"
                )
            if step % cfg.ckpt_every == 0 or final:
                save(step, elapsed, report)
            writer.flush()
        if stop:
            break
    bar.close()
    if dist_info.is_main and dreams is not None and val_store is not None and report is not None:
        # How the classifier judges the world model's dreams of held-out episodes (what PPO will see).
        val_dreams = dreamed_pool(
            cfg.dream_world_model,
            val_store,
            cfg.dream_horizon,
            cfg.dream_stride,
            cfg.dream_sampling_steps,
            cfg.bf16,
            derive_seed(cfg.seed, "val-dreams"),
        )
        report["dreamed_frames"] = evaluate_on_dreams(model, val_dreams)
        (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (run_dir / "report.md").write_text(report_markdown(report))
    if dist_info.is_main:
        if report is not None:
            print(report_markdown(report), flush=True)
        writer.close()
    if dist_info.enabled:
        dist.barrier()
    return run_dir

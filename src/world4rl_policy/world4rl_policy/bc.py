"""Behaviour cloning: fit the Gaussian policy to demonstrations by negative log-likelihood.

Reads a world4rl dataset (world4rl_model.dataset), keeps the chosen tasks and episode kinds
(by default successful expert and human episodes), splits by episode into train/validation,
and trains with Adam on random mini-batches of (last T frames, action) pairs. Frame histories
at the start of an episode repeat the first frame, exactly as `policy.FrameHistory` does at run
time. Images get a random shift (DrQ) by default, which matters with a few dozen demos.

Run directory (``out``)::

    OUT/
      latest, step_000001000/ ...   checkpoints with training state (resume continues from latest)
      best/                         the checkpoint with the lowest validation NLL so far
      tb/                           TensorBoard scalars: train/nll, train/mse, train/std, val/nll, val/mse

Every checkpoint is a policy checkpoint: `policy.load_policy(OUT / "best")` runs it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from world4rl_policy.policy import GaussianPolicy, PolicyConfig, gaussian_nll, load_policy_module, save_policy


@dataclass
class BCConfig:
    """Behaviour-cloning run settings (`world4rl train bc --help` lists them)."""

    dataset: str
    out: str
    tasks: list[str] | None = None  # None: every task in the dataset
    kinds: list[str] = field(default_factory=lambda: ["expert", "human"])
    successful_only: bool = True
    held_out_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    augment_shift: int = 4  # random shift in pixels (0: off)
    # "decoupled": the mean by squared error, the std by NLL around the detached mean (see bc_loss);
    # "nll": the joint Gaussian NLL, whose mean gradients are weighted by 1/std^2.
    loss: str = "decoupled"
    use_proprio: bool = False  # feed joint_positions (needs them in every episode)
    # Imitate each episode only up to this many frames after its first success frame (None: all).
    # Sim episodes run to the horizon; what the expert does after success (hovering) would otherwise
    # outnumber the approach that matters (reach: success at step ~6 of 30).
    post_success_frames: int | None = 3
    frame_history: int = 4
    channels: tuple[int, ...] = (32, 64, 64, 128)
    hidden_dim: int = 256
    log_std_min: float = -5.0
    log_std_max: float = 0.0
    eval_every: int = 250
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    num_threads: int | None = None
    resume: bool = True
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


# ---------------------------------------------------------------------------------- data


class BCData:
    """(frame history, action[, proprio]) samples of some episodes of a dataset, by global frame index."""

    def __init__(
        self,
        dataset,
        episodes: list[int],
        frame_history: int,
        use_proprio: bool,
        post_success_frames: int | None = None,
    ) -> None:
        self.episodes = list(episodes)
        self.frame_history = frame_history
        self.use_proprio = use_proprio
        self._frames: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        starts = []
        total = 0
        for i in self.episodes:
            ep = dataset.episode(i)
            if use_proprio and "joint_positions" not in ep:
                raise ValueError(f"{dataset.root / dataset.episodes[i]['dir']}: no joint_positions.npy (use_proprio)")
            end = len(ep["actions"])
            if post_success_frames is not None and ep["success"].any():
                end = min(end, int(np.argmax(ep["success"])) + post_success_frames + 1)
            self._frames.append(ep["frames"][:end])
            self._actions.append(np.asarray(ep["actions"][:end], dtype=np.float32))
            if use_proprio:
                self._proprio.append(np.asarray(ep["joint_positions"][:end], dtype=np.float32))
            starts.append(total)
            total += end
        self._starts = np.asarray(starts, dtype=np.int64)
        self.size = total

    def __len__(self) -> int:
        return self.size

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ep = np.searchsorted(self._starts, index, side="right") - 1
        return ep, index - self._starts[ep]

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        ep, t = self.locate(np.asarray(index, dtype=np.int64))
        hist = np.arange(-self.frame_history + 1, 1)
        frames = np.stack([self._frames[e][np.maximum(k + hist, 0)] for e, k in zip(ep, t, strict=True)])
        out = {
            "frames": torch.from_numpy(frames),
            "actions": torch.from_numpy(np.stack([self._actions[e][k] for e, k in zip(ep, t, strict=True)])),
        }
        if self.use_proprio:
            out["proprio"] = torch.from_numpy(np.stack([self._proprio[e][k] for e, k in zip(ep, t, strict=True)]))
        return out

    def all_actions(self) -> np.ndarray:
        return np.concatenate(self._actions) if self._actions else np.zeros((0, 0), np.float32)

    def all_proprio(self) -> np.ndarray:
        return np.concatenate(self._proprio)


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ augmentation: [B, T, H, W, 3] uint8 -> float in [0, 1], each sample shifted by up to
    `pad` pixels (edge-replicated), the same shift for all T frames of a sample."""
    x = frames.float() / 255.0
    if pad <= 0:
        return x
    b, t, h, w, c = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    sy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    sx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (torch.arange(h)[None] + sy[:, None])[:, :, None]  # [B, H, 1]
    cols = (torch.arange(w)[None] + sx[:, None])[:, None, :]  # [B, 1, W]
    x = x[torch.arange(b)[:, None, None], :, rows, cols]  # [B, H, W, T*C]
    return x.reshape(b, h, w, t, c).permute(0, 3, 1, 2, 4).contiguous()


def select_episodes(dataset, cfg: BCConfig) -> list[int]:
    tasks = cfg.tasks
    if tasks:
        unknown = sorted(set(tasks) - set(dataset.tasks))
        if unknown:
            raise ValueError(f"{dataset.root}: tasks {unknown} not in the dataset's tasks {dataset.tasks}")
    elif len(dataset.tasks) > 1:
        warnings.warn(
            f"{dataset.root} holds tasks {dataset.tasks} and no task was chosen: one policy is trained on all of "
            "them without task conditioning",
            stacklevel=2,
        )
    chosen = dataset.select(tasks=tasks or None, kinds=cfg.kinds or None)
    if cfg.successful_only:
        chosen = [i for i in chosen if dataset.episodes[i]["success"]]
    if not chosen:
        raise ValueError(
            f"{dataset.root}: no episodes match tasks={tasks} kinds={cfg.kinds} successful_only={cfg.successful_only}"
        )
    return chosen


# ---------------------------------------------------------------------------------- training


def bc_loss(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, kind: str = "decoupled") -> torch.Tensor:
    """BC's loss per action dimension.

    "nll" is the Gaussian NLL of the demonstrated actions. Its gradient on the mean is divided
    by std^2, so a dimension the demonstrations never vary (the gripper in push or drawer) drives
    its std to the floor and its tiny errors then dominate the gradient norm; after clipping,
    the xyz means barely learn and the policy outputs nearly one action whatever it sees.
    "decoupled" fits the mean by squared error (every dimension weighted alike) and the std by
    the NLL around the detached mean, so the Gaussian still matches the demonstrations' spread."""
    if kind == "nll":
        return -torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).mean()
    if kind == "decoupled":
        nll_std = -torch.distributions.Normal(mean.detach(), log_std.exp()).log_prob(actions).mean()
        return F.mse_loss(mean, actions) + nll_std
    raise ValueError(f"unknown BC loss {kind!r}; choose 'decoupled' or 'nll'")


def _evaluate(policy: GaussianPolicy, data: BCData, batch_size: int, max_samples: int = 4096) -> dict[str, float]:
    """Validation NLL (per action dim) and MSE of the clipped mean, on evenly spaced samples."""
    n = min(len(data), max_samples)
    index = np.linspace(0, len(data) - 1, n).round().astype(np.int64)
    nll_sum = mse_sum = 0.0
    policy.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            b = data.batch(index[s : s + batch_size])
            frames = b["frames"].float() / 255.0
            mean, _, _ = policy(frames, b.get("proprio"))
            nll = gaussian_nll(policy, frames, b["actions"], b.get("proprio"))
            nll_sum += float(nll) * len(b["actions"])
            mse_sum += float(((mean.clamp(-1, 1) - b["actions"]) ** 2).mean()) * len(b["actions"])
    policy.train()
    return {"nll": nll_sum / n, "mse": mse_sum / n}


def train_bc(cfg: BCConfig) -> dict[str, Any]:
    """Train (or resume) a BC policy; returns a summary with the final and best validation metrics."""
    from world4rl_model import checkpoint
    from world4rl_model.dataset import Dataset

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    dataset = Dataset(cfg.dataset)
    episodes = select_episodes(dataset, cfg)
    train_eps, val_eps = _split(dataset, episodes, cfg)
    train = BCData(dataset, train_eps, cfg.frame_history, cfg.use_proprio, cfg.post_success_frames)
    val = BCData(dataset, val_eps, cfg.frame_history, cfg.use_proprio, cfg.post_success_frames) if val_eps else None

    torch.manual_seed(cfg.seed)
    pconf = PolicyConfig(
        image_size=dataset.image_size,
        frame_history=cfg.frame_history,
        action_dim=dataset.action_dim,
        proprio_dim=9 if cfg.use_proprio else 0,
        channels=tuple(cfg.channels),
        hidden_dim=cfg.hidden_dim,
        log_std_min=cfg.log_std_min,
        log_std_max=cfg.log_std_max,
    )
    policy = GaussianPolicy(pconf)
    if cfg.use_proprio:
        p = train.all_proprio()
        policy.set_proprio_normaliser(p.mean(0), p.std(0))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    best_val = math.inf
    provenance = {
        "control_rate_hz": dataset.control_rate_hz,
        "trainer": "bc",
        "tasks": sorted({dataset.episodes[i]["task"] for i in episodes}),
        "dataset": {"path": str(Path(cfg.dataset).absolute()), "manifest_sha256": dataset.hash},
        "train_episodes": train_eps,
        "val_episodes": val_eps,
        "bc_config": cfg.to_dict(),
    }

    if cfg.resume and checkpoint.latest_checkpoint(out) is not None:
        state = checkpoint.load_training_state(out)
        if state is not None:
            loaded, config = load_policy_module(out)
            if loaded.config != pconf:
                raise ValueError(f"{out}: existing run has architecture {loaded.config}, this run asks for {pconf}")
            if config.get("dataset", {}).get("manifest_sha256") != dataset.hash:
                warnings.warn(f"{out}: resuming on a dataset that changed since the run started", stacklevel=2)
            policy.load_state_dict(loaded.state_dict())
            step = checkpoint.restore_training_state(state, optimizer)
            extra = state.extra
            rng.bit_generator.state = json.loads(extra["numpy_generator"])
            aug_gen.set_state(extra["aug_generator"])
            best_val = float(extra.get("best_val_nll", math.inf))

    def save(at_step: int) -> None:
        state = checkpoint.capture_training_state(
            at_step,
            optimizer,
            extra={
                "numpy_generator": json.dumps(rng.bit_generator.state),
                "aug_generator": aug_gen.get_state(),
                "best_val_nll": best_val,
            },
        )
        save_policy(out, policy, training_state=state, run_step=at_step, step=at_step, **provenance)

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    writer = SummaryWriter(str(out / "tb"))
    history: list[dict[str, float]] = []
    policy.train()
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="bc", disable=not cfg.progress, dynamic_ncols=True)
    last = {}
    try:
        while step < cfg.steps:
            b = train.batch(rng.integers(0, len(train), size=cfg.batch_size))
            frames = random_shift(b["frames"], cfg.augment_shift, aug_gen)
            mean, log_std, _ = policy(frames, b.get("proprio"))
            loss = bc_loss(mean, log_std, b["actions"], cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == 1:
                mse = float(((mean.detach().clamp(-1, 1) - b["actions"]) ** 2).mean())
                writer.add_scalar("train/nll", float(loss.detach()), step)
                writer.add_scalar("train/mse", mse, step)
                writer.add_scalar("train/std", float(log_std.detach().exp().mean()), step)
                bar.set_postfix(nll=f"{float(loss.detach()):.3f}", mse=f"{mse:.4f}")
            if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                last = _evaluate(policy, val, cfg.batch_size)
                writer.add_scalar("val/nll", last["nll"], step)
                writer.add_scalar("val/mse", last["mse"], step)
                history.append({"step": step, **last})
                if last["nll"] < best_val:
                    best_val = last["nll"]
                    save_policy(out / "best", policy, step=step, val_nll=best_val, **provenance)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
    finally:
        bar.close()
        writer.close()
    if val is None and not (out / "best").exists():
        save_policy(out / "best", policy, step=step, **provenance)
    summary = {
        "steps": step,
        "seconds": time.time() - t0,
        "train_episodes": len(train_eps),
        "val_episodes": len(val_eps),
        "train_samples": len(train),
        "final_val": last,
        "best_val_nll": best_val,
        "history": history,
        "out": str(out),
    }
    return summary


def _split(dataset, episodes: list[int], cfg: BCConfig) -> tuple[list[int], list[int]]:
    train_all, val_all = dataset.split(cfg.held_out_fraction, seed=cfg.split_seed)
    chosen = set(episodes)
    train = [i for i in train_all if i in chosen]
    val = [i for i in val_all if i in chosen]
    # The split is over the whole dataset (stable as it grows); make sure both sides are used.
    if not train:
        train, val = val[:1], val[1:]
    if not val and cfg.held_out_fraction > 0 and len(train) >= 2:
        val = [train.pop()]
    return train, val

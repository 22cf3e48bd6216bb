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

Every checkpoint is a policy checkpoint: `policy.load_policy(OUT / "best")` runs it. At the end,
OUT/best and the latest checkpoint get out-of-distribution statistics fitted to their weights
(world4rl_policy.ood: training episodes, calibrated on the validation episodes), which the
runtime node scores every cycle with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from world4rl_model.config import meta
from world4rl_model.harness import Component, Harness, LoopSettings
from world4rl_policy.ood import fit_run
from world4rl_policy.policy import (
    CHECKPOINT_KIND,
    GaussianPolicy,
    PolicyConfig,
    gaussian_nll,
    load_policy_module,
    policy_checkpoint_config,
    save_policy,
)


@dataclass
class BCConfig:
    """Behaviour-cloning run settings (`world4rl train bc --help` lists them).

    The policy's architecture is `policy` (a PolicyConfig, the one stored in every checkpoint; its
    flags carry no prefix: --hidden-dim, --channels, --frame-history, --log-std-max ...). Its sizes
    that the data decide are not settings: image_size and action_dim are the dataset's, proprio_dim
    follows use_proprio; a preset or --bc-set that names them is refused."""

    dataset: str  # dataset directory (with manifest.json)
    out: str  # run directory: checkpoints OUT/step_*/ and `latest`, the best one OUT/best, TensorBoard OUT/tb
    # tasks whose episodes to imitate (None: every task)
    tasks: list[str] | None = field(default=None, metadata=meta(aliases=("--task",)))
    kinds: list[str] = field(default_factory=lambda: ["expert", "human"])  # episode kinds to imitate
    successful_only: bool = True  # imitate successful episodes only (--no-successful-only: failures too)
    val_fraction: float = 0.1  # fraction of the dataset's episodes held out for validation
    split_seed: int = 0  # seed of the train/validation split (by episode)
    seed: int = 0  # seeds the weights, the batches and the augmentation
    steps: int = 5000  # gradient steps in total (a resumed run counts on)
    batch_size: int = 64  # samples per gradient step
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    grad_clip: float = 1.0  # gradient-norm clip
    augment_shift: int = 4  # random-shift (DrQ) augmentation in pixels (0: off)
    # decoupled: the mean by squared error and the std by NLL around the detached mean, the std head on
    # detached features (see bc_loss); nll: the joint Gaussian NLL, whose mean gradients are weighted by 1/std^2.
    loss: Literal["decoupled", "nll"] = "decoupled"
    use_proprio: bool = False  # also feed joint positions (every episode must have them); sets policy.proprio_dim
    # Imitate each episode only up to this many frames after its first success frame (None or < 0: all).
    # Sim episodes run to the horizon; what the expert does after success (hovering) would otherwise
    # outnumber the approach that matters (reach: success at step ~6 of 30).
    post_success_frames: int | None = 3
    # the policy's architecture and log-std bounds
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata=meta(flat=True))
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    log_every: int = 10  # log training scalars every N steps
    # validate (and keep the best in OUT/best) every N steps
    val_every: int = field(default=250, metadata=meta(aliases=("--eval-every",)))
    checkpoint_every: int = 1000  # checkpoint every N steps
    keep_checkpoints: int = 3  # checkpoints kept in OUT (older ones are deleted)
    threads: int | None = None  # torch CPU threads (None: the cores)
    resume: bool = True  # continue from OUT/latest if OUT has a checkpoint (--no-resume: start afresh)
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        if isinstance(self.policy, dict):
            self.policy = PolicyConfig(**self.policy)
        if self.post_success_frames is not None and self.post_success_frames < 0:
            self.post_success_frames = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "policy": self.policy.to_dict()}


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
    the NLL around the detached mean, so the Gaussian still matches the demonstrations' spread.
    Its log_std must come from `policy(..., detach_std=True)` (as `_BCTraining.loss` does): the
    std's NLL then trains the log-std head alone. Through the shared encoder it would swamp the
    mean's gradient the same way (the std of a dimension the demonstrations never vary sinks to
    the floor, each small error then spikes the NLL, and the clipped step follows the std), and
    the image policy would output the demonstrations' average action whatever it sees."""
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
    with Harness(LoopSettings.from_config(cfg)) as harness:
        bc = _BCTraining(cfg, harness)
        t0 = time.time()
        step = harness.fit(bc)
        is_main = harness.is_main
    if bc.val is None and not (bc.out / "best").exists():
        save_policy(bc.out / "best", bc.model, step=step, **bc.provenance)
    ood = fit_run(bc.out, cfg.dataset) if is_main else {}
    return {
        "steps": step,
        "seconds": time.time() - t0,
        "train_episodes": len(bc.train_eps),
        "val_episodes": len(bc.val_eps),
        "train_samples": len(bc.train),
        "final_val": bc.last,
        "best_val_nll": bc.best_val,
        "history": bc.history,
        "out": str(bc.out),
        "ood": ood,
    }


class _BCTraining(Component):
    """BC for the harness: random (frame history, action) batches, shifted; the Gaussian policy's BC loss.

    Batches come from a numpy generator and the shifts from a torch one, both seeded once and saved in
    the checkpoints (so a resumed run draws what an uninterrupted one would have)."""

    name = "bc"
    kind = CHECKPOINT_KIND
    progress_tags = ("train/nll", "train/mse")

    def __init__(self, cfg: BCConfig, harness: Harness):
        from world4rl_model.dataset import Dataset

        self.cfg, self.out = cfg, Path(cfg.out)
        self.batch_size = cfg.batch_size
        dataset = Dataset(cfg.dataset)
        episodes = select_episodes(dataset, cfg)
        self.train_eps, self.val_eps = _split(dataset, episodes, cfg)
        history = cfg.policy.frame_history
        self.train = BCData(dataset, self.train_eps, history, cfg.use_proprio, cfg.post_success_frames)
        self.val = None
        if self.val_eps:
            self.val = BCData(dataset, self.val_eps, history, cfg.use_proprio, cfg.post_success_frames)
        self.model = policy = GaussianPolicy(_policy_config(cfg, dataset))
        if cfg.use_proprio:
            p = self.train.all_proprio()
            policy.set_proprio_normaliser(p.mean(0), p.std(0))
        self.rng = np.random.default_rng(cfg.seed)
        self.aug_gen = torch.Generator().manual_seed(cfg.seed)
        self.best_val = math.inf
        self.last: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.provenance = {
            "control_rate_hz": dataset.control_rate_hz,
            "trainer": "bc",
            "tasks": sorted({dataset.episodes[i]["task"] for i in episodes}),
            "dataset": {"path": str(Path(cfg.dataset).absolute()), "manifest_sha256": dataset.hash},
            "train_episodes": self.train_eps,
            "val_episodes": self.val_eps,
            "bc_config": cfg.to_dict(),
        }
        if harness.checkpoint is not None:  # the harness loads its weights
            loaded, config = load_policy_module(self.out)
            if loaded.config != policy.config:
                raise ValueError(
                    f"{self.out}: existing run has architecture {loaded.config}, this run asks for {policy.config}"
                )
            if config.get("dataset", {}).get("manifest_sha256") != dataset.hash:
                warnings.warn(f"{self.out}: resuming on a dataset that changed since the run started", stacklevel=2)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        b = self.train.batch(self.rng.integers(0, len(self.train), size=self.cfg.batch_size))
        return {**b, "frames": random_shift(b["frames"], self.cfg.augment_shift, self.aug_gen)}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        detach_std = self.cfg.loss == "decoupled"  # the std's NLL must not move the mean's features
        mean, log_std, _ = self.model(batch["frames"], batch.get("proprio"), detach_std=detach_std)
        loss = bc_loss(mean, log_std, batch["actions"], self.cfg.loss)
        mse = ((mean.detach().clamp(-1, 1) - batch["actions"]) ** 2).mean()
        return loss, {"train/nll": loss.detach(), "train/mse": mse, "train/std": log_std.detach().exp().mean()}

    def validate(self, step: int) -> dict[str, Any]:
        """Validation NLL and MSE; a new best NLL is saved to OUT/best."""
        if self.val is None:
            return {}
        self.last = _evaluate(self.model, self.val, self.cfg.batch_size)
        self.history.append({"step": step, **self.last})
        if self.last["nll"] < self.best_val:
            self.best_val = self.last["nll"]
            save_policy(self.out / "best", self.model, step=step, val_nll=self.best_val, **self.provenance)
        return {"val/nll": self.last["nll"], "val/mse": self.last["mse"]}

    def checkpoint_config(self, step: int) -> dict[str, Any]:
        provenance = dict(self.provenance)
        rate = provenance.pop("control_rate_hz")
        return policy_checkpoint_config(self.model, rate, step=step, **provenance)

    def state(self) -> dict[str, Any]:
        return {
            "numpy_generator": json.dumps(self.rng.bit_generator.state),
            "aug_generator": self.aug_gen.get_state(),
            "best_val_nll": self.best_val,
        }

    def load_state(self, extra: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(extra["numpy_generator"])
        self.aug_gen.set_state(extra["aug_generator"])
        self.best_val = float(extra.get("best_val_nll", math.inf))


def _policy_config(cfg: BCConfig, dataset) -> PolicyConfig:
    """cfg.policy with the sizes the data decide: the dataset's frames and actions, use_proprio's joints."""
    return dataclasses.replace(
        cfg.policy,
        image_size=dataset.image_size,
        action_dim=dataset.action_dim,
        proprio_dim=9 if cfg.use_proprio else 0,
    )


def _split(dataset, episodes: list[int], cfg: BCConfig) -> tuple[list[int], list[int]]:
    train_all, val_all = dataset.split(cfg.val_fraction, seed=cfg.split_seed)
    chosen = set(episodes)
    train = [i for i in train_all if i in chosen]
    val = [i for i in val_all if i in chosen]
    # The split is over the whole dataset (stable as it grows); make sure both sides are used.
    if not train:
        train, val = val[:1], val[1:]
    if not val and cfg.val_fraction > 0 and len(train) >= 2:
        val = [train.pop()]
    return train, val

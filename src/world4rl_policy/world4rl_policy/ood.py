"""Out-of-distribution (OOD) score: how far what the policy sees lies from what it was trained on.
ROS-free; what the runtime node publishes per cycle and may hold and disarm on.

Three cheap measures, each in units of its own held-out 99th percentile; the score is the largest:

- features: the Mahalanobis distance of the policy's trunk features (the vector its actor and
  critic heads read, which every action computes anyway) from a Gaussian fitted to the features
  of the training frames (Lee et al. 2018, "A simple unified framework for detecting
  out-of-distribution samples and adversarial attacks"), the covariance shrunk towards a scaled
  identity by the Ledoit-Wolf rule so that a small dataset still gives a well-conditioned inverse.
  It sees what the policy's encoder sees: a moved camera, a changed scene layout. One score costs
  a [D] x [D, D] product (D = hidden_dim, 256 by default).
- colours: the number of pixels of the newest frame beyond what any training frame showed of
  their colour (RGB quantised to 8 levels a channel): per colour, the frame's pixel count above
  the most any training frame had (its ceiling), summed over colours. A colour training never
  showed counts every pixel; a colour it showed counts only what exceeds its ceiling: an object
  recoloured to the colour of a pad or platform the scene already has (push's green block beside
  its green pad, which a set of novel colours alone cannot see: AUC 0.49 in bench/bench_ood.py).
  A colour merely rare in training (a face of the cube lit at an odd angle) has a small ceiling
  of its own rather than raising false alarms. An encoder learns to ignore what the
  demonstrations did not need, and a recoloured small object barely moves its features
  (measured on the reach task: AUC 0.5), yet changes what the world model and the policy were
  trained on. A histogram per frame.
- background: the mean absolute difference, over the pixels the training frames show unchanged
  (per-pixel standard deviation at most STATIC_STD: the table, the walls; not where the arm or
  the objects go), between the newest frame and the training frames' mean there. A fixed
  camera's static background moves when the camera is bumped: a 5 cm shift the features miss
  on pick_place (AUC 0.72) shifts it by 20 units. Off when fewer than MIN_STATIC_SHARE of the
  pixels are static (a wrist camera).

The colours and the background do not depend on the policy's weights.

Units. Each raw measure is divided by its 99th percentile over held-out frames (episodes of the
policy's tasks it was not trained on: BC's validation episodes; the colour count by at least
MIN_COLOUR_UNIT of the image's pixels, the background by at least MIN_BACKGROUND_UNIT intensity
levels), so the score has no units and reads the same for every
checkpoint: 1.0 is as far as the 99th percentile of held-out in-distribution frames, 2.0 twice
as far. The checkpoint also keeps the held-out quantiles of the score at LEVELS, so a threshold
can be read as a quantile (`OODStatistics.quantile_score(0.999)`).

The statistics travel in the policy checkpoint, as buffers of `GaussianPolicy.ood` in
model.safetensors (keys `ood.<name>`, BUFFERS) with a summary in config.json ("ood"). Whatever
copies a policy's state dict copies them: PPO's refined checkpoints carry their BC policy's.
Refinement changes the encoder, though, so the feature statistics then describe other weights;
`weights_digest` notices, `matches_weights()` says so, and `world4rl ood fit --policy CKPT
--dataset DATASET` (`fit_checkpoint`) refits them. BC fits them at the end of training
(`world4rl_policy.bc.train_bc`).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from world4rl_policy.policy import GaussianPolicy

METHOD = "max(feature Mahalanobis, pixels beyond their colour's training ceiling, static-background difference)"
VERSION = 4  # of the statistics' definition: a fit of another version is refitted (fit_run)
FEATURE = "trunk"  # GaussianPolicy.features: the input of the actor and critic heads
# Quantile levels of the held-out score kept in the checkpoint; each measure's unit is its
# REFERENCE_LEVEL quantile over held-out frames.
LEVELS = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
REFERENCE_LEVEL = 0.99
COLOUR_LEVELS = 8  # quantisation levels per RGB channel: 8^3 colour bins
COLOUR_BINS = COLOUR_LEVELS**3
MIN_COLOUR_UNIT = 1e-3  # the colour measure's unit is at least this share of the image's pixels
STATIC_STD = 4.0  # a pixel whose training values vary at most this much (std, 0-255) is background
MIN_STATIC_SHARE = 0.05  # with fewer static pixels than this share, the background measure is off
MIN_BACKGROUND_UNIT = 0.5  # the background measure's unit is at least this (mean |difference|, 0-255)
PARTS = ("features", "colours", "background")
BUFFERS = (
    "mean",
    "whitener",
    "feature_unit",
    "colour_ceiling",
    "colour_unit",
    "background_mean",
    "background_mask",
    "background_unit",
    "levels",
    "quantiles",
    "weights_digest",
)
# Buffers of earlier definitions (VERSION): a checkpoint holding them loads without statistics.
EARLIER_BUFFERS = ("colour_rare",)
MIN_FRAMES = 10
# Frames a fit reads at most (evenly spaced over the chosen episodes): plenty for a 256-d Gaussian.
MAX_FIT_FRAMES = 8192
MAX_CALIBRATION_FRAMES = 4096
ACTIONS = ("off", "warn", "hold")
# The runtime rule's defaults (the policy runner's ood.* parameters): warn when the mean score of
# the last 3 cycles exceeds 2. bench/bench_ood.py measured what that stops on the four sim tasks,
# BC policies acting (version 4): 12 of 120 episodes of the training scene (where the policy took
# the arm or the drawer where its demonstrations never went; 6 on drawer), every episode with the
# camera moved 5-10 cm or a yellow object, and all green-object ones but 5 of 30 on pick_place.
DEFAULT_ACTION = "warn"
DEFAULT_THRESHOLD = 2.0
DEFAULT_WINDOW = 3


def colour_bins(frames) -> np.ndarray:
    """The colour bin of every pixel of uint8 RGB frames [..., 3] -> int [...]."""
    q = np.asarray(frames, np.uint8) >> (8 - int(math.log2(COLOUR_LEVELS)))
    return (q[..., 0].astype(np.int64) * COLOUR_LEVELS + q[..., 1]) * COLOUR_LEVELS + q[..., 2]


def colour_histograms(frames) -> np.ndarray:
    """Per-frame colour-bin counts [N, COLOUR_BINS] of frames [N, H, W, 3] uint8."""
    bins = colour_bins(frames).reshape(len(frames), -1)
    offsets = np.arange(len(frames))[:, None] * COLOUR_BINS
    return np.bincount((bins + offsets).ravel(), minlength=len(frames) * COLOUR_BINS).reshape(-1, COLOUR_BINS)


class OODStatistics(nn.Module):
    """The statistics as buffers (GaussianPolicy.ood), so they live in the state dict. Empty until
    fitted; loading a state dict takes exactly the ood.* buffers it holds (none: empty again)."""

    def fitted(self) -> bool:
        return all(name in self._buffers for name in BUFFERS)

    def set(self, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        missing = sorted(set(BUFFERS) - set(tensors))
        if missing:
            raise ValueError(f"OOD statistics lack {missing}")
        for name in BUFFERS:
            self.register_buffer(name, torch.as_tensor(tensors[name]).detach().clone().to(device))

    def clear(self) -> None:
        for name in BUFFERS:
            self._buffers.pop(name, None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors):
        present = {key[len(prefix) :] for key in state_dict if key.startswith(prefix)}
        self.clear()
        if present & set(EARLIER_BUFFERS):  # statistics of an earlier definition: loaded without them
            warnings.warn(
                f"OOD statistics of an earlier definition ({sorted(present & set(EARLIER_BUFFERS))}) are not "
                "loaded; `world4rl ood fit --policy CKPT --dataset DATASET` fits them again",
                stacklevel=2,
            )
            return
        for name in BUFFERS:
            if name in present:
                self.register_buffer(name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors)

    # ------------------------------------------------------------------ scores
    def raw_feature_distance(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance per row of trunk features [B, D] (divided by sqrt(D))."""
        d = (features.detach().to(self.mean.device, torch.float32) - self.mean) @ self.whitener
        return d.norm(dim=-1).cpu().double()

    def feature_score(self, features: torch.Tensor) -> torch.Tensor:
        return self.raw_feature_distance(features) / float(self.feature_unit)

    def excess_pixels(self, frames) -> torch.Tensor:
        """Pixels per frame [B] of frames [B, H, W, 3] uint8 beyond their colours' training ceilings."""
        frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        return torch.from_numpy(colour_excess(colour_histograms(frames), self.colour_ceiling.cpu().numpy()))

    def colour_score(self, frames) -> torch.Tensor:
        return self.excess_pixels(frames) / float(self.colour_unit)

    def background_difference(self, frames) -> torch.Tensor:
        """Mean |frame - training mean| [B] (0-255) over the static pixels of frames [B, H, W, 3]."""
        mask = self.background_mask.cpu().numpy() > 0
        frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        return torch.from_numpy(background_difference(frames, self.background_mean.cpu().numpy(), mask))

    def background_score(self, frames) -> torch.Tensor:
        return self.background_difference(frames) / float(self.background_unit)

    def parts(self, features: torch.Tensor, frames) -> dict[str, torch.Tensor]:
        """Each measure [B] (float64) in its held-out 99th percentiles, by PARTS name."""
        scores = (self.feature_score(features), self.colour_score(frames), self.background_score(frames))
        return dict(zip(PARTS, scores, strict=True))

    def score(self, features: torch.Tensor, frames) -> torch.Tensor:
        """The OOD score [B] (float64) of trunk features [B, D] and the newest frames [B, H, W, 3]
        they were computed from: the largest of the measures, each in held-out 99th percentiles."""
        return torch.stack(list(self.parts(features, frames).values())).amax(0)

    def quantile_score(self, level: float) -> float:
        """The score of the held-out in-distribution frames' `level` quantile (e.g. 0.999)."""
        levels = self.levels.cpu().numpy()
        if not levels[0] <= level <= levels[-1]:
            raise ValueError(f"quantile level {level} outside the stored levels {levels.tolist()}")
        return float(np.interp(level, levels, self.quantiles.cpu().numpy()))

    def matches_weights(self, policy: GaussianPolicy) -> bool:
        """Whether the feature statistics were fitted to `policy`'s current encoder and trunk weights."""
        return math.isclose(float(self.weights_digest), weights_digest(policy), rel_tol=1e-9, abs_tol=1e-12)

    def summary(self, policy: GaussianPolicy | None = None) -> dict[str, Any]:
        """What config.json says about them (for people; the buffers are what is used)."""
        out: dict[str, Any] = {
            "version": VERSION,
            "method": METHOD,
            "feature": FEATURE,
            "dim": int(self.mean.shape[0]),
            "score_unit": f"each measure / its {REFERENCE_LEVEL:g} quantile over held-out frames",
            "feature_unit": float(self.feature_unit),
            "colour_unit_pixels": float(self.colour_unit),
            "seen_colour_bins": int((self.colour_ceiling > 0).sum()),
            "background_unit": float(self.background_unit),
            "static_pixel_share": float(self.background_mask.mean()),
            "held_out_quantiles": {
                f"{lv:g}": float(q) for lv, q in zip(self.levels.tolist(), self.quantiles.tolist(), strict=True)
            },
        }
        if policy is not None:
            out["weights_match"] = self.matches_weights(policy)
        return out


def weights_digest(policy: GaussianPolicy) -> float:
    """A number that changes whenever the weights the features depend on change (encoder, trunk,
    proprioception normaliser): stored with the statistics to notice they describe other weights."""
    total = 0.0
    parts = [*policy.encoder.parameters(), *policy.trunk.parameters(), policy.proprio_mean, policy.proprio_std]
    for i, p in enumerate(parts):
        p = p.detach().double().cpu()
        total += float(p.square().sum()) + (i + 1) * float(p.sum())
    return total


# ---------------------------------------------------------------------------------- fitting


def shrunk_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, covariance, shrinkage) of rows x [N, D]: the Ledoit-Wolf (2004) shrinkage of the sample
    covariance towards mu I (mu its mean eigenvalue), the weight chosen by their formula."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    sample = xc.T @ xc / n
    mu = np.trace(sample) / d
    delta = float(((sample - mu * np.eye(d)) ** 2).sum())
    beta = float(((xc**2).sum(1) ** 2).sum() / n**2 - (sample**2).sum() / n)
    shrinkage = 1.0 if delta <= 0 else min(max(beta / delta, 0.0), 1.0)
    return mean, (1 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


@dataclass
class Samples:
    """What a fit reads of some frames: the policy's trunk features [N, D] and, where kept, each
    history's newest frame [N, H, W, 3] uint8."""

    features: np.ndarray
    frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class PixelStatistics:
    """Per-pixel and colour statistics of training frames (every frame: no network needed)."""

    colour_ceiling: np.ndarray  # [COLOUR_BINS] the most pixels of each colour any frame had
    frames: int
    mean: np.ndarray  # [H, W, 3] float64
    std: np.ndarray  # [H, W, 3] float64

    @classmethod
    def of(cls, batches) -> PixelStatistics:
        """From an iterable of uint8 frame arrays [n, H, W, 3]."""
        ceiling, n, total, squares = np.zeros(COLOUR_BINS, np.int64), 0, 0.0, 0.0
        for frames in batches:
            x = np.asarray(frames, np.float64)
            ceiling = np.maximum(ceiling, colour_histograms(frames).max(0))
            n, total, squares = n + len(x), total + x.sum(0), squares + (x * x).sum(0)
        if n == 0:
            raise ValueError("no frames to take pixel statistics of")
        mean = total / n
        return cls(ceiling, n, mean, np.sqrt(np.maximum(squares / n - mean * mean, 0.0)))


def pixel_statistics(dataset, episodes: Sequence[int], chunk: int = 256) -> PixelStatistics:
    """PixelStatistics over every frame of the episodes."""
    frames = (dataset.episode(i)["frames"] for i in episodes)
    return PixelStatistics.of(np.asarray(f[s : s + chunk]) for f in frames for s in range(0, len(f), chunk))


def background_difference(frames: np.ndarray, mean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per frame [N] float64: the mean over mask's pixels of max over channels |frame - mean|."""
    if not mask.any():
        return np.zeros(len(frames))
    diff = np.abs(np.asarray(frames, np.float32)[:, mask] - mean[mask].astype(np.float32)).max(-1)
    return diff.mean(1).astype(np.float64)


def _whitener(fit: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, whitener W, shrinkage): |(x - mean) W| is x's Mahalanobis distance / sqrt(D)."""
    mean, cov, shrinkage = shrunk_covariance(fit)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval = np.maximum(eigval, eigval.max() * 1e-10 + 1e-300)
    return mean, (eigvec / np.sqrt(eigval)) @ eigvec.T / math.sqrt(fit.shape[1]), shrinkage


def colour_excess(histograms: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """Per frame [N] float64: pixels above each colour's ceiling [COLOUR_BINS], summed over colours,
    of per-frame colour histograms [N, COLOUR_BINS]."""
    return np.maximum(np.asarray(histograms, np.int64) - np.asarray(ceiling, np.int64), 0).sum(1).astype(np.float64)


def static_mask(pixels: PixelStatistics) -> np.ndarray:
    """bool [H, W]: the background pixels (STATIC_STD), none if fewer than MIN_STATIC_SHARE."""
    mask = pixels.std.max(-1) <= STATIC_STD
    return mask if mask.mean() >= MIN_STATIC_SHARE else np.zeros_like(mask)


def fit_statistics(
    fit_features: np.ndarray, held_out: Samples, pixels: PixelStatistics, digest: float
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(buffers, facts): the Gaussian of the training frames' features [N, D], their pixel statistics,
    calibrated on `held_out` frames (features and newest frames: the units and quantiles come from
    these, frames the policy did not train on)."""
    x = np.asarray(fit_features, np.float64)
    if x.ndim != 2 or len(x) < MIN_FRAMES:
        raise ValueError(f"need at least {MIN_FRAMES} frames to fit OOD statistics, got {len(x)}")
    mean, whitener, shrinkage = _whitener(x)
    distance = np.linalg.norm((np.asarray(held_out.features, np.float64) - mean) @ whitener, axis=1)
    feature_unit = float(np.quantile(distance, REFERENCE_LEVEL))
    if not feature_unit > 0:
        raise ValueError("held-out frames all have the training mean's features: the policy's features do not vary")
    excess = colour_excess(colour_histograms(held_out.frames), pixels.colour_ceiling)
    colour_unit = max(
        float(np.quantile(excess, REFERENCE_LEVEL)), MIN_COLOUR_UNIT * np.prod(held_out.frames.shape[1:3])
    )
    mask = static_mask(pixels)
    background = background_difference(held_out.frames, pixels.mean, mask)
    background_unit = max(float(np.quantile(background, REFERENCE_LEVEL)), MIN_BACKGROUND_UNIT)
    score = np.maximum.reduce([distance / feature_unit, excess / colour_unit, background / background_unit])
    buffers = {
        "mean": torch.from_numpy(mean.astype(np.float32)),
        "whitener": torch.from_numpy(whitener.astype(np.float32)),
        "feature_unit": torch.tensor([feature_unit], dtype=torch.float64),
        "colour_ceiling": torch.from_numpy(pixels.colour_ceiling.astype(np.float32)),
        "colour_unit": torch.tensor([colour_unit], dtype=torch.float64),
        "background_mean": torch.from_numpy(pixels.mean.astype(np.float32)),
        "background_mask": torch.from_numpy(mask.astype(np.float32)),
        "background_unit": torch.tensor([background_unit], dtype=torch.float64),
        "levels": torch.tensor(LEVELS, dtype=torch.float64),
        "quantiles": torch.from_numpy(np.quantile(score, LEVELS)),
        "weights_digest": torch.tensor([digest], dtype=torch.float64),
    }
    facts = {"fit_frames": len(x), "held_out_frames": len(held_out), "pixel_frames": pixels.frames}
    return buffers, {**facts, "shrinkage": shrinkage}


def frame_histories(frames: np.ndarray, history: int, index: np.ndarray | None = None) -> np.ndarray:
    """[N, T, H, W, 3] frame histories of an episode's frames [L, H, W, 3] at `index` (default all),
    the first frame repeated at the start: what FrameHistory hands the policy at each step."""
    index = np.arange(len(frames)) if index is None else np.asarray(index)
    steps = index[:, None] + np.arange(-history + 1, 1)[None]
    return np.asarray(frames)[np.maximum(steps, 0)]


@torch.no_grad()
def features(policy: GaussianPolicy, histories, proprio=None, batch_size: int = 256) -> np.ndarray:
    """The policy's trunk features [N, D] of frame histories [N, T, H, W, 3] uint8 (in batches)."""
    out = []
    device = next(policy.parameters()).device
    for s in range(0, len(histories), batch_size):
        frames = torch.from_numpy(np.ascontiguousarray(histories[s : s + batch_size])).to(device)
        p = None if proprio is None else torch.as_tensor(np.asarray(proprio[s : s + batch_size])).to(device)
        out.append(policy.features(frames, p).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, policy.config.hidden_dim), np.float32)


def episode_samples(policy: GaussianPolicy, frames: np.ndarray, index=None, proprio=None) -> Samples:
    """Samples of an episode's frames [L, H, W, 3] at `index` (default all steps)."""
    index = np.arange(len(frames)) if index is None else np.asarray(index, np.int64)
    histories = frame_histories(frames, policy.config.frame_history, index)
    return Samples(features(policy, histories, proprio), np.asarray(frames)[index])


def dataset_samples(
    policy: GaussianPolicy, dataset, episodes: Sequence[int], max_frames: int, keep_frames: bool = True
) -> Samples:
    """Samples of (at most max_frames, evenly spaced) frames of whole episodes of a dataset
    (without their frames unless keep_frames)."""
    lengths = [int(dataset.episodes[i]["length"]) for i in episodes]
    total = int(sum(lengths))
    chosen = np.unique(np.linspace(0, total - 1, min(total, max_frames)).round().astype(np.int64)) if total else []
    starts = np.cumsum([0, *lengths])
    parts = []
    for k, i in enumerate(episodes):
        index = np.asarray([g - starts[k] for g in chosen if starts[k] <= g < starts[k + 1]], np.int64)
        if not len(index):
            continue
        ep = dataset.episode(i)
        proprio = None
        if policy.config.proprio_dim:
            if "joint_positions" not in ep:
                raise ValueError(f"{dataset.root}: episode {i} has no joint_positions (the policy needs them)")
            proprio = np.asarray(ep["joint_positions"])[index, : policy.config.proprio_dim]
        sample = episode_samples(policy, ep["frames"], index, proprio)
        parts.append(sample if keep_frames else Samples(sample.features))
    if not parts:
        size = dataset.image_size
        return Samples(np.zeros((0, policy.config.hidden_dim)), np.zeros((0, size, size, 3), np.uint8))
    frames = np.concatenate([p.frames for p in parts]) if keep_frames else None
    return Samples(np.concatenate([p.features for p in parts]), frames)


def fit_policy(policy: GaussianPolicy, dataset, fit_episodes: Sequence[int], held_out: Sequence[int]) -> dict:
    """Fit the statistics of `policy` (its current weights) on the frames of fit_episodes (the
    features on up to MAX_FIT_FRAMES of them, the pixels on all), calibrate them on held_out (or,
    without held-out episodes, on the fit frames: then the units are optimistic), and store them in
    policy.ood. Returns the facts for config.json."""
    was_training = policy.training
    policy.eval()
    try:
        fit = dataset_samples(policy, dataset, list(fit_episodes), MAX_FIT_FRAMES, keep_frames=not held_out)
        calib = dataset_samples(policy, dataset, list(held_out), MAX_CALIBRATION_FRAMES) if held_out else fit
    finally:
        policy.train(was_training)
    buffers, facts = fit_statistics(
        fit.features, calib, pixel_statistics(dataset, fit_episodes), weights_digest(policy)
    )
    policy.ood.set(buffers, next(policy.parameters()).device)
    facts.update(
        fit_episodes=len(fit_episodes),
        held_out_episodes=len(held_out),
        calibrated_on="held-out episodes" if held_out else "the training frames (no held-out episodes)",
    )
    return facts


# ---------------------------------------------------------------------------------- checkpoints


def checkpoint_episodes(config: dict[str, Any], dataset, val_fraction: float = 0.1) -> tuple[list[int], list[int]]:
    """(fit, held-out) episodes for a checkpoint: BC's own train/validation episodes when its
    config lists them for this very dataset (a refined policy: those of the BC policy it was
    refined from), else the dataset's episodes of the policy's tasks (and BC's kinds) split by
    episode (held-out `val_fraction`)."""
    tasks = list(config.get("tasks") or []) or None
    same_data = config.get("dataset", {}).get("manifest_sha256") == dataset.hash
    if same_data and config.get("train_episodes") is not None:
        train = [i for i in config["train_episodes"] if i < len(dataset)]
        return train, [i for i in config.get("val_episodes") or [] if i < len(dataset)]
    start = (config.get("refined_from") or {}).get("policy")
    if start and Path(start).exists():  # a refined policy: its BC policy's episodes
        from world4rl_model.checkpoint import load_config

        return checkpoint_episodes({**load_config(start), "tasks": config.get("tasks")}, dataset, val_fraction)
    kinds = (config.get("bc_config") or {}).get("kinds") or None
    chosen = set(dataset.select(tasks=tasks, kinds=kinds))
    if not chosen:
        raise ValueError(f"{dataset.root}: no episodes of tasks {tasks} (kinds {kinds}) to fit OOD statistics on")
    train, val = dataset.split(val_fraction, seed=0)
    return [i for i in train if i in chosen], [i for i in val if i in chosen]


def fit_checkpoint(checkpoint: str | Path, dataset_path: str | Path, val_fraction: float = 0.1) -> dict[str, Any]:
    """Fit OOD statistics to a policy checkpoint's weights on a dataset and write them into that
    checkpoint (atomically; its training state, if any, is kept). Returns what was done."""
    from world4rl_model import checkpoint as ckpt
    from world4rl_model.dataset import Dataset
    from world4rl_policy.policy import load_policy_module, policy_checkpoint_config

    directory = ckpt.resolve_checkpoint(checkpoint)
    policy, config = load_policy_module(directory)
    dataset = Dataset(dataset_path)
    fit_eps, held_out = checkpoint_episodes(config, dataset, val_fraction)
    facts = fit_policy(policy, dataset, fit_eps, held_out)
    facts["dataset"] = {"path": str(Path(dataset_path).absolute()), "manifest_sha256": dataset.hash}
    keep = {k: v for k, v in config.items() if k not in ("format", "version", "ood")}
    rate = float(config.get("action_space", {}).get("control_rate_hz", dataset.control_rate_hz))
    new_config = {**keep, **policy_checkpoint_config(policy, rate)}
    new_config["ood"] = {**new_config["ood"], **facts}
    state = ckpt.load_training_state(directory)
    ckpt.save_checkpoint(directory, policy.state_dict(), new_config, state)
    return {"checkpoint": str(directory), **new_config["ood"]}


def fit_run(out: str | Path, dataset: str | Path) -> dict[str, float]:
    """fit_checkpoint for a training run's OUT/best (if any) and its latest checkpoint, each fitted
    to its own weights; a checkpoint whose statistics already fit its weights and this dataset is
    left alone, and a fit that fails only warns (training's result stands without them).
    Returns {"best"/"latest": the score of the held-out frames' 0.999 quantile}."""
    from world4rl_model.checkpoint import load_config
    from world4rl_model.dataset import manifest_hash

    out, done = Path(out), {}
    for name, path in (("best", out / "best"), ("latest", out)):
        if not (path / "config.json").exists() and not (path / "latest").exists():
            continue
        ood = load_config(path).get("ood") or {}
        same_data = ood.get("dataset", {}).get("manifest_sha256") == manifest_hash(dataset)
        current = ood.get("version") == VERSION and ood.get("weights_match") and same_data
        try:
            ood = ood if current else fit_checkpoint(path, dataset)
        except ValueError as e:
            warnings.warn(f"{path}: no out-of-distribution statistics fitted ({e})", stacklevel=2)
            continue
        done[name] = float(ood["held_out_quantiles"]["0.999"])
    return done


def score_frames(policy: GaussianPolicy, frames: np.ndarray, proprio=None) -> np.ndarray:
    """Per-step OOD scores [L] of an episode's frames [L, H, W, 3] uint8, as the runtime computes
    them (each step's frame history, the first frame repeated at the start). Offline, ROS-free."""
    if not policy.ood.fitted():
        raise ValueError("this policy has no OOD statistics (world4rl ood fit --policy CKPT --dataset DATASET)")
    was_training = policy.training
    policy.eval()
    try:
        feats = features(policy, frame_histories(frames, policy.config.frame_history), proprio)
    finally:
        policy.train(was_training)
    return policy.ood.score(torch.from_numpy(feats), frames).numpy()


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve of a score separating `positive` (should score high) from `negative`:
    the Mann-Whitney rank statistic, ties counted half."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("ROC AUC needs at least one positive and one negative")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------------- runtime


@dataclass
class OODMonitor:
    """The runtime rule: the mean score over the last `window` cycles against `threshold`.

    `update(score)` returns None while within the threshold (or for a NaN score), else the
    message naming the score and the threshold. action: "off" (no check), "warn" (the node
    logs the message), "hold" (the node holds position and disarms with it as the fault)."""

    threshold: float = DEFAULT_THRESHOLD
    window: int = DEFAULT_WINDOW
    action: str = DEFAULT_ACTION

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"ood action must be one of {ACTIONS}, got {self.action!r}")
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"ood threshold must be a positive number, got {self.threshold}")
        if int(self.window) < 1:
            raise ValueError(f"ood window must be at least 1 cycle, got {self.window}")
        self.window = int(self.window)
        self._scores: deque[float] = deque(maxlen=self.window)

    def reset(self) -> None:
        self._scores.clear()

    def update(self, score: float) -> str | None:
        if self.action == "off" or not math.isfinite(score):
            return None
        self._scores.append(float(score))
        mean = sum(self._scores) / len(self._scores)
        if mean <= self.threshold:
            return None
        n = len(self._scores)
        over = f"the mean of the last {n} cycles'" if n > 1 else "this cycle's"
        return (
            f"observation out of distribution: {over} OOD score {mean:.2f} > threshold {self.threshold:.2f} "
            f"(1.0 = the {REFERENCE_LEVEL:g} quantile of held-out training frames)"
        )

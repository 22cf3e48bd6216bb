"""The Gaussian image policy: the last T RGB frames (plus optional proprioception) -> a Gaussian
over the normalised action (dx, dy, dz, gripper) in [-1, 1], with a value head for PPO.

Clipped, not tanh-squashed. The distribution is a plain diagonal Gaussian N(mean, std); the
action sent to the robot is the sample (or the mean) clipped to [-1, 1]. We chose this because

- demonstrations hit the bounds exactly (the gripper is almost always -1 or +1), where a
  tanh-squashed Gaussian's density needs atanh(+-1) = inf and BC's NLL blows up unless the
  targets are shrunk by an arbitrary epsilon;
- PPO's ratio needs log pi(a|s) of the sampled action; with clipping that is simply the
  Gaussian log-density of the unclipped sample (CleanRL's continuous PPO), with no
  change-of-variables term.

So BC's NLL and PPO's log-probs are the same function: `log_prob(frames, actions)` of the raw
(unclipped) action. The policy stores the action space it was trained for in its checkpoint.

Log-std is a state-dependent head, softly clamped into [log_std_min, log_std_max] (the PETS
soft clamp, which keeps gradients alive at the bounds). log_std_max = 0 (std <= 1) is World4RL's
"conservative exploration"; 2 is the usual bound.

Frames are uint8 [B, T, H, W, 3] (RGB, oldest first), or float in [0, 1]; they are stacked on
channels and scaled to [-1, 1] inside the network. A checkpoint (safetensors + config.json, via
world4rl_model.checkpoint) carries everything needed to run it: `load_policy(dir).act(frames)`.
It may also carry out-of-distribution statistics of the policy's features (world4rl_policy.ood),
with which `act` also scores how far its input lies from the training frames (`last_ood_score`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from world4rl_model.config import from_known_fields, meta
from world4rl_policy.ood import OODStatistics
from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW, CONTROL_RATE_HZ, LEARNING_IMAGE_SIZE
from world4rl_spec.action import describe_action_space

CHECKPOINT_KIND = "policy"
POLICY_VERSION = 1
FRAME_HISTORY = 4  # T, as the world model's context (World4RL / DIAMOND)


@dataclass
class PolicyConfig:
    """Architecture and interface of a policy; stored in its checkpoint's config.json."""

    # square frame size, pixels
    image_size: int = field(default=LEARNING_IMAGE_SIZE, metadata=meta(derived="taken from the dataset"))
    frame_history: int = FRAME_HISTORY  # frames stacked as the policy's input (T)
    # size of the normalised action
    action_dim: int = field(default=ACTION_DIM, metadata=meta(derived="taken from the dataset"))
    # Size of the proprioception input (0: images only, as the paper; 9 for fr3 joints + fingers).
    proprio_dim: int = field(default=0, metadata=meta(derived="set by use_proprio (9 joint positions)"))
    channels: tuple[int, ...] = (32, 64, 64, 128)  # conv encoder widths, each layer stride 2
    hidden_dim: int = 256  # width of the MLP trunk after the encoder
    log_std_min: float = -5.0  # lower bound of the policy log-std
    log_std_max: float = 0.0  # upper bound of the log-std: 0 is World4RL's conservative exploration, 2 the usual
    init_log_std: float = -1.0  # initial bias of the log-std head

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.frame_history < 1 or self.image_size < 8 or self.action_dim < 1 or self.proprio_dim < 0:
            raise ValueError(f"invalid policy config {self}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"log_std_min {self.log_std_min} must be below log_std_max {self.log_std_max}")
        if self.image_size % (2 ** len(self.channels)) != 0:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{len(self.channels)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        return from_known_fields(cls, d, "unknown policy config keys {unknown}")


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Smoothly keep x inside [low, high]: identity well inside, gradients alive near the bounds.
    The final hard clamp only trims the softplus overshoot (about exp(low - high)) at the top."""
    x = high - F.softplus(high - x)
    return (low + F.softplus(x - low)).clamp(low, high)


class GaussianPolicy(nn.Module):
    """Conv encoder over stacked frames (+ proprioception) -> actor (mean, log-std) and critic heads."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PolicyConfig()
        layers: list[nn.Module] = []
        in_ch = 3 * cfg.frame_history
        for i, out_ch in enumerate(cfg.channels):
            k = 4 if i < 2 else 3
            layers += [nn.Conv2d(in_ch, out_ch, k, stride=2, padding=(k - 1) // 2 if k == 3 else 1), nn.SiLU()]
            in_ch = out_ch
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        feat_hw = cfg.image_size // (2 ** len(cfg.channels))
        self.trunk = nn.Sequential(
            nn.Linear(in_ch * feat_hw * feat_hw + cfg.proprio_dim, cfg.hidden_dim),
            nn.LayerNorm(cfg.hidden_dim),
            nn.SiLU(),
        )
        self.actor = nn.Sequential(nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.SiLU())
        self.mean_head = nn.Linear(cfg.hidden_dim, cfg.action_dim)
        self.log_std_head = nn.Linear(cfg.hidden_dim, cfg.action_dim)
        self.critic = nn.Sequential(nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.SiLU(), nn.Linear(cfg.hidden_dim, 1))
        # Proprioception normaliser (identity until set from data); saved with the weights.
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        # Small initial means and the chosen initial std, as in CleanRL's PPO.
        nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
        nn.init.zeros_(self.mean_head.bias)
        nn.init.orthogonal_(self.log_std_head.weight, gain=0.01)
        nn.init.constant_(self.log_std_head.bias, cfg.init_log_std)
        # Out-of-distribution statistics of the trunk features (world4rl_policy.ood): buffers that
        # exist only once fitted, so they travel in the state dict (and checkpoints) when present.
        self.ood = OODStatistics()

    # ------------------------------------------------------------------ inputs
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] uint8 (or float in [0, 1]) -> [B, 3T, H, W] float in [-1, 1]."""
        cfg = self.config
        expected = (cfg.frame_history, cfg.image_size, cfg.image_size, 3)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"frames must be [B, {', '.join(map(str, expected))}], got {list(frames.shape)}")
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        b, t, h, w, c = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)
        return x * 2.0 - 1.0

    def features(self, frames: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(self.preprocess(frames))
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"this policy needs proprioception of dim {self.config.proprio_dim}")
            p = (proprio.float() - self.proprio_mean) / self.proprio_std
            z = torch.cat([z, p], dim=-1)
        return self.trunk(z)

    # ------------------------------------------------------------------ heads
    def forward(
        self, frames: torch.Tensor, proprio: torch.Tensor | None = None, detach_std: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean [B, A], log_std [B, A], value [B]); detach_std: see `heads`."""
        return self.heads(self.features(frames, proprio), detach_std)

    def heads(self, h: torch.Tensor, detach_std: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, log_std, value) from the trunk features h = features(frames, proprio).
        detach_std: the log-std head reads the actor's features without passing gradient back, so
        a loss on log_std trains that head alone and cannot move the encoder the mean relies on (BC)."""
        a = self.actor(h)
        mean = self.mean_head(a)
        log_std = self.log_std_head(a.detach() if detach_std else a)
        log_std = soft_clamp(log_std, self.config.log_std_min, self.config.log_std_max)
        value = self.critic(h).squeeze(-1)
        return mean, log_std, value

    def distribution(self, frames: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.distributions.Normal:
        mean, log_std, _ = self(frames, proprio)
        return torch.distributions.Normal(mean, log_std.exp())

    def log_prob(
        self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log pi(a | s) [B] of raw (unclipped) actions: BC's negative loss and PPO's ratio term."""
        return self.distribution(frames, proprio).log_prob(actions).sum(-1)

    def set_proprio_normaliser(self, mean, std) -> None:
        self.proprio_mean.copy_(torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.proprio_std.copy_(torch.as_tensor(np.maximum(np.asarray(std, dtype=np.float32), 1e-6)))


def recent_frames(policy: GaussianPolicy, frames: torch.Tensor) -> torch.Tensor:
    """An imagined env's last T frames [B, T, ...] -> the policy's frame history (its newest frames)."""
    t = policy.config.frame_history
    if frames.shape[1] < t:
        raise ValueError(f"the world model keeps {frames.shape[1]} frames of history, the policy needs {t}")
    return frames[:, -t:]


def clip_action(action):
    """The executed action: raw Gaussian action clipped to the normalised action box."""
    if isinstance(action, torch.Tensor):
        return action.clamp(ACTION_LOW, ACTION_HIGH)
    return np.clip(action, ACTION_LOW, ACTION_HIGH)


# ---------------------------------------------------------------------------------- checkpoints


def action_space_dict(action_dim: int = ACTION_DIM, control_rate_hz: float = CONTROL_RATE_HZ) -> dict[str, Any]:
    # One action per control step: the same policy at another rate moves the arm at another speed.
    return describe_action_space(action_dim, control_rate_hz=float(control_rate_hz), distribution="gaussian-clipped")


def policy_checkpoint_config(
    policy: GaussianPolicy, control_rate_hz: float = CONTROL_RATE_HZ, **extra: Any
) -> dict[str, Any]:
    """config.json content for a policy checkpoint; `extra` adds provenance (tasks, dataset hash, ...).
    control_rate_hz: the rate of the demonstrations' actions, the one the policy must run at."""
    cfg = policy.config
    return {
        "kind": CHECKPOINT_KIND,
        "policy_version": POLICY_VERSION,
        "architecture": {"name": "conv-gaussian", **cfg.to_dict()},
        "frame_history": cfg.frame_history,
        "image_size": cfg.image_size,
        "image": {"layout": "T,H,W,RGB uint8, oldest first", "scale": "x/255*2-1"},
        "action_space": action_space_dict(cfg.action_dim, control_rate_hz),
        "normaliser": {
            "actions": "identity (dataset actions are already normalised to [-1, 1])",
            "proprio_mean": policy.proprio_mean.tolist(),
            "proprio_std": policy.proprio_std.tolist(),
        },
        **({"ood": policy.ood.summary(policy)} if policy.ood.fitted() else {}),
        **extra,
    }


def save_policy(
    directory: str | Path,
    policy: GaussianPolicy,
    training_state=None,
    run_step: int | None = None,
    control_rate_hz: float = CONTROL_RATE_HZ,
    **extra: Any,
) -> Path:
    """Save atomically (safetensors + config.json). With run_step, `directory` is a run dir and a
    step_<n>/ checkpoint plus the `latest` pointer are written (world4rl_model.checkpoint)."""
    from world4rl_model import checkpoint

    config = policy_checkpoint_config(policy, control_rate_hz, **extra)
    if run_step is None:
        return checkpoint.save_checkpoint(directory, policy.state_dict(), config, training_state)
    return checkpoint.save_run_checkpoint(directory, run_step, policy.state_dict(), config, training_state)


def load_policy_module(path: str | Path, map_location: str = "cpu") -> tuple[GaussianPolicy, dict[str, Any]]:
    """(GaussianPolicy with weights, config.json) from a checkpoint or run directory."""
    from world4rl_model import checkpoint

    directory = checkpoint.resolve_checkpoint(path)  # once: the one resolver (refuses what it cannot vouch for)
    tensors, config = checkpoint.load_checkpoint(directory, map_location=map_location, kind=CHECKPOINT_KIND)
    where = directory / checkpoint.CONFIG_FILE
    if config.get("policy_version") != POLICY_VERSION:
        raise checkpoint.CheckpointError(f"{where}: policy_version {config.get('policy_version')!r} unsupported")
    arch = dict(config["architecture"])
    if arch.pop("name", None) != "conv-gaussian":
        raise checkpoint.CheckpointError(f"{where}: unknown architecture {config['architecture'].get('name')!r}")
    policy = GaussianPolicy(PolicyConfig.from_dict(arch))
    try:
        policy.load_state_dict(tensors)
    except RuntimeError as e:
        raise checkpoint.CheckpointError(f"{where}: weights do not match the architecture ({e})") from None
    policy.eval()
    return policy, config


# ---------------------------------------------------------------------------------- runtime


class FrameHistory:
    """The last T frames of an episode; at the start the first frame is repeated (as in training).

    A ring of T frames allocated at the first push: push copies the frame into its slot and
    array(out=buffer) writes the padded history into a caller's buffer, so the runtime node's
    cycle allocates nothing. A frame of another shape or dtype than the episode's raises."""

    def __init__(self, length: int = FRAME_HISTORY) -> None:
        self.length = length
        self._ring: np.ndarray | None = None  # [T, H, W, 3], slot k % T holds the k-th frame pushed
        self._count = 0  # frames pushed since the last reset

    def reset(self) -> None:
        self._count = 0

    def push(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        ring = self._ring
        if ring is None or (self._count == 0 and (ring.shape[1:] != frame.shape or ring.dtype != frame.dtype)):
            ring = self._ring = np.empty((self.length, *frame.shape), dtype=frame.dtype)
        elif ring.shape[1:] != frame.shape or ring.dtype != frame.dtype:
            raise ValueError(
                f"frame {frame.dtype} {list(frame.shape)} differs from the history's {list(ring.shape[1:])}"
            )
        np.copyto(ring[self._count % self.length], frame)
        self._count += 1

    def __len__(self) -> int:
        return min(self._count, self.length)

    def array(self, out: np.ndarray | None = None) -> np.ndarray:
        """[T, H, W, 3] uint8, oldest first; written into `out` (and returned) when given, else a new array."""
        if self._ring is None or self._count == 0:
            raise ValueError("no frame yet")
        if out is None:
            out = np.empty_like(self._ring)
        kept = len(self)
        oldest = self._count - kept
        for i in range(self.length):
            out[i] = self._ring[(oldest + max(0, i - (self.length - kept))) % self.length]
        return out


def pad_history(frames: np.ndarray | Sequence[np.ndarray], length: int) -> np.ndarray:
    """[k, H, W, 3] -> [length, H, W, 3]: keep the last `length`, repeat the oldest if k < length."""
    arr = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"frame history must be [k, H, W, 3] with k >= 1, got shape {arr.shape}")
    if arr.shape[0] >= length:
        return arr[-length:]
    return np.concatenate([np.repeat(arr[:1], length - arr.shape[0], axis=0), arr])


class PolicyRunner:
    """A loaded policy for acting: numpy in, numpy out, no autograd; what the runtime node uses."""

    # The checkpoint directory it was loaded from (world4rl_model.checkpoint.resolve_checkpoint's
    # answer; set by load_policy): what checkpoint_fingerprint names in logs.
    checkpoint_dir: Path | None = None
    # The out-of-distribution score (world4rl_policy.ood: 1.0 = the 99th percentile of held-out
    # training frames) of the input of the last act(); NaN when the checkpoint has no statistics.
    last_ood_score: float = math.nan
    # What act() runs on: "torch" (eager) or "onnxruntime" (world4rl_policy.inference, set by
    # load_policy's backend); backend_note says why the backend asked for is not the one in use.
    backend: str = "torch"
    backend_note: str = ""
    _onnx: Any = None

    def __init__(self, policy: GaussianPolicy, config: dict[str, Any], seed: int | None = None) -> None:
        self.module = policy.eval()
        self.checkpoint_config = config
        self.config = policy.config
        self._generator = torch.Generator().manual_seed(seed if seed is not None else 0)

    @property
    def ood(self) -> OODStatistics | None:
        """The checkpoint's out-of-distribution statistics, None if it has none."""
        return self.module.ood if self.module.ood.fitted() else None

    @property
    def frame_history(self) -> int:
        return self.config.frame_history

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def new_history(self) -> FrameHistory:
        return FrameHistory(self.config.frame_history)

    @torch.inference_mode()
    def act(self, frames_history, proprio=None, deterministic: bool = True) -> np.ndarray:
        """Action [A] float32 in [-1, 1] from the newest frames [k, H, W, 3] uint8 (k >= 1; padded
        or cut to T). deterministic=True executes the mean (what the runtime node does)."""
        cfg = self.config
        frames = pad_history(frames_history, cfg.frame_history)
        if frames.shape[1:] != (cfg.image_size, cfg.image_size, 3):
            raise ValueError(
                f"frames must be {cfg.image_size}x{cfg.image_size} RGB, got {list(frames.shape[1:])} "
                "(resize to the checkpoint's image_size first)"
            )
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(frames))[None]
        p = None
        if cfg.proprio_dim:
            if proprio is None:
                raise ValueError(f"this policy needs proprioception of dim {cfg.proprio_dim}")
            p = torch.as_tensor(np.asarray(proprio, dtype=np.float32).reshape(1, cfg.proprio_dim))
        if self._onnx is not None:
            h, mean, log_std = self._onnx(x, p)
        else:
            h = self.module.features(x, p)
            mean, log_std, _ = self.module.heads(h)
        ood = self.module.ood
        self.last_ood_score = float(ood.score(h, frames[-1:])[0]) if ood.fitted() else math.nan
        action = mean
        if not deterministic:
            action = mean + log_std.exp() * torch.randn(mean.shape, generator=self._generator)
        out = clip_action(action[0]).numpy().astype(np.float32)
        if not np.all(np.isfinite(out)):  # never hand a NaN on; the safety filter would refuse it anyway
            raise FloatingPointError(f"policy produced a non-finite action {out}")
        return out


def load_policy(
    checkpoint_dir: str | Path, seed: int | None = None, num_threads: int | None = None, backend: str = "torch"
) -> PolicyRunner:
    """Load a policy checkpoint (or a run directory's latest) for acting on CPU.

    num_threads: torch intra-op threads (default: leave torch's setting). One thread is usually
    fastest for a single small batch and leaves cores to the rest of the node.
    backend: what act() runs on: "torch", "onnxruntime" (~2x faster at batch 1, exported on the fly;
    world4rl_policy.inference) or "auto" (onnxruntime where installed); torch is the fallback, and
    `runner.backend` / `runner.backend_note` say what runs and why."""
    from world4rl_model import checkpoint
    from world4rl_policy.inference import use_backend

    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    directory = checkpoint.resolve_checkpoint(checkpoint_dir)
    policy, config = load_policy_module(directory)
    runner = PolicyRunner(policy, config, seed=seed)
    runner.checkpoint_dir = directory
    use_backend(runner, backend)
    return runner


def gaussian_nll(policy: GaussianPolicy, frames, actions, proprio=None) -> torch.Tensor:
    """Mean negative log-likelihood per action dimension (nats), BC's loss."""
    return -policy.log_prob(frames, actions, proprio).mean() / policy.config.action_dim

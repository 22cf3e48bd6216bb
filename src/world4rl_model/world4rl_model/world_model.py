"""The action-conditioned diffusion transition model (World4RL / DIAMOND): EDM-preconditioned U-Net.

The next frame o_{t+1} is denoised conditioned on the last T frames o_{t-T+1..t} (stacked on
channels) and the last T actions a_{t-T+1..t} (two-hot encoded, then embedded and added to the
noise-level embedding, which drives adaptive group norm in every residual block).

EDM preconditioning (Karras et al. 2022), with sigma_data = 0.5:
    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, cond)
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4.
Training draws ln(sigma) ~ N(loc, scale) (DIAMOND: -0.4, 1.2) and regresses F onto
(x0 - c_skip x) / c_out, which is EDM's weighted denoising loss. Sampling: Euler on Karras
sigmas (sigma_max -> sigma_min -> 0); the last step returns the denoiser's estimate, which is
quantised to 8 bits like a camera frame (DIAMOND). The default is 2 steps, 5 -> 0.05 -> 0: on held-out
drawer episodes it beat DIAMOND's 3 steps (5 -> 0.28 -> 0.002 -> 0) at horizons 1/5/15 both for a
model trained 1,500 steps (+3.6/+2.4/+2.1 dB; 3 steps left visible grain) and one trained 15,707
(+0.4/+0.4/+0.2 dB), with a third fewer network evaluations (docs/results.md#the-sampler). DIAMOND's
last step, at sigma 0.002, changes next to nothing (c_skip ~ 1) and the one before it hands a
short-trained denoiser noise at sigma 0.28 that it cannot remove.

Frames inside the model are float in [-1, 1] (uint8 / 127.5 - 1), [B, 3, H, W].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from world4rl_model.two_hot import DEFAULT_NUM_BINS, TwoHot
from world4rl_model.unet import FourierFeatures, UNetConfig, build_unet
from world4rl_spec import ACTION_DIM, ACTION_HIGH, ACTION_LOW, ACTION_NAMES, LEARNING_IMAGE_SIZE
from world4rl_spec.action import describe_action_space

KIND = "world-model"
FRAME_NORMALISATION = {"frames": "x = uint8 / 127.5 - 1 (RGB, [B, 3, H, W])", "actions": "[-1, 1], two-hot"}


TARGETS = ("frame", "residual")
# EDM's settings for the residual target: sigma_data is the measured std of frame-to-frame changes
# (0.099 on the drawer run's 64 px frames; most pixels do not change), sigma_max 10 sigma_data. Its
# sampler's first step, from sigma_max, makes the prediction (the next step, to sigma_min, changes next
# to nothing: 1 and 2 steps dream the same), so training centres ln(sigma) at -0.5 (sigma ~0.6) rather
# than at DIAMOND's ratio to sigma_data (-2.0, sigma ~0.14): on held-out drawer dreams of a 'small'
# model after 3,000 steps, PSNR against copy-last +1.6 / +1.8 dB at horizons 1 / 5 instead of +0.2 / +0.3
# (docs/results.md#the-demo-2026-11-30-session-14).
RESIDUAL_SIGMAS = {"sigma_data": 0.1, "train_sigma_loc": -0.5, "sigma_max": 1.0, "sigma_min": 4e-4}


@dataclass
class WorldModelConfig:
    image_size: int = LEARNING_IMAGE_SIZE
    context_frames: int = 4  # T: frames (and actions) of history the next frame is conditioned on
    action_dim: int = ACTION_DIM
    num_bins: int = DEFAULT_NUM_BINS  # two-hot bins per action dimension
    unet: UNetConfig = field(default_factory=UNetConfig)
    sigma_data: float = 0.5
    train_sigma_loc: float = -0.4  # ln(sigma) ~ N(loc, scale) during training (DIAMOND)
    train_sigma_scale: float = 1.2
    sigma_offset_noise: float = 0.3  # DIAMOND's per-channel offset noise in training
    sigma_min: float = 0.05  # the last denoising step's sigma (DIAMOND: 2e-3; see the module doc)
    sigma_max: float = 5.0
    rho: float = 7.0
    sampling_steps: int = 2
    quantize: bool = True  # round sampled frames to 8 bits, as a camera would (DIAMOND)
    # What is diffused: "frame" the next frame itself (DIAMOND), "residual" its change from the last
    # context frame (a still background is then exactly zero, not something each sample redraws).
    # The residual's scale is ~0.1 on [-1, 1] frames, so its sigmas are rescaled (RESIDUAL_SIGMAS).
    target: str = "frame"
    action_input: bool = True  # actions also enter the first layer, not only the adaptive norms (see WorldModel)
    # Residual target only: a sampled change smaller than this many 8-bit intensity levels is no change,
    # so a still pixel stays exactly as it was instead of shimmering by the model's last-level error. On
    # three demo-scale world models 4 levels raised per-image PSNR at horizons 1 and 5 by 0.3-0.8 dB,
    # pooled PSNR by 0.1-0.2 dB and SSIM past copy-last's (docs/results.md#still-pixels-stay-still-session-16).
    still_levels: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.target not in TARGETS:
            raise ValueError(f"world-model target must be one of {TARGETS}, got {self.target!r}")
        if self.context_frames < 1:
            raise ValueError("context_frames must be >= 1")
        if self.image_size % (self.unet.space_to_depth * 2 ** (len(self.unet.channels) - 1)):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by space_to_depth * 2^(levels-1) = "
                f"{self.unet.space_to_depth * 2 ** (len(self.unet.channels) - 1)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldModelConfig:
        return cls(**d)


# Named sizes. "default" is what the CPU budget allows at 64x64: >= 200 imagined transitions/s with
# batch 64 and 3 Euler steps on 2 shared cores (bench/bench_world_model.py); it runs its U-Net at
# 16x16 after a 4x space-to-depth. "medium" keeps a 32x32 level (~2x slower); "diamond" is
# DIAMOND's Atari denoiser at full resolution (paper scale); "tiny" is for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"unet": {"channels": [8, 16], "cond_dim": 32, "space_to_depth": 1, "groups": 4}},
    "small": {"unet": {"channels": [48, 64], "cond_dim": 128, "space_to_depth": 4}},
    "default": {"unet": {"channels": [64, 96], "cond_dim": 128, "space_to_depth": 4}},
    "medium": {"unet": {"channels": [32, 64, 96], "cond_dim": 128, "space_to_depth": 2}},
    "diamond": {
        "unet": {
            "channels": [64, 64, 64, 64],
            "blocks_per_level": 2,
            "attention_levels": [False, False, False, False],
            "cond_dim": 256,
            "space_to_depth": 1,
            "groups": 32,
            "group_size": None,
            "upsample_conv": True,
        }
    },
}


def preset_config(name: str, **overrides: Any) -> WorldModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown world-model size {name!r}; choose from {sorted(PRESETS)}")
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}
    unet_over = overrides.pop("unet", {}) or {}
    d["unet"] = UNetConfig(**{**d.get("unet", {}), **unet_over})
    if overrides.get("target") == "residual":  # its sigmas, unless given explicitly
        d.update(RESIDUAL_SIGMAS)
    return WorldModelConfig(**{**d, **overrides})


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float [-1, 1]; float input is returned as is."""
    if frames.dtype == torch.uint8:
        return frames.float().div_(127.5).sub_(1.0)
    return frames


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    return frames.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def quantize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Round float frames in [-1, 1] to the 256 levels a uint8 frame can hold (stays float)."""
    return frames.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


class WorldModel(nn.Module):
    """D(x; sigma, frames, actions). Inputs: context frames [B, T, 3, H, W] (uint8 or float in [-1, 1]),
    context actions [B, T, A] in [-1, 1]; x and the output are float frames [B, 3, H, W]."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.two_hot = TwoHot(c.num_bins, ACTION_LOW, ACTION_HIGH)
        cond_dim = c.unet.cond_dim
        self.noise_emb = FourierFeatures(cond_dim)
        self.action_emb = nn.Linear(c.context_frames * c.action_dim * c.num_bins, cond_dim)
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        # Actions reach the U-Net twice: two-hot -> embedding -> adaptive group norm (DIAMOND), and raw
        # into the first layer (for the AdaGN U-Net a per-sample bias of its stem, which is what
        # constant action input planes through a 3x3 conv amount to). Small U-Nets learn to use the
        # first-layer path much faster than the global norm path alone.
        action_features = c.context_frames * c.action_dim if c.action_input else 0
        self.net = build_unet(3, 3, c.unet, c.image_size, 3 * c.context_frames, action_features)
        self.adagn = c.unet.backbone == "adagn"

    def use_channels_last(self, enabled: bool = True) -> WorldModel:
        """NHWC activations: oneDNN's faster convolution layout on CPU (see bench/bench_world_model.py)."""
        self.net.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        if self.adagn:
            self.net.channels_last = enabled
        return self

    @property
    def channels_last(self) -> bool:
        return bool(getattr(self.net, "channels_last", False))

    # ---- EDM preconditioning ---------------------------------------------------------------
    def preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sd = self.config.sigma_data
        s2 = sigma**2 + sd**2
        c_skip = sd**2 / s2
        c_out = sigma * sd / s2.sqrt()
        c_in = 1.0 / s2.sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def action_embedding(self, actions: torch.Tensor) -> torch.Tensor:
        return self.action_emb(self.two_hot.encode(actions.float()).flatten(1))  # from [B, T * A * K]

    def condition(
        self, c_noise: torch.Tensor, actions: torch.Tensor, action_embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        a = self.action_embedding(actions) if action_embedding is None else action_embedding
        return self.cond_mlp(self.noise_emb(c_noise) + a)

    def encode_context(self, frames: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """What stays fixed over the denoising steps of one sample: context features, action embedding."""
        self._check(frames, actions)
        ctx = frames_to_float(frames).flatten(1, 2)  # [B, 3T, H, W]
        acts = actions.float().flatten(1) if self.config.action_input else None
        cache: dict[str, torch.Tensor | None] = {"action_embedding": self.action_embedding(actions)}
        if self.adagn:
            cache["features"] = self.net.encode_context(ctx, acts)
        else:
            h, w = ctx.shape[-2:]
            planes = [ctx] if acts is None else [ctx, acts[:, :, None, None].expand(-1, -1, h, w)]
            cache["planes"] = torch.cat(planes, dim=1)
        return cache

    def _check(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        c = self.config
        b = frames.shape[0]
        if frames.shape[1:] != (c.context_frames, 3, c.image_size, c.image_size):
            raise ValueError(
                f"context frames must be [B, {c.context_frames}, 3, {c.image_size}, {c.image_size}], "
                f"got {list(frames.shape)}"
            )
        if actions.shape != (b, c.context_frames, c.action_dim):
            raise ValueError(
                f"context actions must be [B, {c.context_frames}, {c.action_dim}], got {list(actions.shape)}"
            )

    def model_output(
        self,
        x_noisy: torch.Tensor,
        sigma: torch.Tensor,
        frames: torch.Tensor,
        actions: torch.Tensor,
        cache: dict[str, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """F(c_in x, c_noise, cond) and the preconditioning coefficients (broadcastable to frames).

        `cache` (from encode_context(frames, actions)) skips recomputing the context part.
        """
        if cache is None:
            cache = self.encode_context(frames, actions)
        coeffs = self.preconditioning(sigma)
        c_skip, c_out, c_in, c_noise = (v.view(-1, 1, 1, 1) for v in coeffs)
        cond = self.condition(coeffs[3], actions, cache["action_embedding"])
        if self.adagn:
            out = self.net(c_in * x_noisy, cond, cache["features"])
        else:
            out = self.net(torch.cat([c_in * x_noisy, cache["planes"].to(x_noisy.dtype)], dim=1), cond)
        return out.float(), (c_skip, c_out, c_in, c_noise)

    def forward(
        self,
        x_noisy: torch.Tensor,
        sigma: torch.Tensor,
        frames: torch.Tensor,
        actions: torch.Tensor,
        cache: dict[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The denoised estimate D(x_noisy; sigma) of the next frame (float, [-1, 1] scale)."""
        out, (c_skip, c_out, _, _) = self.model_output(x_noisy, sigma, frames, actions, cache)
        return c_skip * x_noisy + c_out * out

    # ---- training ------------------------------------------------------------------------------
    def sample_sigma(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        z = torch.randn(n, device=device, generator=generator)
        return (c.train_sigma_loc + c.train_sigma_scale * z).exp()

    def loss(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        return_denoised: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """EDM denoising loss for next frame `target` [B, 3, H, W] (uint8 or float)."""
        x0 = self._to_target(frames_to_float(target), frames)
        b, device = x0.shape[0], x0.device
        sigma = self.sample_sigma(b, device, generator)
        noise = torch.randn(x0.shape, device=device, generator=generator)
        if self.config.sigma_offset_noise:
            noise = noise + self.config.sigma_offset_noise * torch.randn(
                (b, x0.shape[1], 1, 1), device=device, generator=generator
            )
        x_noisy = x0 + sigma.view(-1, 1, 1, 1) * noise
        out, (c_skip, c_out, _, _) = self.model_output(x_noisy, sigma, frames, actions)
        target_f = (x0 - c_skip * x_noisy) / c_out
        loss = F.mse_loss(out, target_f)
        if return_denoised:
            return loss, self._to_frame(c_skip * x_noisy + c_out * out, frames).detach()
        return loss

    def _last_frame(self, frames: torch.Tensor) -> torch.Tensor:
        return frames_to_float(frames[:, -1]).float()

    def _to_target(self, x0: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """A next frame (float) as what the model diffuses: itself, or its change from the last context frame."""
        return x0 - self._last_frame(frames) if self.config.target == "residual" else x0

    def _to_frame(self, y: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return y + self._last_frame(frames) if self.config.target == "residual" else y

    # ---- sampling ------------------------------------------------------------------------------
    def sampling_sigmas(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Karras et al. schedule sigma_max -> sigma_min in `steps` values, then a final 0."""
        c = self.config
        if steps < 1:
            raise ValueError("need at least one sampling step")
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        lo, hi = c.sigma_min ** (1 / c.rho), c.sigma_max ** (1 / c.rho)
        sigmas = (hi + ramp * (lo - hi)) ** c.rho
        return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float().to(device)

    @torch.no_grad()
    def sample(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        quantize: bool | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample o_{t+1} given context frames [B, T, 3, H, W] and actions [B, T, A]: float [B, 3, H, W] in [-1, 1].

        `noise`: the unit-variance starting noise [B, 3, H, W] (scaled by sigma_max here); default drawn
        from `generator`. Distillation (world4rl_model.distillation) gives teacher and student the same.
        """
        c = self.config
        steps = c.sampling_steps if steps is None else steps
        quantize = c.quantize if quantize is None else quantize
        b = frames.shape[0]
        device = frames.device
        sigmas = self.sampling_sigmas(steps, device)
        if noise is None:
            noise = torch.randn((b, 3, c.image_size, c.image_size), device=device, generator=generator)
        x = noise * sigmas[0]
        cache = self.encode_context(frames, actions)  # once for all steps
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            denoised = self(x, s.expand(b), frames, actions, cache)
            # Euler step of dx/dsigma = (x - D) / sigma; the step to sigma = 0 lands on D itself.
            x = denoised if s_next == 0 else x + (x - denoised) / s * (s_next - s)
        if c.target == "residual" and c.still_levels > 0:
            x = torch.where(x.abs() < c.still_levels / 127.5, torch.zeros_like(x), x)  # one level: 2 / 255
        x = self._to_frame(x, frames).clamp(-1, 1)
        return quantize_frames(x) if quantize else x

    # ---- persistence -----------------------------------------------------------------------------
    def checkpoint_config(self, **extra: Any) -> dict[str, Any]:
        """config.json content: enough to rebuild this model and to interpret its inputs."""
        return {
            "kind": KIND,
            "model": self.config.to_dict(),
            "action_space": describe_action_space(
                self.config.action_dim, names=ACTION_NAMES, encoding=f"two-hot, {self.config.num_bins} bins"
            ),
            "normalisation": FRAME_NORMALISATION,
            "image_size": self.config.image_size,
            "num_parameters": sum(p.numel() for p in self.parameters()),
            **extra,
        }

    def save(self, directory: str | Path, **extra: Any) -> Path:
        from world4rl_model.checkpoint import save_checkpoint

        return save_checkpoint(directory, self.state_dict(), self.checkpoint_config(**extra))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple[WorldModel, dict[str, Any]]:
        from world4rl_model.checkpoint import load_checkpoint

        state, config = load_checkpoint(path, map_location=device, kind=KIND)
        model = cls(WorldModelConfig.from_dict(config["model"])).to(device)
        model.load_state_dict(state)
        return model.eval(), config


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# MSE of uniform 8-bit quantisation noise on the [-1, 1] scale: PSNR saturates there (~58.9 dB)
# instead of going to infinity for identical frames, which would swamp averages.
_MSE_FLOOR = (2.0 / 255.0) ** 2 / 12.0


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR [dB] of float frames in [-1, 1] (peak-to-peak 2), capped at the 8-bit noise floor."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1).clamp_min(_MSE_FLOOR)
    return 10 * torch.log10(4.0 / mse)


def pooled_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR [dB] of the mean squared error over all the images together: every pixel's error weighs
    the same. The mean of per-image PSNR is log-scaled per image, so a still scene that copy-last
    reproduces to the 8-bit floor (59 dB) outweighs a moving arm: on the demo's held-out rollouts 26
    still ones, predicted at 45 dB (errors of about one intensity level), turned a +0.7 dB win on the
    other 158 into a -0.26 dB mean (docs/results.md, session 15)."""
    return float(psnr(pred.reshape(1, -1), target.reshape(1, -1))[0])  # all pixels as one image


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-image mean SSIM of float frames in [-1, 1] (uniform window, as skimage's default)."""
    x = (pred.float() + 1) / 2
    y = (target.float() + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    k = torch.ones(x.shape[1], 1, window, window, device=x.device) / window**2

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, k, groups=x.shape[1])

    n = window * window
    cov_norm = n / (n - 1)
    mx, my = blur(x), blur(y)
    sxx = cov_norm * (blur(x * x) - mx * mx)
    syy = cov_norm * (blur(y * y) - my * my)
    sxy = cov_norm * (blur(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)

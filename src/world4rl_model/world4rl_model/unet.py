"""Denoising U-Nets conditioned on a vector (noise level + actions) through adaptive group norm.

Two backbones share one interface, `net(x [B, C_in, H, W], cond [B, cond_dim]) -> [B, C_out, H, W]`:

- `AdaGNUNet` (default): DIAMOND's design, a small U-Net whose residual blocks normalise with
  GroupNorm and then scale/shift by a linear map of the condition vector. Optional space-to-depth
  (pixel unshuffle) in front runs the whole U-Net at half resolution with 4x the channels in, which
  is the main lever for CPU speed at 64x64 (see bench/bench_world_model.py).
- `DiffusersUNet`: diffusers' UNet2DModel with class_embed_type="identity", so the condition is
  added to its time embedding (time embedding = the noise level, given as c_noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    backbone: str = "adagn"  # "adagn" | "diffusers"
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # per resolution level
    blocks_per_level: int = 1
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, False])
    space_to_depth: int = 2  # pixel-unshuffle factor before the U-Net (1 = off)
    cond_dim: int = 128  # width of the conditioning vector (noise + actions)
    groups: int = 8  # GroupNorm groups, at most (clipped to divide every width)
    # Channels per group, at least: oneDNN's channels_last bf16 GroupNorm is ~10x slower below 16
    # channels per group (measured here); None = use `groups` as is.
    group_size: int | None = 16
    upsample_conv: bool = False  # a 3x3 conv after each nearest upsample (the next block's conv mixes anyway)

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        if len(self.attention_levels) != len(self.channels):
            self.attention_levels = (list(self.attention_levels) + [False] * len(self.channels))[: len(self.channels)]
        if self.backbone not in ("adagn", "diffusers"):
            raise ValueError(f"unknown U-Net backbone {self.backbone!r} (adagn | diffusers)")
        if self.space_to_depth < 1:
            raise ValueError("space_to_depth must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(channels: int, wanted: int, group_size: int | None = None) -> int:
    g = min(wanted, channels)
    if group_size:
        g = min(g, max(1, channels // group_size))
    while channels % g:
        g -= 1
    return g


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar (EDM/DIAMOND's noise embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        assert dim % 2 == 0
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x.unsqueeze(1) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class AdaGroupNorm(nn.Module):
    def __init__(self, channels: int, cond_dim: int, groups: int, group_size: int | None = None):
        super().__init__()
        self.groups = _groups(channels, groups, group_size)
        self.linear = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.linear.weight)  # starts as plain GroupNorm
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, cond_dim: int, groups: int, group_size: int | None = None, head_dim: int = 32):
        super().__init__()
        self.norm = AdaGroupNorm(channels, cond_dim, groups, group_size)
        self.heads = max(1, channels // head_dim)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (
            self.qkv(self.norm(x, cond)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        )
        y = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.out(y)


class ResBlock(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, cond_dim: int, groups: int, attention: bool, group_size: int | None = None
    ):
        super().__init__()
        self.norm1 = AdaGroupNorm(in_ch, cond_dim, groups, group_size)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = AdaGroupNorm(out_ch, cond_dim, groups, group_size)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # residual branch starts at zero: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention2d(out_ch, cond_dim, groups, group_size) if attention else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.silu(self.norm1(x, cond)))
        r = self.conv2(F.silu(self.norm2(r, cond)))
        x = self.skip(x) + r
        return self.attn(x, cond) if self.attn is not None else x


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class AdaGNUNet(nn.Module):
    """U-Net over x (the noisy frame) whose first feature map also receives `context_features`.

    The stem is linear, so stem(cat[x, context]) = stem_x(x) + stem_ctx(context): the context part
    (past frames, and actions as a per-sample bias, equivalent to constant action input planes)
    is computed once by `encode_context` and reused by every denoising step of a sample.
    """

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, context_channels: int = 0,
                 action_features: int = 0):  # fmt: skip
        super().__init__()
        cfg = config
        self.s2d = cfg.space_to_depth
        ch, g, cd, gs = cfg.channels, cfg.groups, cfg.cond_dim, cfg.group_size
        self.stem = nn.Conv2d(in_channels * self.s2d**2, ch[0], 3, padding=1)
        self.context_stem = (
            nn.Conv2d(context_channels * self.s2d**2, ch[0], 3, padding=1, bias=False) if context_channels else None
        )
        self.action_bias = nn.Linear(action_features, ch[0], bias=False) if action_features else None
        self.channels_last = False
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        prev = ch[0]
        for level, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(prev, c, cd, g, cfg.attention_levels[level], gs))
                prev = c
                skips.append(c)
            self.down.append(blocks)
            last = level == len(ch) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(prev, prev, cd, g, cfg.attention_levels[-1], gs)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(ch))):
            c = ch[level]
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(prev + skips.pop(), c, cd, g, cfg.attention_levels[level], gs))
                prev = c
            self.up.append(blocks)
            if level == 0:
                self.upsample.append(nn.Identity())
            else:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if cfg.upsample_conv else Upsample2x())
        self.out_norm = nn.GroupNorm(_groups(prev, g, gs), prev)
        self.out = nn.Conv2d(prev, out_channels * self.s2d**2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.s2d > 1:
            x = F.pixel_unshuffle(x, self.s2d)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode_context(self, context: torch.Tensor | None, actions: torch.Tensor | None) -> torch.Tensor | None:
        """Stem features of the context frames [B, C, H, W] plus the action bias of actions [B, F]."""
        feats = None
        if context is not None and self.context_stem is not None:
            feats = self._context_features(context)
        if actions is not None and self.action_bias is not None:
            bias = self.action_bias(actions)[:, :, None, None]
            feats = bias if feats is None else feats + bias
        return feats

    def _context_features(self, context: torch.Tensor) -> torch.Tensor:
        """context_stem(_layout(context)) as one strided convolution of the full-resolution frames: the
        same sums, with the 3x3 kernel over s2d x s2d blocks unfolded to 3 s2d x 3 s2d. Pixel-unshuffling
        4 frames of 64 envs cost as much as a whole one-step 'small' U-Net on CPU (an element-wise gather)."""
        r, stem = self.s2d, self.context_stem
        if r == 1:
            return stem(self._layout(context))
        w = stem.weight  # [out, C r r, k, k]: input channel c r^2 + i r + j is pixel (i, j) of frame channel c
        o, k, c = w.shape[0], w.shape[-1], context.shape[1]
        kernel = w.view(o, c, r, r, k, k).permute(0, 1, 4, 2, 5, 3).reshape(o, c, k * r, k * r)
        feats = F.conv2d(context, kernel, stride=r, padding=stem.padding[0] * r)
        return feats.contiguous(memory_format=torch.channels_last) if self.channels_last else feats

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, context_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.stem(self._layout(x))
        if context_features is not None:
            h = h + context_features
        skips = []
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, cond)
                skips.append(h)
            h = down(h)
        h = self.mid(h, cond)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), cond)
            # Upsample2x / Identity act on h directly; an upsample conv needs the nearest upsample first.
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest")) if isinstance(up, nn.Conv2d) else up(h)
        h = self.out(F.silu(self.out_norm(h)))
        if self.s2d > 1:
            h = F.pixel_shuffle(h, self.s2d)
        return h


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel; the condition vector is projected and added to its time embedding."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, image_size: int):
        super().__init__()
        from diffusers import UNet2DModel

        cfg = config
        self.s2d = cfg.space_to_depth
        levels = len(cfg.channels)
        down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels]
        up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels)]
        self.unet = UNet2DModel(
            sample_size=image_size // self.s2d,
            in_channels=in_channels * self.s2d**2,
            out_channels=out_channels * self.s2d**2,
            block_out_channels=tuple(cfg.channels),
            layers_per_block=cfg.blocks_per_level,
            down_block_types=tuple(down[:levels]),
            up_block_types=tuple(up[:levels]),
            norm_num_groups=min(_groups(c, cfg.groups) for c in cfg.channels),
            class_embed_type="identity",
            time_embedding_type="positional",
        )
        time_dim = self.unet.config.block_out_channels[0] * 4
        self.cond_proj = nn.Linear(cfg.cond_dim, time_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, c_noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.s2d > 1:
            x = F.pixel_unshuffle(x, self.s2d)
        t = c_noise if c_noise is not None else torch.zeros(x.shape[0], device=x.device)
        y = self.unet(x, t, class_labels=self.cond_proj(cond)).sample
        if self.s2d > 1:
            y = F.pixel_shuffle(y, self.s2d)
        return y


def build_unet(
    in_channels: int,
    out_channels: int,
    config: UNetConfig,
    image_size: int,
    context_channels: int = 0,
    action_features: int = 0,
) -> nn.Module:
    """AdaGN: x has `in_channels`, context/actions enter through encode_context. Diffusers: everything
    is concatenated on x's channels (in_channels + context_channels + action_features planes)."""
    if config.backbone == "diffusers":
        return DiffusersUNet(in_channels + context_channels + action_features, out_channels, config, image_size)
    return AdaGNUNet(in_channels, out_channels, config, context_channels, action_features)

"""Two-hot encoding of continuous actions (World4RL): K evenly spaced bins on [low, high].

A value x is split over its two nearest bins b_k <= x <= b_{k+1} with weights linear in the
distance, so sum_k w_k b_k == x exactly (lossless) and the weights are differentiable in x.
Written as a triangle kernel, w_k = relu(1 - |pos - k|) with pos = (x - low) / (high - low) * (K - 1),
which needs no integer indexing: a value exactly on a bin is one-hot, and the edges need no
special case. Values outside [low, high] are clipped first (gradient 0 outside, as for a
saturated actuator); NaN/inf raise instead of silently encoding garbage.
"""

from __future__ import annotations

import torch

from world4rl_spec import ACTION_HIGH, ACTION_LOW

DEFAULT_NUM_BINS = 21


def bin_centers(
    num_bins: int = DEFAULT_NUM_BINS, low: float = ACTION_LOW, high: float = ACTION_HIGH, **tensor_kwargs
) -> torch.Tensor:
    if num_bins < 2:
        raise ValueError(f"two-hot needs at least 2 bins, got {num_bins}")
    if not high > low:
        raise ValueError(f"need high > low, got [{low}, {high}]")
    dtype = tensor_kwargs.pop("dtype", None) or torch.get_default_dtype()
    # Computed in float64 so that symmetric bins (e.g. 0 for K odd) are exact.
    k = torch.arange(num_bins, dtype=torch.float64, **tensor_kwargs)
    return (low + k * ((high - low) / (num_bins - 1))).to(dtype)


def two_hot_encode(
    x: torch.Tensor, num_bins: int = DEFAULT_NUM_BINS, low: float = ACTION_LOW, high: float = ACTION_HIGH
) -> torch.Tensor:
    """[..., D] -> [..., D, K] weights: non-negative, summing to 1, at most two non-zero, adjacent."""
    if num_bins < 2:
        raise ValueError(f"two-hot needs at least 2 bins, got {num_bins}")
    if not torch.is_floating_point(x):
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("two_hot_encode: input contains NaN or inf")
    pos = (x.clamp(low, high) - low) * ((num_bins - 1) / (high - low))
    k = torch.arange(num_bins, device=x.device, dtype=x.dtype)
    return torch.relu(1.0 - (pos.unsqueeze(-1) - k).abs())


def two_hot_decode(
    weights: torch.Tensor, num_bins: int | None = None, low: float = ACTION_LOW, high: float = ACTION_HIGH
) -> torch.Tensor:
    """[..., D, K] -> [..., D]: the expectation sum_k w_k b_k (exact inverse of two_hot_encode)."""
    k = weights.shape[-1]
    if num_bins is not None and num_bins != k:
        raise ValueError(f"expected {num_bins} bins in the last dimension, got {k}")
    centers = bin_centers(k, low, high, device=weights.device, dtype=weights.dtype)
    return (weights * centers).sum(-1)


class TwoHot(torch.nn.Module):
    """Module form: `encode(actions [..., D]) -> [..., D * K]` (flattened), `decode` inverts it."""

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS, low: float = ACTION_LOW, high: float = ACTION_HIGH):
        super().__init__()
        bin_centers(num_bins, low, high)  # validates
        self.num_bins, self.low, self.high = int(num_bins), float(low), float(high)

    def encode(self, x: torch.Tensor, flatten: bool = True) -> torch.Tensor:
        w = two_hot_encode(x, self.num_bins, self.low, self.high)
        return w.flatten(-2) if flatten else w

    def decode(self, weights: torch.Tensor) -> torch.Tensor:
        if weights.shape[-1] != self.num_bins:  # flattened [..., D * K]
            weights = weights.unflatten(-1, (-1, self.num_bins))
        return two_hot_decode(weights, self.num_bins, self.low, self.high)

    forward = encode

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, low={self.low}, high={self.high}"

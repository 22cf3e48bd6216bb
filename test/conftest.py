"""Fixtures shared by the end-to-end tests in test/ (the workspace-wide ones are in the root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _constant_policy(directory: Path, action) -> Path:
    """A real checkpoint whose mean action is `action` whatever it sees."""
    import torch

    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy

    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    with torch.no_grad():
        policy.mean_head.weight.zero_()
        policy.mean_head.bias.copy_(torch.tensor(action, dtype=torch.float32))
    return save_policy(directory, policy)


@pytest.fixture
def constant_policy():
    """constant_policy(directory, action) -> a saved checkpoint that always means `action`."""
    return _constant_policy

"""The reset seeds of the gymnasium environments (FrankaSimEnv, MetaWorldEnv)."""

from __future__ import annotations

import gymnasium as gym


class SeededEnv(gym.Env):
    """A gymnasium env whose constructor's `seed` (kept in `_next_seed`) seeds its first reset only."""

    _next_seed: int | None = None

    def _reset_seed(self, seed: int | None) -> int:
        """This reset's seed: `seed` if given; else the constructor's seed, which applies to the first
        reset only; later resets draw one from np_random."""
        if seed is None and self._next_seed is not None:
            seed, self._next_seed = self._next_seed, None
        elif seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        return seed

"""Policies: Gaussian BC policy, PPO in the frozen world model, the safety filter, the runtime node."""

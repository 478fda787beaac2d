"""Generalized advantage estimation (Schulman et al. 2016, arXiv:1506.02438)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_gae"]


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE(lambda) advantages and lambda-returns for a rollout of ``T`` steps of ``N`` envs.

    Every argument is shaped ``(T, N)``. ``values[t]`` is ``V(s_t)`` and ``next_values[t]`` is
    ``V(s_{t+1})`` for the *true* next observation of step ``t``: when the episode ended at
    ``t`` that is the final observation, from before the vector env's autoreset. So a
    truncated step (time limit) bootstraps from the value of its final observation, a
    terminated step does not, and either one stops the recursion (Pardo et al. 2018, "Time
    Limits in Reinforcement Learning").

    Call it on detached tensors (e.g. under ``torch.no_grad()``).

    Args:
        rewards: Reward of each step.
        values: ``V(s_t)``.
        next_values: ``V(s_{t+1})`` of the true next observation.
        terminated: True (or 1) where the episode reached a terminal state at step ``t``.
        truncated: True (or 1) where the episode was cut at step ``t`` (time limit, data end).
        gamma: Discount factor in [0, 1].
        gae_lambda: GAE lambda in [0, 1]; 0 gives one-step TD, 1 Monte-Carlo returns.

    Returns:
        ``(advantages, returns)``, both ``(T, N)``, with ``returns = advantages + values``.

    Raises:
        ValueError: If shapes differ or are not 2-D, or ``gamma``/``gae_lambda`` is outside
            [0, 1].

    Example:
        >>> r = torch.tensor([[1.0], [1.0]])
        >>> v = torch.zeros(2, 1)
        >>> done = torch.tensor([[False], [True]])
        >>> adv, ret = compute_gae(r, v, v, done, done, gamma=0.5, gae_lambda=1.0)
        >>> adv.squeeze(1).tolist()
        [1.5, 1.0]
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma=}")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda=}")
    shapes = {
        "rewards": rewards.shape,
        "values": values.shape,
        "next_values": next_values.shape,
        "terminated": terminated.shape,
        "truncated": truncated.shape,
    }
    if rewards.dim() != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"all inputs must share one (T, N) shape, got {shapes}")

    dtype = values.dtype
    not_terminal = 1.0 - terminated.to(dtype)
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)
    # TD error: delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    deltas = rewards.to(dtype) + gamma * not_terminal * next_values - values
    # A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    decay = (gamma * gae_lambda) * not_done
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages, advantages + values

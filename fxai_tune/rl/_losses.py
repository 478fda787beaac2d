"""The PPO loss (Schulman et al. 2017, arXiv:1707.06347) and explained variance."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["explained_variance", "ppo_loss"]


def ppo_loss(
    new_log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vf: float | None = None,
    normalize_advantages: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped-surrogate PPO loss with value loss and entropy bonus, for one minibatch.

    All tensor arguments are shaped ``(B,)``. The statistics are detached tensors (no
    ``.item()``, so no device sync): average them over minibatches before logging.

    Args:
        new_log_prob: ``log pi_theta(a|s)`` under the current parameters.
        old_log_prob: ``log pi_theta_old(a|s)`` recorded at collection.
        advantages: GAE advantages.
        new_values: ``V_theta(s)`` under the current parameters.
        old_values: ``V_theta_old(s)`` recorded at collection (used only with ``clip_vf``).
        returns: Lambda-returns, the value targets.
        entropy: Policy entropy per state.
        clip_coef: Surrogate clip range epsilon (0.2 in the paper), > 0.
        vf_coef: Weight of the value loss (c1).
        ent_coef: Weight of the entropy bonus (c2).
        clip_vf: If set, clip the value change to ``+-clip_vf`` around ``old_values`` and take
            the pessimistic loss (as in OpenAI baselines); None for plain squared error.
        normalize_advantages: Standardise advantages over this minibatch (skipped for B = 1).

    Returns:
        ``(loss, stats)`` where ``stats`` holds ``policy_loss``, ``value_loss``, ``entropy``,
        ``total_loss``, ``approx_kl`` and ``clip_fraction``.

    Raises:
        ValueError: If the tensors are not all ``(B,)`` of one size, or ``clip_coef <= 0``.

    Example:
        >>> z = torch.zeros(2)
        >>> loss, stats = ppo_loss(z, z, torch.tensor([1.0, -1.0]), z, z, z, z,
        ...                        clip_coef=0.2, vf_coef=0.5, ent_coef=0.0)
        >>> float(stats["clip_fraction"])
        0.0
    """
    if clip_coef <= 0:
        raise ValueError(f"clip_coef must be > 0, got {clip_coef=}")
    if clip_vf is not None and clip_vf <= 0:
        raise ValueError(f"clip_vf must be > 0 or None, got {clip_vf=}")
    shapes = {
        "new_log_prob": new_log_prob.shape,
        "old_log_prob": old_log_prob.shape,
        "advantages": advantages.shape,
        "new_values": new_values.shape,
        "old_values": old_values.shape,
        "returns": returns.shape,
        "entropy": entropy.shape,
    }
    if new_log_prob.dim() != 1 or len(set(shapes.values())) != 1:
        raise ValueError(f"all inputs must share one (B,) shape, got {shapes}")

    if normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # probability ratio r_t = pi_theta(a|s) / pi_theta_old(a|s)
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    # clipped surrogate: L^CLIP = E[min(r A, clip(r, 1 - eps, 1 + eps) A)], negated to minimise
    pg_loss = torch.max(
        -advantages * ratio, -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    ).mean()

    if clip_vf is None:
        # value loss: 0.5 (V - R)^2
        v_loss = 0.5 * (new_values - returns).square().mean()
    else:
        # clipped value loss: 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)
        v_clipped = old_values + (new_values - old_values).clamp(-clip_vf, clip_vf)
        v_loss = 0.5 * torch.max(
            (new_values - returns).square(), (v_clipped - returns).square()
        ).mean()

    entropy_mean = entropy.mean()
    # total: L = L^CLIP + c1 L^VF - c2 S
    loss = pg_loss + vf_coef * v_loss - ent_coef * entropy_mean

    with torch.no_grad():
        # approx KL(old || new), low-variance unbiased estimator k3 (Schulman, "Approximating KL
        # Divergence", 2020): E[(r - 1) - log r]
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()
    stats = {
        "policy_loss": pg_loss.detach(),
        "value_loss": v_loss.detach(),
        "entropy": entropy_mean.detach(),
        "total_loss": loss.detach(),
        "approx_kl": approx_kl,
        "clip_fraction": clip_fraction,
    }
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """``1 - Var[returns - values] / Var[returns]``: 1 is perfect, 0 no better than a constant.

    NaN when the returns have zero variance (as in SB3). Population variances; no device sync.

    Example:
        >>> float(explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])))
        1.0
    """
    values, returns = values.flatten(), returns.flatten()
    var_returns = returns.var(correction=0)
    ratio = (returns - values).var(correction=0) / var_returns
    return torch.where(var_returns == 0, torch.full_like(ratio, float("nan")), 1.0 - ratio)

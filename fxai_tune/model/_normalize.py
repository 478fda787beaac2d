"""Observation normalisation by running mean and variance (rl-zoo3's ``normalize: true``).

The statistics live in the policy (buffers, so checkpoints carry them) and are applied
*frozen*: `ObservationNormalizer.freeze` copies the running statistics into the applied ones
once per PPO iteration, before the rollout. Collection and update of an iteration thus see
the same transform (the PPO ratio stays exactly 1 before the first step) and validation uses
the statistics the update trained with; nothing but an explicit `update` changes them.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch
from torch import Tensor, nn

__all__ = ["NormalizedPolicy", "ObservationNormalizer", "RunningMeanStd"]

Observation = Tensor | dict[str, Tensor]
_EPS = 1e-8


def _identity(tensor: Tensor) -> Tensor:
    return tensor


class RunningMeanStd(nn.Module):
    """Running mean and variance of one observation entry, per element, and a frozen copy.

    Merges batches with the parallel-variance formula of Chan et al. (1979), as
    stable-baselines3's ``RunningMeanStd``.

    Args:
        shape: Shape of one observation of this entry.
        clip: Normalised values are clipped to ``[-clip, clip]``.
    """

    def __init__(self, shape: tuple[int, ...], clip: float) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("applied_mean", torch.zeros(shape))
        self.register_buffer("applied_var", torch.ones(shape))

    def forward(self, obs: Tensor) -> Tensor:
        """``clip((obs - mean) / sqrt(var + eps))`` with the frozen statistics."""
        normalized = (obs - self.applied_mean) / torch.sqrt(self.applied_var + _EPS)
        return normalized.clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, batch: Tensor, all_reduce: Callable[[Tensor], Tensor] = _identity) -> None:
        """Merge a batch ``(B, *shape)`` into the running statistics.

        Args:
            batch: Observations, the first dimension over samples.
            all_reduce: Sums a tensor over processes (DDP), so every rank merges the
                moments of all ranks' batches; the identity for one process.
        """
        batch = batch.float()
        n = all_reduce(torch.tensor(float(batch.shape[0]), device=batch.device))
        batch_mean = all_reduce(batch.sum(0)) / n
        batch_var = all_reduce((batch - batch_mean).square().sum(0)) / n
        total = self.count + n
        delta = batch_mean - self.mean
        # M2 = M2_a + M2_b + delta^2 n_a n_b / (n_a + n_b)
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @torch.no_grad()
    def freeze(self) -> None:
        """Apply the running statistics from now on."""
        self.applied_mean.copy_(self.mean)
        self.applied_var.copy_(self.var)


class ObservationNormalizer(nn.Module):
    """`RunningMeanStd` for a ``Box`` observation or each entry of a ``Dict`` of ``Box``.

    Args:
        observation_space: Single-env observation space.
        clip: Normalised values are clipped to ``[-clip, clip]``.

    Example:
        >>> norm = ObservationNormalizer(gym.spaces.Box(-10, 10, (2,)), clip=10.0)
        >>> norm.update(torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
        >>> norm.freeze()
        >>> norm(torch.tensor([[2.0, 20.0]])).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self, observation_space: gym.Space, *, clip: float) -> None:
        super().__init__()
        if isinstance(observation_space, gym.spaces.Dict):
            self.entries: nn.Module = nn.ModuleDict(
                {k: RunningMeanStd(s.shape, clip) for k, s in observation_space.spaces.items()}
            )
        elif isinstance(observation_space, gym.spaces.Box):
            self.entries = RunningMeanStd(observation_space.shape, clip)
        else:
            raise TypeError(
                "observation normalisation needs a Box or Dict of Box space, "
                f"got {observation_space!r}"
            )

    def _each(self) -> list[tuple[str | None, RunningMeanStd]]:
        if isinstance(self.entries, nn.ModuleDict):
            return list(self.entries.items())  # type: ignore[arg-type]
        return [(None, self.entries)]  # type: ignore[list-item]

    def forward(self, obs: Observation) -> Observation:
        """Normalised observations (frozen statistics), same structure as ``obs``."""
        if isinstance(obs, dict):
            return {key: stats(obs[key]) for key, stats in self._each()}  # type: ignore[index]
        return self.entries(obs)

    def update(
        self, obs: Observation, all_reduce: Callable[[Tensor], Tensor] = _identity
    ) -> None:
        """Merge a batch of observations (first dimension over samples) into the statistics."""
        for key, stats in self._each():
            stats.update(obs[key] if key is not None else obs, all_reduce)  # type: ignore[index]

    def freeze(self) -> None:
        """Apply the running statistics from now on (once per PPO iteration)."""
        for _, stats in self._each():
            stats.freeze()


class NormalizedPolicy(nn.Module):
    """A policy network behind an `ObservationNormalizer`; the same interface as the network.

    Args:
        net: `MLPPolicy` or `MultiBranchTransformer`.
        normalizer: Applied to every observation before ``net``.
    """

    def __init__(self, net: nn.Module, normalizer: ObservationNormalizer) -> None:
        super().__init__()
        self.obs_normalizer = normalizer
        self.net = net
        self.shares_trunk: bool = getattr(net, "shares_trunk", False)

    def actor_logits(self, obs: Observation) -> Tensor:
        """Action logits of the normalised observations."""
        return self.net.actor_logits(self.obs_normalizer(obs))

    def value(self, obs: Observation) -> Tensor:
        """State values of the normalised observations."""
        return self.net.value(self.obs_normalizer(obs))

    def forward(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Logits and values of the normalised observations."""
        return self.net(self.obs_normalizer(obs))

"""`MLPPolicy`: separate actor and critic MLPs for a flat ``Box`` observation."""

from __future__ import annotations

import math

from torch import Tensor, nn

from fxai_tune.model._config import ModelConfig

__all__ = ["MLPPolicy"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain``, zero bias (CleanRL ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def make_mlp(
    in_features: int, hidden: tuple[int, ...], activation: str, *, ortho_init: bool
) -> nn.Sequential:
    """``Linear -> activation`` for each hidden size; output width is ``hidden[-1]``."""
    layers: list[nn.Module] = []
    for width in hidden:
        linear = nn.Linear(in_features, width)
        if ortho_init:
            init_linear(linear, math.sqrt(2))
        layers += [linear, _ACTIVATIONS[activation]()]
        in_features = width
    return nn.Sequential(*layers)


class MLPPolicy(nn.Module):
    """Actor-critic with separate actor and critic MLPs (no shared trunk).

    As in CleanRL's ``ppo.py`` and SB3's ``MlpPolicy`` for PPO: tanh hidden layers, orthogonal
    init with gain sqrt(2) for hidden layers, 0.01 for the policy head (near-uniform initial
    policy) and 1 for the value head. Observations of any ``Box`` shape are flattened.

    Args:
        obs_dim: Number of observation features after flattening.
        n_actions: Number of discrete actions.
        config: Network sizes (``mlp_hidden``, ``activation``, ``ortho_init``).

    Example:
        >>> import torch
        >>> policy = MLPPolicy(4, 2, ModelConfig())
        >>> logits, value = policy(torch.zeros(3, 4))
        >>> tuple(logits.shape), tuple(value.shape)
        ((3, 2), (3,))
    """

    shares_trunk = False
    """Separate actor and critic: run only the actor per rollout step."""

    def __init__(self, obs_dim: int, n_actions: int, config: ModelConfig) -> None:
        super().__init__()
        if obs_dim < 1 or n_actions < 1:
            raise ValueError(f"obs_dim and n_actions must be >= 1, got {obs_dim=}, {n_actions=}")
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        hidden, act, ortho = config.mlp_hidden, config.activation, config.ortho_init
        self.actor = make_mlp(obs_dim, hidden, act, ortho_init=ortho)
        self.critic = make_mlp(obs_dim, hidden, act, ortho_init=ortho)
        self.action_head = nn.Linear(hidden[-1], n_actions)
        self.value_head = nn.Linear(hidden[-1], 1)
        if ortho:
            init_linear(self.action_head, 0.01)
            init_linear(self.value_head, 1.0)

    def _flat(self, obs: Tensor) -> Tensor:
        return obs.reshape(obs.shape[0], -1).to(self.action_head.weight.dtype)

    def actor_logits(self, obs: Tensor) -> Tensor:
        """Action logits, shape ``(B, n_actions)``; runs the actor only (rollout collection)."""
        return self.action_head(self.actor(self._flat(obs)))

    def value(self, obs: Tensor) -> Tensor:
        """State values, shape ``(B,)``; runs the critic only."""
        return self.value_head(self.critic(self._flat(obs))).squeeze(-1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, n_actions)`` and values ``(B,)``."""
        x = self._flat(obs)
        return self.action_head(self.actor(x)), self.value_head(self.critic(x)).squeeze(-1)


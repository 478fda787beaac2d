"""`build_policy`: the policy network that fits a gymnasium observation/action space pair."""

from __future__ import annotations

import math

import gymnasium as gym
from torch import nn

from fxai_tune.model._config import ModelConfig
from fxai_tune.model._mlp import MLPPolicy
from fxai_tune.model._normalize import NormalizedPolicy, ObservationNormalizer
from fxai_tune.model._transformer import MultiBranchTransformer

__all__ = ["build_policy"]


def build_policy(
    observation_space: gym.Space, action_space: gym.Space, config: ModelConfig
) -> nn.Module:
    """Build `MultiBranchTransformer` for ``Dict`` observations, `MLPPolicy` for ``Box`` ones.

    With ``config.normalize_obs`` the network sits behind an `ObservationNormalizer`
    (`NormalizedPolicy`, same interface).

    Both return ``(logits, value)`` from ``forward(obs)`` and offer ``actor_logits(obs)`` and
    ``value(obs)``.

    Args:
        observation_space: ``gymnasium.spaces.Dict`` (timeframe windows and vectors) or
            ``gymnasium.spaces.Box`` (flattened).
        action_space: ``gymnasium.spaces.Discrete`` starting at 0.
        config: Network sizes and choices.

    Returns:
        The policy network, on CPU, in training mode.

    Raises:
        TypeError: If either space is of an unsupported type.
        ValueError: If the ``Discrete`` space does not start at 0.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> type(build_policy(env.observation_space, env.action_space, ModelConfig())).__name__
        'MLPPolicy'
    """
    if not isinstance(action_space, gym.spaces.Discrete):
        raise TypeError(
            f"only Discrete action spaces are supported, got action_space={action_space!r}"
        )
    if int(action_space.start) != 0:
        raise ValueError(
            f"the Discrete action space must start at 0, got action_space={action_space!r}"
        )
    n_actions = int(action_space.n)
    net: nn.Module
    if isinstance(observation_space, gym.spaces.Dict):
        net = MultiBranchTransformer(observation_space, n_actions, config)
    elif isinstance(observation_space, gym.spaces.Box):
        net = MLPPolicy(math.prod(observation_space.shape), n_actions, config)
    else:
        raise TypeError(
            "observation space must be a gymnasium.spaces.Dict or Box, "
            f"got observation_space={observation_space!r}"
        )
    if config.normalize_obs:
        normalizer = ObservationNormalizer(observation_space, clip=config.obs_clip)
        return NormalizedPolicy(net, normalizer)
    return net

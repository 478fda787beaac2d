"""MLPPolicy and build_policy for Box observations; unsupported spaces."""

from __future__ import annotations


import gymnasium as gym
import pytest
import torch

from fxai_tune.model import MLPPolicy, ModelConfig, build_policy

BOX = gym.spaces.Box(-1.0, 1.0, (4,))


def test_box_space_gives_an_mlp_with_logits_and_values_of_the_right_shape():
    torch.manual_seed(0)
    policy = build_policy(BOX, gym.spaces.Discrete(2), ModelConfig())
    assert isinstance(policy, MLPPolicy)
    obs = torch.randn(5, 4)
    logits, value = policy(obs)
    assert logits.shape == (5, 2) and value.shape == (5,)
    torch.testing.assert_close(policy.actor_logits(obs), logits)
    torch.testing.assert_close(policy.value(obs), value)


def test_multidimensional_box_observations_are_flattened():
    policy = build_policy(gym.spaces.Box(0, 1, (2, 3)), gym.spaces.Discrete(3), ModelConfig())
    assert policy(torch.zeros(4, 2, 3))[0].shape == (4, 3)


def test_actor_and_critic_share_no_parameters_and_all_get_gradients():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, ModelConfig())
    actor = {id(p) for p in [*policy.actor.parameters(), *policy.action_head.parameters()]}
    critic = {id(p) for p in [*policy.critic.parameters(), *policy.value_head.parameters()]}
    assert not actor & critic
    logits, value = policy(torch.randn(6, 4))
    (logits.sum() + value.sum()).backward()
    assert all(p.grad is not None and p.grad.any() for p in policy.parameters())


def test_orthogonal_init_uses_cleanrl_gains():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, ModelConfig(mlp_hidden=(64, 64)))
    hidden = policy.actor[2].weight  # second hidden layer, 64 x 64: orthogonal * sqrt(2)
    torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(64), atol=1e-4, rtol=0)
    assert policy.action_head.weight.norm(dim=1).tolist() == pytest.approx([0.01, 0.01])
    assert policy.value_head.weight.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert isinstance(policy.actor[1], torch.nn.Tanh)


def test_relu_activation_and_default_init_are_selectable():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, ModelConfig(activation="relu", ortho_init=False))
    assert isinstance(policy.actor[1], torch.nn.ReLU)
    assert policy.action_head.weight.abs().max() > 0.05  # PyTorch's default, not 0.01


def test_unsupported_spaces_raise_naming_the_space():
    with pytest.raises(TypeError, match="Discrete"):
        build_policy(gym.spaces.Discrete(3), gym.spaces.Discrete(2), ModelConfig())
    with pytest.raises(TypeError, match=r"action_space=Box"):
        build_policy(BOX, gym.spaces.Box(-1, 1, (1,)), ModelConfig())
    with pytest.raises(ValueError, match="start"):
        build_policy(BOX, gym.spaces.Discrete(3, start=1), ModelConfig())


def test_cartpole_spaces_build_an_mlp():
    env = gym.make("CartPole-v1")
    policy = build_policy(env.observation_space, env.action_space, ModelConfig())
    assert isinstance(policy, MLPPolicy) and policy.obs_dim == 4

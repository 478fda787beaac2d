"""MultiBranchTransformer: shapes, gradients, initialisation and its optimised layers."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from torch import nn

from fxai_tune.model import AttentionPool, ModelConfig, MultiBranchTransformer, build_policy
from fxai_tune.model._transformer import _EncoderLayer

SPACE = gym.spaces.Dict(
    {
        "1h": gym.spaces.Box(-5.0, 5.0, (64, 8)),
        "4h": gym.spaces.Box(-5.0, 5.0, (32, 8)),
        "1d": gym.spaces.Box(-5.0, 5.0, (8, 8)),
        "portfolio": gym.spaces.Box(-5.0, 5.0, (4,)),
    }
)


def _obs(batch: int = 3, space: gym.spaces.Dict = SPACE) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(batch, *s.shape, generator=generator) for k, s in space.items()}


@pytest.mark.parametrize(
    ("pooling", "fusion"),
    [("attention", "attention"), ("last", "transformer"), ("mean", "attention")],
)
def test_dict_space_gives_logits_and_values_of_the_right_shape(pooling, fusion):
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, 3, ModelConfig(pooling=pooling, fusion=fusion))
    obs = _obs()
    logits, value = model(obs)
    assert logits.shape == (3, 3) and value.shape == (3,)
    torch.testing.assert_close(model.actor_logits(obs), logits)
    torch.testing.assert_close(model.value(obs), value)


@pytest.mark.parametrize("fusion", ["attention", "transformer"])
@pytest.mark.parametrize("pooling", ["attention", "last"])
def test_gradients_reach_every_parameter(pooling, fusion):
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, 3, ModelConfig(pooling=pooling, fusion=fusion))
    logits, value = model(_obs())
    (logits * torch.randn_like(logits)).sum().backward(retain_graph=True)
    value.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_action_head_starts_small_so_the_initial_policy_is_near_uniform():
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, 3, ModelConfig())
    assert model.action_head.weight.abs().max() <= 0.01 + 1e-6
    assert not model.action_head.bias.any()
    probs = model.actor_logits(_obs(8)).softmax(-1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / 3), atol=0.02, rtol=0)
    # the value head is orthogonal with gain 1: rows of unit norm
    assert model.value_head.weight.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_eval_mode_without_grad_matches_training_mode():
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, 3, ModelConfig())
    obs = _obs(4)
    logits, value = model(obs)
    model.eval()
    with torch.inference_mode():
        logits_eval, value_eval = model(obs)
    torch.testing.assert_close(logits_eval, logits.detach())
    torch.testing.assert_close(value_eval, value.detach())


def test_encoder_layer_matches_pytorch_layer_with_the_same_weights():
    torch.manual_seed(0)
    kwargs = {"dim_feedforward": 32, "dropout": 0.0, "batch_first": True, "norm_first": True}
    reference = nn.TransformerEncoderLayer(16, 4, **kwargs)
    layer = _EncoderLayer(16, 4, **kwargs)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(3, 7, 16, requires_grad=True)
    out_ref, out = reference(x), layer(x)
    torch.testing.assert_close(out, out_ref)
    grad_ref = torch.autograd.grad(out_ref.square().sum(), [x, *reference.parameters()])
    grad = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    for g, g_ref in zip(grad, grad_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_attention_pool_matches_per_head_softmax_weighted_sum():
    torch.manual_seed(0)
    pool = AttentionPool(8, 2)
    nn.init.normal_(pool.query)
    x = torch.randn(3, 5, 8)
    heads = x.view(3, 5, 2, 4)
    weights = ((heads * pool.query).sum(-1) / 2.0).softmax(dim=1)  # scale 1/sqrt(4)
    expected = (weights.unsqueeze(-1) * heads).sum(1).reshape(3, 8)
    torch.testing.assert_close(pool(x), expected)


def test_state_dict_round_trips_into_a_fresh_model():
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, 3, ModelConfig(fusion="transformer"))
    torch.manual_seed(1)
    other = MultiBranchTransformer(SPACE, 3, ModelConfig(fusion="transformer"))
    other.load_state_dict(model.state_dict())
    obs = _obs()
    torch.testing.assert_close(other(obs)[0], model(obs)[0])


def test_unsupported_dict_entries_raise_naming_the_entry():
    bad_rank = gym.spaces.Dict({"img": gym.spaces.Box(0, 1, (2, 3, 4))})
    with pytest.raises(ValueError, match="'img'.*\\(2, 3, 4\\)"):
        MultiBranchTransformer(bad_rank, 2, ModelConfig())
    discrete = gym.spaces.Dict({"flag": gym.spaces.Discrete(2)})
    with pytest.raises(TypeError, match="'flag'"):
        MultiBranchTransformer(discrete, 2, ModelConfig())


def test_build_policy_picks_the_transformer_for_dict_spaces():
    model = build_policy(SPACE, gym.spaces.Discrete(3), ModelConfig())
    assert isinstance(model, MultiBranchTransformer)

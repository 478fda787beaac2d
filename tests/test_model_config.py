"""ModelConfig validation: errors name the bad value and the valid choices."""

from __future__ import annotations

import pytest

from fxai_tune.model import ModelConfig


def test_defaults_are_valid():
    config = ModelConfig()
    assert (config.d_model, config.n_layers, config.n_heads) == (64, 2, 4)
    assert config.mlp_hidden == (64, 64)


def test_n_heads_not_dividing_d_model_raises_naming_both():
    with pytest.raises(ValueError, match=r"n_heads=5.*d_model=64"):
        ModelConfig(d_model=64, n_heads=5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pooling", "max", r"'attention'.*pooling='max'"),
        ("fusion", "concat", r"'transformer'.*fusion='concat'"),
        ("activation", "gelu", r"'tanh'.*activation='gelu'"),
        ("dropout", 1.0, r"dropout=1.0"),
        ("n_layers", 0, r"n_layers=0"),
        ("mlp_hidden", (), r"mlp_hidden=\(\)"),
    ],
)
def test_bad_values_raise_naming_value_and_valid_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{field: value})


def test_mlp_hidden_list_from_yaml_becomes_a_tuple():
    assert ModelConfig(mlp_hidden=[32, 16]).mlp_hidden == (32, 16)

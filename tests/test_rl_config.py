"""Training configs: YAML round trip, overrides, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from fxai_tune.rl import (
    ConfigError,
    TrainConfig,
    build_train_config,
    load_train_config,
    save_train_config,
)


def test_saved_config_loads_back_equal(tmp_path):
    config = build_train_config({"ppo": {"learning_rate": 1e-3, "n_envs": 4}, "seed": 7})
    path = save_train_config(config, tmp_path / "config.yaml")
    assert load_train_config(path) == config


def test_overrides_apply_by_dotted_path(tmp_path):
    path = save_train_config(TrainConfig(), tmp_path / "c.yaml")
    config = load_train_config(path, ["ppo.gamma=0.9", "env.windows.1h=32", "model.d_model=32"])
    assert config.ppo.gamma == 0.9
    assert config.env.windows["1h"] == 32
    assert config.model.d_model == 32


def test_unknown_key_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ppo:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert "learning_rat" in message and str(path) in message
    assert "\n" not in message


def test_out_of_range_value_names_the_field():
    with pytest.raises(ConfigError, match=r"ppo\.gamma"):
        build_train_config({"ppo": {"gamma": 1.5}})


def test_batch_larger_than_rollout_is_rejected():
    with pytest.raises(ConfigError, match="batch_size"):
        build_train_config({"ppo": {"n_envs": 2, "n_steps": 8, "batch_size": 64}})


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        build_train_config({}, ["ppo.gamma"])


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


def test_a_given_mapping_replaces_a_dict_field_whole():
    config = build_train_config({"env": {"windows": {"1h": 32, "4h": 8}}})
    assert config.env.windows == {"1h": 32, "4h": 8}
    assert build_train_config({}, ["env.windows={1h: 16}"]).env.windows == {"1h": 16}


def test_a_dotted_key_override_changes_only_that_key():
    windows = build_train_config({}, ["env.windows.1h=16"]).env.windows
    assert windows == {**TrainConfig().env.windows, "1h": 16}


def test_data_source_decides_price_side_and_pip_size_unless_given():
    synthetic = build_train_config({"data": {"source": "synthetic"}}).data
    assert synthetic.resolved_price_side == "mid"
    jpy = build_train_config({}, ["data.symbol=USDJPY"]).data
    assert jpy.resolved_pip_size == 0.01
    assert build_train_config({}, ["data.price_side=bid"]).data.resolved_price_side == "bid"

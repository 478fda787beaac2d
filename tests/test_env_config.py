"""Configuration validation: bad values fail where they enter, naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _market_fixtures import make_market, random_walk_market, small_config

from fxai_tune.env import (
    CostConfig,
    CurriculumEnvConfig,
    EnvConfig,
    RewardConfig,
    RewardWeights,
    TradingEnvironment,
    VectorTradingEnv,
)


@pytest.mark.parametrize("cls, kwargs, field", [
    (CostConfig, {"unit": "points"}, "unit"),
    (CostConfig, {"spread": -0.1}, "spread"),
    (CostConfig, {"spread": float("nan")}, "spread"),
    (CostConfig, {"rollover_multiplier": 0.0}, "rollover_multiplier"),
    (CostConfig, {"rollover_hours": [21, 24]}, "rollover_hours"),
    (CostConfig, {"slippage": -1.0}, "slippage"),
    (CostConfig, {"commission_per_lot": -2.0}, "commission_per_lot"),
    (RewardWeights, {"pnl": -1.0}, "pnl"),
    (RewardWeights, {"differential_sharpe": float("inf")}, "differential_sharpe"),
    (RewardConfig, {"scale": 0.0}, "scale"),
    (RewardConfig, {"dsr_eta": 1.0}, "dsr_eta"),
    (RewardConfig, {"inactivity_after": -1}, "inactivity_after"),
    (RewardConfig, {"max_holding": -5}, "max_holding"),
    (CurriculumEnvConfig, {"difficulty": 1.2}, "difficulty"),
    (CurriculumEnvConfig, {"min_cost_scale": -0.5}, "min_cost_scale"),
    (CurriculumEnvConfig, {"min_episode_length": 0}, "min_episode_length"),
    (CurriculumEnvConfig, {"min_volatility_quantile": 0.0}, "min_volatility_quantile"),
    (EnvConfig, {"windows": {}}, "windows"),
    (EnvConfig, {"windows": {"1h": 0}}, "windows"),
    (EnvConfig, {"windows": {"portfolio": 3}}, "windows"),
    (EnvConfig, {"position_sizes": []}, "position_sizes"),
    (EnvConfig, {"position_sizes": [1.0, -1.0]}, "position_sizes"),
    (EnvConfig, {"position_sizes": [1.0, 1.0]}, "position_sizes"),
    (EnvConfig, {"lot_size": 0.0}, "lot_size"),
    (EnvConfig, {"initial_equity": -1.0}, "initial_equity"),
    (EnvConfig, {"episode_length": 0}, "episode_length"),
    (EnvConfig, {"leverage": -1.0}, "leverage"),
    (EnvConfig, {"stop_out_level": 1.01}, "stop_out_level"),
    (EnvConfig, {"account_currency": "usd"}, "account_currency"),
    (EnvConfig, {"mode": "walk"}, "mode"),
    (EnvConfig, {"position_time_scale": 0.0}, "position_time_scale"),
])
def test_bad_config_values_raise_value_error_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_choice_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match=r"\['pips', 'price'\]"):
        CostConfig(unit="points")
    with pytest.raises(ValueError, match=r"\['random', 'sequential'\]"):
        EnvConfig(mode="walk")


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="episode_length"):
        EnvConfig(episode_length=10.5)
    with pytest.raises(TypeError, match="cost"):
        EnvConfig(cost="cheap")


def test_defaults_and_derived_values():
    config = EnvConfig(position_sizes=[2.0, 0.5], cost={"spread": 1.2})
    assert config.windows == {"1h": 64, "4h": 32, "1d": 8}
    assert config.position_sizes == [0.5, 2.0]
    assert config.n_actions == 5
    assert config.target_lots() == [-2.0, -0.5, 0.0, 0.5, 2.0]
    assert config.cost == CostConfig(spread=1.2)
    assert (config.initial_equity, config.lot_size) == (100_000.0, 100_000.0)
    assert [f.name for f in dataclasses.fields(RewardWeights)] == [
        "pnl", "transaction_cost", "drawdown", "inactivity", "holding", "differential_sharpe"]


def test_windows_naming_missing_timeframes_list_the_available_ones():
    with pytest.raises(ValueError, match=r"\['4h'\].*available timeframes: \['1h', '2h'\]"):
        TradingEnvironment(random_walk_market(100), config=EnvConfig(
            windows={"1h": 4, "4h": 2}, curriculum=CurriculumEnvConfig(min_episode_length=1)))


def test_windows_longer_than_the_data_are_rejected():
    with pytest.raises(ValueError, match="windows"):
        VectorTradingEnv(random_walk_market(20), num_envs=1,
                         config=small_config(windows={"1h": 4, "2h": 11}))


def test_spread_from_data_needs_a_spread_column():
    with pytest.raises(ValueError, match="spread_from_data"):
        TradingEnvironment(random_walk_market(100),
                           config=small_config(cost=CostConfig(spread_from_data=True)))


def test_split_without_decision_bars_is_rejected():
    market = make_market(np.linspace(1.0, 1.1, 10), start=9)
    with pytest.raises(ValueError, match="no decision bar"):
        TradingEnvironment(market, config=small_config())


def test_num_envs_must_be_positive():
    with pytest.raises(ValueError, match="num_envs"):
        VectorTradingEnv(random_walk_market(100), num_envs=0, config=small_config())

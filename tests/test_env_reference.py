"""The fast vector engine against the plain-loop reference (`_reference_accounting`) on random
configurations: direct, inverse and cross pairs, sizes, spread (configured, rollover-widened or
per bar from data), slippage (fixed, per lot, volatility-scaled), commission, penalties,
differential Sharpe, difficulty-scaled costs, orders refused for margin, stop-outs inside the
bar and after gaps (at the open, past zero equity), swaps in every unit (the reference counts
the rolls on its own calendar)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _market_fixtures import random_walk_market
from _reference_accounting import simulate

from fxai_tune.env import (
    EPISODE_KEYS,
    REWARD_COMPONENTS,
    CostConfig,
    CurriculumEnvConfig,
    EnvConfig,
    FinancingConfig,
    RewardConfig,
    RewardWeights,
    TradingEngine,
)

N_CONFIGS = 48
STEPS = 120
NUM_ENVS = 3


def random_case(seed: int):
    """A market and an `EnvConfig` drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n = 400
    side = str(rng.choice(["ask", "bid", "mid"]))
    from_data = bool(rng.random() < 0.3)
    spread = rng.uniform(0.0, 4e-4, n) if from_data else None
    # direct (EURUSD), inverse (USDCHF, also ~1.1 here) or cross (EURGBP through a GBP rate)
    symbol = str(rng.choice(["EURUSD", "USDCHF", "EURGBP"]))
    conversion_symbol = str(rng.choice(["GBPUSD", "USDGBP"])) if symbol == "EURGBP" else None
    conversion = (1.3 * np.exp(np.cumsum(1e-3 * rng.standard_normal(n)))
                  if conversion_symbol else None)
    market = random_walk_market(n, seed=seed, sigma=float(rng.choice([3e-4, 2e-3])),
                                price_side=side, spread=spread,
                                first_hour=int(rng.integers(24)), symbol=symbol,
                                conversion=conversion, conversion_symbol=conversion_symbol)
    wick = float(rng.choice([0.0, 2e-3])) * rng.random((2, n))  # highs and lows beyond the body
    # Gaps (own generator: the draws above and below stay those of earlier rounds): in half
    # the cases ~2% of the bars open away from the last close by ~4%, past the stop-out level
    # of big positions and past zero equity (the stop at the open, negative balance protection)
    gap_rng = np.random.default_rng(10_000 + seed)
    jumps = (gap_rng.random() < 0.5) * (gap_rng.random(n) < 0.02) * gap_rng.normal(0, 0.04, n)
    open_ = market.open * np.exp(jumps)
    market = dataclasses.replace(market, open=open_,
                                 high=np.maximum(open_, market.close) + wick[0],
                                 low=np.minimum(open_, market.close) - wick[1])
    n_sizes = int(rng.integers(1, 4))
    big = rng.random() < 0.3  # large positions on little margin: refusals and stop-outs
    sizes = sorted(set(np.round(rng.uniform(0.1, 20.0 if big else 3.0, n_sizes), 2).tolist()))
    cost = CostConfig(
        unit=str(rng.choice(["pips", "price"])),
        spread=float(rng.uniform(0, 2.0)) if rng.random() < 0.5 else 0.0,
        spread_from_data=from_data,
        rollover_multiplier=float(rng.uniform(1.0, 4.0)),
        rollover_hours=sorted(rng.choice(24, int(rng.integers(0, 4)), replace=False).tolist()),
        slippage=float(rng.uniform(0, 0.5)),
        slippage_per_lot=float(rng.choice([0.0, rng.uniform(0, 0.3)])),
        slippage_volatility=float(rng.choice([0.0, rng.uniform(0, 1.0)])),
        commission_per_lot=float(rng.choice([0.0, rng.uniform(0, 7.0)])))
    if cost.unit == "price":
        cost.spread *= 1e-4
        cost.slippage *= 1e-4
        cost.slippage_per_lot *= 1e-4
    swap_unit = str(rng.choice(["points", "pips", "annual_rate"]))
    swap_scale = {"points": 30.0, "pips": 3.0, "annual_rate": 0.05}[swap_unit]
    financing = FinancingConfig(unit=swap_unit,
                                swap_long=float(rng.uniform(-swap_scale, swap_scale)),
                                swap_short=float(rng.uniform(-swap_scale, swap_scale)))
    weights = RewardWeights(*(float(x) for x in rng.choice([0.0, 0.3, 1.0], 6)))
    reward = RewardConfig(weights=weights, scale=float(rng.uniform(1.0, 200.0)),
                          dsr_eta=float(rng.uniform(0.005, 0.2)),
                          inactivity_after=int(rng.integers(0, 6)),
                          max_holding=int(rng.integers(0, 6)))
    config = EnvConfig(
        windows={"1h": 4, "2h": 2}, position_sizes=sizes, mode="random",
        episode_length=int(rng.integers(5, 60)),
        # big: the largest position needs 60%-100% of the equity as margin (at a price ~1.1)
        leverage=float(max(sizes) * 1.1 / rng.uniform(0.6, 1.0) if big
                       else rng.choice([30.0, 400.0])),
        stop_out_level=float(rng.uniform(0.9, 1.0) if big else rng.uniform(0.2, 1.0)),
        position_time_scale=float(rng.uniform(1.0, 50.0)), cost=cost, financing=financing,
        reward=reward,
        curriculum=CurriculumEnvConfig(difficulty=float(rng.choice([1.0, rng.uniform()])),
                                       min_cost_scale=float(rng.uniform()),
                                       min_episode_length=int(rng.integers(1, 20))))
    return market, config, rng


def run_against_reference(seed: int) -> dict[str, int]:
    """Step the batched engine and the reference side by side; returns counts of what was seen."""
    market, config, rng = random_case(seed)
    # The engine itself (as `VectorTradingEnv` steps it), so the check does not depend on the
    # gymnasium info layout.
    engine = TradingEngine(market, config, NUM_ENVS)
    engine.rngs = [np.random.default_rng(seed + i) for i in range(NUM_ENVS)]
    engine.reset()
    starts = engine.t
    actions: list[list[int]] = [[] for _ in range(NUM_ENVS)]
    outputs: list[list[dict]] = [[] for _ in range(NUM_ENVS)]
    seen = {"steps": 0, "terminated": 0, "truncated": 0, "refused": 0, "wiped_out": 0}

    def check(i: int) -> None:
        stop = min(int(starts[i]) + engine.episode_length, engine.tables.last)
        ref = simulate(market, config, int(starts[i]), stop, actions[i],
                       cost_scale=engine.cost_scale)
        assert len(ref) == len(outputs[i])
        for got, want in zip(outputs[i], ref, strict=True):
            where = f"config seed {seed}, env {i}, start {starts[i]}"
            assert got["equity"] == pytest.approx(want["equity"], rel=1e-11), where
            assert got["reward"] == pytest.approx(want["reward"], rel=1e-8, abs=1e-9), where
            for name in REWARD_COMPONENTS:
                assert got["components"][name] == pytest.approx(
                    want["components"][name], rel=1e-8, abs=1e-9), (where, name)
            assert (got["terminated"], got["truncated"]) == (
                want["terminated"], want["truncated"]), where
            assert got["position"] == want["position"], where
            np.testing.assert_allclose(got["portfolio"], want["portfolio"], rtol=1e-5,
                                       atol=1e-6, err_msg=where)
            if "episode" in want:
                for key in EPISODE_KEYS:
                    assert got["episode"][key] == pytest.approx(
                        want["episode"][key], rel=1e-7, abs=1e-9), (where, key)

    for _ in range(STEPS):
        a = rng.integers(0, config.n_actions, NUM_ENVS)
        res = engine.step(a, autoreset=True)
        terminated, truncated = res.terminated, res.truncated
        for i in range(NUM_ENVS):
            actions[i].append(int(a[i]))
            done = bool(terminated[i] or truncated[i])
            out = {"equity": res.equity[i], "reward": res.reward[i],
                   "components": dict(zip(REWARD_COMPONENTS, res.components[:, i].tolist(),
                                          strict=True)),
                   "terminated": bool(terminated[i]), "truncated": bool(truncated[i]),
                   "position": res.position[i],
                   "portfolio": (res.final_obs if done else res.obs)["portfolio"][i].copy()}
            if done:
                out["episode"] = {k: v[i] for k, v in res.episode.items()}
            outputs[i].append(out)
            seen["steps"] += 1
            seen["terminated"] += bool(terminated[i])
            seen["truncated"] += bool(truncated[i])
            seen["wiped_out"] += bool(res.equity[i] == 0.0)
            seen["refused"] += bool(res.position[i] != engine.targets[a[i]] and not done)
            if done:
                check(i)
                starts[i] = engine.t[i]
                actions[i], outputs[i] = [], []
    for i in range(NUM_ENVS):
        check(i)  # the episodes still running
    return seen


def test_vector_engine_matches_the_plain_loop_reference_on_random_configurations():
    seen = [run_against_reference(seed) for seed in range(N_CONFIGS)]
    assert sum(s["terminated"] for s in seen) >= 5  # stop-outs were exercised
    assert sum(s["refused"] for s in seen) >= 5  # and orders the margin cannot carry
    assert sum(s["truncated"] for s in seen) >= 50
    assert sum(s["wiped_out"] for s in seen) >= 1  # gaps past zero equity


def test_the_reference_check_fails_when_the_engine_drops_commission(monkeypatch):
    """The comparison is not vacuous: an engine that forgets the commission is caught."""
    import fxai_tune.env._tables as tables_module

    original = tables_module.MarketTables.__init__

    def without_commission(self, market, config):
        cost = CostConfig(**{**vars(config.cost), "commission_per_lot": 0.0})
        original(self, market, EnvConfig(**{**vars(config), "cost": cost}))

    monkeypatch.setattr(tables_module.MarketTables, "__init__", without_commission)
    seed = next(s for s in range(N_CONFIGS) if random_case(s)[1].cost.commission_per_lot > 0)
    with pytest.raises(AssertionError):
        run_against_reference(seed)

"""Env steps/s of `VectorTradingEnv` (64 envs) against gym-anytrading's ``forex-v0``.

Both run in the same process on the shipped EUR/USD 2017 hourly ASK bars with uniformly random
actions (drawn up front so action sampling is not timed); episodes restart on their own
(same-step autoreset for ours, ``reset()`` on ``terminated or truncated`` for ``forex-v0``).
An env step is one account advancing one bar, so the vector env's figure is
``num_envs x vector steps / s``.

Usage:
    python scripts/bench_env.py [--num-envs 64] [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from fxai_tune.data._market import MarketData
from fxai_tune.env import EnvConfig, VectorTradingEnv

WINDOWS = {"1h": 64, "4h": 32, "1d": 8}


def load_market() -> tuple[MarketData, str]:
    """The default training split through `DataManager`, or a stand-in while it is missing."""
    try:
        from fxai_tune.data import DataConfig, DataManager
    except ImportError:
        return _standin_market(), "stand-in MarketData (8 features) built from gym-anytrading CSV"
    return (DataManager(DataConfig(), windows=WINDOWS).market("train"),
            "DataManager(DataConfig()).market('train')")


def _standin_market() -> MarketData:
    """EUR/USD 2017 1h ASK bars with 8 numpy features per timeframe (4h, 1d: fixed blocks)."""
    from gym_anytrading.datasets import FOREX_EURUSD_1H_ASK as df

    o, h, l, c = (df[k].to_numpy(np.float64) for k in ("Open", "High", "Low", "Close"))
    n = len(c)
    rng = np.random.default_rng(0)
    features, last_complete = {}, {}
    for tf, size in (("1h", 1), ("4h", 4), ("1d", 24)):
        features[tf] = rng.standard_normal((n // size, 8)).astype(np.float32)
        last_complete[tf] = np.minimum((np.arange(n) + 1) // size - 1, n // size - 1)
    ts = np.datetime64("2017-01-01T22:00", "ns") + np.arange(n) * np.timedelta64(1, "h")
    logret = np.diff(np.log(c), prepend=np.log(c[0]))
    vol = np.sqrt(np.convolve(logret**2, np.ones(24) / 24)[:n])
    return MarketData(
        name="train", timestamps=ts, open=o, high=h, low=l, close=c, price_side="ask",
        spread=None, hour_of_day=((np.arange(n) + 22) % 24).astype(np.int8), features=features,
        last_complete=last_complete, feature_names=tuple(f"f{i}" for i in range(8)),
        base_timeframe="1h", start=0, end=int(0.7 * n), pip_size=1e-4, periods_per_year=6240.0,
        volatility=vol)


def _timed(run: Callable[[int], None], seconds: float) -> float:
    """Calls of ``run(k)`` per second over about ``seconds`` (after one warm-up call)."""
    run(0)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(calls)
        calls += 1
    return calls / (time.perf_counter() - start)


def bench_vector(market: MarketData, num_envs: int, seconds: float) -> float:
    """Env steps/s of `VectorTradingEnv` with the default `EnvConfig` (and its windows)."""
    env = VectorTradingEnv(market, num_envs=num_envs, config=EnvConfig(windows=dict(WINDOWS)))
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, (4096, num_envs))

    def run(k: int) -> None:
        env.step(actions[k & 4095])

    return num_envs * _timed(run, seconds)


def bench_anytrading(seconds: float) -> float:
    """Env steps/s of ``gymnasium.make("forex-v0")`` (one env, its own EUR/USD 1h ASK data)."""
    import gym_anytrading  # noqa: F401  (registers forex-v0)
    import gymnasium as gym

    env = gym.make("forex-v0")
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 4096).tolist()

    def run(k: int) -> None:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    return 256 * _timed(run, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64, help="sub-envs of the vector env")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each env")
    args = parser.parse_args()
    market, source = load_market()
    print(f"market: {source}; {len(market.close)} bars, decisions in "
          f"[{market.start}, {market.end - 1}), features per timeframe "
          f"{ {tf: f.shape[1] for tf, f in market.features.items()} }")
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(bench_vector(market, args.num_envs, args.seconds))
        theirs.append(bench_anytrading(args.seconds))
    best_ours, best_theirs = max(ours), max(theirs)
    print(f"VectorTradingEnv x{args.num_envs}: {best_ours:,.0f} env steps/s "
          f"(runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"gym-anytrading forex-v0:   {best_theirs:,.0f} env steps/s "
          f"(runs: {', '.join(f'{x:,.0f}' for x in theirs)})")
    print(f"ratio (best / best): {best_ours / best_theirs:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()

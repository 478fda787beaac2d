"""Env steps/s of `VectorTradingEnv` (64 envs) against gym-anytrading's ``forex-v0``.

Both run in the same process on the shipped EUR/USD 2017 hourly ASK bars with uniformly random
actions (drawn up front so action sampling is not timed); episodes restart on their own
(same-step autoreset for ours, ``reset()`` on ``terminated or truncated`` for ``forex-v0``).
An env step is one account advancing one bar, so the vector env's figure is
``num_envs x vector steps / s``. The vector env is timed with ``copy=True`` (new observation
arrays every step, the default) and ``copy=False`` (its observation buffers, as the PPO
training env uses it), alternating with ``forex-v0`` in the same run.

It also times one forward pass (``no_grad``, eval mode, one torch thread) of the default policy
(`build_policy` with ``ModelConfig()``) at the vector env's batch, the work that consumes each
vector step during rollout collection, and prints the ratio (target: the env >= 50x faster;
issue 13).

``--breakdown`` then times every statement of ``TradingEngine.step`` in both copy modes (each
line followed by a ``perf_counter_ns`` probe whose own cost is subtracted; minimum over batches
of 200 steps, which filters out other processes on a shared machine).

``forex-v0`` comes with the ``bench`` extra (``pip install -e ".[bench]"``); without it the
comparison is skipped with a one-line note and the rest runs.

Usage:
    python scripts/bench_env.py [--num-envs 64] [--seconds 3] [--repeats 3] [--breakdown]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import textwrap
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import fxai_tune.env._engine as engine_module
from fxai_tune.data import DataConfig, DataManager, MarketData
from fxai_tune.env import EnvConfig, TradingEnvironment, VectorTradingEnv

WINDOWS = {"1h": 64, "4h": 32, "1d": 8}


def load_market() -> MarketData:
    """The training split of the default data set (the shipped EUR/USD sample)."""
    return DataManager(DataConfig(), windows=WINDOWS).market("train")


def _timed(run: Callable[[int], None], seconds: float) -> float:
    """Calls of ``run(k)`` per second over about ``seconds`` (after one warm-up call)."""
    run(0)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(calls)
        calls += 1
    return calls / (time.perf_counter() - start)


def bench_vector(market: MarketData, num_envs: int, seconds: float, *, copy: bool = True
                 ) -> float:
    """Env steps/s of `VectorTradingEnv` with the default `EnvConfig` (and its windows)."""
    env = VectorTradingEnv(market, num_envs=num_envs, config=EnvConfig(windows=dict(WINDOWS)),
                           copy=copy)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, (4096, num_envs))

    def run(k: int) -> None:
        env.step(actions[k & 4095])

    return num_envs * _timed(run, seconds)


def bench_single(market: MarketData, seconds: float) -> float:
    """Env steps/s of one `TradingEnvironment` (the engine with N=1), reset at episode ends."""
    env = TradingEnvironment(market, config=EnvConfig(windows=dict(WINDOWS)))
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 4096).tolist()

    def run(k: int) -> None:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    return 256 * _timed(run, seconds)


ANYTRADING_MISSING = ("gym-anytrading forex-v0: skipped, gym-anytrading is not installed "
                      '(pip install -e ".[bench]" to compare)')


def anytrading_installed() -> bool:
    """Whether gym-anytrading (the ``bench`` extra) can be imported."""
    return importlib.util.find_spec("gym_anytrading") is not None


def _versus(rate: float, theirs: float | None, *, digits: int = 1) -> str:
    """``", 12.3x forex-v0"``, or nothing when forex-v0 was not timed."""
    return f", {rate / theirs:.{digits}f}x forex-v0" if theirs else ""


def bench_anytrading(seconds: float) -> float:
    """Env steps/s of ``gymnasium.make("forex-v0")`` (one env, its own EUR/USD 1h ASK data)."""
    import gym_anytrading  # noqa: F401  (registers forex-v0)
    import gymnasium as gym

    warnings.filterwarnings("ignore", module="gymnasium")  # its checker's notes on forex-v0
    env = gym.make("forex-v0")
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 4096).tolist()

    def run(k: int) -> None:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    return 256 * _timed(run, seconds)


def bench_policy(market: MarketData, num_envs: int, seconds: float) -> float:
    """Seconds per forward pass of the default policy on a batch of ``num_envs`` observations."""
    import torch

    from fxai_tune.model import ModelConfig, build_policy

    torch.set_num_threads(1)
    env = VectorTradingEnv(market, num_envs=num_envs, config=EnvConfig(windows=dict(WINDOWS)))
    obs, _ = env.reset(seed=0)
    policy = build_policy(env.single_observation_space, env.single_action_space, ModelConfig())
    policy.eval()
    batch = {k: torch.as_tensor(v) for k, v in obs.items()}

    def run(k: int) -> None:
        with torch.no_grad():
            policy(batch)

    return 1.0 / _timed(run, seconds)


def _probed(func: Callable, inner: str, label: str, totals: dict[str, int]) -> Callable:
    """``func`` recompiled with a timer after each statement of its (possibly nested) function
    ``inner``; times accumulate in ``totals`` under ``"label line: source"``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))

    class Probe(ast.NodeTransformer):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
            self.generic_visit(node)
            if node.name != inner:
                return node
            body: list[ast.stmt] = ast.parse("_t0 = _clock()").body
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    continue  # docstring
                key = f"{label} {stmt.lineno:3d}: {ast.unparse(stmt).splitlines()[0][:70]}"
                totals[key] = 0
                tick = ast.parse(f"_totals[{key!r}] += _clock() - _t0; _t0 = _clock()").body
                body.extend(tick[:1] + [stmt] if isinstance(stmt, ast.Return) else [stmt, *tick])
            node.body = body
            return node

    tree = ast.fix_missing_locations(Probe().visit(tree))
    namespace: dict[str, Any] = {**vars(inspect.getmodule(func)), "_clock": time.perf_counter_ns,
                                 "_totals": totals}
    exec(compile(tree, f"<probed {func.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace[func.__name__]


def breakdown(market: MarketData, num_envs: int, batches: int = 100, *, copy: bool = True
              ) -> None:
    """Print the cost of every statement of one vector step (see the module docstring)."""
    totals: dict[str, int] = {}
    step = engine_module.TradingEngine.step
    engine_module.TradingEngine.step = _probed(step, "step", "engine", totals)
    try:
        _time_statements(market, num_envs, batches, totals, copy)
    finally:
        engine_module.TradingEngine.step = step


def _time_statements(market: MarketData, num_envs: int, batches: int,
                     totals: dict[str, int], copy: bool) -> None:
    env = VectorTradingEnv(market, num_envs=num_envs, config=EnvConfig(windows=dict(WINDOWS)),
                           copy=copy)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, (4096, num_envs))
    probe: dict[str, int] = {"probe": 0}
    clock = time.perf_counter_ns
    probe_ns = []
    for _ in range(200):
        t0 = start = clock()
        for _ in range(100):
            probe["probe"] += clock() - t0
            t0 = clock()
        probe_ns.append((clock() - start) / 100)
    tick = min(probe_ns)
    best = dict.fromkeys(totals, float("inf"))
    for b in range(batches):
        for key in totals:
            totals[key] = 0
        for k in range(200):
            env.step(actions[(200 * b + k) & 4095])
        for key, ns in totals.items():
            best[key] = min(best[key], max(0.0, ns / 200 - tick) / 1000)
    print(f"per-statement cost of one VectorTradingEnv x{num_envs} step with copy={copy}, us:")
    for key, us in best.items():
        print(f"{us:7.2f}  {key}")
    own = sum(best.values())
    print(f"{own:7.2f}  total of the statements (probe cost {tick / 1000:.3f} us subtracted "
          "from each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64, help="sub-envs of the vector env")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each env")
    parser.add_argument("--scaling", type=int, nargs="*", default=[16, 256, 1024],
                        help="other vector sizes to time once each (after the comparison)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time every statement of one step at --num-envs")
    args = parser.parse_args()
    market = load_market()
    print(f"market: DataManager(DataConfig()).market('train'), {len(market.close)} bars, "
          f"decisions in [{market.start}, {market.end - 1}), features per timeframe "
          f"{ {tf: f.shape[1] for tf, f in market.features.items()} }")
    ours: dict[bool, list[float]] = {True: [], False: []}
    compare = anytrading_installed()
    theirs = []
    for _ in range(args.repeats):
        for copy in (True, False):
            ours[copy].append(bench_vector(market, args.num_envs, args.seconds, copy=copy))
        if compare:
            theirs.append(bench_anytrading(args.seconds))
    best_theirs = max(theirs) if theirs else None
    if best_theirs:
        print(f"gym-anytrading forex-v0: {best_theirs:,.0f} env steps/s "
              f"(runs: {', '.join(f'{x:,.0f}' for x in theirs)})")
    else:
        print(ANYTRADING_MISSING)
    for copy, rates in ours.items():
        best = max(rates)
        ratio = f"; ratio (best / best): {best / best_theirs:.1f}x" if best_theirs else ""
        print(f"VectorTradingEnv x{args.num_envs}, copy={copy}: {best:,.0f} env steps/s, "
              f"{1e6 * args.num_envs / best:.1f} us per vector step "
              f"(runs: {', '.join(f'{x:,.0f}' for x in rates)}){ratio}")
    forward = bench_policy(market, args.num_envs, args.seconds)
    step = args.num_envs / max(max(rates) for rates in ours.values())
    print(f"default policy forward at batch {args.num_envs}: {1e3 * forward:.2f} ms; vector "
          f"step {1e6 * step:.1f} us: the env is {forward / step:,.0f}x faster (target >= 50x)")
    single = bench_single(market, args.seconds)
    print(f"TradingEnvironment (single): {single:,.0f} env steps/s"
          f"{_versus(single, best_theirs, digits=2)}")
    for n in args.scaling:
        for copy in (True, False):
            rate = bench_vector(market, n, args.seconds, copy=copy)
            print(f"VectorTradingEnv x{n}, copy={copy}: {rate:,.0f} env steps/s"
                  f"{_versus(rate, best_theirs)}, {1e6 * n / rate:.1f} us per vector step")
    if args.breakdown:
        for copy in (True, False):
            breakdown(market, args.num_envs, copy=copy)


if __name__ == "__main__":
    main()

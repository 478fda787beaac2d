"""Backtest reports: a policy next to buy-and-hold, flat and random baselines on one split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fxai_tune.data import DataManager
from fxai_tune.rl._config import TrainConfig
from fxai_tune.rl._envs import make_data_manager, make_vector_env
from fxai_tune.rl._evaluation import ActionFn, EpisodeResult, policy_actions, run_episodes
from fxai_tune.rl._train import TrainingRun

__all__ = [
    "REPORT_COLUMNS",
    "backtest",
    "baseline_policies",
    "final_report",
    "load_best_weights",
    "plot_equity",
    "win_rate",
]

REPORT_COLUMNS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "reward")


def win_rate(stats: dict[str, float]) -> float:
    """Winning share of closed trades (0 when none closed)."""
    closed = stats.get("wins", 0.0) + stats.get("losses", 0.0)
    return stats.get("wins", 0.0) / closed if closed else 0.0


def baseline_policies(n_actions: int, *, seed: int) -> dict[str, Callable[[], ActionFn]]:
    """Factories of the baseline action functions for an env with ``n_actions`` levels.

    Actions index target positions ordered from the largest short to the largest long, the
    middle one being flat (see `EnvConfig`).
    """

    def constant(action: int) -> Callable[[], ActionFn]:
        def make() -> ActionFn:
            return lambda obs: np.full(_batch_size(obs), action, dtype=np.int64)

        return make

    def random() -> ActionFn:
        rng = np.random.default_rng(seed)
        return lambda obs: rng.integers(0, n_actions, size=_batch_size(obs))

    return {
        "buy_and_hold": constant(n_actions - 1),
        "flat": constant(n_actions // 2),
        "random": random,
    }


def _batch_size(obs: np.ndarray | dict) -> int:
    first = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return int(np.asarray(first).shape[0])


def backtest(
    config: TrainConfig,
    policies: dict[str, Callable[[], ActionFn]],
    *,
    split: str = "val",
    data: DataManager | None = None,
) -> dict[str, EpisodeResult]:
    """One deterministic full pass of ``split`` per policy; returns each one's result.

    Args:
        config: Run configuration (data and env settings).
        policies: Name -> factory of an action function (a fresh one per pass).
        split: "train", "val" or "test" ("test" only for a final report).
        data: Already loaded market data; loaded from ``config.data`` if None.
    """
    if config.env_id is not None:
        raise ValueError(f"backtest needs the FX env; env_id={config.env_id!r} is set")
    data = data if data is not None else make_data_manager(config)
    results = {}
    for name, make_policy in policies.items():
        env = make_vector_env(config, split, num_envs=1, data=data)
        try:
            (result,) = run_episodes(
                env, make_policy(), seed=config.seed, initial_equity=config.env.initial_equity
            )
        finally:
            env.close()
        result.stats["win_rate"] = win_rate(result.stats)
        results[name] = result
    return results


def plot_equity(results: dict[str, EpisodeResult], path: str | Path, *, title: str) -> Path:
    """Equity curves of several policies in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name, result in results.items():
        axis.plot(result.equity, label=name, linewidth=1.2)
    axis.set_xlabel("bar")
    axis.set_ylabel("equity")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def load_best_weights(module: torch.nn.Module, checkpoint_path: str | Path) -> None:
    """Load the policy weights of a Lightning checkpoint (weights_only, no code execution)."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])


def final_report(run: TrainingRun, *, split: str = "test") -> dict[str, dict[str, float]]:
    """The trained policy (best checkpoint) next to the baselines on ``split``.

    Writes ``report.json`` and, for the FX env, ``equity_<split>.png`` into the run directory.
    The test split is read here and nowhere else.
    """
    config, module = run.config, run.module
    best = run.checkpoint.best_model_path
    if best:
        load_best_weights(module, best)
    module.eval()
    device = module.device
    agent = {"agent": lambda: policy_actions(module.policy, device)}
    if config.env_id is not None:
        env = make_vector_env(config, split, num_envs=config.trainer.val_episodes)
        try:
            results = {"agent": run_episodes(env, agent["agent"](), seed=config.seed + 20_000)}
        finally:
            env.close()
        table = {
            "agent": {"reward": float(np.mean([r.stats["reward"] for r in results["agent"]]))}
        }
    else:
        data = run.datamodule.data
        policies = {**agent, **baseline_policies(config.env.n_actions, seed=config.seed)}
        fx_results = backtest(config, policies, split=split, data=data)
        table = {name: dict(result.stats) for name, result in fx_results.items()}
        plot_equity(
            fx_results, run.run_dir / f"equity_{split}.png", title=f"equity on the {split} split"
        )
    (run.run_dir / "report.json").write_text(json.dumps({"split": split, "results": table}, indent=2))
    return table

"""Running a fixed policy over whole episodes: validation, test reports and baselines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from fxai_tune.env import EPISODE_INFO_KEY
from fxai_tune.rl._config import VAL_SCORES
from fxai_tune.stats import trading_metrics

__all__ = [
    "EpisodeResult",
    "Evaluation",
    "ActionFn",
    "completed_episodes",
    "run_episodes",
    "summarize_episodes",
]


# gymnasium's RecordEpisodeStatistics names -> ours
_GENERIC_KEYS = {"r": "reward", "l": "length"}

ActionFn = Callable[[np.ndarray | dict], np.ndarray]
"""Maps a batch of observations to one action per env (`PPOLightningModule.predict_action`
for the agent, the report's baselines otherwise)."""


@dataclass
class EpisodeResult:
    """Statistics of one finished episode and, for the FX env, its per-bar record.

    ``log_returns[t]`` is the net log return of equity over step ``t`` (P&L after costs, no
    shaping), ``positions[t]`` the position held over that step, and ``equity`` the curve
    they make (one value more: the start).
    """

    stats: dict[str, float]
    equity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Evaluation:
    """One validation (or test) pass: its episodes and the metrics they make together.

    For the FX env the episodes are the contiguous windows of the split in time order, and
    ``log_returns`` / ``positions`` their per-bar records joined: one pass over the split.
    """

    episodes: list[EpisodeResult]
    metrics: dict[str, float]
    log_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    periods_per_year: float | None = None


def summarize_episodes(
    episodes: list[EpisodeResult], *, score: str, periods_per_year: float | None
) -> Evaluation:
    """Metrics of a pass: trading metrics of the joined net equity record (FX env) or episode
    means (other envs), plus ``episode_reward``, the score a tuner may compare.

    ``episode_reward`` is the trading metric ``score`` for the FX env (no shaping weight
    touches it) and the mean episode return of the env's own reward for other envs;
    ``shaped_reward`` is the sum of the FX env's shaped training reward over the pass.
    """
    if not episodes:
        raise ValueError("no episode to summarise")
    if periods_per_year is None or episodes[0].log_returns.size == 0:
        metrics = {
            k: float(np.mean([e.stats[k] for e in episodes])) for k in episodes[0].stats
        }
        metrics["episode_reward"] = metrics.pop("reward")
        return Evaluation(episodes=episodes, metrics=metrics)
    if score not in VAL_SCORES:
        raise ValueError(f"trainer.val_score must be one of {VAL_SCORES}; got {score!r}")
    log_returns = np.concatenate([e.log_returns for e in episodes])
    positions = np.concatenate([e.positions for e in episodes])
    metrics = trading_metrics(log_returns, positions, periods_per_year)
    metrics["episode_reward"] = float(metrics[score])
    metrics["shaped_reward"] = float(sum(e.stats["reward"] for e in episodes))
    metrics["length"] = float(log_returns.size)
    wins = sum(e.stats.get("wins", 0.0) for e in episodes)
    closed = wins + sum(e.stats.get("losses", 0.0) for e in episodes)
    metrics["win_rate"] = float(wins / closed) if closed else 0.0
    return Evaluation(
        episodes=episodes,
        metrics=metrics,
        log_returns=log_returns,
        positions=positions,
        periods_per_year=float(periods_per_year),
    )


def completed_episodes(info: dict) -> list[tuple[int, dict[str, float]]]:
    """(env index, episode statistics) for every episode that ended in this step's info: the
    FX env's ``trading_episode``, else gymnasium's ``RecordEpisodeStatistics`` ``episode``."""
    key = EPISODE_INFO_KEY if EPISODE_INFO_KEY in info else "episode"
    episode, mask = info.get(key), info.get(f"_{key}")
    if episode is None or mask is None:
        return []
    rows = []
    for i in np.flatnonzero(mask):
        rows.append((int(i), {_GENERIC_KEYS.get(k, k): float(v[i]) for k, v in episode.items()}))
    return rows


def _net_log_return(info: dict) -> np.ndarray | None:
    components = info.get("reward_components")
    if components is None or "pnl" not in components:
        return None
    return np.asarray(components["pnl"]) + np.asarray(components["transaction_cost"])


def run_episodes(
    env: gym.vector.VectorEnv,
    act: ActionFn,
    *,
    seed: int | None = None,
    initial_equity: float = 1.0,
    max_steps: int = 10_000_000,
) -> list[EpisodeResult]:
    """Run one episode in each sub-env of ``env`` with the action function ``act``.

    Sub-envs that finish early are stepped on (their later episodes are ignored), so the
    batch shape stays fixed. For the FX env, the equity curve is rebuilt from the net log
    return (pnl + transaction_cost components) of each step.

    Args:
        env: Vector env with same-step autoreset.
        act: Maps a batched numpy observation to an array of actions.
        seed: Reset seed.
        initial_equity: Starting value of the returned equity curves.
        max_steps: Give up (RuntimeError) if the episodes have not all ended by then.
    """
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    results: list[EpisodeResult | None] = [None] * n
    log_returns: list[list[float]] = [[] for _ in range(n)]
    positions: list[list[float]] = [[] for _ in range(n)]
    for _ in range(max_steps):
        if all(r is not None for r in results):
            break
        obs, _, _, _, info = env.step(act(obs))
        net = _net_log_return(info)
        if net is not None:
            position = np.asarray(info.get("position", np.zeros(n)), dtype=np.float64)
            for i in range(n):
                if results[i] is None:
                    log_returns[i].append(float(net[i]))
                    positions[i].append(float(position[i]))
        for i, stats in completed_episodes(info):
            if results[i] is None:
                returns = np.asarray(log_returns[i], dtype=np.float64)
                curve = initial_equity * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
                results[i] = EpisodeResult(
                    stats=stats,
                    equity=curve,
                    log_returns=returns,
                    positions=np.asarray(positions[i], dtype=np.float64),
                )
    if any(r is None for r in results):
        raise RuntimeError(
            f"episodes did not end within {max_steps} steps; does the env report "
            f"info[{EPISODE_INFO_KEY!r}] or info['episode'] (wrap it in "
            "RecordEpisodeStatistics)?"
        )
    return [r for r in results if r is not None]

"""Running a fixed policy over whole episodes: validation, test reports and baselines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from fxai_tune.rl._buffer import to_tensor

__all__ = ["EpisodeResult", "completed_episodes", "run_episodes"]

# gymnasium's RecordEpisodeStatistics names -> ours
_GENERIC_KEYS = {"r": "reward", "l": "length"}

ActionFn = Callable[[np.ndarray | dict], np.ndarray]


@dataclass
class EpisodeResult:
    """Statistics of one finished episode and, for the FX env, its equity curve."""

    stats: dict[str, float]
    equity: np.ndarray = field(default_factory=lambda: np.zeros(0))


def completed_episodes(info: dict) -> list[tuple[int, dict[str, float]]]:
    """(env index, episode statistics) for every episode that ended in this step's info."""
    episode, mask = info.get("episode"), info.get("_episode")
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
    for _ in range(max_steps):
        if all(r is not None for r in results):
            break
        obs, _, _, _, info = env.step(act(obs))
        net = _net_log_return(info)
        if net is not None:
            for i in range(n):
                if results[i] is None:
                    log_returns[i].append(float(net[i]))
        for i, stats in completed_episodes(info):
            if results[i] is None:
                curve = initial_equity * np.exp(np.cumsum([0.0] + log_returns[i]))
                results[i] = EpisodeResult(stats=stats, equity=curve)
    if any(r is None for r in results):
        raise RuntimeError(
            f"episodes did not end within {max_steps} steps; does the env report "
            "info['episode'] (wrap it in RecordEpisodeStatistics)?"
        )
    return [r for r in results if r is not None]


def policy_actions(
    policy: torch.nn.Module, device: torch.device, *, deterministic: bool = True
) -> ActionFn:
    """An action function from a policy network (argmax or sampled)."""

    @torch.inference_mode()
    def act(obs: np.ndarray | dict) -> np.ndarray:
        logits = policy.actor_logits(to_tensor(obs, device))
        if deterministic:
            actions = logits.argmax(dim=-1)
        else:
            actions = torch.multinomial(logits.softmax(dim=-1), 1).squeeze(-1)
        return actions.cpu().numpy()

    return act

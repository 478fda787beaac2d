"""Backtest reports: a policy next to buy-and-hold, flat and random baselines on one split.

`final_report` is the test-split report of a trained run: each policy's trading metrics
(`fxai_tune.stats.trading_metrics` of its net equity pass), stationary-bootstrap confidence
intervals of its Sharpe and total return, the search's DSR and PBO when the config came from
``fxai-tune export-best`` (``config.provenance``) and a one-sentence verdict
(`edge_verdict`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fxai_tune.data import DataManager
from fxai_tune.rl._config import TrainConfig
from fxai_tune.rl._envs import make_data_manager, make_vector_env
from fxai_tune.rl._evaluation import ActionFn, EpisodeResult, run_episodes
from fxai_tune.rl._train import TrainingRun
from fxai_tune.stats import (
    OVERFIT_PBO,
    SIGNIFICANT_DSR,
    ConfidenceInterval,
    bootstrap_confidence_interval,
    trading_metrics,
)

__all__ = [
    "BOOTSTRAP_CONFIDENCE",
    "BOOTSTRAP_RESAMPLES",
    "OVERFIT_PBO",
    "REPORT_COLUMNS",
    "SIGNIFICANT_DSR",
    "FinalReport",
    "backtest",
    "baseline_policies",
    "edge_verdict",
    "final_report",
    "load_best_weights",
    "pass_metrics",
    "plot_equity",
    "policy_intervals",
    "search_lines",
    "win_rate",
]

REPORT_COLUMNS = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "exposure",
    "win_rate",
    "reward",
)
"""Columns of a printed report, in order (``reward``: the env's own, shaped, episode reward)."""

BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BASELINE_LABELS = {"buy_and_hold": "buy-and-hold", "flat": "flat", "random": "random"}


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


def pass_metrics(result: EpisodeResult, periods_per_year: float) -> dict[str, float]:
    """Report row of one FX pass: `trading_metrics` of its net log returns and positions,
    plus ``win_rate`` (closed trades) and ``reward`` (the env's shaped episode reward)."""
    metrics = trading_metrics(result.log_returns, result.positions, periods_per_year)
    metrics["win_rate"] = float(win_rate(result.stats))
    metrics["reward"] = float(result.stats.get("reward", 0.0))
    return metrics


def policy_intervals(
    log_returns: np.ndarray,
    periods_per_year: float,
    *,
    seed: int,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, ConfidenceInterval] | None:
    """Stationary-bootstrap intervals of the Sharpe and total return of one pass (None when
    the pass has fewer than 2 bars)."""
    if np.asarray(log_returns).size < 2:
        return None
    return {
        statistic: bootstrap_confidence_interval(
            log_returns,
            statistic,
            periods_per_year=periods_per_year,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        for statistic in ("sharpe", "total_return")
    }


def _interval_dict(interval: ConfidenceInterval) -> dict[str, Any]:
    return {
        "low": interval.low,
        "high": interval.high,
        "estimate": interval.estimate,
        "confidence": interval.confidence,
        "block_length": interval.block_length,
        "n_resamples": interval.n_resamples,
    }


def _bounds(interval: ConfidenceInterval | Mapping[str, float] | tuple[float, float]) -> tuple:
    if isinstance(interval, Mapping):
        return float(interval["low"]), float(interval["high"])
    low, high = interval
    return float(low), float(high)


def _confidence(interval: Any, default: float) -> float:
    if isinstance(interval, Mapping):
        return float(interval.get("confidence", default))
    return float(getattr(interval, "confidence", default))


def _percent(value: float) -> str:
    return f"{100 * value:+.2f}%"


def _listing(items: list[str], conjunction: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, null or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _search_stats(search: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The search statistics of a provenance (its ``"search"``) or of a bare statistics dict."""
    if not search:
        return {}
    inner = search.get("search")
    return inner if isinstance(inner, Mapping) else search


def _search_caveats(search: Mapping[str, Any] | None) -> list[str]:
    stats = _search_stats(search)
    dsr = _number(stats.get("deflated_sharpe_ratio"))
    pbo = _number(stats.get("probability_of_backtest_overfitting"))
    caveats = []
    if dsr is not None and dsr < SIGNIFICANT_DSR:
        caveats.append(
            f"the search's best trial is not significant after deflation "
            f"(DSR {dsr:.2f} < {SIGNIFICANT_DSR})"
        )
    if pbo is not None and pbo > OVERFIT_PBO:
        caveats.append(f"the search's selection is likely overfit (PBO {pbo:.2f} > {OVERFIT_PBO})")
    return caveats


def edge_verdict(
    results: Mapping[str, Mapping[str, Any]],
    intervals: Mapping[str, Mapping[str, Any]],
    search: Mapping[str, Any] | None = None,
    *,
    split: str = "test",
) -> str:
    """One plain sentence: does the agent show an edge on the reported split?

    The agent has an edge only if the lower bound of its Sharpe confidence interval is above
    0 AND its total return beats every baseline in ``results`` (buy-and-hold, flat, random;
    flat counts as 0 when absent). A search caveat follows when the config's provenance says
    the search's best trial is not significant after deflation (DSR < `SIGNIFICANT_DSR`) or
    its selection is likely overfit (PBO > `OVERFIT_PBO`). Pure: the same inputs (e.g. those
    of a ``report.json``) give the same sentence.

    Args:
        results: Policy -> metrics with ``total_return``; ``"agent"`` is the policy judged.
        intervals: Policy -> {"sharpe": interval, ...}; an interval is a `ConfidenceInterval`,
            a ``{"low", "high", "confidence"}`` mapping or a ``(low, high)`` pair.
        search: ``config.provenance`` (its ``"search"`` holds ``deflated_sharpe_ratio`` and
            ``probability_of_backtest_overfitting``), that ``"search"`` dict itself, or None.
        split: The split named in the sentence.
    """
    agent = results.get("agent")
    agent_intervals = intervals.get("agent") or {}
    if agent is None or "total_return" not in agent or "sharpe" not in agent_intervals:
        return (
            "No verdict: this report has no trading metrics or Sharpe interval for the agent, "
            "so it says nothing about an edge."
        )
    sharpe_ci = agent_intervals["sharpe"]
    low, high = _bounds(sharpe_ci)
    level = f"{100 * _confidence(sharpe_ci, BOOTSTRAP_CONFIDENCE):g}%"
    ci_text = f"Sharpe {level} CI [{low:.2f}, {high:.2f}]"
    agent_return = float(agent["total_return"])
    baselines = {
        name: float(row["total_return"])
        for name, row in results.items()
        if name != "agent" and "total_return" in row
    }
    baselines.setdefault("flat", 0.0)
    names = [n for n in BASELINE_LABELS if n in baselines]
    names += [n for n in baselines if n not in BASELINE_LABELS]
    unbeaten = [n for n in names if not agent_return > baselines[n]]
    versus = _listing([f"{BASELINE_LABELS.get(n, n)} ({_percent(baselines[n])})" for n in names])
    caveats = _search_caveats(search)
    if low > 0 and not unbeaten:
        sentence = (
            f"Edge on the {split} split: the agent's {ci_text} is above 0 and its return "
            f"{_percent(agent_return)} beats {versus}"
        )
        if caveats:
            sentence += "; but " + " and ".join(caveats) + ", so treat it with caution"
        return sentence + "."
    reasons = []
    if low <= 0:
        where = "is entirely below 0" if high < 0 else "includes 0"
        reasons.append(f"the agent's {ci_text} {where}")
    if unbeaten:
        missed = _listing(
            [f"{BASELINE_LABELS.get(n, n)} ({_percent(baselines[n])})" for n in unbeaten], "or"
        )
        subject = "its" if reasons else "the agent's"
        reasons.append(f"{subject} return {_percent(agent_return)} does not beat {missed}")
    sentence = (
        f"No edge: on the {split} split "
        + " and ".join(reasons)
        + " — this is not evidence of an edge"
    )
    if caveats:
        sentence += "; moreover " + " and ".join(caveats)
    return sentence + "."


def search_lines(search: Mapping[str, Any] | None) -> list[str]:
    """Plain lines on where the config came from and the search's DSR and PBO (none when the
    config has no provenance)."""
    if not search:
        return []
    stats = _search_stats(search)
    origin = f"study {search.get('study', '?')!s}, trial {search.get('trial', '?')!s}"
    values = search.get("values", search.get("value"))
    if values is not None:
        origin += f", recorded value {values}"
    lines = [f"Config from the search ({origin})"]
    dsr = _number(stats.get("deflated_sharpe_ratio"))
    pbo = _number(stats.get("probability_of_backtest_overfitting"))
    n_trials = stats.get("n_trials", "?")
    if dsr is None:
        note = stats.get("note") or "not recorded"
        lines.append(f"Deflated Sharpe Ratio of the search's best trial: not available ({note})")
    else:
        significant = "significant" if dsr >= SIGNIFICANT_DSR else "not significant"
        lines.append(
            f"Deflated Sharpe Ratio of the search's best trial: {dsr:.3f} over {n_trials} "
            f"trials ({significant} at 5%: needs >= {SIGNIFICANT_DSR})"
        )
    if pbo is None:
        lines.append("Probability of Backtest Overfitting: not available")
    else:
        reading = (
            "selection worse than chance out of sample"
            if pbo > OVERFIT_PBO
            else "selection holds up better than chance"
        )
        lines.append(f"Probability of Backtest Overfitting: {pbo:.2f} ({reading})")
    return lines


@dataclass(frozen=True, repr=False)
class FinalReport(Mapping[str, dict[str, Any]]):
    """The test-split report of a run, as written to ``report.json``.

    A read-only mapping policy -> metrics (``results``), as `final_report` returned before,
    with the rest of the report as attributes.

    Attributes:
        split: The split reported on ("test").
        results: Policy -> metrics: `fxai_tune.stats.TRADING_METRIC_KEYS`, ``win_rate``,
            ``reward`` and, when intervals exist, ``sharpe_ci`` / ``total_return_ci`` as
            ``[low, high]``. For a gymnasium env only the agent's mean ``reward``.
        intervals: Policy -> statistic ("sharpe", "total_return") -> {low, high, estimate,
            confidence, block_length, n_resamples}.
        verdict: One sentence, `edge_verdict`.
        search: ``config.provenance`` as is (export-best: study, trial, values, ``search``
            with DSR and PBO), or None.
        weights: "last" or "best": the agent's weights.
        checkpoint: The checkpoint they came from (None: the in-memory weights after fit).
        bootstrap: How the intervals were drawn (method, confidence, n_resamples, seed).
        path: The ``report.json`` written.
    """

    split: str
    results: dict[str, dict[str, Any]]
    intervals: dict[str, dict[str, dict[str, Any]]]
    verdict: str
    search: dict[str, Any] | None
    weights: str
    checkpoint: str | None
    bootstrap: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, policy: str) -> dict[str, Any]:
        return self.results[policy]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (
            f"FinalReport(split={self.split!r}, weights={self.weights!r}, "
            f"verdict={self.verdict!r}, results={self.results!r})"
        )

    def to_json(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "split": self.split,
            "weights": self.weights,
            "checkpoint": self.checkpoint,
            "results": self.results,
            "intervals": self.intervals,
            "bootstrap": self.bootstrap,
            "verdict": self.verdict,
            "search": self.search,
        }


def _load_weights(run: TrainingRun, weights: str) -> str | None:
    """Load the requested weights into ``run.module``; the checkpoint used (None: in memory)."""
    if weights == "best":
        best = run.checkpoint.best_model_path
        if not best:
            raise ValueError(
                "weights='best' needs a best checkpoint; this run saved none (checkpointing "
                "off?); valid: weights='last'"
            )
        load_best_weights(run.module, best)
        return str(best)
    if weights != "last":
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    last = run.checkpoint.last_model_path
    if not last:
        candidate = run.run_dir / "checkpoints" / "last.ckpt"
        saving = run.trainer.checkpoint_callback is run.checkpoint
        last = str(candidate) if saving and candidate.is_file() else ""
    if last and Path(last).is_file():
        # the weights of the last validated iteration: the one the study's value describes
        load_best_weights(run.module, last)
        return str(last)
    return None  # no checkpointing: the module holds the weights at the end of fit


def final_report(
    run: TrainingRun,
    *,
    split: str = "test",
    weights: Literal["last", "best"] = "last",
    confidence: float = BOOTSTRAP_CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
) -> FinalReport:
    """The trained policy next to the baselines on ``split``, with intervals and a verdict.

    Writes ``report.json`` (`FinalReport.to_json`) and, for the FX env, ``equity_<split>.png``
    into the run directory. The test split is read here and nowhere else.

    Args:
        run: A fitted run.
        split: The split to report on.
        weights: ``"last"`` (default): the weights of the last validated iteration
            (``last.ckpt``), the model whose validation the tuner scores; ``"best"``: the best
            checkpoint by ``val/episode_reward``.
        confidence: Coverage of the bootstrap intervals.
        n_resamples: Stationary-bootstrap resamples per interval (seed ``config.seed``).

    Returns:
        The report; as a mapping it is the table policy -> metrics.
    """
    config, module = run.config, run.module
    checkpoint = _load_weights(run, weights)
    module.eval()
    agent = {"agent": lambda: module.predict_action}
    search = dict(config.provenance) if config.provenance else None
    bootstrap: dict[str, Any] = {}
    intervals: dict[str, dict[str, dict[str, Any]]] = {}
    if config.env_id is not None:
        env = make_vector_env(config, split, num_envs=config.trainer.val_episodes)
        try:
            results = {"agent": run_episodes(env, agent["agent"](), seed=config.seed + 20_000)}
        finally:
            env.close()
        table: dict[str, dict[str, Any]] = {
            "agent": {"reward": float(np.mean([r.stats["reward"] for r in results["agent"]]))}
        }
        verdict = (
            f"No verdict: {config.env_id} is not a trading env, so the report has only the "
            "mean episode reward and says nothing about an edge."
        )
    else:
        data = run.datamodule.data
        periods_per_year = float(data.periods_per_year)
        policies = {**agent, **baseline_policies(config.env.n_actions, seed=config.seed)}
        fx_results = backtest(config, policies, split=split, data=data)
        table = {}
        for name, result in fx_results.items():
            row: dict[str, Any] = pass_metrics(result, periods_per_year)
            found = policy_intervals(
                result.log_returns,
                periods_per_year,
                seed=config.seed,
                confidence=confidence,
                n_resamples=n_resamples,
            )
            if found is not None:
                intervals[name] = {k: _interval_dict(v) for k, v in found.items()}
                row["sharpe_ci"] = [found["sharpe"].low, found["sharpe"].high]
                row["total_return_ci"] = [found["total_return"].low, found["total_return"].high]
            table[name] = row
        bootstrap = {
            "method": "stationary (Politis & Romano 1994), percentile intervals",
            "confidence": float(confidence),
            "n_resamples": int(n_resamples),
            "seed": int(config.seed),
            "periods_per_year": periods_per_year,
        }
        verdict = edge_verdict(table, intervals, search, split=split)
        plot_equity(
            fx_results, run.run_dir / f"equity_{split}.png", title=f"equity on the {split} split"
        )
    path = run.run_dir / "report.json"
    report = FinalReport(
        split=split,
        results=table,
        intervals=intervals,
        verdict=verdict,
        search=search,
        weights=weights,
        checkpoint=checkpoint,
        bootstrap=bootstrap,
        path=path,
    )
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    return report

"""Scoring one trial: the path both front doors (`fxai-tune run`, the Hydra sweeper) share.

A trial trains its config once per seed and walk-forward fold, takes each run's metrics from
one validation (``reduce``: the last, or the best by the first metric), and scores the trial
as the mean over folds and seeds. What it records on the trial:

- ``fold_scores`` / ``fold_stderr``: per-fold score (mean over seeds) of every objective and
  its standard error across folds; ``seed_scores`` / ``seed_spread``: per-seed score (mean
  over folds) and their standard deviation, the spread a retrain with another seed shows;
- ``val_metrics``: the scored validation's metrics (first seed, last fold);
- ``val_returns``: the per-bar net log returns of the scored validations of the first seed,
  folds joined in time order (`encode_returns`), for the study's overfitting statistics;
- artifacts of one and the same model per fold (first seed): the scored validation's equity
  curve, the metrics CSV and the checkpoint it was scored with; pruned trials keep theirs.

Pruning (single objective, first seed only): each fold reports its validations to the trial
at steps that continue across folds (fold ``k``'s ``i``-th validation at step
``k * V + i``, ``V`` validations per fold), so the configured pruner compares every trial with
the others on the same fold window at the same point of training. See ``docs/tuning.md``.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import signal
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from fxai_tune.rl import MONITOR, EpisodeResult, TrainConfig, plot_equity, train
from fxai_tune.tune._pruning import (
    OptunaPruningCallback,
    ValidationHistory,
    pruned_in_subprocess,
)
from fxai_tune.tune._ranks import TrialRelay, rank_error, spawns_ranks, trial_trainer

__all__ = [
    "DIRECTIONS",
    "REDUCTIONS",
    "SHAPED_METRICS",
    "ObjectiveSpec",
    "check_unshaped_objective",
    "decode_returns",
    "encode_returns",
    "fold_config",
    "objective_of",
    "score_trial",
    "select_validation",
]

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
REDUCTIONS = ("last", "best")
SHAPED_METRICS = ("val/shaped_reward",)
"""Validation metrics that reward shaping weights move: never an objective of a space that
tunes those weights."""
UNSHAPED_METRICS = (
    "val/episode_reward",
    "val/log_return",
    "val/total_return",
    "val/sharpe",
    "val/sortino",
    "val/calmar",
    "val/max_drawdown",
)
"""Validation metrics computed from the net equity curve only (the valid alternatives)."""
REWARD_PREFIX = "env.reward."


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """What a trial's value is: the metrics, their directions, the validation and folds.

    Args:
        metrics: Validation metric of each objective (``val/...``).
        directions: maximize or minimize per metric.
        reduce: ``last`` (the final validation: the model `export-best` reproduces) or
            ``best`` (the validation best on the first metric; every metric from it).
        folds: Walk-forward folds over train + val (1: the configured train/val split).
        embargo_bars: Bars left out between a fold's training and validation windows, on top
            of the largest observation lookback.
    """

    metrics: tuple[str, ...] = (MONITOR,)
    directions: tuple[str, ...] = ("maximize",)
    reduce: str = "last"
    folds: int = 1
    embargo_bars: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "directions", tuple(self.directions))
        if not self.metrics or len(self.metrics) != len(self.directions):
            raise ValueError(
                f"objective: one direction per metric; got metrics={list(self.metrics)}, "
                f"directions={list(self.directions)}"
            )
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(
                f"objective.directions: got {bad[0]!r}; valid: {', '.join(DIRECTIONS)}"
            )
        bad = [m for m in self.metrics if not (isinstance(m, str) and m.startswith("val/"))]
        if bad:
            raise ValueError(
                f"objective.metrics: {bad[0]!r} is not a validation metric; valid: val/... "
                f"(e.g. {', '.join(UNSHAPED_METRICS)})"
            )
        if self.reduce not in REDUCTIONS:
            raise ValueError(
                f"objective.reduce: got {self.reduce!r}; valid: {', '.join(REDUCTIONS)}"
            )
        for key, low in (("folds", 1), ("embargo_bars", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"objective.{key}: got {value!r}; valid: an integer >= {low}")


def objective_of(source: Any) -> ObjectiveSpec:
    """The `ObjectiveSpec` of anything with its fields (a `StudyConfig`, Hydra's
    ``ObjectiveConfig``): both front doors build it here."""
    return ObjectiveSpec(
        metrics=tuple(source.metrics),
        directions=tuple(source.directions),
        reduce=source.reduce,
        folds=source.folds,
        embargo_bars=source.embargo_bars,
    )


def check_unshaped_objective(objective: ObjectiveSpec, tuned_keys: Iterable[str]) -> None:
    """Refuse a search that tunes reward weights while scoring (or pruning on) the reward.

    Lowering a penalty raises the shaped reward without better trading: such a search
    grades itself. ``metrics[0]`` is also the pruning metric, so every metric is checked.

    Raises:
        ValueError: One line naming the tuned key, the metric and the valid metrics.
    """
    reward_keys = sorted(k for k in tuned_keys if k.startswith(REWARD_PREFIX))
    shaped = [m for m in objective.metrics if m in SHAPED_METRICS]
    if reward_keys and shaped:
        raise ValueError(
            f"the search tunes {reward_keys[0]} while its objective/pruning metric {shaped[0]} "
            f"is the shaped reward those weights move; valid metrics: {', '.join(UNSHAPED_METRICS)}"
        )


def fold_config(config: TrainConfig, objective: ObjectiveSpec, fold: int) -> TrainConfig:
    """``config`` trained and validated on walk-forward fold ``fold`` (unchanged for 1 fold)."""
    if objective.folds == 1:
        return config
    data = dataclasses.replace(
        config.data, n_folds=objective.folds, fold=fold, embargo_bars=objective.embargo_bars
    )
    return dataclasses.replace(config, data=data)


def select_validation(
    history: Sequence[dict[str, float]], objective: ObjectiveSpec
) -> int:
    """Index of the validation a run is scored by: the last, or the best on ``metrics[0]``.

    Raises:
        KeyError: When no validation logged the metrics (the message lists what was logged).
    """
    rows = [i for i, h in enumerate(history) if all(m in h for m in objective.metrics)]
    if not rows:
        logged = sorted({k for h in history for k in h})
        missing = next(m for m in objective.metrics if not any(m in h for h in history))
        raise KeyError(
            f"objective metric {missing!r} was never logged (validations: {len(history)}); "
            f"logged: {logged or 'nothing: raise the budget or lower the validation interval'}"
        )
    if objective.reduce == "last":
        return rows[-1]
    first, sign = objective.metrics[0], 1.0 if objective.directions[0] == "maximize" else -1.0
    return max(rows, key=lambda i: sign * history[i][first])


def encode_returns(returns: np.ndarray) -> str:
    """Per-bar returns as compact text for a user attribute (float32, zlib, base64)."""
    raw = np.asarray(returns, dtype="<f4").tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_returns(text: str) -> np.ndarray:
    """Inverse of `encode_returns` (float64)."""
    raw = zlib.decompress(base64.b64decode(text.encode("ascii")))
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


@dataclasses.dataclass
class _FoldRun:
    """What one (seed, fold) training run left for scoring and artifacts."""

    values: list[float]
    metrics: dict[str, float]
    evaluation: Any
    checkpoint: Path | None
    run_dir: Path
    env_steps: int


TrainFn = Callable[..., Any]


def score_trial(
    trial: optuna.Trial | None,
    config: TrainConfig,
    objective: ObjectiveSpec,
    *,
    seeds_per_trial: int = 1,
    prune: bool = True,
    upload: Callable[[Path], None] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    extra_callbacks: Sequence[Any] = (),
    on_run: Callable[[Any], None] | None = None,
) -> list[float]:
    """Train ``config`` on every seed and fold and return the objective values.

    Args:
        trial: The Optuna trial (None: a plain run, nothing recorded or pruned).
        config: The sampled training config.
        objective: Metrics, directions, reduction and folds.
        seeds_per_trial: Seeds ``config.seed, config.seed + 1, ...``.
        prune: Report the first seed's validations to ``trial`` and prune on its verdict.
        upload: Stores one file as an artifact of the trial (None: no artifacts).
        train_kwargs: Extra keyword arguments of `train` (loggers, checkpointing).
        extra_callbacks: More Lightning callbacks for every run.
        on_run: Called with every finished `TrainingRun` (e.g. for a test report).

    Raises:
        optuna.TrialPruned: When the pruner stops the trial (its artifacts are uploaded).
    """
    record = trial.set_user_attr if trial is not None else (lambda key, value: None)
    if trial is not None:  # refuses ddp (docs/tuning.md, "Trials on several devices")
        config = dataclasses.replace(config, trainer=trial_trainer(config.trainer))
    seeds = [config.seed + k for k in range(seeds_per_trial)]
    record("seeds", seeds)
    scores = np.full((len(seeds), objective.folds, len(objective.metrics)), np.nan)
    first_seed_runs: list[_FoldRun] = []
    env_steps = 0
    reporter: OptunaPruningCallback | None = None
    if trial is not None and prune and len(objective.metrics) == 1:
        reporter = OptunaPruningCallback(trial, objective.metrics[0])
    for s, seed in enumerate(seeds):
        for fold in range(objective.folds):
            run_config = dataclasses.replace(
                fold_config(config, objective, fold),
                seed=seed,
                run_dir=str(_run_dir(config, seed, fold, objective.folds, len(seeds))),
            )
            history = ValidationHistory()
            callbacks = [history, *extra_callbacks]
            if reporter is not None and s == 0:
                callbacks.append(reporter)
            try:
                run = _train(run_config, callbacks, train_kwargs or {})
            except optuna.TrialPruned:
                env_steps += _last(history.env_steps)
                record("env_steps", env_steps)
                if s == 0 and history.history:
                    # a pruned trial keeps the metrics and the curve of its last validation
                    pruned = _fold_run(
                        history, len(history.history) - 1, None, run_config, objective
                    )
                    record("val_metrics", pruned.metrics)
                    if upload is not None:
                        _upload_fold(upload, trial, pruned, fold, objective.folds)
                raise
            env_steps += _last(history.env_steps)
            record("env_steps", env_steps)
            record("device", str(run.module.device))
            if on_run is not None:
                on_run(run)
            chosen = select_validation(history.history, objective)
            result = _fold_run(history, chosen, run, run_config, objective)
            scores[s, fold] = result.values
            if s == 0:
                first_seed_runs.append(result)
                if upload is not None:
                    _upload_fold(upload, trial, result, fold, objective.folds)
    _record_scores(record, scores, first_seed_runs, config)
    return scores.mean(axis=(0, 1)).tolist()


def _train(config: TrainConfig, callbacks: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        if not spawns_ranks(config.trainer.strategy):
            return train(config, extra_callbacks=callbacks, **kwargs)
        # ddp_spawn: the ranks' copies of the trial's callbacks call the originals here
        with TrialRelay({str(i): c for i, c in enumerate(callbacks)}) as relay:
            stand_ins = [
                c.relayed(relay, str(i)) if hasattr(c, "relayed") else c
                for i, c in enumerate(callbacks)
            ]
            return train(config, extra_callbacks=stand_ins, **kwargs)
    except optuna.TrialPruned:
        raise
    except Exception as error:
        if pruned_in_subprocess(error):
            raise optuna.TrialPruned("pruned in a spawned DDP rank") from error
        cause = rank_error(error)
        if cause is not error:
            raise cause from error
        raise
    except SystemExit as exit_:
        # Lightning turns Ctrl-C into sys.exit(1) after its own clean-up; make it an
        # interrupt again so Optuna records the trial FAIL and stops. Lightning ignores SIGINT
        # from its first one on: a second Ctrl-C must stop the worker at once (issue 11).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt("interrupted during training") from exit_


def _run_dir(config: TrainConfig, seed: int, fold: int, folds: int, seeds: int) -> Path:
    """``run_dir`` itself for one seed and fold; else ``seed_S[/fold_K]`` beneath it."""
    run_dir = Path(config.run_dir)
    if seeds > 1:
        run_dir = run_dir / f"seed_{seed}"
    return run_dir / f"fold_{fold}" if folds > 1 else run_dir


def _last(values: list[int]) -> int:
    return values[-1] if values else 0


def _fold_run(
    history: ValidationHistory,
    index: int,
    run: Any,
    config: TrainConfig,
    objective: ObjectiveSpec,
) -> _FoldRun:
    checkpoint = None
    if run is not None and run.checkpoint is not None:
        # the model the score came from: the last checkpoint for the last validation, the
        # best one when the best validation by the checkpoint's own monitor was chosen
        if index == len(history.history) - 1 and run.checkpoint.last_model_path:
            checkpoint = Path(run.checkpoint.last_model_path)
        elif objective.metrics[0] == MONITOR and objective.directions[0] == "maximize":
            checkpoint = Path(run.checkpoint.best_model_path or "")
    return _FoldRun(
        values=[history.history[index][m] for m in objective.metrics],
        metrics=dict(history.history[index]),
        evaluation=history.evaluations[index],
        checkpoint=checkpoint,
        run_dir=Path(config.run_dir),
        env_steps=_last(history.env_steps),
    )


def _upload_fold(
    upload: Callable[[Path], None], trial: optuna.Trial | None, result: _FoldRun, fold: int,
    folds: int,
) -> None:
    """The scored validation's equity curve, the metrics CSV and the matching checkpoint."""
    label = f"fold {fold}: " if folds > 1 else ""
    evaluation = result.evaluation
    files: list[Path] = []
    if evaluation is not None and evaluation.log_returns.size:
        curve = EpisodeResult(stats={}, equity=np.exp(np.concatenate(
            [[0.0], np.cumsum(evaluation.log_returns)])))
        number = trial.number if trial is not None else "-"
        files.append(plot_equity(
            {"agent": curve},
            result.run_dir / (f"val_equity_fold{fold}.png" if folds > 1 else "val_equity.png"),
            title=f"trial {number}: {label}scored validation "
            f"(val/episode_reward {result.metrics.get(MONITOR, math.nan):.4g})",
        ))
    metrics_csv = result.run_dir / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        files.append(metrics_csv)
    if result.checkpoint is not None and result.checkpoint.is_file():
        # (optional for pruned trials: their last checkpoint may predate the pruned validation)
        files.append(result.checkpoint)
    for path in files:
        upload(path)


def _record_scores(
    record: Callable[[str, Any], None],
    scores: np.ndarray,
    first_seed_runs: list[_FoldRun],
    config: TrainConfig,
) -> None:
    n_seeds, n_folds, _ = scores.shape
    fold_scores = scores.mean(axis=0)  # (folds, metrics)
    seed_scores = scores.mean(axis=1)  # (seeds, metrics)
    fold_stderr = (
        fold_scores.std(axis=0, ddof=1) / math.sqrt(n_folds) if n_folds > 1
        else np.zeros(scores.shape[2])
    )
    seed_spread = seed_scores.std(axis=0, ddof=1) if n_seeds > 1 else np.zeros(scores.shape[2])
    record("fold_scores", fold_scores.tolist())
    record("fold_stderr", fold_stderr.tolist())
    record("seed_scores", seed_scores.tolist())
    record("seed_spread", seed_spread.tolist())
    if first_seed_runs:
        record("val_metrics", first_seed_runs[-1].metrics)
        returns = [r.evaluation.log_returns for r in first_seed_runs if r.evaluation is not None]
        if returns and all(r.size for r in returns):
            joined = np.concatenate(returns)
            record("val_returns", encode_returns(joined))
            record("val_periods_per_year", first_seed_runs[0].evaluation.periods_per_year)

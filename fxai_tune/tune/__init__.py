"""Optuna tuning: search spaces, studies, the objective, pruning, workers and inspection."""

from __future__ import annotations

from fxai_tune.tune._pruning import OptunaPruningCallback, ValidationHistory

__all__ = ["OptunaPruningCallback", "ValidationHistory"]

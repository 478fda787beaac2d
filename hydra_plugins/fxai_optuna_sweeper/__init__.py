"""``hydra/sweeper=fxai_optuna``: an Optuna sweeper for Hydra 1.3 with pruning and shared studies.

Hydra discovers it through the ``hydra_plugins`` namespace package. A task reaches the Optuna
trial of its job with `current_trial` (None outside such a sweep)::

    from hydra_plugins.fxai_optuna_sweeper import current_trial

    trial = current_trial()
    if trial is not None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
"""

from __future__ import annotations

from hydra_plugins.fxai_optuna_sweeper._registry import (
    TrialContext,
    current_trial,
    current_trial_context,
)

__all__ = ["TrialContext", "current_trial", "current_trial_context"]

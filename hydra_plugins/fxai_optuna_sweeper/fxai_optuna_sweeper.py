"""The Hydra `Sweeper` plugin class; the work is done in `_impl` (imported on first use).

Hydra imports every public module under ``hydra_plugins`` at start-up to find plugins, so this
module stays light: no Optuna import until a sweep starts.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

__all__ = ["FxaiOptunaSweeper", "OptunaSweeper"]


class FxaiOptunaSweeper(Sweeper):
    """Optuna sweeper with hydra-optuna-sweeper's config keys, pruning and shared studies.

    See `hydra_plugins.fxai_optuna_sweeper.config.FxaiOptunaSweeperConf` for the keys.
    """

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: Any,
        params: DictConfig | None,
        custom_search_space: str | None,
        pruner: Any = None,
    ) -> None:
        from hydra_plugins.fxai_optuna_sweeper._impl import SweeperImpl

        self.impl = SweeperImpl(
            sampler=sampler,
            direction=direction,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            search_space=search_space,
            params=params,
            custom_search_space=custom_search_space,
            pruner=pruner,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.impl.sweep(arguments)


class OptunaSweeper(FxaiOptunaSweeper):
    """Stand-in for ``hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper``.

    Configs written for hydra-optuna-sweeper (lightning-hydra-template's ``hparams_search``)
    often pin ``hydra.sweeper._target_`` to that class. Hydra finds plugin classes by
    ``module.name``, so this subclass registers under that name and such a config runs with
    only ``override hydra/sweeper: optuna`` changed to ``fxai_optuna``. When the real plugin
    is installed, Hydra registers its class after this one and the name refers to it.
    """


OptunaSweeper.__module__ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper"

"""The Hydra `Sweeper` plugin class; the work is done in `_impl` (imported on first use).

Hydra imports every public module under ``hydra_plugins`` at start-up to find plugins, so this
module stays light: no Optuna import until a sweep starts.
"""

from __future__ import annotations

import importlib.util
import sys
import types
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
        heartbeat_interval: int | None = 10,
        grace_period: int | None = 30,
        max_retry: int | None = 3,
        artifact_dir: str | None = None,  # read by the jobs (`TrialContext.artifact_dir`)
    ) -> None:
        del artifact_dir  # the sweeper itself stores nothing there
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
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
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
    often pin ``hydra.sweeper._target_`` to that class. So that such a config runs with only
    ``override hydra/sweeper: optuna`` changed to ``fxai_optuna``, this subclass carries that
    class's name (Hydra finds plugin classes by ``module.name``) and, when hydra-optuna-sweeper
    is not installed, `_install_compat_module` makes the name importable. When it is installed,
    its own class keeps the name.
    """


_COMPAT_PACKAGE = "hydra_plugins.hydra_optuna_sweeper"
OptunaSweeper.__module__ = f"{_COMPAT_PACKAGE}.optuna_sweeper"


def _install_compat_module() -> None:
    """Register ``hydra_plugins.hydra_optuna_sweeper.optuna_sweeper`` -> `OptunaSweeper` in
    ``sys.modules`` unless hydra-optuna-sweeper is installed."""
    if _COMPAT_PACKAGE in sys.modules or importlib.util.find_spec(_COMPAT_PACKAGE) is not None:
        return
    package = types.ModuleType(
        _COMPAT_PACKAGE, "Stand-in registered by fxai_optuna_sweeper (the real one is absent)."
    )
    package.__path__ = []
    module = types.ModuleType(OptunaSweeper.__module__, "Stand-in: see OptunaSweeper.")
    module.OptunaSweeper = OptunaSweeper  # type: ignore[attr-defined]
    package.optuna_sweeper = module  # type: ignore[attr-defined]
    sys.modules[_COMPAT_PACKAGE] = package
    sys.modules[module.__name__] = module


_install_compat_module()

"""Seeded samplers that never repeat a trial: each trial drawn from ``(seed, trial number)``.

A sampler seeded once per process replays its draws on every start: rerunning a seeded study
gave trials 2 and 3 the parameters of trials 0 and 1, two workers (or two Hydra sweeps) with
one seed proposed every point twice (issue 12). Trial numbers are unique within a study
whatever process creates the trial, so seeding each trial's draws from the study seed and the
trial's number keeps a study reproducible (a fresh study from the same seed, run by one worker,
draws the same trials) without ever replaying a draw when it is continued, joined by more
workers or shared by several sweeps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a study seeded ``seed`` (a 32-bit integer).

    `numpy.random.SeedSequence` mixes the pair, so neighbouring trials (and the trials of
    neighbouring study seeds) get unrelated streams, unlike ``seed + number``.

    Example:
        >>> trial_seed(0, 1) == trial_seed(0, 1) != trial_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to a sampler built with `trial_seed` of the trial's number.

    The built samplers read the study's history from the storage as a long-lived one would;
    only their random streams differ per trial. A sampler whose seed must be the same in every
    process (QMC's scrambling) is not wrapped: `make_sampler` passes it the study seed.

    Args:
        build: Builds the sampler of one trial from its seed.
        seed: The study's seed.

    Example:
        >>> sampler = TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), 0)
        >>> study = optuna.create_study(sampler=sampler)
    """

    def __init__(self, build: Callable[[int], BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}
        self.base = build(seed)
        """A sampler built with the study seed: its type and options are the study's."""

    def __str__(self) -> str:
        return f"{type(self.base).__name__}(seed={self._seed}, per trial)"

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            with warnings.catch_warnings():  # e.g. multivariate TPE's, given once by `base`
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = self._build(trial_seed(self._seed, trial.number))
            self._samplers[trial.number] = sampler
        return sampler

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler(trial).sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        try:
            self._sampler(trial).after_trial(study, trial, state, values)
        finally:
            self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's stream is fixed by its number (Optuna calls this
        when one process runs trials in threads, whose draws then still differ)."""

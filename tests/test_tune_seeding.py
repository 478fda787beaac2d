"""Seeded studies: reproducible from their seed, never repeating a trial (issue 12)."""

from __future__ import annotations

import warnings

import optuna
import pytest

from fxai_tune.tune._study import SamplerConfig, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

# startup trials far beyond the test's: TPE draws at random throughout, as a young study does
OPTIONS = {"tpe": {"n_startup_trials": 50}, "random": {}, "nsga2": {"population_size": 50}}


def _open(storage: optuna.storages.BaseStorage | str, name: str, sampler_name: str,
          seed: int = 0) -> optuna.Study:
    """One start of a worker: a new sampler from the study's seed, the study loaded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = make_sampler(SamplerConfig(sampler_name, seed, OPTIONS[sampler_name]))
    return optuna.create_study(
        study_name="seeded", storage=storage, sampler=sampler, load_if_exists=True
    )


def _one_trial(study: optuna.Study) -> tuple[float, int]:
    trial = study.ask()
    params = (trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("n", 0, 10**6))
    study.tell(trial, params[0])
    return params


@pytest.mark.parametrize("name", list(OPTIONS))
def test_continuing_a_seeded_study_never_repeats_a_trial(tmp_path, name):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    drawn = []
    for _ in range(3):  # three runs of the same command
        study = _open(storage, "seeded", name)
        drawn += [_one_trial(study) for _ in range(2)]
    assert len(set(drawn)) == len(drawn), drawn


@pytest.mark.parametrize("name", list(OPTIONS))
def test_two_workers_with_the_default_index_do_not_duplicate(name):
    storage = optuna.storages.InMemoryStorage()
    first, second = _open(storage, "seeded", name), _open(storage, "seeded", name)
    drawn = [_one_trial(study) for _ in range(3) for study in (first, second)]
    assert len(set(drawn)) == len(drawn), drawn


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_fresh_study_from_the_same_seed_draws_the_same_trials(name):
    runs = []
    for seed in (0, 0, 1):
        study = _open(optuna.storages.InMemoryStorage(), "seeded", name, seed)
        runs.append([_one_trial(study) for _ in range(4)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_tpe_past_its_startup_trials_is_reproducible_too():
    runs = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = make_sampler(SamplerConfig("tpe", 3, {"n_startup_trials": 3}))
        study = optuna.create_study(sampler=sampler)
        runs.append([_one_trial(study) for _ in range(6)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 6

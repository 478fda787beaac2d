"""Tuning trials on several devices (issue 12): ddp_spawn trials, refused ddp, per-rank
seeds and one target-KL decision for all ranks. Two CPU ranks over gloo."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from _ddp_fixtures import RankProbe
from _rl_fixtures import tiny_fx_config
from _tune_fixtures import write_tiny_study
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from fxai_tune.rl import RLDataModule
from fxai_tune.tune import (
    ObjectiveSpec,
    OptunaPruningCallback,
    _objective,
    check_trial_strategy,
    describe_failure,
    load_study_config,
    open_study,
    run_worker,
    score_trial,
)
from fxai_tune.tune._ranks import TrialRelay, rank_error, trial_trainer

REPO = Path(__file__).resolve().parents[1]


def _ddp_study(tmp_path, strategy: str, **ppo):
    # two iterations, validated after the second
    path = write_tiny_study(tmp_path, "ddp", n_trials=1, total_timesteps=2 * 4 * 32)
    study = yaml.safe_load(path.read_text())
    study["base"]["trainer"].update(strategy=strategy, devices="2")
    study["base"]["ppo"].update(ppo)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return load_study_config(path)


@pytest.mark.slow
@pytest.mark.timeout(240)  # a rank left alone in a collective would wait forever
def test_a_ddp_spawn_trial_on_two_ranks_is_one_trial_with_rank_seeds_and_one_kl_stop(
    tmp_path, monkeypatch
):
    config = _ddp_study(tmp_path, "ddp_spawn", target_kl=1.0)
    probes = tmp_path / "probes"
    probes.mkdir()
    monkeypatch.setattr(_objective, "score_trial", functools.partial(
        _objective.score_trial, extra_callbacks=[RankProbe(probes)]))

    counts = run_worker(config, accelerator="cpu", torch_threads=1)

    assert counts.complete == 1
    study = open_study(config)
    [trial] = study.get_trials()  # rank 1 started no trial of its own
    assert trial.state == TrialState.COMPLETE
    # rank 0's validations reached the trial in this process: reported, and scored
    assert sorted(trial.intermediate_values) == [0]
    assert trial.value == pytest.approx(trial.intermediate_values[0])
    assert trial.user_attrs["val_metrics"]["val/episode_reward"] == pytest.approx(trial.value)
    names = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert "last.ckpt" in names  # the last checkpoint of the scored validation

    ranks = [json.loads((probes / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for a, b in zip(ranks[0]["actions"], ranks[1]["actions"], strict=True):
        assert a != b  # each rank collects its own rollouts
    # iteration 0: rank 1's first minibatch exceeds the target KL, rank 0's does not; both
    # stop there (1 minibatch evaluated, no step); iteration 1 steps every minibatch
    assert ranks[0]["updates"] == ranks[1]["updates"] == [[1, 0], [4, 4]]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed", "ddp_fork", "no_such"])
def test_a_trial_refuses_strategies_whose_ranks_cannot_join_it(strategy):
    with pytest.raises(ValueError, match=f"trainer.strategy='{strategy}'.*valid.*ddp_spawn"):
        check_trial_strategy(strategy)


@pytest.mark.parametrize("strategy", ["auto", "single_device", "ddp_spawn",
                                      "ddp_spawn_find_unused_parameters_true"])
def test_a_trial_accepts_one_process_or_spawned_ranks(strategy):
    check_trial_strategy(strategy)


def test_scoring_a_trial_with_ddp_fails_before_training(tmp_path):
    """The shared scoring path refuses it too (a sampled or Hydra-composed config)."""
    config = tiny_fx_config(tmp_path / "run", trainer={"strategy": "ddp", "devices": "2"})
    trial = optuna.create_study().ask()
    with pytest.raises(ValueError, match="ddp_spawn"):
        score_trial(trial, config, ObjectiveSpec())
    assert not (tmp_path / "run").exists()  # nothing was built


def test_a_trial_with_strategy_auto_runs_on_one_device(tmp_path):
    """Lightning's auto would pick ddp for several devices: a trial keeps to one."""
    trainer = tiny_fx_config(tmp_path, trainer={"devices": "auto"}).trainer
    assert trial_trainer(trainer).devices == "1"
    spawned = dataclasses.replace(trainer, strategy="ddp_spawn", devices="2")
    assert trial_trainer(spawned).devices == "2"


def test_each_rank_seeds_its_own_rollouts_and_rank_0_keeps_the_run_seed(tmp_path):
    config = tiny_fx_config(tmp_path)
    modules = []
    for rank in (0, 1):
        datamodule = RLDataModule(config)
        shared = datamodule.buffer.actions
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        datamodule.setup("fit")
        assert datamodule.buffer.actions is not shared  # storage of its own (ddp_spawn)
        modules.append(datamodule)
    single = RLDataModule(config)  # one device
    states = [m.generator.get_state() for m in (*modules, single)]
    assert torch.equal(states[0], states[2]) and not torch.equal(states[0], states[1])
    assert modules[0].env.np_random_seed == single.env.np_random_seed
    assert set(modules[0].env.np_random_seed).isdisjoint(modules[1].env.np_random_seed)
    assert modules[0]._first_dropout_seed() != modules[1]._first_dropout_seed()


def test_a_sweep_with_the_shipped_ddp_hardware_is_refused_before_any_trial(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(REPO))  # hydra_plugins, until the package installs it
    from hydra import compose, initialize_config_module

    import fxai_tune.hydra_app  # noqa: F401 - stores the config schema
    from hydra_plugins.fxai_optuna_sweeper._impl import SweeperImpl

    storage = tmp_path / "sweep.db"
    sweeper = SweeperImpl(
        sampler=None, direction="maximize", storage=f"sqlite:///{storage}", study_name="s",
        n_trials=2, n_jobs=1, max_failure_rate=0.0, search_space=None, params=None,
        custom_search_space=None, pruner=None,
    )
    with initialize_config_module("fxai_tune.conf", version_base="1.3"):
        sweeper.config = compose("config", overrides=["hardware=ddp"])
    sweeper.launcher = None  # launching a job would fail: none may start
    with pytest.raises(SystemExit) as exit_:
        sweeper.sweep(["ppo.learning_rate=interval(1e-4,1e-3)"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "trainer.strategy='ddp'" in lines[0] and "ddp_spawn" in lines[0]
    assert not storage.exists()  # no study opened


def test_relayed_pruning_reports_continue_their_steps_across_runs():
    """Each fold's run gets a fresh stand-in: its steps follow the previous fold's."""
    trial = optuna.create_study().ask()
    reporter = OptunaPruningCallback(trial, "val/episode_reward")
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, datamodule=SimpleNamespace(env_steps=0),
        callback_metrics={"val/episode_reward": torch.tensor(0.5)},
        strategy=SimpleNamespace(broadcast=lambda value: value),
    )
    relay = TrialRelay({"0": reporter})  # called in this process: straight to the reporter
    for _fold in range(2):
        stand_in = reporter.relayed(relay, "0")
        assert stand_in.trial is None  # (the trial does not pickle into a rank)
        for _ in range(2):
            stand_in.on_validation_end(trainer, None)
    assert sorted(trial.study.trials[0].intermediate_values) == [0, 1, 2, 3]


def test_a_spawned_ranks_error_is_recorded_as_it_would_be_on_one_device():
    from torch.multiprocessing import ProcessRaisedException

    def raised(last_line: str) -> ProcessRaisedException:
        text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent "
                f"call last):\n  File \"x.py\", line 1, in f\n{last_line}\n")
        return ProcessRaisedException(text, 1, 4242)

    error = rank_error(raised("FloatingPointError: non-finite PPO loss in 2"))
    assert describe_failure(error) == "NaN/inf: non-finite PPO loss in 2"
    error = rank_error(raised("optuna.exceptions.StorageInternalError: lost"))
    assert describe_failure(error) == "RuntimeError: optuna.exceptions.StorageInternalError: lost"
    other = KeyError("x")
    assert rank_error(other) is other

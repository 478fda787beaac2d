"""Tuning trials on several devices (issue 12): ddp_spawn trials, refused ddp, per-rank
seeds and one target-KL decision for all ranks. Two CPU ranks over gloo."""

from __future__ import annotations

import functools
import json

import pytest
import yaml
from _ddp_fixtures import RankProbe
from _tune_fixtures import write_tiny_study
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from fxai_tune.tune import _objective, load_study_config, open_study, run_worker


def _ddp_study(tmp_path, strategy: str, **ppo):
    # two iterations, validated after the second
    path = write_tiny_study(tmp_path, "ddp", n_trials=1, total_timesteps=2 * 4 * 32)
    study = yaml.safe_load(path.read_text())
    study["base"]["trainer"].update(strategy=strategy, devices="2")
    study["base"]["ppo"].update(ppo)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return load_study_config(path)


@pytest.mark.slow
@pytest.mark.timeout(300)  # a rank left alone in a collective would wait forever
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

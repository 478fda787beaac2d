"""`fxai-tune copy` (issue 14): a study moves between storages whole, the source untouched."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import optuna
import pytest
from _tune_fixtures import POSTGRES_URL, unique_name
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.trial import TrialState

from typer.testing import CliRunner, Result

from fxai_tune.cli.main import app
from fxai_tune.tune import normalize_storage_url

def _copy(*args: str) -> Result:
    """``fxai-tune copy ARGS`` in this process (the CLI's import of torch costs seconds)."""
    return CliRunner().invoke(app, ["copy", *args], catch_exceptions=False)


def _make_study(url: str, name: str, artifacts: Path) -> optuna.Study:
    """A study with every kind of record `copy` must carry."""
    artifacts.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifacts))
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/episode_reward"])
    study.set_user_attr("base_config", {"ppo": {"gamma": 0.99}})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("ppo.learning_rate", 1e-4, 1e-2, log=True)
        trial.report(x / 2, step=64)
        trial.set_user_attr("worker", "host:1")
        curve = artifacts / f"curve_{trial.number}.csv"
        curve.write_text(f"step,reward\n64,{x}\n")
        upload_artifact(artifact_store=store, file_path=str(curve), study_or_trial=trial)
        if trial.number == 1:
            raise RuntimeError("boom")
        return x

    study.optimize(objective, n_trials=3, catch=(RuntimeError,))
    study.enqueue_trial({"ppo.learning_rate": 1e-3}, user_attrs={"requeued_from": 1})
    return study


def _records(study: optuna.Study) -> dict:
    """Everything a study holds, without storage ids and clocks."""
    def trial(t: optuna.trial.FrozenTrial) -> tuple:
        return (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs,
                t.system_attrs, t.intermediate_values, t.datetime_start, t.datetime_complete)

    return {
        "directions": study.directions,
        "user_attrs": study.user_attrs,
        "system_attrs": study._storage.get_study_system_attrs(study._study_id),
        "metric_names": study.metric_names,
        "trials": [trial(t) for t in study.get_trials()],
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def postgres_url():
    url = normalize_storage_url(POSTGRES_URL)
    try:
        optuna.storages.RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - any connection problem
        if "FXAI_TEST_POSTGRES_URL" in os.environ:
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    return POSTGRES_URL


def test_copy_round_trips_a_study_sqlite_to_postgres_to_sqlite(tmp_path, postgres_url):
    name = unique_name("copy")
    first, back = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'back.db'}"
    original = _records(_make_study(first, name, tmp_path / "artifacts"))
    digest = _digest(tmp_path / "first.db")
    try:
        there = _copy("--from", first, "--to", postgres_url, "--study", name)
        assert there.exit_code == 0, there.output
        assert _digest(tmp_path / "first.db") == digest  # the source only read
        result = _copy("--from", postgres_url, "--to", back, "--study", name)
        assert result.exit_code == 0, result.output
        for url in (postgres_url, back):
            copied = optuna.load_study(study_name=name, storage=normalize_storage_url(url))
            assert _records(copied) == original
    finally:
        optuna.delete_study(study_name=name, storage=normalize_storage_url(postgres_url))
    copied = optuna.load_study(study_name=name, storage=back)
    assert [t.state for t in copied.get_trials()] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.WAITING
    ]
    # the artifact records travel and still resolve to the stored files
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    metas = get_all_artifact_meta(copied.trials[0], storage=copied._storage)
    assert [m.filename for m in metas] == ["curve_0.csv"]
    with store.open_reader(metas[0].artifact_id) as reader:
        assert reader.read().startswith(b"step,reward")


def test_copy_refuses_to_overwrite_a_study_in_the_target(tmp_path):
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _make_study(source, "s", tmp_path / "artifacts")
    optuna.create_study(study_name="s", storage=target)
    digests = _digest(tmp_path / "a.db"), _digest(tmp_path / "b.db")
    result = _copy("--from", source, "--to", target)
    assert result.exit_code == 2
    assert "already exists" in result.output and len(result.output.strip().splitlines()) == 1
    assert (_digest(tmp_path / "a.db"), _digest(tmp_path / "b.db")) == digests


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from", "mongodb://u:hunter2@h/db", "--to", "sqlite:///x.db"], "unknown scheme"),
        (["--from", "postgresql://u:hunter2@127.0.0.1:1/db", "--to", "sqlite:///x.db"],
         "127.0.0.1:1"),
        (["--from", "sqlite:///missing.db", "--to", "sqlite:///x.db", "--study", "s"],
         "no study 's'"),
        (["--from", "sqlite:///x.db", "--to", "sqlite:///x.db"], "same storage"),
    ],
)
def test_copy_with_a_bad_url_or_study_is_one_line_exit_2(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    result = _copy(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "hunter2" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing created

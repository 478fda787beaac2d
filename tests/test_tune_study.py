"""Study files, sampler/pruner factories and storages (SQLite, journal, PostgreSQL, MySQL)."""

from __future__ import annotations

import importlib.util
import os
import socket
import textwrap
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy.engine

from fxai_tune import HOME_ENV
from fxai_tune.tune._storage import (
    StorageError,
    check_storage_for_workers,
    make_storage,
    mask_password,
    normalize_storage_url,
    storage_backend,
)
from fxai_tune.tune._study import (
    PRUNERS,
    SAMPLERS,
    PrunerConfig,
    SamplerConfig,
    StudyError,
    load_study_config,
    make_pruner,
    make_sampler,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = """\
name: tiny
base: {ppo: {n_envs: 2, n_steps: 32, batch_size: 32}}
overrides: [ppo.gamma=0.9]
search_space:
  params:
    ppo.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
    ppo.batch_size: {type: categorical, choices: [16, 48]}
  constraints:
    - {divides: ppo.batch_size, into: [ppo.n_envs, ppo.n_steps]}
budget: {total_timesteps: 640, val_every_n_iterations: 2}
n_trials: 3
"""


def write_study(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def study_error(tmp_path: Path, text: str) -> str:
    path = write_study(tmp_path, text)
    with pytest.raises(StudyError) as info:
        load_study_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path.resolve()))
    return message


# --------------------------------------------------------------------------------------------
# study files


def test_minimal_study_gets_defaults_beside_its_file(tmp_path):
    study = load_study_config(write_study(tmp_path, MINIMAL))
    assert study.name == "tiny"
    assert study.directions == ["maximize"] and study.metrics == ["val/episode_reward"]
    assert study.reduce == "last" and study.folds == 1 and study.seeds_per_trial == 1
    assert study.sampler == SamplerConfig() and study.pruner == PrunerConfig()
    assert study.storage == f"sqlite:///{tmp_path.resolve() / 'tiny.db'}"
    assert study.artifact_dir == tmp_path.resolve() / "artifacts" / "tiny"
    assert (study.max_failure_rate, study.heartbeat_interval, study.grace_period) == (0.5, 10, 30)
    assert study.base_config.ppo.total_timesteps == 640
    assert study.base_config.trainer.val_every_n_iterations == 2
    assert study.base_config.ppo.gamma == 0.9


def test_study_samples_configs_with_constraints_from_its_base(tmp_path):
    study = load_study_config(write_study(tmp_path, MINIMAL))
    trial = optuna.trial.FixedTrial({"ppo.learning_rate": 5e-4, "ppo.batch_size": 48})
    values, config = study.sample_config(trial)
    assert values["ppo.batch_size"] == 32  # largest divisor of 2 * 32 not above 48
    assert config.ppo.batch_size == 32 and config.ppo.learning_rate == 5e-4
    # the lead's objective calls space.sample(trial) without a base: the bound base is used
    assert study.space.sample(trial)["ppo.batch_size"] == 32


def test_base_config_file_is_relative_to_the_study_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text("ppo:\n  n_epochs: 7\n")
    text = MINIMAL.replace(
        "base: {ppo: {n_envs: 2, n_steps: 32, batch_size: 32}}", "base_config: configs/base.yaml"
    ).replace(
        "overrides: [ppo.gamma=0.9]",
        "overrides: [ppo.n_envs=2, ppo.n_steps=32, ppo.batch_size=32]",
    )
    study = load_study_config(write_study(tmp_path, text))
    assert study.base_config.ppo.n_epochs == 7


def test_multi_objective_study(tmp_path):
    text = MINIMAL + textwrap.dedent(
        """\
        directions: [maximize, minimize]
        objective: {metrics: [val/total_return, val/max_drawdown], reduce: last}
        sampler: {name: nsga2, seed: 1, options: {population_size: 8}}
        pruner: {name: none}
        """
    )
    study = load_study_config(write_study(tmp_path, text))
    assert study.multi_objective and study.directions == ["maximize", "minimize"]
    assert study.metrics == ["val/total_return", "val/max_drawdown"] and study.reduce == "last"


def test_shipped_demo_study_loads():
    study = load_study_config(ROOT / "fxai_tune" / "studies" / "demo.yaml")
    assert study.name == "demo" and study.n_trials == 12 and study.max_failure_rate == 0.5
    assert study.base_config.model.d_model == 32 and study.base_config.model.n_heads == 2
    assert study.base_config.ppo.n_envs == 8 and study.base_config.ppo.n_steps == 64
    assert study.sampler == SamplerConfig("tpe", 0, {"n_startup_trials": 5})
    assert study.pruner.name == "median"
    assert study.storage == f"sqlite:///{Path.cwd().resolve() / 'studies' / 'demo.db'}"


def test_a_shipped_study_stores_under_the_working_directory_never_in_the_package(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(HOME_ENV, raising=False)
    study = load_study_config("demo")
    assert study.path == ROOT / "fxai_tune" / "studies" / "demo.yaml"
    assert study.storage == f"sqlite:///{tmp_path.resolve() / 'studies' / 'demo.db'}"
    assert study.artifact_dir == tmp_path.resolve() / "studies" / "artifacts" / "demo"
    home = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV, str(home))
    study = load_study_config("demo")
    assert study.storage == f"sqlite:///{home.resolve() / 'studies' / 'demo.db'}"
    assert study.artifact_dir == home.resolve() / "studies" / "artifacts" / "demo"
    own = write_study(tmp_path, MINIMAL)  # a study file of the user's: beside it, as before
    assert load_study_config(own).storage == f"sqlite:///{tmp_path.resolve() / 'tiny.db'}"


def test_shipped_demo_base_has_two_timeframes():
    study = load_study_config(ROOT / "fxai_tune" / "studies" / "demo.yaml")
    assert study.base_config.env.windows == {"1h": 32, "4h": 8}


def test_shipped_gpu_study_loads():
    study = load_study_config("eurusd_ppo")
    assert study.n_trials == 100 and study.pruner.name == "hyperband"
    assert study.base_config.ppo.total_timesteps == 2_000_000
    assert study.base_config.ppo.n_envs == 64 and study.base_config.ppo.n_steps == 256
    assert "ppo.target_kl" in study.space.paths


def test_shipped_demo_base_config_builds():
    from fxai_tune.rl import load_train_config

    config = load_train_config(ROOT / "fxai_tune" / "studies" / "configs" / "demo_base.yaml")
    assert config.ppo.rollout_size == 512 and config.model.n_layers == 1


BAD_STUDIES = [
    pytest.param("n_trial: 3", ["n_trial", "unknown key", "'n_trials'"], id="unknown-key"),
    pytest.param(
        "sampler: {name: bayes}",
        ["sampler.name", "'bayes'", "tpe, random, cmaes, gp, qmc, nsga2"],
        id="unknown-sampler",
    ),
    pytest.param(
        "pruner: {name: asha}",
        ["pruner.name", "'asha'",
         "median, percentile, successive_halving, hyperband, threshold, wilcoxon, none"],
        id="unknown-pruner",
    ),
    pytest.param(
        "sampler: {name: tpe, options: {n_startup: 3}}",
        ["sampler.options.n_startup", "unknown option of TPESampler", "'n_startup_trials'"],
        id="unknown-sampler-option",
    ),
    pytest.param(
        "sampler: {name: tpe, options: {gamma: 0.1}}",
        ["sampler.options.gamma", "unknown option"],
        id="callable-option-not-settable",
    ),
    pytest.param(
        "sampler: {name: tpe, options: {seed: 3}}",
        ["sampler.options.seed", "one level up"],
        id="seed-under-options",
    ),
    pytest.param(
        "pruner: {name: median, options: {warmup: 1}}",
        ["pruner.options.warmup", "MedianPruner", "'n_warmup_steps'"],
        id="unknown-pruner-option",
    ),
    pytest.param(
        "pruner: {name: percentile}", ["pruner.options", "needs option 'percentile'"],
        id="percentile-without-percentile",
    ),
    pytest.param(
        "pruner: {name: median, options: {n_warmup_steps: -1}}",
        ["pruner.options", "MedianPruner rejects", "warmup steps cannot be negative"],
        id="option-value-rejected",
    ),
    pytest.param(
        "direction: maximise", ["direction", "'maximise'", "valid: maximize, minimize"],
        id="bad-direction",
    ),
    pytest.param(
        "directions: [maximize, minimize]\npruner: {name: none}\n"
        "objective: {metrics: [val/total_return]}",
        ["objective.metrics", "1 metric(s) for 2 direction(s)"],
        id="metrics-count",
    ),
    pytest.param(
        "directions: [maximize, minimize]\n"
        "objective: {metrics: [val/total_return, val/max_drawdown]}",
        ["pruner.name", "multi-objective", "valid: none"],
        id="multi-objective-pruning",
    ),
    pytest.param(
        "objective: {metrics: [val/episode_reward], reduce: mean}",
        ["objective.reduce", "'mean'", "valid: last, best"],
        id="bad-reduce",
    ),
    pytest.param(
        "objective: {metrics: [test/episode_reward]}",
        ["objective.metrics", "not a validation metric"],
        id="test-metric",
    ),
    pytest.param(
        "max_failure_rate: 1.5", ["max_failure_rate", "valid: a number in [0, 1]"],
        id="failure-rate",
    ),
    pytest.param(
        "seeds_per_trial: 0", ["seeds_per_trial", "valid: an integer >= 1"], id="seeds",
    ),
    pytest.param(
        "heartbeat_interval: 30\ngrace_period: 10",
        ["grace_period", "grace_period > heartbeat_interval"],
        id="grace-period",
    ),
    pytest.param(
        "storage: mongodb://localhost:27017", ["storage", "'mongodb'", "valid: sqlite, postgresql"],
        id="storage-scheme",
    ),
    pytest.param("timeout: -1", ["timeout", "valid: seconds > 0"], id="timeout"),
]


@pytest.mark.parametrize(
    "name", ["..", "../evil", "a/b", ".hidden", "a..b", "x" * 129, "my study", "-dash"]
)
def test_a_study_name_is_a_plain_file_name(tmp_path, name):
    """Names become artifact folders and database files: none may leave its folder."""
    message = study_error(tmp_path, MINIMAL.replace("name: tiny", f"name: {name!r}"))
    assert f"name: got {name!r}; valid: a letter or digit" in message and "no '..'" in message


@pytest.mark.parametrize(("extra", "expected"), BAD_STUDIES)
def test_bad_study_is_a_one_line_error_naming_file_and_key(tmp_path, extra, expected):
    message = study_error(tmp_path, MINIMAL + extra + "\n")
    for part in expected:
        assert part in message, message


def test_study_name_must_be_usable_as_a_file_name(tmp_path):
    message = study_error(tmp_path, MINIMAL.replace("name: tiny", "name: my study"))
    assert "name:" in message and "'my study'" in message


def test_multi_objective_study_needs_its_metrics(tmp_path):
    extra = "directions: [maximize, minimize]\npruner: {name: none}\n"
    message = study_error(tmp_path, MINIMAL + extra)
    assert "objective.metrics" in message and "one metric per direction" in message


def test_bad_base_config_is_reported_before_any_trial(tmp_path):
    message = study_error(tmp_path, MINIMAL.replace("n_envs: 2", "n_env: 2"))
    assert "base:" in message and "n_env" in message


def test_unknown_search_space_path_is_reported_with_both_files(tmp_path):
    message = study_error(tmp_path, MINIMAL.replace("ppo.learning_rate:", "ppo.lr:"))
    assert "search_space:" in message and "params.ppo.lr" in message
    assert "did you mean" in message


def test_missing_search_space_name_lists_the_available_ones(tmp_path):
    text = MINIMAL.split("search_space:")[0] + "search_space: nope\nn_trials: 2\n"
    message = study_error(tmp_path, text)
    assert "search_space" in message and "ppo_quick" in message


def test_space_may_not_set_what_the_budget_fixes(tmp_path):
    text = MINIMAL.replace(
        "  constraints:",
        "    ppo.total_timesteps: {type: int, low: 64, high: 128}\n  constraints:",
    )
    message = study_error(tmp_path, text)
    assert "ppo.total_timesteps" in message and "budget" in message


def test_neither_trials_nor_timeout_is_rejected(tmp_path):
    message = study_error(tmp_path, MINIMAL.replace("n_trials: 3", "n_trials: null"))
    assert "n_trials" in message and "timeout" in message


# --------------------------------------------------------------------------------------------
# samplers and pruners


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_make_sampler_builds_every_sampler(name):
    needs = {"cmaes": ["cmaes"], "gp": ["scipy"], "qmc": ["scipy"]}.get(name, [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if missing:
            with pytest.raises(StudyError, match=f"needs the package.*{missing[0]}"):
                make_sampler(SamplerConfig(name, seed=0))
            return
        sampler = make_sampler(SamplerConfig(name, seed=0))
        unseeded = make_sampler(SamplerConfig(name))
    assert isinstance(getattr(sampler, "base", sampler), SAMPLERS[name])
    assert isinstance(unseeded, SAMPLERS[name])


def test_cmaes_is_rejected_for_several_objectives():
    with pytest.raises(StudyError, match="one objective"):
        make_sampler(SamplerConfig("cmaes"), n_objectives=2)


@pytest.mark.parametrize("name", list(PRUNERS))
def test_make_pruner_builds_every_pruner(name):
    options = {"percentile": {"percentile": 25.0}, "threshold": {"lower": 0.0}}.get(name, {})
    assert isinstance(make_pruner(PrunerConfig(name, options)), PRUNERS[name])


def test_hydra_optuna_sweepers_names_are_aliases_in_a_study_file(tmp_path):
    assert isinstance(make_sampler(SamplerConfig("nsgaii", seed=0)).base,
                      optuna.samplers.NSGAIISampler)
    assert isinstance(make_pruner(PrunerConfig("nop")), optuna.pruners.NopPruner)
    study = load_study_config(write_study(
        tmp_path, MINIMAL + "sampler: {name: nsgaii}\npruner: {name: nop}\n"
    ))
    assert (study.sampler.name, study.pruner.name) == ("nsga2", "none")


GRID = MINIMAL.replace(
    "ppo.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}",
    "ppo.learning_rate: {type: categorical, choices: [1.0e-4, 3.0e-4, 1.0e-3]}",
).replace("n_trials: 3", "n_trials: 10") + "sampler: {name: grid, seed: 0}\n"


def test_a_grid_study_walks_its_grid_and_stops_at_its_size(tmp_path):
    from fxai_tune.tune import open_study

    config = load_study_config(write_study(tmp_path, GRID))
    assert config.n_trials == 6  # 3 learning rates x 2 batch sizes, not the file's 10
    study = open_study(config)
    assert isinstance(study.sampler, optuna.samplers.GridSampler)
    study.optimize(lambda trial: config.sample_config(trial) and 0.0, n_trials=6)
    seen = {(t.params["ppo.learning_rate"], t.params["ppo.batch_size"]) for t in study.trials}
    assert len(seen) == 6  # every grid point once


def test_a_grid_study_over_a_continuous_param_is_refused_in_one_line(tmp_path):
    message = study_error(tmp_path, MINIMAL + "sampler: {name: grid}\n")
    assert "sampler.name" in message and "grid sampler needs discrete params" in message


def test_none_pruner_takes_no_options():
    with pytest.raises(StudyError, match="takes no options"):
        make_pruner(PrunerConfig("none", {"n_warmup_steps": 1}))


# --------------------------------------------------------------------------------------------
# storage URLs


def test_password_is_masked():
    assert mask_password("postgresql://bob:s3cr%40t@db:5432/optuna") == (
        "postgresql://bob:***@db:5432/optuna"
    )
    assert mask_password("sqlite:///studies/demo.db") == "sqlite:///studies/demo.db"
    text = "cannot reach mysql+pymysql://root:hunter2@host/db today"
    assert "hunter2" not in mask_password(text)


def test_urls_without_driver_get_the_installed_one():
    assert normalize_storage_url("mysql://root@h/db") == "mysql+pymysql://root@h/db"
    assert normalize_storage_url("postgresql://u:p@h/db").startswith("postgresql+psycopg")
    assert normalize_storage_url("postgresql://u:p@h/db").endswith("://u:p@h/db")
    assert normalize_storage_url("sqlite:///x.db") == "sqlite:///x.db"
    assert storage_backend("journal:///tmp/x.log") == "journal"
    assert storage_backend("runs/study.jsonl") == "journal"
    assert storage_backend("mariadb://u@h/db") == "mysql"


@pytest.mark.parametrize(
    "url", ["mongodb://:pw@localhost:27017", "not a url", "postgresql://u:topsecret@h:port/db"]
)
def test_bad_url_is_a_one_line_error_without_the_password(url):
    with pytest.raises(StorageError) as info:
        make_storage(url)
    message = str(info.value)
    assert "\n" not in message and "valid: sqlite, postgresql" in message
    assert "topsecret" not in message and ":pw@" not in message


def test_unreachable_database_error_masks_the_password():
    with pytest.raises(StorageError) as info:
        make_storage("postgresql://u:topsecret@127.0.0.1:1/db")
    assert "topsecret" not in str(info.value) and "u:***@" in str(info.value)


def test_several_workers_on_sqlite_get_a_warning(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    assert check_storage_for_workers(url, 1) is None
    warning = check_storage_for_workers(url, 4)
    assert "4 workers" in warning and "PostgreSQL" in warning and "journal" in warning
    assert check_storage_for_workers("postgresql://u@h/db", 4) is None
    assert check_storage_for_workers(f"journal:///{tmp_path}/s.log", 4) is None


# --------------------------------------------------------------------------------------------
# storage round trips


def round_trip(url: str, **kwargs) -> None:
    name = f"fxai-test-{uuid.uuid4().hex[:12]}"
    storage = make_storage(url, **kwargs)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    try:
        again = optuna.load_study(study_name=name, storage=make_storage(url, **kwargs))
        assert len(again.trials) == 3 and again.best_value == study.best_value
    finally:
        optuna.delete_study(study_name=name, storage=storage)
    assert name not in optuna.get_all_study_names(storage)


def test_sqlite_round_trip_with_heartbeat(tmp_path):
    url = f"sqlite:///{tmp_path}/sub/study.db"  # the directory is created
    round_trip(url, heartbeat_interval=5, grace_period=20)
    storage = make_storage(url, heartbeat_interval=5, grace_period=20)
    assert storage.get_heartbeat_interval() == 5
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)


@pytest.mark.parametrize("form", ["journal:///{}/j/study.log", "{}/study.jsonl"])
def test_journal_file_round_trip(tmp_path, form):
    url = form.format(tmp_path)
    round_trip(url, heartbeat_interval=5)  # journal storages have no heartbeat: ignored
    assert isinstance(make_storage(url), optuna.storages.JournalStorage)


def database_url(variable: str, default: str) -> str:
    """The URL in ``variable``; else ``default`` if its server answers; else skip."""
    url = os.environ.get(variable)
    if url:
        return url
    parsed = sqlalchemy.engine.make_url(default)
    try:
        socket.create_connection((parsed.host, parsed.port), timeout=1).close()
    except OSError:
        pytest.skip(f"{variable} is unset and {parsed.host}:{parsed.port} does not answer")
    return default


def test_postgresql_round_trip():
    url = database_url("FXAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    round_trip(url, heartbeat_interval=10, grace_period=30)


def test_mysql_round_trip():
    url = database_url("FXAI_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
    round_trip(url, heartbeat_interval=10, grace_period=30)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "fxai_tune" / "studies").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_study_validates(path):
    study = load_study_config(path)
    assert study.name == path.stem and study.n_trials >= 1

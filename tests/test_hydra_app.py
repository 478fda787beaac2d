"""The Hydra app ``python -m fxai_tune.train``: config tree, TrainConfig mapping, runs, sweeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from _rl_fixtures import tiny_fx_config
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from fxai_tune.hydra_app import ObjectiveConfig, to_train_config
from fxai_tune.tune import ObjectiveSpec, select_validation
from fxai_tune.rl import ConfigError, TrainConfig, config_to_dict, save_train_config
from fxai_tune.tune import load_search_space

REPO = Path(__file__).resolve().parents[1]
APP = [sys.executable, "-m", "fxai_tune.train"]

# tests/_rl_fixtures.py's tiny FX run as Hydra overrides (one torch thread: much faster on a
# shared CPU)
TINY = [
    "data=synthetic", "data.synthetic.n_bars=3000", "data.synthetic.seed=3",
    "env.windows={1h:16,4h:4,1d:null}", "env.episode_length=128",
    "env.curriculum.min_episode_length=32",
    "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.dim_feedforward=32",
    "ppo.n_envs=4", "ppo.n_steps=32", "ppo.batch_size=64", "ppo.n_epochs=2",
    "ppo.total_timesteps=512",
    "trainer.accelerator=cpu", "trainer.torch_threads=1", "trainer.val_every_n_iterations=2",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture
def compose_config(monkeypatch):
    """compose(overrides) of fxai_tune/conf/config.yaml, with the sweeper plugin's configs."""
    monkeypatch.syspath_prepend(str(REPO))  # hydra_plugins, until the package installs it
    import hydra_plugins.fxai_optuna_sweeper.config  # noqa: F401 - stores hydra/sweeper configs

    def make(*overrides: str, hydra_config: bool = False):
        with initialize_config_module("fxai_tune.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides),
                           return_hydra_config=hydra_config)

    return make


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def _run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*APP, *args], capture_output=True, text=True, env=_env(), cwd=cwd,
                          timeout=600)


# -- the config tree -----------------------------------------------------------------------------


def test_the_default_config_is_the_default_train_config(compose_config):
    config = to_train_config(compose_config(), run_dir="runs/default")
    assert config_to_dict(config) == config_to_dict(TrainConfig())


def test_tiny_overrides_build_the_tiny_test_config(compose_config, tmp_path):
    config = to_train_config(compose_config(*TINY), run_dir=str(tmp_path))
    expected = config_to_dict(tiny_fx_config(tmp_path, trainer={"torch_threads": 1}))
    assert config_to_dict(config) == expected
    assert config.data.resolved_price_side == "mid"


@pytest.mark.parametrize(
    "override", ["ppo.learning_rat=1e-3", "env.windos={1h:3}", "trainer.max_epoch=3",
                 "ppo.learning_rate=abc", "objective.metric=[x]"],
)
def test_a_typo_in_an_override_fails_with_hydras_error(compose_config, override):
    with pytest.raises(ConfigCompositionException):
        compose_config(override)


def test_an_unknown_group_option_fails_with_hydras_error(compose_config):
    with pytest.raises(MissingConfigException, match="model/smal"):
        compose_config("model=smal")


def test_groups_write_their_train_config_sections(compose_config, tmp_path):
    cfg = compose_config("model=small", "training=ppo_quick", "environment=fx_small",
                         "data=synthetic", "hardware=cpu", "callbacks=early_stopping")
    config = to_train_config(cfg, run_dir=str(tmp_path))
    assert (config.model.d_model, config.model.n_layers, config.model.n_heads) == (32, 1, 2)
    assert (config.ppo.n_envs, config.ppo.n_steps, config.ppo.total_timesteps) == (8, 64, 8192)
    assert config.trainer.val_every_n_iterations == 2
    assert config.env.windows == {"1h": 32, "4h": 8}
    assert (config.data.source, config.data.resolved_price_side) == ("synthetic", "mid")
    assert (config.trainer.accelerator, config.trainer.precision) == ("cpu", "32-true")
    assert config.trainer.early_stopping_patience == 5
    curriculum = to_train_config(compose_config("training=ppo_curriculum"), run_dir="r").curriculum
    assert curriculum.enabled


def test_guide_trainer_keys_map_onto_ppo_and_trainer_fields(compose_config):
    cfg = compose_config("trainer.max_epochs=3", "trainer.val_check_interval=7",
                         "trainer.gradient_clip_val=0.9", "trainer.precision=bf16",
                         "ppo.n_envs=8", "ppo.n_steps=32")
    config = to_train_config(cfg, run_dir="r")
    assert config.ppo.total_timesteps == 3 * 8 * 32
    assert config.ppo.n_iterations == 3
    assert config.trainer.val_every_n_iterations == 7
    assert config.ppo.max_grad_norm == 0.9
    assert config.trainer.precision == "bf16-mixed"
    # left alone, the guide keys follow the TrainConfig fields they alias
    cfg = compose_config("ppo.max_grad_norm=0.7", "trainer.val_every_n_iterations=3")
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.val_check_interval) == (0.7, 3)
    config = to_train_config(cfg, run_dir="r")
    assert (config.ppo.max_grad_norm, config.trainer.val_every_n_iterations) == (0.7, 3)


def test_a_null_window_drops_its_timeframe(compose_config):
    config = to_train_config(compose_config("env.windows={1h:16,4h:4,1d:null}"), run_dir="r")
    assert config.env.windows == {"1h": 16, "4h": 4}


def test_values_are_validated_by_the_dataclasses(compose_config):
    with pytest.raises(ConfigError, match="ppo.gamma"):
        to_train_config(compose_config("ppo.gamma=1.5"), run_dir="r")


def test_the_objective_section_is_validated():
    with pytest.raises(ValueError, match="objective.reduce"):
        ObjectiveConfig(reduce="worst")
    with pytest.raises(ValueError, match="one direction per metric"):
        ObjectiveConfig(metrics=["val/total_return", "val/max_drawdown"])
    with pytest.raises(ValueError, match="objective.directions"):
        ObjectiveConfig(directions=["up"])


def test_the_objective_is_the_best_or_last_validation_and_all_metrics_come_from_it():
    history = [{"val/episode_reward": 1.0, "val/trades": 5.0},
               {"val/episode_reward": 3.0, "val/trades": 9.0},
               {"val/episode_reward": 2.0, "val/trades": 1.0}]

    def chosen(reduce, directions=("maximize", "minimize")):
        spec = ObjectiveSpec(metrics=("val/episode_reward", "val/trades"),
                             directions=directions, reduce=reduce)
        return select_validation(history, spec)

    assert chosen("best") == 1  # best on the first metric, the second from the same row
    assert chosen("best", ("minimize", "minimize")) == 0
    assert chosen("last") == 2
    assert ObjectiveSpec().reduce == "last"
    with pytest.raises(KeyError, match="val/sharpe"):
        select_validation(history, ObjectiveSpec(metrics=("val/sharpe",)))


def test_the_shipped_hparams_search_configs_compose_into_valid_sweeps(compose_config, tmp_path):
    from hydra_plugins.fxai_optuna_sweeper._impl import parse_sweep_space

    quick = compose_config("hparams_search=quick", hydra_config=True)
    sweeper = quick.hydra.sweeper
    assert sweeper._target_.endswith("FxaiOptunaSweeper")
    assert (sweeper.direction, sweeper.n_trials) == ("maximize", 12)
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    space = parse_sweep_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert space.distributions["ppo.learning_rate"] == FloatDistribution(1e-4, 3e-3, log=True)
    assert space.distributions["ppo.batch_size"] == CategoricalDistribution([64, 128, 256])
    base = to_train_config(quick, run_dir=str(tmp_path))
    assert base.trainer.accelerator == "cpu" and base.model.d_model == 32
    assert all(base.ppo.rollout_size % size == 0 for size in (64, 128, 256))

    full = compose_config("hparams_search=ppo_optuna", hydra_config=True)
    assert full.hydra.sweeper.search_space == "ppo_default"
    load_search_space("ppo_default").check(to_train_config(full, run_dir=str(tmp_path)))


# -- runs (subprocesses) -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_app_trains_into_the_hydra_run_dir_and_logs_its_objective(tmp_path):
    run_dir = tmp_path / "run"
    done = _run_app(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Objective (last validation, mean over 1 fold(s)): {'val/episode_reward':" in done.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run_dir"] == str(run_dir)
    assert saved["env"]["windows"] == {"1h": 16, "4h": 4}


@pytest.mark.slow
def test_an_exported_config_runs_as_the_primary_config(tmp_path):
    export = tmp_path / "exports"
    save_train_config(tiny_fx_config(tmp_path / "elsewhere", trainer={"torch_threads": 1}),
                      export / "best.yaml")
    run_dir = tmp_path / "retrain"
    done = _run_app("--config-path", str(export), "--config-name", "best",
                    f"hydra.run.dir={run_dir}", "ppo.n_epochs=1", "+logger.enabled=false",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["ppo"]["n_epochs"] == 1
    assert saved["run_dir"] == str(run_dir)  # Hydra's job directory, not the file's run_dir
    assert not (tmp_path / "elsewhere").exists()
    assert not (run_dir / "csv").exists()  # the app's own keys can be added: logger off
    typo = _run_app("--config-path", str(export), "--config-name", "best",
                    f"hydra.run.dir={tmp_path / 'typo'}", "ppo.n_epoch=1", cwd=tmp_path)
    assert typo.returncode != 0
    assert "ppo.n_epoch" in typo.stderr


SPACE = """
params:
  ppo.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
  ppo.batch_size: {type: categorical, choices: [64, 128, 256]}
constraints:
  - {divides: ppo.batch_size, into: [ppo.n_envs, ppo.n_steps]}
"""


@pytest.mark.slow
def test_a_pruning_sweep_of_the_ppo_app_leaves_pruned_trials(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    done = _run_app(
        "-m", *TINY, "ppo.total_timesteps=1024", "callbacks=sweep", "logger=none",
        "hydra/sweeper=fxai_optuna", "hydra.sweeper.direction=maximize",
        "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=ppo", f"hydra.sweeper.search_space={tmp_path / 'space.yaml'}",
        "ppo.ent_coef=choice(0.0, 0.01)",
        # every trial is pruned at its second validation (the first is the warm-up)
        "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1e9",
        "hydra.sweeper.pruner.n_warmup_steps=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="ppo", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [0, 1]  # stopped at validation 2 of 4
        assert set(trial.params) == {"ppo.learning_rate", "ppo.batch_size", "ppo.ent_coef"}
        config = trial.user_attrs["config"]  # the space was sampled into the job's config
        assert config["ppo"]["learning_rate"] == trial.params["ppo.learning_rate"]
        assert config["ppo"]["ent_coef"] == trial.params["ppo.ent_coef"]
        assert config["run_dir"] == str(tmp_path / "sweep" / str(trial.number))
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 0, "pruned": 2, "fail": 0}
    # what `fxai-tune run` records, through the same code: wall time, the pruned trial's
    # equity curve as an artifact (default store: <sweep dir>/artifacts; logger=none here, so
    # no metrics CSV)
    for trial in study.trials:
        assert trial.user_attrs["wall_time_s"] > 0
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        names = sorted(Path(m.filename).suffix for m in metas)
        assert ".png" in names, names
        for meta in metas:
            assert (tmp_path / "sweep" / "artifacts" / meta.artifact_id).is_file()


# -- the sweep's pre-flight ----------------------------------------------------------------------


def test_the_sweep_preflight_passes_a_config_that_builds(compose_config):
    from fxai_tune.hydra_app import preflight_sweep

    preflight_sweep(compose_config(*TINY))


def test_a_sweeps_provenance_names_the_packages_and_hashes_the_data_file(compose_config):
    import hashlib

    from fxai_tune.data import sample_path
    from fxai_tune.hydra_app import sweep_provenance

    record = sweep_provenance(compose_config(*TINY[3:]))  # the shipped sample data
    assert record["packages"]["optuna"] == optuna.__version__
    sample = Path(sample_path()).resolve()
    assert record["data_files"] == {str(sample): hashlib.sha256(sample.read_bytes()).hexdigest()}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["data=file", "data.source=/nonexistent/EURUSD.csv", "data.symbol=EURUSD"],
      "/nonexistent/EURUSD.csv"),
     (["env.episode_length=100000"], "env.episode_length"),
     (["objective.metrics=[val/no_such_metric]"], "val/no_such_metric"),
     (["model.d_model=15"], "d_model")],
    ids=["missing data file", "episode longer than the data", "unlogged metric",
         "policy that does not build"],
)
def test_the_sweep_preflight_refuses_in_one_line_what_every_job_would_fail_on(
    compose_config, overrides, named
):
    from fxai_tune.hydra_app import preflight_sweep
    from fxai_tune.tune import PreflightError

    tiny = TINY[3:] if overrides[0] == "data=file" else TINY  # TINY[:3]: synthetic data
    cfg = compose_config(*tiny, *overrides)
    with pytest.raises(PreflightError) as error:
        preflight_sweep(cfg)
    message = str(error.value)
    assert "\n" not in message and named in message, message


@pytest.mark.slow  # one start of the app: ~8 s
def test_a_sweep_with_a_bad_data_file_exits_2_in_one_line_before_any_trial(tmp_path):
    db = tmp_path / "sweep.db"
    done = _run_app("-m", "hydra/sweeper=fxai_optuna", *TINY[3:], "data=file",
                    "data.source=/nonexistent/EURUSD.csv", "data.symbol=EURUSD",
                    f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=bad",
                    f"hydra.sweep.dir={tmp_path / 'multirun'}",
                    "ppo.learning_rate=interval(1e-4, 1e-3)", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/nonexistent/EURUSD.csv" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()  # refused before the study was created

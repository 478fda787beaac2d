"""The ``fxai_optuna`` Hydra sweeper: discovery, grammar, toy sweeps, pruning, shared studies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from _tune_fixtures import POSTGRES_URL, unique_name
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]

# A toy task: -(x - 2)^2 (or [x, (x - 2)^2] with multi=true), failing or reporting on demand.
TOY_APP = '''
from dataclasses import dataclass, field
import os
import pathlib
import time

import hydra
import optuna
from hydra.core.config_store import ConfigStore


@dataclass
class Toy:
    x: float = 0.0
    y: int = 0
    name: str = "a"
    multi: bool = False
    fail_every: int = 0          # trials whose number % fail_every == 1 raise
    report_steps: int = 0        # report the value this many times (pruning)
    sleep: float = 0.0
    barrier: str = ""            # a directory: wait until 2 processes have a job running
    extra: dict = field(default_factory=dict)


ConfigStore.instance().store(name="toy_schema", node=Toy)


@hydra.main(config_path="conf", config_name="toy", version_base="1.3")
def main(cfg):
    from hydra_plugins.fxai_optuna_sweeper import current_trial

    trial = current_trial()
    if trial is not None:  # the job's own process writes to its trial
        trial.set_user_attr("job_pid", os.getpid())
    if cfg.barrier:
        pathlib.Path(cfg.barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(pathlib.Path(cfg.barrier).iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(cfg.sleep)
    if cfg.fail_every and trial.number % cfg.fail_every == 1:
        raise RuntimeError(f"trial {trial.number} fails on purpose")
    value = -(cfg.x - 2.0) ** 2
    for step in range(cfg.report_steps):
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")
    return [cfg.x, (cfg.x - 2.0) ** 2] if cfg.multi else value


if __name__ == "__main__":
    main()
'''

TOY_CONFIG = """
defaults:
  - toy_schema
  - _self_
  - hparams_search: null
"""

# a sweep with a fixed value among its params
FIXED_PARAMS = """
# @package _global_
defaults:
  - override /hydra/sweeper: fxai_optuna

hydra:
  sweeper:
    direction: maximize
    n_trials: 4
    params:
      x: interval(0, 4)
      y: 3
"""

# lightning-hydra-template's hparams_search/mnist_optuna.yaml (params form), with only
# `override hydra/sweeper: optuna` changed to fxai_optuna
TEMPLATE_PARAMS = """
# @package _global_
defaults:
  - override /hydra/sweeper: fxai_optuna

hydra:
  mode: "MULTIRUN"
  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
    storage: null
    study_name: null
    n_jobs: 1
    direction: maximize
    n_trials: 6
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10
    params:
      x: interval(0.0, 4.0)
      y: choice(32, 64, 128, 256)
"""

# its older form: the deprecated search_space mapping
TEMPLATE_SEARCH_SPACE = """
# @package _global_
defaults:
  - override /hydra/sweeper: fxai_optuna

hydra:
  mode: "MULTIRUN"
  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
    storage: null
    study_name: null
    n_jobs: 1
    direction: maximize
    n_trials: 6
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 12345
      n_startup_trials: 10
    search_space:
      y:
        type: categorical
        choices: [32, 64, 128]
      x:
        type: float
        low: 0.0
        high: 4.0
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


@pytest.fixture
def toy(tmp_path):
    """Write the toy app and return a function running it with overrides."""
    app = tmp_path / "toy_app.py"
    app.write_text(TOY_APP)
    conf = tmp_path / "conf"
    (conf / "hparams_search").mkdir(parents=True)
    (conf / "toy.yaml").write_text(TOY_CONFIG)
    (conf / "hparams_search" / "fixed.yaml").write_text(FIXED_PARAMS)
    (conf / "hparams_search" / "template_params.yaml").write_text(TEMPLATE_PARAMS)
    (conf / "hparams_search" / "template_search_space.yaml").write_text(TEMPLATE_SEARCH_SPACE)

    def run(*overrides: str, sweep_dir: Path | None = None, multirun: bool = True,
            check: bool = True, background: bool = False):
        sweep_dir = sweep_dir or tmp_path / "sweep"
        args = [sys.executable, str(app), *(["-m"] if multirun else []),
                f"hydra.sweep.dir={sweep_dir}", f"hydra.run.dir={tmp_path / 'run'}",
                *overrides]
        if background:
            return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=_env(), cwd=tmp_path)
        done = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                              timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"toy app failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run


@pytest.fixture
def impl(monkeypatch):
    """The plugin's implementation module (the repository root on sys.path until installed)."""
    monkeypatch.syspath_prepend(str(REPO))
    from hydra_plugins.fxai_optuna_sweeper import _impl

    return _impl


def _results(sweep_dir: Path) -> dict:
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def _job_configs(sweep_dir: Path) -> dict[int, dict]:
    """Job number -> the job's composed config."""
    return {
        int(job.name): yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        for job in sweep_dir.iterdir()
        if job.is_dir() and job.name.isdigit()
    }


SWEEPER = ("hydra/sweeper=fxai_optuna",)


# -- discovery and grammar ---------------------------------------------------------------------


def test_hydra_discovers_the_sweeper_and_its_config_groups():
    code = textwrap.dedent("""
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper

        names = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
        print("fxai_optuna_sweeper.FxaiOptunaSweeper" in " ".join(names))
        store = ConfigStore.instance()
        print(sorted(store.list("hydra/sweeper")))
        print(sorted(store.list("hydra/sweeper/sampler")))
        print(sorted(store.list("hydra/sweeper/pruner")))
        print("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
              in Plugins.instance().class_name_to_class)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), check=True).stdout.splitlines()
    assert out[0] == "True"
    assert "fxai_optuna.yaml" in out[1]
    for sampler in ("tpe", "random", "grid", "cmaes", "nsgaii", "gp", "qmc"):
        assert f"{sampler}.yaml" in out[2]
    for pruner in ("median", "percentile", "successive_halving", "hyperband", "nop"):
        assert f"{pruner}.yaml" in out[3]
    assert out[4] == "True"  # configs pinning hydra-optuna-sweeper's _target_ still run


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("x=choice(1, 2, 4)", CategoricalDistribution([1, 2, 4])),
        ("x=choice(a, 'b c', true)", CategoricalDistribution(["a", "b c", True])),
        ("x=choice([1,2],[3])", CategoricalDistribution(["[1,2]", "[3]"])),
        # range includes its stop, as hydra-optuna-sweeper's (configs migrate from it)
        ("x=range(1, 5)", IntDistribution(1, 5)),
        ("x=range(3, 3)", IntDistribution(3, 3)),
        ("x=range(0, 10, 3)", IntDistribution(0, 9, step=3)),  # 10 is off the step grid
        ("x=range(5, 1, -1)", IntDistribution(1, 5)),
        ("x=range(5, 0, -2)", IntDistribution(1, 5, step=2)),  # the grid starts at the start
        ("x=range(0.1, 1.0, 0.2)", FloatDistribution(0.1, 0.9, step=0.2)),
        ("x=range(0, 1, 0.25)", FloatDistribution(0.0, 1.0, step=0.25)),
        ("x=float(range(1, 4))", FloatDistribution(1.0, 4.0, step=1.0)),
        # shuffle(range) is categorical over Hydra's own range, as in hydra-optuna-sweeper
        ("x=shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),
        ("x=interval(1, 10)", FloatDistribution(1.0, 10.0)),
        ("x=int(interval(1, 10))", IntDistribution(1, 10)),
        ("x=tag(log, interval(1e-5, 1e-1))", FloatDistribution(1e-5, 1e-1, log=True)),
        ("x=tag(log, int(interval(8, 1024)))", IntDistribution(8, 1024, log=True)),
    ],
)
def test_each_grammar_form_maps_to_its_optuna_distribution(impl, override, expected):
    space = impl.parse_sweep_space([override])
    got = space.distributions["x"]
    if isinstance(expected, CategoricalDistribution):
        assert isinstance(got, CategoricalDistribution)
        assert sorted(map(str, got.choices)) == sorted(map(str, expected.choices))
    else:
        assert got == expected
    assert space.fixed == {}


def test_fixed_values_deletions_and_groups_pass_through_unsampled(impl):
    space = impl.parse_sweep_space(
        ["x=interval(0, 1)", "y=3", "~extra", "+new.key=[1,2]", "model=small", "y=choice(1, 2)",
         "name=b"]
    )
    assert set(space.distributions) == {"x", "y"}  # a later y=choice(...) replaces y=3
    assert space.fixed == {"~extra": "~extra", "+new.key": "+new.key=[1,2]",
                           "model": "model=small", "name": "name=b"}
    assert space.overrides({"x": 0.5, "y": 2}) == [
        "x=0.5", "y=2", "~extra", "+new.key=[1,2]", "model=small", "name=b"]


@pytest.mark.parametrize(
    "override",
    ["x=tag(log, choice(1, 2))", "x=range(3, 1)", "x=range(1, 3, -1)",
     "x=tag(log, interval(0, 1))"],
)
def test_forms_optuna_cannot_sample_are_rejected(impl, override):
    with pytest.raises(ValueError, match="x="):
        impl.parse_sweep_space([override])


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", "a..b"])
def test_a_study_name_the_cli_would_refuse_is_refused_by_the_sweeper(impl, name):
    with pytest.raises(ValueError, match=r"hydra.sweeper.study_name: got .* valid: a letter"):
        impl.SweeperImpl(
            sampler=None, direction="maximize", storage=None, study_name=name, n_trials=1,
            n_jobs=1, max_failure_rate=0.0, search_space=None, params=None,
            custom_search_space=None, pruner=None,
        )


# choices as written in an override; Hydra reads each as a string with , ' = \ or spaces
NASTY_CHOICES = ["'a,b'", r"'it\'s'", "'k=v'", "'a b'", "'null'", "'true'", "'1'", "'[1]'",
                 r"'x\y'", r"'end\\'", r"'q\\\'q'", "' pad '", "'(p)'", "'{c}'", "plain"]


@pytest.mark.parametrize("choice", NASTY_CHOICES)
def test_a_sampled_string_reaches_the_job_as_that_string(impl, choice):
    # the override a job gets is parsed by Hydra's parser: it must give the string back
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    text = parser.parse_override(f"name={choice}").value()
    assert isinstance(text, str)
    space = impl.parse_sweep_space([f"name=choice({choice}, other)"])
    assert text in space.distributions["name"].choices
    (override,) = space.overrides({"name": text})
    parsed = parser.parse_override(override)
    assert not parsed.is_sweep_override(), override
    assert parsed.value() == text, override


def test_list_and_dict_choices_reach_the_job_as_lists_and_dicts(impl):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = impl.parse_sweep_space(["w=choice({1h:32,4h:8}, [1,2], '[3]')"])
    parser = OverridesParser.create()
    got = [parser.parse_override(space.overrides({"w": c})[0]).value()
           for c in space.distributions["w"].choices]
    assert got == [{"1h": 32, "4h": 8}, [1, 2], "[3]"]


def test_legacy_search_space_mapping_maps_to_distributions(impl):
    got = impl.distributions_from_legacy({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "n": {"type": "int", "low": 1, "high": 9, "step": 2},
        "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
    })
    assert got == {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "n": IntDistribution(1, 9, step=2),
        "opt": CategoricalDistribution(["adam", "sgd"]),
    }


def test_grid_points_follow_the_distribution():
    from fxai_tune.tune._study import grid_values

    assert grid_values("x", IntDistribution(0, 9, step=3)) == [0, 3, 6, 9]
    assert grid_values("x", FloatDistribution(0.1, 0.9, step=0.2)) == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(ValueError, match="grid sampler needs discrete params"):
        grid_values("x", FloatDistribution(0, 1))


def test_the_sweepers_sampler_and_pruner_groups_are_the_clis_registry():
    # one registry for both front doors: every name a study file takes is a Hydra group of the
    # same Optuna class, and hydra-optuna-sweeper's names are aliases accepted by both
    import hydra_plugins.fxai_optuna_sweeper.config  # noqa: F401 - stores the groups
    from hydra.core.config_store import ConfigStore

    from fxai_tune.tune._study import PRUNER_ALIASES, PRUNERS, SAMPLER_ALIASES, SAMPLERS

    store = ConfigStore.instance().repo["hydra"]["sweeper"]
    for group, registry, aliases in (("sampler", SAMPLERS, SAMPLER_ALIASES),
                                     ("pruner", PRUNERS, PRUNER_ALIASES)):
        nodes = {name.removesuffix(".yaml"): entry.node
                 for name, entry in store[group].items()}
        names = set(registry) | set(aliases)
        assert names <= set(nodes), names - set(nodes)
        assert set(nodes) - names <= {"motpe"}  # removed from Optuna: refused with a reason
        for name in names:
            cls = registry[aliases.get(name, name)]
            assert nodes[name]["_target_"] == f"optuna.{group}s.{cls.__name__}", name


# -- toy sweeps ----------------------------------------------------------------------------------


def test_fixed_params_reach_every_job_and_are_not_sampled(toy, tmp_path):
    toy("hparams_search=fixed", "name=b")
    jobs = _job_configs(tmp_path / "sweep")
    assert sorted(jobs) == [0, 1, 2, 3]  # job directories are the trial numbers
    assert {(job["y"], job["name"]) for job in jobs.values()} == {(3, "b")}
    assert len({job["x"] for job in jobs.values()}) == 4
    assert list(_results(tmp_path / "sweep")["best_params"]) == ["x"]


def test_toy_sweep_on_sqlite_finds_the_optimum_and_writes_the_storage_best(toy, tmp_path):
    storage = f"sqlite:///{tmp_path / 'toy.db'}"
    toy(*SWEEPER, "hydra.sweeper.n_trials=25", "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=toy",
        "hydra.sweeper.sampler.seed=0", "hydra.sweeper.sampler.n_startup_trials=8",
        "x=interval(-5, 5)")
    study = optuna.load_study(study_name="toy", storage=storage)
    results = _results(tmp_path / "sweep")
    assert len(study.trials) == 25
    assert abs(study.best_params["x"] - 2.0) < 0.5
    assert results["name"] == "optuna"
    assert results["best_params"] == study.best_params
    assert results["best_value"] == pytest.approx(study.best_value)


@pytest.mark.slow  # two sweeps of 3 jobs: ~30 s
def test_two_seeded_sweeps_on_one_study_never_repeat_a_trial(toy, tmp_path):
    storage = f"sqlite:///{tmp_path / 'toy.db'}"
    for cap, sweep in ((3, "sweep"), (6, "sweep2")):  # the second continues the first's study
        toy(*SWEEPER, f"hydra.sweeper.n_trials={cap}", "hydra.sweeper.direction=maximize",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=toy",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
            "x=interval(-5, 5)", sweep_dir=tmp_path / sweep)
    drawn = [t.params["x"] for t in optuna.load_study(study_name="toy", storage=storage).trials]
    assert len(drawn) == 6
    assert len(set(drawn)) == 6, drawn


def test_grid_sampler_caps_the_trials_at_the_grid_size(toy, tmp_path):
    toy(*SWEEPER, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=50",
        "x=range(0, 2)", "name=choice(a, b)")
    jobs = _job_configs(tmp_path / "sweep")
    assert sorted((job["x"], job["name"]) for job in jobs.values()) == [
        (0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]


def test_multi_objective_sweep_writes_non_dominated_solutions(toy, tmp_path):
    toy(*SWEEPER, "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.n_trials=12",
        "hydra.sweeper.sampler.seed=0", "multi=true", "x=interval(0, 4)")
    solutions = _results(tmp_path / "sweep")["solutions"]
    assert len(solutions) >= 2
    points = [tuple(s["values"]) for s in solutions]
    for a in points:  # maximize the first value, minimize the second
        for b in points:
            dominates = b[0] >= a[0] and b[1] <= a[1] and b != a
            assert not dominates, f"{b} dominates {a}"
    # every sampled point no other beats on both objectives, and only those (x < 2 only when
    # no sample fell in (x, 4 - x])
    sampled = [job["x"] for job in _job_configs(tmp_path / "sweep").values()]
    front = {x for x in sampled
             if not any(y > x and (y - 2) ** 2 <= (x - 2) ** 2 for y in sampled)}
    assert {s["params"]["x"] for s in solutions} == front


@pytest.mark.parametrize(("rate", "stops"), [(0.0, True), (0.4, True), (0.5, False)])
def test_max_failure_rate_decides_whether_a_failing_job_stops_the_sweep(
    toy, tmp_path, rate, stops
):
    done = toy(*SWEEPER, "hydra.sweeper.n_trials=6", f"hydra.sweeper.max_failure_rate={rate}",
               "fail_every=2", "x=interval(0, 4)", check=False)
    jobs = [p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()]
    results = _results(tmp_path / "sweep")
    if stops:  # trial 1 fails: 1 of 2 finished jobs > rate
        assert done.returncode != 0
        assert "trial 1 fails on purpose" in done.stderr + done.stdout
        assert len(jobs) == 2
        assert results["trials"] == {"complete": 1, "pruned": 0, "fail": 1}
    else:  # trials 1, 3, 5 fail: never more than half
        assert done.returncode == 0, done.stderr
        assert len(jobs) == 6
        assert results["trials"] == {"complete": 3, "pruned": 0, "fail": 3}


def test_pruned_jobs_end_as_pruned_trials_not_failures(toy, tmp_path):
    toy(*SWEEPER, "hydra.sweeper.n_trials=8", "hydra.sweeper.direction=maximize",
        "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.sampler.seed=3", "report_steps=3", "x=interval(-5, 5)")
    counts = _results(tmp_path / "sweep")["trials"]  # max_failure_rate is 0: no failure
    assert counts["pruned"] >= 1
    assert counts["fail"] == 0
    assert counts["complete"] + counts["pruned"] == 8


@pytest.mark.parametrize("config", ["template_params", "template_search_space"])
def test_a_hydra_optuna_sweeper_config_runs_with_only_the_sweeper_name_changed(
    toy, tmp_path, config
):
    toy(f"hparams_search={config}", multirun=False)
    results = _results(tmp_path / "sweep")
    assert set(results["best_params"]) == {"x", "y"}
    assert len(_job_configs(tmp_path / "sweep")) == 6


def _require_postgres() -> str:
    """The test PostgreSQL's storage URL; skip when it is not reachable, unless CI named it
    (then fail)."""
    from fxai_tune.tune import normalize_storage_url

    storage = normalize_storage_url(POSTGRES_URL)
    try:
        optuna.storages.RDBStorage(storage)
    except Exception as error:  # noqa: BLE001 - any connection problem
        if "FXAI_TEST_POSTGRES_URL" in os.environ:
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    return storage


@pytest.mark.slow
def test_concurrent_sweeps_on_postgresql_stop_at_exactly_n_trials(toy, tmp_path):
    storage = _require_postgres()
    name = unique_name("hydra_cap")
    common = (*SWEEPER, "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2",
              "hydra.sweeper.direction=maximize",
              f"hydra.sweeper.storage={POSTGRES_URL}", f"hydra.sweeper.study_name={name}",
              "hydra/sweeper/sampler=random", "sleep=0.2", "x=interval(0, 4)",
              f"barrier={tmp_path / 'barrier'}")  # both processes run trials at once
    (tmp_path / "barrier").mkdir()
    try:
        procs = [toy(*common, sweep_dir=tmp_path / f"sweep{k}", background=True)
                 for k in range(2)]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) == 10
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        jobs = [sorted(_job_configs(tmp_path / f"sweep{k}")) for k in range(2)]
        assert all(jobs), f"a process ran no trial: {jobs}"
        assert sorted(jobs[0] + jobs[1]) == list(range(10))  # one job per trial number
        # each writes the study-wide best when it stops; the last one to stop, the final best
        bests = [_results(tmp_path / f"sweep{k}")["best_value"] for k in range(2)]
        assert study.best_value in bests
        assert set(bests) <= {t.value for t in study.trials}
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


# -- secrets -----------------------------------------------------------------------------------

SECRET = "s3cret-in-url"


def _hydra_node(storage: object, overrides: list[str]) -> DictConfig:
    return OmegaConf.create(
        {"hydra": {"sweeper": {"storage": storage}, "overrides": {"hydra": overrides}}}
    )


def test_a_storage_password_is_kept_out_of_the_job_configs_by_reference(impl, monkeypatch):
    """From an override or from a config file: the jobs' config names the variable."""
    from fxai_tune import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, "restored after the test")
    url = f"postgresql://bob:{SECRET}@db:5432/optuna"
    reference = "${oc.env:FXAI_TUNE_STORAGE}"
    for overrides, expected in [
        ([f"hydra.sweeper.storage={url}", "hydra/sweeper=fxai_optuna"],
         [f"hydra.sweeper.storage={reference}", "hydra/sweeper=fxai_optuna"]),
        (["hydra/sweeper=fxai_optuna"],  # the URL came from a config file
         ["hydra/sweeper=fxai_optuna", f"hydra.sweeper.storage={reference}"]),
    ]:
        config = _hydra_node(url, overrides)
        impl._storage_by_reference(config)
        assert os.environ[STORAGE_ENV] == url
        assert OmegaConf.to_yaml(config).count(SECRET) == 0
        assert OmegaConf.to_container(config.hydra.overrides.hydra) == expected  # unresolved
        assert config.hydra.sweeper.storage == url  # resolves to the URL in this process
    for untouched in ["postgresql://bob@db/optuna", reference]:  # no password; a reference
        config = _hydra_node(untouched, [f"hydra.sweeper.storage={untouched}"])
        impl._storage_by_reference(config)
        assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(
            _hydra_node(untouched, [f"hydra.sweeper.storage={untouched}"]))


@pytest.mark.slow
def test_a_storage_password_never_lands_in_the_files_hydra_writes(toy, tmp_path):
    from sqlalchemy.engine import make_url

    storage = _require_postgres()
    # the test server trusts local connections: any password is accepted
    url = make_url(POSTGRES_URL).set(password=SECRET).render_as_string(hide_password=False)
    name = unique_name("hydra_secret")
    try:
        toy(*SWEEPER, "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
            f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}",
            "x=interval(0, 4)")
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 2
        written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
        assert len([p for p in written if p.name == "hydra.yaml"]) == 2
        assert [str(p) for p in written if SECRET in p.read_text()] == []
        job = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "hydra.yaml").read_text())
        assert job["hydra"]["sweeper"]["storage"] == "${oc.env:FXAI_TUNE_STORAGE}"
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


# -- the study, its lock and heartbeat (in process, with a stand-in launcher) -----------------


class _FakeLauncher:
    """Runs each job as ``job(overrides)`` in this process; collects what jobs saw."""

    def __init__(self, job):
        self.job = job

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED,
                          _return_value=self.job(list(o)))
                for o in job_overrides]


def _sweeper(impl, tmp_path, job=lambda overrides: 1.0, config=None, **keys):
    from omegaconf import OmegaConf

    values = dict(sampler=None, direction="maximize", storage=None, study_name=None,
                  n_trials=1, n_jobs=1, max_failure_rate=0.0, search_space=None, params=None,
                  custom_search_space=None, pruner=None)
    sweeper = impl.SweeperImpl(**{**values, **keys})
    sweeper.config = OmegaConf.create(config or {})
    sweeper.launcher = _FakeLauncher(job)
    sweeper.sweep_dir = tmp_path / "sweep"
    return sweeper


@pytest.fixture
def fresh_postgres():
    """The URL of a new, empty PostgreSQL database (dropped afterwards)."""
    import sqlalchemy

    from fxai_tune.tune import normalize_storage_url

    try:
        admin = sqlalchemy.create_engine(normalize_storage_url(POSTGRES_URL),
                                         isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            database = unique_name("fxai_fresh").lower().replace("-", "_")
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    except Exception as error:  # noqa: BLE001 - any connection problem
        if "FXAI_TEST_POSTGRES_URL" in os.environ:
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE {database} WITH (FORCE)"))
    admin.dispose()


def test_two_sweeps_opening_a_fresh_postgresql_study_at_once_both_succeed(
    impl, tmp_path, fresh_postgres
):
    # without the study lock, one of the two crashed creating Optuna's tables (UniqueViolation)
    import threading

    sweepers = [_sweeper(impl, tmp_path, storage=fresh_postgres, study_name="fresh")
                for _ in range(2)]
    for sweeper in sweepers:
        sweeper.directions = ["maximize"]
    barrier, opened, errors = threading.Barrier(2), [], []

    def open_study(sweeper):
        barrier.wait()
        try:
            opened.append(sweeper._open_study(impl.SweepSpace()).study_name)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(f"{type(error).__name__}: {str(error)[:200]}")

    threads = [threading.Thread(target=open_study, args=(s,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert opened == ["fresh", "fresh"]


def _heartbeats(db: Path) -> dict[int, object]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT trial_id, heartbeat FROM trial_heartbeats"))


def test_a_sweep_job_beats_while_it_runs(impl, tmp_path):
    import time

    db = tmp_path / "beat.db"
    seen = []

    def job(overrides):
        time.sleep(1.5)  # more than the heartbeat interval
        seen.append(_heartbeats(db))
        return 1.0

    sweeper = _sweeper(impl, tmp_path, job, storage=f"sqlite:///{db}", study_name="beat",
                       heartbeat_interval=1, grace_period=3)
    sweeper.sweep(["x=interval(0, 1)"])
    assert len(seen) == 1 and len(seen[0]) == 1, seen  # the running trial had a heartbeat


def test_a_killed_sweeps_trial_is_failed_and_rerun_without_using_up_the_cap(impl, tmp_path):
    import time

    from fxai_tune.tune import count_trials, create_or_load_study

    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    # what a sweep killed mid-job leaves: a RUNNING trial whose heartbeat stopped
    study = create_or_load_study(storage, "killed", directions=["maximize"],
                                 heartbeat_interval=1, grace_period=1)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # past grace_period, with SQLite's timestamps in whole seconds
    jobs = []
    sweeper = _sweeper(impl, tmp_path, lambda o: jobs.append(o) or 1.0, storage=storage,
                       study_name="killed", n_trials=1, heartbeat_interval=1, grace_period=1)
    sweeper.sweep(["x=interval(0, 1)"])
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params  # the retry re-runs its parameters
    assert jobs == [[f"x={trials[0].params['x']!r}"]]
    assert count_trials(trials).counted == 1  # the pair counts once toward n_trials


@pytest.mark.parametrize(
    ("direction", "objective", "expected"),
    [(None, {"directions": ["maximize"]}, ["maximize"]),
     (None, {"directions": ["maximize", "minimize"]}, ["maximize", "minimize"]),
     ("minimize", {"directions": ["maximize"]}, ["minimize"]),  # given: it wins
     (None, None, ["minimize"])],  # an app without an objective block: hydra-optuna's default
)
def test_the_direction_comes_from_the_apps_objective_unless_given(
    impl, tmp_path, direction, objective, expected
):
    config = {"objective": objective} if objective else {}
    sweeper = _sweeper(impl, tmp_path, direction=direction, config=config)
    assert sweeper._resolve_directions() == expected


def test_the_sweepers_heartbeat_defaults_are_a_study_files():
    from hydra_plugins.fxai_optuna_sweeper.config import FxaiOptunaSweeperConf

    from fxai_tune.tune import StudyConfig

    fields = StudyConfig.__dataclass_fields__
    for key in ("heartbeat_interval", "grace_period", "max_retry"):
        assert getattr(FxaiOptunaSweeperConf, key) == fields[key].default, key


@pytest.mark.slow  # two jobs at once in two worker processes: ~15 s each
@pytest.mark.parametrize(
    "launcher",
    [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
     ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")],
    ids=["joblib", "submitit_local"],
)
def test_jobs_in_other_processes_reach_their_trial_to_report_prune_and_write(
    toy, tmp_path, launcher
):
    pytest.importorskip(launcher[0].split("=")[1].split("_")[0])  # joblib, submitit
    storage = f"sqlite:///{tmp_path / 'launch.db'}"
    (tmp_path / "barrier").mkdir()
    # every value is above `upper`: each job is pruned at its first report, which it can only
    # learn from the storage
    toy(*SWEEPER, *launcher, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=launch",
        "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.upper=-100",
        "report_steps=2", f"barrier={tmp_path / 'barrier'}", "x=interval(0, 4)")
    trials = optuna.load_study(study_name="launch", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [t.intermediate_values for t in trials] == [{0: t.intermediate_values[0]}
                                                       for t in trials]
    pids = {t.user_attrs["job_pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two processes, at once (the barrier)
    assert len(list((tmp_path / "barrier").iterdir())) == 2


def test_a_study_in_memory_is_refused_with_a_launcher_that_runs_jobs_elsewhere(
    impl, tmp_path, capsys
):
    sweeper = _sweeper(impl, tmp_path, storage=None)
    sweeper.in_process = False
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep(["x=interval(0, 1)"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "hydra.sweeper.storage=null" in err[0] and "valid:" in err[0]


class _JobConfigs:
    """Stands in for Hydra's config loader: the job config is the fixed overrides."""

    def __init__(self):
        self.asked = []

    def load_sweep_config(self, config, overrides):
        from omegaconf import OmegaConf

        self.asked.append(list(overrides))
        return OmegaConf.create({"hydra": {"job": {}}, "overrides": list(overrides)})


def test_a_failing_preflight_stops_the_sweep_before_any_trial(impl, tmp_path, capsys):
    from types import SimpleNamespace

    from fxai_tune.tune import PreflightError

    seen = []

    def preflight(cfg):
        seen.append(dict(cfg))
        raise PreflightError("the sweep's job config: data: /nope.csv does not exist; valid: "
                             "a CSV or Parquet file\nsecond line")

    db = tmp_path / "untouched.db"
    sweeper = _sweeper(impl, tmp_path, storage=f"sqlite:///{db}", study_name="pre")
    loader = _JobConfigs()
    sweeper.hydra_context = SimpleNamespace(config_loader=loader)
    sweeper.preflight = preflight
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep(["x=interval(0, 1)", "y=3"])
    assert stop.value.code == 2
    assert loader.asked == [["y=3"]]  # the jobs' config before sampling: fixed values only
    assert seen == [{"overrides": ["y=3"]}]  # without Hydra's own node, as a task gets it
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the sweep's job config: data: /nope.csv does not exist; valid: "
                   "a CSV or Parquet file"]
    assert not db.exists()  # refused before the study was opened


def test_the_train_app_hands_the_sweeper_its_preflight_and_provenance():
    from fxai_tune import train
    from fxai_tune.hydra_app import preflight_sweep, sweep_provenance

    # Hydra gives the sweeper the undecorated task function; the sweeper reads these attributes
    assert train._train.fxai_preflight is preflight_sweep
    assert train._train.fxai_provenance is sweep_provenance


def test_a_study_the_sweeper_creates_records_the_provenance_of_its_jobs_config(impl, tmp_path):
    from types import SimpleNamespace

    url = f"sqlite:///{tmp_path / 'prov.db'}"
    sweeper = _sweeper(impl, tmp_path, storage=url, study_name="prov", n_trials=1)
    sweeper.hydra_context = SimpleNamespace(config_loader=_JobConfigs())
    sweeper.provenance_of = lambda cfg: {"overrides": list(cfg.overrides)}
    sweeper.sweep(["x=interval(0, 1)", "y=3"])
    study = optuna.load_study(study_name="prov", storage=url)
    assert study.user_attrs["provenance"] == {"overrides": ["y=3"]}  # the jobs' fixed config

"""Search spaces: parsing, one-line errors naming file and key, sampling, constraints, apply."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from fxai_tune.rl import ConfigError, TrainConfig, build_train_config
from fxai_tune.tune._space import (
    REPAIRED_ATTR,
    SearchSpace,
    SpaceError,
    config_field_type,
    load_search_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]

def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def space_error(tmp_path: Path, text: str) -> str:
    path = write_space(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_search_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def random_trials(space: SearchSpace, n: int, *, seed: int = 0, base: TrainConfig | None = None):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        values = space.sample(trial, base=base)
        study.tell(trial, 0.0)
        yield trial, values, study.get_trials(deepcopy=False)[-1]


# --------------------------------------------------------------------------------------------
# parsing


def test_every_distribution_type_parses_to_its_optuna_distribution(tmp_path):
    path = write_space(
        tmp_path,
        """
        params:
          ppo.learning_rate: {type: float, low: 1e-5, high: 1.0e-3, log: true}
          ppo.clip_coef: {type: float, low: 0.1, high: 0.3, step: 0.05}
          model.n_layers: {type: int, low: 1, high: 3}
          ppo.n_epochs: {type: int, low: 2, high: 16, log: true}
          ppo.n_steps: {type: int, low: 64, high: 256, step: 64}
          ppo.lr_schedule: {type: categorical, choices: [constant, linear]}
          model.mlp_hidden: {type: categorical, choices: [[64, 64], [128]]}
        """,
    )
    dists = load_search_space(path).distributions()
    assert dists["ppo.learning_rate"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["ppo.clip_coef"] == FloatDistribution(0.1, 0.3, step=0.05)
    assert dists["model.n_layers"] == IntDistribution(1, 3)
    assert dists["ppo.n_epochs"] == IntDistribution(2, 16, log=True)
    assert dists["ppo.n_steps"] == IntDistribution(64, 256, step=64)
    assert dists["ppo.lr_schedule"] == CategoricalDistribution(["constant", "linear"])
    # list choices are stored as JSON text (Optuna's choices are scalars) ...
    assert dists["model.mlp_hidden"] == CategoricalDistribution(["[64, 64]", "[128]"])


def test_list_choices_are_decoded_when_sampled(tmp_path):
    space = SearchSpace.from_dict(
        {"params": {"model.mlp_hidden": {"type": "categorical", "choices": [[64, 64], [32]]}}}
    )
    seen = {tuple(values["model.mlp_hidden"]) for _, values, _ in random_trials(space, 20)}
    assert seen == {(64, 64), (32,)}


def test_dict_typed_fields_accept_any_key_below_them():
    assert config_field_type("env.windows.1h") is int
    assert config_field_type("env.windows.15m") is int
    assert config_field_type("ppo.learning_rate") is float
    assert config_field_type("ppo.learning_rate.x") is None
    assert config_field_type("ppo.nope") is None


def test_bare_name_is_found_under_search_spaces_of_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "search_spaces").mkdir()
    write_space(
        tmp_path / "search_spaces",
        "params:\n  ppo.gamma: {type: float, low: 0.9, high: 0.99}\n",
        name="mine.yaml",
    )
    monkeypatch.chdir(tmp_path)
    assert list(load_search_space("mine").distributions()) == ["ppo.gamma"]
    with pytest.raises(SpaceError, match=r"no search space of that name.*valid: \[.*'mine'"):
        load_search_space("missing")


# --------------------------------------------------------------------------------------------
# one-line errors naming the file and the key

BAD_SPACES = [
    pytest.param(
        "params:\n  ppo.learnin_rate: {type: float, low: 0.1, high: 0.2}\n",
        ["params.ppo.learnin_rate", "unknown config path", "did you mean ppo.learning_rate"],
        id="unknown-path",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: uniform, low: 0.9, high: 0.99}\n",
        ["params.ppo.gamma.type", "'uniform'", "valid: float, int, categorical"],
        id="unknown-type",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {low: 0.9, high: 0.99}\n",
        ["params.ppo.gamma", "missing 'type'", "valid: float, int, categorical"],
        id="missing-type",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: float, low: 0.99, high: 0.9}\n",
        ["params.ppo.gamma", "low=0.99 > high=0.9", "valid: low <= high"],
        id="low-above-high",
    ),
    pytest.param(
        "params:\n  ppo.ent_coef: {type: float, low: 0.0, high: 0.1, log: true}\n",
        ["params.ppo.ent_coef.low", "log scale needs low > 0"],
        id="log-with-zero-low",
    ),
    pytest.param(
        "params:\n  ppo.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true, "
        "step: 1.0e-5}\n",
        ["params.ppo.learning_rate.step", "step cannot be combined with log"],
        id="step-with-log",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: []}\n",
        ["params.ppo.n_steps.choices", "non-empty list"],
        id="empty-choices",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: float, low: 0.9, high: 0.99, scale: log}\n",
        ["params.ppo.gamma.scale", "unknown field", "'low', 'high', 'log', 'step'"],
        id="unknown-field",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: float, high: 0.99}\n",
        ["params.ppo.gamma", "missing 'low'"],
        id="missing-low",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: float, low: 32.5, high: 64.0}\n",
        ["params.ppo.n_steps.low", "does not fit the field's type", "valid: int"],
        id="float-for-int-field",
    ),
    pytest.param(
        "params:\n  ppo.lr_schedule: {type: categorical, choices: [linear, 3]}\n",
        ["params.ppo.lr_schedule.choices", "choice 3", "valid: str"],
        id="choice-of-wrong-type",
    ),
    pytest.param(
        "params:\n  ppo.target_kl: {type: float, low: 0.01, high: 0.05, when: {use_kl: true}}\n",
        ["params.ppo.target_kl.when.use_kl", "unknown parameter 'use_kl'"],
        id="when-unknown-param",
    ),
    pytest.param(
        "params:\n"
        "  use_kl: {type: categorical, choices: [true, false], virtual: true}\n"
        "  ppo.target_kl: {type: float, low: 0.01, high: 0.05, when: {use_kl: yes_please}}\n",
        ["params.ppo.target_kl.when.use_kl", "never matches", "valid: [True, False]"],
        id="when-value-not-a-choice",
    ),
    pytest.param(
        "params:\n"
        "  ppo.gamma: {type: float, low: 0.9, high: 0.99}\n"
        "  ppo.gae_lambda: {type: float, low: 0.9, high: 0.99, when: {ppo.gamma: 0.95}}\n",
        ["params.ppo.gae_lambda.when.ppo.gamma", "valid: a categorical"],
        id="when-on-float-param",
    ),
    pytest.param(
        "params:\n"
        "  ppo.n_epochs: {type: int, low: 1, high: 4, when: {ppo.n_steps: 64}}\n"
        "  ppo.n_steps: {type: int, low: 64, high: 128, when: {ppo.n_epochs: 2}}\n",
        ["params.ppo.n_epochs.when", "cycle"],
        id="condition-cycle",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: [32, 64]}\n"
        "constraints:\n  - {divides: ppo.batch_sise, into: [ppo.n_envs, ppo.n_steps]}\n",
        ["constraints[0].divides", "unknown config path 'ppo.batch_sise'"],
        id="constraint-unknown-path",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: [32, 64]}\n"
        "constraints:\n  - {divides: ppo.batch_size, into: [ppo.n_envs, ppo.n_step]}\n",
        ["constraints[0].into", "unknown config path 'ppo.n_step'"],
        id="constraint-unknown-into-path",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: [32, 64]}\n"
        "constraints:\n  - {divides: ppo.gamma, into: [ppo.n_steps]}\n",
        ["constraints[0].divides", "valid: an int field"],
        id="constraint-on-float-field",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: [32, 64]}\n"
        "constraints:\n  - {multiple_of: ppo.batch_size, into: [ppo.n_steps]}\n",
        ["constraints[0].multiple_of", "valid: {divides: PATH, into: [PATH, ...]}"],
        id="constraint-unknown-kind",
    ),
    pytest.param(
        "fixed:\n  ppo: {n_epochs: 4}\n",
        ["fixed.ppo", "config section", "valid: one of its fields, e.g. ppo.n_envs"],
        id="section-instead-of-value",
    ),
    pytest.param(
        "fixed:\n  ppo.n_epoch: 4\n",
        ["fixed.ppo.n_epoch", "unknown config path", "did you mean ppo.n_epochs"],
        id="fixed-unknown-path",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: float, low: 0.9, high: 0.99}\nfixed:\n  ppo.gamma: 0.9\n",
        ["fixed.ppo.gamma", "also under params"],
        id="fixed-and-sampled",
    ),
    pytest.param(
        "params:\n  ppo.n_steps: {type: categorical, choices: [true, false], virtual: true}\n",
        ["params.ppo.n_steps.virtual", "may not be named after a config path"],
        id="virtual-named-like-a-path",
    ),
    pytest.param(
        "params:\n  ppo.target_kl: {type: float, low: 0.01, high: 0.05, otherwise: null}\n",
        ["params.ppo.target_kl.otherwise", "only valid together with 'when'"],
        id="otherwise-without-when",
    ),
    pytest.param(
        "parameters:\n  ppo.gamma: {type: float, low: 0.9, high: 0.99}\n",
        ["parameters", "unknown section", "'params', 'fixed', 'constraints'"],
        id="unknown-section",
    ),
    pytest.param(
        "params:\n  ppo.gamma: {type: float, low: 0.9, high: 0.99}\n"
        "  ppo.gamma: {type: float, low: 0.9, high: 0.95}\n",
        ["invalid YAML (line 3)", "duplicate key 'ppo.gamma'"],
        id="duplicate-key",
    ),
    pytest.param(
        "params: [ppo.gamma\n",
        ["invalid YAML"],
        id="broken-yaml",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SPACES)
def test_bad_space_is_a_one_line_error_naming_file_and_key(tmp_path, text, expected):
    message = space_error(tmp_path, text)
    for part in expected:
        assert part in message, message


def test_bounds_that_do_not_build_are_reported_with_the_parameter():
    space = SearchSpace.from_dict(
        {"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 1.5},
                    "ppo.n_epochs": {"type": "int", "low": 1, "high": 8}}},
        source="s.yaml",
    )
    expected = r"s\.yaml: params\.ppo\.gamma: value 1\.5 does not build"
    with pytest.raises(SpaceError, match=expected):
        space.check(TrainConfig())


# --------------------------------------------------------------------------------------------
# sampling

CONDITIONAL = {
    "params": {
        "use_kl": {"type": "categorical", "choices": [True, False], "virtual": True},
        "ppo.target_kl": {
            "type": "float", "low": 0.01, "high": 0.05,
            "when": {"use_kl": True}, "otherwise": None,
        },
        "curriculum.promotion_threshold": {
            "type": "float", "low": -1.0, "high": 1.0, "when": {"curriculum.enabled": True}
        },
        # declared before the parameter it depends on: sampled after it anyway
        "curriculum.min_validations_per_stage": {
            "type": "int", "low": 1, "high": 3, "when": {"model.n_layers": [2, 3]}
        },
        "model.n_layers": {"type": "int", "low": 1, "high": 3},
        "curriculum.enabled": {"type": "categorical", "choices": [True, False]},
    },
    "fixed": {"ppo.n_epochs": 3, "model.mlp_hidden": [32, 32]},
}


def test_condition_controls_whether_a_parameter_is_sampled():
    space = SearchSpace.from_dict(CONDITIONAL)
    outcomes = set()
    for trial, values, frozen in random_trials(space, 40):
        enabled = frozen.params["curriculum.enabled"]
        assert ("curriculum.promotion_threshold" in frozen.params) is enabled
        assert ("curriculum.promotion_threshold" in values) is enabled
        deep = frozen.params["model.n_layers"] >= 2
        assert ("curriculum.min_validations_per_stage" in frozen.params) is deep
        if frozen.params["use_kl"]:
            assert 0.01 <= values["ppo.target_kl"] <= 0.05
        else:
            assert values["ppo.target_kl"] is None  # the `otherwise` value
            assert "ppo.target_kl" not in frozen.params
        assert "use_kl" not in values  # virtual: recorded by Optuna, never in the config
        outcomes.add((enabled, frozen.params["use_kl"], deep))
    assert len(outcomes) == 8


def test_conditions_are_sampled_before_what_they_gate():
    order = list(SearchSpace.from_dict(CONDITIONAL).params)
    assert order.index("model.n_layers") < order.index("curriculum.min_validations_per_stage")
    assert order.index("curriculum.enabled") < order.index("curriculum.promotion_threshold")


def test_fixed_values_pass_through_unsampled():
    space = SearchSpace.from_dict(CONDITIONAL)
    for _, values, frozen in random_trials(space, 5):
        assert values["ppo.n_epochs"] == 3 and values["model.mlp_hidden"] == [32, 32]
        assert "ppo.n_epochs" not in frozen.params


def test_distributions_stay_the_same_across_trials():
    space = SearchSpace.from_dict(CONDITIONAL)
    expected = space.distributions()
    for _, _, frozen in random_trials(space, 30):
        for name, dist in frozen.distributions.items():
            assert dist == expected[name]


def test_batch_size_is_repaired_to_divide_the_rollout():
    space = SearchSpace.from_dict(
        {
            "params": {
                "ppo.n_envs": {"type": "int", "low": 1, "high": 12},
                "ppo.n_steps": {"type": "categorical", "choices": [24, 50, 64, 100]},
                "ppo.batch_size": {"type": "int", "low": 8, "high": 2000},
                "model.d_model": {"type": "categorical", "choices": [24, 32, 48]},
                "model.n_heads": {"type": "int", "low": 1, "high": 8},
            },
            "constraints": [
                {"divides": "ppo.batch_size", "into": ["ppo.n_envs", "ppo.n_steps"]},
                {"divides": "model.n_heads", "into": "model.d_model"},
            ],
        }
    )
    repairs = 0
    for trial, values, frozen in random_trials(space, 200):
        rollout = values["ppo.n_envs"] * values["ppo.n_steps"]
        sampled = frozen.params["ppo.batch_size"]
        assert rollout % values["ppo.batch_size"] == 0
        assert values["ppo.batch_size"] <= sampled
        # the largest divisor not above the sampled value
        assert not any(rollout % b == 0 for b in range(values["ppo.batch_size"] + 1,
                                                       min(sampled, rollout) + 1))
        assert values["model.d_model"] % values["model.n_heads"] == 0
        repaired = frozen.user_attrs.get(REPAIRED_ATTR, {})
        if values["ppo.batch_size"] != sampled:
            assert repaired["ppo.batch_size"] == values["ppo.batch_size"]
            repairs += 1
        else:
            assert "ppo.batch_size" not in repaired
    assert repairs > 50


def test_constraint_takes_unsampled_operands_from_the_base_config():
    space = SearchSpace.from_dict(
        {
            "params": {"ppo.batch_size": {"type": "categorical", "choices": [96, 512]}},
            "constraints": [{"divides": "ppo.batch_size", "into": ["ppo.n_envs", "ppo.n_steps"]}],
        }
    )
    base = build_train_config({"ppo": {"n_envs": 3, "n_steps": 64, "batch_size": 64}})
    values = space.with_base(base).sample(optuna.trial.FixedTrial({"ppo.batch_size": 512}))
    assert values["ppo.batch_size"] == 192
    values = space.sample(optuna.trial.FixedTrial({"ppo.batch_size": 96}), base=base)
    assert values["ppo.batch_size"] == 96
    assert space.apply(base, values).ppo.batch_size == 96


# --------------------------------------------------------------------------------------------
# apply


def test_apply_writes_values_into_a_validated_config():
    space = SearchSpace.from_dict(CONDITIONAL)
    base = TrainConfig()
    for _, values, _ in random_trials(space, 10):
        config = space.apply(base, values)
        assert config.ppo.target_kl == values["ppo.target_kl"]
        assert config.ppo.n_epochs == 3
        assert config.model.mlp_hidden == (32, 32)
        assert config.model.n_layers == values["model.n_layers"]
        assert config.curriculum.enabled is values["curriculum.enabled"]
        if "curriculum.promotion_threshold" in values:
            assert math.isclose(
                config.curriculum.promotion_threshold, values["curriculum.promotion_threshold"]
            )
    assert base == TrainConfig()  # the base is not modified


def test_apply_sets_a_key_below_a_dict_field():
    space = SearchSpace.from_dict({"fixed": {"env.windows.1h": 16}})
    config = space.apply(TrainConfig(), space.sample(optuna.trial.FixedTrial({})))
    assert config.env.windows == {**TrainConfig().env.windows, "1h": 16}


def test_apply_replaces_a_dict_value_whole():
    space = SearchSpace.from_dict({"fixed": {"env.windows": {"1h": 16, "4h": 4}}})
    config = space.apply(TrainConfig(), space.sample(optuna.trial.FixedTrial({})))
    assert config.env.windows == {"1h": 16, "4h": 4}


def test_apply_rejects_values_the_config_rejects():
    space = SearchSpace.from_dict(
        {"params": {"ppo.gamma": {"type": "float", "low": 0, "high": 2}}}
    )
    with pytest.raises(ConfigError, match="gamma"):
        space.apply(TrainConfig(), {"ppo.gamma": 1.5})


# --------------------------------------------------------------------------------------------
# shipped spaces


@pytest.mark.parametrize("name", ["ppo_quick", "ppo_default"])
def test_shipped_space_samples_configs_that_build(name):
    space = load_search_space(ROOT / "fxai_tune" / "search_spaces" / f"{name}.yaml")
    base = build_train_config({"ppo": {"n_envs": 8, "n_steps": 64}})
    space.check(base)
    for _, values, _ in random_trials(space, 8, base=base):
        config = space.apply(base, values)
        assert config.ppo.rollout_size % config.ppo.batch_size == 0
        assert config.model.d_model % config.model.n_heads == 0


def test_shipped_default_space_covers_the_issue_parameters():
    text = (ROOT / "fxai_tune" / "search_spaces" / "ppo_default.yaml").read_text()
    for path in ["ppo.learning_rate", "ppo.n_steps", "ppo.batch_size", "ppo.n_epochs",
                 "ppo.gamma", "ppo.gae_lambda", "ppo.clip_coef", "ppo.ent_coef", "ppo.vf_coef",
                 "ppo.max_grad_norm", "ppo.target_kl", "model.d_model", "model.n_layers",
                 "model.n_heads", "model.dropout", "env.windows.1h", "env.reward.weights.drawdown",
                 "curriculum.enabled", "curriculum.promotion_threshold"]:
        assert f"\n  {path}:" in text, path

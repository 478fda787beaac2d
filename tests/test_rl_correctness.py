"""Fast checks that fail when the RL wiring is broken (each was seen failing on broken code).

Exact expectations on tiny runs rather than learning curves: the ratio before the first
update, the number of optimizer steps, the bootstrap at truncation, the target-KL stop,
deterministic validation, precision, resume and checkpoint contents.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import optuna
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from _rl_fixtures import tiny_fx_config
from pytorch_lightning.callbacks import DeviceStatsMonitor
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.utils._python_dispatch import TorchDispatchMode

from fxai_tune.model import ModelConfig, MultiBranchTransformer, dropout_seeds
from fxai_tune.model._dropout import keep_mask
from fxai_tune.rl import (
    PPOLightningModule,
    RLDataModule,
    TrainerConfig,
    build_train_config,
    build_training,
    config_to_dict,
    resolve_precision,
    resume_training,
    train,
)
from fxai_tune.rl import _train as train_module
from fxai_tune.rl._callbacks import IterationDeviceStatsMonitor
from fxai_tune.rl._train import uses_gpu
from fxai_tune.tune import SearchSpace, load_search_space

ROOT = Path(__file__).resolve().parents[1]

ONE_MINIBATCH = {"n_epochs": 1, "batch_size": 4 * 32, "total_timesteps": 4 * 32}


@pytest.mark.parametrize("fusion", ["attention", "transformer"])
def test_ratio_is_one_before_the_first_update_with_dropout(tmp_path, fusion):
    """One minibatch = the whole rollout: its statistics are taken before any step."""
    config = tiny_fx_config(
        tmp_path, model={"dropout": 0.2, "fusion": fusion}, ppo=ONE_MINIBATCH
    )
    run = train(config, loggers=False, checkpointing=False)
    metrics = run.trainer.callback_metrics
    assert float(metrics["train/minibatches"]) == 1.0
    assert float(metrics["train/clip_fraction"]) == 0.0
    assert float(metrics["train/approx_kl"]) < 1e-9


# what a sampled config may not change: a run small enough for the fast suite (and data for
# the longest windows the spaces sample: 16 daily bars)
_TINY_SIZES = {"ppo.n_envs": 4, "ppo.n_steps": 32, "ppo.batch_size": 128, "ppo.n_epochs": 1,
               "ppo.total_timesteps": 128, "data.synthetic.n_bars": 12_000}


@pytest.mark.parametrize("name", ["ppo_default", "ppo_quick"])
def test_ratio_is_one_before_the_first_update_for_configs_of_the_shipped_spaces(tmp_path, name):
    """Three random trials of each shipped space (dropout, widths, depths, heads, windows,
    target_kl, reward weights, curriculum as sampled), shrunk to one minibatch of 128."""
    space = load_search_space(ROOT / "fxai_tune" / "search_spaces" / f"{name}.yaml")
    base = tiny_fx_config(tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    dropouts = []
    for trial_number in range(3):
        trial = study.ask()
        values = space.sample(trial, base=base) | _TINY_SIZES
        values["run_dir"] = str(tmp_path / str(trial_number))
        config = space.apply(base, values)
        dropouts.append(config.model.dropout)
        run = build_training(config, loggers=False, checkpointing=False)
        run.trainer.limit_val_batches = 0  # the update is the point, not its score
        run.trainer.fit(run.module, datamodule=run.datamodule)
        metrics = run.trainer.callback_metrics
        assert float(metrics["train/minibatches"]) == 1.0, values
        assert float(metrics["train/clip_fraction"]) == 0.0, values
        assert float(metrics["train/approx_kl"]) < 1e-9, values
        study.tell(trial, 0.0)
    if name == "ppo_default":
        assert min(dropouts) > 0.0  # the draws exercise dropout


def test_consistent_dropout_masks_follow_the_seeds_not_the_batch():
    space = gym.spaces.Dict(
        {"1h": gym.spaces.Box(-1, 1, (6, 3)), "portfolio": gym.spaces.Box(-1, 1, (2,))}
    )
    torch.manual_seed(0)
    model = MultiBranchTransformer(space, 3, ModelConfig(d_model=16, n_heads=2, dropout=0.3,
                                                         fusion="transformer"))
    obs = {k: torch.randn(4, *s.shape) for k, s in space.spaces.items()}
    seeds = torch.tensor([11, 12, 13, 14])
    with dropout_seeds(seeds):
        logits, _ = model(obs)
        again, _ = model(obs)
    # sample 2 alone, with its seed: the same masks as inside the batch of four
    with dropout_seeds(seeds[2:3]):
        alone, _ = model({k: v[2:3] for k, v in obs.items()})
    with dropout_seeds(seeds + 100):
        other, _ = model(obs)
    torch.testing.assert_close(logits, again, rtol=0, atol=0)
    torch.testing.assert_close(alone, logits[2:3])
    assert not torch.allclose(other, logits)  # other seeds, other masks
    model.eval()
    assert not torch.allclose(model(obs)[0], logits)  # eval: no dropout at all
    keep = keep_mask(torch.arange(1000), 0, torch.Size([100]), 0.2)
    assert keep.float().mean().item() == pytest.approx(0.8, abs=0.005)


def _adam_steps(run) -> int:
    optimizer = run.trainer.optimizers[0]
    return int(next(iter(optimizer.state.values()))["step"])


def test_every_minibatch_takes_one_optimizer_step_that_moves_the_policy(tmp_path):
    config = tiny_fx_config(tmp_path)  # 4 iterations x 2 epochs x 2 minibatches
    run = build_training(config, loggers=False, checkpointing=False)
    before = {k: v.clone() for k, v in run.module.policy.state_dict().items()}
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.global_step == 16
    assert _adam_steps(run) == 16
    assert float(run.trainer.callback_metrics["train/minibatches"]) == 4.0
    after = run.module.policy.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert "action_head.weight" in moved and "value_head.weight" in moved


def test_target_kl_stops_before_the_step_that_would_exceed_it(tmp_path):
    """The first minibatch has ratio 1 (KL 0) and steps; the second exceeds any limit > 0."""
    config = tiny_fx_config(tmp_path, ppo={"target_kl": 1e-12})
    run = train(config, loggers=False, checkpointing=False)
    assert _adam_steps(run) == 4  # one per iteration
    assert run.trainer.global_step == 4
    assert float(run.trainer.callback_metrics["train/minibatches"]) == 1.0


class _AmpSpy(pl.Callback):
    """Plants an inf gradient in the first minibatch; records what the steps did."""

    def __init__(self) -> None:
        self.scales, self.moved, self.clipped_norms = [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_after_backward(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            next(p for p in pl_module.parameters() if p.grad is not None).grad[...] = torch.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.clipped_norms.append(float(torch.nn.utils.get_total_norm(grads)))
        self.scales.append(trainer.precision_plugin.scaler.get_scale())
        self.moved.append(any(not torch.equal(a, p) for a, p in
                              zip(self.before, pl_module.parameters(), strict=True)))


def test_16_mixed_clips_unscaled_gradients_and_lets_the_scaler_skip(tmp_path):
    max_norm = 1e-3  # below any real gradient norm here: every step is clipped
    ppo = ONE_MINIBATCH | {"total_timesteps": 2 * 4 * 32, "max_grad_norm": max_norm}
    spy = _AmpSpy()
    run = build_training(tiny_fx_config(tmp_path, ppo=ppo), loggers=False, checkpointing=False,
                         extra_callbacks=[spy])
    # Lightning's Trainer turns precision="16-mixed" on CPU into bf16; its AMP plugin itself
    # runs on CPU with a CPU GradScaler (fp16 autocast + loss scaling)
    run.trainer.strategy.precision_plugin = MixedPrecision(
        "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")
    )
    run.trainer.fit(run.module, datamodule=run.datamodule)
    # iteration 0: the planted inf made GradScaler skip the step and halve its scale
    assert spy.moved[0] is False
    assert spy.scales[0] == 2.0**15
    assert float(run.trainer.callback_metrics["train/skipped_steps"]) == 0.0  # iteration 1
    # iteration 1: a real step, clipped to max_norm on the unscaled gradients
    assert spy.moved[1] is True
    assert spy.clipped_norms[1] == pytest.approx(max_norm, rel=1e-3)
    assert float(run.trainer.callback_metrics["train/grad_norm"]) > max_norm  # before clipping


def test_rollouts_and_updates_run_under_the_same_autocast(tmp_path):
    seen = {"collect": set(), "update": set()}
    run = build_training(
        tiny_fx_config(tmp_path, ppo=ONE_MINIBATCH, trainer={"precision": "bf16-mixed"}),
        loggers=False, checkpointing=False,
    )
    phase = lambda: "update" if torch.is_grad_enabled() else "collect"  # noqa: E731
    run.module.policy.action_head.register_forward_pre_hook(
        lambda module, args: seen[phase()].add(torch.is_autocast_enabled("cpu"))
    )
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert seen == {"collect": {True}, "update": {True}}


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [("cpu", "32-true"), ("mps", "32-true"), ("auto", "bf16-mixed"), ("gpu", "bf16-mixed"),
     ("cuda", "bf16-mixed")],
)
def test_precision_auto_picks_bf16_only_for_a_gpu_run(monkeypatch, accelerator, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", accelerator=accelerator) == expected
    assert resolve_precision("16-mixed", accelerator=accelerator) == "16-mixed"


class _Validations(pl.Callback):
    def __init__(self) -> None:
        self.epochs, self.rewards = [], []

    def on_validation_end(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)
        self.rewards.append(pl_module.last_val_metrics["val/episode_reward"])


def test_the_last_iteration_is_validated_and_checkpointed_with_top_k_names(tmp_path):
    """3 iterations, validation every 2: iterations 2 and 3 (epochs 1, 2) are validated."""
    validations = _Validations()
    config = tiny_fx_config(tmp_path, ppo={"total_timesteps": 3 * 4 * 32})
    run = train(config, loggers=False, extra_callbacks=[validations])
    assert validations.epochs == [1, 2]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("ppo-*.ckpt"))
    expected = [f"ppo-{epoch:04d}-{reward:.3f}.ckpt"
                for epoch, reward in zip(validations.epochs, validations.rewards, strict=True)]
    assert names == sorted(expected)
    best = max(zip(validations.rewards, expected, strict=True))[1]
    assert run.checkpoint.best_model_path.endswith(best)


class _RatesUsed(pl.Callback):
    def __init__(self) -> None:
        self.rates: dict[int, set[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rate = trainer.optimizers[0].param_groups[0]["lr"]
        self.rates.setdefault(trainer.current_epoch, set()).add(rate)


def test_the_logged_learning_rate_is_the_one_used_on_the_env_step_axis(tmp_path):
    used = _RatesUsed()
    config = tiny_fx_config(tmp_path, ppo={"learning_rate": 1e-3, "lr_schedule": "linear"})
    train(config, checkpointing=False, extra_callbacks=[used])
    assert sorted(used.rates) == [0, 1, 2, 3] and all(len(r) == 1 for r in used.rates.values())
    rates = [used.rates[k].pop() for k in range(4)]
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    frame = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    rows = frame.dropna(subset=["train/learning_rate"])
    assert rows["step"].tolist() == [128, 256, 384, 512]  # env steps after each rollout
    assert rows["train/learning_rate"].tolist() == pytest.approx(rates)
    assert not [c for c in frame.columns if c.startswith("lr-")]  # one learning-rate series


class _Counter(gym.Env):
    """Observation = steps since reset; truncated after 50 steps, never terminated."""

    observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), 0.0, False, self.t >= 50, {}


gym.register("FxaiTestCounter-v0", entry_point=_Counter)


def _counter_config(run_dir, **ppo):
    return build_train_config({
        "env_id": "FxaiTestCounter-v0",
        "run_dir": str(run_dir),
        "model": {"mlp_hidden": [8]},
        "ppo": {"n_envs": 2, "n_steps": 8, "batch_size": 16, "n_epochs": 1,
                "total_timesteps": 4 * 16} | ppo,
        "trainer": {"accelerator": "cpu", "val_every_n_iterations": 1, "val_episodes": 1,
                    "enable_progress_bar": False, "torch_threads": 1},
    })


class _FirstRollout(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not hasattr(self, "obs"):
            self.obs = trainer.datamodule.buffer.obs[:, :, 0].clone()


class _StopAfter(pl.Callback):
    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    def on_validation_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.iterations:
            trainer.should_stop = True


def test_resuming_a_gymnasium_run_starts_fresh_episodes(tmp_path):
    train(_counter_config(tmp_path), loggers=False, extra_callbacks=[_StopAfter(2)])
    first = _FirstRollout()
    resume_training(tmp_path, loggers=False, extra_callbacks=[first])
    # the env was rebuilt: its first transitions must be those of a reset env
    assert first.obs[0].tolist() == [0.0, 0.0]
    assert first.obs[1].tolist() == [1.0, 1.0]


class _Offset(gym.Env):
    """Observations far from zero mean and unit scale: 1000 + 5 z and -3 + 0.01 z."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        z = self.np_random.standard_normal(2)
        return np.array([1000 + 5 * z[0], -3 + 0.01 * z[1]], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), False, self.t >= 20, {}


gym.register("FxaiTestOffset-v0", entry_point=_Offset)


class _Rollouts(pl.Callback):
    """The raw observations of every rollout, flattened over steps and envs."""

    def __init__(self) -> None:
        self.obs: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer, pl_module):
        obs = trainer.datamodule.buffer.obs
        self.obs.append(obs.reshape(-1, obs.shape[-1]).clone())


def test_observation_normalisation_is_learned_saved_and_frozen_in_validation(tmp_path):
    config = _counter_config(tmp_path, n_steps=64, batch_size=128, total_timesteps=3 * 128)
    config = build_train_config(
        config_to_dict(config), ["env_id=FxaiTestOffset-v0", "model.normalize_obs=true",
                                  "model.ortho_init=false"]
    )
    rollouts = _Rollouts()
    run = train(config, loggers=False, extra_callbacks=[rollouts])
    stats = run.module.policy.obs_normalizer.entries
    assert float(stats.count) == 3 * 128
    assert stats.mean.tolist() == pytest.approx([1000.0, -3.0], rel=2e-3)
    assert stats.var.sqrt().tolist() == pytest.approx([5.0, 0.01], rel=0.15)
    # iteration 3 collected and updated with the statistics of rollouts 1-2: ratio 1
    assert float(run.trainer.callback_metrics["train/approx_kl"]) < 1e-9
    first_two = torch.cat(rollouts.obs[:2])
    torch.testing.assert_close(stats.applied_mean, first_two.mean(0))
    torch.testing.assert_close(stats.applied_var, first_two.var(0, unbiased=False), rtol=1e-3,
                               atol=0)
    torch.testing.assert_close(stats.mean, torch.cat(rollouts.obs).mean(0))
    # validation only reads them
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    assert all(torch.equal(before[k], v) for k, v in stats.state_dict().items())
    # the checkpoint carries them, running and applied
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in ("count", "mean", "var", "applied_mean", "applied_var"):
        assert torch.equal(saved[f"policy.obs_normalizer.entries.{key}"], getattr(stats, key))


def test_observation_normalisation_is_a_searchable_key(tmp_path):
    space = SearchSpace.from_dict({"params": {
        "model.normalize_obs": {"type": "categorical", "choices": [True, False]},
        "model.obs_clip": {"type": "float", "low": 5.0, "high": 10.0},
    }})
    base = _counter_config(tmp_path)
    values = space.sample(optuna.trial.FixedTrial({"model.normalize_obs": True,
                                                   "model.obs_clip": 5.0}))
    config = space.apply(base, values)
    assert (config.model.normalize_obs, config.model.obs_clip) == (True, 5.0)
    datamodule = RLDataModule(config)
    module = PPOLightningModule(config.ppo, config.model, datamodule.observation_space,
                                datamodule.action_space)
    assert module.policy.obs_normalizer.entries.clip == 5.0


@pytest.mark.parametrize("task", ["fx", "gymnasium"])
def test_a_checkpoint_loads_on_its_own_for_inference(tmp_path, task):
    if task == "fx":
        config = tiny_fx_config(tmp_path, ppo={"total_timesteps": 2 * 4 * 32})
    else:
        config = build_train_config(config_to_dict(_counter_config(tmp_path)),
                                    ["model.normalize_obs=true"])
    run = train(config, loggers=False)
    loaded = PPOLightningModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    for key, value in run.module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    space = run.datamodule.observation_space
    obs = space.sample()
    batch = ({k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None])
    run.module.eval()
    assert loaded.predict_action(batch).tolist() == run.module.predict_action(batch).tolist()


class _SeededLength(gym.Env):
    """Episode length drawn at reset from the env's seeded generator (1 to 1000 steps)."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(1, 1001))
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t >= self.length, False, {}


gym.register("FxaiTestSeededLength-v0", entry_point=_SeededLength)


def test_gymnasium_validation_runs_episodes_from_distinct_seeds(tmp_path):
    config = build_train_config({"env_id": "FxaiTestSeededLength-v0", "run_dir": str(tmp_path),
                                 "model": {"mlp_hidden": [4]}})
    assert config.trainer.val_episodes == 10
    datamodule = RLDataModule(config)
    module = PPOLightningModule(config.ppo, config.model, datamodule.observation_space,
                                datamodule.action_space)
    evaluation = datamodule.evaluate(module.predict_action, "val")
    lengths = [e.stats["length"] for e in evaluation.episodes]
    assert len(set(lengths)) == 10, lengths  # ten resets, ten seeds
    assert evaluation.metrics["episode_reward"] == pytest.approx(np.mean(lengths))


class _Ends(gym.Env):
    """Observation = step in the episode; episodes of 3 steps, reward 1 per step. Episodes
    0, 2, 4 ... terminate (a terminal state), episodes 1, 3, 5 ... are truncated (time limit)."""

    observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    episodes = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episodes = 0, self.episodes + 1
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == 3
        terminated, truncated = end and self.episodes % 2 == 0, end and self.episodes % 2 == 1
        return np.full(1, self.t, np.float32), 1.0, terminated, truncated, {}


gym.register("FxaiTestEnds-v0", entry_point=_Ends)


class _KnownValues(torch.nn.Module):
    """Uniform policy with V(s) = 10 s + 1: V of a final observation (s = 3) is 31, V of a
    reset observation 1, so a bootstrap from the wrong one shows."""

    shares_trunk = False

    def actor_logits(self, obs):
        return torch.zeros(obs.shape[0], 2)

    def value(self, obs):
        return 10 * obs[:, 0] + 1

    def forward(self, obs):
        return self.actor_logits(obs), self.value(obs)


@pytest.mark.parametrize("gae_lambda", [0.0, 0.9])
def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not(
    tmp_path, gae_lambda
):
    gamma = 0.5
    config = build_train_config({
        "env_id": "FxaiTestEnds-v0", "run_dir": str(tmp_path),
        "ppo": {"n_envs": 2, "n_steps": 12, "batch_size": 24, "gamma": gamma,
                "gae_lambda": gae_lambda, "total_timesteps": 24},
    })
    datamodule = RLDataModule(config)
    datamodule.collect_rollout(_KnownValues())
    buffer = datamodule.buffer
    # four episodes per env: terminated, truncated, terminated, truncated
    ends = torch.tensor([0.0, 0.0, 1.0] * 4)
    assert buffer.terminated[:, 0].tolist() == (ends * torch.tensor([1.0, 0.0] * 6)).tolist()
    assert buffer.truncated[:, 0].tolist() == (ends * torch.tensor([0.0, 1.0] * 6)).tolist()
    expected = []
    for episode in range(4):
        values = [1.0, 11.0, 21.0]  # V(s_t), s_t = 0, 1, 2
        # V of the true next state: s_{t+1} = 1, 2 and the final observation 3 (V = 31),
        # which counts only when the episode was truncated
        next_values = [11.0, 21.0, 31.0 if episode % 2 == 1 else 0.0]
        deltas = [1.0 + gamma * n - v for v, n in zip(values, next_values, strict=True)]
        advantage, episode_advantages = 0.0, []
        for delta in reversed(deltas):  # the recursion stops at the episode's end
            advantage = delta + gamma * gae_lambda * advantage
            episode_advantages.insert(0, advantage)
        expected += episode_advantages
    for env in range(2):
        assert buffer.advantages[:, env].tolist() == pytest.approx(expected)
        assert buffer.returns[:, env].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, [1.0, 11.0, 21.0] * 4, strict=True)])


def test_validation_is_deterministic_argmax_in_eval_mode(tmp_path, monkeypatch):
    """Sampled actions or active dropout would give two validations of one policy different
    results: the policy is far from uniform (default init) and has dropout. The actions come
    from `predict_action`, with its deterministic default."""
    config = tiny_fx_config(
        tmp_path, model={"dropout": 0.2, "ortho_init": False}, ppo={"total_timesteps": 4 * 32}
    )
    run = train(config, loggers=False, checkpointing=False)
    calls = []
    predict = run.module.predict_action
    monkeypatch.setattr(run.module, "predict_action",
                        lambda obs, **kwargs: calls.append(kwargs) or predict(obs, **kwargs))
    results = []
    for _ in range(2):
        run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
        results.append(dict(run.module.last_val_metrics))
    assert results[0] == results[1]
    assert results[0]["val/trades"] > 0  # the policy acts: the comparison means something
    assert calls and all(kwargs == {} for kwargs in calls)


def test_fx_validation_runs_ten_distinct_windows_that_tile_the_split(tmp_path):
    """The default 10 episodes are the val split cut in 10 contiguous windows, not one window
    (or the whole split) repeated: held long, their net returns differ, and together they
    cover each decision bar once."""
    assert TrainerConfig().val_episodes == 10
    config = tiny_fx_config(tmp_path)
    datamodule = RLDataModule(config)
    long = config.env.n_actions - 1
    evaluation = datamodule.evaluate(lambda obs: np.full(10, long), "val")
    episodes = evaluation.episodes
    assert len(episodes) == 10
    assert sum(e.log_returns.size for e in episodes) == datamodule.data.market("val").n_decisions
    assert len({tuple(np.round(e.log_returns, 12)) for e in episodes}) == 10


def test_the_seed_guide_rollout_metrics_are_logged_against_env_steps(tmp_path):
    run = train(tiny_fx_config(tmp_path), checkpointing=False)
    metrics = run.trainer.callback_metrics
    keys = ["episode/reward", "episode/length", "episode/reward_mean", "episode/reward_std",
            "episode/reward_max", "episode/reward_min", "reward/total", "timesteps/total"]
    components = [k[len("reward/"):-len("_mean")] for k in metrics
                  if k.startswith("reward/") and k.endswith("_mean")]
    assert "pnl" in components
    keys += [f"reward/{c}_{s}" for c in components for s in ("mean", "std")]
    for key in keys:
        assert key in metrics, f"{key} missing; logged: {sorted(metrics)}"
    assert float(metrics["timesteps/total"]) == 4 * 4 * 32
    rewards = run.datamodule.buffer.rewards
    assert float(metrics["reward/total"]) == pytest.approx(float(rewards.mean()))
    assert float(metrics["episode/reward_min"]) <= float(metrics["episode/reward_mean"]) <= float(
        metrics["episode/reward_max"])
    assert float(metrics["reward/pnl_std"]) > 0
    frame = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    for key in ("timesteps/total", "reward/total", "reward/pnl_std"):
        steps = frame.dropna(subset=[key])["step"].tolist()
        assert steps == [128, 256, 384, 512], key


@pytest.mark.parametrize(
    ("accelerator", "cuda", "expected"),
    [("cpu", True, False), ("gpu", False, True), ("cuda", False, True), ("auto", True, True),
     ("auto", False, False)],
)
def test_device_stats_are_on_when_a_gpu_is_used_or_asked_for(monkeypatch, accelerator, cuda,
                                                              expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert uses_gpu(accelerator) is expected


def test_device_stats_are_logged_per_iteration_at_env_steps(tmp_path):
    logged = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics)))
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda", 0)),
        accelerator=SimpleNamespace(get_device_stats=lambda device: {"allocated_bytes": 7}),
        loggers=[logger],
        datamodule=SimpleNamespace(env_steps=256),
    )
    monitor = IterationDeviceStatsMonitor()
    monitor.on_train_epoch_start(trainer, None)
    monitor.on_train_epoch_end(trainer, None)
    assert logged == [(256, {"device/rollout/allocated_bytes": 7.0}),
                      (256, {"device/update/allocated_bytes": 7.0})]
    run = build_training(tiny_fx_config(tmp_path))  # a CPU run: no device statistics
    assert not any(isinstance(c, DeviceStatsMonitor) for c in run.trainer.callbacks)


def test_a_run_that_uses_a_gpu_gets_the_device_stats_monitor(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(train_module, "uses_gpu", lambda accelerator: seen.append(accelerator)
                        or True)
    run = build_training(tiny_fx_config(tmp_path, trainer={"accelerator": "cpu"}))
    assert seen == ["cpu"]
    assert sum(isinstance(c, IterationDeviceStatsMonitor) for c in run.trainer.callbacks) == 1


class _CountValuePasses(_KnownValues):
    def __init__(self) -> None:
        super().__init__()
        self.value_calls = []

    def value(self, obs):
        self.value_calls.append(obs.shape[0])
        return super().value(obs)


def test_final_observations_are_valued_in_one_batched_pass_per_rollout(tmp_path):
    """8 episode ends in 4 steps of the rollout: one pass for them all, one for the last obs
    and one critic pass over the rollout's 24 observations (separate critic). The old code
    made one pass per step with an episode end: 6 calls."""
    config = build_train_config({
        "env_id": "FxaiTestEnds-v0", "run_dir": str(tmp_path),
        "ppo": {"n_envs": 2, "n_steps": 12, "batch_size": 24, "total_timesteps": 24},
    })
    datamodule = RLDataModule(config)
    policy = _CountValuePasses()
    datamodule.collect_rollout(policy)
    assert sorted(policy.value_calls) == [2, 8, 24]


_SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item"}


class _SyncCounter(TorchDispatchMode):
    """Counts ops that make the host wait for the device (and bool-mask indexing)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        bool_index = name == "aten.index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        )
        if name in _SYNC_OPS or bool_index:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


class _CountSyncsPerMinibatch(pl.Callback):
    """Counts host syncs from fetching a minibatch to the end of its optimizer step. On CPU
    only the Python-visible ones show (``.item()``, ``bool()``, ``float()``, ``.tolist()``,
    ``.cpu()``, ``.numpy()``, nonzero, boolean masks): exactly those a GPU would wait on."""

    def __init__(self, monkeypatch) -> None:
        self.per_minibatch: list[int] = []
        self.mode: _SyncCounter | None = None
        for method in ("tolist", "cpu", "numpy"):
            original = getattr(torch.Tensor, method)

            def counted(tensor, *args, _original=original, _method=method, **kwargs):
                if self.mode is not None:
                    self.mode.syncs.append(_method)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, method, counted)

    def start(self) -> None:
        self.mode = _SyncCounter()
        self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.mode.__exit__(None, None, None)
        self.per_minibatch.append(len(self.mode.syncs))
        self.mode = None


@pytest.mark.parametrize(("target_kl", "expected"), [(None, 0), (1e6, 1)])
def test_an_update_minibatch_makes_no_host_sync(tmp_path, monkeypatch, target_kl, expected):
    """None without target_kl; one with it (the stop is decided before the step). The old
    code made 2 (non-finite loss and gradient checks), 3 with target_kl."""
    counter = _CountSyncsPerMinibatch(monkeypatch)
    run = build_training(tiny_fx_config(tmp_path, ppo={"target_kl": target_kl}),
                         loggers=False, checkpointing=False, extra_callbacks=[counter])
    serve = run.datamodule.on_after_batch_transfer

    def counted_transfer(batch, dataloader_idx):
        if run.trainer.training:
            counter.start()  # from the minibatch's gathering on
        return serve(batch, dataloader_idx)

    run.datamodule.on_after_batch_transfer = counted_transfer
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert len(counter.per_minibatch) == 16
    assert counter.per_minibatch == [expected] * 16


class _NaNGradient(pl.Callback):
    def on_after_backward(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            pl_module.policy.action_head.weight.grad[0, 0] = torch.nan


def test_a_non_finite_gradient_stops_the_run_at_the_end_of_its_update(tmp_path):
    validations = _Validations()
    config = tiny_fx_config(tmp_path, trainer={"val_every_n_iterations": 1})
    with pytest.raises(FloatingPointError, match="non-finite gradient in 4 of 4 minibatches"):
        train(config, loggers=False, checkpointing=False,
              extra_callbacks=[_NaNGradient(), validations])
    assert validations.epochs == [0]  # the broken update was never validated

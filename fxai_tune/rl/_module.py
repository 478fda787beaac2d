"""`PPOLightningModule`: the PPO update as Lightning glue around the pure loss functions."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from typing_extensions import override

from fxai_tune.model import (
    ModelConfig,
    build_policy,
    dropout_seeds,
    space_from_dict,
    space_to_dict,
)
from fxai_tune.rl._buffer import Batch, Observation, to_tensor
from fxai_tune.rl._config import PPOConfig
from fxai_tune.rl._evaluation import Evaluation
from fxai_tune.rl._losses import explained_variance, ppo_loss

__all__ = ["PPOLightningModule"]

# averaged over the minibatches evaluated in an update (as stable-baselines3 logs them)
_STAT_KEYS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "total_loss",
    "approx_kl",
    "clip_fraction",
)


def _schedule(kind: str, progress: float) -> float:
    """Multiplier of the initial value after ``progress`` in [0, 1] of training."""
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class PPOLightningModule(pl.LightningModule):
    """Clipped-surrogate PPO (Schulman et al. 2017) with manual optimisation.

    Manual optimisation because PPO decides per minibatch whether to continue (target KL)
    and because Lightning's automatic loop costs ~0.4 ms per optimizer step against ~0.25 ms
    here (docs/benchmarks.md, "Facts the code relies on"). Statistics are accumulated on the
    device and logged once per rollout, averaged over minibatches, against environment
    steps: a minibatch makes no host sync (none at all without ``target_kl``).

    All four arguments are saved as plain hyperparameters, so a checkpoint rebuilds the
    module on its own: ``PPOLightningModule.load_from_checkpoint(path)``.

    Args:
        ppo: PPO hyperparameters (or their dict, as saved in a checkpoint).
        model: Policy network configuration (or its dict).
        observation_space: Single-env observation space (Box or Dict of Box), or its
            `fxai_tune.model.space_to_dict` form.
        action_space: Single-env Discrete action space, or its dict form.
    """

    def __init__(
        self,
        ppo: PPOConfig | dict[str, Any],
        model: ModelConfig | dict[str, Any],
        observation_space: gym.Space | dict[str, Any],
        action_space: gym.Space | dict[str, Any],
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        ppo = ppo if isinstance(ppo, PPOConfig) else PPOConfig(**ppo)
        model = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        if isinstance(observation_space, dict):
            observation_space = space_from_dict(observation_space)
        if isinstance(action_space, dict):
            action_space = space_from_dict(action_space)
        self.save_hyperparameters(
            {
                "ppo": dataclasses.asdict(ppo),
                "model": dataclasses.asdict(model),
                "observation_space": space_to_dict(observation_space),
                "action_space": space_to_dict(action_space),
            }
        )
        self.ppo = ppo
        self.policy = build_policy(observation_space, action_space, model)
        self.register_buffer("_stats", torch.zeros(len(_STAT_KEYS)), persistent=False)
        # gradient norm summed over the steps taken, and steps with a finite norm
        self.register_buffer("_grad_norm", torch.zeros(2), persistent=False)
        # minibatches with a non-finite loss, optimizer steps with a non-finite gradient
        self.register_buffer("_non_finite", torch.zeros(2, dtype=torch.long), persistent=False)
        self._n_minibatches = 0  # evaluated
        self._n_steps = 0  # optimizer steps taken
        self.last_val_metrics: dict[str, float] = {}
        self.last_evaluation: Evaluation | None = None

    # ------------------------------------------------------------------ inference
    @override
    def forward(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(obs)

    @torch.inference_mode()
    def predict_action(
        self, obs: np.ndarray | dict | Observation, deterministic: bool = True
    ) -> np.ndarray:
        """Actions for a batch of observations: argmax (deterministic) or sampled.

        The one action path outside training: validation, the final report and inference
        from a loaded checkpoint call it (in ``eval()``: no dropout). Rollout collection
        samples from the logits itself, because it also needs their log-probabilities, the
        transitions' dropout seeds and the run's generator.

        Args:
            obs: A batch of observations (numpy or tensors, a Box array or a Dict of them).
            deterministic: Argmax of the logits; False samples from the policy.

        Returns:
            One integer action per observation.
        """
        if not isinstance(obs, (torch.Tensor, dict)) or (
            isinstance(obs, dict) and not isinstance(next(iter(obs.values())), torch.Tensor)
        ):
            obs = to_tensor(obs, self.device)
        logits = self.policy.actor_logits(obs)
        if deterministic:
            return logits.argmax(-1).cpu().numpy()
        return torch.multinomial(logits.float().softmax(-1), 1).squeeze(-1).cpu().numpy()

    # ------------------------------------------------------------------ schedule
    @property
    def progress(self) -> float:
        """Fraction of the planned PPO iterations already done."""
        return self.current_epoch / max(1, self.ppo.n_iterations)

    def current_clip_coef(self) -> float:
        """Clip coefficient, annealed with the learning-rate schedule if configured."""
        if not self.ppo.anneal_clip:
            return self.ppo.clip_coef
        return self.ppo.clip_coef * max(0.05, _schedule(self.ppo.lr_schedule, self.progress))

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """GradScaler of 16-mixed precision, None otherwise."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    @override
    def configure_optimizers(self) -> Any:
        # fused Adam unscales inside its step, after on_before_optimizer_step would clip the
        # still scaled gradients: 16-mixed uses the plain implementation
        fused = self._grad_scaler() is None and all(
            p.device.type in ("cpu", "cuda") for p in self.parameters()
        )
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.ppo.learning_rate, eps=1e-5, fused=fused
        )
        n_iterations = self.ppo.n_iterations
        kind = self.ppo.lr_schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: _schedule(kind, epoch / max(1, n_iterations))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    # ------------------------------------------------------------------ update
    @override
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        datamodule = self.trainer.datamodule
        if datamodule.stop_update:
            return  # fetched by Lightning before the target-KL stop below was seen
        # the masks each transition was collected with (consistent dropout, docs/ppo.md)
        with dropout_seeds(batch.seeds):
            logits, new_values = self.policy(batch.obs)
        log_probs_all = torch.log_softmax(logits.float(), dim=-1)
        new_log_prob = log_probs_all.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1)
        loss, stats = ppo_loss(
            new_log_prob,
            batch.log_probs,
            batch.advantages,
            new_values.float(),
            batch.values,
            batch.returns,
            entropy,
            clip_coef=self.current_clip_coef(),
            vf_coef=self.ppo.vf_coef,
            ent_coef=self.ppo.ent_coef,
            clip_vf=self.ppo.clip_vf,
            normalize_advantages=self.ppo.normalize_advantages,
        )
        # no host sync per minibatch: a non-finite loss is counted on the device and raised
        # at the end of the update (`_raise_if_non_finite`)
        self._non_finite[0] += ~torch.isfinite(loss)
        self._stats += torch.stack([stats[k].detach().float() for k in _STAT_KEYS])
        self._n_minibatches += 1
        # the one sync a minibatch may need, only with target_kl: the stop must be decided
        # before this step
        if self.ppo.target_kl is not None and self._max_kl(stats["approx_kl"]) > (
            1.5 * self.ppo.target_kl
        ):
            # early stop before the step that would move the policy further past the limit
            # (stable-baselines3): neither this minibatch nor any later one is applied
            datamodule.stop_update = True
            return
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        # Lightning unscales the gradients (16-mixed), calls on_before_optimizer_step, which
        # clips them, then steps (GradScaler skips a step with non-finite gradients)
        optimizer.step()
        self._n_steps += 1

    def _max_kl(self, approx_kl: torch.Tensor) -> torch.Tensor:
        """The largest ``approx_kl`` over DDP ranks: the target-KL stop is one decision, so
        every rank runs the same backward passes (a rank stopping alone would leave the
        others waiting in the gradient all-reduce)."""
        if self.trainer.world_size == 1:
            return approx_kl
        return self.trainer.strategy.reduce(approx_kl.detach().clone(), reduce_op="max")

    @override
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        finite = torch.isfinite(grad_norm)
        if self._grad_scaler() is None:
            # counted, raised at the end of the update (no host sync here); under 16-mixed
            # a non-finite gradient is GradScaler's normal skip
            self._non_finite[1] += ~finite
        # global-norm clip. Lightning calls this hook after unscaling (16-mixed), so these are
        # the true gradients; not self.clip_gradients: its AMP plugin refuses the fused Adam of
        # bf16-mixed, where nothing is scaled
        torch.nn.utils.clip_grads_with_norm_(self.parameters(), self.ppo.max_grad_norm, grad_norm)
        # a step GradScaler skips has no gradient norm to average
        self._grad_norm += torch.stack([torch.where(finite, grad_norm, 0.0), finite.float()])

    def _raise_if_non_finite(self) -> None:
        """Raise if a minibatch of this update had a non-finite loss or gradient."""
        bad_losses, bad_steps = (int(n) for n in self._non_finite.tolist())
        if bad_losses or bad_steps:
            self._non_finite.zero_()
            raise FloatingPointError(
                f"non-finite PPO loss in {bad_losses} and non-finite gradient in {bad_steps} "
                f"of {self._n_minibatches} minibatches at epoch {self.current_epoch} "
                f"(first non-finite gradient now: {self._first_bad_gradient()})"
            )

    @override
    def on_validation_start(self) -> None:
        self._raise_if_non_finite()  # before the update's weights are scored

    def _first_bad_gradient(self) -> str:
        for name, parameter in self.named_parameters():
            if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
                return f"{name}.grad"
        return "unknown parameter"

    @override
    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            # the ranks validate the same weights, and the logged update statistics are rank
            # 0's: no metric is meant to be averaged over ranks (sync_dist)
            warnings.filterwarnings(
                "ignore", message=r"It is recommended to use `self\.log\(",
                category=PossibleUserWarning,
            )

    @override
    def on_train_epoch_start(self) -> None:
        # Step the schedule up to the current iteration here rather than at epoch end:
        # checkpoints are written at validation, which Lightning runs before
        # on_train_epoch_end, so a resumed run catches up from the epoch counter instead.
        scheduler = self.lr_schedulers()
        while scheduler.last_epoch < self.current_epoch:
            scheduler.step()

    @override
    def on_train_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        self._raise_if_non_finite()
        metrics: dict[str, float] = {}
        if self._n_minibatches:
            means = (self._stats / self._n_minibatches).tolist()
            metrics.update({f"train/{k}": v for k, v in zip(_STAT_KEYS, means, strict=True)})
        norm_sum, finite_steps = self._grad_norm.tolist()
        if finite_steps:
            metrics["train/grad_norm"] = norm_sum / finite_steps
        if self._grad_scaler() is not None:
            metrics["train/skipped_steps"] = float(self._n_steps - finite_steps)
        buffer = datamodule.buffer
        metrics["train/explained_variance"] = float(
            explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        )
        # the rate this update's steps used (the schedule steps at the next epoch start)
        metrics["train/learning_rate"] = self.optimizers().param_groups[0]["lr"]
        metrics["train/clip_coef"] = self.current_clip_coef()
        metrics["train/minibatches"] = float(self._n_steps)
        metrics["rollout/timesteps"] = float(datamodule.env_steps)
        metrics["rollout/reward_mean"] = float(buffer.rewards.mean())
        self._stats.zero_()
        self._grad_norm.zero_()
        self._n_minibatches = self._n_steps = 0
        self.log_metrics(metrics)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log to callbacks (ModelCheckpoint, EarlyStopping...) and to loggers at env steps."""
        self.log_dict(metrics, logger=False, on_epoch=True, on_step=False, batch_size=1)
        step = int(self.trainer.datamodule.env_steps)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    # ------------------------------------------------------------------ validation
    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        evaluation = self.trainer.datamodule.evaluate(self.predict_action, "val")
        metrics = {f"val/{k}": v for k, v in evaluation.metrics.items()}
        self.last_val_metrics = metrics
        self.last_evaluation = evaluation
        self.log_metrics(metrics)

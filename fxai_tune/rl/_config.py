"""Typed configuration of a training run: PPO, curriculum, trainer, and the whole run.

One `TrainConfig` is everything `fxai-tune train --config FILE.yaml` needs; the tuner samples
values into it by dotted path (``ppo.learning_rate``), and `export-best` writes it back out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fxai_tune.data import DataConfig
from fxai_tune.env import EnvConfig
from fxai_tune.model import ModelConfig

__all__ = [
    "ACCELERATORS",
    "VAL_SCORES",
    "CurriculumConfig",
    "CurriculumStage",
    "PPOConfig",
    "TrainConfig",
    "TrainerConfig",
]

_LR_SCHEDULES = ("constant", "linear", "cosine")
VAL_SCORES = ("log_return", "total_return", "sharpe", "sortino", "calmar")
"""Trading metrics that may score a validation (`TrainerConfig.val_score`): each rises with
better trading after costs and none depends on a reward-shaping weight."""

_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
"""Lightning accelerators a run may ask for (TPU/HPU/XLA are not supported)."""


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {name}={value!r}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")


@dataclass
class PPOConfig:
    """PPO hyperparameters (Schulman et al. 2017), CleanRL names where they exist."""

    n_envs: int = 16
    """Parallel environments in the training vector env."""
    n_steps: int = 128
    """Steps collected per environment per rollout (rollout size = n_envs * n_steps)."""
    batch_size: int = 256
    """Minibatch size of the update; should divide the rollout size."""
    n_epochs: int = 4
    """Passes over the rollout per update."""
    learning_rate: float = 3e-4
    """Adam learning rate at the start of training."""
    lr_schedule: str = "linear"
    """How the learning rate decays over training: constant, linear or cosine."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient epsilon."""
    anneal_clip: bool = False
    """Decay clip_coef with the same schedule as the learning rate."""
    clip_vf: float | None = None
    """Clip the value update to this range around the old value; None disables it."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the update at the first minibatch whose approx KL exceeds 1.5 x this, before its
    optimizer step (stable-baselines3); None disables it."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch."""
    total_timesteps: int = 200_000
    """Environment steps (summed over envs) of the whole run."""

    def __post_init__(self) -> None:
        for name in ("n_envs", "n_steps", "batch_size", "n_epochs", "total_timesteps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ppo.{name} must be a positive integer, got {value!r}")
        _check_positive("ppo.learning_rate", self.learning_rate)
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(
                f"ppo.lr_schedule must be one of {_LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        _check_range("ppo.gamma", self.gamma, 0.0, 1.0)
        _check_range("ppo.gae_lambda", self.gae_lambda, 0.0, 1.0)
        _check_positive("ppo.clip_coef", self.clip_coef)
        if self.clip_vf is not None:
            _check_positive("ppo.clip_vf", self.clip_vf)
        _check_range("ppo.ent_coef", self.ent_coef, 0.0, 1.0)
        _check_positive("ppo.vf_coef", self.vf_coef)
        _check_positive("ppo.max_grad_norm", self.max_grad_norm)
        if self.target_kl is not None:
            _check_positive("ppo.target_kl", self.target_kl)
        if self.batch_size > self.rollout_size:
            raise ValueError(
                f"ppo.batch_size={self.batch_size} exceeds the rollout size "
                f"n_envs*n_steps={self.rollout_size}; valid: 1..{self.rollout_size}"
            )
        if self.rollout_size % self.batch_size:
            # a ragged last minibatch would weigh its few samples like a full one (issue 11)
            divisors = [d for d in range(1, self.rollout_size + 1) if self.rollout_size % d == 0]
            near = sorted(divisors, key=lambda d: abs(d - self.batch_size))[:3]
            raise ValueError(
                f"ppo.batch_size={self.batch_size} does not divide the rollout size "
                f"n_envs*n_steps={self.n_envs}*{self.n_steps}={self.rollout_size}; valid: a "
                f"divisor of {self.rollout_size}, e.g. {', '.join(map(str, sorted(near)))}"
            )

    @property
    def rollout_size(self) -> int:
        """Transitions per rollout."""
        return self.n_envs * self.n_steps

    @property
    def n_iterations(self) -> int:
        """PPO iterations (rollout + update) in the run; one Lightning epoch each."""
        return max(1, self.total_timesteps // self.rollout_size)


@dataclass
class CurriculumStage:
    """One stage of the curriculum."""

    name: str = "full"
    """Label shown in logs."""
    difficulty: float = 1.0
    """Environment difficulty in [0, 1] (1 = the configured costs and episodes)."""
    promotion_threshold: float | None = None
    """`val/episode_reward` that promotes to the next stage; None = the curriculum's."""


@dataclass
class CurriculumConfig:
    """Curriculum over environment difficulty, promoted on validation reward."""

    enabled: bool = False
    """Use the stages below; when False the env stays at difficulty 1."""
    stages: list[CurriculumStage] = field(
        default_factory=lambda: [
            CurriculumStage(name="easy", difficulty=0.25),
            CurriculumStage(name="medium", difficulty=0.6),
            CurriculumStage(name="full", difficulty=1.0),
        ]
    )
    """Stages in order of difficulty; the last one is never left."""
    promotion_threshold: float = 0.0
    """`val/episode_reward` that promotes a stage without a threshold of its own."""
    min_validations_per_stage: int = 1
    """Validations a stage must last before it can be promoted."""

    def __post_init__(self) -> None:
        if self.enabled and not self.stages:
            raise ValueError("curriculum.stages is empty; give at least one stage")
        for i, stage in enumerate(self.stages):
            _check_range(f"curriculum.stages[{i}].difficulty", stage.difficulty, 0.0, 1.0)
        if self.min_validations_per_stage < 1:
            raise ValueError(
                "curriculum.min_validations_per_stage must be >= 1, "
                f"got {self.min_validations_per_stage!r}"
            )

    def threshold(self, stage: int) -> float | None:
        """Promotion threshold of stage ``stage``; None for the last stage."""
        if stage + 1 >= len(self.stages):
            return None
        own = self.stages[stage].promotion_threshold
        return self.promotion_threshold if own is None else own


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (the guide's ``trainer`` block)."""

    accelerator: str = "auto"
    """cpu, gpu, cuda, mps or auto."""
    devices: str = "auto"
    """Lightning devices spec: auto, 1, '0,1' ..."""
    strategy: str = "auto"
    """Lightning strategy (auto, ddp ...)."""
    precision: str = "auto"
    """auto picks bf16-mixed on a bf16-capable CUDA GPU (never with accelerator cpu) and
    32-true otherwise; 16-mixed scales the loss and skips steps with non-finite gradients."""
    val_every_n_iterations: int = 5
    """Run validation every k PPO iterations (Lightning epochs)."""
    val_episodes: int = 10
    """Episodes per validation: for the FX env, the contiguous windows the split is cut into,
    run as one batch (one policy forward per step for all); for gymnasium envs, fresh
    episodes."""
    val_score: str = "log_return"
    """Trading metric of the net equity pass that becomes ``val/episode_reward`` (FX env):
    one of `VAL_SCORES`. No reward-shaping weight touches it."""
    log_every_n_steps: int = 1
    """Lightning's logging interval (we log once per iteration anyway)."""
    deterministic: bool = False
    """torch deterministic algorithms."""
    benchmark: bool = False
    """cudnn benchmark."""
    early_stopping_patience: int | None = None
    """Stop after this many validations without `val/episode_reward` improving."""
    enable_progress_bar: bool = True
    """Rich progress bar."""
    torch_threads: int | None = None
    """torch.set_num_threads for CPU training; None leaves torch's default."""

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(
                f"trainer.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}"
            )
        devices = str(self.devices).strip()
        if not (devices == "auto" or devices == "-1" or all(
            part.strip().isdigit() for part in devices.rstrip(",").split(",")
        )):
            raise ValueError(
                f"trainer.devices must be auto, a count (1) or indices (0,1), got {self.devices!r}"
            )
        if self.torch_threads is not None and (
            isinstance(self.torch_threads, bool) or self.torch_threads < 1
        ):
            raise ValueError(
                f"trainer.torch_threads must be an integer >= 1 or null, got {self.torch_threads!r}"
            )
        if self.precision not in _PRECISIONS:
            raise ValueError(
                f"trainer.precision must be one of {_PRECISIONS}, got {self.precision!r}"
            )
        if self.val_every_n_iterations < 1:
            raise ValueError(
                "trainer.val_every_n_iterations must be >= 1, "
                f"got {self.val_every_n_iterations!r}"
            )
        if self.val_episodes < 1:
            raise ValueError(f"trainer.val_episodes must be >= 1, got {self.val_episodes!r}")
        if self.val_score not in VAL_SCORES:
            raise ValueError(
                f"trainer.val_score must be one of {VAL_SCORES}, got {self.val_score!r}"
            )


@dataclass
class TrainConfig:
    """A complete training run: what `fxai-tune train --config` reads."""

    seed: int = 0
    """Seed of torch, the environments and minibatch shuffling."""
    env_id: str | None = None
    """A registered gymnasium id (e.g. CartPole-v1) instead of the FX market, or gymnasium's
    ``module:EnvId`` form for an env a package registers on import; None = FX."""
    data: DataConfig = field(default_factory=DataConfig)
    """Market data (FX env only)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Trading environment (FX env only)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Policy network."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO hyperparameters."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Curriculum stages."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Lightning trainer settings."""
    run_dir: str = "runs/default"
    """Where checkpoints, logs and the report go."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where this config came from, written by ``fxai-tune export-best``: study, trial, the
    value it recorded and the search's overfitting statistics (``search``), for the report."""

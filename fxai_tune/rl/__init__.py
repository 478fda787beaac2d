"""PPO on Lightning: rollout buffer, module, datamodule, callbacks, training runs and reports."""

from __future__ import annotations

from fxai_tune.rl._buffer import Batch, RolloutBuffer
from fxai_tune.rl._callbacks import (
    CurriculumLearningCallback,
    EpisodeMetricsCallback,
    IterationCheckpoint,
    IterationDeviceStatsMonitor,
    RewardSystemCallback,
    RolloutCollectionCallback,
    ValidateLastIteration,
)
from fxai_tune.rl._config import (
    CurriculumConfig,
    CurriculumStage,
    PPOConfig,
    TrainConfig,
    TrainerConfig,
    VAL_SCORES,
)
from fxai_tune.rl._config_io import (
    ConfigError,
    build_train_config,
    config_to_dict,
    load_train_config,
    save_train_config,
)
from fxai_tune.rl._datamodule import RLDataModule
from fxai_tune.rl._envs import make_data_manager, make_vector_env
from fxai_tune.rl._evaluation import (
    ActionFn,
    EpisodeResult,
    Evaluation,
    run_episodes,
    summarize_episodes,
)
from fxai_tune.rl._gae import compute_gae
from fxai_tune.rl._losses import explained_variance, ppo_loss
from fxai_tune.rl._module import PPOLightningModule
from fxai_tune.rl._report import (
    REPORT_COLUMNS,
    backtest,
    baseline_policies,
    final_report,
    load_best_weights,
    plot_equity,
    win_rate,
)
from fxai_tune.rl._train import (
    MONITOR,
    TrainingRun,
    build_training,
    resolve_precision,
    resume_training,
    train,
    uses_gpu,
)

__all__ = [
    "MONITOR",
    "ActionFn",
    "REPORT_COLUMNS",
    "Batch",
    "ConfigError",
    "CurriculumConfig",
    "CurriculumLearningCallback",
    "CurriculumStage",
    "EpisodeMetricsCallback",
    "EpisodeResult",
    "IterationCheckpoint",
    "IterationDeviceStatsMonitor",
    "Evaluation",
    "PPOConfig",
    "PPOLightningModule",
    "RLDataModule",
    "RewardSystemCallback",
    "RolloutBuffer",
    "RolloutCollectionCallback",
    "TrainConfig",
    "TrainerConfig",
    "VAL_SCORES",
    "TrainingRun",
    "ValidateLastIteration",
    "backtest",
    "baseline_policies",
    "build_train_config",
    "build_training",
    "compute_gae",
    "config_to_dict",
    "explained_variance",
    "final_report",
    "load_best_weights",
    "load_train_config",
    "make_data_manager",
    "make_vector_env",
    "plot_equity",
    "ppo_loss",
    "resolve_precision",
    "resume_training",
    "run_episodes",
    "save_train_config",
    "summarize_episodes",
    "train",
    "uses_gpu",
    "win_rate",
]

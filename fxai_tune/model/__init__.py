"""Policy networks: `MultiBranchTransformer` for timeframe windows, `MLPPolicy` for ``Box``."""

from __future__ import annotations

from fxai_tune.model._config import ModelConfig
from fxai_tune.model._dropout import ConsistentDropout, dropout_seeds
from fxai_tune.model._factory import build_policy
from fxai_tune.model._mlp import MLPPolicy
from fxai_tune.model._normalize import NormalizedPolicy, ObservationNormalizer
from fxai_tune.model._spaces import space_from_dict, space_to_dict
from fxai_tune.model._transformer import AttentionPool, MultiBranchTransformer

__all__ = [
    "AttentionPool",
    "ConsistentDropout",
    "MLPPolicy",
    "ModelConfig",
    "MultiBranchTransformer",
    "NormalizedPolicy",
    "ObservationNormalizer",
    "build_policy",
    "dropout_seeds",
    "space_from_dict",
    "space_to_dict",
]

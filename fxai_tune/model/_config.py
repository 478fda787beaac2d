"""`ModelConfig`: sizes and choices of the policy networks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelConfig"]

_POOLINGS = ("attention", "last", "mean")
_FUSIONS = ("attention", "transformer")
_ACTIVATIONS = ("tanh", "relu")


@dataclass
class ModelConfig:
    """Hyperparameters of `MultiBranchTransformer` and `MLPPolicy`.

    Example:
        >>> ModelConfig(d_model=32, n_heads=2).n_heads
        2
    """

    d_model: int = 64
    """Width of every branch embedding and of the transformer residual stream."""
    n_layers: int = 2
    """Transformer encoder layers per timeframe branch."""
    n_heads: int = 4
    """Attention heads per layer (and of the attention pooling); must divide ``d_model``."""
    dim_feedforward: int = 128
    """Hidden width of each transformer layer's feed-forward block."""
    dropout: float = 0.0
    """Dropout in the transformer layers, in [0, 1); 0 is usual for PPO."""
    pooling: str = "attention"
    """How a branch's sequence becomes one vector: "attention" (learned query), "last", "mean"."""
    fusion: str = "attention"
    """How branch embeddings are combined: "attention" (learned query) or "transformer"."""
    mlp_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLPs for 1-D ``Box`` observations (and of `MLPPolicy`)."""
    activation: str = "tanh"
    """Activation of the MLPs: "tanh" (CleanRL/SB3 default for PPO) or "relu"."""
    ortho_init: bool = True
    """Orthogonal init of MLPs and heads (gains sqrt(2) hidden, 0.01 policy, 1 value)."""
    normalize_obs: bool = False
    """Normalise observations by their running mean and variance (rl-zoo3's ``normalize``),
    kept in the checkpoint and frozen during each iteration and validation; for gymnasium
    ``env_id`` tasks mainly (the FX features are already scaled)."""
    obs_clip: float = 10.0
    """Normalised observations are clipped to [-obs_clip, obs_clip] (stable-baselines3's
    ``clip_obs``); used with ``normalize_obs``."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "dim_feedforward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"n_heads must divide d_model, got n_heads={self.n_heads}, "
                f"d_model={self.d_model} (valid n_heads: "
                f"{[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={self.dropout!r}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got pooling={self.pooling!r}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"fusion must be one of {_FUSIONS}, got fusion={self.fusion!r}")
        if not self.obs_clip > 0:
            raise ValueError(f"obs_clip must be > 0, got obs_clip={self.obs_clip!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {_ACTIVATIONS}, got activation={self.activation!r}"
            )
        # Hydra/OmegaConf hands sequences over as lists; keep one canonical type.
        hidden = tuple(self.mlp_hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                             for h in hidden):
            raise ValueError(
                "mlp_hidden must be a non-empty sequence of integers >= 1, "
                f"got mlp_hidden={self.mlp_hidden!r}"
            )
        self.mlp_hidden = hidden

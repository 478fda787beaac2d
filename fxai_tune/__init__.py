"""fxai-tune: hyperparameter search for a PPO FX-trading agent (Lightning + Optuna)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

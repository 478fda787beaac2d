"""fxai-tune: hyperparameter search for a PPO FX-trading agent (Lightning + Optuna)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["HOME_ENV", "STORAGE_ENV", "__version__"]

# Environment variables, named here so that the command line can read them without importing
# the library (torch, Optuna).
STORAGE_ENV = "FXAI_TUNE_STORAGE"
"""A storage URL used when ``--storage`` is not given: a password in it stays off command
lines (``fxai-tune run`` hands its URL to its workers this way)."""
HOME_ENV = "FXAI_TUNE_HOME"
"""Where the databases and artifacts of the shipped studies go (default: the working
directory), never the installed package."""

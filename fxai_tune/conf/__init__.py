"""Hydra config tree of ``python -m fxai_tune.train`` (a package: ``pkg://fxai_tune.conf``)."""

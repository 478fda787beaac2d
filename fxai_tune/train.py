"""``python -m fxai_tune.train``: the Hydra app (config tree in ``fxai_tune/conf``).

Examples::

    python -m fxai_tune.train                                  # one run, defaults
    python -m fxai_tune.train model=small hardware=cpu ppo.learning_rate=1e-4
    python -m fxai_tune.train hparams_search=quick             # an Optuna sweep (multirun)
    python -m fxai_tune.train --config-path $PWD/exports --config-name best   # export-best YAML

See ``fxai_tune/hydra_app.py`` for how the tree maps onto `TrainConfig` and ``docs/hydra.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from fxai_tune.hydra_app import preflight_sweep, run_task, sweep_provenance

__all__ = ["main", "run_with_args"]


def _train(cfg: DictConfig) -> float | list[float]:
    """Train the composed config; return the objective value for sweepers."""
    return run_task(cfg)


# the fxai_optuna sweeper runs it once before the first trial (a bad config: exit 2, no trial)
_train.fxai_preflight = preflight_sweep  # type: ignore[attr-defined]
# and records, on the study it creates, what its trials depend on (as `fxai-tune run` does)
_train.fxai_provenance = sweep_provenance  # type: ignore[attr-defined]
main = hydra.main(config_path="conf", config_name="config", version_base="1.3")(_train)


def run_with_args(args: Sequence[str], *, prog: str = "fxai-tune train") -> None:
    """Run the Hydra app with ``args`` as its command line (for the ``fxai-tune`` CLI)."""
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()

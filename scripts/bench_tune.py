"""Benchmark the tuner: pruning savings, worker scaling, and storage overhead.

All three compare against a baseline measured in the same run:

1. pruning: TPE studies with a pruner (successive halving, as `studies/signal_demo.yaml`, and
   the median pruner) vs the same study (same sampler seed) without pruning, on a synthetic
   market with a planted signal (so trials differ in quality). Prints each pruned study's env
   steps as a share of the unpruned study's, and its best as a share of the unpruned best
   (target: <= 40% of the env steps for >= 95% of the best).
2. scaling: the same trials run by 2 worker processes vs 1 on this machine; trials per hour
   (target >= 1.8x on 2 cores).
3. storage overhead on PostgreSQL: time spent inside the Optuna storage's methods (public and
   private, the heartbeat thread's included) as a share of the worker's wall time
   (target <= 1%).
4. workers8: 8 worker processes on one PostgreSQL study of tiny trials vs 1 worker: the study
   ends with exactly the cap (trial numbers 0..N-1, all complete), no parameters run twice,
   and trials per hour of each (issue 12).

Usage: ``python scripts/bench_tune.py [--only validation,pruning,scaling,storage,workers8]
[--trials N]``. Needs PostgreSQL for parts 3 and 4 (``FXAI_TEST_POSTGRES_URL``, default local
``test`` database).
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from pytorch_lightning.callbacks import Callback

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "FXAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def synthetic_study(
    directory: Path,
    name: str,
    *,
    pruner: dict[str, Any],
    n_trials: int,
    total_timesteps: int,
    storage: str | None = None,
) -> Path:
    """A study over studies/configs/signal_base.yaml (planted-signal synthetic market)."""
    study = {
        "name": name,
        # the shipped planted-signal base config (also studies/signal_demo.yaml's)
        "base_config": str(ROOT / "fxai_tune" / "studies" / "configs" / "signal_base.yaml"),
        "search_space": {
            "params": {
                "ppo.learning_rate": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
                "ppo.gamma": {"type": "float", "low": 0.05, "high": 0.99},
                "ppo.ent_coef": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            }
        },
        "budget": {"total_timesteps": total_timesteps, "val_every_n_iterations": 4},
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 5}},
        "pruner": pruner,
        "n_trials": n_trials,
        "storage": storage or f"sqlite:///{directory / (name + '.db')}",
        "artifact_dir": str(directory / "artifacts" / name),
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def steps_to_reach(trials: list[optuna.trial.FrozenTrial], target: float) -> int | None:
    """Cumulative env steps (trial order) until the best-so-far value reaches ``target``."""
    spent, best = 0, float("-inf")
    for trial in sorted(trials, key=lambda t: t.number):
        spent += int(trial.user_attrs.get("env_steps", 0))
        if trial.value is not None:
            best = max(best, trial.value)
        if best >= target:
            return spent
    return None


NO_PRUNER = {"name": "none"}
MEDIAN_PRUNER = {"name": "median", "options": {"n_startup_trials": 5, "n_warmup_steps": 1}}
"""The previous rounds' pruner (prunes from the 2nd validation, once 5 trials completed)."""
SUCCESSIVE_HALVING = {
    "name": "successive_halving",
    "options": {"min_resource": 1, "reduction_factor": 3},
}
"""studies/signal_demo.yaml's pruner (Optuna's ASHA): at the 2nd and 4th validation (steps 1, 3)
only the top third of the trials that reached that rung goes on."""


def bench_pruning(directory: Path, n_trials: int, timesteps: int) -> None:
    from fxai_tune.tune import load_study_config, open_study, run_worker

    studies = {}
    for label, pruner in (("none", NO_PRUNER), ("successive halving", SUCCESSIVE_HALVING),
                          ("median", MEDIAN_PRUNER)):
        config = load_study_config(
            synthetic_study(
                directory, f"prune_{pruner['name']}", pruner=pruner, n_trials=n_trials,
                total_timesteps=timesteps,
            )
        )
        start = time.perf_counter()
        run_worker(config, accelerator="cpu", torch_threads=1)
        studies[label] = (open_study(config), time.perf_counter() - start)
    unpruned, unpruned_seconds = studies.pop("none")
    best = unpruned.best_value
    total_unpruned = sum(int(t.user_attrs.get("env_steps", 0)) for t in unpruned.trials)
    print(f"pruning: no pruner: best {best:.3f}, {total_unpruned:,} env steps, "
          f"{unpruned_seconds:.0f} s ({n_trials} trials)")
    for label, (pruned, seconds) in studies.items():
        n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in pruned.trials)
        total_pruned = sum(int(t.user_attrs.get("env_steps", 0)) for t in pruned.trials)
        share, quality = total_pruned / total_unpruned, pruned.best_value / best
        verdict = "met" if share <= 0.40 and quality >= 0.95 else "missed"
        print(
            f"pruning: {label}: {total_pruned:,} env steps = {share:.0%} of the unpruned "
            f"study's, best {pruned.best_value:.3f} = {quality:.0%} of the unpruned best "
            f"({n_pruned}/{n_trials} pruned, {seconds:.0f} s; target <= 40% for >= 95%: "
            f"{verdict})"
        )
        reach = steps_to_reach(pruned.trials, 0.95 * best)
        if reach is not None:
            print(f"pruning: {label}: its best-so-far reached 95% of the unpruned best after "
                  f"{reach:,} env steps ({reach / total_unpruned:.0%})")


def _run_workers(path: Path, n_workers: int, n_trials: int) -> float:
    command = [sys.executable, "-m", "fxai_tune.cli.main", "worker", "--study", str(path),
               "--accelerator", "cpu", "--threads", "1", "--n-trials", str(n_trials)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    workers = [
        subprocess.Popen([*command, "--worker-index", str(i)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(n_workers)
    ]
    outputs = [w.communicate()[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"a worker failed on {path}:\n{output[-3000:]}")
    return time.perf_counter() - start


def _study_span(path: Path) -> float:
    """Seconds from the first trial's start to the last trial's end (process start-up out)."""
    from fxai_tune.tune import load_study_config, open_study

    trials = open_study(load_study_config(path)).trials
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return (end - start).total_seconds()


def bench_scaling(directory: Path, n_trials: int, timesteps: int, repeats: int) -> None:
    ratios, span_ratios = [], []
    for repeat in range(repeats):
        rates, span_rates = {}, {}
        for n_workers in (1, 2):
            path = synthetic_study(
                directory, f"scale{repeat}_{n_workers}", pruner=NO_PRUNER, n_trials=n_trials,
                total_timesteps=timesteps,
            )
            elapsed = _run_workers(path, n_workers, n_trials)
            rates[n_workers] = n_trials / elapsed * 3600
            span_rates[n_workers] = n_trials / _study_span(path) * 3600
        ratios.append(rates[2] / rates[1])
        span_ratios.append(span_rates[2] / span_rates[1])
        print(
            f"scaling, repeat {repeat}: 1 worker {rates[1]:,.0f} trials/h, "
            f"2 workers {rates[2]:,.0f} trials/h, ratio {ratios[-1]:.2f}x with process "
            f"start-up; first trial start to last trial end: {span_rates[1]:,.0f} vs "
            f"{span_rates[2]:,.0f} trials/h, {span_ratios[-1]:.2f}x"
        )
    print(
        f"scaling: 2 workers vs 1, best of {repeats}: {max(ratios):.2f}x including ~5 s of "
        f"process start-up, {max(span_ratios):.2f}x while trials run (target >= 1.8x)"
    )


def _time_storage(storage: optuna.storages.BaseStorage, clock: list[float]) -> None:
    """Accumulate the wall time spent inside ``storage``'s methods (public and private).

    Only the outermost call of each thread counts, so nested calls are not counted twice.
    Calls in the trial's thread count with their wall time (the trial waits for them); calls
    in the heartbeat thread with the CPU time they take (their wall time is mostly waiting for
    the GIL while the trial trains).
    """
    depth = threading.local()
    main = threading.main_thread()
    for name in dir(type(storage)):
        if name.startswith("__") or not inspect.isfunction(getattr(type(storage), name)):
            continue
        method = getattr(storage, name)

        def timed(*args, __method=method, **kwargs):  # noqa: ANN002, ANN003, ANN202
            level = getattr(depth, "level", 0)
            depth.level = level + 1
            now = time.perf_counter if threading.current_thread() is main else time.thread_time
            start = now()
            try:
                return __method(*args, **kwargs)
            finally:
                depth.level = level
                if level == 0:
                    clock[0] += now() - start
                    clock[1] += 1

        setattr(storage, name, timed)


def bench_storage(directory: Path, n_trials: int, timesteps: int) -> None:
    import fxai_tune.tune._runner as runner
    from fxai_tune.tune import load_study_config, make_storage, normalize_storage_url, run_worker

    name = f"bench_storage_{os.getpid()}"
    path = synthetic_study(
        directory, name, pruner=MEDIAN_PRUNER, n_trials=n_trials, total_timesteps=timesteps,
        storage=POSTGRES_URL,
    )
    config = load_study_config(path)
    clock = [0.0, 0]
    original = runner.make_storage

    def timed_make_storage(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        storage = original(*args, **kwargs)
        _time_storage(storage, clock)
        return storage

    runner.make_storage = timed_make_storage
    try:
        start = time.perf_counter()
        run_worker(config, accelerator="cpu", torch_threads=1)
        elapsed = time.perf_counter() - start
    finally:
        runner.make_storage = original
        optuna.delete_study(study_name=name, storage=make_storage(config.storage))
    print(
        f"storage: {n_trials} trials of {timesteps:,} env steps on PostgreSQL "
        f"({normalize_storage_url(POSTGRES_URL)}): {clock[1]} storage calls, {clock[0]:.2f} s "
        f"of {elapsed:.1f} s = {clock[0] / elapsed:.2%} of trial time (target <= 1%)"
    )


class _ValidationClock(Callback):
    """Wall time spent inside validation (Lightning's validation loop)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def on_validation_start(self, trainer, pl_module):  # noqa: ANN001, ANN201
        self._start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):  # noqa: ANN001, ANN201
        self.seconds += time.perf_counter() - self._start


def bench_validation(directory: Path) -> None:
    """Share of a CPU demo trial's time spent validating: the split as one window stepped
    at batch 1 (baseline: the previous validation) against 10 windows in one batch."""
    from fxai_tune.rl import load_train_config, train

    base = ROOT / "fxai_tune" / "studies" / "configs" / "demo_base.yaml"
    print("validation share of a demo trial (8192 env steps, 8 validations):")
    for label, windows in (("baseline: 1 window, batch 1", 1), ("batched: 10 windows", 10)):
        config = load_train_config(base, [
            f"trainer.val_episodes={windows}", f"run_dir={directory / f'val{windows}'}",
            "trainer.torch_threads=1",
        ])
        clock = _ValidationClock()
        started = time.perf_counter()
        train(config, extra_callbacks=[clock], loggers=False, checkpointing=False)
        total = time.perf_counter() - started
        print(f"  {label:30s} trial {total:6.2f} s, validation {clock.seconds:5.2f} s "
              f"({100 * clock.seconds / total:4.1f}%)")


TINY_OVERRIDES = ["model.d_model=16", "model.dim_feedforward=32", "ppo.n_envs=4",
                  "ppo.n_steps=32", "ppo.batch_size=64", "ppo.n_epochs=1",
                  "env.episode_length=128", "env.curriculum.min_episode_length=32"]
"""Tiny trials (a second or two of training each): the bench measures coordination."""


def bench_workers(directory: Path, n_trials: int, n_workers: int = 8) -> None:
    """``n_workers`` processes on one PostgreSQL study vs 1: exact cap, no duplicated
    parameters, trials per hour (with process start-up, and first start to last end)."""
    from fxai_tune.tune import load_study_config, make_storage, open_study

    rates, spans = {}, {}
    for workers in (1, n_workers):
        name = f"bench_workers{workers}_{os.getpid()}"
        path = synthetic_study(
            directory, name, pruner=NO_PRUNER, n_trials=n_trials, total_timesteps=512,
            storage=POSTGRES_URL,
        )
        study = yaml.safe_load(path.read_text())
        study["overrides"] = TINY_OVERRIDES
        study["budget"]["val_every_n_iterations"] = 2
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        config = load_study_config(path)
        try:
            elapsed = _run_workers(path, workers, n_trials)
            trials = open_study(config).trials
            numbers = sorted(t.number for t in trials)
            complete = all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
            distinct = len({tuple(sorted(t.params.items())) for t in trials})
            ran = len({t.user_attrs.get("worker") for t in trials})
            start = min(t.datetime_start for t in trials)
            end = max(t.datetime_complete for t in trials)
            rates[workers] = n_trials / elapsed * 3600
            spans[workers] = n_trials / (end - start).total_seconds() * 3600
        finally:
            optuna.delete_study(study_name=name, storage=make_storage(config.storage))
        cap = "exact" if numbers == list(range(n_trials)) and complete else f"WRONG {numbers}"
        print(
            f"workers8: {workers} worker(s) on PostgreSQL, cap {n_trials}: {len(trials)} "
            f"trials ({cap}), {distinct} distinct parameter sets "
            f"({'no duplicates' if distinct == len(trials) else 'DUPLICATES'}), {ran} "
            f"worker(s) ran trials; {rates[workers]:,.0f} trials/h with start-up "
            f"({elapsed:.0f} s), {spans[workers]:,.0f} trials/h first start to last end"
        )
    print(
        f"workers8: {n_workers} workers vs 1: {rates[n_workers] / rates[1]:.2f}x trials/h with "
        f"start-up, {spans[n_workers] / spans[1]:.2f}x while trials run ({os.cpu_count()} CPUs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="validation,pruning,scaling,storage,workers8")
    parser.add_argument("--trials", type=int, default=20, help="trials per pruning study")
    parser.add_argument("--timesteps", type=int, default=16_384, help="env steps per trial")
    parser.add_argument("--repeats", type=int, default=2, help="scaling repeats")
    parser.add_argument("--worker-trials", type=int, default=16,
                        help="trial cap of the workers8 studies")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if "validation" in parts:
            bench_validation(directory)
        if "pruning" in parts:
            bench_pruning(directory, args.trials, args.timesteps)
        if "scaling" in parts:
            bench_scaling(directory, 8, args.timesteps, args.repeats)
        if "storage" in parts:
            for timesteps in (args.timesteps, 4 * args.timesteps):
                bench_storage(directory, 3, timesteps)
        if "workers8" in parts:
            bench_workers(directory, args.worker_trials)


if __name__ == "__main__":
    main()

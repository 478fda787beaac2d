"""Starting K worker processes on one study and watching them until they finish.

Workers run the parent's interpreter with the parent's import path (``python -P`` and
``PYTHONPATH`` from ``sys.path``), so a ``fxai_tune`` folder in the working directory is never
imported instead of the copy the parent runs, and they read the storage URL from
``FXAI_TUNE_STORAGE``: a password in it never shows on a command line (``ps``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fxai_tune import STORAGE_ENV
from fxai_tune.tune._inspect import best_trials
from fxai_tune.tune._runner import count_trials

__all__ = [
    "EXIT_FAILURE_RATE",
    "WorkerProcess",
    "launch_workers",
    "new_log_dir",
    "plan_devices",
    "python_command",
    "watch",
]

EXIT_FAILURE_RATE = 3


@dataclass
class WorkerProcess:
    """A started worker: its process, device and log file."""

    process: subprocess.Popen
    device: str
    log_path: Path


def plan_devices(workers: int, devices: list[str] | None) -> list[str]:
    """Device of each worker: GPU indices round-robin when GPUs exist, else "cpu"."""
    if devices is None:
        import torch

        count = torch.cuda.device_count()
        devices = [str(i) for i in range(count)] if count else None
    if not devices:
        return ["cpu"] * workers
    return [devices[i % len(devices)] for i in range(workers)]


def python_command() -> tuple[list[str], dict[str, str]]:
    """The parent's interpreter and environment for a child that imports what the parent does.

    ``-P`` keeps the working directory off the child's ``sys.path`` (``PYTHONSAFEPATH`` does
    so for the child's own children too, such as Lightning's DDP ranks); ``PYTHONPATH``
    carries the parent's ``sys.path`` (an empty entry, the working directory, made absolute).
    """
    entries = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(entries)), PYTHONSAFEPATH="1"
    )
    return [sys.executable, "-P"], env


def new_log_dir(parent: Path) -> Path:
    """A new folder ``parent/<UTC start time>`` for one run's worker logs (never reused)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for attempt in range(1000):
        path = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free log folder name for {stamp}")


def launch_workers(
    study_ref: str,
    *,
    workers: int,
    storage_url: str,
    n_trials: int | None,
    timeout: float | None,
    devices: list[str] | None,
    log_dir: Path,
    allow_space_change: bool = False,
) -> list[WorkerProcess]:
    """Start ``workers`` processes running ``fxai-tune worker`` on the same study.

    Worker K logs to ``log_dir/worker_K.log``. The storage URL goes through the environment
    (`STORAGE_ENV`), never the command line. A GPU worker sees only its device
    (``CUDA_VISIBLE_DEVICES``); a CPU worker runs one torch thread, so K workers on K cores
    do not fight over them.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    python, parent_env = python_command()
    started = []
    for index, device in enumerate(plan_devices(workers, devices)):
        env = {**parent_env, STORAGE_ENV: storage_url}
        command = [
            *python,
            "-m",
            "fxai_tune.cli.main",
            "worker",
            "--study",
            study_ref,
            "--worker-index",
            str(index),
            "--checked",  # the parent ran the pre-flight
        ]
        if n_trials is not None:  # None: no cap, the workers stop at the timeout
            command += ["--n-trials", str(n_trials)]
        if allow_space_change:
            command.append("--allow-space-change")
        if timeout is not None:
            command += ["--timeout", str(timeout)]
        if device == "cpu":
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
            command += ["--accelerator", "cpu", "--threads", "1"]
        else:
            env["CUDA_VISIBLE_DEVICES"] = device
            command += ["--accelerator", "gpu"]
        log_path = log_dir / f"worker_{index}.log"
        with open(log_path, "w") as log_file:
            # a process group of its own: a terminal Ctrl-C reaches the parent only, which
            # passes on exactly one SIGINT (a second one would stop the worker at once)
            process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, process_group=0
            )
        started.append(WorkerProcess(process, device, log_path))
    return started


def _describe(study: optuna.Study) -> str:
    best = best_trials(study)
    if not best:
        return "best: -"
    if len(best) == 1:
        return f"best: {best[0].value:.4g} (trial {best[0].number})"
    return f"Pareto front: {len(best)} trials"


def watch(
    study: optuna.Study,
    workers: list[WorkerProcess],
    *,
    n_trials: int | None,
    console: Console,
) -> list[int]:
    """Show trials done/pruned/failed and the best value until every worker has exited.

    Ctrl-C is passed on to the workers, which record their running trial FAIL, queue its
    parameters again (it does not use up the cap) and stop; a second Ctrl-C kills them at
    once (their trials are then failed as heartbeat-stale and retried by the next run).
    Returns the workers' exit codes.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(study.study_name, total=n_trials, detail="starting")
        try:
            while any(w.process.poll() is None for w in workers):
                _update(progress, task, study)
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print(
                "interrupting: the running trials stop and will be re-run by the next run; "
                "Ctrl-C again to stop at once", highlight=False,
            )
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGINT)
            try:
                for worker in workers:
                    worker.process.wait()
            except KeyboardInterrupt:
                for worker in workers:
                    if worker.process.poll() is None:
                        worker.process.kill()
                for worker in workers:
                    worker.process.wait()
            raise
        finally:
            _update(progress, task, study)
    return [w.process.returncode for w in workers]


def _update(progress: Progress, task: int, study: optuna.Study) -> None:
    counts = count_trials(study.get_trials(deepcopy=False))
    detail = (
        f"complete {counts.complete}  pruned {counts.pruned}  failed {counts.failed}  "
        f"running {counts.running}  {_describe(study)}"
    )
    progress.update(task, completed=counts.finished, detail=detail)

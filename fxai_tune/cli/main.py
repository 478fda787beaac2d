"""The ``fxai-tune`` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any

from typer import _click as click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import Abort

from fxai_tune import STORAGE_ENV

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_OUTAGE = 4
"""The database stayed away longer than the study's outage_window."""


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad flag value, an unknown option) as one line, exit code 2.

    Click prints usage, a hint and a boxed message; the project's rule for bad input is one
    line naming what is wrong and what is valid (issue 11).
    """

    def main(  # noqa: D102 - click's signature
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                error.show()
                sys.exit(error.exit_code)
            ctx = getattr(error, "ctx", None)
            command = ctx.command_path if ctx is not None else "fxai-tune"
            err_console.print(
                f"[bold red]error:[/] {command}: {error.format_message()} "
                f"(see {command} --help)",
                highlight=False, soft_wrap=True, markup=True,
            )
            sys.exit(error.exit_code)
        except Abort:
            err_console.print("aborted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="fxai-tune",
    help="Hyperparameter search for a PPO FX-trading agent (Lightning + Optuna).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise (code 2: bad input)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _load_config(config: Path | None, overrides: list[str]):  # noqa: ANN202 - lazy import
    from fxai_tune.rl import ConfigError, build_train_config, load_train_config

    try:
        if config is None:
            return build_train_config(None, overrides)
        return load_train_config(config, overrides)
    except ConfigError as error:
        raise fail(str(error)) from None


_HEADERS = {"total_return": "return", "max_drawdown": "max DD", "win_rate": "win rate"}
_PERCENT_COLUMNS = ("total_return", "max_drawdown", "exposure", "win_rate")


def _cell(column: str, row: dict) -> str:
    value = row.get(column)
    if value is None:
        return "-"
    if column in _PERCENT_COLUMNS:
        text = f"{100 * value:.2f}%"
    elif column == "trades":
        text = f"{value:.0f}"
    elif column in ("sharpe", "sortino", "calmar"):
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    if column == "sharpe" and row.get("sharpe_ci") is not None:
        low, high = row["sharpe_ci"]
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def _print_report(
    title: str,
    table_rows: dict[str, dict],
    note: str = "",
    *,
    confidence: float | None = None,
    lines: list[str] | None = None,
) -> None:
    """A policy table (columns `REPORT_COLUMNS` the rows have), the total-return intervals,
    then ``lines`` and ``note``. The env's shaped ``reward`` is shown only without trading
    metrics (a gymnasium env)."""
    from rich.measure import Measurement

    from fxai_tune.rl import REPORT_COLUMNS

    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    columns = [c for c in REPORT_COLUMNS if any(c in row for row in table_rows.values())]
    if "total_return" in columns and "reward" in columns:
        columns.remove("reward")
    with_ci = any(row.get("sharpe_ci") is not None for row in table_rows.values())
    level = f"{100 * confidence:g}% CI" if confidence is not None else "CI"
    for column in columns:
        header = _HEADERS.get(column, column)
        if column == "sharpe" and with_ci:
            header = f"sharpe [{level}]"
        table.add_column(header, justify="right", no_wrap=True)
    for name, row in table_rows.items():
        table.add_row(name, *(_cell(column, row) for column in columns))
    # never truncate a number: print as wide as the table needs
    width = Measurement.get(console, console.options.update_width(10_000), table).maximum
    out = console if width <= console.width else Console(file=console.file, width=width)
    out.print(table)
    returns = [
        f"{name} [{100 * low:+.2f}%, {100 * high:+.2f}%]"
        for name, row in table_rows.items()
        if row.get("total_return_ci") is not None
        for low, high in [row["total_return_ci"]]
    ]
    if returns:
        console.print(
            f"Total return {level}: " + ", ".join(returns), highlight=False, soft_wrap=True
        )
    for line in lines or []:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if note:
        console.print(note, highlight=False, soft_wrap=True)


_SHARPE_NOTE = (
    "Sharpe annualised from per-bar returns with the data's bars per year "
    "(hourly FX: 6,240 = 260 days x 24 h)"
)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Training config YAML (defaults if omitted)."),
]
OverrideOption = Annotated[
    list[str] | None,
    typer.Option("--override", "-o", help="Dotted override key=value; repeatable."),
]


@app.command()
def backtest(
    config: ConfigOption = None,
    override: OverrideOption = None,
    split: Annotated[str, typer.Option(help="Split to run on: train, val or test.")] = "val",
    seed: Annotated[int, typer.Option(help="Seed of the random policy.")] = 0,
) -> None:
    """Backtest the baseline policies (buy-and-hold, flat, random) on one data split."""
    from fxai_tune.data import DataError
    from fxai_tune.rl import backtest as run_backtest
    from fxai_tune.rl import baseline_policies, make_data_manager
    from fxai_tune.rl._report import BOOTSTRAP_CONFIDENCE, pass_metrics, policy_intervals

    if split not in ("train", "val", "test"):
        raise fail(f"--split must be one of train, val, test; got {split!r}")
    train_config = _load_config(config, override or [])
    if train_config.env_id is not None:
        raise fail(f"backtest needs the FX env; drop env_id={train_config.env_id!r}")
    try:
        data = make_data_manager(train_config)
        results = run_backtest(
            train_config,
            baseline_policies(train_config.env.n_actions, seed=seed),
            split=split,
            data=data,
        )
    except DataError as error:
        raise fail(str(error)) from None
    rows = {}
    for name, result in results.items():
        rows[name] = pass_metrics(result, data.periods_per_year)
        intervals = policy_intervals(result.log_returns, data.periods_per_year, seed=seed)
        if intervals is not None:
            rows[name]["sharpe_ci"] = list(intervals["sharpe"])
            rows[name]["total_return_ci"] = list(intervals["total_return"])
    _print_report(
        f"Backtest on the {split} split ({train_config.data.source})",
        rows,
        note=f"{_SHARPE_NOTE}; intervals: stationary bootstrap, seed {seed}.",
        confidence=BOOTSTRAP_CONFIDENCE,
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: ConfigOption = None,
    override: OverrideOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the stopped run in this run directory.")
    ] = None,
    run_dir: Annotated[
        str | None, typer.Option(help="Where checkpoints, logs and the report go.")
    ] = None,
) -> None:
    """Train the PPO agent from one config file and report on the test split.

    With bare ``key=value`` arguments (and no --config/--resume) it runs the Hydra app
    instead: ``fxai-tune train model=small ppo.learning_rate=1e-4`` is
    ``python -m fxai_tune.train model=small ppo.learning_rate=1e-4`` (``-m`` sweeps too).
    """
    from fxai_tune.rl import final_report, resume_training
    from fxai_tune.rl import train as run_training

    if ctx.args:
        if config is not None or resume is not None or override or run_dir is not None:
            raise fail(
                f"Hydra arguments {ctx.args} cannot be combined with --config/--resume/"
                "--override/--run-dir; use one front door or the other"
            )
        from fxai_tune.train import run_with_args

        run_with_args(ctx.args)
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if resume is not None:
        if config is not None or override:
            raise fail("--resume continues a run with its saved config; drop --config/--override")
        try:
            run = resume_training(resume)
        except FileNotFoundError as error:
            raise fail(str(error)) from None
    else:
        overrides = list(override or [])
        if run_dir is not None:
            overrides.append(f"run_dir={run_dir}")
        run = run_training(_load_config(config, overrides))
    report = final_report(run)
    _print_final_report(report, run.run_dir)


def _print_final_report(report, run_dir: Path) -> None:  # noqa: ANN001 - lazy import
    """`final_report`'s table, intervals, weights, search statistics and verdict."""
    from fxai_tune.rl._report import search_lines

    where = report.checkpoint or "the weights in memory at the end of training"
    lines = [f"Agent weights: {report.weights} ({where})"]
    bootstrap = report.bootstrap
    if bootstrap:
        lines.append(
            f"Intervals: stationary bootstrap, {bootstrap['n_resamples']} resamples, "
            f"seed {bootstrap['seed']}. {_SHARPE_NOTE}."
        )
    lines += search_lines(report.search)
    lines.append(f"Verdict: {report.verdict}")
    _print_report(
        # the run directory goes on a line of its own: a title wraps at the table's width
        f"{report.split.capitalize()}-split report",
        dict(report.results),
        note=f"In {run_dir}: {_written(run_dir, report.split)}",
        confidence=bootstrap.get("confidence"),
        lines=lines,
    )


def _written(run_dir: Path, split: str) -> str:
    """What the run directory really holds, of checkpoints, logs, report and equity curve."""
    run_dir = Path(run_dir)
    found = [
        label
        for label, path in (
            ("checkpoints/", run_dir / "checkpoints"),
            ("tensorboard/ and csv/ logs", run_dir / "csv"),
            ("report.json", run_dir / "report.json"),
            (f"the equity curve equity_{split}.png", run_dir / f"equity_{split}.png"),
        )
        if path.exists()
    ]
    if not found:
        return "nothing written"
    return ", ".join(found[:-1]) + (" and " if len(found) > 1 else "") + found[-1]


StudyOption = Annotated[
    str, typer.Option("--study", "-s", help="Study name (studies/NAME.yaml) or YAML file.")
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        envvar=STORAGE_ENV,
        show_envvar=True,
        help="Storage URL (sqlite:///, postgresql://, mysql://, journal:///FILE); default: "
        f"${STORAGE_ENV}, else the study file's. Prefer the variable for a URL with a "
        "password: a command line is visible to every user (ps).",
    ),
]
ReadStudyOption = Annotated[
    str | None,
    typer.Option(
        "--study", "-s", help="Study name (studies/NAME.yaml) or YAML file; or --study-name."
    ),
]
StudyNameOption = Annotated[
    str | None,
    typer.Option(
        "--study-name",
        help="Name of a study stored in --storage, read without a study file (e.g. one a "
        "Hydra sweep made).",
    ),
]


def _load_study(study: str, storage: str | None = None):  # noqa: ANN202 - lazy import
    """The validated study file, its storage URL checked (reachable, nothing created)."""
    from fxai_tune.tune import (
        StorageError,
        StudyError,
        check_storage_reachable,
        load_study_config,
        mask_password,
    )

    try:
        config = load_study_config(study)
    except StudyError as error:
        raise fail(mask_password(str(error))) from None
    url = storage or config.storage
    try:
        check_storage_reachable(url)
    except StorageError as error:
        where = f"--storage (or ${STORAGE_ENV})" if storage is not None else (
            f"{config.path}: storage")
        raise fail(f"{where}: {mask_password(str(error))}") from None
    return config


def _stored_study(config, storage: str | None, *, required: bool):  # noqa: ANN001, ANN202
    """The stored study of ``config`` or None; refused when ``required`` and absent."""
    from fxai_tune.tune import StorageError, find_study, mask_password

    url = storage or config.storage
    try:
        study, names = find_study(url, config.name)
    except StorageError as error:
        raise fail(mask_password(str(error))) from None
    if study is None and required:
        raise fail(
            f"no study {config.name!r} in {mask_password(url)}; valid: "
            f"{names or 'none stored yet'} (fxai-tune run --study ... creates it)"
        )
    return study


def _read_study(study: str | None, study_name: str | None, storage: str | None):  # noqa: ANN202
    """The stored study a read-only command shows, and its study file's config (None with
    ``--study-name``). Creates and writes nothing; a study that is not stored is refused."""
    from fxai_tune.tune import StorageError, StudyError, find_study, load_study_config
    from fxai_tune.tune import mask_password

    if (study is None) == (study_name is None):
        raise fail(
            "give --study FILE_OR_NAME, or --storage URL with --study-name NAME; "
            f"got {'both' if study is not None else 'neither'}"
        )
    if study is not None:
        try:
            config = load_study_config(study)
        except StudyError as error:
            raise fail(mask_password(str(error))) from None
        return _stored_study(config, storage, required=True), config
    if storage is None:
        raise fail(
            f"--study-name {study_name!r} needs --storage URL (or ${STORAGE_ENV}): where the "
            "study is stored"
        )
    try:
        stored, names = find_study(storage, study_name)
    except StorageError as error:
        raise fail(f"--storage: {mask_password(str(error))}") from None
    if stored is None:
        raise fail(
            f"--study-name: no study {study_name!r} in {mask_password(storage)}; valid: "
            f"{names or 'none stored yet'}"
        )
    return stored, None


def _preflight(config, storage: str | None, *, allow_space_change: bool) -> None:  # noqa: ANN001
    """Refuse, before any trial, what would fail every trial (`fxai_tune.tune.preflight`)."""
    from fxai_tune.tune import PreflightError, mask_password, preflight

    stored = _stored_study(config, storage, required=False)
    try:
        preflight(config, study=stored, allow_space_change=allow_space_change)
    except PreflightError as error:
        raise fail(mask_password(str(error))) from None


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise fail(f"--timeout must be seconds > 0, got {timeout:g}")


def _open(config, storage: str | None):  # noqa: ANN001, ANN202
    from fxai_tune.tune import StudyError, StudyLockError, mask_password, open_study

    try:
        return open_study(config, storage)
    except StudyError as error:  # the stored study optimises something else
        raise fail(mask_password(str(error))) from None
    except StudyLockError as error:  # not bad input: a frozen worker holds the lock
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


AllowSpaceChangeOption = Annotated[
    bool,
    typer.Option(
        "--allow-space-change",
        help="Continue a stored study although a parameter's distribution changed "
        "(TPE then models trials sampled from both).",
    ),
]


@app.command()
def run(
    study: StudyOption,
    n_trials: Annotated[int | None, typer.Option(help="Trial cap of the whole study.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which no new trial starts.")
    ] = None,
    storage: StorageOption = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    devices: Annotated[
        str | None, typer.Option(help="GPU indices for the workers, e.g. 0,1 (default: all).")
    ] = None,
    allow_space_change: AllowSpaceChangeOption = False,
) -> None:
    """Create or resume a study and run its trials with K workers, showing progress."""
    from fxai_tune.tune import (
        EXIT_FAILURE_RATE,
        DatabaseOutage,
        check_storage_for_workers,
        launch_workers,
        mask_password,
        new_log_dir,
        save_dashboard_note,
        study_status,
        watch,
    )

    if workers < 1:
        raise fail(f"--workers must be >= 1, got {workers}")
    if n_trials is not None and n_trials < 1:
        raise fail(f"--n-trials must be >= 1, got {n_trials}")
    device_list = None
    if devices is not None:
        device_list = [d.strip() for d in devices.split(",") if d.strip()]
        if not device_list or not all(d.isdigit() for d in device_list):
            raise fail(f"--devices must be comma-separated GPU indices like 0,1; got {devices!r}")
        _check_devices(device_list)
    _check_timeout(timeout)
    config = _load_study(study, storage)
    url = storage or config.storage
    cap = n_trials if n_trials is not None else config.n_trials
    _preflight(config, storage, allow_space_change=allow_space_change)
    warning = check_storage_for_workers(url, workers)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    optuna_study = _open(config, url)
    from fxai_tune.tune import fail_stale_trials

    stale = fail_stale_trials(optuna_study)
    if stale:
        console.print(
            f"failed {len(stale)} stale trial(s) {stale} (no heartbeat for "
            f"{_grace(config):g} s: their worker is gone); their parameters are queued again",
            highlight=False,
        )
    limit = timeout if timeout is not None else config.timeout
    budget = f"cap {cap} trials" if cap is not None else "no trial cap"
    if limit is not None:
        budget += f", no new trial after {limit:g} s"
    try:  # one folder per run: a rerun never overwrites the logs of the last one
        log_dir = new_log_dir(Path(config.artifact_dir) / "logs")
    except OSError as error:
        raise fail(
            f"{config.path}: artifact_dir: cannot create the worker log folder in "
            f"{config.artifact_dir} ({error.strerror or error})"
        ) from None
    console.print(
        f"study [bold]{config.name}[/] on {mask_password(url)}: {budget}, "
        f"{workers} worker(s); artifacts in {config.artifact_dir}; worker logs in {log_dir}",
        highlight=False,
        soft_wrap=True,
    )
    started = launch_workers(
        study,
        workers=workers,
        storage_url=url,
        n_trials=cap,
        timeout=limit,
        devices=device_list,
        log_dir=log_dir,
        allow_space_change=allow_space_change,
    )
    try:
        codes = watch(optuna_study, started, n_trials=cap, console=console)
    except DatabaseOutage as error:
        for worker_process in started:
            worker_process.process.wait()
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_OUTAGE) from None
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: the running trials were recorded FAIL and queued again; "
            "rerun the same command to continue",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    if any(code == EXIT_OUTAGE for code in codes):
        reason = _last_line([w.log_path for w, c in zip(started, codes) if c == EXIT_OUTAGE])
        err_console.print(reason, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_OUTAGE)
    summary = study_status(optuna_study, grace_period=_grace(config))
    _print_status(summary)
    save_dashboard_note(optuna_study, summary["overfitting"])
    if any(code == EXIT_FAILURE_RATE for code in codes):
        reason = _last_line([w.log_path for w, c in zip(started, codes) if c == EXIT_FAILURE_RATE])
        err_console.print(f"[bold red]error:[/] {reason}", highlight=False)
        raise typer.Exit(EXIT_FAILURE_RATE)
    if any(code != 0 for code in codes):
        logs = ", ".join(str(w.log_path) for w, c in zip(started, codes) if c != 0)
        err_console.print(f"[bold red]error:[/] a worker exited with an error; see {logs}")
        raise typer.Exit(1)


def _check_devices(device_list: list[str]) -> None:
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise fail(
            f"--devices {','.join(device_list)}: no CUDA GPU is visible on this machine; "
            "valid: leave --devices out to run the workers on the CPU"
        )
    bad = [d for d in device_list if int(d) >= count]
    if bad:
        raise fail(f"--devices: GPU {bad[0]} does not exist; valid: 0..{count - 1}")


def _last_line(paths: list[Path]) -> str:
    for path in paths:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "failure rate exceeded"


def _cap_reached(config, storage: str | None, n_trials: int | None) -> bool:  # noqa: ANN001
    """Say so in one line when the stored study already finished its capped trials.

    A scheduler starts workers long after the first ones (array tasks, restarted pods): they
    leave at once, exit 0. Running or queued trials keep the worker (it may retry them).
    """
    from fxai_tune.tune import count_trials

    stored = _stored_study(config, storage, required=False)
    if stored is None:
        return False
    cap = n_trials if n_trials is not None else config.n_trials
    if cap is None:  # a timeout-only study has no cap to reach
        return False
    counts = count_trials(stored.get_trials(deepcopy=False))
    if counts.running or counts.waiting or counts.finished < cap:
        return False
    console.print(
        f"study {config.name!r} already has its {cap} trial{'s' * (cap != 1)} "
        f"({counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.failed - counts.retried} failed): nothing to do",
        highlight=False,
        soft_wrap=True,
    )
    return True


@app.command()
def worker(
    study: StudyOption,
    storage: StorageOption = None,
    n_trials: Annotated[int | None, typer.Option(help="Trial cap of the whole study.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after S.")] = None,
    accelerator: Annotated[str, typer.Option(help="cpu, gpu or auto.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch threads for this worker.")] = None,
    worker_index: Annotated[
        int, typer.Option(help="Index among workers started together (sampler seed offset).")
    ] = 0,
    allow_space_change: AllowSpaceChangeOption = False,
    checked: Annotated[
        bool, typer.Option("--checked", hidden=True, help="Pre-flight done by `run`.")
    ] = False,
) -> None:
    """Join a study as one worker (e.g. from another machine with a PostgreSQL storage)."""
    from fxai_tune.tune import (
        EXIT_FAILURE_RATE,
        DatabaseOutage,
        FailureRateExceeded,
        StudyError,
        StudyLockError,
        mask_password,
        run_worker,
    )

    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise fail(f"--accelerator must be one of cpu, gpu, cuda, auto; got {accelerator!r}")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise fail(f"--accelerator {accelerator}: no CUDA GPU is visible; valid: cpu, auto")
    if n_trials is not None and n_trials < 1:
        raise fail(f"--n-trials must be >= 1, got {n_trials}")
    if threads is not None and threads < 1:
        raise fail(f"--threads must be >= 1, got {threads}")
    if worker_index < 0:
        raise fail(f"--worker-index must be >= 0, got {worker_index}")
    _check_timeout(timeout)
    config = _load_study(study, storage)
    if not checked:
        _preflight(config, storage, allow_space_change=allow_space_change)
    if _cap_reached(config, storage, n_trials):
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        counts = run_worker(
            config,
            n_trials=n_trials,
            timeout=timeout,
            storage_url=storage,
            accelerator=accelerator,
            torch_threads=threads,
            worker_index=worker_index,
        )
    except StudyError as error:  # the stored study optimises something else
        raise fail(mask_password(str(error))) from None
    except StudyLockError as error:  # not bad input: a frozen worker holds the lock
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except FailureRateExceeded as error:
        err_console.print(str(error), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILURE_RATE) from None
    except DatabaseOutage as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_OUTAGE) from None
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: the running trial was recorded FAIL and queued again; rerun to continue",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    console.print(
        f"worker done: {counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.failed} failed in the study"
    )


def _print_status(status: dict) -> None:
    trials = status["trials"]
    console.print(
        f"study [bold]{status['study']}[/] ({', '.join(status['directions'])}): "
        f"{trials['total']} trials: {trials['complete']} complete, {trials['pruned']} pruned, "
        f"{trials['failed']} failed ({trials['retried']} retried), {trials['running']} running, "
        f"{trials['waiting']} waiting",
        highlight=False,
    )
    for best in status["best"]:
        table = Table(title=f"best trial {best['number']}: values {best['values']}")
        table.add_column("parameter")
        table.add_column("value", justify="right")
        for name, value in best["params"].items():
            table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)
    if status["workers"]:
        table = Table(title="workers")
        for column in ("worker", "trials", "complete", "pruned", "failed", "running", "last"):
            table.add_column(column)
        for name, w in status["workers"].items():
            table.add_row(
                name,
                *(str(w[k]) for k in ("trials", "complete", "pruned", "failed")),
                ",".join(map(str, w["running"])) or "-",
                w.get("last_finished", "-"),
            )
        console.print(table)
    overfitting = status.get("overfitting")
    if overfitting is not None:
        from fxai_tune.tune._statistics import statistics_lines

        for line in statistics_lines(overfitting):
            console.print(line, highlight=False)
    for failure in status["failures"][-5:]:
        console.print(f"trial {failure['number']} failed: {failure['reason']}", highlight=False)
    for stale in status.get("stale", []):
        console.print(
            f"trial {stale['number']} is stale: RUNNING, last heartbeat "
            f"{stale['heartbeat_age_s']:.0f} s ago (its worker is gone); the next run or "
            "worker fails it and re-runs its parameters",
            highlight=False,
        )


def _grace(config) -> float | None:  # noqa: ANN001 - lazy import
    """Seconds without a heartbeat after which a running trial is stale (None: no heartbeat)."""
    if config.heartbeat_interval is None:
        return None
    return config.grace_period or 2 * config.heartbeat_interval


@app.command()
def status(
    study: ReadStudyOption = None,
    storage: StorageOption = None,
    study_name: StudyNameOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Trials by state, best value and params, per-worker activity, provenance (read-only).

    Stale trials (heartbeat older than the study file's grace_period) are named only with
    --study, which knows the grace period.
    """
    import json

    from fxai_tune.tune import study_status

    stored, config = _read_study(study, study_name, storage)
    summary = study_status(stored, grace_period=_grace(config) if config is not None else None)
    if json_output:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_status(summary)


@app.command("export-best")
def export_best(
    output: Annotated[Path, typer.Option("--output", "-o", help="Config YAML to write.")],
    study: ReadStudyOption = None,
    storage: StorageOption = None,
    study_name: StudyNameOption = None,
    trial_number: Annotated[
        int | None,
        typer.Option(
            "--trial",
            help="Completed trial to export (default: the best; with several objectives the "
            "first Pareto trial).",
        ),
    ] = None,
) -> None:
    """Write the best trial's complete training config (for `fxai-tune train --config`)."""
    from fxai_tune.tune import best_trials, export_best_config

    _check_output(output)
    stored, _ = _read_study(study, study_name, storage)
    try:
        trial, _ = export_best_config(stored, output, trial=trial_number)
    except ValueError as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"--output {str(output)!r}: cannot write ({error.strerror or error})") from None
    front = [t.number for t in best_trials(stored)] if len(stored.directions) > 1 else []
    if not front:
        which = ""
    elif trial_number is None:
        which = (f" (first of the Pareto front of {len(front)} trials {front}; "
                 "another with --trial N)")
    else:
        which = " (on the Pareto front)" if trial.number in front else (
            f" (not on the Pareto front {front})")
    console.print(
        f"wrote {output} from trial {trial.number}{which} (values {trial.values}); "
        f"train it with: fxai-tune train --config {output}",
        highlight=False,
    )


def _check_output(output: Path) -> None:
    """Refuse an output path whose directory cannot be created or written, before anything."""
    import os

    if output.is_dir():
        raise fail(f"--output {str(output)!r} is a directory; valid: a file path such as best.yaml")
    parent = output.parent if str(output.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise fail(
            f"--output {str(output)!r}: directory {str(parent)!r} is not writable; valid: a "
            "path in a directory this user can write"
        )


def _warn_if_exposed(host: str, what: str, reach: str) -> None:
    """One warning line when a server without authentication binds beyond this machine."""
    from fxai_tune.tune._grpc import is_loopback

    if not is_loopback(host):
        err_console.print(
            f"[bold yellow]warning:[/] binding {host}: {what}; anyone who reaches this port can "
            f"{reach}. Keep it on a private network (or bind 127.0.0.1 and tunnel).",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def dashboard(
    study: ReadStudyOption = None,
    storage: StorageOption = None,
    study_name: StudyNameOption = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of the trial artifacts (default: the study file's)."),
    ] = None,
) -> None:
    """Serve optuna-dashboard on the study's storage with its artifacts."""
    import socket

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from fxai_tune.tune import make_storage, mask_password

    if not 1 <= port <= 65535:
        raise fail(f"--port must be in 1..65535, got {port}")
    _, config = _read_study(study, study_name, storage)
    url = storage or config.storage
    if artifact_dir is None and config is not None:
        artifact_dir = Path(config.artifact_dir)
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise fail(f"--host/--port: cannot listen on {host}:{port} ({error.strerror or error})")
    # read-only: an artifact directory that does not exist yet holds no artifact to show
    store = None
    if artifact_dir is not None and artifact_dir.is_dir():
        store = FileSystemArtifactStore(str(artifact_dir))
    shown = f"artifacts in {artifact_dir}" if store is not None else "no artifacts"
    _warn_if_exposed(
        host, "the dashboard's endpoints are unauthenticated",
        "delete studies and trials and download every checkpoint and artifact",
    )
    console.print(
        f"optuna-dashboard for {mask_password(url)} on http://{host}:{port}/ ({shown})",
        highlight=False,
    )
    run_server(make_storage(url), host=host, port=port, artifact_store=store)


@app.command()
def copy(
    from_url: Annotated[
        str, typer.Option("--from", help="Storage URL to copy from (only read).")
    ],
    to_url: Annotated[str, typer.Option("--to", help="Storage URL to copy into.")],
    study: Annotated[
        str | None, typer.Option("--study", help="Study name; default: every study stored.")
    ] = None,
) -> None:
    """Copy a study (trials, attributes, artifact records) to another storage."""
    from fxai_tune.tune import StorageError, copy_studies, mask_password

    try:
        names = copy_studies(from_url, to_url, study_name=study)
    except StorageError as error:
        raise fail(mask_password(str(error))) from None
    console.print(
        f"copied {', '.join(repr(n) for n in names)} from {mask_password(from_url)} "
        f"to {mask_password(to_url)}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("storage-proxy")
def storage_proxy(
    storage: Annotated[
        str,
        typer.Option(
            envvar=STORAGE_ENV,
            show_envvar=True,
            help="Storage URL to serve (postgresql://, mysql://, sqlite:///); default: "
            f"${STORAGE_ENV} (keeps a password off the command line).",
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the storage proxy.")] = 13000,
    lock_port: Annotated[
        int | None, typer.Option(help="TCP port of the study lock and heartbeat (PORT + 1).")
    ] = None,
) -> None:
    """Serve a storage to workers through Optuna's gRPC proxy (workers: --storage grpc://H:P)."""
    from fxai_tune.tune import StorageError, check_storage_reachable, mask_password
    from fxai_tune.tune._grpc import serve_proxy
    from fxai_tune.tune._storage import storage_backend

    for name, value in (("--port", port), ("--lock-port", lock_port)):
        if value is not None and not 1 <= value <= 65535:
            raise fail(f"{name} must be in 1..65535, got {value}")
    if lock_port == port:
        raise fail(f"--lock-port must differ from --port, got {port} for both")
    try:
        backend = storage_backend(storage)
        if backend not in ("sqlite", "postgresql", "mysql"):
            raise StorageError(
                f"storage {mask_password(storage)!r} is a {backend} storage; Optuna's gRPC proxy "
                "serves RDB storages; valid: sqlite, postgresql, mysql URLs"
            )
        check_storage_reachable(storage)
    except StorageError as error:
        raise fail(f"--storage: {mask_password(str(error))}") from None
    _warn_if_exposed(
        host, "the proxy has no authentication or TLS", "read and change every study"
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        serve_proxy(storage, host=host, port=port, lock_port=lock_port)
    except OSError as error:
        raise fail(f"--host/--port: {error}") from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

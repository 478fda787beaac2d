"""The ``fxai-tune`` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="fxai-tune",
    help="Hyperparameter search for a PPO FX-trading agent (Lightning + Optuna).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2


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


def _print_report(title: str, table_rows: dict[str, dict[str, float]], note: str = "") -> None:
    from fxai_tune.rl import REPORT_COLUMNS

    table = Table(title=title)
    table.add_column("policy")
    columns = [c for c in REPORT_COLUMNS if any(c in row for row in table_rows.values())]
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in table_rows.items():
        cells = []
        for column in columns:
            value = row.get(column, float("nan"))
            if column in ("total_return", "max_drawdown", "win_rate"):
                cells.append(f"{100 * value:.2f}%")
            elif column == "trades":
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.3f}")
        table.add_row(name, *cells)
    console.print(table)
    if note:
        console.print(note, highlight=False)


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
    from fxai_tune.rl import baseline_policies

    if split not in ("train", "val", "test"):
        raise fail(f"--split must be one of train, val, test; got {split!r}")
    train_config = _load_config(config, override or [])
    try:
        results = run_backtest(
            train_config,
            baseline_policies(train_config.env.n_actions, seed=seed),
            split=split,
        )
    except DataError as error:
        raise fail(str(error)) from None
    rows = {name: result.stats for name, result in results.items()}
    _print_report(
        f"Backtest on the {split} split ({train_config.data.source})",
        rows,
        note="Sharpe annualised from per-bar returns with the data's bars per year "
        "(hourly FX: 6,240 = 260 days x 24 h).",
    )


@app.command()
def train(
    config: ConfigOption = None,
    override: OverrideOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the stopped run in this run directory.")
    ] = None,
    run_dir: Annotated[
        str | None, typer.Option(help="Where checkpoints, logs and the report go.")
    ] = None,
) -> None:
    """Train the PPO agent from one config file and report on the test split."""
    from fxai_tune.rl import final_report, resume_training
    from fxai_tune.rl import train as run_training

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
    table = final_report(run)
    _print_report(
        f"Test-split report ({run.run_dir})",
        table,
        note=f"Checkpoints, logs, report.json and the equity curve are in {run.run_dir}",
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

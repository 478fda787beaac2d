"""What the commands print is true and said once (issue 12). Captured output, in-process."""

from __future__ import annotations

import io
import logging

import pytest
from _tune_fixtures import write_tiny_study
from rich.console import Console
from typer.testing import CliRunner

import fxai_tune.cli.main as cli
from fxai_tune.data import DataConfig, DataManager
from fxai_tune.rl._report import FinalReport
from fxai_tune.tune import load_study_config, open_study


@pytest.fixture
def printed(monkeypatch) -> io.StringIO:
    """What `fxai-tune` prints to stdout, on an 80-column terminal."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80, color_system=None))
    return out


def _report(run_dir, results) -> FinalReport:
    return FinalReport(
        split="test", results=results, intervals={}, verdict="No verdict.", search=None,
        weights="last", checkpoint=None, path=run_dir / "report.json",
    )


def test_gymnasium_report_promises_no_equity_curve_and_keeps_the_run_path_whole(
    tmp_path, printed
):
    run_dir = tmp_path / "runs" / "a-rather-long-run-directory-name-for-cartpole-v1-seed-0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "report.json").write_text("{}")  # what train writes for a gymnasium env
    cli._print_final_report(_report(run_dir, {"agent": {"reward": 21.5}}), run_dir)
    text = printed.getvalue()
    assert "equity" not in text, text
    assert str(run_dir) in text, text
    pieces = [line for line in text.splitlines() if "runs" in line or "cartpole" in line]
    assert all(str(run_dir) in line for line in pieces), text  # never cut mid-word
    assert "In " + str(run_dir) + ": checkpoints/ and report.json" in text, text


def test_fx_report_names_the_equity_curve_it_wrote(tmp_path, printed):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("report.json", "equity_test.png"):
        (run_dir / name).write_text("x")
    cli._print_final_report(_report(run_dir, {"agent": {"total_return": 0.01}}), run_dir)
    assert "the equity curve equity_test.png" in printed.getvalue()


def test_the_test_split_is_announced_once_per_report(caplog):
    data = DataManager(DataConfig(source="synthetic"), windows={"1h": 8})
    with caplog.at_level(logging.INFO, logger="fxai_tune.data._manager"):
        for _ in range(4):  # the agent and the three baselines
            data.test_market()
    assert len([r for r in caplog.records if "test split" in r.getMessage()]) == 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_status_export_best_and_reopening_never_log_using_an_existing_study(tmp_path):
    path = write_tiny_study(tmp_path, "quiet")
    config = load_study_config(path)
    open_study(config)
    records = _Records()
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(records)
    try:
        open_study(config)  # what run and every worker do on start
        for args in (["status", "--study", str(path)],
                     ["export-best", "--study", str(path), "-o", str(tmp_path / "b.yaml")]):
            CliRunner().invoke(cli.app, args)
    finally:
        optuna_logger.removeHandler(records)
    assert not [m for m in records.messages if "existing study" in m], records.messages

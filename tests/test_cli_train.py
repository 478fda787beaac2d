"""`fxai-tune train` and `backtest` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from _rl_fixtures import tiny_fx_values

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def test_train_writes_checkpoints_logs_and_a_test_report_then_resumes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_fx_values(tmp_path / "run")))
    result = _run("train", "--config", str(config), "-o", "ppo.n_epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["split"] == "test"
    assert set(report["results"]) == {"agent", "buy_and_hold", "flat", "random"}
    assert (run_dir / "equity_test.png").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "tensorboard").is_dir() and (run_dir / "csv" / "metrics.csv").is_file()
    assert "buy_and_hold" in result.stdout
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["ppo"]["n_epochs"] == 1  # the override is part of the run's config

    resumed = _run("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_train_with_a_bad_config_is_a_one_line_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("ppo:\n  gamma: 2.0\n")
    result = _run("train", "--config", str(config))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ppo.gamma" in lines[0] and "bad.yaml" in lines[0]


def test_resume_without_a_checkpoint_says_what_is_missing(tmp_path):
    result = _run("train", "--resume", str(tmp_path))
    assert result.returncode == 2
    assert "last.ckpt" in result.stderr


def test_backtest_prints_the_baselines_on_the_shipped_data():
    result = _run("backtest")
    assert result.returncode == 0, result.stderr
    for name in ("buy_and_hold", "flat", "random", "6,240"):
        assert name in result.stdout


def test_backtest_rejects_an_unknown_split():
    result = _run("backtest", "--split", "holdout")
    assert result.returncode == 2 and "holdout" in result.stderr


def test_bare_key_value_arguments_go_to_the_hydra_app():
    result = _run("train", "model=small", "ppo.learning_rate=0.0005", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-2000:]
    composed = yaml.safe_load(result.stdout)
    assert composed["ppo"]["learning_rate"] == 0.0005
    assert composed["model"]["d_model"] < 64  # the small model group


def test_hydra_arguments_cannot_be_mixed_with_a_config_file(tmp_path):
    result = _run("train", "--config", str(tmp_path / "x.yaml"), "model=small")
    assert result.returncode == 2 and "one front door" in result.stderr

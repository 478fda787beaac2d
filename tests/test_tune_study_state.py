"""What a stored study keeps (issue 12): its directions and metrics, its provenance, and
read-only commands that never create or write one. In-process, no trial trains."""

from __future__ import annotations

import json
import subprocess

import optuna
import pytest
import yaml
from _tune_fixtures import write_tiny_study
from typer.testing import CliRunner

from fxai_tune.cli.main import app
from fxai_tune.tune import StudyError, find_study, load_study_config, open_study
from fxai_tune.tune._provenance import PROVENANCE_PACKAGES


def _changed(path, **fields):
    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_open_study_sets_metric_names_and_refuses_changed_directions_or_metrics(tmp_path):
    path = write_tiny_study(tmp_path, "kept")
    study = open_study(load_study_config(path))
    assert study.metric_names == ["val/episode_reward"]
    _changed(path, direction="minimize")
    with pytest.raises(StudyError, match=r"direction: .*optimises \['maximize'\]"):
        open_study(load_study_config(path))
    _changed(path, direction="maximize", objective={"metrics": ["val/sharpe"]})
    with pytest.raises(StudyError, match=r"objective.metrics: .*val/episode_reward"):
        open_study(load_study_config(path))
    stored, _ = find_study(load_study_config(path).storage, "kept")
    assert [d.name for d in stored.directions] == ["MAXIMIZE"]  # nothing was changed


def test_worker_without_preflight_refuses_a_changed_direction_in_one_line(tmp_path):
    path = write_tiny_study(tmp_path, "flip")
    open_study(load_study_config(path))
    _changed(path, direction="minimize")
    # --checked skips the pre-flight: open_study itself must refuse
    result = CliRunner().invoke(app, ["worker", "--study", str(path), "--checked"])
    assert result.exit_code == 2, result.output
    assert len(_lines(result.output)) == 1 and "direction" in result.output, result.output
    assert not find_study(load_study_config(path).storage, "flip")[0].trials


def test_created_study_records_provenance_shown_by_status_json(tmp_path):
    bars = tmp_path / "bars.csv"
    bars.write_text("timestamp,open,high,low,close\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = write_tiny_study(tmp_path, "prov")
    data = yaml.safe_load(path.read_text())
    data["base"]["data"] = {"source": str(bars), "format": "csv"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    open_study(load_study_config(path))

    result = CliRunner().invoke(app, ["status", "--study", str(path), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])["provenance"]
    assert set(record["packages"]) == set(PROVENANCE_PACKAGES)
    assert record["packages"]["optuna"] == optuna.__version__
    assert record["git_commit"] == commit
    import hashlib

    assert record["data_files"] == {
        str(bars.resolve()): hashlib.sha256(bars.read_bytes()).hexdigest()
    }
    bars.write_text("changed")  # a continued study keeps the record of its creation
    assert open_study(load_study_config(path)).user_attrs["provenance"] == record


def test_the_commit_is_read_without_git_from_packed_refs_worktrees_and_detached_heads(
    tmp_path,
):
    from fxai_tune.tune._provenance import git_commit

    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]

    def run(*args: str) -> str:
        return subprocess.run([*git, *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    repo.mkdir()
    run("init", "-q")
    assert git_commit(repo) is None  # a branch without a commit yet
    run("commit", "-q", "--allow-empty", "-m", "one")
    first = run("rev-parse", "HEAD")
    (repo / "sub").mkdir()
    assert git_commit(repo / "sub") == first  # loose ref, from a folder inside
    run("pack-refs", "--all")
    assert git_commit(repo) == first  # packed-refs
    run("worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    run("-C", str(tmp_path / "side"), "commit", "-q", "--allow-empty", "-m", "two")
    assert git_commit(tmp_path / "side") == run("rev-parse", "side") != first  # worktree
    run("checkout", "-q", "--detach", first)
    assert git_commit(repo) == first  # detached HEAD


def test_provenance_outside_a_git_checkout_has_no_commit(tmp_path):
    from fxai_tune.tune._provenance import git_commit

    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "no-such-dir") is None


def _stored(tmp_path):
    """A stored study with one completed trial, as a Hydra sweep would leave it (no file)."""
    url = f"sqlite:///{tmp_path / 'hydra.db'}"
    study = optuna.create_study(study_name="swept", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        value=1.0, user_attrs={"config": {}},
    ))
    return url


def test_status_reads_a_study_from_storage_and_name_alone(tmp_path):
    url = _stored(tmp_path)
    result = CliRunner().invoke(
        app, ["status", "--storage", url, "--study-name", "swept", "--json"]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output[result.output.index("{"):])
    assert status["trials"]["complete"] == 1 and status["best"][0]["params"] == {"x": 0.5}


@pytest.mark.parametrize("command", [["status"], ["export-best", "-o", "best.yaml"],
                                     ["dashboard"]])
def test_read_only_commands_refuse_a_missing_study_and_create_none(tmp_path, command):
    url = _stored(tmp_path)
    before = (tmp_path / "hydra.db").read_bytes()
    result = CliRunner().invoke(app, [*command, "--storage", url, "--study-name", "nosuch"])
    assert result.exit_code == 2, result.output
    assert _lines(result.output) == [_lines(result.output)[0]]
    assert "'nosuch'" in result.output and "swept" in result.output, result.output
    assert optuna.get_all_study_names(url) == ["swept"]
    assert (tmp_path / "hydra.db").read_bytes() == before


def test_status_on_a_missing_storage_file_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = CliRunner().invoke(app, ["status", "--storage", url, "--study-name", "x"])
    assert result.exit_code == 2 and len(_lines(result.output)) == 1, result.output
    assert not (tmp_path / "none.db").exists()


def test_study_name_needs_a_storage_and_excludes_a_study_file(tmp_path):
    path = write_tiny_study(tmp_path, "both")
    for args in (["--study-name", "x"], ["--study", str(path), "--study-name", "x"], []):
        result = CliRunner().invoke(app, ["status", *args])
        assert result.exit_code == 2 and len(_lines(result.output)) == 1, result.output

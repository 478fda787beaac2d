"""Write docs/reliability.md: the fault cases and every bad input with what it gets (issue 11).

Runs the bad-input table of ``tests/test_bad_input.py`` in-process (about a minute on one
core) and, with ``--faults``, the fault-injection tests of ``tests/test_tune_faults.py``
(several minutes: they train, interrupt, kill workers and stop a PostgreSQL server)::

    PYTHONPATH=. python scripts/reliability_report.py [--faults] [-o docs/reliability.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# (test in tests/test_tune_faults.py, the fault, what the study does about it)
FAULTS = [
    ("test_two_workers_ride_out_a_database_outage_and_lose_nothing",
     "PostgreSQL stopped for 10 s while two workers are mid-trial (own server), then started "
     "again",
     "storage calls retried with backoff within `outage_window` (study key, default 300 s); "
     "training goes on (reports queued); the heartbeat threads survive; no stale-trial verdict "
     "for a grace period after the outage; all 3 trials complete on both workers, cap exact, "
     "none left RUNNING"),
    ("test_outage_past_the_window_stops_in_one_line_and_the_next_run_recovers",
     "PostgreSQL away longer than `outage_window`",
     "the worker stops with exit code 4 and one line naming host:port and what to do; the next "
     "worker fails the trial as stale and re-runs it; cap exact"),
    ("test_ctrl_c_requeues_the_trial_and_the_next_run_ends_with_the_cap",
     "Ctrl-C (SIGINT) to one worker mid-trial",
     "the trial is recorded FAIL (`fail_reason: interrupted`) and its parameters queued again; "
     "it does not use up the cap; the next run re-runs them and ends with `n_trials` finished"),
    ("test_ctrl_c_of_run_with_two_workers_loses_nothing_and_rerun_reaches_the_cap",
     "Ctrl-C to `fxai-tune run --workers 2`",
     "one SIGINT passed to each worker (own process group); nothing left RUNNING; the rerun "
     "reaches the cap with the interrupted parameters re-run; a second Ctrl-C kills at once"),
    ("test_killed_worker_shows_stale_in_status_and_run_fails_it_on_start",
     "SIGKILL of the only worker (max_retry 3 and 0)",
     "`status` shows the trial stale with its heartbeat age; `run` fails it on start and "
     "re-runs its parameters up to the study key `max_retry` times"),
    ("test_non_finite_value_or_loss_fails_that_trial_with_the_reason_and_the_study_goes_on",
     "NaN objective value, non-finite loss",
     "that trial FAIL with `fail_reason` (NaN/inf: ...); the study goes on"),
    ("test_an_artifact_that_cannot_be_written_fails_that_trial_never_the_worker",
     "an artifact that cannot be written",
     "that trial FAIL with `fail_reason: cannot write artifact PATH: ...`; the worker goes on"),
]


def _fault_results() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "", "-p", "no:randomly",
             "tests/test_tune_faults.py", f"--junitxml={report}"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )
        results: dict[str, list[str]] = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "").split("[")[0]
            if case.find("skipped") is not None:
                outcome = "skipped"
            elif case.find("failure") is not None or case.find("error") is not None:
                outcome = "FAILED"
            else:
                outcome = "passed"
            results.setdefault(name, []).append(outcome)
    return {name: ", ".join(outcomes) for name, outcomes in results.items()}


def _bad_inputs() -> list[tuple[str, int, int, bool, str]]:
    from test_bad_input import CASES, run_case

    import yaml  # noqa: F401 - fail early if the test deps are missing

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stored = _stored(Path(tmp) / "stored")
        for i, name in enumerate(CASES):
            case_dir = Path(tmp) / f"case{i}"
            case_dir.mkdir()
            code, output, before, after = run_case(name, case_dir, stored)
            lines = [line for line in output.splitlines() if line.strip()]
            ok = code == 2 and 1 <= len(lines) <= 2 and "Traceback" not in output
            first = lines[0].replace(str(case_dir), "CASE").replace(tmp, "TMP") if lines else ""
            rows.append((name, code, len(lines), ok and before == after, first))
    return rows


def _stored(directory: Path) -> Path:
    import optuna
    from _tune_fixtures import write_tiny_study

    from fxai_tune.tune import load_study_config, open_study

    directory.mkdir()
    db = directory / "bad.db"
    path = write_tiny_study(directory, "bad", storage=f"sqlite:///{db}")
    config = load_study_config(path)
    study = open_study(config)
    for i, lr in enumerate((3e-4, 1e-3)):
        study.add_trial(optuna.trial.create_trial(
            params={"ppo.learning_rate": lr, "ppo.ent_coef": 1e-3},
            distributions=config.space.distributions(), value=0.01 * i,
            user_attrs={"config": {}},
        ))
    text = path.read_text().replace("name: bad", "name: empty", 1)
    path.write_text(text)
    open_study(load_study_config(path))
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", action="store_true", help="Also run the fault tests.")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()

    rows = _bad_inputs()
    faults = _fault_results() if args.faults else {}
    good = sum(ok for *_, ok, _ in rows)
    out = [
        "# Reliability: faults ridden out, bad input refused before the first trial",
        "",
        "Produced by `scripts/reliability_report.py` (rerun it after changing the tuner; "
        "`--faults` also runs the fault-injection tests). Issue 11.",
        "",
        "## Faults",
        "",
        "| fault | what happens | test (`tests/test_tune_faults.py`) | result |",
        "|---|---|---|---|",
    ]
    for test, fault, outcome in FAULTS:
        result = faults.get(test, "not run (use --faults)")
        out.append(f"| {fault} | {outcome} | `{test}` | {result} |")
    out += [
        "",
        "Storage calls that ride out an outage: ask (trial creation), report, user/system "
        "attrs, tell, reads, the stale-trial check and the study lock. While the database is "
        "away training goes on: a validation's report is queued (written, in order, before "
        "the next call that reaches the database, the trial's tell at the latest) and the "
        "pruning verdict waits for the first validation after the outage; other calls wait "
        "for the database; the heartbeat is tried once per interval and never raises "
        "(`test_reports_during_an_outage_never_stop_training_and_reach_the_database_after_it`"
        ").",
        "",
        "The same window covers a `redis://` storage (Redis stopped or restarting) and a "
        "`grpc://` one (the storage proxy stopped or restarting): the same retry with backoff "
        "on the journal's appends and reads, the proxy's calls, the study lock and the "
        "stale-trial check; past the window one line naming the Redis server's or the "
        "proxy's host:port. Tests: `tests/test_tune_redis.py` and `tests/test_tune_grpc.py` "
        "(`test_a_finished_trial_rides_out_a_*_outage_and_is_kept`, "
        "`test_*_away_past_the_window_is_one_line_naming_host_and_port`), each on a server "
        "of its own.",
        "",
        "## Bad input",
        "",
        f"{good} of {len(rows)} bad inputs are refused before any trial with exit code 2, one "
        "or two lines, no traceback and the storage unchanged "
        "(`tests/test_bad_input.py`). What each gets (first line of the output):",
        "",
        "(`CASE` is the case's own scratch directory.)",
        "",
        "| case | exit | lines | ok | message |",
        "|---|---|---|---|---|",
    ]
    for name, code, n_lines, ok, first in rows:
        message = first.replace("|", "\\|")
        if len(message) > 220:
            message = message[:217] + "..."
        out.append(f"| {name} | {code} | {n_lines} | {'yes' if ok else 'NO'} | {message} |")
    args.output.write_text("\n".join(out) + "\n")
    print(f"wrote {args.output}: {good}/{len(rows)} bad inputs refused cleanly")


if __name__ == "__main__":
    main()

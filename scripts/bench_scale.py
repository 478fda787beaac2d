"""Load test (issue 14): many workers on one study through PostgreSQL, the gRPC proxy and Redis.

Each run starts W worker processes on one fresh study with a cap of ``trials_per_worker x W``
trials. A worker runs the tuner's own loop (`open_study`, the study lock with the cap check,
ask/tell through `study.optimize`, the heartbeat thread, the stale-trial check, the ``worker``
and ``config`` user attributes, intermediate reports) with an objective that samples the
study's search space as `TrialObjective` does and then sleeps instead of training. Workers
are forked from this process after it imported the runner once, so 64 workers on 2 cores do
not each pay torch's ~5 s import.

Storages, each on a server this script starts itself (the machine's own servers are left
alone, and connection counts are those of this test only):

- ``postgresql``: every worker connects to a PostgreSQL server (initdb + pg_ctl, free port);
- ``grpc``: workers reach that server through ``fxai-tune storage-proxy``;
- ``redis``: Optuna's journal on a redis-server (free port).

Reported per run: trials per second (first trial start to last trial end, from the storage),
storage time per trial (wall time inside the storage's methods, summed over the workers, per
trial; the heartbeat thread's CPU time), wait for the study lock per trial, and the
PostgreSQL connections held (``pg_stat_activity``, peak during the run). Checked per run:
exactly the cap, trial numbers 0..cap-1 once each, no parameters twice, no trial lost (every
value a worker told is stored COMPLETE). Every rate is also given as a ratio to the baseline
measured in the same invocation (1 worker on PostgreSQL).

Then each sampler's cost per trial (ask + sampling the search space) in memory at 100, 500
and 2,000 trials of history.

Usage: ``python scripts/bench_scale.py [--workers 1,8,32,64]
[--storages postgresql,grpc,redis] [--trials-per-worker 1] [--space ppo_quick] [--sleep 0.1]
[--no-samplers]``; exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import yaml

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fxai_tune.tune._runner as runner  # noqa: E402 - after the path set-up
from fxai_tune import STORAGE_ENV  # noqa: E402
from bench_tune import _time_storage  # noqa: E402 - the storage clock of bench_tune part 3
from fxai_tune.tune import StudyConfig, load_study_config  # noqa: E402
from fxai_tune.tune._study import SamplerConfig, make_sampler  # noqa: E402

BASELINE = ("postgresql", 1)
SAMPLER_NAMES = ("random", "tpe", "cmaes", "nsga2")
HISTORY_SIZES = (100, 500, 2000)


# ------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(ready: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.2)


@contextmanager
def own_postgres(directory: Path) -> Iterator[str]:
    """A PostgreSQL server of this run (trust auth, 400 connections); yields its URL."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    bin_dir = next((d for d in candidates if (d / "pg_ctl").exists()), None)
    if bin_dir is None:
        raise RuntimeError("initdb/pg_ctl not found (PATH or /usr/lib/postgresql/*/bin)")
    data = directory / "pgdata"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_user, str(bin_dir / tool), *args], check=True,
                       capture_output=True, timeout=120)

    port = free_port()
    pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    options = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=400 "
               "-c fsync=off -c shared_buffers=64MB")
    pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(data / "server.log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")


@contextmanager
def own_redis(directory: Path) -> Iterator[str]:
    """A redis-server of this run on a free port, no persistence; yields its URL."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not installed")
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory), "--maxclients", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    def ready() -> bool:
        try:
            return bool(redis.Redis(port=port).ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        _wait_until(ready, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def storage_proxy(database_url: str) -> Iterator[str]:
    """``fxai-tune storage-proxy`` on ``database_url``; yields the workers' grpc:// URL."""
    port, lock_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    server = subprocess.Popen(
        [sys.executable, "-m", "fxai_tune.cli.main", "storage-proxy", "--port", str(port),
         "--lock-port", str(lock_port)],
        env={**env, STORAGE_ENV: database_url},  # not on the command line
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"storage-proxy exited with {server.returncode}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        _wait_until(ready, "storage-proxy", timeout=120)
        yield f"grpc://127.0.0.1:{port}?lock_port={lock_port}"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


class ConnectionCounter:
    """Samples the PostgreSQL sessions held (``pg_stat_activity``, this one excluded)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            while not self._stop.wait(0.1):
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid()"
                )
                self.samples.append(cursor.fetchone()[0])
        connection.close()

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ workers


class SleepObjective:
    """Samples the study's search space as `TrialObjective` does (`SearchSpace.sample`: one
    storage write per parameter), records the sampled values and its wall time as user
    attributes, and sleeps instead of training, reporting ``reports`` intermediate values on
    the way (pruning's storage calls). Building the full `TrainConfig` from the values is left
    out: it costs ~0.1-0.3 s of CPU per trial here (OmegaConf), nothing next to training on a
    GPU, but enough to swamp storage costs with 64 processes on 2 cores."""

    def __init__(self, study: StudyConfig, *, seconds: float, reports: int) -> None:
        self.study = study
        self.seconds = seconds
        self.reports = reports

    def __call__(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        values = self.study.space.sample(trial, base=self.study.base_config)
        trial.set_user_attr("config", values)
        # a value only the parameters decide: checks that what was told is what is stored
        value = zlib.crc32(repr(sorted(trial.params.items())).encode()) / 2**32
        for step in range(self.reports):
            time.sleep(self.seconds / self.reports)
            trial.report(value * (step + 1) / self.reports, step)
            trial.should_prune()
        if not self.reports:
            time.sleep(self.seconds)
        trial.set_user_attr("wall_time_s", time.perf_counter() - started)
        return value


def _worker(config: StudyConfig, cap: int, seconds: float, reports: int, index: int,
            start: Any, results: Any) -> None:
    """One forked worker: the runner's own loop on ``config``'s study, instrumented."""
    storage_clock = [0.0, 0]
    lock_clock = [0.0, 0]
    original_make_storage, original_lock = runner.make_storage, runner.study_lock

    def timed_make_storage(*args: Any, **kwargs: Any) -> Any:
        storage = original_make_storage(*args, **kwargs)
        _time_storage(storage, storage_clock)
        return storage

    @contextmanager
    def timed_lock(*args: Any, **kwargs: Any) -> Iterator[Any]:
        asked = time.perf_counter()
        with original_lock(*args, **kwargs) as release:
            lock_clock[0] += time.perf_counter() - asked
            lock_clock[1] += 1
            yield release

    runner.make_storage, runner.study_lock = timed_make_storage, timed_lock
    told: list[tuple[int, float]] = []
    error = None
    start.wait()
    try:
        study = runner.open_study(config, config.storage)
        objective = SleepObjective(config, seconds=seconds, reports=reports)

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            told.append((trial.number, trial.value))

        # the runner's loop; `optimize` gets the callback through its keyword
        optimize = study.optimize
        study.optimize = lambda func, **kw: optimize(func, callbacks=[record], **kw)
        runner._run_trials(study, config, objective, config.storage, cap, None,
                           f"bench:{index}", {})
    except BaseException as caught:  # noqa: BLE001 - reported to the parent, checked there
        error = f"{type(caught).__name__}: {str(caught).splitlines()[0] if str(caught) else ''}"
    results.put({"index": index, "told": told, "storage_s": storage_clock[0],
                 "storage_calls": storage_clock[1], "lock_s": lock_clock[0],
                 "locks": lock_clock[1], "error": error})


def _read_trials(url: str, name: str, results: Any) -> None:
    """In a forked child (the parent never opens a storage: its children would inherit it)."""
    from fxai_tune.tune import make_storage

    study = optuna.load_study(study_name=name, storage=make_storage(url))
    results.put([
        (t.number, t.state.name, tuple(sorted(t.params.items())), t.value,
         t.datetime_start.timestamp() if t.datetime_start else None,
         t.datetime_complete.timestamp() if t.datetime_complete else None)
        for t in study.get_trials(deepcopy=False)
    ])


@dataclasses.dataclass
class RunResult:
    storage: str
    workers: int
    cap: int
    trials_per_s: float
    storage_ms: float
    lock_ms: float
    connections: int | None
    wall_s: float
    problems: list[str]


def check_run(cap: int, stored: list[tuple], reports: list[dict[str, Any]]) -> list[str]:
    """What went wrong: the cap, duplicates, lost trials, worker errors (empty when fine)."""
    problems = [f"worker {r['index']}: {r['error']}" for r in reports if r["error"]]
    numbers = sorted(t[0] for t in stored)
    if numbers != list(range(cap)):
        problems.append(f"{len(stored)} trials numbered {numbers[:3]}...{numbers[-3:]}, "
                        f"expected exactly 0..{cap - 1}")
    states = {t[1] for t in stored}
    if states != {"COMPLETE"}:
        problems.append(f"trial states {sorted(states)}, expected only COMPLETE")
    if len({t[2] for t in stored}) != len(stored):
        problems.append("parameters run twice")
    told = [pair for r in reports for pair in r["told"]]
    complete = {t[0]: t[3] for t in stored if t[1] == "COMPLETE"}
    lost = [n for n, v in told if complete.get(n) != v]
    if lost or len(told) != cap:
        problems.append(f"{len(told)} trials told for a cap of {cap}, lost: {lost[:5]}")
    return problems


def run_once(config: StudyConfig, storage: str, url: str, workers: int, *, cap: int,
             seconds: float, reports: int, postgres_url: str) -> RunResult:
    context = multiprocessing.get_context("fork")
    name = f"scale_{storage}_{workers}_{os.urandom(3).hex()}"
    run_config = dataclasses.replace(config, name=name, storage=url, n_trials=cap)
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_worker, daemon=True,  # they go with this process on Ctrl-C
                        args=(run_config, cap, seconds, reports, i, start, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    counter = ConnectionCounter(postgres_url) if storage != "redis" else None
    began = time.perf_counter()
    start.set()
    with counter or _no_counter():
        reports_ = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    wall = time.perf_counter() - began
    reader = context.Process(target=_read_trials, args=(url, name, results))
    reader.start()
    stored = results.get(timeout=120)
    reader.join()
    problems = check_run(cap, stored, reports_)
    problems += [f"worker exit code {p.exitcode}" for p in processes if p.exitcode]
    starts = [t[4] for t in stored if t[4]]
    ends = [t[5] for t in stored if t[5]]
    span = (max(ends) - min(starts)) if starts and ends else wall
    return RunResult(
        storage=storage, workers=workers, cap=cap, trials_per_s=cap / span,
        storage_ms=1000 * sum(r["storage_s"] for r in reports_) / cap,
        lock_ms=1000 * sum(r["lock_s"] for r in reports_) / cap,
        connections=max(counter.samples, default=0) if counter else None,
        wall_s=wall, problems=problems,
    )


@contextmanager
def _no_counter() -> Iterator[None]:
    yield


def warm_imports(directory: Path) -> None:
    """Import here, once, what each worker would import at its first storage call (~2.5 s of
    CPU: the PostgreSQL driver and dialect, Alembic, Optuna's models): the forked workers
    inherit it. gRPC is left to the workers: a gRPC runtime must not cross a fork."""
    import psycopg2  # noqa: F401
    import redis  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401

    from fxai_tune.tune import make_storage

    storage = make_storage(f"sqlite:///{directory / 'warm-up.db'}")
    optuna.create_study(storage=storage)
    storage.engine.dispose()


# ------------------------------------------------------------------------------ samplers


def sampler_costs(config: StudyConfig, repeats: int = 3) -> dict[str, dict[int, float]]:
    """ms per trial (ask + sampling the space) of each sampler at each history size, in memory.

    One in-memory study grows by random trials over the study's space; at each size every
    sampler (as `make_sampler` builds it, seeded) takes a turn and asks ``repeats`` trials (the
    median counts).
    """
    history = optuna.create_study()
    random = optuna.samplers.RandomSampler(seed=0)
    quiet = {"cmaes": {"warn_independent_sampling": False}}  # it falls back on categoricals
    costs: dict[str, dict[int, float]] = {name: {} for name in SAMPLER_NAMES}
    for size in HISTORY_SIZES:
        history.sampler = random
        # (not `len(history.trials)`: it deep-copies every trial)
        while len(history.get_trials(deepcopy=False)) < size:
            trial = history.ask()
            config.space.sample(trial)
            history.tell(trial, zlib.crc32(repr(trial.params).encode()) / 2**32)
        for name in SAMPLER_NAMES:
            history.sampler = make_sampler(SamplerConfig(name, seed=0, options=quiet.get(name, {})))
            took = []
            for _ in range(repeats):
                began = time.perf_counter()
                trial = history.ask()
                config.space.sample(trial)
                took.append(time.perf_counter() - began)
                history.tell(trial, 0.5)
            costs[name][size] = 1000 * statistics.median(took)
    return costs


# ------------------------------------------------------------------------------ main


def study_config(directory: Path, sampler: str, space: str) -> StudyConfig:
    """The demo study's base config and search space ``space``, no pruning."""
    path = directory / "bench_scale.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bench_scale",
        "base_config": str(ROOT / "fxai_tune" / "studies" / "configs" / "demo_base.yaml"),
        "search_space": space,
        "direction": "maximize",
        "sampler": {"name": sampler, "seed": 0},
        "pruner": {"name": "none"},
        "n_trials": 1,
        "storage": f"sqlite:///{directory / 'unused.db'}",
        "artifact_dir": str(directory / "artifacts"),
        "heartbeat_interval": 10,
        "grace_period": 30,
    }))
    return load_study_config(path)


def print_table(results: list[RunResult]) -> None:
    base = next((r for r in results if (r.storage, r.workers) == BASELINE), results[0])
    print(f"\nbaseline: {base.storage}, {base.workers} worker(s): {base.trials_per_s:.1f} "
          "trials/s")
    print("| storage | workers | trials | trials/s | vs baseline | storage ms/trial "
          "| lock wait ms/trial | PG connections (peak) | wall s | checks |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        connections = "-" if r.connections is None else str(r.connections)
        checks = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems)
        print(f"| {r.storage} | {r.workers} | {r.cap} | {r.trials_per_s:.1f} | "
              f"{r.trials_per_s / base.trials_per_s:.2f}x | {r.storage_ms:.1f} | "
              f"{r.lock_ms:.1f} | {connections} | {r.wall_s:.0f} | {checks} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,8,32,64")
    parser.add_argument("--storages", default="postgresql,grpc,redis")
    parser.add_argument("--trials-per-worker", type=int, default=1)
    parser.add_argument("--min-trials", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds a trial sleeps")
    parser.add_argument("--reports", type=int, default=2, help="intermediate reports/trial")
    parser.add_argument("--sampler", default="random", help="sampler of the load test")
    parser.add_argument("--space", default="ppo_quick",
                        help="search space (ppo_quick: 8 parameters; ppo_default: 28, one "
                        "storage write each)")
    parser.add_argument("--no-samplers", action="store_true", help="skip the sampler costs")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    storages = args.storages.split(",")
    unknown = sorted(set(storages) - {"postgresql", "grpc", "redis"})
    if unknown:
        parser.error(f"--storages: unknown {unknown}; valid: postgresql, grpc, redis")

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="fxai-bench-scale-") as tmp:
        directory = Path(tmp)
        config = study_config(directory, args.sampler, args.space)
        warm_imports(directory)
        with own_postgres(directory) as postgres_url, own_redis(directory) as redis_url:
            urls = {"postgresql": postgres_url, "redis": redis_url}
            for storage in storages:
                with (storage_proxy(postgres_url) if storage == "grpc" else _no_counter()) as p:
                    url = p if storage == "grpc" else urls[storage]
                    for count in workers:
                        cap = max(args.min_trials, args.trials_per_worker * count)
                        result = run_once(config, storage, url, count, cap=cap,
                                          seconds=args.sleep, reports=args.reports,
                                          postgres_url=postgres_url)
                        results.append(result)
                        print(f"{storage:10s} {count:3d} workers: {cap} trials in "
                              f"{result.wall_s:.1f} s, {result.trials_per_s:.1f} trials/s, "
                              f"{'ok' if not result.problems else result.problems}",
                              flush=True)
        print_table(results)
        if not args.no_samplers:  # on the real agent's space
            costs = sampler_costs(study_config(directory, "random", "ppo_default"))
            print("\nsampler cost per trial (ask + sampling the 28-parameter ppo_default "
                  "space), in memory, ms:")
            print("| sampler | " + " | ".join(f"{n} trials" for n in HISTORY_SIZES) + " |")
            print("|---|" + "---:|" * len(HISTORY_SIZES))
            for name, by_size in costs.items():
                print(f"| {name} | " + " | ".join(f"{by_size[n]:.1f}" for n in HISTORY_SIZES)
                      + " |")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())

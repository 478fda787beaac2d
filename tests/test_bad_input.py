"""Every bad input is refused before the first trial (issue 11): exit code 2, at most two
lines naming the file and key (or data line and column) and what is valid, no traceback, and
the storage unchanged.

The table covers study files, search spaces, training configs, data files, storage URLs and
the commands' flags. The CLI runs in-process (typer's CliRunner): ~0.3 s a case.
`scripts/reliability_report.py` imports `CASES` to count them in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from _tune_fixtures import write_tiny_study
from typer.testing import CliRunner

from fxai_tune.cli.main import app
from fxai_tune.data import SyntheticConfig, generate_synthetic_bars

MYSQL_URL = os.environ.get("FXAI_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get(
    "FXAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNWRITABLE = "/proc/fxai-no-such-dir"  # mkdir there fails even for root


@dataclass
class Env:
    """What a case builds its command line from: a fresh directory per case."""

    tmp: Path
    existing: Path | None = None

    @property
    def db(self) -> Path:
        return self.tmp / "bad.db"

    def study(self, **fields: Any) -> str:
        """A tiny study file ``bad.yaml`` with top-level ``fields`` replaced (None drops)."""
        path = write_tiny_study(self.tmp, "bad", storage=f"sqlite:///{self.db}")
        data = yaml.safe_load(path.read_text())
        for key, value in fields.items():
            if value is _DROP:
                data.pop(key, None)
            else:
                data[key] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    def base(self, **sections: Any) -> str:
        """A study whose base config has ``sections`` merged in (dotted keys: one level)."""
        path = self.study()
        data = yaml.safe_load(Path(path).read_text())
        for dotted, value in sections.items():
            node = data["base"]
            *parents, leaf = dotted.split("__")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def space(self, space: Any) -> str:
        return self.study(search_space=space)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def data(self, lines: list[str], **data: Any) -> str:
        """A study training on the CSV ``lines``."""
        csv = self.file("bars.csv", "\n".join(lines) + ("\n" if lines else ""))
        return self.base(data={"source": csv, "format": "csv", **data})

    def stored(self, **fields: Any) -> str:
        """A study file changed by ``fields`` against the stored study with two trials."""
        assert self.existing is not None
        (self.tmp / "bad.db").write_bytes(self.existing.read_bytes())
        return self.study(**fields)


_DROP = object()


def _good_lines(n_bars: int = 1500) -> list[str]:
    bars = generate_synthetic_bars(SyntheticConfig(n_bars=n_bars, seed=3))
    return ["timestamp,open,high,low,close,volume"] + [
        f"{t:%Y-%m-%d %H:%M:%S},{r.open:.5f},{r.high:.5f},{r.low:.5f},{r.close:.5f},{r.volume:.0f}"
        for t, r in bars.iterrows()
    ]


GOOD = _good_lines()


def _row(index: int, **columns: str) -> list[str]:
    """The good rows with data row ``index`` changed in the named columns."""
    names = GOOD[0].split(",")
    lines = list(GOOD)
    cells = lines[index].split(",")
    for name, value in columns.items():
        cells[names.index(name)] = value
    lines[index] = ",".join(cells)
    return lines


def _swapped(i: int) -> list[str]:
    lines = list(GOOD)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return lines


def _duplicated(i: int) -> list[str]:
    lines = list(GOOD)
    lines[i + 1] = lines[i]
    return lines


def _run(path: str, *extra: str) -> list[str]:
    return ["run", "--study", path, *extra]


def _worker(path: str, *extra: str) -> list[str]:
    return ["worker", "--study", path, "--accelerator", "cpu", *extra]


Build = Callable[[Env], list[str]]
_FLOAT = {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}

CASES: dict[str, Build] = {
    # ---------------------------------------------------------------- study files
    "study: unknown key": lambda e: _run(e.study(n_trails=3)),
    "study: name with a space": lambda e: _run(e.study(name="my study")),
    "study: name leaving artifacts/": lambda e: _run(e.study(name="..")),
    "study: description not text": lambda e: _run(e.study(description=[1])),
    "study: unknown direction": lambda e: _run(e.study(direction="up")),
    "study: empty directions": lambda e: _run(e.study(directions=[])),
    "study: direction and directions": lambda e: _run(
        e.study(direction="maximize", directions=["maximize"])
    ),
    "study: objective not a mapping": lambda e: _run(e.study(objective=3)),
    "study: objective key typo": lambda e: _run(e.study(objective={"metric": "val/sharpe"})),
    "study: training metric as objective": lambda e: _run(
        e.study(objective={"metrics": ["train/loss"]})
    ),
    "study: metric never logged": lambda e: _run(e.study(objective={"metrics": ["val/sharp"]})),
    "study: unknown reduce": lambda e: _run(e.study(objective={"reduce": "mean"})),
    "study: zero folds": lambda e: _run(e.study(objective={"folds": 0})),
    "study: negative embargo": lambda e: _run(e.study(objective={"embargo_bars": -1})),
    "study: two metrics, one direction": lambda e: _run(
        e.study(objective={"metrics": ["val/sharpe", "val/log_return"]})
    ),
    "study: unknown sampler": lambda e: _run(e.study(sampler={"name": "tpee"})),
    "study: sampler seed text": lambda e: _run(e.study(sampler={"name": "tpe", "seed": "a"})),
    "study: sampler option of wrong type": lambda e: _run(
        e.study(sampler={"name": "tpe", "options": {"n_startup_trials": "five"}})
    ),
    "study: sampler option float for int": lambda e: _run(
        e.study(sampler={"name": "tpe", "options": {"n_startup_trials": 2.5}})
    ),
    "study: sampler bool option as text": lambda e: _run(
        e.study(sampler={"name": "tpe", "options": {"multivariate": "yes"}})
    ),
    "study: unknown sampler option": lambda e: _run(
        e.study(sampler={"name": "tpe", "options": {"n_startup": 5}})
    ),
    "study: sampler options a list": lambda e: _run(
        e.study(sampler={"name": "tpe", "options": [1]})
    ),
    "study: cmaes with two objectives": lambda e: _run(
        e.study(
            directions=["maximize", "minimize"],
            objective={"metrics": ["val/log_return", "val/max_drawdown"]},
            sampler={"name": "cmaes"},
        )
    ),
    "study: unknown pruner": lambda e: _run(e.study(pruner={"name": "meddian"})),
    "study: pruner option of wrong type": lambda e: _run(
        e.study(pruner={"name": "median", "options": {"n_warmup_steps": "x"}})
    ),
    "study: pruner option negative": lambda e: _run(
        e.study(pruner={"name": "median", "options": {"n_warmup_steps": -1}})
    ),
    "study: unknown pruner option": lambda e: _run(
        e.study(pruner={"name": "median", "options": {"warmup": 1}})
    ),
    "study: pruner none with options": lambda e: _run(
        e.study(pruner={"name": "none", "options": {"n_warmup_steps": 1}})
    ),
    "study: percentile out of range": lambda e: _run(
        e.study(pruner={"name": "percentile", "options": {"percentile": 150.0}})
    ),
    "study: pruning a multi-objective study": lambda e: _run(
        e.study(
            directions=["maximize", "minimize"],
            objective={"metrics": ["val/log_return", "val/max_drawdown"]},
            pruner={"name": "median"},
        )
    ),
    "study: zero total_timesteps": lambda e: _run(e.study(budget={"total_timesteps": 0})),
    "study: unknown budget key": lambda e: _run(e.study(budget={"steps": 10})),
    "study: budget not a mapping": lambda e: _run(e.study(budget=5)),
    "study: zero n_trials": lambda e: _run(e.study(n_trials=0)),
    "study: n_trials as text": lambda e: _run(e.study(n_trials="ten")),
    "study: neither n_trials nor timeout": lambda e: _run(e.study(n_trials=None)),
    "study: negative timeout": lambda e: _run(e.study(timeout=-5)),
    "study: infinite timeout": lambda e: _run(e.study(timeout=float("inf"))),
    "study: zero seeds_per_trial": lambda e: _run(e.study(seeds_per_trial=0)),
    "study: unknown storage scheme": lambda e: _run(e.study(storage="ftp://host/db")),
    "study: storage not text": lambda e: _run(e.study(storage=5)),
    "study: artifact_dir not text": lambda e: _run(e.study(artifact_dir=5)),
    "study: unwritable artifact_dir": lambda e: _run(e.study(artifact_dir=f"{UNWRITABLE}/art")),
    "study: failure rate above 1": lambda e: _run(e.study(max_failure_rate=2)),
    "study: zero heartbeat": lambda e: _run(e.study(heartbeat_interval=0)),
    "study: grace below heartbeat": lambda e: _run(
        e.study(heartbeat_interval=10, grace_period=5)
    ),
    "study: negative max_retry": lambda e: _run(e.study(max_retry=-1)),
    "study: max_retry as text": lambda e: _run(e.study(max_retry="three")),
    "study: zero outage window": lambda e: _run(e.study(outage_window=0)),
    "study: overrides not a list": lambda e: _run(e.study(overrides="ppo.gamma=0.9")),
    "study: override without =": lambda e: _run(e.study(overrides=["ppo.gamma"])),
    "study: override of an unknown key": lambda e: _run(e.study(overrides=["ppo.gama=0.9"])),
    "study: missing base_config file": lambda e: _run(
        e.study(base=_DROP, base_config="nope.yaml")
    ),
    "study: base and base_config": lambda e: _run(e.study(base_config="x.yaml")),
    "study: base not a mapping": lambda e: _run(e.study(base=5)),
    "study: search_space a number": lambda e: _run(e.space(5)),
    "study: unknown search space name": lambda e: _run(e.space("ppo_quik")),
    "study: missing search space file": lambda e: _run(e.space("spaces/none.yaml")),
    "study: binary study file": lambda e: _run(e.file("bin.yaml", b"\x00\xff\xfe\x89PNG\x01")),
    "study: invalid YAML": lambda e: _run(e.file("bad.yaml", "name: [unclosed\n")),
    "study: file does not exist": lambda e: _run(str(e.tmp / "none.yaml")),
    "study: unknown study name": lambda e: _run("no_such_study_anywhere"),
    "study: top level is a list": lambda e: _run(e.file("list.yaml", "- 1\n- 2\n")),
    "study: empty file": lambda e: _run(e.file("empty.yaml", "")),
    "study: space sets the budget's key": lambda e: _run(
        e.space({"params": {"ppo.total_timesteps": {"type": "int", "low": 64, "high": 128}}})
    ),
    # ---------------------------------------------------------------- search spaces
    "space: unknown type": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "normal", "low": 0.9, "high": 0.99}}})
    ),
    "space: low above high": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "float", "low": 0.99, "high": 0.9}}})
    ),
    "space: log with low 0": lambda e: _run(
        e.space({"params": {"ppo.ent_coef": {"type": "float", "low": 0, "high": 0.1, "log": True}}})
    ),
    "space: unknown path": lambda e: _run(e.space({"params": {"ppo.learnin_rate": _FLOAT}})),
    "space: empty choices": lambda e: _run(
        e.space({"params": {"ppo.n_epochs": {"type": "categorical", "choices": []}}})
    ),
    "space: int with float bounds": lambda e: _run(
        e.space({"params": {"ppo.n_epochs": {"type": "int", "low": 1.5, "high": 4}}})
    ),
    "space: unknown param key": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 0.99, "lo": 1}}})
    ),
    "space: unknown section": lambda e: _run(e.space({"parameters": {}})),
    "space: bad constraint": lambda e: _run(
        e.space({"params": {}, "constraints": [{"divides": "ppo.batch_size"}]})
    ),
    "space: negative step": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 0.99, "step": -1}}})
    ),
    "space: choice of the wrong type": lambda e: _run(
        e.space({"params": {"ppo.n_envs": {"type": "categorical", "choices": ["four"]}}})
    ),
    "space: bound outside the field's range": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 1.5}}})
    ),
    "space: condition on an unknown param": lambda e: _run(
        e.space({"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 0.99,
                                          "when": {"nothing": True}}}})
    ),
    "space: tunes reward weights, scored on the shaped reward": lambda e: _run(
        e.study(
            search_space={"params": {"env.reward.weights.drawdown": {
                "type": "float", "low": 0.0, "high": 1.0}}},
            objective={"metrics": ["val/shaped_reward"]},
        )
    ),
    "space: binary file": lambda e: _run(e.space(e.file("space.yaml", b"\xff\xfe\x00\x01"))),
    "space: invalid YAML file": lambda e: _run(e.space(e.file("space.yaml", "params: {a: [\n"))),
    "space: params a list": lambda e: _run(e.space({"params": [1, 2]})),
    "space: fixed value of the wrong type": lambda e: _run(
        e.space({"fixed": {"ppo.n_epochs": "four"}})
    ),
    # ---------------------------------------------------------------- training configs
    "config: batch_size not dividing the rollout": lambda e: _run(e.base(ppo__batch_size=48)),
    "config: batch_size above the rollout": lambda e: _run(e.base(ppo__batch_size=256)),
    "config: accelerator tpu": lambda e: _run(e.base(trainer__accelerator="tpu")),
    "config: unknown accelerator": lambda e: _run(e.base(trainer__accelerator="quantum")),
    "config: zero torch_threads": lambda e: _run(e.base(trainer__torch_threads=0)),
    "config: ddp strategy in a trial": lambda e: _run(
        e.base(trainer__strategy="ddp", trainer__devices="2")),
    "config: fsdp strategy in a worker's trial": lambda e: _worker(
        e.base(trainer__strategy="fsdp", trainer__devices="2")),
    "config: devices text": lambda e: _run(e.base(trainer__devices="two")),
    "config: unknown precision": lambda e: _run(e.base(trainer__precision="8-bit")),
    "config: gamma above 1": lambda e: _run(e.base(ppo__gamma=2.0)),
    "config: negative learning rate": lambda e: _run(e.base(ppo__learning_rate=-1.0)),
    "config: unknown lr schedule": lambda e: _run(e.base(ppo__lr_schedule="exp")),
    "config: heads not dividing d_model": lambda e: _run(e.base(model__n_heads=3)),
    "config: episode_length 100000": lambda e: _run(e.base(env__episode_length=100000)),
    "config: zero window": lambda e: _run(e.base(env__windows={"1h": 0})),
    "config: unregistered env_id": lambda e: _run(e.base(env_id="NoSuchEnv-v0")),
    "config: env_id module that does not import": lambda e: _run(
        e.base(env_id="no_such_module_xyz:Foo-v0")
    ),
    "config: env_id of a module that does not register it": lambda e: _run(
        e.base(env_id="gymnasium.envs.classic_control:Nothing-v0")
    ),
    "config: env_id typo": lambda e: _run(e.base(env_id="Cartpole-v1")),
    "config: missing data file": lambda e: _run(e.base(data={"source": "missing.csv"})),
    "config: unknown data format": lambda e: _run(
        e.base(data={"source": "synthetic", "format": "xls"})
    ),
    "config: split fractions above 1": lambda e: _run(
        e.base(data={"source": "synthetic", "split_fractions": [0.5, 0.5, 0.5]})
    ),
    "config: unknown val_score": lambda e: _run(e.base(trainer__val_score="profit")),
    "config: unknown ppo key": lambda e: _run(e.base(ppo__gama=0.9)),
    "config: zero validation episodes": lambda e: _run(e.base(trainer__val_episodes=0)),
    "study: zero validation interval": lambda e: _run(
        e.study(budget={"val_every_n_iterations": 0})
    ),
    "config: zero envs": lambda e: _run(e.base(ppo__n_envs=0)),
    "config: text where a number goes": lambda e: _run(e.base(ppo__n_epochs="four")),
    "config: more validation windows than the split holds": lambda e: _run(
        e.base(trainer__val_episodes=100000)
    ),
    # ---------------------------------------------------------------- data files
    "data: text price": lambda e: _run(e.data(_row(10, close="abc"))),
    "data: unsorted timestamps": lambda e: _run(e.data(_swapped(10))),
    "data: duplicated timestamp": lambda e: _run(e.data(_duplicated(10))),
    "data: high below low": lambda e: _run(e.data(_row(10, high="1.08", low="1.09"))),
    "data: price spike": lambda e: _run(e.data(_row(10, low="2.0", high="2.1"))),
    "data: empty file": lambda e: _run(e.data([])),
    "data: header only": lambda e: _run(e.data(GOOD[:1])),
    "data: window longer than the data": lambda e: _run(e.data(GOOD[:40])),
    "data: NaN close": lambda e: _run(e.data(_row(10, close="nan"))),
    "data: inf high": lambda e: _run(e.data(_row(10, high="inf"))),
    "data: negative open": lambda e: _run(e.data(_row(10, open="-1"))),
    "data: missing column": lambda e: _run(e.data([",".join(x.split(",")[:4]) for x in GOOD])),
    "data: unparseable timestamp": lambda e: _run(e.data(_row(10, timestamp="notatime"))),
    "data: binary file": lambda e: _run(e.data(["\x00\x01\x02"])),
    "data: episode_length beyond the split": lambda e: _run(
        e.data(GOOD[:200], split_fractions=[0.5, 0.25, 0.25])
    ),
    "data: negative volume": lambda e: _run(e.data(_row(10, volume="-5"))),
    # ---------------------------------------------------------------- storage URLs
    "storage: unknown scheme": lambda e: _run(e.study(), "--storage", "ftp://host/db"),
    "storage: postgres:// alias with a password": lambda e: _run(
        e.study(), "--storage", "postgres://u:secret@h/db"
    ),
    "storage: unreachable PostgreSQL": lambda e: _run(
        e.study(), "--storage", "postgresql://u:secret@127.0.0.1:1/db"
    ),
    "storage: unknown PostgreSQL user": lambda e: _run(
        e.study(), "--storage", "postgresql://nosuchuser:secret@127.0.0.1:5432/test"
    ),
    "storage: missing PostgreSQL database": lambda e: _run(
        e.study(), "--storage", POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_db_fxai"
    ),
    "storage: wrong MySQL password": lambda e: _run(
        e.study(), "--storage", "mysql+pymysql://root:wrongpass@127.0.0.1:3306/test"
    ),
    "storage: SQLite in an unwritable directory": lambda e: _run(
        e.study(), "--storage", f"sqlite:///{UNWRITABLE}/x.db"
    ),
    "storage: journal in an unwritable directory": lambda e: _run(
        e.study(), "--storage", f"journal://{UNWRITABLE}/x.log"
    ),
    "storage: unreachable URL in the study file": lambda e: _run(
        e.study(storage="postgresql://u:secret@127.0.0.1:1/db")
    ),
    "storage: wrong password in the study file": lambda e: _run(
        e.study(storage="mysql+pymysql://root:wrongpass@127.0.0.1:3306/test")
    ),
    "storage: not a URL": lambda e: _run(e.study(), "--storage", ":::"),
    "storage: status with a bad URL": lambda e: [
        "status", "--study", e.study(), "--storage", "postgres://u:secret@h/db"
    ],
    # ---------------------------------------------------------------- command flags
    "run: zero --n-trials": lambda e: _run(e.study(), "--n-trials", "0"),
    "run: text --n-trials": lambda e: _run(e.study(), "--n-trials", "abc"),
    "run: zero --workers": lambda e: _run(e.study(), "--workers", "0"),
    "run: negative --timeout": lambda e: _run(e.study(), "--timeout", "-5"),
    "run: zero --timeout": lambda e: _run(e.study(), "--timeout", "0"),
    "run: nan --timeout": lambda e: _run(e.study(), "--timeout", "nan"),
    "run: --devices not indices": lambda e: _run(e.study(), "--devices", "x"),
    "run: --devices beyond the GPUs": lambda e: _run(e.study(), "--devices", "99"),
    "run: unknown option": lambda e: _run(e.study(), "--bogus"),
    "run: no --study": lambda e: ["run"],
    "worker: accelerator tpu": lambda e: ["worker", "--study", e.study(), "--accelerator", "tpu"],
    "worker: zero --threads": lambda e: _worker(e.study(), "--threads", "0"),
    "worker: negative --timeout": lambda e: _worker(e.study(), "--timeout", "-5"),
    "worker: zero --n-trials": lambda e: _worker(e.study(), "--n-trials", "0"),
    "worker: negative --worker-index": lambda e: _worker(e.study(), "--worker-index", "-1"),
    "worker: bad data file": lambda e: _worker(e.data(_row(10, close="abc"))),
    "status: study not stored": lambda e: ["status", "--study", e.study()],
    "export-best: study not stored": lambda e: [
        "export-best", "--study", e.study(), "-o", str(e.tmp / "best.yaml")
    ],
    "export-best: unwritable output": lambda e: [
        "export-best", "--study", e.stored(), "-o", f"{UNWRITABLE}/best.yaml"
    ],
    "export-best: output is a directory": lambda e: [
        "export-best", "--study", e.stored(), "-o", str(e.tmp)
    ],
    "export-best: no completed trial": lambda e: [
        "export-best", "--study", e.stored(name="empty"), "-o", str(e.tmp / "b.yaml")
    ],
    "dashboard: port 99999": lambda e: ["dashboard", "--study", e.stored(), "--port", "99999"],
    "dashboard: port 0": lambda e: ["dashboard", "--study", e.stored(), "--port", "0"],
    "dashboard: study not stored": lambda e: ["dashboard", "--study", e.study()],
    "backtest: unknown split": lambda e: ["backtest", "--split", "holdout"],
    "backtest: gymnasium env_id": lambda e: ["backtest", "-o", "env_id=CartPole-v1"],
    "backtest: missing config": lambda e: ["backtest", "-c", str(e.tmp / "none.yaml")],
    "train: binary config": lambda e: ["train", "-c", e.file("c.yaml", b"\x00\xff\xfe")],
    "train: zero torch_threads": lambda e: ["train", "-o", "trainer.torch_threads=0"],
    "train: accelerator tpu": lambda e: ["train", "-o", "trainer.accelerator=tpu"],
    "train: resume without a checkpoint": lambda e: ["train", "--resume", str(e.tmp)],
    "train: override without =": lambda e: ["train", "-o", "ppo.gamma"],
    # ---------------------------------------------------------------- against a stored study
    "stored: changed direction": lambda e: _run(e.stored(direction="minimize")),
    "stored: changed metric": lambda e: _run(e.stored(objective={"metrics": ["val/sharpe"]})),
    "stored: changed distribution": lambda e: _run(
        e.stored(search_space={"params": {
            "ppo.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "ppo.ent_coef": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        }})
    ),
    "stored: changed distribution, worker": lambda e: _worker(
        e.stored(search_space={"params": {
            "ppo.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3},
            "ppo.ent_coef": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        }})
    ),
    "stored: objectives added": lambda e: _run(
        e.stored(
            directions=["maximize", "minimize"],
            objective={"metrics": ["val/episode_reward", "val/max_drawdown"]},
            pruner={"name": "none"},
        )
    ),
}


@pytest.fixture(scope="module")
def stored_study(tmp_path_factory) -> Path:
    """A SQLite file with the tiny study ``bad`` and two completed trials (no training), and
    an empty study ``empty`` (no trial)."""
    from fxai_tune.tune import load_study_config, open_study

    tmp = tmp_path_factory.mktemp("stored")
    db = tmp / "bad.db"
    path = write_tiny_study(tmp, "bad", storage=f"sqlite:///{db}")
    config = load_study_config(path)
    study = open_study(config)
    distributions = config.space.distributions()
    for i, lr in enumerate((3e-4, 1e-3)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"ppo.learning_rate": lr, "ppo.ent_coef": 1e-3},
                distributions=distributions,
                value=0.01 * i,
                user_attrs={"config": {}},
            )
        )
    data = yaml.safe_load(path.read_text())
    data["name"] = "empty"
    path.write_text(yaml.safe_dump(data))
    open_study(load_study_config(path))
    return db


def _snapshot(directory: Path) -> dict[str, str]:
    """Storage files (SQLite, journal) under ``directory`` and their content hashes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in (".db", ".log", ".jsonl")
    }


def run_case(name: str, tmp: Path, stored: Path | None) -> tuple[int, str, dict, dict]:
    """Run case ``name`` in ``tmp``: exit code, output, storage before and after."""
    env = Env(tmp, existing=stored)
    cwd = os.getcwd()
    os.chdir(tmp)  # relative paths (backtest's run_dir, lock files) land in tmp
    try:
        args = CASES[name](env)
        before = _snapshot(tmp)
        result = CliRunner().invoke(app, args, catch_exceptions=True)
        after = _snapshot(tmp)
    finally:
        os.chdir(cwd)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(result.exception)
        )
    return result.exit_code, output, before, after


def test_there_are_at_least_120_cases():
    assert len(CASES) >= 120


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_the_storage_alone(name, tmp_path, stored_study):
    if name == "run: --devices beyond the GPUs" and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    code, output, before, after = run_case(name, tmp_path, stored_study)
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert code == 2, output
    assert 1 <= len(lines) <= 2, output
    assert "secret" not in output and "wrongpass" not in output, output
    assert after == before, f"storage changed: {before} -> {after}\n{output}"


def test_module_env_id_form_is_accepted_by_the_preflight(tmp_path):
    from fxai_tune.tune import load_study_config, preflight

    env = Env(tmp_path)
    path = env.base(env_id="gymnasium.envs.classic_control:CartPole-v1")
    preflight(load_study_config(path))  # imports the module, builds, resets, one forward


def test_allow_space_change_lets_a_changed_distribution_through(tmp_path, stored_study):
    from fxai_tune.tune import PreflightError, find_study, load_study_config, preflight

    env = Env(tmp_path, existing=stored_study)
    config = load_study_config(env.stored(search_space={"params": {
        "ppo.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    }}))
    study, _ = find_study(config.storage, config.name)
    with pytest.raises(PreflightError, match="ppo.learning_rate.*--allow-space-change"):
        preflight(config, study=study)
    preflight(config, study=study, allow_space_change=True)

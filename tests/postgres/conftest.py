"""A throw-away PostgreSQL server on a loopback port (Debian's postgresql, installed when missing), and a
Tyche project whose Dagster instance keeps its runs, event log and schedules there."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest
import yaml
from debian_packages import install_debian_package

from tyche_assets.experiments.sensors import register_experiments
from tyche_assets.partitions import register_partitions
from tyche_assets.resources import DUCKDB_POOL, default_resources
from tyche_lib import derive_seed, simulate

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPERIMENTS = ("checkout", "search")
VISITORS = 2_000
SERVER_USER = "postgres"  # PostgreSQL refuses to run as root; Debian's package creates this user


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables dagster.postgres.yaml reads."""
        return {
            "TYCHE_PG_HOST": self.host,
            "TYCHE_PG_PORT": str(self.port),
            "TYCHE_PG_USER": self.user,
            "TYCHE_PG_PASSWORD": self.password,
            "TYCHE_PG_DB": self.db,
        }


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _install_postgres() -> str | None:
    return install_debian_package("postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster in a temporary folder, password-authenticated on 127.0.0.1, stopped at teardown."""
    bindir = _bindir()
    if bindir is None:
        reason = _install_postgres()
        if reason:
            pytest.skip(reason)
        bindir = _bindir()
    assert bindir, "apt-get installed postgresql but no /usr/lib/postgresql/<version>/bin/initdb exists"
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no '{SERVER_USER}' user to run PostgreSQL as")

    def as_server_user(cmd: list) -> list[str]:
        cmd = [str(c) for c in cmd]
        return ["runuser", "-u", SERVER_USER, "--", *cmd] if as_root else cmd

    def run(cmd: list) -> None:
        done = subprocess.run(as_server_user(cmd), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (
            f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )

    folder = Path(tempfile.mkdtemp(prefix="tyche-pg-"))  # under /tmp: the server user must reach it
    server = Postgres(host="127.0.0.1", port=_free_port(), user="tyche", password="tyche-test-password", db="tyche")
    (folder / "password").write_text(server.password)
    if as_root:
        for path in (folder, folder / "password"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    run(
        [
            bindir / "initdb",
            "-D",
            data,
            "-U",
            server.user,
            f"--pwfile={folder / 'password'}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    options = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run([bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"])
    try:
        run([bindir / "createdb", "-h", folder, "-p", server.port, "-U", server.user, server.db])
        yield server
    finally:
        subprocess.run(
            as_server_user([bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]), capture_output=True, timeout=60
        )
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class PostgresProject:
    root: Path
    env: dict


def _spec(experiment_id: str) -> dict:
    return {
        "id": experiment_id,
        "arms": ["control", "flip", "flat", "mild"],
        "covariates": {
            "device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]},
            "returning": "boolean",
        },
        "metrics": {"primary": {"name": "converted", "family": "binary"}},
        "posterior": {"draws": 200, "tune": 200, "chains": 2},
        "source": {"kind": "landing", "path": "landing"},
    }


@pytest.fixture
def postgres_project(postgres, tmp_path, monkeypatch):
    """Two experiments with round 1 landed, on a Dagster instance configured by the repo's dagster.postgres.yaml."""
    root, home = tmp_path / "project", tmp_path / "dagster_home"
    (root / "experiments").mkdir(parents=True)
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {**os.environ, **postgres.env(), "DAGSTER_HOME": str(home), "TYCHE_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    for key in ("DAGSTER_HOME", *postgres.env()):
        monkeypatch.setenv(key, env[key])
    # The set-up step docs/deployment.md prescribes: the pool's row exists before two runs race to create
    # it (dagster-postgres 0.29.27 fails one of them: dagster-io/dagster#33552).
    done = subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", DUCKDB_POOL, "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for experiment_id in EXPERIMENTS:
        (root / "experiments" / f"{experiment_id}.yaml").write_text(yaml.safe_dump(_spec(experiment_id)))
    resources = default_resources(str(root))
    with dg.DagsterInstance.get() as instance:
        register_experiments(instance, resources["experiments"], resources["storage"])
        for experiment_id in EXPERIMENTS:
            register_partitions(instance, experiment_id, [1])
    plans = {e: resources["storage"].plan_in_force(e, 1) for e in EXPERIMENTS}
    for experiment_id, plan in plans.items():
        scenario = replace(simulate.segment_flip(), arms=plan.arms)
        rows = simulate.simulate_round(
            scenario, plan, VISITORS, 1, rng=derive_seed(experiment_id, 1, "pg-test-traffic")
        )
        landing = root / "landing" / experiment_id / "round=1"
        landing.mkdir(parents=True)
        rows.to_parquet(landing / "visitors.parquet", index=False)
    return PostgresProject(root=root, env=env)

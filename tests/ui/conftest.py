"""A live Dagster UI over a throw-away Tyche project: dagster-webserver and dagster-daemon on a
loopback port, with a temporary DAGSTER_HOME (the repo's dagster.yaml) and TYCHE_ROOT; and Debian's
headless Chromium, installed when missing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from debian_packages import install_debian_package

from tyche_assets.experiments.sensors import register_experiments
from tyche_assets.resources import default_resources
from tyche_lib import derive_seed, simulate

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPERIMENT = "flip"
VISITORS = 3_000
START_TIMEOUT_S = 120
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A server in its own process group, so teardown stops it and every child it spawned."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def write_project(root: Path, home: Path) -> None:
    """One experiment spec and its landed round 1, traffic routed by the experiment's initial plan."""
    spec = {
        "id": EXPERIMENT,
        "owner": "growth",
        "arms": ["control", "flip", "flat", "mild"],
        "covariates": {
            "device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]},
            "returning": "boolean",
        },
        "metrics": {"primary": {"name": "converted", "family": "binary"}},
        "posterior": {"draws": 200, "tune": 200, "chains": 2},
        "source": {"kind": "landing", "path": "landing"},
    }
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / f"{EXPERIMENT}.yaml").write_text(yaml.safe_dump(spec))
    resources = default_resources(str(root))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # What experiment_specs_sensor does on its first tick: the experiment partition and round-1 plan.
        register_experiments(instance, resources["experiments"], resources["storage"])
    plan = resources["storage"].plan_in_force(EXPERIMENT, 1)
    scenario = replace(simulate.segment_flip(), arms=plan.arms)
    rows = simulate.simulate_round(scenario, plan, VISITORS, 1, rng=derive_seed(EXPERIMENT, 1, "ui-test-traffic"))
    landing = root / "landing" / EXPERIMENT / "round=1"
    landing.mkdir(parents=True)
    rows.to_parquet(landing / "visitors.parquet", index=False)


@dataclass
class DagsterUI:
    url: str
    root: Path
    env: dict
    logs: Path
    processes: list = field(default_factory=list)

    def graphql(self, query: str, **variables) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.logs.glob("*.log"))
        )

    def wait_until_serving(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"dagster-webserver exited with {proc.returncode}:\n{self.log_tail()}"
            try:
                if requests.get(f"{self.url}/server_info", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise TimeoutError(f"dagster-webserver not serving after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def repository_selector(self) -> dict:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name"
            " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        [location] = data["workspaceOrError"]["locationEntries"]
        assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location
        return {"repositoryLocationName": location["name"], "repositoryName": "__repository__"}

    def stop_sensors(self) -> None:
        """What an operator does in the UI's sensor toggles, so that only the test launches runs."""
        sensors = self.graphql(
            "query ($s: RepositorySelector!) { sensorsOrError(repositorySelector: $s) {"
            " ... on Sensors { results { name sensorState { id } } } } }",
            s=self.repository_selector(),
        )["sensorsOrError"]["results"]
        assert {s["name"] for s in sensors} == {"landing_sensor", "experiment_specs_sensor"}
        for sensor in sensors:
            stopped = self.graphql(
                "mutation ($id: String!) { stopSensor(id: $id) { __typename"
                " ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }",
                id=sensor["sensorState"]["id"],
            )["stopSensor"]
            assert stopped.get("instigationState", {}).get("status") == "STOPPED", stopped

    def start_daemon(self) -> None:
        cmd = [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")]
        self.processes.append(start(cmd, self.env, self.logs / "daemon.log"))


@pytest.fixture(scope="module")
def dagster_ui():
    """dagster-webserver and dagster-daemon serving the repo's workspace.yaml over a fresh project,
    sensors stopped (the tests launch the runs). Both are killed at teardown, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="tyche-ui-") as tmp:
        tmp = Path(tmp)
        root, home, logs = tmp / "project", tmp / "dagster_home", tmp / "logs"
        for d in (home, logs):
            d.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        with open(home / "dagster.yaml", "a") as f:
            f.write("nux:\n  enabled: false  # no first-visit 'Join the community' dialog over the screenshots\n")
        write_project(root, home)
        port = free_port()
        env = {**os.environ, "DAGSTER_HOME": str(home), "TYCHE_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
        ui = DagsterUI(url=f"http://127.0.0.1:{port}", root=root, env=env, logs=logs)
        cmd = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")]
        webserver = start(cmd, env, logs / "webserver.log")
        ui.processes.append(webserver)
        try:
            ui.wait_until_serving(webserver)
            ui.stop_sensors()  # before the daemon's first sensor tick
            ui.start_daemon()  # backfills and queued runs are the daemon's work
            yield ui
        finally:
            for proc in reversed(ui.processes):
                stop(proc)


def _install_chromium() -> str | None:
    return install_debian_package("chromium")


def _chromium_binary() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium; installs Debian's package when missing."""
    binary = _chromium_binary()
    if binary is None:
        reason = _install_chromium()
        if reason:
            pytest.skip(reason)
        binary = _chromium_binary()
    assert binary, "apt-get installed chromium but no chromium binary is on PATH"
    return binary


@pytest.fixture
def browse(chromium, tmp_path):
    """browse(url, screenshot=None) -> the DOM after the page's scripts ran (and a PNG when asked)."""

    def run(url: str, screenshot: Path | None = None, budget_ms: int = 15_000) -> str:
        profile = tempfile.mkdtemp(dir=tmp_path, prefix="chromium-profile-")
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
        ]
        if screenshot is not None:
            cmd.append(f"--screenshot={screenshot}")
        done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
        assert screenshot is None or screenshot.exists(), f"chromium wrote no screenshot: {done.stderr[-2000:]}"
        return done.stdout

    return run

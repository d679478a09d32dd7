"""A throw-away Tyche project (specs, landing folder, DuckDB) on an ephemeral Dagster instance."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from tyche_assets.definitions import build_definitions
from tyche_assets.experiments.sensors import register_experiments
from tyche_assets.partitions import partition_key, register_partitions
from tyche_lib import Plan, derive_seed, simulate

# Small posteriors keep each fit to seconds; the statistics are tested in tests/test_posterior.py.
TEST_POSTERIOR = {"draws": 300, "tune": 300, "chains": 2}


def spec_yaml(experiment_id: str, arms=("control", "flip", "flat", "mild"), **extra) -> dict:
    """A segment_flip spec restricted to the covariates its truth depends on."""
    return {
        "id": experiment_id,
        "arms": list(arms),
        "covariates": {
            "device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]},
            "returning": "boolean",
        },
        "metrics": {
            "primary": {"name": "converted", "family": "binary"},
            "guardrails": [
                {"name": "latency_ms", "family": "continuous", "direction": "increase_is_bad", "tolerance": 10}
            ],
        },
        "posterior": TEST_POSTERIOR,
        "source": {"kind": "landing", "path": "landing"},
        **extra,
    }


@dataclass
class Project:
    root: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions

    @property
    def storage(self):
        return self.defs.resources["storage"]

    def add_experiment(self, experiment_id: str, **spec_overrides) -> None:
        path = self.root / "experiments" / f"{experiment_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec_yaml(experiment_id, **spec_overrides)))
        register_experiments(self.instance, self.defs.resources["experiments"], self.storage)

    def plan_in_force(self, experiment_id: str, round_: int) -> Plan:
        return self.storage.plan_in_force(experiment_id, round_)

    def simulate(self, experiment_id: str, round_: int, n: int, scenario=None) -> pd.DataFrame:
        plan = self.plan_in_force(experiment_id, round_)
        # segment_flip's truth is per arm name: an experiment with fewer arms uses a subset.
        scenario = scenario or replace(simulate.segment_flip(), arms=plan.arms)
        return simulate.simulate_round(
            scenario, plan, n, round_, rng=derive_seed(experiment_id, round_, "test-traffic")
        )

    def land(self, experiment_id: str, round_: int, rows: pd.DataFrame, fmt: str = "parquet") -> Path:
        folder = self.root / "landing" / experiment_id / f"round={round_}"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        path = folder / f"visitors.{fmt}"
        rows.to_parquet(path, index=False) if fmt == "parquet" else rows.to_csv(path, index=False)
        return path

    def run_round(self, experiment_id: str, round_: int) -> dg.ExecuteInProcessResult:
        register_partitions(self.instance, experiment_id, [round_])
        return self.defs.resolve_job_def("round_job").execute_in_process(
            partition_key=partition_key(experiment_id, round_), instance=self.instance, raise_on_error=False
        )

    def query(self, sql: str, params=()) -> pd.DataFrame:
        with self.storage.connect() as conn:
            return conn.execute(sql, list(params)).df()


@pytest.fixture
def project(tmp_path) -> Project:
    (tmp_path / "experiments").mkdir()
    with dg.instance_for_test() as instance:
        yield Project(root=tmp_path, instance=instance, defs=build_definitions(str(tmp_path)))

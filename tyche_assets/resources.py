"""Shared resources: the project folder with its DuckDB file, and the experiment catalog."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from tyche_lib import ExperimentSpec, SpecError, load_spec

DUCKDB_POOL = "tyche_duckdb"  # DuckDB allows one writer process: every op touching it runs in this pool


def default_root() -> str:
    return os.environ.get("TYCHE_ROOT", os.getcwd())


class TycheStorage(dg.ConfigurableResource):
    """The project folder: landing files, the DuckDB database, posteriors, plans and reports.

    Layout under ``root``: ``experiments/`` (specs), ``landing/`` (default landing source),
    ``storage/tyche.duckdb``, ``storage/raw/<exp>/rNNN.parquet`` (rows as received),
    ``storage/posteriors/<exp>/rNNN.nc`` (draws) with ``rNNN.model.parquet`` (the frame the model
    was fitted on) and ``rNNN.profiles.parquet`` (covariate profiles of the rows, with visitor
    counts), ``plans/<exp>/rNNN.json``, ``reports/<exp>/rNNN.json``.
    """

    root: str
    duckdb: DuckDBResource

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def path(self, *parts: str) -> Path:
        p = self.root_path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def raw_rows_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("storage", "raw", experiment_id, f"{round_key}.parquet")

    def posterior_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key}.nc")

    def posterior_model_data_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key}.model.parquet")

    def posterior_profiles_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key}.profiles.parquet")

    def tree_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("storage", "trees", experiment_id, f"{round_key}.json")

    def plan_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("plans", experiment_id, f"{round_key}.json")

    def report_path(self, experiment_id: str, round_key: str) -> Path:
        return self.path("reports", experiment_id, f"{round_key}.json")


class ExperimentCatalog(dg.ConfigurableResource):
    """The experiment specs in ``directory`` (one YAML file per experiment)."""

    directory: str

    def spec_files(self) -> list[Path]:
        folder = Path(self.directory)
        return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []

    def load_all(self) -> tuple[dict[str, ExperimentSpec], dict[str, SpecError]]:
        """Valid specs by id, and errors by file: one bad spec never hides the others."""
        specs: dict[str, ExperimentSpec] = {}
        errors: dict[str, SpecError] = {}
        for f in self.spec_files():
            try:
                spec = load_spec(f)
            except SpecError as e:
                errors[str(f)] = e
                continue
            if spec.id in specs:
                errors[str(f)] = SpecError("id", spec.id, "another spec file already uses this id", str(f))
                continue
            specs[spec.id] = spec
        return specs, errors

    def spec(self, experiment_id: str) -> ExperimentSpec:
        specs, errors = self.load_all()
        if experiment_id in specs:
            return specs[experiment_id]
        for file, err in errors.items():
            if Path(file).stem == experiment_id:
                raise err
        raise dg.Failure(
            description=f"no valid spec with id '{experiment_id}' in {self.directory}",
            metadata={"spec_errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in errors.values()) or "none")},
        )


def default_resources(root: str | None = None) -> dict:
    root = root or default_root()
    return {
        "storage": TycheStorage(
            root=root, duckdb=DuckDBResource(database=str(Path(root) / "storage" / "tyche.duckdb"))
        ),
        "experiments": ExperimentCatalog(directory=str(Path(root) / "experiments")),
    }

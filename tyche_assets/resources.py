"""The resources the code location binds: the storage layer and the experiment catalog."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from tyche_lib import ExperimentSpec, SpecError, load_spec

from .storage import TycheStorage

DUCKDB_POOL = "tyche_duckdb"  # DuckDB allows one writer process: every op touching it runs in this pool


def default_root() -> str:
    return os.environ.get("TYCHE_ROOT", os.getcwd())


class ExperimentCatalog(dg.ConfigurableResource):
    """The experiment specs in ``directory`` (one YAML file per experiment)."""

    directory: str

    def spec_files(self) -> list[Path]:
        folder = Path(self.directory)
        return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []

    def load_all(self) -> tuple[dict[str, ExperimentSpec], dict[str, SpecError]]:
        """Valid specs by id, and errors by file: one bad spec never hides the others.

        Valid means this code location can run it: a schedule Dagster would refuse is an error of
        the spec's ``schedule`` field here, not a code location that fails to load.
        """
        specs: dict[str, ExperimentSpec] = {}
        errors: dict[str, SpecError] = {}
        for f in self.spec_files():
            try:
                spec = load_spec(f)
                _check_schedule(spec, str(f))
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


def _check_schedule(spec: ExperimentSpec, file: str) -> None:
    """Dagster's own verdict on the cron string: a schedule definition built from it, then dropped."""
    if spec.schedule is None:
        return
    try:
        dg.ScheduleDefinition(name="cron_check", cron_schedule=spec.schedule, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        raise SpecError(
            "schedule",
            spec.schedule,
            "not a cron schedule Dagster can run, e.g. '0 6 * * *' (minute hour day month weekday)",
            file,
        ) from None


def default_resources(root: str | None = None) -> dict:
    root = root or default_root()
    return {
        "storage": TycheStorage(
            root=root, duckdb=DuckDBResource(database=str(Path(root) / "storage" / "tyche.duckdb"))
        ),
        "experiments": ExperimentCatalog(directory=str(Path(root) / "experiments")),
    }

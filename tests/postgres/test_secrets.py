"""A SQL source's password, planted in the environment, appears in no stored artefact, log or run event.

The rounds come from a real password-authenticated PostgreSQL server (the session's ``postgres``
fixture); the spec's URL names the password only as ``${TYCHE_SECRET_PASSWORD}``.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa
import yaml

from tyche_assets.definitions import build_definitions
from tyche_assets.ingest.sensors import landing_sensor
from tyche_assets.partitions import partition_key, register_partitions
from tyche_lib import initial_plan, simulate, spec_from_dict

PASSWORD_VARIABLE = "TYCHE_SECRET_PASSWORD"


def _spec(experiment_id: str, server, database: str) -> dict:
    url = f"postgresql+psycopg2://{server.user}:${{{PASSWORD_VARIABLE}}}@{server.host}:{server.port}/{database}"
    return {
        "id": experiment_id,
        "arms": ["control", "flip"],
        "covariates": {"device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]}},
        "metrics": {"primary": {"name": "converted", "family": "binary"}},
        "posterior": {"draws": 200, "tune": 300, "chains": 2},
        "source": {
            "kind": "sql",
            "url": url,
            "query": "SELECT * FROM round_rows WHERE experiment_id = :experiment_id AND round = :round",
            "rounds_query": "SELECT DISTINCT round FROM round_rows WHERE experiment_id = :experiment_id",
        },
    }


def _everything_stored(root, instance, run_ids) -> str:
    """Every byte under the project folder, every row of every DuckDB table (its file may compress
    strings) and every event of every run, as text."""
    parts = [path.read_bytes().decode("latin-1") for path in sorted(root.rglob("*")) if path.is_file()]
    with duckdb.connect(str(root / "storage" / "tyche.duckdb"), read_only=True) as conn:
        for (table,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall():
            parts.append(conn.execute(f'SELECT * FROM "{table}"').df().to_csv())
    for run_id in run_ids:
        parts += [repr(event) for event in instance.all_logs(run_id)]
    return "\n".join(parts)


def test_the_password_never_leaves_the_environment(postgres, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, postgres.password)
    good = spec_from_dict(_spec("secret_ok", postgres, postgres.db))
    scenario = simulate.segment_flip()
    scenario = type(scenario)(**{**scenario.__dict__, "arms": good.arms})
    rows = simulate.simulate_round(scenario, initial_plan(good), 3_000, 1, rng=5)
    engine = sa.create_engine(
        f"postgresql+psycopg2://{postgres.user}:{postgres.password}@{postgres.host}:{postgres.port}/{postgres.db}"
    )
    with engine.begin() as conn:
        rows.to_sql("round_rows", conn, if_exists="replace", index=False)
    engine.dispose()

    root = tmp_path / "project"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "secret_ok.yaml").write_text(yaml.safe_dump(_spec("secret_ok", postgres, postgres.db)))
    # Same server, a database that does not exist: the connection fails after the password is sent.
    (root / "experiments" / "secret_bad.yaml").write_text(
        yaml.safe_dump(_spec("secret_bad", postgres, "no_such_database"))
    )
    defs = build_definitions(str(root))
    caplog.set_level("DEBUG")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            sensed = landing_sensor(context)
        assert [r.partition_key.keys_by_dimension for r in sensed.run_requests] == [
            {"experiment": "secret_ok", "round": "r000001"}
        ]
        runs = {}
        for experiment_id in ("secret_ok", "secret_bad"):
            register_partitions(instance, experiment_id, [1])
            runs[experiment_id] = defs.resolve_job_def("round_job").execute_in_process(
                partition_key=partition_key(experiment_id, 1), instance=instance, raise_on_error=False
            )
        assert runs["secret_ok"].success
        assert (root / "plans" / "secret_ok" / "r000002.json").exists()
        assert not runs["secret_bad"].success
        failure = next(e for e in runs["secret_bad"].all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert "round 1 of secret_bad refused: its source could not be read" in message
        # The URL is named as the spec wrote it: the variable's name, never its value.
        assert "no_such_database" in message and f"${{{PASSWORD_VARIABLE}}}" in message

        stored = _everything_stored(root, instance, [r.run_id for r in runs.values()])
        logged = "\n".join(record.getMessage() for record in caplog.records)
    assert len(stored) > 100_000  # the search covered the DuckDB file, the plans, the reports and the runs
    assert postgres.password not in stored
    assert postgres.password not in logged
    assert postgres.password not in message


def test_a_literal_password_in_the_spec_is_refused_without_echoing_it(postgres, tmp_path):
    spec = _spec("literal", postgres, postgres.db)
    spec["source"]["url"] = spec["source"]["url"].replace(f"${{{PASSWORD_VARIABLE}}}", "planted-literal-secret")
    root = tmp_path / "project"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "literal.yaml").write_text(yaml.safe_dump(spec))
    defs = build_definitions(str(root))
    with dg.instance_for_test() as instance:
        register_partitions(instance, "literal", [1])
        result = defs.resolve_job_def("round_job").execute_in_process(
            partition_key=partition_key("literal", 1), instance=instance, raise_on_error=False
        )
        events = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert not result.success
    assert "${" in events  # the refusal tells the user to use a variable
    assert "planted-literal-secret" not in events


pytest.importorskip("psycopg2")
